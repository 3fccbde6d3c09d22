//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/cluster"
	"github.com/kubeonkube/kok/internal/local"
)

// ruleFile is the part of a Prometheus rule file the test reads.
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert string `json:"alert"`
			Expr  string `json:"expr"`
			For   string `json:"for,omitempty"`
		} `json:"rules"`
	} `json:"groups"`
}

// prometheus is Debian's Prometheus scraping kok-manager every two seconds
// with kok's alert rules loaded.
type prometheus struct {
	api promv1.API
	cmd *exec.Cmd
}

// startPrometheus runs /usr/bin/prometheus (apt-get install prometheus)
// with rules, scraping every kok-manager pod of the meta cluster.
func startPrometheus(t *testing.T, cfg *local.Config, c client.Client, rules string) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("Prometheus is not installed: apt-get install prometheus (.ci/run does)")
	}
	var pods corev1.PodList
	if err := c.List(context.Background(), &pods, client.InNamespace("kok-system"), client.MatchingLabels{"app.kubernetes.io/name": "kok", "app.kubernetes.io/component": "manager"}); err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, p := range pods.Items {
		if p.Status.PodIP != "" && p.DeletionTimestamp == nil {
			targets = append(targets, net.JoinHostPort(p.Status.PodIP, "8080"))
		}
	}
	if len(targets) == 0 {
		t.Fatal("no kok-manager pod with an address")
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // only held to pick a free port
	conf := map[string]any{
		"global":     map[string]any{"scrape_interval": "2s", "evaluation_interval": "2s"},
		"rule_files": []string{rules},
		"scrape_configs": []any{map[string]any{"job_name": "kok-manager",
			"static_configs": []any{map[string]any{"targets": targets}}}},
	}
	data, _ := yaml.Marshal(conf)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--storage.tsdb.retention.time=1h")
	// Dies with the test binary, even one killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logFile.Close() // written by prometheus, read below
		if t.Failed() {
			out, _ := os.ReadFile(logFile.Name())
			t.Logf("prometheus log:\n%s", tail(string(out), 40))
		}
	})
	pc, err := promapi.NewClient(promapi.Config{Address: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	p := &prometheus{api: promv1.NewAPI(pc), cmd: cmd}
	eventually(t, time.Minute, "Prometheus scrapes kok-manager", func() error {
		v, err := p.query(`up{job="kok-manager"} == 1`)
		if err != nil {
			return err
		}
		if len(v) != len(targets) {
			return fmt.Errorf("%d of %d targets up", len(v), len(targets))
		}
		return nil
	})
	t.Logf("Prometheus (%s) at http://%s scrapes kok-manager at %s", bin, addr, strings.Join(targets, ", "))
	return p
}

func (p *prometheus) query(q string) (model.Vector, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, _, err := p.api.Query(ctx, q, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", q, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		if s, ok := v.(*model.Scalar); ok {
			return model.Vector{{Value: s.Value, Timestamp: s.Timestamp}}, nil
		}
		return nil, fmt.Errorf("%s: a %s, not a vector", q, v.Type())
	}
	return vec, nil
}

// firing is the alerts Prometheus fires now, by name, each with its
// labels.
func (p *prometheus) firing() (map[string][]model.LabelSet, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.api.Alerts(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]model.LabelSet{}
	for _, a := range res.Alerts {
		if a.State == promv1.AlertStateFiring {
			name := string(a.Labels["alertname"])
			out[name] = append(out[name], a.Labels)
		}
	}
	return out, nil
}

// fires reports whether alert fires with these labels (among others).
func (p *prometheus) fires(alert string, labels model.LabelSet) (bool, error) {
	f, err := p.firing()
	if err != nil {
		return false, err
	}
	for _, ls := range f[alert] {
		match := true
		for k, v := range labels {
			match = match && ls[k] == v
		}
		if match {
			return true, nil
		}
	}
	return false, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// kokRules copies config/monitoring/kok-alerts.yaml with every `for:`
// cut to five seconds (the expressions are what the test checks; how long
// a condition must hold is the operator's policy) and returns its path and
// its rules.
func kokRules(t *testing.T) (string, ruleFile) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(), "config", "monitoring", "kok-alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(data, &rf); err != nil {
		t.Fatal(err)
	}
	short := regexp.MustCompile(`(?m)^(\s+for:) .*$`).ReplaceAll(data, []byte("$1 5s"))
	path := filepath.Join(t.TempDir(), "kok-alerts.yaml")
	if err := os.WriteFile(path, short, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, rf
}

// dashboardQueries are the expressions of config/monitoring/kok-dashboard.json
// with its variables set as Grafana sets them for "All".
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(), "config", "monitoring", "kok-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$namespace", ".*", "$job", ".*", "$__rate_interval", "1m", "$__range", "1h")
	out := map[string]string{}
	for _, p := range d.Panels {
		for i, tg := range p.Targets {
			out[fmt.Sprintf("%s #%d", p.Title, i+1)] = vars.Replace(tg.Expr)
		}
	}
	return out
}

// TestMonitoring runs kok's alert rules and dashboard in a real Prometheus
// scraping kok-manager: every dashboard query returns series, every alert
// expression evaluates and the kok series it reads exist, and an apiserver
// that stops fires KokClusterNotReady for its cluster (and only then).
func TestMonitoring(t *testing.T) {
	cfg := sharedCluster(t)
	ctx := context.Background()
	c := metaClient(t, cfg)
	const name = "monitored"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Delete(ctx, &clusterv1.ClusterUpgrade{ObjectMeta: metav1.ObjectMeta{Name: name}})
		_ = c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	})
	kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: name, Labels: map[string]string{"kok.dev/e2e": name}},
		Spec: clusterv1.KubeClusterSpec{Version: "v1.34.4"}}
	if err := c.Create(ctx, kc); err != nil {
		t.Fatal(err)
	}
	waitClusterReady(t, c, kc, 5*time.Minute)
	// A rollout with nothing to do, for the rollout series.
	mustKok(t, shared.stateDir, "upgrade", "--name", name, "--selector", "kok.dev/e2e="+name, "--to", "v1.34.4")

	rulesPath, rules := kokRules(t)
	prom := startPrometheus(t, cfg, c, rulesPath)

	queries := dashboardQueries(t)
	eventually(t, 90*time.Second, "every dashboard query returns series", func() error {
		var empty []string
		for title, q := range queries {
			v, err := prom.query(q)
			if err != nil {
				return err
			}
			if len(v) == 0 {
				empty = append(empty, title+": "+q)
			}
		}
		if len(empty) > 0 {
			return fmt.Errorf("%d of %d queries return nothing:\n  %s", len(empty), len(queries), strings.Join(empty, "\n  "))
		}
		return nil
	})
	t.Logf("%d dashboard queries return series", len(queries))

	metricName := regexp.MustCompile(`\bkok_[a-z_]+`)
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if _, err := prom.query(r.Expr); err != nil {
				t.Errorf("alert %s: %v", r.Alert, err)
			}
			for _, m := range metricName.FindAllString(r.Expr, -1) {
				if v, err := prom.query("count(" + m + ")"); err != nil || len(v) == 0 {
					t.Errorf("alert %s reads %s, which has no series (%v)", r.Alert, m, err)
				}
			}
		}
	}
	t.Logf("%d alert expressions evaluate; the series they read exist", n)
	ours := model.LabelSet{"namespace": name, "cluster": name}
	if on, err := prom.fires("KokClusterNotReady", ours); err != nil || on {
		t.Fatalf("KokClusterNotReady fires for a Ready cluster (%v)", err)
	}

	// Stop the apiserver: pause the cluster (the operator keeps reporting
	// but changes nothing) and scale its Deployment to zero.
	patch := func(obj client.Object, body string) {
		t.Helper()
		if err := c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(body))); err != nil {
			t.Fatal(err)
		}
	}
	apiserver := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: cluster.Names{Cluster: name, Namespace: name}.Deployment(cluster.APIServer)}}
	patch(&clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: name}}, `{"spec":{"paused":true}}`)
	patch(apiserver, `{"spec":{"replicas":0}}`)
	stopped := time.Now()
	eventually(t, 2*time.Minute, "KokClusterNotReady fires for "+name, func() error {
		on, err := prom.fires("KokClusterNotReady", ours)
		if err != nil || on {
			return err
		}
		f, _ := prom.firing()
		return fmt.Errorf("not firing; firing: %v", f)
	})
	t.Logf("apiserver stopped: KokClusterNotReady fired for %s/%s after %s", name, name, time.Since(stopped).Round(time.Second))

	// Unpaused, the operator brings the apiserver back and the alert ends.
	patch(&clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: name}}, `{"spec":{"paused":false}}`)
	eventually(t, 3*time.Minute, "KokClusterNotReady resolves", func() error {
		on, err := prom.fires("KokClusterNotReady", ours)
		if err == nil && on {
			return fmt.Errorf("still firing")
		}
		return err
	})
	mustKok(t, shared.stateDir, "delete", "cluster", name, "-n", name)
}
