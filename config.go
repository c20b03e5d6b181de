package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
)

// Policy is the effective policy: the built-in defaults with the policy file
// decoded over them. Every command reads it; systemd units and launchd plists
// are rendered from it, so the pieces cannot disagree.
type Policy struct {
	Path     string   // the file it came from; "" for built-in defaults
	Warnings []string // things that are valid but probably not meant

	Name    string
	Gateway GatewayPolicy
	// Upstream is the [[upstream]] tables; upstreams() is the effective
	// list, gateway.upstream's shorthand included.
	Upstream  []UpstreamPolicy
	Failover  FailoverPolicy
	Supervise SupervisePolicy
	Reattach  ReattachPolicy
	Echo      EchoPolicy
	Drain     DrainPolicy
	Restart   RestartPolicy
	Service   ServicePolicy
	Lock      LockPolicy
	Watchdog  WatchdogPolicy
	CrashLoop CrashLoopPolicy
	Journal   JournalPolicy
	Telegram  TelegramPolicy
	Alerts    AlertsPolicy
	Limits    LimitsPolicy
	Auth      AuthPolicy
	// Kubernetes is read by install-unit --kubernetes only (kubernetes.go).
	Kubernetes KubernetesPolicy

	// clientKeys are [auth]'s keys kept in the clear, read with the
	// policy: the log's redactor hides them.
	clientKeys []string
}

type GatewayPolicy struct {
	Listen        string
	ListenTimeout time.Duration // gateway.listen in use: keep trying this long, then exit 78
	HeaderTimeout time.Duration // a client sending a request head for longer is cut off
	IdleTimeout   time.Duration // a keep-alive connection idle for longer is closed
	BodyTimeout   time.Duration // the longest silence while a client sends a request body
	WriteTimeout  time.Duration // the longest a write to a client may wait for it to read
	// MaxRequestBody is the largest request body taken (413 above it).
	MaxRequestBody int64
	// MaxConnections is the most client connections held at once; past it
	// a new one gets a 503 and is closed. 0: from the file limit.
	MaxConnections        int
	UpstreamHeaderTimeout time.Duration // the upstream's answer head must come within this (504 after)
	UpstreamIdleTimeout   time.Duration // the longest silence inside an upstream's answer body
	Upstream              string        // "" means the built-in echo upstream
	UpstreamKeyEnv        string        // name of the environment variable holding the API key
	StateDir              string
	StateDirSet           bool // StateDir came from the file, not the default
}

type EchoPolicy struct {
	WordDelay time.Duration
}

type DrainPolicy struct {
	Timeout time.Duration // in-flight sessions may run this long after a stop or restart request
	Grace   time.Duration // then still-open sessions get a final event and are closed within this
}

// Budget is the longest a drain may take from request to exit.
func (d DrainPolicy) Budget() time.Duration { return d.Timeout + d.Grace }

// listenWait is how long a starting gateway keeps trying gateway.listen
// while it is in use: gateway.listen_timeout, but at most half of
// restart.ready_timeout, so that hermes restart is still waiting when the
// gateway gives up and can say why.
func (p *Policy) listenWait() time.Duration {
	return min(p.Gateway.ListenTimeout, p.Restart.ReadyTimeout/2)
}

// autoWaitMargin is added to the drain budget for a rung with wait = "auto":
// time to flush, close listeners and exit after the last session ended.
const autoWaitMargin = 5 * time.Second

type RestartPolicy struct {
	Mode         string        // modeHandoff or modeDrain: how `hermes restart` restarts a serving gateway
	Probation    time.Duration // after a handoff, the old gateway stays this long, ready to serve again
	Ladder       []Rung
	Force        []Rung
	ReadyTimeout time.Duration
}

// Restart modes.
const (
	modeHandoff = "handoff" // the gateway starts its successor and hands it the listening socket
	modeDrain   = "drain"   // the gateway drains and exits; a fresh one starts after it
)

// longest is the most a whole restart may take: the longer ladder walked
// to its end, then ready_timeout.
func (r RestartPolicy) longest() time.Duration {
	sum := func(l []Rung) (d time.Duration) {
		for _, x := range l {
			d += x.Wait
		}
		return d
	}
	return max(sum(r.Ladder), sum(r.Force)) + r.ReadyTimeout
}

// Rung is one step of the escalation ladder: send Signal, then wait up to
// Wait for the gateway to exit before the next rung.
type Rung struct {
	Signal syscall.Signal
	Wait   time.Duration
	Auto   bool // Wait was "auto": the drain budget plus a margin
}

type ServicePolicy struct {
	RestartSec         time.Duration
	RestartMaxDelay    time.Duration
	StartLimitBurst    int
	StartLimitInterval time.Duration
}

type LockPolicy struct {
	TokenEnv  string
	TokenFile string
	Scope     string
	Dir       string
}

type WatchdogPolicy struct {
	Heartbeat     time.Duration // the loop ticks this often; 3 missed ticks is a frozen loop
	Timeout       time.Duration // loop silent this long: dump stacks and exit (0 disables)
	SignalTimeout time.Duration // a stop/restart signal unread this long: the same (0 disables)
}

type CrashLoopPolicy struct {
	Starts    int           // more than this many starts ...
	Window    time.Duration // ... within this window is a crash loop
	BaseDelay time.Duration // first backoff delay; doubles each further start
	MaxDelay  time.Duration // backoff cap
}

// TelegramPolicy is the Telegram bot the gateway answers (telegram.go).
// It is on when a token source is set.
type TelegramPolicy struct {
	TokenEnv           string
	TokenFile          string
	APIBase            string
	AllowedUsers       []int64
	Model              string        // the model name sent upstream
	SystemPrompt       string        // "" sends none
	HistoryTurns       int           // turns of history kept per chat and sent upstream
	MaxAnswer          int           // characters of an answer sent to a chat and kept; the rest is cut with a notice
	PollTimeout        time.Duration // getUpdates long-poll timeout
	EditEvery          time.Duration // a streamed reply is edited at most this often
	RequestTimeout     time.Duration // every other Bot API call
	BackoffMax         time.Duration // cap of the backoff after a failed poll (conflict, network, 5xx)
	DeleteWebhook      bool          // a webhook is set: delete it (else polling cannot work: exit 78)
	StrangerReplyEvery time.Duration // a user not allowed is told their id at most this often
}

// Enabled reports whether the gateway runs a Telegram bot.
func (t TelegramPolicy) Enabled() bool { return t.TokenEnv != "" || t.TokenFile != "" }

// AlertsPolicy says where incidents are sent (alerts.go).
type AlertsPolicy struct {
	WebhookURL          string
	WebhookURLEnv       string // the environment variable holding the URL, for a URL with a token in it
	TelegramChat        int64  // also send each alert to this chat through the bot ([telegram])
	Timeout             time.Duration
	Retries             int
	TelegramConflictFor time.Duration // a 409 episode this long is an incident
	UpstreamDownFor     time.Duration // the upstream unreachable this long is an incident
}

// LimitsPolicy is the memory guard (limits.go).
type LimitsPolicy struct {
	MaxRSS       int64         // bytes; 0: off
	MaxRSSWindow time.Duration // RSS above MaxRSS this long: a planned restart
}

type JournalPolicy struct {
	MaxBytes  int64         // the journal is rotated past this size (one old file is kept)
	ExitFlush time.Duration // an exiting gateway waits this long at most for queued lines and exit records
}

// defaultPolicy returns the built-in policy. Every value here is documented,
// with its reason, in hermes.toml.example.
func defaultPolicy() *Policy {
	p := &Policy{
		Name:      "gateway",
		Failover:  defaultFailover(),
		Supervise: defaultSupervise(),
		Reattach:  defaultReattach(),
		Gateway: GatewayPolicy{
			Listen:         "127.0.0.1:8642",
			ListenTimeout:  5 * time.Second,
			HeaderTimeout:  10 * time.Second,
			IdleTimeout:    2 * time.Minute,
			UpstreamKeyEnv: "HERMES_UPSTREAM_KEY",
			BodyTimeout:    60 * time.Second,
			WriteTimeout:   60 * time.Second,
			MaxRequestBody: 32 << 20,
			// As nginx's proxy_read_timeout (60s) for the head; a model
			// may think longer between two tokens, so the body's is 5m.
			UpstreamHeaderTimeout: 60 * time.Second,
			UpstreamIdleTimeout:   5 * time.Minute,
		},
		Echo:  EchoPolicy{WordDelay: 50 * time.Millisecond},
		Drain: DrainPolicy{Timeout: 90 * time.Second, Grace: 5 * time.Second},
		Restart: RestartPolicy{
			Mode:      modeHandoff,
			Probation: 5 * time.Second,
			Ladder: []Rung{
				{Signal: syscall.SIGUSR1, Auto: true},
				{Signal: syscall.SIGTERM, Wait: 10 * time.Second},
				{Signal: syscall.SIGKILL, Wait: 5 * time.Second},
			},
			Force: []Rung{
				{Signal: syscall.SIGTERM, Wait: 3 * time.Second},
				{Signal: syscall.SIGKILL, Wait: 2 * time.Second},
			},
			ReadyTimeout: 30 * time.Second,
		},
		Service: ServicePolicy{
			RestartSec:         5 * time.Second,
			RestartMaxDelay:    5 * time.Minute,
			StartLimitBurst:    10,
			StartLimitInterval: 30 * time.Second,
		},
		Lock:      LockPolicy{Scope: "gateway"},
		Watchdog:  WatchdogPolicy{Heartbeat: 500 * time.Millisecond, Timeout: 10 * time.Second, SignalTimeout: 3 * time.Second},
		CrashLoop: CrashLoopPolicy{Starts: 5, Window: 2 * time.Minute, BaseDelay: 5 * time.Second, MaxDelay: 5 * time.Minute},
		Journal:   JournalPolicy{MaxBytes: 1 << 20, ExitFlush: 2 * time.Second},
		Telegram: TelegramPolicy{
			APIBase: "https://api.telegram.org", Model: "gpt-4o-mini", HistoryTurns: 10, MaxAnswer: 16000,
			PollTimeout: 30 * time.Second, EditEvery: time.Second, RequestTimeout: 10 * time.Second,
			BackoffMax: time.Minute, StrangerReplyEvery: time.Hour,
		},
		Alerts: AlertsPolicy{Timeout: 3 * time.Second, Retries: 2, TelegramConflictFor: 5 * time.Minute, UpstreamDownFor: 2 * time.Minute},
		Limits: LimitsPolicy{MaxRSSWindow: time.Minute},
	}
	p.Kubernetes = KubernetesPolicy{Image: "hermes:latest", Replicas: 1}
	p.resolve()
	return p
}

// resolve fills the values derived from others: auto waits, default paths.
func (p *Policy) resolve() {
	for _, l := range [][]Rung{p.Restart.Ladder, p.Restart.Force} {
		for i := range l {
			if l[i].Auto {
				l[i].Wait = p.Drain.Budget() + autoWaitMargin
			}
		}
	}
	if !p.Gateway.StateDirSet {
		p.Gateway.StateDir = defaultStateDir(p.Name)
	}
	if p.Lock.Dir == "" {
		p.Lock.Dir = defaultLockDir()
	}
	// One poller per bot token: the token lock guards the Telegram token
	// unless [lock] names a token of its own.
	if p.Telegram.Enabled() && p.Lock.TokenEnv == "" && p.Lock.TokenFile == "" {
		p.Lock.TokenEnv, p.Lock.TokenFile = p.Telegram.TokenEnv, p.Telegram.TokenFile
	}
}

func defaultStateDir(name string) string {
	// A system unit from install-unit has StateDirectory=hermes/<name>:
	// systemd created the dir for the unit's User= and names it here.
	if d := os.Getenv("STATE_DIRECTORY"); filepath.IsAbs(d) && !strings.Contains(d, ":") {
		return d
	}
	if os.Geteuid() == 0 && runtime.GOOS != "darwin" {
		return filepath.Join("/var/lib/hermes", name)
	}
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "hermes", name)
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		home = "/"
	}
	return filepath.Join(home, ".local", "state", "hermes", name)
}

// defaultLockDir is one directory for the whole machine, so two instances
// with different names (and state dirs) but one token still collide.
// /run/lock is world-writable on Linux and not hidden by PrivateTmp.
func defaultLockDir() string {
	if runtime.GOOS == "linux" {
		return "/run/lock/hermes"
	}
	return "/tmp/hermes-locks"
}

// The file format, the one declaration of the policy's keys: knownKeys
// and keyKinds (policykeys.go) are read off these fields' tags. Pointers
// tell "absent" from "zero"; durations and signals are strings so that a
// bad one is reported with its key and line, and a duration says so with
// kind:"duration".
type fileGateway struct {
	Listen                *string `toml:"listen"`
	ListenTimeout         *string `toml:"listen_timeout" kind:"duration"`
	HeaderTimeout         *string `toml:"header_timeout" kind:"duration"`
	IdleTimeout           *string `toml:"idle_timeout" kind:"duration"`
	BodyTimeout           *string `toml:"body_timeout" kind:"duration"`
	WriteTimeout          *string `toml:"write_timeout" kind:"duration"`
	MaxRequestBody        *string `toml:"max_request_body"`
	MaxConnections        *int    `toml:"max_connections"`
	UpstreamHeaderTimeout *string `toml:"upstream_header_timeout" kind:"duration"`
	UpstreamIdleTimeout   *string `toml:"upstream_idle_timeout" kind:"duration"`
	Upstream              *string `toml:"upstream"`
	UpstreamKeyEnv        *string `toml:"upstream_key_env"`
	StateDir              *string `toml:"state_dir"`
}

type fileTelegram struct {
	TokenEnv           *string  `toml:"token_env"`
	TokenFile          *string  `toml:"token_file"`
	APIBase            *string  `toml:"api_base"`
	AllowedUsers       *[]int64 `toml:"allowed_users"`
	Model              *string  `toml:"model"`
	SystemPrompt       *string  `toml:"system_prompt"`
	HistoryTurns       *int     `toml:"history_turns"`
	MaxAnswer          *int     `toml:"max_answer"`
	PollTimeout        *string  `toml:"poll_timeout" kind:"duration"`
	EditEvery          *string  `toml:"edit_every" kind:"duration"`
	RequestTimeout     *string  `toml:"request_timeout" kind:"duration"`
	BackoffMax         *string  `toml:"backoff_max" kind:"duration"`
	DeleteWebhook      *bool    `toml:"delete_webhook"`
	StrangerReplyEvery *string  `toml:"stranger_reply_every" kind:"duration"`
}

type fileRung struct {
	Signal string `toml:"signal"`
	Wait   string `toml:"wait"`
}

type filePolicy struct {
	Name    *string     `toml:"name"`
	Gateway fileGateway `toml:"gateway"`
	Echo    struct {
		WordDelay *string `toml:"word_delay" kind:"duration"`
	} `toml:"echo"`
	Drain struct {
		Timeout *string `toml:"timeout" kind:"duration"`
		Grace   *string `toml:"grace" kind:"duration"`
	} `toml:"drain"`
	Restart struct {
		Mode         *string     `toml:"mode"`
		Probation    *string     `toml:"probation" kind:"duration"`
		Ladder       *[]fileRung `toml:"ladder"`
		Force        *[]fileRung `toml:"force"`
		ReadyTimeout *string     `toml:"ready_timeout" kind:"duration"`
	} `toml:"restart"`
	Service struct {
		RestartSec         *string `toml:"restart_sec" kind:"duration"`
		RestartMaxDelay    *string `toml:"restart_max_delay" kind:"duration"`
		StartLimitBurst    *int    `toml:"start_limit_burst"`
		StartLimitInterval *string `toml:"start_limit_interval" kind:"duration"`
	} `toml:"service"`
	Lock struct {
		TokenEnv  *string `toml:"token_env"`
		TokenFile *string `toml:"token_file"`
		Scope     *string `toml:"scope"`
		Dir       *string `toml:"lock_dir"`
	} `toml:"lock"`
	Watchdog struct {
		Heartbeat     *string `toml:"heartbeat" kind:"duration"`
		Timeout       *string `toml:"timeout" kind:"duration"`
		SignalTimeout *string `toml:"signal_timeout" kind:"duration"`
	} `toml:"watchdog"`
	CrashLoop struct {
		Starts    *int    `toml:"starts"`
		Window    *string `toml:"window" kind:"duration"`
		BaseDelay *string `toml:"base_delay" kind:"duration"`
		MaxDelay  *string `toml:"max_delay" kind:"duration"`
	} `toml:"crash_loop"`
	Journal struct {
		MaxBytes  *int64  `toml:"max_bytes"`
		ExitFlush *string `toml:"exit_flush" kind:"duration"`
	} `toml:"journal"`
	Telegram fileTelegram `toml:"telegram"`
	Alerts   struct {
		WebhookURL          *string `toml:"webhook_url" secret:"true"`
		WebhookURLEnv       *string `toml:"webhook_url_env"`
		TelegramChat        *int64  `toml:"telegram_chat"`
		Timeout             *string `toml:"timeout" kind:"duration"`
		Retries             *int    `toml:"retries"`
		TelegramConflictFor *string `toml:"telegram_conflict_for" kind:"duration"`
		UpstreamDownFor     *string `toml:"upstream_down_for" kind:"duration"`
	} `toml:"alerts"`
	Auth struct {
		KeysEnv       *string `toml:"keys_env"`
		KeysFile      *string `toml:"keys_file"`
		AllowOpen     *bool   `toml:"allow_open"`
		ProtectStatus *bool   `toml:"protect_status"`
	} `toml:"auth"`
	Limits struct {
		MaxRSS       *string `toml:"max_rss"`
		MaxRSSWindow *string `toml:"max_rss_window" kind:"duration"`
	} `toml:"limits"`
	Kubernetes fileKubernetes `toml:"kubernetes"`
	Failover   fileFailover   `toml:"failover"`
	Supervise  fileSupervise  `toml:"supervise"`
	Reattach   fileReattach   `toml:"reattach"`
	Upstream   []fileUpstream `toml:"upstream"` // an array of tables: last, as TOML writes them
}

// configError is a policy error. It names the file, the line and the key, and
// always maps to exit code 78.
type configError struct {
	File string
	Line int
	Key  string
	Msg  string
	// also are the file's other errors, after this one in line order: a
	// policy's errors are reported all at once, as compilers and nginx -t
	// do. This one, the first, is the one callers read the key of.
	also []error
}

func (e *configError) Error() string {
	s := e.errorLine()
	for _, o := range e.also {
		s += "\n" + o.Error()
	}
	return s
}

func (e *configError) errorLine() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": %s", e.Key)
	}
	fmt.Fprintf(&b, ": %s", e.Msg)
	return b.String()
}

// systemPolicyPath is the machine-wide policy, the last place looked.
// Tests point it elsewhere.
var systemPolicyPath = "/etc/hermes/hermes.toml"

// findPolicy returns the policy file to use, or "" for built-in defaults.
// An explicitly named file (--config or $HERMES_CONFIG) must exist.
func findPolicy(flagPath string) (string, error) {
	explicit := flagPath
	if explicit == "" {
		explicit = os.Getenv("HERMES_CONFIG")
	}
	if explicit != "" {
		abs, err := filepath.Abs(explicit)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", &configError{File: abs, Msg: "cannot read the policy file: " + errors.Unwrap(err).Error()}
		}
		return abs, nil
	}
	var candidates []string
	if wd, err := os.Getwd(); err == nil {
		candidates = append(candidates, filepath.Join(wd, "hermes.toml"))
	}
	if d := os.Getenv("XDG_CONFIG_HOME"); filepath.IsAbs(d) {
		candidates = append(candidates, filepath.Join(d, "hermes", "hermes.toml"))
	} else if home, err := os.UserHomeDir(); err == nil && home != "" {
		candidates = append(candidates, filepath.Join(home, ".config", "hermes", "hermes.toml"))
	}
	candidates = append(candidates, systemPolicyPath)
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	return "", nil
}

// loadPolicy finds and loads the policy (see findPolicy).
func loadPolicy(flagPath string) (*Policy, error) {
	path, err := findPolicy(flagPath)
	if err != nil {
		return nil, err
	}
	if path == "" {
		return defaultPolicy(), nil
	}
	return loadPolicyFile(path)
}

// loadPolicyFile reads, decodes and validates one policy file. It returns a
// *configError on any problem and never a half-loaded policy.
func loadPolicyFile(path string) (*Policy, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, &configError{File: path, Msg: "cannot read the policy file: " + err.Error()}
	}
	// Decoded once as plain TOML, so a value of the wrong kind is named
	// for what it is (checkTypes), then into the file format.
	var raw map[string]any
	if _, err := toml.NewDecoder(bytes.NewReader(src)).Decode(&raw); err != nil {
		return nil, tomlError(path, src, err)
	}
	if errs := checkTypes(path, src, raw); len(errs) > 0 {
		// Values of the wrong kind stop the decoding: these are all the
		// file's errors that can be told.
		return nil, joinConfigErrors(errs)
	}
	var f filePolicy
	md, err := toml.NewDecoder(bytes.NewReader(src)).Decode(&f)
	if err != nil {
		return nil, tomlError(path, src, err)
	}
	v := &validator{file: path, src: src}
	if und := md.Undecoded(); len(und) > 0 {
		for _, err := range unknownKeysAll(path, src, md, und) {
			var ce *configError
			errors.As(err, &ce)
			v.add(ce.Key, err) // one error a key: a rung's unknown key is the ladder's
		}
	}
	p := defaultPolicy()
	p.Path = path
	v.apply(p, &f)
	if len(v.errs) == 0 {
		// The checks of values together: only once each is good, or they
		// would judge defaults in place of the values that failed.
		p.resolve()
		v.check(p)
	}
	if err := joinConfigErrors(v.errs); err != nil {
		return nil, err
	}
	return p, nil
}

var tomlLineRe = lazyRegexp(`line (\d+)`)

// tomlError turns a decoder error into a configError with file, line and key.
func tomlError(path string, src []byte, err error) error {
	ce := &configError{File: path}
	var pe toml.ParseError
	if errors.As(err, &pe) {
		ce.Line = pe.Position.Line
		ce.Key = pe.LastKey
		ce.Msg = pe.Message
		duplicateKey(ce, src, pe.Message)
		return ce
	}
	msg := err.Error()
	if m := tomlLineRe().FindStringSubmatch(msg); m != nil {
		fmt.Sscan(m[1], &ce.Line)
	}
	if i := strings.Index(msg, `(last key "`); i >= 0 {
		rest := msg[i+len(`(last key "`):]
		if j := strings.Index(rest, `"`); j >= 0 {
			ce.Key = rest[:j]
		}
	}
	if i := strings.LastIndex(msg, "): "); i >= 0 {
		msg = msg[i+3:]
	}
	msg = strings.TrimPrefix(msg, "toml: ")
	if strings.HasPrefix(msg, "incompatible types") || strings.HasPrefix(msg, "type mismatch") {
		// checkTypes words these for people; this is for one it missed.
		msg = "this value is of the wrong kind for this key (hermes.toml.example shows how to write it)"
	}
	ce.Msg = msg
	if ce.Line == 0 && ce.Key != "" {
		ce.Line = keyLine(src, ce.Key)
	}
	return ce
}

// suggestKey names a known key the unknown one was probably meant to be:
// the nearest key of its section, the same key in another section, or
// the nearest key of all; else it lists its section's keys.
func suggestKey(k string) string {
	sec, last, dotted := strings.Cut(k, ".")
	if !dotted {
		last = k
	}
	inSection := dotted && len(sectionKeys(sec)) > 0
	if inSection {
		if c := closest(last, sectionKeys(sec)); c != "" {
			return fmt.Sprintf(" (did you mean %s.%s?)", sec, c)
		}
	}
	for _, known := range knownKeys {
		kl := known[strings.LastIndex(known, ".")+1:]
		if kl == last && known != k {
			return fmt.Sprintf(" (did you mean %s?)", known)
		}
	}
	if c := closest(k, knownKeys); c != "" {
		return fmt.Sprintf(" (did you mean %s?)", c)
	}
	if inSection {
		return fmt.Sprintf(" ([%s] takes %s)", sec, strings.Join(sectionKeys(sec), ", "))
	}
	return ""
}

func editDistance(a, b string) int {
	// Optimal string alignment: an insertion, a deletion, a substitution
	// or two neighbours swapped each cost 1 ("stauts" is one from "status").
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev = prev, cur
	}
	return prev[len(b)]
}

var (
	tableRe = lazyRegexp(`^\s*\[\[?\s*([A-Za-z0-9_.\-" ]+?)\s*\]\]?\s*(#.*)?$`)
	keyRe   = lazyRegexp(`^\s*([A-Za-z0-9_\-"]+)\s*=`)
)

// keyLine finds the line on which a dotted key is set, for error messages.
// It understands what policy files use: [table] headers and key = value
// lines. A key inside an inline table reports the line of the nearest
// enclosing key it can find; 0 means unknown.
func keyLine(src []byte, key string) int {
	if m := elementKeyRe().FindStringSubmatch(key); m != nil {
		n, _ := strconv.Atoi(m[2])
		return elementLine(src, m[1], n, m[3])
	}
	parts := strings.Split(key, ".")
	for n := len(parts); n > 0; n-- {
		want := strings.Join(parts[:n], ".")
		table := ""
		for i, line := range strings.Split(string(src), "\n") {
			if m := tableRe().FindStringSubmatch(line); m != nil {
				table = strings.ReplaceAll(strings.ReplaceAll(m[1], `"`, ""), " ", "")
				if table == want {
					return i + 1
				}
				continue
			}
			if m := keyRe().FindStringSubmatch(line); m != nil {
				full := strings.Trim(m[1], `"`)
				if table != "" {
					full = table + "." + full
				}
				if full == want {
					return i + 1
				}
			}
		}
	}
	return 0
}

// elementKeyRe is an elementKey: section[n] or section[n].key.
var elementKeyRe = lazyRegexp(`^([a-z_]+)\[(\d+)\](?:\.([a-z_]+))?$`)

// elementLine is the line of key in the n-th table (from 1) of the array
// of tables section, or of the table's header when key is "" or not there.
func elementLine(src []byte, section string, n int, key string) int {
	seen, header := 0, 0
	for i, line := range strings.Split(string(src), "\n") {
		if m := tableRe().FindStringSubmatch(line); m != nil {
			if header != 0 {
				break // past the table
			}
			if strings.HasPrefix(strings.TrimSpace(line), "[[") && strings.ReplaceAll(m[1], " ", "") == section {
				if seen++; seen == n {
					header = i + 1
				}
			}
			continue
		}
		if m := keyRe().FindStringSubmatch(line); header != 0 && key != "" && m != nil && strings.Trim(m[1], `"`) == key {
			return i + 1
		}
	}
	return header
}

// validator applies a decoded file over the defaults, keeping every error.
type validator struct {
	file string
	src  []byte
	errs []error         // every error found, each a *configError (maybe with a hint)
	keys map[string]bool // the keys failed: one error per key
}

// failErr fails key with err's message, and its hint when it has one.
func (v *validator) failErr(key string, err error) {
	if v.keys[key] {
		return
	}
	ce := &configError{File: v.file, Line: keyLine(v.src, key), Key: key, Msg: err.Error()}
	var he *hintError
	if errors.As(err, &he) {
		v.add(key, withHint(ce, "%s", he.hint))
		return
	}
	v.add(key, ce)
}

func (v *validator) fail(key, format string, args ...any) {
	if !v.keys[key] {
		v.add(key, &configError{File: v.file, Line: keyLine(v.src, key), Key: key, Msg: fmt.Sprintf(format, args...)})
	}
}

func (v *validator) add(key string, err error) {
	if v.keys == nil {
		v.keys = map[string]bool{}
	}
	v.keys[key] = true
	v.errs = append(v.errs, err)
}

// joinConfigErrors is errs as one error: the first in line order, which
// carries the rest (and whose hint, if any, is the one printed). nil when
// errs is empty.
func joinConfigErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	line := func(err error) int {
		var ce *configError
		if errors.As(err, &ce) {
			return ce.Line
		}
		return 0
	}
	sort.SliceStable(errs, func(i, j int) bool { return line(errs[i]) < line(errs[j]) })
	var first *configError
	if !errors.As(errs[0], &first) || len(errs) == 1 {
		return errs[0]
	}
	first.also = append(first.also, errs[1:]...)
	return errs[0]
}

func (v *validator) str(dst *string, src *string, key string, nonEmpty bool) {
	if src == nil {
		return
	}
	if nonEmpty && strings.TrimSpace(*src) == "" {
		v.fail(key, "must not be empty")
		return
	}
	*dst = *src
}

func (v *validator) dur(dst *time.Duration, src *string, key string) {
	if src == nil {
		return
	}
	d, err := time.ParseDuration(strings.TrimSpace(*src))
	if err != nil {
		v.fail(key, "%q is not a duration (write it like \"90s\", \"1m30s\" or \"250ms\")", *src)
		return
	}
	if d < 0 {
		v.fail(key, "%q is negative", *src)
		return
	}
	*dst = d
}

func (v *validator) ladder(dst *[]Rung, src *[]fileRung, key string) {
	if src == nil {
		return
	}
	if len(*src) == 0 {
		v.fail(key, "the ladder is empty: it needs at least one rung, e.g. [{ signal = \"TERM\", wait = \"10s\" }, { signal = \"KILL\", wait = \"5s\" }]")
		return
	}
	out := make([]Rung, 0, len(*src))
	for i, fr := range *src {
		rk := fmt.Sprintf("%s[%d]", key, i)
		sig, err := parseSignal(fr.Signal)
		if err != nil {
			v.fail(key, "rung %d: %v", i+1, err)
			return
		}
		if sig == syscall.SIGUSR2 {
			v.fail(key, "rung %d: USR2 hands the gateway over to a successor and is not a rung of the ladder: set restart.mode = \"handoff\" instead", i+1)
			return
		}
		r := Rung{Signal: sig}
		switch w := strings.TrimSpace(fr.Wait); w {
		case "":
			v.fail(key, "rung %d (%s): wait is missing (a duration like \"10s\", or \"auto\")", i+1, signalName(sig))
			return
		case "auto":
			r.Auto = true
		default:
			d, err := time.ParseDuration(w)
			if err != nil || d <= 0 {
				v.fail(key, "rung %d (%s): wait %q is not a positive duration or \"auto\"", i+1, signalName(sig), fr.Wait)
				return
			}
			r.Wait = d
		}
		_ = rk
		out = append(out, r)
	}
	*dst = out
}

func (v *validator) apply(p *Policy, f *filePolicy) {
	v.applyGateway(p, f)
	v.applyUpstreams(p, f)
	v.applySupervise(p, &f.Supervise)
	v.applyReattach(p, &f.Reattach)
	v.applyLifecycle(p, f)
	v.applyTelegram(p, &f.Telegram)
	v.applyAlerts(p, f)
	v.applyKubernetes(p, &f.Kubernetes)
}

// applyGateway applies name and [gateway].
func (v *validator) applyGateway(p *Policy, f *filePolicy) {
	v.str(&p.Name, f.Name, "name", true)
	if f.Name != nil && !nameRe().MatchString(*f.Name) {
		v.fail("name", "%q is not a valid instance name: use 1 to 32 letters, digits, '-' or '_', starting with a letter or digit (it names files, units and a launchd label)", *f.Name)
	}
	v.str(&p.Gateway.Listen, f.Gateway.Listen, "gateway.listen", true)
	if _, _, err := splitHostPort(p.Gateway.Listen); err != nil {
		v.fail("gateway.listen", "%q: %v (write it like \"127.0.0.1:8642\")", p.Gateway.Listen, err)
	}
	v.dur(&p.Gateway.ListenTimeout, f.Gateway.ListenTimeout, "gateway.listen_timeout")
	v.dur(&p.Gateway.HeaderTimeout, f.Gateway.HeaderTimeout, "gateway.header_timeout")
	v.dur(&p.Gateway.IdleTimeout, f.Gateway.IdleTimeout, "gateway.idle_timeout")
	v.dur(&p.Gateway.BodyTimeout, f.Gateway.BodyTimeout, "gateway.body_timeout")
	v.dur(&p.Gateway.WriteTimeout, f.Gateway.WriteTimeout, "gateway.write_timeout")
	if f.Gateway.MaxRequestBody != nil {
		n, err := parseSize(*f.Gateway.MaxRequestBody)
		if err != nil || n == 0 {
			if err == nil {
				err = errors.New("a request body needs a limit")
			}
			v.fail("gateway.max_request_body", "%q: %v (write it like \"32MiB\" or \"512KiB\")", *f.Gateway.MaxRequestBody, err)
		}
		p.Gateway.MaxRequestBody = n
	}
	if f.Gateway.MaxConnections != nil {
		p.Gateway.MaxConnections = *f.Gateway.MaxConnections
	}
	v.dur(&p.Gateway.UpstreamHeaderTimeout, f.Gateway.UpstreamHeaderTimeout, "gateway.upstream_header_timeout")
	v.dur(&p.Gateway.UpstreamIdleTimeout, f.Gateway.UpstreamIdleTimeout, "gateway.upstream_idle_timeout")
	v.str(&p.Gateway.Upstream, f.Gateway.Upstream, "gateway.upstream", false)
	v.str(&p.Gateway.UpstreamKeyEnv, f.Gateway.UpstreamKeyEnv, "gateway.upstream_key_env", false)
	if f.Gateway.StateDir != nil {
		d := expandHome(*f.Gateway.StateDir)
		if !filepath.IsAbs(d) {
			v.fail("gateway.state_dir", "%q is not an absolute path", *f.Gateway.StateDir)
		}
		p.Gateway.StateDir, p.Gateway.StateDirSet = filepath.Clean(d), true
	}
}

// applyLifecycle applies how the gateway starts, drains, restarts and
// ends: [echo], [drain], [restart], [service], [lock], [watchdog],
// [crash_loop] and [journal].
func (v *validator) applyLifecycle(p *Policy, f *filePolicy) {
	v.dur(&p.Echo.WordDelay, f.Echo.WordDelay, "echo.word_delay")
	v.dur(&p.Drain.Timeout, f.Drain.Timeout, "drain.timeout")
	v.dur(&p.Drain.Grace, f.Drain.Grace, "drain.grace")
	if f.Restart.Mode != nil {
		switch m := strings.TrimSpace(*f.Restart.Mode); m {
		case modeHandoff, modeDrain:
			p.Restart.Mode = m
		default:
			v.fail("restart.mode", "%q is not a restart mode: use \"handoff\" (no request refused) or \"drain\"", *f.Restart.Mode)
		}
	}
	v.dur(&p.Restart.Probation, f.Restart.Probation, "restart.probation")
	v.ladder(&p.Restart.Ladder, f.Restart.Ladder, "restart.ladder")
	v.ladder(&p.Restart.Force, f.Restart.Force, "restart.force")
	v.dur(&p.Restart.ReadyTimeout, f.Restart.ReadyTimeout, "restart.ready_timeout")
	v.dur(&p.Service.RestartSec, f.Service.RestartSec, "service.restart_sec")
	v.dur(&p.Service.RestartMaxDelay, f.Service.RestartMaxDelay, "service.restart_max_delay")
	if f.Service.StartLimitBurst != nil {
		p.Service.StartLimitBurst = *f.Service.StartLimitBurst
	}
	v.dur(&p.Service.StartLimitInterval, f.Service.StartLimitInterval, "service.start_limit_interval")
	v.str(&p.Lock.TokenEnv, f.Lock.TokenEnv, "lock.token_env", false)
	if f.Lock.TokenFile != nil {
		p.Lock.TokenFile = expandHome(*f.Lock.TokenFile)
	}
	v.str(&p.Lock.Scope, f.Lock.Scope, "lock.scope", true)
	if f.Lock.Dir != nil {
		p.Lock.Dir = expandHome(*f.Lock.Dir)
	}
	v.dur(&p.Watchdog.Heartbeat, f.Watchdog.Heartbeat, "watchdog.heartbeat")
	v.dur(&p.Watchdog.Timeout, f.Watchdog.Timeout, "watchdog.timeout")
	v.dur(&p.Watchdog.SignalTimeout, f.Watchdog.SignalTimeout, "watchdog.signal_timeout")
	if f.CrashLoop.Starts != nil {
		p.CrashLoop.Starts = *f.CrashLoop.Starts
	}
	v.dur(&p.CrashLoop.Window, f.CrashLoop.Window, "crash_loop.window")
	v.dur(&p.CrashLoop.BaseDelay, f.CrashLoop.BaseDelay, "crash_loop.base_delay")
	v.dur(&p.CrashLoop.MaxDelay, f.CrashLoop.MaxDelay, "crash_loop.max_delay")
	if f.Journal.MaxBytes != nil {
		p.Journal.MaxBytes = *f.Journal.MaxBytes
	}
	v.dur(&p.Journal.ExitFlush, f.Journal.ExitFlush, "journal.exit_flush")
}

// applyTelegram applies [telegram].
func (v *validator) applyTelegram(p *Policy, t *fileTelegram) {
	v.str(&p.Telegram.TokenEnv, t.TokenEnv, "telegram.token_env", false)
	if t.TokenFile != nil {
		p.Telegram.TokenFile = expandHome(*t.TokenFile)
	}
	v.str(&p.Telegram.APIBase, t.APIBase, "telegram.api_base", true)
	p.Telegram.APIBase = strings.TrimRight(p.Telegram.APIBase, "/")
	if t.AllowedUsers != nil {
		p.Telegram.AllowedUsers = *t.AllowedUsers
	}
	v.str(&p.Telegram.Model, t.Model, "telegram.model", true)
	v.str(&p.Telegram.SystemPrompt, t.SystemPrompt, "telegram.system_prompt", false)
	if t.HistoryTurns != nil {
		p.Telegram.HistoryTurns = *t.HistoryTurns
	}
	if t.MaxAnswer != nil {
		p.Telegram.MaxAnswer = *t.MaxAnswer
	}
	v.dur(&p.Telegram.PollTimeout, t.PollTimeout, "telegram.poll_timeout")
	v.dur(&p.Telegram.EditEvery, t.EditEvery, "telegram.edit_every")
	v.dur(&p.Telegram.RequestTimeout, t.RequestTimeout, "telegram.request_timeout")
	v.dur(&p.Telegram.BackoffMax, t.BackoffMax, "telegram.backoff_max")
	if t.DeleteWebhook != nil {
		p.Telegram.DeleteWebhook = *t.DeleteWebhook
	}
	v.dur(&p.Telegram.StrangerReplyEvery, t.StrangerReplyEvery, "telegram.stranger_reply_every")
}

// applyAlerts applies [alerts], [limits] and [auth].
func (v *validator) applyAlerts(p *Policy, f *filePolicy) {
	al := &f.Alerts
	v.str(&p.Alerts.WebhookURL, al.WebhookURL, "alerts.webhook_url", false)
	v.str(&p.Alerts.WebhookURLEnv, al.WebhookURLEnv, "alerts.webhook_url_env", false)
	if al.TelegramChat != nil {
		p.Alerts.TelegramChat = *al.TelegramChat
	}
	v.dur(&p.Alerts.Timeout, al.Timeout, "alerts.timeout")
	if al.Retries != nil {
		p.Alerts.Retries = *al.Retries
	}
	v.dur(&p.Alerts.TelegramConflictFor, al.TelegramConflictFor, "alerts.telegram_conflict_for")
	v.dur(&p.Alerts.UpstreamDownFor, al.UpstreamDownFor, "alerts.upstream_down_for")
	if f.Limits.MaxRSS != nil {
		n, err := parseSize(*f.Limits.MaxRSS)
		if err != nil {
			v.fail("limits.max_rss", "%q: %v (write it like \"512MiB\" or \"1GiB\"; \"\" is off)", *f.Limits.MaxRSS, err)
		}
		p.Limits.MaxRSS = n
	}
	v.dur(&p.Limits.MaxRSSWindow, f.Limits.MaxRSSWindow, "limits.max_rss_window")
	v.str(&p.Auth.KeysEnv, f.Auth.KeysEnv, "auth.keys_env", false)
	v.str(&p.Auth.KeysFile, f.Auth.KeysFile, "auth.keys_file", false)
	if f.Auth.AllowOpen != nil {
		p.Auth.AllowOpen = *f.Auth.AllowOpen
	}
	if f.Auth.ProtectStatus != nil {
		p.Auth.ProtectStatus = *f.Auth.ProtectStatus
	}
}

// parseSize reads a size: a number with a unit (KiB, MiB, GiB, or KB, MB,
// GB as powers of ten, or B), or "" for none.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || n <= 0 {
				return 0, errors.New("not a positive size")
			}
			return int64(n * float64(u.mult)), nil
		}
	}
	return 0, errors.New("a size needs a unit")
}

func formatSize(n int64) string {
	switch {
	case n == 0:
		return ""
	case n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

var nameRe = lazyRegexp(`^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$`)

// check validates the resolved policy as a whole: values that are each fine
// but together would break a promise (a ladder that kills a drain, a unit
// that kills a drain).
func (v *validator) check(p *Policy) {
	v.checkGateway(p)
	v.checkFailover(p)
	v.checkSupervise(p)
	v.checkReattach(p)
	v.checkGatewayLimits(p)
	v.checkAuth(p)
	v.checkTelegram(p)
	v.checkAlerts(p)
	v.checkKubernetes(p)
	v.checkLock(p)
	v.checkRestart(p)
	v.checkService(p)
	v.checkWatchdog(p)
	v.checkCrashLoop(p)
}

// checkGateway validates [gateway]'s timeouts and its upstream.
func (v *validator) checkGateway(p *Policy) {
	// Waiting for gateway.listen is part of a start: it must fit in what
	// the unit gives the start itself (startSlack, beside the crash-loop
	// delay). listenWait keeps it inside restart.ready_timeout too.
	if lt := p.Gateway.ListenTimeout; lt > startSlack/2 {
		v.fail("gateway.listen_timeout", "%s is too long: use 0 to %s (a start has %s for itself)", lt, startSlack/2, startSlack)
	}
	// The server's sweeper looks once a second: less would read as more.
	if ht := p.Gateway.HeaderTimeout; ht < time.Second || ht > 10*time.Minute {
		v.fail("gateway.header_timeout", "%s is out of range: use 1s to 10m (a client that takes longer to send a request head is cut off)", ht)
	}
	if it := p.Gateway.IdleTimeout; it < time.Second || it > 24*time.Hour {
		v.fail("gateway.idle_timeout", "%s is out of range: use 1s to 24h (an idle keep-alive connection is closed after it)", it)
	}
	if u := p.Gateway.Upstream; u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		v.fail("gateway.upstream", "%q must start with http:// or https://", u)
	}
	if e := p.Gateway.UpstreamKeyEnv; e != "" && !envNameRe().MatchString(e) {
		v.fail("gateway.upstream_key_env", "is not an environment variable name (it names the variable that holds the key; never put the key itself here, and it is not shown)")
	}
}

// checkLock validates [lock].
func (v *validator) checkLock(p *Policy) {
	if e := p.Lock.TokenEnv; e != "" && !envNameRe().MatchString(e) {
		v.fail("lock.token_env", "is not an environment variable name (it names the variable that holds the token; never put the token itself here, and it is not shown)")
	}
	if p.Lock.TokenFile != "" && !filepath.IsAbs(p.Lock.TokenFile) {
		v.fail("lock.token_file", "%q is not an absolute path", p.Lock.TokenFile)
	}
	if p.Lock.Dir != "" && !filepath.IsAbs(p.Lock.Dir) {
		v.fail("lock.lock_dir", "%q is not an absolute path", p.Lock.Dir)
	}
	if !nameRe().MatchString(p.Lock.Scope) {
		v.fail("lock.scope", "%q is not a valid scope: use letters, digits, '-' or '_'", p.Lock.Scope)
	}
}

// checkRestart validates [restart] against [drain]: the ladders may not
// escalate over a drain the policy promised.
func (v *validator) checkRestart(p *Policy) {
	if p.Drain.Timeout == 0 {
		p.Warnings = append(p.Warnings, "drain.timeout is 0: a stop or restart cuts every in-flight session at once")
	}
	if p.Restart.ReadyTimeout <= 0 {
		v.fail("restart.ready_timeout", "must be positive")
	}
	// The graceful rung is the first one that asks the gateway to drain. Its
	// wait must outlast the drain the policy allows, or the ladder would
	// escalate over sessions that were promised drain.timeout.
	for _, r := range p.Restart.Ladder {
		if r.Signal == syscall.SIGHUP {
			v.fail("restart.ladder", "HUP reloads the policy, it does not stop the gateway: use USR1 (drain and restart), TERM, INT, QUIT or KILL")
			return
		}
		if drains(r.Signal) {
			if r.Wait < p.Drain.Budget() {
				v.fail("restart.ladder", "the %s rung waits %s but a drain may take %s (drain.timeout %s + drain.grace %s): make its wait at least that, or \"auto\"",
					signalName(r.Signal), r.Wait, p.Drain.Budget(), p.Drain.Timeout, p.Drain.Grace)
			}
			break
		}
	}
	for _, r := range p.Restart.Force {
		if r.Signal == syscall.SIGHUP {
			v.fail("restart.force", "HUP reloads the policy, it does not stop the gateway")
			return
		}
	}
	if last := p.Restart.Ladder[len(p.Restart.Ladder)-1]; last.Signal != syscall.SIGKILL {
		p.Warnings = append(p.Warnings, fmt.Sprintf("restart.ladder ends with %s, not KILL: a gateway that ignores it is left running and the restart fails", signalName(last.Signal)))
	}
	if last := p.Restart.Force[len(p.Restart.Force)-1]; last.Signal != syscall.SIGKILL {
		p.Warnings = append(p.Warnings, fmt.Sprintf("restart.force ends with %s, not KILL: a gateway that ignores it is left running", signalName(last.Signal)))
	}
}

// checkService validates [service]: what the unit tells the service
// manager about restarts.
func (v *validator) checkService(p *Policy) {
	if p.Service.RestartSec < time.Second {
		v.fail("service.restart_sec", "%s is too short: a restart needs a delay, or one crash becomes a loop that cuts every stream (use at least 1s)", p.Service.RestartSec)
	}
	if p.Service.RestartMaxDelay < p.Service.RestartSec {
		v.fail("service.restart_max_delay", "%s is shorter than service.restart_sec (%s)", p.Service.RestartMaxDelay, p.Service.RestartSec)
	}
	if p.Service.StartLimitBurst < 1 {
		v.fail("service.start_limit_burst", "must be at least 1")
	}
	if p.Service.StartLimitInterval <= 0 {
		v.fail("service.start_limit_interval", "must be positive")
	}
	if !v.keys["service.restart_sec"] && !v.keys["service.start_limit_burst"] && time.Duration(p.Service.StartLimitBurst-1)*p.Service.RestartSec <= p.Service.StartLimitInterval {
		p.Warnings = append(p.Warnings, fmt.Sprintf(
			"service: %d starts %s apart fit in start_limit_interval %s: systemd may give up on a crash loop for good (start-limit-hit) instead of letting the crash-loop guard slow it down",
			p.Service.StartLimitBurst, p.Service.RestartSec, p.Service.StartLimitInterval))
	}
}

// checkWatchdog validates [watchdog].
func (v *validator) checkWatchdog(p *Policy) {
	if p.Watchdog.Heartbeat < 100*time.Millisecond || p.Watchdog.Heartbeat > 10*time.Second {
		v.fail("watchdog.heartbeat", "%s is out of range: use 100ms to 10s (the loop ticks this often; 3 missed ticks is a frozen loop)", p.Watchdog.Heartbeat)
	}
	if minWD := max(2*time.Second, 2*p.Watchdog.Heartbeat); p.Watchdog.Timeout > 0 && p.Watchdog.Timeout < minWD && !v.keys["watchdog.heartbeat"] {
		v.fail("watchdog.timeout", "%s is too short: use 0 to disable, or at least %s (2s, and 2 heartbeats of %s)", p.Watchdog.Timeout, minWD, p.Watchdog.Heartbeat)
	}
	if p.Watchdog.SignalTimeout > 0 && p.Watchdog.SignalTimeout < 100*time.Millisecond {
		v.fail("watchdog.signal_timeout", "%s is too short (use 0 to disable, or at least 100ms)", p.Watchdog.SignalTimeout)
	}
}

// checkCrashLoop validates [crash_loop] and [journal].
func (v *validator) checkCrashLoop(p *Policy) {
	if p.CrashLoop.Starts < 1 {
		v.fail("crash_loop.starts", "must be at least 1")
	}
	if p.CrashLoop.Window <= 0 {
		v.fail("crash_loop.window", "must be positive")
	}
	if p.CrashLoop.MaxDelay < p.CrashLoop.BaseDelay {
		v.fail("crash_loop.max_delay", "%s is shorter than crash_loop.base_delay (%s)", p.CrashLoop.MaxDelay, p.CrashLoop.BaseDelay)
	}
	if p.Journal.MaxBytes < 4096 {
		v.fail("journal.max_bytes", "%d is too small (at least 4096)", p.Journal.MaxBytes)
	}
	// The unit's TimeoutStopSec leaves autoWaitMargin after the drain for
	// the exit itself: the exit's flush must fit in it.
	if p.Journal.ExitFlush < 100*time.Millisecond || p.Journal.ExitFlush > autoWaitMargin-time.Second {
		v.fail("journal.exit_flush", "%s is out of range: use 100ms to %s (it must fit in the %s a service manager gives an exit after the drain)", p.Journal.ExitFlush, autoWaitMargin-time.Second, autoWaitMargin)
	}
}

// checkAlerts validates [alerts] and [limits].
func (v *validator) checkAlerts(p *Policy) {
	a := p.Alerts
	if u := a.WebhookURL; u != "" && !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
		v.fail("alerts.webhook_url", "%q must start with https:// or http://", u)
	}
	if e := a.WebhookURLEnv; e != "" && !envNameRe().MatchString(e) {
		v.fail("alerts.webhook_url_env", "is not an environment variable name (it names the variable that holds the URL; what is there is not shown)")
	}
	if a.TelegramChat != 0 && !p.Telegram.Enabled() {
		v.fail("alerts.telegram_chat", "alerts go to a Telegram chat through the bot, and [telegram] has none: set telegram.token_env")
	}
	if a.Timeout < 100*time.Millisecond || a.Timeout > 30*time.Second {
		v.fail("alerts.timeout", "%s is out of range: use 100ms to 30s", a.Timeout)
	}
	if a.Retries < 0 || a.Retries > 10 {
		v.fail("alerts.retries", "%d is out of range: use 0 to 10", a.Retries)
	}
	if l := p.Limits; l.MaxRSS != 0 && l.MaxRSS < 16<<20 {
		v.fail("limits.max_rss", "%s is too small: an idle gateway takes about 10MiB (use at least 16MiB)", formatSize(l.MaxRSS))
	}
	if p.Limits.MaxRSSWindow < time.Second {
		v.fail("limits.max_rss_window", "%s is too short (use at least 1s)", p.Limits.MaxRSSWindow)
	}
}

// checkTelegram validates [telegram] as a whole.
func (v *validator) checkTelegram(p *Policy) {
	t := p.Telegram
	if e := t.TokenEnv; e != "" && !envNameRe().MatchString(e) {
		v.fail("telegram.token_env", "is not an environment variable name (it names the variable that holds the bot token; never put the token itself here, and it is not shown)")
	}
	if t.TokenFile != "" && !filepath.IsAbs(t.TokenFile) {
		v.fail("telegram.token_file", "%q is not an absolute path", t.TokenFile)
	}
	if !strings.HasPrefix(t.APIBase, "https://") && !strings.HasPrefix(t.APIBase, "http://") {
		v.fail("telegram.api_base", "%q must start with https:// (or http:// for a local Bot API server)", t.APIBase)
	}
	if !t.Enabled() {
		return
	}
	if len(t.AllowedUsers) == 0 {
		p.Warnings = append(p.Warnings, "telegram.allowed_users is empty: the bot answers nobody but tells each user their id (add yours: allowed_users = [123456789])")
	}
	for i, id := range t.AllowedUsers {
		if id <= 0 {
			v.fail("telegram.allowed_users", "entry %d (%d) is not a Telegram user id (a positive number; the bot tells a user theirs)", i+1, id)
		}
	}
	if t.HistoryTurns < 0 || t.HistoryTurns > 100 {
		v.fail("telegram.history_turns", "%d is out of range: use 0 to 100", t.HistoryTurns)
	}
	if t.MaxAnswer < 100 || t.MaxAnswer > 1000000 {
		v.fail("telegram.max_answer", "%d is out of range: use 100 to 1000000 characters (Telegram shows 4096 in one message)", t.MaxAnswer)
	}
	if t.PollTimeout < time.Second || t.PollTimeout > 50*time.Second {
		v.fail("telegram.poll_timeout", "%s is out of range: use 1s to 50s (Telegram holds a long poll at most 50s)", t.PollTimeout)
	}
	if t.EditEvery < time.Second {
		v.fail("telegram.edit_every", "%s is too short: Telegram allows about one edit a second per chat (use at least 1s)", t.EditEvery)
	}
	if t.RequestTimeout < time.Second {
		v.fail("telegram.request_timeout", "%s is too short (use at least 1s)", t.RequestTimeout)
	}
	if t.BackoffMax < time.Second {
		v.fail("telegram.backoff_max", "%s is too short (use at least 1s: a shorter cap is a tight loop against Telegram)", t.BackoffMax)
	}
}

var envNameRe = lazyRegexp(`^[A-Za-z_][A-Za-z0-9_]*$`)

func expandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[1:])
		}
	}
	return p
}

func splitHostPort(addr string) (string, string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return "", "", errors.New(ae.Err)
		}
		return "", "", err
	}
	if port == "" {
		return "", "", errors.New("missing port")
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return "", "", fmt.Errorf("port %q is not a number", port)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("port %s is out of range: use 1 to 65535", port)
	}
	if host != "" && !validListenHost(host) {
		return "", "", fmt.Errorf("host %q is neither an IP address nor a host name", host)
	}
	return host, port, nil
}

// validListenHost reports whether host is an IP address (an IPv6 one may
// carry a %zone) or a host name of letters, digits, hyphens and dots.
func validListenHost(host string) bool {
	ip, _, _ := strings.Cut(host, "%")
	if net.ParseIP(ip) != nil {
		return true
	}
	if strings.Contains(host, "%") || len(host) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(host, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// drains reports whether a signal asks a healthy gateway to drain (and so
// needs the gateway's loop to act on it).
func drains(s syscall.Signal) bool {
	return s == syscall.SIGUSR1 || s == syscall.SIGTERM || s == syscall.SIGINT
}

var signalNames = map[string]syscall.Signal{
	"TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
	"HUP": syscall.SIGHUP, "QUIT": syscall.SIGQUIT, "KILL": syscall.SIGKILL,
}

func parseSignal(s string) (syscall.Signal, error) {
	n := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "SIG")
	if sig, ok := signalNames[n]; ok {
		return sig, nil
	}
	if s == "" {
		return 0, errors.New("signal is missing (one of USR1, TERM, INT, QUIT, KILL)")
	}
	return 0, fmt.Errorf("unknown signal %q (one of USR1, TERM, INT, QUIT, KILL)", s)
}

func signalName(s syscall.Signal) string {
	for n, v := range signalNames {
		if v == s {
			return n
		}
	}
	return fmt.Sprintf("signal %d", int(s))
}

// policyLabel names where the policy came from, for logs and status.
func (p *Policy) policyLabel() string {
	if p.Path == "" {
		return "built-in defaults"
	}
	return p.Path
}

const checkConfigUsage = `Print the effective policy with defaults filled in, plus warnings.
Exit 0 when the policy is valid, 78 when it is not.

    $ hermes check-config
    $ hermes check-config --config /etc/hermes/hermes.toml
`

func runCheckConfig(args []string) error {
	fs := newFlagSet("check-config", checkConfigUsage)
	configPath := fs.String("config", "", "policy `FILE` (default: see 'hermes help')")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	p, err := loadPolicy(*configPath)
	if err != nil {
		return err
	}
	fmt.Printf("# policy: %s\n", p.policyLabel())
	for _, w := range p.Warnings {
		fmt.Printf("# warning: %s\n", w)
	}
	fmt.Print(p.render())
	return nil
}

// checkGatewayLimits validates the client and upstream limits of [gateway].
func (v *validator) checkGatewayLimits(p *Policy) {
	g := p.Gateway
	if g.BodyTimeout < time.Second || g.BodyTimeout > time.Hour {
		v.fail("gateway.body_timeout", "%s is out of range: use 1s to 1h (a client silent this long while it sends a request body is cut off with 408)", g.BodyTimeout)
	}
	if g.WriteTimeout < time.Second || g.WriteTimeout > time.Hour {
		v.fail("gateway.write_timeout", "%s is out of range: use 1s to 1h (a client that reads nothing of its answer this long is cut off)", g.WriteTimeout)
	}
	if n := g.MaxRequestBody; n != 0 && (n < 1<<10 || n > 4<<30) {
		v.fail("gateway.max_request_body", "%s is out of range: use 1KiB to 4GiB", formatSize(n))
	}
	if g.MaxConnections < 0 || g.MaxConnections > 1<<20 {
		v.fail("gateway.max_connections", "%d is out of range: use 0 (from the file limit) or 1 to 1048576", g.MaxConnections)
	}
	if g.UpstreamHeaderTimeout < time.Second || g.UpstreamHeaderTimeout > time.Hour {
		v.fail("gateway.upstream_header_timeout", "%s is out of range: use 1s to 1h (an upstream that has not begun its answer this long gets the client a 504)", g.UpstreamHeaderTimeout)
	}
	if g.UpstreamIdleTimeout < time.Second || g.UpstreamIdleTimeout > 24*time.Hour {
		v.fail("gateway.upstream_idle_timeout", "%s is out of range: use 1s to 24h (an upstream answer silent this long is cut, and its client told so)", g.UpstreamIdleTimeout)
	}
}
