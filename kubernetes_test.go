package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The Kubernetes manifests and the compose file: golden files rendered
// from the policies in testdata/kubernetes (and the shipped
// deploy/container.toml), refreshed with go test -run TestKubernetesGolden
// -update; their fields checked against the policy by parsing them as
// YAML; and no secret value in them.

type manifestCase struct {
	name, policy string
}

func (c manifestCase) golden() string { return filepath.Join("testdata", "kubernetes", c.name+".yaml") }

func manifestCases() []manifestCase {
	return []manifestCase{
		{"container", filepath.Join("deploy", "container.toml")},
		{"telegram-statefulset", filepath.Join("testdata", "kubernetes", "telegram-statefulset.toml")},
		{"token-file", filepath.Join("testdata", "kubernetes", "token-file.toml")},
		{"replicas", filepath.Join("testdata", "kubernetes", "replicas.toml")},
	}
}

func loadCase(t *testing.T, path string) (*Policy, []byte) {
	t.Helper()
	p, err := loadPolicyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	src, err := policySource(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, src
}

func TestKubernetesGolden(t *testing.T) {
	for _, c := range manifestCases() {
		t.Run(c.name, func(t *testing.T) {
			p, src := loadCase(t, c.policy)
			got, err := renderKubernetes(p, src)
			if err != nil {
				t.Fatal(err)
			}
			checkGoldenFile(t, c.golden(), got, "TestKubernetesGolden")
		})
	}
}

// checkGoldenFile compares got with the golden file at path; go test -run
// test -update rewrites it.
func checkGoldenFile(t *testing.T, path string, got []byte, test string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (refresh with: go test -run %s -update)", err, test)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (refresh with go test -run %s -update if this is meant):\n%s", path, test, strings.Join(lineDiff(string(want), string(got)), "\n"))
	}
}

// parseYAML parses a multi-document YAML stream with Python's PyYAML, the
// way kubectl would take it, into JSON values.
func parseYAML(t *testing.T, doc []byte) []any {
	t.Helper()
	if _, err := os.Stat("/usr/lib/python3/dist-packages/yaml"); err != nil {
		if _, err := exec.LookPath("python3"); err != nil {
			skipUnlessCI(t, "python3 with PyYAML is missing: apt-get install python3-yaml")
		}
	}
	cmd := exec.Command("python3", "-c", `import yaml, json, sys; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))`)
	cmd.Stdin = bytes.NewReader(doc)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		if strings.Contains(errb.String(), "No module named 'yaml'") {
			skipUnlessCI(t, "python3 has no PyYAML: apt-get install python3-yaml")
		}
		t.Fatalf("the YAML does not parse: %v\n%s\n%s", err, errb.String(), doc)
	}
	var docs []any
	if err := json.Unmarshal(out.Bytes(), &docs); err != nil {
		t.Fatal(err)
	}
	return docs
}

// at walks a parsed YAML value by keys (strings) and list indexes (ints);
// a missing key is nil.
func at(t *testing.T, v any, path ...any) any {
	t.Helper()
	for i, k := range path {
		if v == nil {
			return nil
		}
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: not a mapping at %v", path, path[:i])
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("%v: no item %d at %v", path, k, path[:i])
			}
			v = l[k]
		}
	}
	return v
}

func num(v any) int {
	f, _ := v.(float64)
	return int(f)
}

// TestKubernetesFields checks what the manifests promise against the
// policy they were rendered from, so a golden file refreshed by mistake
// cannot hide a wrong value.
func TestKubernetesFields(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	for _, c := range manifestCases() {
		t.Run(c.name, func(t *testing.T) {
			p, src := loadCase(t, c.policy)
			out, err := renderKubernetes(p, src)
			if err != nil {
				t.Fatal(err)
			}
			docs := parseYAML(t, out)
			kinds := map[string]any{}
			for _, d := range docs {
				kinds[at(t, d, "kind").(string)] = d
			}
			wantKind := "Deployment"
			if p.Kubernetes.StateSize != "" {
				wantKind = "StatefulSet"
			}
			if len(docs) != 3 || kinds["ConfigMap"] == nil || kinds["Service"] == nil || kinds[wantKind] == nil {
				t.Fatalf("documents %v, want a ConfigMap, a Service and a %s", keys(kinds), wantKind)
			}
			name := k8sName(p.Name)
			for kind, d := range kinds {
				if got := at(t, d, "metadata", "name"); got != name {
					t.Errorf("%s is named %v, want %s", kind, got, name)
				}
				if got, _ := at(t, d, "metadata", "namespace").(string); got != p.Kubernetes.Namespace {
					t.Errorf("%s namespace %q, want %q", kind, got, p.Kubernetes.Namespace)
				}
			}
			if got := at(t, kinds["ConfigMap"], "data", "hermes.toml"); got != string(src) {
				t.Errorf("the ConfigMap's policy is not the policy file:\n%q\nwant\n%q", got, src)
			}
			w := kinds[wantKind]
			spec := at(t, w, "spec", "template", "spec")
			ctr := at(t, spec, "containers", 0)
			_, port, _ := strings.Cut(p.Gateway.Listen, ":")
			if got := at(t, ctr, "ports", 0, "containerPort"); num(got) == 0 || strings.TrimPrefix(p.Gateway.Listen, "") == "" || port != jsonNum(got) {
				t.Errorf("containerPort %v, want the listen port %s", got, port)
			}
			if got := at(t, kinds["Service"], "spec", "ports", 0, "targetPort"); got != "http" {
				t.Errorf("Service targetPort %v", got)
			}

			// Probes, from the watchdog policy.
			if at(t, ctr, "readinessProbe", "httpGet", "path") != "/readyz" || at(t, ctr, "livenessProbe", "httpGet", "path") != "/healthz" ||
				at(t, ctr, "startupProbe", "httpGet", "path") != "/healthz" {
				t.Errorf("probes: readiness %v, liveness %v, startup %v", at(t, ctr, "readinessProbe"), at(t, ctr, "livenessProbe"), at(t, ctr, "startupProbe"))
			}
			livePeriod := time.Duration(num(at(t, ctr, "livenessProbe", "periodSeconds"))) * time.Second
			liveAfter := livePeriod * time.Duration(num(at(t, ctr, "livenessProbe", "failureThreshold")))
			wd := p.Watchdog.Timeout
			if wd == 0 {
				wd = defaultPolicy().Watchdog.Timeout
			}
			if livePeriod < staleAfter(p.Watchdog) || liveAfter < 2*wd || liveAfter > 2*wd+livePeriod {
				t.Errorf("liveness fails after %s (period %s): want twice watchdog.timeout (%s), a period no shorter than a frozen verdict (%s)", liveAfter, livePeriod, 2*wd, staleAfter(p.Watchdog))
			}
			if rp := time.Duration(num(at(t, ctr, "readinessProbe", "periodSeconds"))) * time.Second; rp < p.Watchdog.Heartbeat || rp > p.Watchdog.Heartbeat+time.Second {
				t.Errorf("readiness period %s for a heartbeat of %s", rp, p.Watchdog.Heartbeat)
			}
			startAfter := livePeriod * time.Duration(num(at(t, ctr, "startupProbe", "failureThreshold")))
			if startAfter < p.CrashLoop.MaxDelay+startSlack {
				t.Errorf("the startup probe gives up after %s, before the crash-loop delay and a start (%s)", startAfter, p.CrashLoop.MaxDelay+startSlack)
			}
			if grace := time.Duration(num(at(t, spec, "terminationGracePeriodSeconds"))) * time.Second; grace <= p.Drain.Budget() {
				t.Errorf("terminationGracePeriodSeconds %s is not more than the drain budget %s", grace, p.Drain.Budget())
			}

			// One poller per token: one replica, never side by side.
			tokenLock := p.Lock.TokenEnv != "" || p.Lock.TokenFile != ""
			replicas := num(at(t, w, "spec", "replicas"))
			switch {
			case tokenLock && wantKind == "Deployment":
				if replicas != 1 || at(t, w, "spec", "strategy", "type") != "Recreate" {
					t.Errorf("a token lock: replicas %d, strategy %v; want 1, Recreate", replicas, at(t, w, "spec", "strategy"))
				}
			case tokenLock:
				if replicas != 1 || at(t, w, "spec", "podManagementPolicy") != "OrderedReady" {
					t.Errorf("a token lock in a StatefulSet: replicas %d, podManagementPolicy %v", replicas, at(t, w, "spec", "podManagementPolicy"))
				}
			default:
				if replicas != p.Kubernetes.Replicas {
					t.Errorf("replicas %d, want kubernetes.replicas %d", replicas, p.Kubernetes.Replicas)
				}
			}
			if tokenLock && !strings.Contains(string(out), "cost is a gap") {
				t.Errorf("no comment on the cost of one poller in the manifests")
			}

			// Secrets only by reference, under the Secret's name.
			secret := p.Kubernetes.Secret
			if secret == "" {
				secret = name
			}
			envs, _ := at(t, ctr, "env").([]any)
			wantEnv := map[string]bool{}
			for _, n := range []string{p.Lock.TokenEnv, p.Telegram.TokenEnv, p.Alerts.WebhookURLEnv} {
				if n != "" {
					wantEnv[n] = true
				}
			}
			if p.Gateway.Upstream != "" {
				wantEnv[p.Gateway.UpstreamKeyEnv] = true
			}
			for _, e := range envs {
				n := at(t, e, "name").(string)
				if n == "HERMES_CONFIG" {
					if at(t, e, "value") != containerPolicyPath {
						t.Errorf("HERMES_CONFIG = %v", at(t, e, "value"))
					}
					continue
				}
				if _, ok := e.(map[string]any)["value"]; ok || at(t, e, "valueFrom", "secretKeyRef", "name") != secret || at(t, e, "valueFrom", "secretKeyRef", "key") != n {
					t.Errorf("env %s is not a secretKeyRef to %s/%s: %v", n, secret, n, e)
				}
				delete(wantEnv, n)
			}
			if len(wantEnv) > 0 {
				t.Errorf("no secretKeyRef for %v", keys2(wantEnv))
			}
			if tf := p.Lock.TokenFile; tf != "" {
				found := false
				for _, m := range at(t, ctr, "volumeMounts").([]any) {
					found = found || (at(t, m, "name") == "token" && at(t, m, "mountPath") == filepath.Dir(tf))
				}
				if !found || !strings.Contains(string(out), "secretName: "+`"`+secret+`"`) {
					t.Errorf("the token file %s is not mounted from the Secret %s", tf, secret)
				}
			}

			// Resources where the policy sets them.
			k := p.Kubernetes
			for _, r := range []struct {
				path []any
				want string
			}{
				{[]any{"resources", "requests", "cpu"}, k.CPURequest}, {[]any{"resources", "limits", "cpu"}, k.CPULimit},
				{[]any{"resources", "requests", "memory"}, k.MemoryRequest}, {[]any{"resources", "limits", "memory"}, k.MemoryLimit},
			} {
				got, _ := at(t, ctr, r.path...).(string)
				if got != r.want {
					t.Errorf("%v = %q, want %q", r.path, got, r.want)
				}
			}

			// The state dir: a volume either way, claimed by a StatefulSet.
			mounted := false
			for _, m := range at(t, ctr, "volumeMounts").([]any) {
				mounted = mounted || (at(t, m, "name") == "state" && at(t, m, "mountPath") == p.Gateway.StateDir)
			}
			if !mounted {
				t.Errorf("the state dir %s is not mounted", p.Gateway.StateDir)
			}
			if wantKind == "StatefulSet" {
				if got := at(t, w, "spec", "volumeClaimTemplates", 0, "spec", "resources", "requests", "storage"); got != k.StateSize {
					t.Errorf("state volume %v, want %s", got, k.StateSize)
				}
			}
			if at(t, spec, "securityContext", "runAsNonRoot") != true || at(t, ctr, "securityContext", "readOnlyRootFilesystem") != true {
				t.Errorf("the pod may run as root or write its root file system")
			}
		})
	}
}

func jsonNum(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func keys2(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestKubernetesRefuses: a policy that cannot work in a pod is refused,
// saying why, rather than rendered.
func TestKubernetesRefuses(t *testing.T) {
	base := "name = \"x\"\n[gateway]\nlisten = \"0.0.0.0:8642\"\nstate_dir = \"/var/lib/hermes\"\n"
	for _, c := range []struct{ name, policy, want string }{
		{"loopback", "[gateway]\nlisten = \"127.0.0.1:8642\"\nstate_dir = \"/var/lib/hermes\"\n", "loopback"},
		{"no state dir", "[gateway]\nlisten = \"0.0.0.0:8642\"\n", "no gateway.state_dir"},
		{"two pollers", base + "[telegram]\ntoken_env = \"T\"\n[kubernetes]\nreplicas = 2\n", "two pods would poll one token"},
		{"token under the policy", base + "[lock]\ntoken_file = \"/etc/hermes/bot.token\"\n", "mounted over"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "hermes.toml")
			os.WriteFile(path, []byte(c.policy), 0o600)
			p, src := loadCase(t, path)
			if _, err := renderKubernetes(p, src); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("render: %v, want an error saying %q", err, c.want)
			}
		})
	}
	for _, c := range []struct{ policy, key string }{
		{"[kubernetes]\nreplicas = 0\n", "kubernetes.replicas"},
		{"[kubernetes]\nmemory_limit = \"lots\"\n", "kubernetes.memory_limit"},
		{"[kubernetes]\nnamespace = \"Bots\"\n", "kubernetes.namespace"},
		{"[kubernetes]\nstorage_class = \"ssd\"\n", "kubernetes.storage_class"},
		{"[kubernetes]\nimage = \"a b\"\n", "kubernetes.image"},
	} {
		path := filepath.Join(t.TempDir(), "hermes.toml")
		os.WriteFile(path, []byte(c.policy), 0o600)
		if _, err := loadPolicyFile(path); err == nil || !strings.Contains(err.Error(), c.key) {
			t.Errorf("%q: %v, want an error naming %s", c.policy, err, c.key)
		}
	}
}

// TestKubernetesNoSecrets: the upstream key, the bot token and the alert
// URL are in install-unit's environment; none reaches the manifests or
// the compose file, which name their variables only.
func TestKubernetesNoSecrets(t *testing.T) {
	e := newTestEnv(t, "")
	pol, _ := os.ReadFile(filepath.Join("testdata", "kubernetes", "telegram-statefulset.toml"))
	os.WriteFile(e.policy, pol, 0o600)
	e.env = append(e.env, "OPENAI_API_KEY=sk-secret-upstream-key", "HERMES_UPSTREAM_KEY=sk-secret-default-key",
		"TELEGRAM_BOT_TOKEN=123456:secret-bot-token", "HERMES_ALERT_URL=https://hooks.example.org/secret-hook")
	for _, kind := range []string{"--kubernetes", "--compose"} {
		out, errOut, code := e.hermes(10*time.Second, "install-unit", kind, "--print")
		if code != 0 {
			t.Fatalf("install-unit %s --print = %d: %s", kind, code, errOut)
		}
		for _, secret := range []string{"sk-secret", "secret-bot-token", "secret-hook"} {
			if strings.Contains(out+errOut, secret) {
				t.Errorf("install-unit %s wrote a secret (%s):\n%s", kind, secret, out)
			}
		}
		for _, name := range []string{"OPENAI_API_KEY", "TELEGRAM_BOT_TOKEN", "HERMES_ALERT_URL"} {
			if !strings.Contains(out, name) {
				t.Errorf("install-unit %s does not pass %s", kind, name)
			}
		}
	}
}

// TestKubernetesInstallWrite: without --print the manifests go to a file
// (--unit-dir, else the current directory), rewritten only when they
// change; a bad combination of flags is a usage error.
func TestKubernetesInstallWrite(t *testing.T) {
	e := newTestEnv(t, "")
	pol, _ := os.ReadFile(filepath.Join("deploy", "container.toml"))
	os.WriteFile(e.policy, pol, 0o600)
	out, errOut, code := e.hermes(10*time.Second, "install-unit", "--kubernetes")
	path := filepath.Join(e.dir, "hermes-gateway.k8s.yaml")
	if code != 0 || !strings.Contains(out, "wrote: "+path) || !strings.Contains(out, "kubectl apply -f "+path) {
		t.Fatalf("install-unit --kubernetes = %d:\n%s%s", code, out, errOut)
	}
	printed, _, _ := e.hermes(10*time.Second, "install-unit", "--kubernetes", "--print")
	if written, _ := os.ReadFile(path); string(written) != printed {
		t.Errorf("--print differs from the file written")
	}
	dir := filepath.Join(e.dir, "out")
	for i, want := range []string{"wrote: ", "unchanged: "} {
		out, _, code := e.hermes(10*time.Second, "install-unit", "--compose", "--unit-dir", dir)
		if code != 0 || !strings.HasPrefix(out, want+filepath.Join(dir, "hermes-gateway.compose.yaml")) {
			t.Errorf("install-unit --compose #%d = %d: %s", i+1, code, out)
		}
	}
	for _, args := range [][]string{
		{"--kubernetes", "--systemd"}, {"--kubernetes", "--compose"}, {"--kubernetes", "--enable"},
		{"--compose", "--system"}, {"--kubernetes", "--print", "--unit-dir", dir},
	} {
		if _, errOut, code := e.hermes(10*time.Second, append([]string{"install-unit"}, args...)...); code != exitUsage {
			t.Errorf("install-unit %v = %d %q, want %d", args, code, errOut, exitUsage)
		}
	}
}

// TestContainerComposeFile: deploy/compose.yaml is what install-unit
// --compose renders from deploy/container.toml (regenerate it with the
// command in its header), and its stop_grace_period outlasts the drain.
func TestContainerComposeFile(t *testing.T) {
	p, src := loadCase(t, filepath.Join("deploy", "container.toml"))
	got, err := renderCompose(p, src)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("deploy", "compose.yaml")
	checkGoldenFile(t, path, got, "TestContainerComposeFile")
	doc := parseYAML(t, got)[0]
	svc := at(t, doc, "services", "hermes")
	grace, err := time.ParseDuration(at(t, svc, "stop_grace_period").(string))
	if err != nil || grace <= p.Drain.Budget() {
		t.Errorf("stop_grace_period %v (%v) is not more than the drain budget %s", at(t, svc, "stop_grace_period"), err, p.Drain.Budget())
	}
	if at(t, svc, "stop_signal") != "SIGTERM" || jsonNum(at(t, svc, "healthcheck", "test")) != `["CMD","/hermes","healthcheck"]` {
		t.Errorf("stop_signal %v, healthcheck %v", at(t, svc, "stop_signal"), at(t, svc, "healthcheck", "test"))
	}
	vols := jsonNum(at(t, svc, "volumes"))
	if !strings.Contains(vols, `"hermes-state:`+p.Gateway.StateDir+`"`) || !strings.Contains(vols, `"./container.toml:/etc/hermes/hermes.toml:ro"`) {
		t.Errorf("volumes %s: want the state volume and the policy", vols)
	}
	to, _ := time.ParseDuration(at(t, svc, "healthcheck", "timeout").(string))
	if to <= healthcheckTimeout {
		t.Errorf("the compose healthcheck timeout %s does not outlast hermes healthcheck's own bound %s", to, healthcheckTimeout)
	}
}

// TestKubernetesYAMLBlock: the policy goes into the ConfigMap exactly,
// whatever its text.
func TestKubernetesYAMLBlock(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	for _, s := range []string{
		"a = 1\n", "a = 1", "  indented = true\n\tb = 2\n", "x\n\n\n", "", "\n", "# only\r\nwindows\r\n", "bell \a\n", "key: value # not yaml\n- dash\n",
	} {
		doc := "data:\n  hermes.toml: " + yamlBlock(s, 4) + "\n"
		got := at(t, parseYAML(t, []byte(doc))[0], "data", "hermes.toml")
		if got != s {
			t.Errorf("yamlBlock(%q) reads back as %q:\n%s", s, got, doc)
		}
	}
}
