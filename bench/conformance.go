package main

import (
	"context"
	"encoding/xml"
	"fmt"
	"log"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeonkube/kok/internal/clusterctl"
	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/local/build"
	"github.com/kubeonkube/kok/internal/local/hosts"
)

// ConformanceResult is what make conformance writes: every spec the focus
// selected, with its state.
type ConformanceResult struct {
	Benchmark string    `json:"benchmark"`
	Time      time.Time `json:"time"`
	Commit    string    `json:"commit"`
	Machine   Machine   `json:"machine"`
	Version   string    `json:"kubernetesVersion"`
	Nodes     int       `json:"nodes"`
	Focus     string    `json:"focus"`
	Skip      string    `json:"skip,omitempty"`
	// Procs is how many e2e.test processes ran the parallel specs (the
	// [Serial] ones run alone, after them).
	Procs int `json:"procs,omitempty"`
	// Seconds the suite ran.
	Seconds float64      `json:"seconds"`
	Specs   []SpecResult `json:"specs"`
	Err     string       `json:"error,omitempty"`
}

// SpecResult is one spec of the suite.
type SpecResult struct {
	Name    string  `json:"name"`
	SIG     string  `json:"sig"`
	State   string  `json:"state"` // passed, failed, skipped
	Message string  `json:"message,omitempty"`
	Seconds float64 `json:"seconds"`
}

// sigOf is the [sig-…] a spec's name starts with.
var sigOf = regexp.MustCompile(`\[sig-[a-z-]+\]`)

// benchConformance runs Kubernetes' own e2e suite (e2e.test, built from
// k8s.io/kubernetes/test/e2e at the cluster's release) against a business
// cluster with two machines, its test images built by kok and pushed to
// kok's registry, and writes bench/results/conformance.md.
func benchConformance(out, kokBin, cacheDir, focus, skip string, procs int) {
	res := &ConformanceResult{Benchmark: "conformance", Time: time.Now().UTC(), Commit: gitCommit(), Machine: machine(),
		Nodes: 2, Focus: focus, Skip: skip, Procs: max(procs, 1)}
	b := builder(cacheDir)
	res.Err = onMetaCluster("conformance", kokBin, cacheDir, func(ctx context.Context, c client.Client, cfg *local.Config) error {
		defer func() { _, _ = hosts.DeleteAll(context.Background(), cfg.StateDir) }()
		res.Version = cfg.KubernetesVersion
		// The programs of the suite's images.
		for _, product := range []func(context.Context, string, string) (*build.Product, error){build.Agnhost, build.SampleAPIServer, build.Nonewprivs} {
			p, err := product(ctx, b.Go, cfg.KubernetesVersion)
			if err != nil {
				return err
			}
			if _, err := b.Ensure(ctx, p); err != nil {
				return err
			}
		}
		suite, err := build.E2ETest(ctx, b.Go, cfg.KubernetesVersion)
		if err != nil {
			return err
		}
		dir, err := b.Ensure(ctx, suite)
		if err != nil {
			return err
		}
		return runConformance(ctx, res, c, cfg, b, kokBin, dir)
	})
	writeConformance(out, res)
}

func runConformance(ctx context.Context, res *ConformanceResult, c client.Client, cfg *local.Config, b *build.Builder, kokBin, suiteDir string) error {
	const cluster = "conformance"
	specs, err := local.ConformanceImages(ctx, b, local.Binaries{Pause: filepath.Join(filepath.Dir(kokBin), "kok-pause")}, cfg.KubernetesVersion)
	if err != nil {
		return err
	}
	if err := local.PushImages(ctx, cfg, specs); err != nil {
		return fmt.Errorf("pushing the e2e images: %w", err)
	}
	hs, err := newHosts(ctx, cfg, kokBin, "conf", res.Nodes)
	if err != nil {
		return err
	}
	kc, err := createWithMachines(ctx, c, cfg, cluster, hs)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := clusterctl.Wait(wctx, c, kc, os.Stdout); err != nil {
		return err
	}
	if err := poll(wctx, func() error {
		if err := machinesReady(ctx, c, cluster, hs); err != nil {
			return err
		}
		names := make([]string, 0, len(kc.Spec.Addons))
		for _, a := range kc.Spec.Addons {
			names = append(names, a.Name)
		}
		return addonsHealthy(ctx, c, cluster, names)
	}); err != nil {
		return err
	}
	kubeconfig, err := clusterctl.Kubeconfig(ctx, c, kc)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "kok-conformance-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(work) }()
	kubeconfigFile, repoList, reports := filepath.Join(work, "kubeconfig"), filepath.Join(work, "repo-list.yaml"), filepath.Join(work, "reports")
	if err := os.WriteFile(kubeconfigFile, kubeconfig, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(repoList, []byte(local.E2ERepoList()), 0o644); err != nil {
		return err
	}
	// kubectl of the release, as kok built it (the suite runs kubectl exec,
	// logs, port-forward…).
	kubectl := filepath.Join(b.Dir("kubernetes", res.Version), "kubectl")
	cmdName, args := suiteCommand(suiteDir, res,
		"--kubeconfig="+kubeconfigFile, "--kubectl-path="+kubectl, "--provider=skeleton", "--report-dir="+reports)
	logFile := filepath.Join(os.TempDir(), "kok-conformance.log")
	logOut, err := os.Create(logFile)
	if err != nil {
		return err
	}
	defer func() { _ = logOut.Close() }()
	cmd := exec.CommandContext(ctx, cmdName, args...)
	cmd.Env = append(os.Environ(), "KUBE_TEST_REPO_LIST="+repoList)
	cmd.Stdout, cmd.Stderr = logOut, logOut
	fmt.Printf("running %s %s (log: %s)\n", filepath.Base(cmdName), strings.Join(args, " "), logFile)
	start := time.Now()
	runErr := cmd.Run() // a failing spec fails the suite: the report says which
	res.Seconds = time.Since(start).Seconds()
	junit, _ := filepath.Glob(filepath.Join(reports, "junit*.xml"))
	if len(junit) == 0 {
		return fmt.Errorf("e2e.test wrote no report (%v): see %s", runErr, logFile)
	}
	focus, err := regexp.Compile(res.Focus)
	if err != nil {
		return err
	}
	for _, f := range junit {
		specs, err := readJUnit(f)
		if err != nil {
			return err
		}
		for _, s := range specs {
			if focus.MatchString(s.Name) {
				res.Specs = append(res.Specs, s)
			}
		}
	}
	return nil
}

// suiteCommand is how the suite runs: e2e.test alone with one process, else
// under the ginkgo command with res.Procs processes. Either way ginkgo runs
// the specs marked Serial (Kubernetes' [Serial]) one at a time, after the
// others. suiteArgs are e2e.test's own flags.
func suiteCommand(dir string, res *ConformanceResult, suiteArgs ...string) (string, []string) {
	e2eTest := filepath.Join(dir, "e2e.test")
	if res.Procs <= 1 {
		args := slices.Concat(suiteArgs, []string{"--ginkgo.focus=" + res.Focus, "--ginkgo.timeout=6h", "--ginkgo.no-color", "--ginkgo.v"})
		if res.Skip != "" {
			args = append(args, "--ginkgo.skip="+res.Skip)
		}
		return e2eTest, args
	}
	args := []string{fmt.Sprintf("--procs=%d", res.Procs), "--focus=" + res.Focus, "--timeout=6h", "--no-color", "-v"}
	if res.Skip != "" {
		args = append(args, "--skip="+res.Skip)
	}
	return filepath.Join(dir, "ginkgo"), append(append(args, e2eTest, "--"), suiteArgs...)
}

// readJUnit reads the specs of a JUnit report ginkgo wrote.
func readJUnit(path string) ([]SpecResult, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Suites []struct {
			Cases []struct {
				Name    string  `xml:"name,attr"`
				Time    float64 `xml:"time,attr"`
				Skipped *struct {
					Message string `xml:"message,attr"`
				} `xml:"skipped"`
				Failure *struct {
					Message string `xml:"message,attr"`
					Body    string `xml:",chardata"`
				} `xml:"failure"`
				Error *struct {
					Message string `xml:"message,attr"`
				} `xml:"error"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []SpecResult
	for _, s := range doc.Suites {
		for _, tc := range s.Cases {
			name := strings.TrimPrefix(tc.Name, "[It] ")
			r := SpecResult{Name: name, SIG: strings.Trim(sigOf.FindString(name), "[]"), State: "passed", Seconds: tc.Time}
			switch {
			case tc.Failure != nil:
				r.State, r.Message = "failed", firstLine(tc.Failure.Message+"\n"+tc.Failure.Body)
			case tc.Error != nil:
				r.State, r.Message = "failed", firstLine(tc.Error.Message)
			case tc.Skipped != nil:
				r.State, r.Message = "skipped", firstLine(tc.Skipped.Message)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if len(l) > 300 {
				l = l[:300] + "…"
			}
			return l
		}
	}
	return ""
}

func writeConformance(dir string, res *ConformanceResult) {
	saveJSON(dir, "conformance", res.Time, res.Commit, res)
	type tally struct{ passed, failed, skipped int }
	bySIG := map[string]*tally{}
	total := &tally{}
	for _, s := range res.Specs {
		t := bySIG[s.SIG]
		if t == nil {
			t = &tally{}
			bySIG[s.SIG] = t
		}
		for _, x := range []*tally{t, total} {
			switch s.State {
			case "passed":
				x.passed++
			case "failed":
				x.failed++
			default:
				x.skipped++
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Conformance\n\n%s, commit %s, %s (%d CPUs). Kubernetes %s, e2e.test built by kok from "+
		"k8s.io/kubernetes/test/e2e at that release; a business cluster with %d machines and its default addons.\n\n",
		res.Time.Format(time.RFC3339), res.Commit, res.Machine.CPUModel, res.Machine.CPUs, res.Version, res.Nodes)
	fmt.Fprintf(&b, "Focus `%s`", res.Focus)
	if res.Skip != "" {
		fmt.Fprintf(&b, ", skip `%s`", res.Skip)
	}
	fmt.Fprintf(&b, "; the suite ran %.0f s", res.Seconds)
	if res.Procs > 1 {
		fmt.Fprintf(&b, " in %d processes (its [Serial] specs one at a time, after the others)", res.Procs)
	}
	b.WriteString(".\n\n")
	if res.Err != "" {
		fmt.Fprintf(&b, "**Failed:** %s\n\n", res.Err)
	}
	fmt.Fprintf(&b, "| SIG | passed | failed | skipped |\n|---|---|---|---|\n")
	for _, sig := range slices.Sorted(maps.Keys(bySIG)) {
		t := bySIG[sig]
		fmt.Fprintf(&b, "| %s | %d | %d | %d |\n", sig, t.passed, t.failed, t.skipped)
	}
	fmt.Fprintf(&b, "| **all** | %d | %d | %d |\n\n", total.passed, total.failed, total.skipped)
	for _, state := range []string{"failed", "skipped"} {
		var lines []string
		for _, s := range res.Specs {
			if s.State == state {
				lines = append(lines, fmt.Sprintf("- %s — %s", s.Name, s.Message))
			}
		}
		if len(lines) > 0 {
			fmt.Fprintf(&b, "## %s\n\n%s\n\n", strings.ToUpper(state[:1])+state[1:], strings.Join(lines, "\n"))
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "conformance.md"), []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
}
