package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/clusterctl"
	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/local/hosts"
	"github.com/kubeonkube/kok/internal/machine/remote"
)

// MachineResult is what the machine-operator benchmark writes.
type MachineResult struct {
	Benchmark string    `json:"benchmark"`
	Time      time.Time `json:"time"`
	Commit    string    `json:"commit"`
	Machine   Machine   `json:"machine"`
	// ReadySeconds: Machine applied → Ready (node Ready, components at
	// their final state), one fresh host each, one after another. The
	// artifacts are in kok's registry; the host has nothing yet.
	ReadySeconds []float64 `json:"readySeconds"`
	// Parallel: this many Machines applied together → all Ready.
	Parallel        int     `json:"parallel"`
	ParallelSeconds float64 `json:"parallelSeconds"`
	// KubeletBackSeconds: kubelet SIGKILLed → a new kubelet process runs.
	KubeletBackSeconds []float64 `json:"kubeletBackSeconds"`
	// Agent per host, idle: RSS and CPU.
	AgentRSSMiB        []int   `json:"agentRSSMiB"`
	AgentCPUMillicores float64 `json:"agentCPUMillicores"`
	// Node software per idle host (containerd + kubelet + agent), RSS.
	HostRSSMiB int `json:"hostRSSMiB"`
	// Operator: kok-manager RSS with no Machine and with all of them;
	// reconcile time of the machine controller.
	ManagerRSSMiBBefore int     `json:"managerRSSMiBBefore"`
	ManagerRSSMiBAfter  int     `json:"managerRSSMiBAfter"`
	ReconcileMeanMillis float64 `json:"reconcileMeanMillis"`
	Reconciles          int     `json:"reconciles"`
	Err                 string  `json:"error,omitempty"`
}

func benchMachines(out, kokBin, cacheDir string) {
	res := &MachineResult{Benchmark: "machine operator", Time: time.Now().UTC(), Commit: gitCommit(), Machine: machine(), Parallel: 10}
	res.Err = onMetaCluster("machines", kokBin, cacheDir, func(ctx context.Context, c client.Client, cfg *local.Config) error {
		defer func() { _, _ = hosts.DeleteAll(context.Background(), cfg.StateDir) }()
		return runMachineBench(ctx, res, c, cfg, kokBin)
	})
	writeMachines(out, res)
}

func runMachineBench(ctx context.Context, res *MachineResult, c client.Client, cfg *local.Config, kokBin string) error {
	const cluster = "bench"
	kc, err := clusterctl.Create(ctx, c, clusterctl.CreateOptions{Name: cluster, Version: cfg.KubernetesVersion})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := clusterctl.Wait(wctx, c, kc, io.Discard); err != nil {
		return err
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig())
	if err != nil {
		return err
	}
	res.ManagerRSSMiBBefore = processRSS("kok-manager")
	mk := func(name string) (*hosts.Host, error) {
		h, _, err := hosts.Create(ctx, hosts.Options{StateDir: cfg.StateDir, Name: name, Self: kokBin, GuardCIDR: cfg.GuardCIDR,
			Guard: func(ctx context.Context) error { return local.EnsureGuard(ctx, cfg.GuardCIDR) }})
		return h, err
	}
	waitReady := func(names []string, timeout time.Duration) error {
		deadline := time.Now().Add(timeout)
		for _, n := range names {
			for {
				m := &nodev1.Machine{}
				err := c.Get(ctx, client.ObjectKey{Namespace: cluster, Name: n}, m)
				if err == nil && meta.IsStatusConditionTrue(m.Status.Conditions, nodev1.MachineReady) {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("the Machine %s is not Ready in %s: %v", n, timeout, m.Status.Conditions)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		return nil
	}
	// One after another.
	var single []string
	for i := range 2 {
		name := fmt.Sprintf("bench-s%d", i)
		h, err := mk(name)
		if err != nil {
			return err
		}
		start := time.Now()
		if _, err := local.ApplyMachine(ctx, restCfg, h, cluster, cluster); err != nil {
			return err
		}
		if err := waitReady([]string{name}, 5*time.Minute); err != nil {
			return err
		}
		res.ReadySeconds = append(res.ReadySeconds, time.Since(start).Seconds())
		fmt.Printf("Machine %s applied → Ready in %.1fs\n", name, time.Since(start).Seconds())
		single = append(single, name)
	}
	// Together.
	var all []*hosts.Host
	var names []string
	for i := range res.Parallel {
		h, err := mk(fmt.Sprintf("bench-p%d", i))
		if err != nil {
			return err
		}
		all, names = append(all, h), append(names, h.Name)
	}
	start := time.Now()
	for _, h := range all {
		if _, err := local.ApplyMachine(ctx, restCfg, h, cluster, cluster); err != nil {
			return err
		}
	}
	if err := waitReady(names, 10*time.Minute); err != nil {
		return err
	}
	res.ParallelSeconds = time.Since(start).Seconds()
	fmt.Printf("%d Machines applied together → all Ready in %.1fs\n", res.Parallel, res.ParallelSeconds)

	// Idle: the agents' memory and CPU, the node software's memory.
	time.Sleep(20 * time.Second)
	agents := processes("kok-agent")
	cpu0 := cpuTicks(agents)
	time.Sleep(30 * time.Second)
	cpu1 := cpuTicks(agents)
	res.AgentCPUMillicores = float64(cpu1-cpu0) / 100 / 30 * 1000 / float64(max(len(agents), 1))
	for _, p := range agents {
		res.AgentRSSMiB = append(res.AgentRSSMiB, rssOf(p)>>20)
	}
	total := 0
	for _, comm := range []string{"kok-agent", "kubelet", "containerd"} {
		for _, p := range processes(comm) {
			total += rssOf(p)
		}
	}
	res.HostRSSMiB = total >> 20 / max(len(agents), 1)
	res.ManagerRSSMiBAfter = processRSS("kok-manager")
	res.ReconcileMeanMillis, res.Reconciles = reconcileTime(ctx, c)

	// The kubelet killed: back how fast.
	h, err := hosts.Load(cfg.StateDir, single[0])
	if err != nil {
		return err
	}
	for range 5 {
		back, err := killKubelet(ctx, h)
		if err != nil {
			return err
		}
		res.KubeletBackSeconds = append(res.KubeletBackSeconds, back)
		time.Sleep(12 * time.Second) // past the agent's backoff window
	}
	fmt.Printf("kubelet back after %v s\n", res.KubeletBackSeconds)
	return nil
}

// killKubelet kills a host's kubelet over SSH and times until another
// kubelet process runs.
func killKubelet(ctx context.Context, h *hosts.Host) (float64, error) {
	key, err := os.ReadFile(h.PrivateKeyPath)
	if err != nil {
		return 0, err
	}
	cl, err := remote.Dial(ctx, remote.Target{Address: h.Address, Port: int32(h.Port), User: h.User, PrivateKey: key, HostKey: h.HostKey})
	if err != nil {
		return 0, err
	}
	defer func() { _ = cl.Close() }()
	res, err := cl.Run(ctx, `old=$(pgrep -x kubelet); t0=$(date +%s%N); kill -KILL $old
while :; do p=$(pgrep -x kubelet); if [ -n "$p" ] && [ "$p" != "$old" ] && [ "$(cut -d' ' -f3 /proc/$p/stat)" != Z ]; then break; fi; sleep 0.01; done
echo $(( ($(date +%s%N) - t0) / 1000000 ))`)
	if err != nil || res.ExitCode != 0 {
		return 0, fmt.Errorf("killing the kubelet: %v %s", err, res.Stderr)
	}
	ms, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
	return float64(ms) / 1000, err
}

// processes lists the pids whose command name is comm.
func processes(comm string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if c, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm")); strings.TrimSpace(string(c)) == comm {
			out = append(out, pid)
		}
	}
	return out
}

func rssOf(pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return kb << 10
		}
	}
	return 0
}

func processRSS(comm string) int {
	total := 0
	for _, p := range processes(comm) {
		total += rssOf(p)
	}
	return total >> 20
}

// cpuTicks sums utime+stime of pids (clock ticks, 100 per second).
func cpuTicks(pids []int) int {
	total := 0
	for _, p := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
		u, _ := strconv.Atoi(f[11])
		s, _ := strconv.Atoi(f[12])
		total += u + s
	}
	return total
}

// reconcileTime reads the machine controller's mean reconcile time from
// kok-manager's metrics.
func reconcileTime(ctx context.Context, c client.Client) (float64, int) {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace("kok-system"), client.MatchingLabels{"app.kubernetes.io/component": "manager"}); err != nil || len(pods.Items) == 0 {
		return 0, 0
	}
	resp, err := http.Get("http://" + pods.Items[0].Status.PodIP + ":8080/metrics")
	if err != nil {
		return 0, 0
	}
	defer func() { _ = resp.Body.Close() }()
	var sum float64
	var count int
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		l := s.Text()
		if !strings.Contains(l, `controller="machine"`) {
			continue
		}
		fields := strings.Fields(l)
		v, _ := strconv.ParseFloat(fields[len(fields)-1], 64)
		switch {
		case strings.HasPrefix(l, "controller_runtime_reconcile_time_seconds_sum"):
			sum = v
		case strings.HasPrefix(l, "controller_runtime_reconcile_time_seconds_count"):
			count = int(v)
		}
	}
	if count == 0 {
		return 0, 0
	}
	return sum / float64(count) * 1000, count
}

func writeMachines(dir string, res *MachineResult) {
	name := saveJSON(dir, "machines", res.Time, res.Commit, res)
	var b strings.Builder
	m := res.Machine
	fmt.Fprintf(&b, "# Machine operator benchmark\n\nLatest run: %s, commit %s, %d CPUs %s, %d GiB (JSON beside this file).\n"+
		"Hosts are local hosts (`kok machine create`: namespaces with their own sshd on this machine), reached over SSH; "+
		"every artifact comes from kok's registry in the meta cluster.\n\n",
		res.Time.Format("2006-01-02 15:04"), res.Commit, m.CPUs, m.CPUModel, m.MemoryGiB)
	if res.Err != "" {
		fmt.Fprintf(&b, "**The run failed:** %s\n\n", res.Err)
	}
	back := slices.Clone(res.KubeletBackSeconds)
	slices.Sort(back)
	worst := 0.0
	if len(back) > 0 {
		worst = back[len(back)-1]
	}
	fmt.Fprintf(&b, "| | result | goal |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| Machine applied → Ready (node Ready, components at their final state), fresh host, artifacts in the registry | %v | ≤ 15 s |\n", fmtSeconds(res.ReadySeconds))
	fmt.Fprintf(&b, "| %d Machines applied together → all Ready | %.1fs | |\n", res.Parallel, res.ParallelSeconds)
	fmt.Fprintf(&b, "| kubelet SIGKILLed → running again | %v (worst %.2fs) | ≤ 5 s |\n", fmtSeconds(res.KubeletBackSeconds), worst)
	fmt.Fprintf(&b, "| kok-agent per host, idle: RSS | %v MiB | |\n", res.AgentRSSMiB)
	fmt.Fprintf(&b, "| kok-agent per host, idle: CPU | %.1f millicores | |\n", res.AgentCPUMillicores)
	fmt.Fprintf(&b, "| node software per idle host (containerd + kubelet + kok-agent), RSS | %d MiB | |\n", res.HostRSSMiB)
	fmt.Fprintf(&b, "| kok-manager RSS: no Machine → %d Machines | %d → %d MiB | |\n", len(res.ReadySeconds)+res.Parallel, res.ManagerRSSMiBBefore, res.ManagerRSSMiBAfter)
	fmt.Fprintf(&b, "| machine controller: mean reconcile (day-0 passes reach the host over SSH, later ones read its Lease) | %.0f ms over %d passes | |\n", res.ReconcileMeanMillis, res.Reconciles)
	b.WriteString(machineNotes)
	if err := os.WriteFile(filepath.Join(dir, "machines.md"), []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("results: %s and %s\n", name, filepath.Join(dir, "machines.md"))
}

const machineNotes = `
What the numbers cost and mean:
- Applied → Ready covers: SSH dial and facts, rendering (tags resolved in the registry), the agent binary
  (29 MiB) written over SSH, the desired state published in the business cluster, the bootstrap token and kubeconfig, and on the host: fetching containerd, runc,
  the CNI plugins and the 129 MiB kube binary from the registry by digest, unpacking, starting containerd
  and the kubelet, TLS bootstrap and the node's first Ready. The first host of a run also waits for the
  manager's first resolution of the artifact tags.
- Every local host shares this machine's 2 CPUs: 10 Machines at once contend for them (10 kubelets and
  containerds starting together), so "together" is CPU-bound here; on separate hosts each has its own. The
  operator works on up to 10 hosts at once (one worker per Machine at a time).
- The mean reconcile includes the passes that install (agent upload, kok-agent apply over SSH, the desired
  state's Secret, Lease and RBAC applied in the business cluster) and waits on SSH and on a business apiserver
  busy with 10 joining nodes; once a host's agent heartbeats, a pass is a Node and a Lease read, a certificate
  request list and a status patch, with no SSH.
- The agent's RSS includes its cluster link: client-go, an informer on one Secret, TLS to the business
  apiserver.
- kubelet back: the agent waits on its children, so a kill is seen at once; a service that ran less than 10 s
  is restarted after a backoff (1 s, doubling to 30 s) instead.
`
