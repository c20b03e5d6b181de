package main

// check-config's listing of the effective policy: every key of the file
// format's declaration (policyFields), in its order, with the value the
// policy has, as TOML that loads back to the same policy. Values the
// gateway derives are shown as comments. Adding a key to filePolicy adds
// it here; a key with no field of the same name in Policy panics, and
// TestPolicyKeysAreDeclared renders the defaults to catch it.

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// render prints the effective policy as TOML that loads back to the same
// policy.
func (p *Policy) render() string {
	var b strings.Builder
	root := reflect.ValueOf(p).Elem()
	fields := policyFields()
	for i := 0; i < len(fields); {
		section := fields[i].section
		j := i
		for j < len(fields) && fields[j].section == section {
			j++
		}
		if fields[i].array {
			renderTables(&b, p, root, fields[i:j])
		} else {
			if section != "" {
				fmt.Fprintf(&b, "\n[%s]", section)
				if note := sectionNote(p, section); note != "" {
					b.WriteString("  # " + note)
				}
				b.WriteString("\n")
			}
			for _, f := range fields[i:j] {
				renderKey(&b, p, fieldValue(root, f.key, f.path), f)
			}
		}
		i = j
	}
	return b.String()
}

// renderTables writes an array of tables, one [[section]] per element;
// none writes a comment saying so.
func renderTables(b *strings.Builder, p *Policy, root reflect.Value, fields []policyField) {
	section := fields[0].section
	list := fieldValue(root, section, fields[0].path[:1])
	if list.Len() == 0 {
		if note := sectionNote(p, section); note != "" {
			fmt.Fprintf(b, "\n# [[%s]]: none (%s)\n", section, note)
		}
		return
	}
	for n := 0; n < list.Len(); n++ {
		fmt.Fprintf(b, "\n[[%s]]\n", section)
		for _, f := range fields {
			renderKey(b, p, fieldValue(list.Index(n), f.key, f.path[1:]), f)
		}
	}
}

// fieldValue follows path's field names from v.
func fieldValue(v reflect.Value, key string, path []string) reflect.Value {
	for _, name := range path {
		v = v.FieldByName(name)
		if !v.IsValid() {
			panic("policy key " + key + ": Policy has no field " + strings.Join(path, "."))
		}
	}
	return v
}

// renderKey writes one key's line, with its note.
func renderKey(b *strings.Builder, p *Policy, v reflect.Value, f policyField) {
	if len(p.Upstream) > 0 && (f.key == "gateway.upstream" || f.key == "gateway.upstream_key_env") {
		// Set with [[upstream]], either is an error: shown as a comment.
		fmt.Fprintf(b, "# %s: unset, the upstreams are the [[upstream]] tables\n", f.key[len("gateway."):])
		return
	}
	val := renderValue(v, f.kind)
	if f.secret && val != `""` {
		val = `"[set]"` // it may hold a token: never printed
	}
	name := f.key[len(f.section)+min(len(f.section), 1):]
	fmt.Fprintf(b, "%s = %s", name, val)
	if note := keyNote(p, f.key); note != "" {
		b.WriteString("  # " + note)
	}
	b.WriteString("\n")
}

// renderValue writes one value as TOML, as the file takes it: durations
// and sizes as strings, signals by name.
func renderValue(v reflect.Value, kind keyKind) string {
	switch x := v.Interface().(type) {
	case time.Duration:
		return strconv.Quote(x.String())
	case string:
		return strconv.Quote(x)
	case bool:
		return strconv.FormatBool(x)
	case int:
		return strconv.Itoa(x)
	case int64:
		if kind == kindString { // a size: "1MiB"
			return strconv.Quote(formatSize(x))
		}
		return strconv.FormatInt(x, 10)
	case []int64:
		ids := make([]string, len(x))
		for i, id := range x {
			ids[i] = strconv.FormatInt(id, 10)
		}
		return "[" + strings.Join(ids, ", ") + "]"
	case []string:
		qs := make([]string, len(x))
		for i, s := range x {
			qs[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(qs, ", ") + "]"
	case []Rung:
		var parts []string
		for _, r := range x {
			w := strconv.Quote(r.Wait.String())
			if r.Auto {
				w = `"auto"`
			}
			parts = append(parts, fmt.Sprintf("  { signal = %q, wait = %s },", signalName(r.Signal), w))
		}
		return "[\n" + strings.Join(parts, "\n") + "\n]"
	}
	panic("policy value of Go type " + v.Type().String() + ": no way to render it")
}

// keyNote is what the gateway derives from a key's value, for its comment.
func keyNote(p *Policy, key string) string {
	switch key {
	case "gateway.upstream":
		if p.echoing() {
			return "the built-in echo upstream"
		}

	case "gateway.max_connections":
		if p.Gateway.MaxConnections == 0 {
			return fmt.Sprintf("from the file limit: %d here", maxConnsFor(0))
		}
	case "auth.keys_env":
		if n := len(p.Auth.ring.names()); n > 0 {
			return fmt.Sprintf("%d keys: %s", n, strings.Join(p.Auth.ring.names(), ", "))
		} else if loopbackListen(p.Gateway.Listen) {
			return "no keys: any client on this host may use the gateway"
		}
		return "no keys"
	case "restart.ladder":
		return fmt.Sprintf("\"auto\" waits %s here (drain.timeout + drain.grace + %s)", p.Drain.Budget()+autoWaitMargin, autoWaitMargin)
	}
	return ""
}

// sectionNote is what the gateway derives from a section, for its comment.
func sectionNote(p *Policy, section string) string {
	if section == "upstream" {
		if p.Gateway.Upstream != "" {
			return "gateway.upstream is the one upstream"
		}
		return "the built-in echo answers"
	}
	if section == "telegram" {
		if p.Telegram.Enabled() {
			return "on"
		}
		return "off: no token_env or token_file"
	}
	return ""
}
