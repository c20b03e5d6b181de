package main

import (
	"errors"
	"net/url"
	"os"
	"strings"
	"sync"
)

// redactor knows the secret values a process holds (the upstream API key,
// the lock token) so that no log line, journal line or error string shows
// one. Go's *url.Error prints the whole URL, and other libraries are no
// more careful, so lines are scrubbed by value at the last moment before
// they are written: a secret that slipped into a message is replaced, not
// trusted to be absent.
type redactor struct {
	mu      sync.RWMutex
	secrets []string
}

// redacted replaces a secret in a stderr line.
const redacted = "[redacted]"

// minSecretLen keeps a value too short to be a credential (an empty
// variable, "1") from blanking out ordinary words.
const minSecretLen = 6

// policySecrets returns the secrets p points to, read from the environment
// and the token file now.
func policySecrets(p *Policy) *redactor {
	r := &redactor{}
	if p.Gateway.UpstreamKeyEnv != "" {
		r.add(os.Getenv(p.Gateway.UpstreamKeyEnv))
	}
	for _, u := range p.upstreams() {
		if u.KeyEnv != "" {
			r.add(os.Getenv(u.KeyEnv))
		}
	}
	for _, k := range p.clientKeys {
		r.add(k)
	}
	if tok, err := readLockToken(p); err == nil {
		r.add(tok)
	}
	return r
}

func (r *redactor) add(s string) {
	if r == nil {
		return
	}
	s = strings.TrimSpace(s)
	if len(s) < minSecretLen {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.secrets {
		if x == s {
			return
		}
	}
	r.secrets = append(r.secrets, s)
}

// holds reports whether s contains a known secret.
func (r *redactor) holds(s string) bool {
	if r == nil {
		return false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, sec := range r.secrets {
		if strings.Contains(s, sec) {
			return true
		}
	}
	return false
}

// scrub returns s with every known secret replaced.
func (r *redactor) scrub(s string) string {
	if r == nil {
		return s
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, sec := range r.secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, redacted)
		}
	}
	return s
}

// withoutURL returns the error a *url.Error wraps: the same failure, told
// without the URL, which may hold a secret (the Bot API's token is in its
// path, a webhook URL may carry one). Other errors are returned as they are.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
