package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Which gateway a command acts on.
//
// A command names its gateway by its policy (--config, or the lookup order
// of 'hermes help'), or by the instance name it runs under (--name, from
// the instance registry, see registry.go). Either way the target must not
// depend on luck:
//   - a policy file that broke after the gateway started does not lock the
//     operator out: status, stop, logs and events act on the running
//     gateway with the policy it runs with (a copy it keeps in its state
//     dir), and say that the file on disk is broken; restart, start and
//     reload refuse, since what they would start is what is broken;
//   - a target that is not running, while others are, is named together
//     with the ones that are, and how to reach them;
//   - a gateway started from this policy file under another name (the
//     policy's name was changed since) is found and named.

// runningPolicyFile is the copy of the policy a gateway runs with, written
// at its start and at every reload that took.
const runningPolicyFile = "running-policy.toml"

func runningPolicyPath(stateDir string) string { return filepath.Join(stateDir, runningPolicyFile) }

// writeRunningPolicy keeps the copy of p, with a header that says what it
// is. It is best effort, and never on the loop.
func writeRunningPolicy(p *Policy) {
	head := fmt.Sprintf("# The policy this gateway runs with (from %s), written by hermes at\n"+
		"# its start and at every reload. Do not edit: edit the policy file.\n", p.policyLabel())
	writeRunFile(runningPolicyPath(p.Gateway.StateDir), []byte(head+p.render()), 0o600)
}

// target is the gateway a command acts on.
type target struct {
	p      *Policy
	broken error     // the policy file's own error: p is then the running gateway's copy
	entry  *instance // the registry's entry for p's state dir, if it has one
	// renamed is a live gateway started from this policy file under
	// another name (or state dir): the file was changed under it.
	renamed *instance
}

// targetFlags are the flags that name the gateway.
type targetFlags struct {
	config, name *string
}

func addTargetFlags(fs *flag.FlagSet) targetFlags {
	return targetFlags{
		config: fs.String("config", "", "policy `FILE` (default: see 'hermes help')"),
		name:   fs.String("name", "", "the gateway's instance `NAME`, found in the instance registry (see 'hermes status'), instead of a policy"),
	}
}

// resolve finds the target. needGood says the command starts or reloads a
// gateway from the policy, which must then be sound.
func (f targetFlags) resolve(cmd string, needGood bool) (*target, error) {
	if *f.name != "" {
		if *f.config != "" {
			return nil, usageErr("%s: --name and --config both name the gateway: give one", cmd)
		}
		return resolveName(cmd, *f.name, needGood)
	}
	path, err := findPolicy(*f.config)
	var p *Policy
	if err == nil {
		if path == "" {
			p = defaultPolicy()
		} else {
			p, err = loadPolicyFile(path)
		}
	}
	if err != nil {
		var ce *configError
		if !errors.As(err, &ce) {
			return nil, err
		}
		if path == "" {
			path = ce.File
		}
		return brokenTarget(cmd, path, err, needGood)
	}
	t := &target{p: p}
	if in, ok := registeredAt(p.Gateway.StateDir); ok {
		t.entry = &in
	}
	if t.entry == nil || !t.entry.Alive {
		for _, in := range listInstances() {
			if in.Alive && in.Policy == p.Path && in.StateDir != p.Gateway.StateDir {
				t.renamed = &in
				break
			}
		}
	}
	return t, nil
}

// errNoSuchName: --name names no gateway the registry knows, running or
// not (a stopped gateway leaves the registry).
var errNoSuchName = errors.New("not running, or not registered")

// resolveName finds the instance called name in the registry.
func resolveName(cmd, name string, needGood bool) (*target, error) {
	var found []instance
	for _, in := range listInstances() {
		if in.Name == name {
			found = append(found, in)
		}
	}
	if len(found) > 1 {
		// Several users (or state dirs) run a gateway of that name: the
		// caller's own, if it is one of them, and a live one first.
		var mine []instance
		for _, in := range found {
			if in.UID == os.Getuid() {
				mine = append(mine, in)
			}
		}
		if len(mine) > 0 {
			found = mine
		}
		var live []instance
		for _, in := range found {
			if in.Alive {
				live = append(live, in)
			}
		}
		if len(live) > 0 {
			found = live
		}
	}
	switch len(found) {
	case 0:
		return nil, withHint(fmt.Errorf("no gateway named %q on this host: %w", name, errNoSuchName), "%s", instancesHint(cmd))
	case 1:
	default:
		var lines []string
		for _, in := range found {
			lines = append(lines, describeInstance(in))
		}
		return nil, withHint(fmt.Errorf("%d gateways are named %q:\n%s", len(found), name, strings.Join(lines, "\n")),
			"name one by its policy: hermes %s --config FILE", cmd)
	}
	in := found[0]
	p, err := policyOf(in)
	if err != nil {
		if in.Policy == "" || !in.Alive {
			return nil, err
		}
		return brokenTarget(cmd, in.Policy, err, needGood)
	}
	return &target{p: p, entry: &in}, nil
}

// policyOf loads the policy an instance was started from, with its state
// dir as recorded (a default state dir depends on who asks).
func policyOf(in instance) (*Policy, error) {
	p := defaultPolicy()
	if in.Policy != "" {
		var err error
		if p, err = loadPolicyFile(in.Policy); err != nil {
			return nil, err
		}
	}
	p.Name = in.Name
	p.Gateway.StateDir = in.StateDir
	return p, nil
}

// brokenTarget is the running gateway started from the broken policy file
// at path, acted on with the policy it runs with; or the error, when no
// gateway runs from it or the command needs a sound policy.
func brokenTarget(cmd, path string, perr error, needGood bool) (*target, error) {
	var in *instance
	for _, x := range listInstances() {
		if x.Alive && x.Policy == path {
			in = &x
			break
		}
	}
	if in == nil {
		return nil, perr
	}
	if needGood {
		return nil, withHint(&exitError{code: exitConfig, err: fmt.Errorf("%w\n(the gateway %q, pid %d, still runs with the policy it loaded before)", perr, in.Name, in.PID)},
			"fix the file and check it with: hermes check-config --config %s\n"+
				"then: hermes %s --config %s; to stop the gateway meanwhile: hermes stop --name %s", path, cmd, path, in.Name)
	}
	p, err := loadPolicyFile(runningPolicyPath(in.StateDir))
	if err != nil {
		return nil, fmt.Errorf("%w\n(the gateway %q, pid %d, runs from it, but its copy of the policy does not read either: %v)", perr, in.Name, in.PID, err)
	}
	p.Path, p.Name, p.Gateway.StateDir = path, in.Name, in.StateDir
	fmt.Fprintf(os.Stderr, "hermes: warning: the policy file is broken: %v\n", indent(perr.Error()))
	fmt.Fprintf(os.Stderr, "hermes: warning: acting on the gateway %q (pid %d), which runs with the policy it loaded before\n", in.Name, in.PID)
	return &target{p: p, broken: perr, entry: in}, nil
}

// policyOrigin is p's label, with how it was found when that was by the
// current directory: the one lookup that makes a command's target depend on
// where it is run.
func policyOrigin(p *Policy) string {
	if p.Path == "" || os.Getenv("HERMES_CONFIG") != "" {
		return p.policyLabel()
	}
	if wd, err := os.Getwd(); err == nil && p.Path == filepath.Join(wd, "hermes.toml") {
		return p.Path + " (./hermes.toml: found in the current directory)"
	}
	return p.policyLabel()
}

func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n    ") }

// notRunningNote says, for a target that is not running, what is: a
// gateway started from its policy file under another name, or the other
// gateways on the host. "" when there is nothing to add.
func (t *target) notRunningNote(cmd string) string {
	if r := t.renamed; r != nil {
		return fmt.Sprintf("the gateway started from %s runs as %q (pid %d, state dir %s): the policy's name or state dir changed since.\n"+
			"    stop it with: hermes stop --name %s; then: hermes start%s",
			r.Policy, r.Name, r.PID, r.StateDir, r.Name, configFlag(t.p))
	}
	var live []string
	for _, in := range listInstances() {
		if in.Alive {
			live = append(live, "    "+describeInstance(in))
		}
	}
	if len(live) == 0 {
		return ""
	}
	return fmt.Sprintf("other gateways running on this host:\n%s\n    reach one with: hermes %s --name NAME", strings.Join(live, "\n"), cmd)
}

// instancesHint names the gateways on the host, for an error.
func instancesHint(cmd string) string {
	var lines []string
	for _, in := range listInstances() {
		lines = append(lines, "  "+describeInstance(in))
	}
	if len(lines) == 0 {
		return "no gateway is registered on this host (see: hermes status)"
	}
	return fmt.Sprintf("the gateways on this host:\n%s\nreach one with: hermes %s --name NAME", strings.Join(lines, "\n"), cmd)
}

// describeInstance is one line about an instance.
func describeInstance(in instance) string {
	state := "running"
	if !in.Alive {
		state = "gone without a clean exit"
	}
	who := in.User
	if who == "" {
		who = fmt.Sprintf("uid %d", in.UID)
	}
	pol := in.Policy
	if pol == "" {
		pol = "built-in defaults"
	}
	return fmt.Sprintf("%s: pid %d, %s, user %s, listen %s, policy %s", in.Name, in.PID, state, who, in.Listen, pol)
}
