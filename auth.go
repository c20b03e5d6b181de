package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/BurntSushi/toml"
)

// Client keys ([auth]): who may spend the upstream key. With keys set, a
// request to /v1/... needs "Authorization: Bearer <one of them>" (401 in
// the OpenAI shape without), and the client's key never goes upstream: the
// policy's own key does, or none. A key is kept as its SHA-256 only, so a
// keys file of "sha256:" lines holds nothing a thief could use, and a
// presented key is compared, hashed, in constant time against every one.
//
// A key is one line of [auth] keys_file, or one item (separated by commas
// or newlines) of the variable [auth] keys_env names:
//
//	NAME KEY          a named key, as hermes auth add writes it
//	NAME sha256:HEX   the same, stored as its hash
//	KEY               a key with no name: it counts as key-1, key-2, ...
//
// The name is what /metrics counts requests by; the key never shows.

// AuthPolicy is [auth].
type AuthPolicy struct {
	KeysEnv   string // a variable holding keys
	KeysFile  string // a file of keys, one a line; others must not read it
	AllowOpen bool   // listening beyond loopback with no keys, knowingly
	// ProtectStatus puts /status and /metrics behind a key too.
	ProtectStatus bool

	ring *keyRing // the keys, read when the policy was loaded
}

// keyRing is the client keys a policy holds.
type keyRing struct {
	keys []clientKey
}

type clientKey struct {
	name     string
	hash     [sha256.Size]byte
	requests *atomic.Uint64 // /v1/ requests it made, for /metrics
}

// names are the keys' names, in order.
func (r *keyRing) names() []string {
	if r == nil {
		return nil
	}
	var ns []string
	for _, k := range r.keys {
		ns = append(ns, k.name)
	}
	return ns
}

// keysOf is r's keys, none for a nil ring.
func (r *keyRing) keysOf() []clientKey {
	if r == nil {
		return nil
	}
	return r.keys
}

// empty reports whether there is no key: then nothing is asked of clients.
func (r *keyRing) empty() bool { return r == nil || len(r.keys) == 0 }

// match returns the key a bearer token is, or nil. Every key is compared,
// in constant time, whichever matches.
func (r *keyRing) match(token string) *clientKey {
	if r == nil {
		return nil
	}
	sum := sha256.Sum256([]byte(token))
	var found *clientKey
	for i := range r.keys {
		if subtle.ConstantTimeCompare(sum[:], r.keys[i].hash[:]) == 1 {
			found = &r.keys[i]
		}
	}
	return found
}

// inherit carries the request counts of old's keys over to r's of the same
// name, so that a reload does not reset /metrics.
func (r *keyRing) inherit(old *keyRing) {
	if r == nil || old == nil {
		return
	}
	for i := range r.keys {
		for _, o := range old.keys {
			if o.name == r.keys[i].name {
				r.keys[i].requests = o.requests
			}
		}
	}
}

// parseKeys reads keys from text, items split by newlines (and commas when
// commas is set). where names the source in errors ("keys_file line 3").
// Blank items and # comments are skipped.
func parseKeys(text string, commas bool, where func(n int) string, r *keyRing, plain *[]string) error {
	items := strings.Split(text, "\n")
	if commas {
		items = strings.FieldsFunc(text, func(c rune) bool { return c == ',' || c == '\n' })
	}
	for n, item := range items {
		item = strings.TrimSpace(item)
		if item == "" || strings.HasPrefix(item, "#") {
			continue
		}
		f := strings.Fields(item)
		name, key := "", f[0]
		switch len(f) {
		case 1:
			name = fmt.Sprintf("key-%d", len(r.keys)+1)
		case 2:
			name, key = f[0], f[1]
			if !validKeyName(name) {
				return fmt.Errorf("%s: the key name %q may hold only letters, digits, '.', '_' and '-'", where(n+1), name)
			}
		default:
			return fmt.Errorf("%s: want \"NAME KEY\" or \"KEY\", got %d words", where(n+1), len(f))
		}
		k := clientKey{name: name, requests: new(atomic.Uint64)}
		if hx, ok := strings.CutPrefix(key, "sha256:"); ok {
			b, err := hex.DecodeString(hx)
			if err != nil || len(b) != sha256.Size {
				return fmt.Errorf("%s: %q after sha256: is not 64 hex digits", where(n+1), name)
			}
			copy(k.hash[:], b)
		} else {
			if len(key) < 16 {
				return fmt.Errorf("%s: the key of %q is %d characters; use at least 16 (hermes auth add makes one of 43)", where(n+1), name, len(key))
			}
			k.hash = sha256.Sum256([]byte(key))
			*plain = append(*plain, key)
		}
		for _, o := range r.keys {
			if o.name == name {
				return fmt.Errorf("%s: the key name %q is used twice", where(n+1), name)
			}
		}
		r.keys = append(r.keys, k)
	}
	return nil
}

func validKeyName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// loadKeys reads the keys [auth] points to. plain gets the keys kept in
// the clear, for the log's redactor.
func loadKeys(a AuthPolicy) (*keyRing, []string, error) {
	r := &keyRing{}
	var plain []string
	if a.KeysEnv != "" {
		where := func(n int) string { return fmt.Sprintf("auth.keys_env: $%s item %d", a.KeysEnv, n) }
		if err := parseKeys(os.Getenv(a.KeysEnv), true, where, r, &plain); err != nil {
			return nil, nil, err
		}
	}
	if a.KeysFile != "" {
		b, err := readKeysFile(a.KeysFile)
		if err != nil {
			return nil, nil, err
		}
		where := func(n int) string { return fmt.Sprintf("auth.keys_file: %s line %d", a.KeysFile, n) }
		if err := parseKeys(string(b), false, where, r, &plain); err != nil {
			return nil, nil, err
		}
	}
	return r, plain, nil
}

// readKeysFile reads a keys file that only its owner can read.
func readKeysFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, withHint(fmt.Errorf("auth.keys_file: %s does not exist", path), "make it with: hermes auth add NAME")
		}
		return nil, fmt.Errorf("auth.keys_file: %w", err)
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		return nil, withHint(fmt.Errorf("auth.keys_file: %s has mode %04o: others can read it", path, m),
			"run: chmod 600 %s", path)
	}
	return os.ReadFile(path)
}

// loopbackListen reports whether a listen address is reachable from this
// host only.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkAuth validates [auth] and reads its keys into p. A gateway that
// listens beyond loopback in front of a real upstream must have keys, or
// say allow_open: anyone who reaches it would spend the upstream's key.
// The built-in echo upstream spends nothing, and needs none.
func (v *validator) checkAuth(p *Policy) {
	a := &p.Auth
	if a.KeysFile != "" && !filepath.IsAbs(a.KeysFile) {
		v.fail("auth.keys_file", "%q is not an absolute path (the gateway's working directory is not the policy's)", a.KeysFile)
		return
	}
	ring, plain, err := loadKeys(*a)
	if err != nil {
		key := "auth.keys_file"
		if strings.HasPrefix(err.Error(), "auth.keys_env") {
			key = "auth.keys_env"
		}
		v.failErr(key, err)
		return
	}
	a.ring = ring
	p.clientKeys = plain
	if !a.required() && !a.AllowOpen && !p.echoing() && !loopbackListen(p.Gateway.Listen) {
		v.failErr("gateway.listen", withHint(
			fmt.Errorf("%q listens beyond loopback and [auth] has no keys: anyone who can reach it would spend the upstream's key", p.Gateway.Listen),
			"give clients keys: [auth] keys_file = \"/etc/hermes/keys\" and hermes auth add NAME (or keys_env); or set [auth] allow_open = true to serve without them knowingly"))
	}
	if a.ProtectStatus && !a.required() {
		v.fail("auth.protect_status", "is true, but [auth] has no keys: /status and /metrics would answer nobody")
	}
	if a.required() && ring.empty() {
		// Named, but none there: where the policy is rendered (install-unit),
		// the keys are the Secret's, not this shell's. The gateway refuses
		// every client until there are some (noKeys), and says so.
		p.Warnings = append(p.Warnings, noKeys(*a))
	}
}

// required reports whether [auth] names keys: then every /v1/ request
// needs one, even while none could be read (nobody gets in then).
func (a AuthPolicy) required() bool { return a.KeysEnv != "" || a.KeysFile != "" }

// noKeys says that [auth] names keys but holds none.
func noKeys(a AuthPolicy) string {
	where := "$" + a.KeysEnv
	if a.KeysEnv == "" {
		where = a.KeysFile
	} else if a.KeysFile != "" {
		where += " and " + a.KeysFile
	}
	return "[auth] names client keys, but " + where + " holds none: every request to /v1/ is refused 401 until there are some (hermes auth add NAME, then hermes reload)"
}

// authorize lets a request through when it carries a client key, or when
// the policy has none. It answers 401 itself otherwise. A key found is
// counted, and the client's Authorization is removed: it is not the
// upstream's.
func (g *gateway) authorize(w http.ResponseWriter, r *http.Request, count bool) bool {
	_, ok := g.authorizeKey(w, r, count)
	return ok
}

// authorizeKey is authorize, and it returns the key's SHA-256: what a
// stream the request starts is bound to (reattach.go); zero without keys.
func (g *gateway) authorizeKey(w http.ResponseWriter, r *http.Request, count bool) (hash [sha256.Size]byte, ok bool) {
	a := &g.policy.Load().Auth
	if !a.required() {
		return hash, true
	}
	ring := a.ring
	token, ok := bearer(r.Header["Authorization"])
	if ok {
		if k := ring.match(token); k != nil {
			if count {
				k.requests.Add(1)
			}
			delete(r.Header, "Authorization")
			return k.hash, true
		}
	}
	g.mx.unauthorized.Add(1)
	w.Header().Set("WWW-Authenticate", `Bearer realm="hermes"`)
	msg := "this gateway needs a client key: send Authorization: Bearer <key> (hermes auth add NAME makes one)"
	if ok {
		msg = "the client key is not one this gateway knows"
	}
	writeAPIError(w, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", msg)
	return hash, false
}

// bearer returns the token of a single "Bearer" Authorization value.
func bearer(vs []string) (string, bool) {
	if len(vs) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(vs[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

const authUsage = `Make client keys ([auth]).

    hermes auth add NAME [--config FILE]

Prints a new key once, on stdout, and stores only its SHA-256 under NAME:
appended to [auth] keys_file (made, mode 0600, when missing), or, with no
keys_file, printed as the line to add to the variable [auth] keys_env names.
Give the key to the client; hermes cannot show it again. A running gateway
takes the new key on 'hermes reload'.

    $ hermes auth add laptop
`

func runAuth(args []string) error {
	if len(args) == 0 || args[0] != "add" {
		fs := newFlagSet("auth", authUsage)
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		return usageError("auth", "auth: the one subcommand is add: hermes auth add NAME")
	}
	fs := newFlagSet("auth add", authUsage)
	configPath := fs.String("config", "", "policy `FILE` (default: see 'hermes help')")
	rest := args[1:]
	if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
		if err := parseFlags(fs, rest); err != nil {
			return err
		}
		return usageError("auth", "auth add: give the key a NAME first (what /metrics counts it by): hermes auth add NAME")
	}
	name := rest[0]
	if err := parseFlags(fs, rest[1:]); err != nil {
		return err
	}
	if !validKeyName(name) {
		return usageError("auth", "auth add: the name %q may hold only letters, digits, '.', '_' and '-'", name)
	}
	// Only [auth] keys_file is read: the policy may not load yet, for
	// the keys file it names is missing (add makes it) or has no key.
	file, err := keysFileOf(*configPath)
	if err != nil {
		return err
	}
	var raw [32]byte
	rand.Read(raw[:])
	key := "hk-" + base64.RawURLEncoding.EncodeToString(raw[:])
	sum := sha256.Sum256([]byte(key))
	line := name + " sha256:" + hex.EncodeToString(sum[:])
	if file == "" {
		fmt.Printf("%s\n", key)
		fmt.Fprintf(os.Stderr, "The key above is shown once. The policy has no [auth] keys_file: add this item to the variable [auth] keys_env names (items are separated by commas or newlines):\n%s\n", line)
		return nil
	}
	if err := appendKey(file, name, line); err != nil {
		return err
	}
	fmt.Printf("%s\n", key)
	fmt.Fprintf(os.Stderr, "The key above is shown once; %s holds its hash as %q. Run 'hermes reload' for a running gateway to take it.\n", file, name)
	return nil
}

// keysFileOf reads [auth] keys_file from the policy file hermes would use,
// or "" with none.
func keysFileOf(flagPath string) (string, error) {
	path, err := findPolicy(flagPath)
	if err != nil || path == "" {
		return "", err
	}
	var f struct {
		Auth struct {
			KeysFile string `toml:"keys_file"`
		} `toml:"auth"`
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return "", &configError{File: path, Msg: "cannot read the policy file: " + err.Error()}
	}
	if _, err := toml.NewDecoder(bytes.NewReader(src)).Decode(&f); err != nil {
		return "", tomlError(path, src, err)
	}
	if f.Auth.KeysFile != "" && !filepath.IsAbs(f.Auth.KeysFile) {
		return "", &configError{File: path, Line: keyLine(src, "auth.keys_file"), Key: "auth.keys_file", Msg: fmt.Sprintf("%q is not an absolute path", f.Auth.KeysFile)}
	}
	return f.Auth.KeysFile, nil
}

// appendKey adds line to the keys file, made 0600 when missing; a name it
// holds already is refused.
func appendKey(file, name, line string) error {
	if b, err := readKeysFile(file); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
				return withHint(fmt.Errorf("%s holds a key named %q already", file, name), "pick another name, or delete its line first to replace it")
			}
		}
	} else if _, serr := os.Stat(file); serr == nil {
		return err // there, but unreadable or readable by others
	}
	fh, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("auth.keys_file: %w", err)
	}
	if _, err := fmt.Fprintln(fh, line); err != nil {
		fh.Close()
		return fmt.Errorf("auth.keys_file: %w", err)
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return fmt.Errorf("auth.keys_file: %w", err)
	}
	return fh.Close()
}
