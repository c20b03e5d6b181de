package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Policy errors written for people: a value of the wrong kind says what it
// is and how to write what the key takes; a key set twice names both
// lines; an unknown key or section names the one it was probably meant to
// be. Every error names the file, the line and the key (configError).

// keyKind is what a policy key takes.
type keyKind int

const (
	kindString keyKind = iota + 1
	kindDuration
	kindInt
	kindLadder
	kindBool
	kindIntList
	kindStringList
)

// keyExamples is a value of the right kind for keys whose kind alone
// makes a poor example.
var keyExamples = map[string]string{
	"name": `"gateway"`, "gateway.listen": `"127.0.0.1:8642"`, "gateway.upstream": `"http://127.0.0.1:8000"`,
	"gateway.upstream_key_env": `"HERMES_UPSTREAM_KEY"`, "gateway.state_dir": `"/var/lib/hermes/gateway"`,
	"gateway.max_request_body": `"32MiB"`, "gateway.max_connections": "4096",
	"restart.mode": `"handoff"`, "lock.token_env": `"HERMES_BOT_TOKEN"`, "lock.token_file": `"/etc/hermes/bot.token"`,
	"lock.scope": `"gateway"`, "lock.lock_dir": `"/run/lock/hermes"`,
	"service.start_limit_burst": "10", "crash_loop.starts": "5", "journal.max_bytes": "1048576",
	"telegram.token_env": `"TELEGRAM_BOT_TOKEN"`, "telegram.token_file": `"/etc/hermes/bot.token"`,
	"telegram.api_base": `"https://api.telegram.org"`, "telegram.model": `"gpt-4o-mini"`, "telegram.history_turns": "10", "telegram.max_answer": "16000",
	"alerts.webhook_url": `"https://hooks.example.org/hermes"`, "alerts.telegram_chat": "123456789", "alerts.retries": "2",
	"limits.max_rss": `"512MiB"`,

	"kubernetes.image": `"registry.example.org/hermes:0.1.0"`, "kubernetes.replicas": "1", "kubernetes.cpu_request": `"100m"`,
	"kubernetes.memory_limit": `"256Mi"`, "kubernetes.state_volume_size": `"1Gi"`,
}

const rungExample = `{ signal = "TERM", wait = "10s" }`

// sections are the policy's tables, in the order of knownKeys.
func sections() []string {
	var out []string
	for _, k := range knownKeys {
		if s, _, ok := strings.Cut(k, "."); ok && (len(out) == 0 || out[len(out)-1] != s) {
			out = append(out, s)
		}
	}
	return out
}

// checkTypes finds, in the decoded file, the first value (by line) of a
// kind its key does not take, and says how to write it.
func checkTypes(path string, src []byte, raw map[string]any) []error {
	var errs []error
	note := func(key, msg string) {
		errs = append(errs, &configError{File: path, Line: keyLine(src, key), Key: key, Msg: msg})
	}
	for _, s := range sections() {
		v, ok := raw[s]
		if !ok {
			continue
		}
		if tableArrays()[s] {
			if _, ok := v.([]map[string]any); !ok {
				note(s, fmt.Sprintf("%s; %s is a list of tables: write [[%s]] on a line of its own before each one's keys", describe(v), s, s))
			}
			continue
		}
		if _, ok := v.(map[string]any); !ok {
			note(s, fmt.Sprintf("%s; %s is a section: write [%s] on a line of its own, with its keys on the lines below", describe(v), s, s))
		}
	}
	for _, key := range knownKeys {
		if sec, k, ok := strings.Cut(key, "."); ok && tableArrays()[sec] {
			tables, _ := raw[sec].([]map[string]any)
			for i, t := range tables {
				if v, ok := t[k]; ok {
					if msg := wrongKind(key, v); msg != "" {
						note(elementKey(sec, i, k), msg)
					}
				}
			}
			continue
		}
		v, ok := lookupKey(raw, key)
		if !ok {
			continue
		}
		if msg := wrongKind(key, v); msg != "" {
			note(key, msg)
		}
	}
	return errs
}

// elementKey names a key of the i-th table (from 0) of an array of
// tables the way errors do: upstream[2].url is the second [[upstream]]'s.
func elementKey(section string, i int, key string) string {
	return fmt.Sprintf("%s[%d].%s", section, i+1, key)
}

// lookupKey finds a dotted key's value in the decoded file.
func lookupKey(raw map[string]any, key string) (any, bool) {
	parts := strings.Split(key, ".")
	m := raw
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			return nil, false
		}
		m = next
	}
	v, ok := m[parts[len(parts)-1]]
	return v, ok
}

// wrongKind returns what is wrong with v for key, or "".
func wrongKind(key string, v any) string {
	switch keyKinds[key] {
	case kindDuration:
		if _, ok := v.(string); !ok {
			return fmt.Sprintf("%s; write a duration in quotes, like %q", describe(v), durationExample(v))
		}
	case kindString:
		if _, ok := v.(string); !ok {
			ex := keyExamples[key]
			if ex == "" {
				ex = strconv.Quote(fmt.Sprint(v))
			}
			return fmt.Sprintf("%s; write it in quotes, like %s", describe(v), ex)
		}
	case kindInt:
		if _, ok := v.(int64); !ok {
			ex := keyExamples[key]
			if s, ok := v.(string); ok {
				if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
					ex = strconv.FormatInt(n, 10)
				}
			}
			return fmt.Sprintf("%s; write a whole number without quotes, like %s", describe(v), ex)
		}
	case kindBool:
		if _, ok := v.(bool); !ok {
			return fmt.Sprintf("%s; write true or false, without quotes", describe(v))
		}
	case kindIntList:
		l, ok := v.([]any)
		if !ok {
			if _, ok := v.([]int64); ok {
				return ""
			}
			return fmt.Sprintf("%s; write a list of numbers, like [123456789, 987654321]", describe(v))
		}
		for i, x := range l {
			if _, ok := x.(int64); !ok {
				return fmt.Sprintf("entry %d: %s; write each user id as a number without quotes, like [123456789]", i+1, describe(x))
			}
		}
	case kindStringList:
		l, ok := v.([]any)
		if !ok {
			return fmt.Sprintf("%s; write a list of strings, like [\"gpt-4o\", \"gpt-4o-mini\"]", describe(v))
		}
		for i, x := range l {
			if _, ok := x.(string); !ok {
				return fmt.Sprintf("entry %d: %s; write each in quotes, like [\"gpt-4o\"]", i+1, describe(x))
			}
		}
	case kindLadder:
		return wrongLadder(v)
	}
	return ""
}

// wrongLadder checks a ladder's shape: a list of { signal, wait } tables.
// What the values mean is the validator's to check.
func wrongLadder(v any) string {
	var rungs []map[string]any
	switch l := v.(type) {
	case []map[string]any: // [[restart.ladder]] tables
		rungs = l
	case []any:
		for i, x := range l {
			m, ok := x.(map[string]any)
			if !ok {
				return fmt.Sprintf("rung %d: %s; write each rung as a table, like %s", i+1, describe(x), rungExample)
			}
			rungs = append(rungs, m)
		}
	default:
		return fmt.Sprintf("%s; write a list of rungs, like [%s, { signal = \"KILL\", wait = \"5s\" }]", describe(v), rungExample)
	}
	for i, r := range rungs {
		if s, ok := r["signal"]; ok {
			if _, ok := s.(string); !ok {
				return fmt.Sprintf("rung %d: signal %s; write a signal name in quotes, like \"TERM\"", i+1, describe(s))
			}
		}
		if w, ok := r["wait"]; ok {
			if _, ok := w.(string); !ok {
				return fmt.Sprintf("rung %d: wait %s; write a duration in quotes, like %q, or \"auto\"", i+1, describe(w), durationExample(w))
			}
		}
	}
	return ""
}

// describe says what a decoded TOML value is, for people.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > 40 {
			x = x[:37] + "..."
		}
		return fmt.Sprintf("%q is a string", x)
	case int64:
		return fmt.Sprintf("%d is a number", x)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64) + " is a number"
	case bool:
		return fmt.Sprintf("%t is a boolean", x)
	case time.Time:
		if h, m, s := x.Clock(); h == 0 && m == 0 && s == 0 && x.Nanosecond() == 0 {
			return x.Format("2006-01-02") + " is a date"
		}
		return x.Format(time.RFC3339) + " is a date and time"
	case []any, []map[string]any:
		return "this is a list"
	case map[string]any:
		return "this is a table"
	}
	return fmt.Sprintf("%v is a %T", v, v)
}

// durationExample is a duration written like the number the file has, in
// seconds: 30 becomes "30s".
func durationExample(v any) string {
	switch x := v.(type) {
	case int64:
		if x > 0 {
			return fmt.Sprintf("%ds", x)
		}
	case float64:
		if x > 0 {
			return (time.Duration(x * float64(time.Second))).String()
		}
	}
	return "90s"
}

var duplicateRe = lazyRegexp(`^Key '(.+)' has already been defined\.$`)

// duplicateKey rewords the decoder's message for a key or table set twice,
// naming the line it was first set on.
func duplicateKey(ce *configError, src []byte, msg string) bool {
	m := duplicateRe().FindStringSubmatch(msg)
	if m == nil {
		return false
	}
	key := m[1]
	ce.Key = key
	first := keyLine(src, key)
	isTable := false
	for _, s := range sections() {
		isTable = isTable || s == key
	}
	switch {
	case isTable && first > 0 && first != ce.Line:
		ce.Msg = fmt.Sprintf("the section appears twice (first on line %d): put all its keys under one [%s]", first, key)
	case isTable:
		ce.Msg = fmt.Sprintf("the section appears twice: put all its keys under one [%s]", key)
	case first > 0 && first != ce.Line:
		ce.Msg = fmt.Sprintf("set twice (first on line %d): keep one", first)
	default:
		ce.Msg = "set twice: keep one"
	}
	return true
}

// unknownKeys reports the first key (or section) the file sets that hermes
// does not know, with the one it was probably meant to be. A misspelled
// section is named with its keys as they would be in the section meant.
// unknownKeysAll is an error for each unknown key or section; the keys of an
// unknown section are told with it.
func unknownKeysAll(path string, src []byte, md toml.MetaData, und []toml.Key) []error {
	var errs []error
	told := map[string]bool{}
	for i, k := range und {
		if told[k[0]] || (len(k) == 3 && told[k[0]+"."+k[1]]) {
			continue
		}
		err := unknownKeys(path, src, md, und[i:])
		errs = append(errs, err)
		var ce *configError
		if errors.As(err, &ce) {
			told[ce.Key] = true
		}
	}
	return errs
}

func unknownKeys(path string, src []byte, md toml.MetaData, und []toml.Key) error {
	k := und[0]
	key := k.String()
	ce := &configError{File: path, Line: keyLine(src, key), Key: key}
	if len(k) == 1 && strings.HasPrefix(md.Type(k...), "Hash") {
		sec := closest(key, sections())
		if sec == "" {
			ce.Msg = "unknown section (the sections are " + strings.Join(bracketed(sections()), ", ") + ")"
			return ce
		}
		ce.Msg = fmt.Sprintf("unknown section (did you mean [%s]?)", sec)
		// Its keys, as they would be in the section meant: one that would
		// still be unknown there is named too.
		for _, sub := range und[1:] {
			if len(sub) != 2 || sub[0] != key {
				continue
			}
			if _, ok := keyKinds[sec+"."+sub[1]]; ok {
				continue
			}
			line := &configError{File: path, Line: keyLine(src, sub.String()), Key: sub.String(), Msg: "unknown key" + suggestKey(sec+"."+sub[1])}
			ce.Msg += "\n" + line.Error()
		}
		return ce
	}
	if len(k) == 3 && keyKinds[k[0]+"."+k[1]] == kindLadder {
		// A key inside a rung: the error is the ladder's.
		ce.Key = k[0] + "." + k[1]
		ce.Line = keyLine(src, ce.Key)
		ce.Msg = fmt.Sprintf("a rung has an unknown key %q%s: a rung is %s", k[2], didYouMean(k[2], []string{"signal", "wait"}, ""), rungExample)
		return ce
	}
	ce.Msg = "unknown key" + suggestKey(key)
	return ce
}

// closest is the candidate nearest to s, or "" when none is near. A
// candidate that s begins (sig: signal) is near.
func closest(s string, candidates []string) string {
	best, bestD := "", max(2, len(s)/3)+1
	for _, c := range candidates {
		d := editDistance(s, c)
		if len(s) >= 3 && strings.HasPrefix(c, s) {
			d = min(d, 1)
		}
		if d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func bracketed(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "[" + n + "]"
		if tableArrays()[n] {
			out[i] = "[[" + n + "]]"
		}
	}
	return out
}

// sectionKeys lists the keys of one section, for an unknown key that is
// near none of them.
func sectionKeys(sec string) []string {
	var out []string
	for _, k := range knownKeys {
		if s, rest, ok := strings.Cut(k, "."); ok && s == sec {
			out = append(out, rest)
		}
	}
	return out
}
