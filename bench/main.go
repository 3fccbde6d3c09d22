// Command bench measures kok and writes results under bench/results/.
//
// Platform (issue: kok up): time of `kok up` cold (empty Go and kok caches,
// with -cold), warm from an empty state directory (binaries built, images
// not yet imported), warm restart (kok down, then kok up on the kept state),
// time to node Ready, and the memory (RSS) of each component.
//
//	go run ./bench -out bench/results [-cold]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/local/build"
	"github.com/kubeonkube/kok/internal/local/proc"
)

// Run is one measured kok up.
type Run struct {
	Name       string  `json:"name"`
	Seconds    float64 `json:"seconds"`
	NodeReadyS float64 `json:"nodeReadySeconds"`
	// ManagerReadyS is when CoreDNS and kok-manager were Ready.
	ManagerReadyS float64        `json:"managerReadySeconds"`
	Steps         []local.Step   `json:"steps"`
	Description   string         `json:"description"`
	Err           string         `json:"error,omitempty"`
	RSSMiB        map[string]int `json:"rssMiB,omitempty"`
}

// Result is what one bench invocation writes.
type Result struct {
	Benchmark string    `json:"benchmark"`
	Time      time.Time `json:"time"`
	Commit    string    `json:"commit"`
	Machine   Machine   `json:"machine"`
	Runs      []Run     `json:"runs"`
	Goals     []string  `json:"goals"`
}

// Machine describes where the numbers were taken.
type Machine struct {
	CPUs      int    `json:"cpus"`
	MemoryGiB int    `json:"memoryGiB"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
	CPUModel  string `json:"cpuModel"`
}

func main() {
	out := flag.String("out", "bench/results", "directory for result files")
	only := flag.String("only", "", "run one benchmark: platform, clusters, etcd, machines, addons, fleet or conformance (default: all but conformance)")
	focus := flag.String("conformance-focus", `\[Conformance\]`, "with -only conformance: the specs of e2e.test to run (ginkgo focus)")
	skip := flag.String("conformance-skip", "", "with -only conformance: specs to leave out (ginkgo skip)")
	procs := flag.Int("conformance-procs", 3, "with -only conformance: e2e.test processes running the parallel specs (1: all in one)")
	cold := flag.Bool("cold", false, "also measure a cold kok up: empty Go build cache and kok cache (rebuilds Kubernetes; ≈15 min on 2 cores)")
	createClusters := flag.Int("create-clusters", 0, "development: create this many business clusters, one after another, on the running meta cluster of -kubeconfig and print how long each took to be Ready, with its timeline (nothing is written)")
	fleetTotal := flag.Int("fleet-clusters", 1000, "with -only fleet: KubeClusters in the fleet")
	fleetLive := flag.Int("fleet-live", 20, "with -only fleet: how many of them run (the rest are hibernated)")
	upgrade := flag.Bool("upgrade", false, "development: with -create-clusters, also time an HA upgrade")
	// controller-runtime registers -kubeconfig on the default flag set
	// when it is linked in (client/config); use that one if it is there.
	kubeconfig := new(string)
	if f := flag.Lookup("kubeconfig"); f == nil {
		flag.StringVar(kubeconfig, "kubeconfig", "", "the running meta cluster the development flags use (default /var/lib/kok/kubeconfig)")
	}
	etcdRounds := flag.Int("etcd-throughput-rounds", 0, "development: this many rounds of etcd write-throughput measurements on the running meta cluster of -kubeconfig (members, Service, hand-started)")
	flag.Parse()
	if f := flag.Lookup("kubeconfig"); f != nil {
		*kubeconfig = f.Value.String()
	}
	if *kubeconfig == "" {
		*kubeconfig = "/var/lib/kok/kubeconfig"
	}
	cacheDir := os.Getenv("KOK_CACHE_DIR")
	if cacheDir == "" {
		cacheDir = local.DefaultConfig().CacheDir
	}
	if *etcdRounds > 0 {
		if err := measureEtcdThroughput(*kubeconfig, cacheDir, *etcdRounds); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *createClusters > 0 {
		if err := timeClusterCreation(*kubeconfig, *createClusters, *upgrade); err != nil {
			log.Fatal(err)
		}
		return
	}
	if os.Geteuid() != 0 {
		log.Fatal("bench runs kok up: run it as root")
	}
	root, err := os.Getwd()
	if err != nil {
		log.Fatal(err)
	}
	kokBin := filepath.Join(root, "bin", "kok")
	if _, err := os.Stat(kokBin); err != nil {
		log.Fatalf("%s missing: make build", kokBin)
	}
	if _, alive := proc.Alive(local.SupervisorPidFile(local.DefaultConfig().StateDir)); alive {
		log.Fatal("a kok meta cluster runs from /var/lib/kok: kok down first, the bench needs the ports")
	}
	res := &Result{Benchmark: "platform: kok up", Time: time.Now().UTC(), Commit: gitCommit(), Machine: machine(),
		Goals: []string{"warm kok up ≤ 60 s to node Ready and kok-manager Ready", "cold kok up ≤ 15 min on 2 cores"}}

	if *cold {
		tmpCache, _ := os.MkdirTemp("/var/tmp", "kok-bench-cache-")
		goCache, _ := os.MkdirTemp("/var/tmp", "kok-bench-gocache-")
		if err := os.Setenv("GOCACHE", goCache); err != nil {
			log.Fatal(err)
		}
		res.Runs = append(res.Runs, measure("cold", "empty GOCACHE and kok cache: builds Kubernetes, etcd, CoreDNS, then kok up from an empty state dir",
			kokBin, tmpCache, true)...)
		if err := os.Unsetenv("GOCACHE"); err != nil {
			log.Fatal(err)
		}
		// Best effort: the caches are throw-away copies under /var/tmp.
		_ = os.RemoveAll(tmpCache)
		_ = os.RemoveAll(goCache)
	}
	switch *only {
	case "clusters":
		benchClusters(*out, kokBin, cacheDir)
		return
	case "etcd":
		benchEtcd(*out, kokBin, cacheDir)
		return
	case "machines":
		benchMachines(*out, kokBin, cacheDir)
		return
	case "addons":
		benchAddons(*out, kokBin, cacheDir)
		return
	case "fleet":
		benchFleet(*out, kokBin, cacheDir, *fleetTotal, *fleetLive)
		return
	case "conformance":
		benchConformance(*out, kokBin, cacheDir, *focus, *skip, *procs)
		return
	}
	res.Runs = append(res.Runs, measure("warm-fresh", "binaries cached, empty state dir (images imported into a new containerd)", kokBin, cacheDir, false)...)
	for _, r := range res.Runs {
		fmt.Printf("%-12s %6.1fs  node Ready at %5.1fs  kok-manager Ready at %5.1fs %s\n", r.Name, r.Seconds, r.NodeReadyS, r.ManagerReadyS, r.Err)
	}
	write(*out, res)
	if *only == "" {
		benchClusters(*out, kokBin, cacheDir)
		benchEtcd(*out, kokBin, cacheDir)
		benchMachines(*out, kokBin, cacheDir)
		benchAddons(*out, kokBin, cacheDir)
		benchFleet(*out, kokBin, cacheDir, *fleetTotal, *fleetLive)
	}
}

// measure runs kok up from an empty state dir and, unless only is set, a
// warm restart (kok down, kok up) on the same state.
func measure(name, desc, kokBin, cacheDir string, only bool) []Run {
	stateDir, _ := os.MkdirTemp("/var/lib", "kok-bench-")
	defer func() {
		_ = local.Down(context.Background(), local.DownOptions{StateDir: stateDir, Purge: true, Builder: builder(cacheDir), Out: io.Discard})
	}()
	first := up(name, desc, kokBin, stateDir, cacheDir)
	first.RSSMiB = rss(stateDir)
	if first.Err != "" || only {
		return []Run{first}
	}
	if err := local.Down(context.Background(), local.DownOptions{StateDir: stateDir, Builder: builder(cacheDir), Out: io.Discard}); err != nil {
		first.Err = err.Error()
		return []Run{first}
	}
	restart := up("warm-restart", "kok down, then kok up on the kept state (images present)", kokBin, stateDir, cacheDir)
	restart.RSSMiB = rss(stateDir)
	return []Run{first, restart}
}

func up(name, desc, kokBin, stateDir, cacheDir string) Run {
	cfg := local.DefaultConfig()
	cfg.StateDir, cfg.CacheDir = stateDir, cacheDir
	bins := local.Binaries{Manager: filepath.Join(filepath.Dir(kokBin), "kok-manager"), Pause: filepath.Join(filepath.Dir(kokBin), "kok-pause"),
		Agent: filepath.Join(filepath.Dir(kokBin), "kok-agent"), CNI: filepath.Join(filepath.Dir(kokBin), "kok-cni")}
	start := time.Now()
	r, err := local.Up(context.Background(), local.UpOptions{Config: cfg, Bins: bins, Builder: builder(cacheDir), Self: kokBin, Out: os.Stdout, Timeout: 30 * time.Minute})
	run := Run{Name: name, Description: desc, Seconds: time.Since(start).Seconds()}
	if err != nil {
		run.Err = err.Error()
		return run
	}
	run.Steps = r.Steps
	var acc time.Duration
	for _, s := range r.Steps {
		acc += s.Duration
		if strings.HasPrefix(s.Name, "node ") {
			run.NodeReadyS = acc.Seconds()
		}
		if strings.HasSuffix(s.Name, "kok-manager Ready") {
			run.ManagerReadyS = acc.Seconds()
		}
	}
	return run
}

func builder(cacheDir string) *build.Builder {
	return &build.Builder{CacheDir: cacheDir, Log: io.Discard, Progress: os.Stdout}
}

func rss(stateDir string) map[string]int {
	comps, _, err := local.Components(stateDir)
	if err != nil {
		return nil
	}
	m := map[string]int{}
	total := 0
	for _, c := range comps {
		m[c.Name] = int(c.RSS >> 20)
		total += int(c.RSS >> 20)
	}
	m["total"] = total
	return m
}

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		_, _ = fmt.Sscanf(strings.SplitN(string(data), "\n", 2)[0], "MemTotal: %d kB", &kb) // on a parse error kb stays 0
		m.MemoryGiB = (kb + 512*1024) >> 20
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "model name") {
				m.CPUModel = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	return m
}

// saveJSON writes a benchmark's result as dir/<kind>-<time>-<commit>.json
// (creating dir) and returns the file's name.
func saveJSON(dir, kind string, at time.Time, commit string, res any) string {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}
	data, _ := json.MarshalIndent(res, "", "  ")
	name := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.json", kind, at.Format("20060102-150405"), commit))
	if err := os.WriteFile(name, append(data, '\n'), 0o644); err != nil {
		log.Fatal(err)
	}
	return name
}

func write(dir string, res *Result) {
	name := saveJSON(dir, "platform", res.Time, res.Commit, res)
	if err := os.WriteFile(filepath.Join(dir, "platform.md"), []byte(summary(dir)), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("results: %s and %s\n", name, filepath.Join(dir, "platform.md"))
}

// summary renders the latest result of each kind of run found in dir: cold
// runs are rare, warm ones frequent, and both belong in one table.
func summary(dir string) string {
	files, _ := filepath.Glob(filepath.Join(dir, "platform-*.json"))
	type entry struct {
		run Run
		res *Result
	}
	latest := map[string]entry{}
	var order []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var r Result
		if json.Unmarshal(data, &r) != nil {
			continue
		}
		for _, run := range r.Runs {
			prev, ok := latest[run.Name]
			if !ok {
				order = append(order, run.Name)
			}
			if !ok || r.Time.After(prev.res.Time) {
				rr := r
				latest[run.Name] = entry{run, &rr}
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Platform benchmark: kok up\n\nLatest result of each run (from the JSON files beside this one).\n\n")
	fmt.Fprintf(&b, "Goals: warm kok up ≤ 60 s to node Ready and kok-manager Ready; cold kok up ≤ 15 min on 2 cores.\n\n")
	fmt.Fprintf(&b, "| run | total | node Ready at | kok-manager Ready at | when, commit | machine | what |\n|---|---|---|---|---|---|---|\n")
	for _, n := range order {
		e := latest[n]
		m := e.res.Machine
		fmt.Fprintf(&b, "| %s | %.1fs | %.1fs | %.1fs | %s, %s | %d CPUs %s, %d GiB | %s%s |\n", n, e.run.Seconds, e.run.NodeReadyS,
			e.run.ManagerReadyS, e.res.Time.Format("2006-01-02 15:04"), e.res.Commit, m.CPUs, m.CPUModel, m.MemoryGiB, e.run.Description, errNote(e.run.Err))
	}
	for _, n := range order {
		e := latest[n]
		fmt.Fprintf(&b, "\n## %s\n\n", n)
		for _, s := range e.run.Steps {
			fmt.Fprintf(&b, "- %s: %.1fs\n", s.Name, s.Duration.Seconds())
		}
		if len(e.run.RSSMiB) > 0 {
			fmt.Fprintf(&b, "\nRSS (MiB) after kok up:")
			for _, c := range append(append([]string(nil), local.ComponentNames...), "total") {
				fmt.Fprintf(&b, " %s %d;", c, e.run.RSSMiB[c])
			}
			fmt.Fprintln(&b)
		}
	}
	return b.String()
}

func errNote(e string) string {
	if e == "" {
		return ""
	}
	return " — FAILED: " + strings.SplitN(e, "\n", 2)[0]
}
