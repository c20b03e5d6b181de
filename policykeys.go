package main

// The policy's keys, read once off the file format's declaration
// (filePolicy in config.go): a key is added by adding its field there, and
// the list of keys (for did-you-mean and the example's check), their kinds
// (for the errors), their sections and check-config's listing
// (policyrender.go) follow.

import (
	"reflect"
	"sync"
)

// knownKeys are the policy's keys, "section.key" or "key", in the order
// filePolicy declares them; keyKinds is what each takes. One walk of the
// declaration gives both.
var knownKeys, keyKinds = declaredKeys()

// policyField is one key of the file format.
type policyField struct {
	key     string
	kind    keyKind
	section string   // "" for a top-level key
	array   bool     // the section is an array of tables ([[upstream]]): one per element
	path    []string // the Go field names that lead to it, in filePolicy and in Policy alike
	secret  bool     // secret:"true": its value is never shown
}

// policyFields walks filePolicy's fields, depth first: a struct is a
// section, any other field a key whose kind its Go type (and, for a
// duration, its kind:"duration" tag) gives.
func policyFields() []policyField {
	var out []policyField
	var walk func(section string, array bool, path []string, st reflect.Type)
	walk = func(section string, array bool, path []string, st reflect.Type) {
		for i := 0; i < st.NumField(); i++ {
			f := st.Field(i)
			name := f.Tag.Get("toml")
			fpath := append(path[:len(path):len(path)], f.Name)
			if f.Type.Kind() == reflect.Struct {
				walk(name, false, fpath, f.Type)
				continue
			}
			if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct && f.Type.Elem() != reflect.TypeOf(fileRung{}) {
				walk(name, true, fpath, f.Type.Elem()) // an array of tables
				continue
			}
			key := name
			if section != "" {
				key = section + "." + name
			}
			out = append(out, policyField{key: key, kind: fieldKind(f), section: section, array: array, path: fpath, secret: f.Tag.Get("secret") == "true"})
		}
	}
	walk("", false, nil, reflect.TypeOf(filePolicy{}))
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
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return kindStringList
	}
	panic("policy key " + f.Name + ": no key kind for Go type " + f.Type.String())
}

// tableArrays are the sections written as arrays of tables ([[upstream]]).
// Made on first use: package initialisation stays small.
var tableArrays = sync.OnceValue(func() map[string]bool {
	out := map[string]bool{}
	for _, f := range policyFields() {
		if f.array {
			out[f.section] = true
		}
	}
	return out
})

func declaredKeys() ([]string, map[string]keyKind) {
	var keys []string
	kinds := map[string]keyKind{}
	for _, f := range policyFields() {
		keys = append(keys, f.key)
		kinds[f.key] = f.kind
	}
	return keys, kinds
}
