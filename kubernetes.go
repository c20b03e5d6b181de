package main

import (
	"bytes"
	_ "embed"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"
)

// install-unit --kubernetes and --compose: the manifests that run one
// gateway in a container, rendered from its policy like the systemd unit,
// so that the orchestrator's timeouts cannot disagree with the drain.
//
// What Kubernetes is told, and why:
//   - terminationGracePeriodSeconds is the drain budget plus the margin a
//     unit's TimeoutStopSec has: the kubelet never SIGKILLs a drain the
//     policy allows.
//   - /readyz is the readiness probe (a draining gateway leaves the
//     Service at once); /healthz is the liveness probe, which fails only
//     after twice watchdog.timeout, as WatchdogSec does: the gateway's own
//     watchdog fires first, dumps its stacks and exits 70. A startup probe
//     gives the crash-loop guard's delay (crash_loop.max_delay) room, as
//     TimeoutStartSec does.
//   - A token lock (one poller per bot token) means one pod, replaced by
//     Recreate: a RollingUpdate would run the old and the new poller side
//     by side (Telegram's 409 "terminated by other getUpdates request").
//   - Secrets are secretKeyRef, by the names the policy gives their
//     variables; never a value.
//   - The policy is a ConfigMap mounted as a directory, so an edited
//     ConfigMap reaches the file in the pod without a rollout and
//     `hermes reload` (or `hermes restart`, a handoff in the pod) applies it.

var (
	//go:embed unit/kubernetes.yaml.tmpl
	kubernetesTemplateText string
	//go:embed unit/compose.yaml.tmpl
	composeTemplateText string

	manifestFuncs      = template.FuncMap{"q": strconv.Quote}
	kubernetesTemplate = sync.OnceValue(func() *template.Template {
		return template.Must(template.New("kubernetes.yaml").Funcs(manifestFuncs).Parse(kubernetesTemplateText))
	})
	composeTemplate = sync.OnceValue(func() *template.Template {
		return template.Must(template.New("compose.yaml").Funcs(manifestFuncs).Parse(composeTemplateText))
	})
)

// KubernetesPolicy is [kubernetes]: what the manifests need beyond the
// gateway's own policy. The gateway itself never reads it.
type KubernetesPolicy struct {
	Image         string
	Namespace     string // "": none in the manifests (kubectl's current namespace)
	Replicas      int
	Secret        string // the Secret holding the key and token; "": hermes-<name>
	CPURequest    string // Kubernetes quantities; "" leaves each out
	CPULimit      string
	MemoryRequest string
	MemoryLimit   string
	StateSize     string // "": a Deployment, state on an emptyDir; set: a StatefulSet with a volume this size
	StorageClass  string
}

type fileKubernetes struct {
	Image         *string `toml:"image"`
	Namespace     *string `toml:"namespace"`
	Replicas      *int    `toml:"replicas"`
	Secret        *string `toml:"secret"`
	CPURequest    *string `toml:"cpu_request"`
	CPULimit      *string `toml:"cpu_limit"`
	MemoryRequest *string `toml:"memory_request"`
	MemoryLimit   *string `toml:"memory_limit"`
	StateSize     *string `toml:"state_volume_size"`
	StorageClass  *string `toml:"storage_class"`
}

func (v *validator) applyKubernetes(p *Policy, f *fileKubernetes) {
	k := &p.Kubernetes
	v.str(&k.Image, f.Image, "kubernetes.image", true)
	v.str(&k.Namespace, f.Namespace, "kubernetes.namespace", false)
	if f.Replicas != nil {
		k.Replicas = *f.Replicas
	}
	v.str(&k.Secret, f.Secret, "kubernetes.secret", false)
	v.str(&k.CPURequest, f.CPURequest, "kubernetes.cpu_request", false)
	v.str(&k.CPULimit, f.CPULimit, "kubernetes.cpu_limit", false)
	v.str(&k.MemoryRequest, f.MemoryRequest, "kubernetes.memory_request", false)
	v.str(&k.MemoryLimit, f.MemoryLimit, "kubernetes.memory_limit", false)
	v.str(&k.StateSize, f.StateSize, "kubernetes.state_volume_size", false)
	v.str(&k.StorageClass, f.StorageClass, "kubernetes.storage_class", false)
}

var (
	// k8sQuantityRe is a Kubernetes resource quantity: 100m, 0.5, 256Mi, 1G.
	k8sQuantityRe = lazyRegexp(`^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$`)
	// dns1123Re is a DNS-1123 label: what names a namespace or a Service.
	dns1123Re = lazyRegexp(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	// dns1123SubRe is a DNS-1123 subdomain: a Secret's or a StorageClass's name.
	dns1123SubRe = lazyRegexp(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	// imageRe keeps an image reference to the characters one has.
	imageRe = lazyRegexp(`^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$`)
)

func (v *validator) checkKubernetes(p *Policy) {
	k := p.Kubernetes
	if !imageRe().MatchString(k.Image) {
		v.fail("kubernetes.image", "%q is not an image reference (like \"registry.example.org/hermes:0.1.0\")", k.Image)
	}
	if k.Namespace != "" && !dns1123Re().MatchString(k.Namespace) {
		v.fail("kubernetes.namespace", "%q is not a namespace name (lowercase letters, digits and '-')", k.Namespace)
	}
	if k.Replicas < 1 {
		v.fail("kubernetes.replicas", "%d: use at least 1", k.Replicas)
	}
	if k.Secret != "" && !dns1123SubRe().MatchString(k.Secret) {
		v.fail("kubernetes.secret", "%q is not a Secret name (lowercase letters, digits, '-' and '.')", k.Secret)
	}
	for _, q := range []struct{ key, val string }{
		{"kubernetes.cpu_request", k.CPURequest}, {"kubernetes.cpu_limit", k.CPULimit},
		{"kubernetes.memory_request", k.MemoryRequest}, {"kubernetes.memory_limit", k.MemoryLimit},
		{"kubernetes.state_volume_size", k.StateSize},
	} {
		if q.val != "" && !k8sQuantityRe().MatchString(q.val) {
			v.fail(q.key, "%q is not a Kubernetes quantity (like \"100m\", \"0.5\", \"256Mi\" or \"1Gi\"; \"\" leaves it out)", q.val)
		}
	}
	if k.StorageClass != "" && !dns1123SubRe().MatchString(k.StorageClass) {
		v.fail("kubernetes.storage_class", "%q is not a StorageClass name", k.StorageClass)
	}
	if k.StorageClass != "" && k.StateSize == "" {
		v.fail("kubernetes.storage_class", "is set but kubernetes.state_volume_size is not: the state volume is what it is for")
	}
}

// The paths inside the image (Containerfile).
const (
	containerPolicyDir  = "/etc/hermes"
	containerPolicyPath = containerPolicyDir + "/hermes.toml"
	containerUID        = 65534 // nobody
)

// k8sName is the name of the instance's objects: hermes-<name> as a
// DNS-1123 label (lowercase, '-' for '_').
func k8sName(name string) string {
	n := "hermes-" + strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	return strings.TrimRight(n, "-")
}

type k8sEnv struct {
	Name     string // the variable, and its key in the Secret
	Optional bool
	Why      string
}

type k8sData struct {
	Name, Instance, PolicyLabel string
	Namespace, Image            string
	Kind                        string // Deployment or StatefulSet
	Replicas                    int
	TokenLock                   bool
	Port                        int
	PolicyYAML                  string
	PolicyDir, PolicyPath       string
	StateDir, LockDir           string
	StateSize, StorageClass     string
	Secret                      string
	Env                         []k8sEnv
	TokenFile, TokenFileDir     string
	TokenFileKey                string
	Requests, Limits            [][2]string
	UID                         int
	Grace                       int
	DrainBudget, Margin         string
	ReadyPeriod                 int
	LivePeriod, LiveFailures    int
	LiveAfter, Stale, Watchdog  string
	StartFailures               int
	StartAfter                  string
}

// policySource is the policy file's text, as the pod gets it (the built-in
// policy, rendered, when there is no file).
func policySource(p *Policy) ([]byte, error) {
	if p.Path == "" {
		return []byte("# The built-in default policy (hermes check-config).\n" + p.render()), nil
	}
	src, err := os.ReadFile(p.Path)
	if err != nil {
		return nil, fmt.Errorf("reading the policy %s: %w", p.Path, err)
	}
	return src, nil
}

// manifestData is what the manifests and the compose file share; src is
// the policy's text (policySource).
func manifestData(p *Policy, src []byte) (*k8sData, error) {
	host, port, err := net.SplitHostPort(p.Gateway.Listen)
	if err != nil {
		return nil, fmt.Errorf("gateway.listen %q: %w", p.Gateway.Listen, err)
	}
	if err := checkContainerPolicy(p, host, port); err != nil {
		return nil, err
	}
	portN, _ := strconv.Atoi(port)
	d := &k8sData{
		Name:        k8sName(p.Name),
		Instance:    p.Name,
		PolicyLabel: "the built-in default policy",
		Namespace:   p.Kubernetes.Namespace,
		Image:       p.Kubernetes.Image,
		Kind:        "Deployment",
		Replicas:    p.Kubernetes.Replicas,
		TokenLock:   p.Lock.TokenEnv != "" || p.Lock.TokenFile != "",
		Port:        portN,
		PolicyDir:   containerPolicyDir,
		PolicyPath:  containerPolicyPath,
		StateDir:    p.Gateway.StateDir,
		StateSize:   p.Kubernetes.StateSize,
		Secret:      p.Kubernetes.Secret,
		UID:         containerUID,
		Grace:       ceilSeconds(p.Drain.Budget()+autoWaitMargin, 1),
		DrainBudget: sdDuration(p.Drain.Budget()),
		Margin:      sdDuration(autoWaitMargin),
	}
	if p.Path != "" {
		// Its base name: the file is the ConfigMap's, wherever it was.
		d.PolicyLabel = "policy " + strconv.Quote(filepath.Base(p.Path))
	}
	if d.Secret == "" {
		d.Secret = d.Name
	}
	if d.StateSize != "" {
		d.Kind = "StatefulSet"
		d.StorageClass = p.Kubernetes.StorageClass
	}
	if d.TokenLock && d.Replicas > 1 {
		return nil, fmt.Errorf("kubernetes.replicas is %d, but the policy has a token lock (one poller per bot token): two pods would poll one token and take turns failing with 409; run one replica", d.Replicas)
	}
	if !under(p.Lock.Dir, p.Gateway.StateDir) {
		d.LockDir = p.Lock.Dir // its own emptyDir: the root file system is read-only
		if err := checkUnitPath("the lock dir", p.Lock.Dir); err != nil {
			return nil, err
		}
	}

	if err := d.addSecrets(p); err != nil {
		return nil, err
	}
	d.addResources(p.Kubernetes)
	d.addProbes(p)
	d.PolicyYAML = yamlBlock(string(src), 4)
	return d, nil
}

// under reports whether path is dir or lies beneath it.
func under(path, dir string) bool { return path == dir || strings.HasPrefix(path, dir+"/") }

// checkContainerPolicy refuses a policy that cannot work in a container:
// a loopback listener, a state dir that is not set, or one that overlaps
// the policy's mount.
func checkContainerPolicy(p *Policy, host, port string) error {
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return withHint(fmt.Errorf("gateway.listen %q is a loopback address: in a container nothing outside reaches it (not the probes, not the Service, not a published port)", p.Gateway.Listen),
			"give the container its own policy that listens on \"0.0.0.0:%s\": see deploy/container.toml", port)
	}
	if !p.Gateway.StateDirSet {
		return withHint(fmt.Errorf("the policy sets no gateway.state_dir: in a container the default depends on the user, and the state dir must be a volume"),
			"set gateway.state_dir = \"/var/lib/hermes\" in the container's policy: see deploy/container.toml")
	}
	if err := checkUnitPath("the state dir", p.Gateway.StateDir); err != nil {
		return err
	}
	if under(p.Gateway.StateDir, containerPolicyDir) || under(containerPolicyDir, p.Gateway.StateDir) {
		return fmt.Errorf("the state dir %s and the policy's mount %s overlap: move the state dir (to /var/lib/hermes, say)", p.Gateway.StateDir, containerPolicyDir)
	}
	return nil
}

// addSecrets names each secret by its variable, which is also its key in
// the Secret, and mounts the token file, if the policy reads one.
func (d *k8sData) addSecrets(p *Policy) error {
	seen := map[string]bool{}
	addEnv := func(name string, optional bool, why string) {
		if name != "" && !seen[name] {
			seen[name] = true
			d.Env = append(d.Env, k8sEnv{Name: name, Optional: optional, Why: why})
		}
	}
	for _, u := range p.upstreams() {
		why := "the upstream API key (optional: an upstream may take none)"
		if u.Name != shorthandUpstream {
			why = fmt.Sprintf("upstream %s's API key (optional: an upstream may take none)", u.Name)
		}
		addEnv(u.KeyEnv, true, why)
	}
	addEnv(p.Auth.KeysEnv, false, "the client keys (auth.keys_env)")
	if p.Auth.KeysFile != "" {
		return withHint(fmt.Errorf("auth.keys_file is %s, but a container's keys come from the Secret, as a variable", p.Auth.KeysFile),
			"use [auth] keys_env = \"HERMES_CLIENT_KEYS\" in the container's policy, and put the keys (or their sha256: hashes, from hermes auth add) in the Secret under that name")
	}
	addEnv(p.Lock.TokenEnv, false, "the bot token (lock.token_env)")
	addEnv(p.Telegram.TokenEnv, false, "the bot token (telegram.token_env)")
	addEnv(p.Alerts.WebhookURLEnv, false, "the alert webhook URL (alerts.webhook_url_env)")
	tokenFile := p.Lock.TokenFile
	if tokenFile == "" {
		tokenFile = p.Telegram.TokenFile
	}
	if tokenFile != "" {
		if err := checkUnitPath("the token file", tokenFile); err != nil {
			return err
		}
		dir := filepath.Dir(tokenFile)
		for _, m := range []string{containerPolicyDir, p.Gateway.StateDir, p.Lock.Dir} {
			if under(dir, m) || under(m, dir) {
				return withHint(fmt.Errorf("the token file %s would be mounted over (or under) %s", tokenFile, m),
					"put it in a directory of its own in the container's policy, like /run/secrets/hermes/bot.token")
			}
		}
		d.TokenFile, d.TokenFileDir, d.TokenFileKey = tokenFile, dir, filepath.Base(tokenFile)
	}
	return nil
}

// addResources copies the policy's requests and limits.
func (d *k8sData) addResources(k KubernetesPolicy) {
	for _, r := range [][3]string{{"cpu", k.CPURequest, k.CPULimit}, {"memory", k.MemoryRequest, k.MemoryLimit}} {
		if r[1] != "" {
			d.Requests = append(d.Requests, [2]string{r[0], r[1]})
		}
		if r[2] != "" {
			d.Limits = append(d.Limits, [2]string{r[0], r[2]})
		}
	}
}

// addProbes sets the probes from the watchdog and the crash-loop guard.
// Kubernetes counts in whole seconds, at least 1.
func (d *k8sData) addProbes(p *Policy) {
	w := p.Watchdog
	stale := staleAfter(w)
	d.Stale = sdDuration(stale)
	d.ReadyPeriod = ceilSeconds(w.Heartbeat, 1)
	d.LivePeriod = ceilSeconds(stale, 1)
	wd := w.Timeout
	d.Watchdog = sdDuration(wd)
	if wd == 0 {
		d.Watchdog = "off"
		wd = defaultPolicy().Watchdog.Timeout
	}
	d.LiveFailures = ceilSeconds(2*wd, 1) / d.LivePeriod
	if d.LiveFailures*d.LivePeriod < ceilSeconds(2*wd, 1) {
		d.LiveFailures++
	}
	d.LiveAfter = sdDuration(time.Duration(d.LiveFailures*d.LivePeriod) * time.Second)
	start := p.CrashLoop.MaxDelay + startSlack
	d.StartFailures = (ceilSeconds(start, 1) + d.LivePeriod - 1) / d.LivePeriod
	d.StartAfter = sdDuration(start)
}

// yamlBlock writes s as the value of a mapping key whose content is
// indented by indent spaces: a literal block that keeps s exactly, or a
// quoted string where a block cannot (control characters, a CR).
func yamlBlock(s string, indent int) string {
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || r == 0xfeff || (r >= 0x80 && r <= 0x9f) || r == 0x2028 || r == 0x2029 || r == 0x85 {
			return strconv.Quote(s)
		}
	}
	if s == "" {
		return `""`
	}
	chomp := "+" // keep every final newline
	if !strings.HasSuffix(s, "\n") {
		chomp = "-"
	}
	pad := strings.Repeat(" ", indent)
	var b strings.Builder
	// The indentation indicator: the content may start with spaces.
	fmt.Fprintf(&b, "|%d%s", indent-2, chomp)
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		b.WriteString("\n")
		if line != "" {
			b.WriteString(pad + line)
		}
	}
	return b.String()
}

// renderKubernetes renders the manifests for p.
func renderKubernetes(p *Policy, src []byte) ([]byte, error) {
	d, err := manifestData(p, src)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := kubernetesTemplate().Execute(&b, d); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

type composeData struct {
	*k8sData
	PolicyFile       string // the policy file beside the compose file; "" for the image's
	HealthTimeout    int
	HealthStart      int
	HealthcheckBound string
}

// renderCompose renders a compose file for p: one service, with the same
// derivations as the manifests (stop_grace_period from the drain).
func renderCompose(p *Policy, src []byte) ([]byte, error) {
	d, err := manifestData(p, src)
	if err != nil {
		return nil, err
	}
	c := composeData{k8sData: d, HealthTimeout: ceilSeconds(healthcheckTimeout, 1) + 1,
		HealthStart: ceilSeconds(p.CrashLoop.MaxDelay+startSlack, 1), HealthcheckBound: sdDuration(healthcheckTimeout)}
	if p.Path != "" {
		c.PolicyFile = "./" + filepath.Base(p.Path)
	}
	var b bytes.Buffer
	if err := composeTemplate().Execute(&b, c); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// installManifests is install-unit --kubernetes or --compose: the file is
// written to --unit-dir (default: the current directory) as
// hermes-<name>.k8s.yaml or hermes-<name>.compose.yaml, or printed.
// Nothing is applied: kubectl and docker are the operator's to run.
func installManifests(flags *flag.FlagSet, f unitFlags, kube, printOnly bool) error {
	which := "--compose"
	if kube {
		which = "--kubernetes"
	}
	var bad []string
	flags.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "kubernetes", "compose", "print", "config", "unit-dir":
		default:
			bad = append(bad, "--"+fl.Name)
		}
	})
	if kube && flags.Lookup("compose").Value.String() == "true" {
		return usageErr("--kubernetes and --compose exclude each other: one file at a time")
	}
	if len(bad) > 0 {
		return usageErr("%s takes --config, --print and --unit-dir only, not %s", which, strings.Join(bad, ", "))
	}
	if printOnly && *f.unitDir != "" {
		return usageErr("--print writes to stdout: drop --unit-dir")
	}
	p, err := loadPolicy(*f.config)
	if err != nil {
		return err
	}
	render, suffix := renderCompose, ".compose.yaml"
	if kube {
		render, suffix = renderKubernetes, ".k8s.yaml"
	}
	src, err := policySource(p)
	if err != nil {
		return err
	}
	content, err := render(p, src)
	if err != nil {
		return err
	}
	if printOnly {
		_, err := os.Stdout.Write(content)
		return err
	}
	dir := *f.unitDir
	if dir == "" {
		dir = "."
	}
	path, err := filepath.Abs(filepath.Join(dir, "hermes-"+p.Name+suffix))
	if err != nil {
		return err
	}
	if _, err := writeUnitFile(path, content); err != nil {
		return err
	}
	d, _ := manifestData(p, src)
	var keys []string
	for _, e := range d.Env {
		keys = append(keys, "--from-literal="+e.Name+"=...")
	}
	if d.TokenFile != "" {
		keys = append(keys, "--from-file="+d.TokenFileKey+"=...")
	}
	if kube {
		if len(keys) > 0 {
			fmt.Printf("create the secrets with: kubectl create secret generic %s %s\n", d.Secret, strings.Join(keys, " "))
		}
		fmt.Printf("apply it with: kubectl apply -f %s\n", path)
	} else {
		fmt.Printf("start it with: docker compose -f %s up -d   (or podman-compose)\n", path)
	}
	return nil
}
