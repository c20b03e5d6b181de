package main

// The upstreams a gateway may send a session to, as the policy says:
// [[upstream]] tables, tried in order, or gateway.upstream as the one
// upstream's shorthand; and [failover], how a request moves between them
// and how an upstream that fails is taken out and let back in.

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// UpstreamPolicy is one upstream.
type UpstreamPolicy struct {
	Name   string
	URL    string   // its base URL: requests go to URL + the client's path (less /v1 when URL ends in it)
	KeyEnv string   // the variable holding its API key; "": none
	Models []string // the models it serves; empty: any
	Weight int      // its share of first attempts among the weighted upstreams at the head of the order; 0: a fallback only
	Health string   // the path probed while it is out; "" probes /v1/models

	// A supervised upstream (upstream_child.go): the command hermes runs,
	// its extra environment ("KEY=value") and its working directory.
	Command []string
	Env     []string
	Dir     string
}

// FailoverPolicy is [failover].
type FailoverPolicy struct {
	Attempts     int           // upstreams one request may try, the first included
	Timeout      time.Duration // all attempts together, until an answer's head
	FailAfter    int           // consecutive failures that take an upstream out
	Cooldown     time.Duration // the first time out; it doubles while the probe fails
	CooldownMax  time.Duration
	ProbeTimeout time.Duration // each probe of an upstream that is out
}

type fileUpstream struct {
	Name   *string   `toml:"name"`
	URL    *string   `toml:"url"`
	KeyEnv *string   `toml:"key_env"`
	Models *[]string `toml:"models"`
	Weight *int      `toml:"weight"`
	Health *string   `toml:"health"`
	// Command makes it a supervised upstream: hermes runs it.
	Command *[]string `toml:"command"`
	Env     *[]string `toml:"env"`
	Dir     *string   `toml:"dir"`
}

type fileFailover struct {
	Attempts     *int    `toml:"attempts"`
	Timeout      *string `toml:"timeout" kind:"duration"`
	FailAfter    *int    `toml:"fail_after"`
	Cooldown     *string `toml:"cooldown" kind:"duration"`
	CooldownMax  *string `toml:"cooldown_max" kind:"duration"`
	ProbeTimeout *string `toml:"probe_timeout" kind:"duration"`
}

func defaultFailover() FailoverPolicy {
	return FailoverPolicy{Attempts: 3, Timeout: 2 * time.Minute, FailAfter: 3, Cooldown: 5 * time.Second, CooldownMax: 2 * time.Minute, ProbeTimeout: 5 * time.Second}
}

// shorthandUpstream is the name gateway.upstream's upstream goes by.
const shorthandUpstream = "upstream"

// upstreams is the effective list: the [[upstream]] tables, or the one
// gateway.upstream names (with gateway.upstream_key_env's key), or none
// (the built-in echo).
func (p *Policy) upstreams() []UpstreamPolicy {
	if len(p.Upstream) > 0 {
		return p.Upstream
	}
	if p.Gateway.Upstream == "" {
		return nil
	}
	return []UpstreamPolicy{{Name: shorthandUpstream, URL: p.Gateway.Upstream, KeyEnv: p.Gateway.UpstreamKeyEnv}}
}

// echoing reports whether the gateway answers with its built-in echo: it
// has no upstream.
func (p *Policy) echoing() bool { return len(p.upstreams()) == 0 }

// applyUpstreams applies [[upstream]] and [failover].
func (v *validator) applyUpstreams(p *Policy, f *filePolicy) {
	if len(f.Upstream) > 0 && f.Gateway.Upstream != nil {
		v.fail("gateway.upstream", "is set, and so is [[upstream]]: use one or the other (gateway.upstream is the shorthand for one [[upstream]])")
	}
	if len(f.Upstream) > 0 && f.Gateway.UpstreamKeyEnv != nil {
		v.fail("gateway.upstream_key_env", "is set, but the upstreams are [[upstream]] tables: give each its own key_env")
	}
	seen := map[string]int{}
	for i, fu := range f.Upstream {
		key := func(k string) string { return elementKey("upstream", i, k) }
		u := v.applyUpstream(i, fu)
		switch {
		case fu.Name == nil:
			v.fail(key("name"), "every [[upstream]] needs a name (it names the upstream in logs, metrics and status): add name = \"primary\", say")
		case !nameRe().MatchString(u.Name):
			v.fail(key("name"), "%q is not a valid upstream name: use 1 to 32 letters, digits, '-' or '_'", u.Name)
		case seen[u.Name] > 0:
			v.fail(key("name"), "%q is the name of upstream %d too: each needs its own", u.Name, seen[u.Name])
		}
		seen[u.Name] = i + 1
		p.Upstream = append(p.Upstream, u)
	}
	fo, d := &p.Failover, f.Failover
	if d.Attempts != nil {
		fo.Attempts = *d.Attempts
	}
	if d.FailAfter != nil {
		fo.FailAfter = *d.FailAfter
	}
	v.dur(&fo.Timeout, d.Timeout, "failover.timeout")
	v.dur(&fo.Cooldown, d.Cooldown, "failover.cooldown")
	v.dur(&fo.CooldownMax, d.CooldownMax, "failover.cooldown_max")
	v.dur(&fo.ProbeTimeout, d.ProbeTimeout, "failover.probe_timeout")
}

// applyUpstream applies the i-th [[upstream]] table (from 0), all but its
// name's uniqueness.
func (v *validator) applyUpstream(i int, fu fileUpstream) UpstreamPolicy {
	key := func(k string) string { return elementKey("upstream", i, k) }
	u := UpstreamPolicy{}
	v.str(&u.Name, fu.Name, key("name"), true)
	v.str(&u.URL, fu.URL, key("url"), true)
	v.str(&u.KeyEnv, fu.KeyEnv, key("key_env"), false)
	v.str(&u.Health, fu.Health, key("health"), false)
	if fu.Models != nil {
		u.Models = *fu.Models
	}
	if fu.Command != nil {
		u.Command = *fu.Command
		if len(u.Command) == 0 || strings.TrimSpace(u.Command[0]) == "" {
			v.fail(key("command"), "is empty: give the program and its arguments, like [\"/usr/local/bin/llama-server\", \"--port\", \"8081\"]")
		} else if !filepath.IsAbs(u.Command[0]) {
			v.fail(key("command"), "%q is not an absolute path: a service manager's PATH is not yours", u.Command[0])
		}
	}
	if fu.Env != nil {
		u.Env = *fu.Env
		for _, kv := range u.Env {
			if k, _, ok := strings.Cut(kv, "="); !ok || !envNameRe().MatchString(k) {
				v.fail(key("env"), "holds an entry that is not KEY=value: write [\"PORT=8081\"]")
				break
			}
		}
		if fu.Command == nil {
			v.fail(key("env"), "is for a supervised upstream: set command too")
		}
	}
	v.str(&u.Dir, fu.Dir, key("dir"), false)
	if u.Dir != "" && !filepath.IsAbs(u.Dir) {
		v.fail(key("dir"), "%q is not an absolute path", u.Dir)
	}
	if fu.Weight != nil {
		u.Weight = *fu.Weight
	}
	if fu.URL == nil {
		v.fail(key("url"), "every [[upstream]] needs a url, like \"http://127.0.0.1:8000/v1\"")
	} else if !strings.HasPrefix(u.URL, "http://") && !strings.HasPrefix(u.URL, "https://") {
		v.fail(key("url"), "%q must start with http:// or https://", u.URL)
	}
	if u.KeyEnv != "" && !envNameRe().MatchString(u.KeyEnv) {
		// Not echoed: what is there may be the key itself.
		v.fail(key("key_env"), "is not an environment variable name (it names the variable that holds the key; never put the key itself here)")
	}
	if u.Weight < 0 {
		v.fail(key("weight"), "%d: use 0 (a fallback only) or more", u.Weight)
	}
	if u.Health != "" && !strings.HasPrefix(u.Health, "/") {
		v.fail(key("health"), "%q must be a path, starting with /", u.Health)
	}
	for _, m := range u.Models {
		if strings.TrimSpace(m) == "" {
			v.fail(key("models"), "holds an empty model name")
		}
	}
	return u
}

// checkFailover validates [failover] as a whole.
func (v *validator) checkFailover(p *Policy) {
	fo := p.Failover
	if fo.Attempts < 1 || fo.Attempts > 16 {
		v.fail("failover.attempts", "%d is out of range: use 1 (no failover) to 16", fo.Attempts)
	}
	if fo.Timeout < time.Second {
		v.fail("failover.timeout", "%s is too short: use at least 1s (it bounds every attempt together, until an answer's head)", fo.Timeout)
	}
	if fo.FailAfter < 1 {
		v.fail("failover.fail_after", "%d: use at least 1", fo.FailAfter)
	}
	if fo.Cooldown < 100*time.Millisecond {
		v.fail("failover.cooldown", "%s is too short: use at least 100ms", fo.Cooldown)
	}
	if fo.CooldownMax < fo.Cooldown {
		v.fail("failover.cooldown_max", "%s is shorter than failover.cooldown (%s)", fo.CooldownMax, fo.Cooldown)
	}
	if fo.ProbeTimeout < 100*time.Millisecond || fo.ProbeTimeout > time.Minute {
		v.fail("failover.probe_timeout", "%s is out of range: use 100ms to 1m", fo.ProbeTimeout)
	}
}

// String names an upstream for people: its name and where it is.
func (u UpstreamPolicy) String() string { return fmt.Sprintf("%s (%s)", u.Name, u.URL) }
