package main

import (
	"bytes"
	_ "embed"
	"encoding/xml"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"
	"unicode/utf8"
)

// install-unit and uninstall-unit: the systemd unit or launchd plist of one
// gateway, rendered from its policy by the templates in unit/, so the
// manager's timeouts and restart rules cannot disagree with the policy.

var (
	//go:embed unit/hermes.service.tmpl
	serviceTemplateText string
	//go:embed unit/hermes.plist.tmpl
	plistTemplateText string

	serviceTemplate = sync.OnceValue(func() *template.Template {
		return template.Must(template.New("hermes.service").Parse(serviceTemplateText))
	})
	plistTemplate = sync.OnceValue(func() *template.Template {
		return template.Must(template.New("hermes.plist").Funcs(template.FuncMap{"xml": xmlEscape}).Parse(plistTemplateText))
	})
)

// unitMarker is in every file install-unit writes; uninstall-unit removes
// no file without it.
const unitMarker = "Written by hermes install-unit"

// optionsPrefix starts the header line recording the options a file was
// rendered with, so hermes status can render it again and compare.
const optionsPrefix = "install-unit options: "

// systemdStepsVersion is the first systemd with RestartSteps and
// RestartMaxDelaySec (older ones warn about unknown keys and ignore them).
const systemdStepsVersion = 254

// startSlack is what TimeoutStartSec allows beyond the crash-loop delay for
// the start itself (policy load, listen, READY=1).
const startSlack = 30 * time.Second

const (
	managerSystemd = "systemd"
	managerLaunchd = "launchd"
)

// unitOptions are the choices a unit is rendered with besides the policy.
type unitOptions struct {
	Manager        string // managerSystemd or managerLaunchd
	System         bool   // system scope (root's manager) rather than the user's
	RunAs          string // system scope: User= / UserName; "" runs as root
	SystemdVersion int    // target systemd; 0 means unknown (treated as older than 254)
	Bin            string // absolute path of the hermes binary the unit runs
	Socket         bool   // systemd: a socket unit holds gateway.listen (unit_socket.go)
}

// String is the options line of the header. It holds no path: a path could
// end an XML comment or a systemd line.
func (o unitOptions) String() string {
	s := "manager=" + o.Manager + " scope=" + o.scope()
	if o.RunAs != "" {
		s += " run-as=" + o.RunAs
	}
	if o.Manager == managerSystemd {
		s += fmt.Sprintf(" systemd-version=%d", o.SystemdVersion)
	}
	if o.Socket {
		s += " socket=yes"
	}
	return s
}

func (o unitOptions) scope() string {
	if o.System {
		return "system"
	}
	return "user"
}

// parseUnitOptions reads the options line back from an installed file.
func parseUnitOptions(content []byte) (unitOptions, bool) {
	var o unitOptions
	for _, line := range strings.Split(string(content), "\n") {
		i := strings.Index(line, optionsPrefix)
		if i < 0 {
			continue
		}
		for _, f := range strings.Fields(strings.TrimSuffix(strings.TrimSpace(line[i+len(optionsPrefix):]), "-->")) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "manager":
				o.Manager = v
			case "scope":
				o.System = v == "system"
			case "run-as":
				o.RunAs = v
			case "systemd-version":
				o.SystemdVersion, _ = strconv.Atoi(v)
			case "socket":
				o.Socket = v == "yes"
			}
		}
		return o, o.Manager == managerSystemd || o.Manager == managerLaunchd
	}
	return o, false
}

func unitName(name string) string     { return "hermes-" + name + ".service" }
func launchdLabel(name string) string { return "dev.hermes." + name }

// unitFileName is the file name of the unit or plist for instance name.
func unitFileName(manager, name string) string {
	if manager == managerLaunchd {
		return launchdLabel(name) + ".plist"
	}
	return unitName(name)
}

// unitDir is where the manager looks for the unit or plist of a scope.
func unitDir(manager string, system bool) (string, error) {
	switch {
	case manager == managerSystemd && system:
		return "/etc/systemd/system", nil
	case manager == managerLaunchd && system:
		return "/Library/LaunchDaemons", nil
	case manager == managerSystemd:
		if d := os.Getenv("XDG_CONFIG_HOME"); filepath.IsAbs(d) {
			return filepath.Join(d, "systemd", "user"), nil
		}
	}
	home, err := os.UserHomeDir()
	if err != nil || !filepath.IsAbs(home) {
		return "", errors.New("cannot find the home directory for a user unit ($HOME is not set)")
	}
	if manager == managerLaunchd {
		return filepath.Join(home, "Library", "LaunchAgents"), nil
	}
	return filepath.Join(home, ".config", "systemd", "user"), nil
}

// defaultManager is the platform's service manager.
func defaultManager() string {
	if runtime.GOOS == "darwin" {
		return managerLaunchd
	}
	return managerSystemd
}

// renderUnit renders the unit (systemd) or plist (launchd) for p.
func renderUnit(p *Policy, o unitOptions) ([]byte, error) {
	if err := checkUnitPath("the hermes binary", o.Bin); err != nil {
		return nil, err
	}
	if p.Path != "" {
		if err := checkUnitPath("the policy file", p.Path); err != nil {
			return nil, err
		}
	}
	if err := checkUnitPath("the state dir", p.Gateway.StateDir); err != nil {
		return nil, err
	}
	if err := checkUnitPath("the lock dir", p.Lock.Dir); err != nil {
		return nil, err
	}
	if !nameRe().MatchString(p.Name) {
		return nil, fmt.Errorf("%q is not a valid instance name", p.Name)
	}
	if o.RunAs != "" && !userNameRe().MatchString(o.RunAs) {
		return nil, fmt.Errorf("--run-as %q is not a user name hermes can write into a unit", o.RunAs)
	}
	args := []string{o.Bin, "serve"}
	if p.Path != "" {
		args = append(args, "--config", p.Path)
	}
	var b bytes.Buffer
	switch o.Manager {
	case managerSystemd:
		if strings.ContainsAny(o.Bin, `\"'`) {
			// systemd refuses such an executable path ("contains special characters").
			return nil, fmt.Errorf("the hermes binary's path %q contains a quote or a backslash, which systemd cannot run: move the binary", o.Bin)
		}
		if err := serviceTemplate().Execute(&b, systemdData(p, o, args)); err != nil {
			return nil, err
		}
	case managerLaunchd:
		if o.Socket {
			return nil, fmt.Errorf("a socket unit is for systemd, not launchd")
		}
		if err := plistTemplate().Execute(&b, launchdData(p, o, args)); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown service manager %q", o.Manager)
	}
	return b.Bytes(), nil
}

// unitPolicyLabel names the policy a unit was rendered from, in its header.
func unitPolicyLabel(p *Policy) string {
	if p.Path == "" {
		return "the built-in default policy"
	}
	return "policy " + strconv.Quote(p.Path)
}

// userNameRe is what --run-as accepts: POSIX-ish user names. It keeps a
// name from ending a line, a quote or an XML comment.
var userNameRe = lazyRegexp(`^[A-Za-z_][A-Za-z0-9_.]*(-[A-Za-z0-9_.]+)*\$?$`)

// checkUnitPath rejects a path that no escaping can carry: not absolute, not
// UTF-8, or holding a control character (a newline would end a systemd line;
// XML 1.0 cannot hold most control characters at all).
func checkUnitPath(what, p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("%s %q is not a clean absolute path", what, p)
	}
	if !utf8.ValidString(p) {
		return fmt.Errorf("%s %q is not valid UTF-8, which unit files require", what, p)
	}
	for _, r := range p {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) || r == 0xfffe || r == 0xffff {
			return fmt.Errorf("%s %q contains a control character (%U), which a unit file cannot hold: rename it", what, p, r)
		}
	}
	return nil
}

// sdQuote quotes one ExecStart argument: C-style escapes inside double
// quotes, "$$" for "$" (environment substitution) and "%%" for "%"
// (specifiers). See systemd.service(5), "Command lines".
func sdQuote(s string) string {
	return sdQuotePath(strings.ReplaceAll(s, "$", "$$"))
}

// sdQuotePath quotes a path where systemd expands specifiers but not
// variables: ExecStart's executable, ReadWritePaths=.
func sdQuotePath(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "%", "%%")
	return `"` + r.Replace(s) + `"`
}

// sdDuration writes d as a systemd time span: whole seconds when it is one,
// else milliseconds (rounded up, so a timeout never shrinks).
func sdDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", (d+time.Millisecond-1)/time.Millisecond)
}

// ceilSeconds is d in whole seconds, rounded up, at least min.
func ceilSeconds(d time.Duration, min int) int {
	s := int((d + time.Second - 1) / time.Second)
	if s < min {
		return min
	}
	return s
}

type systemdUnitData struct {
	UnitName, Name, PolicyLabel, Options string
	StartLimitInterval                   string
	StartLimitBurst                      int
	ExecStart                            string
	RestartSec, RestartMaxDelay          string
	RestartSteps                         int
	ExitRestart, ExitConfig              int
	CrashLoopMaxDelay, TimeoutStartSec   string
	DrainBudget, Margin, TimeoutStopSec  string
	WatchdogSec                          string
	NotifyAccess                         string
	SocketUnit                           string // the socket unit holding gateway.listen, or ""
	System                               bool
	User, StateDirectory, ReadWritePaths string
	WantedBy                             string
}

func systemdData(p *Policy, o unitOptions, args []string) systemdUnitData {
	argv := []string{sdQuotePath(args[0])}
	for _, a := range args[1:] {
		if a == "serve" || a == "--config" {
			argv = append(argv, a)
		} else {
			argv = append(argv, sdQuote(a))
		}
	}
	d := systemdUnitData{
		UnitName:           unitName(p.Name),
		Name:               p.Name,
		PolicyLabel:        unitPolicyLabel(p),
		Options:            o.String(),
		StartLimitInterval: sdDuration(p.Service.StartLimitInterval),
		StartLimitBurst:    p.Service.StartLimitBurst,
		ExecStart:          strings.Join(argv, " "),
		RestartSec:         sdDuration(p.Service.RestartSec),
		ExitRestart:        exitRestart,
		ExitConfig:         exitConfig,
		CrashLoopMaxDelay:  sdDuration(p.CrashLoop.MaxDelay),
		TimeoutStartSec:    sdDuration(p.CrashLoop.MaxDelay + startSlack),
		DrainBudget:        sdDuration(p.Drain.Budget()),
		Margin:             sdDuration(autoWaitMargin),
		TimeoutStopSec:     sdDuration(p.Drain.Budget() + autoWaitMargin),
		System:             o.System,
		WantedBy:           "default.target",
		NotifyAccess:       "main",
	}
	if p.Restart.Mode == modeHandoff {
		d.NotifyAccess = "all"
	}
	if o.Socket {
		d.SocketUnit = socketUnitName(p.Name)
	}
	if o.SystemdVersion >= systemdStepsVersion && p.Service.RestartMaxDelay > p.Service.RestartSec {
		// Enough steps that the delay roughly doubles from one to the next.
		ratio := float64(p.Service.RestartMaxDelay) / float64(p.Service.RestartSec)
		d.RestartSteps = max(1, int(math.Ceil(math.Log2(ratio))))
		d.RestartMaxDelay = sdDuration(p.Service.RestartMaxDelay)
	}
	if p.Watchdog.Timeout > 0 {
		d.WatchdogSec = sdDuration(2 * p.Watchdog.Timeout)
	}
	if o.System {
		d.WantedBy = "multi-user.target"
		d.User = o.RunAs
		// The token lock dir may not exist yet: its parent must be writable
		// so the gateway can create it; "-" skips a parent that is missing.
		rw := []string{sdQuotePath("-" + filepath.Dir(p.Lock.Dir))}
		if p.Gateway.StateDirSet {
			rw = append([]string{sdQuotePath(p.Gateway.StateDir)}, rw...)
		} else {
			// systemd creates /var/lib/hermes/<name>, owned by User=, and
			// sets $STATE_DIRECTORY, which the gateway uses as its state dir.
			d.StateDirectory = "hermes/" + p.Name
		}
		d.ReadWritePaths = strings.Join(rw, " ")
	}
	return d
}

type launchdPlistData struct {
	Label, Options                string
	Args                          []string
	ExitRestart, ExitConfig       int
	ThrottleInterval, ExitTimeOut int
	DrainBudget, Margin, LogPath  string
	User                          string
}

func launchdData(p *Policy, o unitOptions, args []string) launchdPlistData {
	d := launchdPlistData{
		Label:            launchdLabel(p.Name),
		Options:          o.String(),
		Args:             args,
		ExitRestart:      exitRestart,
		ExitConfig:       exitConfig,
		ThrottleInterval: ceilSeconds(p.Service.RestartSec, 1),
		ExitTimeOut:      ceilSeconds(p.Drain.Budget()+autoWaitMargin, 1),
		DrainBudget:      sdDuration(p.Drain.Budget()),
		Margin:           sdDuration(autoWaitMargin),
		LogPath:          filepath.Join(p.Gateway.StateDir, "gateway.log"),
	}
	if o.System {
		d.User = o.RunAs
	}
	return d
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// systemdVersion asks the local systemctl for its version.
func systemdVersion() (int, error) {
	out, err := exec.Command("systemctl", "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("systemctl --version: %w", err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	var v int
	if _, err := fmt.Sscanf(first, "systemd %d", &v); err != nil {
		return 0, fmt.Errorf("systemctl --version printed %q", first)
	}
	return v, nil
}

// defaultRunAs is who a system unit runs as: the person behind sudo, else
// the user running install-unit; "" (no User=) for root.
func defaultRunAs() string {
	name := os.Getenv("SUDO_USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	if name == "root" {
		return ""
	}
	return name
}

const installUnitUsage = `Write the systemd unit or launchd plist that runs this policy's gateway.
Timeouts and restart rules come from the policy; run it again after the
policy changes (unchanged files are left alone, changes are shown).

    $ hermes install-unit --print
    $ hermes install-unit --enable
    $ sudo hermes install-unit --system --config /etc/hermes/hermes.toml --enable
    $ sudo hermes install-unit --system --run-as hermes --enable
    $ sudo hermes install-unit --system --socket --enable
    $ hermes install-unit --kubernetes --config deploy/container.toml --print
    $ hermes install-unit --compose --config deploy/container.toml --unit-dir deploy

systemd units go to ~/.config/systemd/user or /etc/systemd/system as
hermes-<name>.service; launchd plists to ~/Library/LaunchAgents or
/Library/LaunchDaemons as dev.hermes.<name>.plist. Secrets never go in them:
with systemd, put NAME=value lines in /etc/hermes/<name>.env (system) or
~/.config/hermes/<name>.env (user).

--socket (systemd) also writes hermes-<name>.socket, which holds
gateway.listen for the gateway: while no gateway runs (a drain restart, a
crash), connections wait for the next one instead of being refused.

--kubernetes writes a ConfigMap (the policy), a Service and a Deployment
(a StatefulSet when kubernetes.state_volume_size is set); --compose a
compose file. They need a policy made for a container (listen on 0.0.0.0,
an explicit state_dir): see deploy/container.toml and docs/services.md.
`

// unitFlags are the flags install-unit and uninstall-unit share.
type unitFlags struct {
	systemd, launchd, user, system *bool
	config, unitDir                *string
}

func addUnitFlags(fs interface {
	Bool(string, bool, string) *bool
	String(string, string, string) *string
}) unitFlags {
	return unitFlags{
		systemd: fs.Bool("systemd", false, "a systemd unit (default on Linux)"),
		launchd: fs.Bool("launchd", false, "a launchd plist (default on macOS)"),
		user:    fs.Bool("user", false, "the user's service manager (the default)"),
		system:  fs.Bool("system", false, "the system's service manager (run as root)"),
		config:  fs.String("config", "", "policy `FILE` (default: see 'hermes help')"),
		unitDir: fs.String("unit-dir", "", "use the file in `DIR` instead of the manager's directory, and leave the manager alone (for staging and tests)"),
	}
}

// target is the manager and scope the flags name.
func (f unitFlags) target() (manager string, system bool, err error) {
	if manager, err = f.manager(); err != nil {
		return "", false, err
	}
	system, err = f.scopeSystem()
	return manager, system, err
}

func (f unitFlags) manager() (string, error) {
	switch {
	case *f.systemd && *f.launchd:
		return "", usageErr("--systemd and --launchd exclude each other")
	case *f.systemd:
		return managerSystemd, nil
	case *f.launchd:
		return managerLaunchd, nil
	}
	return defaultManager(), nil
}

func (f unitFlags) scopeSystem() (bool, error) {
	if *f.user && *f.system {
		return false, usageErr("--user and --system exclude each other")
	}
	return *f.system, nil
}

// usageErr is a usage error with a message for run to print (exit 2).
func usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// unitPath is the file install-unit writes for the flags and policy name.
func (f unitFlags) unitPath(manager string, system bool, name string) (string, error) {
	dir := *f.unitDir
	if dir == "" {
		d, err := unitDir(manager, system)
		if err != nil {
			return "", err
		}
		dir = d
	} else if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return filepath.Join(dir, unitFileName(manager, name)), nil
}

func runInstallUnit(args []string) error {
	flags := newFlagSet("install-unit", installUnitUsage)
	f := addUnitFlags(flags)
	printOnly := flags.Bool("print", false, "write the unit to stdout and touch nothing")
	enable := flags.Bool("enable", false, "then load, enable and start it (systemctl enable --now, launchctl bootstrap)")
	runAs := flags.String("run-as", "", "with --system: the `USER` the gateway runs as (default: $SUDO_USER, else you; root means no User=)")
	sdVersion := flags.Int("systemd-version", 0, "target systemd `VERSION` (default: from systemctl --version)")
	kube := flags.Bool("kubernetes", false, "Kubernetes manifests instead (to ./hermes-<name>.k8s.yaml or --unit-dir; kubernetes.go)")
	compose := flags.Bool("compose", false, "a compose file instead (to ./hermes-<name>.compose.yaml or --unit-dir)")
	socket := flags.Bool("socket", false, "systemd: also a socket unit holding gateway.listen, so connections wait for the next gateway instead of being refused while none runs")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if (*kube || *compose) && *socket {
		return usageErr("--socket is for systemd units, not for --kubernetes or --compose")
	}
	if *kube || *compose {
		return installManifests(flags, f, *kube, *printOnly)
	}
	manager, system, err := f.target()
	if err != nil {
		return err
	}
	if *socket && manager != managerSystemd {
		return usageErr("--socket is for systemd: launchd hands a socket over through launch_activate_socket(3), which a static binary cannot call")
	}
	if *enable && (*printOnly || *f.unitDir != "") {
		return usageErr("--enable needs the manager's own directory: drop --print and --unit-dir")
	}
	if *runAs != "" && !system {
		return usageErr("--run-as is for --system units: a user unit runs as its user")
	}
	p, err := loadPolicy(*f.config)
	if err != nil {
		return err
	}
	bin, err := hermesExecutable()
	if err != nil {
		return err
	}
	o, err := unitOptionsFor(p, f, manager, system, bin, *runAs, *sdVersion, *socket, *printOnly)
	if err != nil {
		return err
	}
	content, err := renderUnit(p, o)
	if err != nil {
		return err
	}
	var sockContent []byte
	if o.Socket {
		if sockContent, err = renderSocketUnit(p, o); err != nil {
			return err
		}
	}
	if *printOnly {
		if sockContent != nil {
			content = append(append(content, '\n'), sockContent...)
		}
		_, err := os.Stdout.Write(content)
		return err
	}
	return writeUnits(p, f, o, content, sockContent, *enable)
}

// unitOptionsFor is what the unit is rendered with: the manager, the user
// it runs as, the systemd version; it refuses a unit that could not work
// (a warning instead when it is only printed or written elsewhere).
func unitOptionsFor(p *Policy, f unitFlags, manager string, system bool, bin, runAs string, sdVersion int, socket, printOnly bool) (unitOptions, error) {
	o := unitOptions{Manager: manager, System: system, Bin: bin, SystemdVersion: sdVersion, Socket: socket}
	if system {
		o.RunAs = runAs
		if o.RunAs == "" {
			o.RunAs = defaultRunAs()
		} else if o.RunAs == "root" {
			o.RunAs = ""
		}
	}
	if err := checkRunAs(o.RunAs); err != nil {
		return o, err
	}
	if system && manager == managerSystemd {
		if err := checkSystemUnitPaths(bin, p); err != nil {
			if *f.unitDir == "" && !printOnly {
				return o, err
			}
			// Printed, or written elsewhere (a package being built, a
			// test): the files may well be moved before the unit is used,
			// but the unit as it stands would not work, and that is said.
			fmt.Fprintf(os.Stderr, "hermes: warning: %s\n", indent(err.Error()))
		}
	}
	if manager == managerSystemd && o.SystemdVersion == 0 {
		v, err := systemdVersion()
		if err != nil {
			fmt.Fprintf(os.Stderr, "hermes: note: cannot tell the systemd version (%v): writing a unit for systemd older than %d (no RestartSteps); pass --systemd-version N to choose\n", err, systemdStepsVersion)
		}
		o.SystemdVersion = v
	}
	return o, nil
}

// writeUnits writes the unit (and its socket unit) where the manager looks,
// makes the state dir the unit needs, and enables it or says how.
func writeUnits(p *Policy, f unitFlags, o unitOptions, content, sockContent []byte, enable bool) error {
	manager, system := o.Manager, o.System
	path, err := f.unitPath(manager, system, p.Name)
	if err != nil {
		return err
	}
	sockPath := ""
	if manager == managerSystemd {
		sockPath = filepath.Join(filepath.Dir(path), socketUnitName(p.Name))
		if err := checkSocketUnitPlace(sockPath, o.Socket, p); err != nil {
			return err
		}
	}
	changed, err := writeUnitFile(path, content)
	if err != nil {
		return err
	}
	if o.Socket {
		sockChanged, err := writeUnitFile(sockPath, sockContent)
		if err != nil {
			return err
		}
		changed = changed || sockChanged
	}
	if manager == managerLaunchd || (system && p.Gateway.StateDirSet) {
		// launchd opens the log in the state dir before hermes starts, and
		// ReadWritePaths= fails the start when the dir is missing.
		if err := ensureStateDir(p.Gateway.StateDir, o.RunAs); err != nil {
			return err
		}
	}
	if !enable {
		if *f.unitDir == "" {
			fmt.Println(enableHint(manager, system, p.Name, path, o.Socket))
		}
		return nil
	}
	if manager == managerLaunchd {
		return launchdEnable(system, p.Name, path)
	}
	return systemdEnable(system, p.Name, changed, o.Socket)
}

// hermesExecutable is the absolute, symlink-free path of this binary, so a
// unit keeps working when a symlink (a package manager's) moves.
func hermesExecutable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding the hermes binary: %w", err)
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return filepath.Abs(exe)
}

// writeUnitFile writes content atomically unless the file holds it already,
// and says what it did. changed is false for an unchanged file.
func writeUnitFile(path string, content []byte) (changed bool, err error) {
	old, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(old, content):
		fmt.Printf("unchanged: %s\n", path)
		return false, nil
	case err == nil && !bytes.Contains(old, []byte(unitMarker)):
		return false, withHint(fmt.Errorf("%s exists and was not written by hermes install-unit", path),
			"move it away (or compare it with 'hermes install-unit --print') and run install-unit again")
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	if err := writeFileAtomic(path, content, 0o644); err != nil {
		return false, fmt.Errorf("writing %s: %w", path, err)
	}
	if old == nil {
		fmt.Printf("wrote: %s\n", path)
		return true, nil
	}
	fmt.Printf("updated: %s\n", path)
	for _, l := range lineDiff(string(old), string(content)) {
		fmt.Printf("    %s\n", l)
	}
	return true, nil
}

// ensureStateDir creates a custom state dir for a unit, owned by the user
// the gateway runs as.
func ensureStateDir(dir, runAs string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state dir %s: %w", dir, err)
	}
	if runAs != "" {
		if u, err := user.Lookup(runAs); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			if err := os.Chown(dir, uid, gid); err != nil {
				return fmt.Errorf("giving state dir %s to %s: %w", dir, runAs, err)
			}
		}
	}
	return nil
}

// lineDiff lists the lines only in a ("- ") and only in b ("+ "), in order,
// from a longest common subsequence of lines. Units are small.
func lineDiff(a, b string) []string {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			i, j = i+1, j+1
		case i < len(x) && (j == len(y) || lcs[i+1][j] >= lcs[i][j+1]):
			out = append(out, "- "+x[i])
			i++
		default:
			out = append(out, "+ "+y[j])
			j++
		}
	}
	return out
}

func systemctl(system bool, args ...string) *exec.Cmd {
	if !system {
		args = append([]string{"--user"}, args...)
	}
	cmd := exec.Command("systemctl", args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd
}

func enableHint(manager string, system bool, name, path string, socket bool) string {
	if manager == managerLaunchd {
		return fmt.Sprintf("start it with: launchctl bootstrap %s %s", launchdDomain(system), path)
	}
	if !system {
		if why := userBusProblem(); why != "" {
			return "to start it, " + why + ":\n" + userBusHint(name)
		}
	}
	hint := fmt.Sprintf("start it with: systemctl %sdaemon-reload && systemctl %senable --now %s", userFlag(system), userFlag(system), strings.Join(systemdUnits(name, socket), " "))
	if socket {
		hint += fmt.Sprintf("\n(a gateway that runs now on its own socket must stop first, one drain: systemctl %sstop %s)", userFlag(system), unitName(name))
	}
	return hint
}

// systemdUnits are the units install-unit writes for an instance, the
// socket (which the service needs started first) before the service.
func systemdUnits(name string, socket bool) []string {
	if socket {
		return []string{socketUnitName(name), unitName(name)}
	}
	return []string{unitName(name)}
}

// systemdUnitActive reports whether systemd runs unit now.
func systemdUnitActive(system bool, unit string) bool {
	cmd := systemctl(system, "is-active", "--quiet", unit)
	cmd.Stdout, cmd.Stderr = nil, nil
	return cmd.Run() == nil
}

// userFlag is systemctl's and journalctl's "--user " for a user unit.
func userFlag(system bool) string {
	if system {
		return ""
	}
	return "--user "
}

func systemdEnable(system bool, name string, changed, socket bool) error {
	unit := unitName(name)
	units := systemdUnits(name, socket)
	if !system {
		if why := userBusProblem(); why != "" {
			return withHint(fmt.Errorf("the unit is written, but cannot be enabled: %s", why), "%s", userBusHint(name))
		}
	}
	if err := systemctl(system, "daemon-reload").Run(); err != nil {
		return withHint(fmt.Errorf("systemctl %sdaemon-reload: %w", userFlag(system), err),
			"run it by hand, then: systemctl %senable --now %s", userFlag(system), unit)
	}
	wasActive := systemdUnitActive(system, unit)
	if socket && wasActive && !systemdUnitActive(system, socketUnitName(name)) {
		// The running gateway bound gateway.listen itself: the socket unit
		// cannot bind it while that gateway runs.
		if err := systemctl(system, append([]string{"enable"}, units...)...).Run(); err != nil {
			return withHint(fmt.Errorf("systemctl enable %s: %w", strings.Join(units, " "), err), "see why with: systemctl %sstatus %s", userFlag(system), unit)
		}
		fmt.Printf("the running gateway holds gateway.listen itself, so %s cannot take it yet: move it over with one drain: systemctl %sstop %s && systemctl %sstart %s\n",
			socketUnitName(name), userFlag(system), unit, userFlag(system), strings.Join(units, " "))
		return nil
	}
	if err := systemctl(system, append([]string{"enable", "--now"}, units...)...).Run(); err != nil {
		return withHint(fmt.Errorf("systemctl enable --now %s: %w", strings.Join(units, " "), err), "see why with: journalctl %s-u %s", userFlag(system), units[0])
	}
	if wasActive && changed {
		fmt.Printf("the running gateway still runs under the old unit: apply it with 'hermes restart' (or systemctl %srestart %s)\n",
			userFlag(system), unit)
	}
	if !system {
		if u, err := user.Current(); err == nil {
			out, err := exec.Command("loginctl", "show-user", u.Username, "--property=Linger", "--value").Output()
			if err == nil && strings.TrimSpace(string(out)) == "no" {
				fmt.Printf("without lingering the gateway stops when you log out; keep it running with: loginctl enable-linger %s\n", u.Username)
			}
		}
	}
	return nil
}

func launchdDomain(system bool) string {
	if system {
		return "system"
	}
	return fmt.Sprintf("gui/%d", os.Getuid())
}

func launchctl(args ...string) *exec.Cmd {
	cmd := exec.Command("launchctl", args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd
}

func launchdEnable(system bool, name, path string) error {
	domain := launchdDomain(system)
	target := domain + "/" + launchdLabel(name)
	// bootstrap refuses a loaded job: take the old one out first (a drain,
	// bounded by ExitTimeOut).
	if exec.Command("launchctl", "print", target).Run() == nil {
		if err := launchctl("bootout", target).Run(); err != nil {
			return fmt.Errorf("launchctl bootout %s: %w", target, err)
		}
	}
	if err := launchctl("bootstrap", domain, path).Run(); err != nil {
		return withHint(fmt.Errorf("launchctl bootstrap %s %s: %w", domain, path, err), "see why with: launchctl print %s", target)
	}
	if err := launchctl("kickstart", target).Run(); err != nil {
		return fmt.Errorf("launchctl kickstart %s: %w", target, err)
	}
	return nil
}

const uninstallUnitUsage = `Stop and remove the unit or plist that install-unit wrote. A file without
install-unit's marker is never removed.

    $ hermes uninstall-unit
    $ sudo hermes uninstall-unit --system --config /etc/hermes/hermes.toml
    $ sudo hermes uninstall-unit --system --name gateway
`

func runUninstallUnit(args []string) error {
	flags := newFlagSet("uninstall-unit", uninstallUnitUsage)
	f := addUnitFlags(flags)
	nameFlag := flags.String("name", "", "the instance `NAME` (default: the policy's; use it when the policy is gone or broken)")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	manager, system, err := f.target()
	if err != nil {
		return err
	}
	name := *nameFlag
	if name == "" {
		p, err := loadPolicy(*f.config)
		if err != nil {
			return withHint(err, "name the instance instead: hermes uninstall-unit --name NAME")
		}
		name = p.Name
	} else if !nameRe().MatchString(name) {
		return usageErr("--name %q is not a valid instance name", name)
	}
	path, err := f.unitPath(manager, system, name)
	if err != nil {
		return err
	}
	content, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Printf("not installed: %s\n", path)
		return nil
	} else if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if !bytes.Contains(content, []byte(unitMarker)) {
		return withHint(fmt.Errorf("%s was not written by hermes install-unit: not removing it", path),
			"remove it yourself if it is yours to remove")
	}
	manage := *f.unitDir == ""
	sockPath := "" // the socket unit install-unit --socket wrote, if any
	if manager == managerSystemd {
		sp := filepath.Join(filepath.Dir(path), socketUnitName(name))
		if b, err := os.ReadFile(sp); err == nil && bytes.Contains(b, []byte(unitMarker)) {
			sockPath = sp
		}
	}
	told := true // the manager knows the unit is going
	if manage {
		if told, err = stopUnit(manager, system, name, sockPath != ""); err != nil {
			return err
		}
	}
	for _, p := range []string{path, sockPath} {
		if p == "" {
			continue
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("removing %s: %w", p, err)
		}
		fmt.Printf("removed: %s\n", p)
	}
	if manage && manager == managerSystemd && !told {
		fmt.Printf("when %s's user manager runs again it forgets the unit at its next: systemctl --user daemon-reload\n", currentUser())
	}
	if manage && manager == managerSystemd && told {
		if err := systemctl(system, "daemon-reload").Run(); err != nil {
			return fmt.Errorf("systemctl daemon-reload: %w", err)
		}
		rf := systemctl(system, append([]string{"reset-failed"}, systemdUnits(name, sockPath != "")...)...)
		rf.Stdout, rf.Stderr = nil, nil
		rf.Run() // only fails when there was nothing to reset
	}
	return nil
}

// stopUnit stops the instance's unit and tells its service manager it is
// going. It reports whether the manager was told: a user manager that does
// not run cannot be, and the gateway is stopped the way hermes stops any.
func stopUnit(manager string, system bool, name string, socket bool) (bool, error) {
	if manager == managerLaunchd {
		target := launchdDomain(system) + "/" + launchdLabel(name)
		if exec.Command("launchctl", "print", target).Run() == nil {
			if err := launchctl("bootout", target).Run(); err != nil {
				return true, fmt.Errorf("launchctl bootout %s: %w", target, err)
			}
		}
		return true, nil
	}
	if manager != managerSystemd {
		return true, nil
	}
	unit := unitName(name)
	units := systemdUnits(name, socket)
	if !system && !userManagerReachable() {
		// No user manager to tell (no lingering, a sudo or su shell):
		// stop the gateway the way hermes stops any, then remove.
		fmt.Printf("no user service manager to disable %s with (%s)\n", unit, orDefault(userBusProblem(), "systemctl --user fails"))
		return false, stopInstanceByName(name)
	}
	if err := systemctl(system, append([]string{"disable", "--now"}, units...)...).Run(); err != nil {
		// disable --now stops it: a drain, bounded by TimeoutStopSec.
		// The socket goes first, so no connection starts the service again.
		return true, withHint(fmt.Errorf("systemctl %sdisable --now %s: %w", userFlag(system), strings.Join(units, " "), err),
			"see why with: systemctl %sstatus %s", userFlag(system), unit)
	}
	return true, nil
}

// installedUnitDrift finds the unit or plist installed for p's instance
// (user scope first, then system) and reports whether it differs from what
// install-unit would write now, with the options recorded in it (zero when
// it has none). path is "" when none is installed. It renders with those
// options, so only the policy (or the hermes binary's path) can make it
// differ.
func installedUnitDrift(p *Policy) (path string, o unitOptions, differs bool, err error) {
	manager := defaultManager()
	for _, system := range []bool{false, true} {
		dir, err := unitDir(manager, system)
		if err != nil {
			continue
		}
		path := filepath.Join(dir, unitFileName(manager, p.Name))
		content, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return path, o, false, fmt.Errorf("reading %s: %w", path, err)
		}
		if !bytes.Contains(content, []byte(unitMarker)) {
			return path, o, true, fmt.Errorf("%s was not written by hermes install-unit", path)
		}
		o, ok := parseUnitOptions(content)
		if !ok {
			return path, o, true, nil
		}
		if o.Bin, err = hermesExecutable(); err != nil {
			return path, o, false, err
		}
		want, err := renderUnit(p, o)
		if err != nil {
			return path, o, true, err
		}
		if !bytes.Equal(want, content) {
			return path, o, true, nil
		}
		if o.Socket {
			// The socket unit beside it must hold what the policy says.
			sock, err := renderSocketUnit(p, o)
			if err != nil {
				return path, o, true, err
			}
			have, err := os.ReadFile(filepath.Join(dir, socketUnitName(p.Name)))
			return path, o, err != nil || !bytes.Equal(have, sock), nil
		}
		return path, o, false, nil
	}
	return "", o, false, nil
}
