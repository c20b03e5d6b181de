package main

// The policy's keys, read once off the file format's declaration
// (filePolicy in config.go): a key is added by adding its field there, and
// the list of keys (for did-you-mean and the example's check), their kinds
// (for the errors) and their sections follow.

import "reflect"

// knownKeys are the policy's keys, "section.key" or "key", in the order
// filePolicy declares them; keyKinds is what each takes. One walk of the
// declaration gives both.
var knownKeys, keyKinds = declaredKeys()

// policyField is one key of the file format.
type policyField struct {
	key  string
	kind keyKind
}

// policyFields walks filePolicy's fields, depth first: a struct is a
// section, any other field a key whose kind its Go type (and, for a
// duration, its kind:"duration" tag) gives.
func policyFields() []policyField {
	var out []policyField
	var walk func(prefix string, st reflect.Type)
	walk = func(prefix string, st reflect.Type) {
		for i := 0; i < st.NumField(); i++ {
			f := st.Field(i)
			key := prefix + f.Tag.Get("toml")
			if f.Type.Kind() == reflect.Struct {
				walk(key+".", f.Type)
				continue
			}
			out = append(out, policyField{key, fieldKind(f)})
		}
	}
	walk("", reflect.TypeOf(filePolicy{}))
	return out
}

// fieldKind is the kind of a key of the file format. A field of a type it
// does not know panics at start: TestPolicyKeysAreDeclared runs it.
func fieldKind(f reflect.StructField) keyKind {
	t := f.Type
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.String && f.Tag.Get("kind") == "duration":
		return kindDuration
	case t.Kind() == reflect.String:
		return kindString
	case t.Kind() == reflect.Bool:
		return kindBool
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		return kindInt
	case t.Kind() == reflect.Slice && t.Elem() == reflect.TypeOf(fileRung{}):
		return kindLadder
	case t.Kind() == reflect.Slice && (t.Elem().Kind() == reflect.Int64 || t.Elem().Kind() == reflect.Int):
		return kindIntList
	}
	panic("policy key " + f.Name + ": no key kind for Go type " + f.Type.String())
}

func declaredKeys() ([]string, map[string]keyKind) {
	var keys []string
	kinds := map[string]keyKind{}
	for _, f := range policyFields() {
		keys = append(keys, f.key)
		kinds[f.key] = f.kind
	}
	return keys, kinds
}
