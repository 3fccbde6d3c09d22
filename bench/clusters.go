package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/cluster"
	"github.com/kubeonkube/kok/internal/clusterctl"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/manager"
)

// ClusterResult is what the cluster-operator benchmark writes.
type ClusterResult struct {
	Benchmark string    `json:"benchmark"`
	Time      time.Time `json:"time"`
	Commit    string    `json:"commit"`
	Machine   Machine   `json:"machine"`
	// ReadySeconds: KubeCluster applied → Ready (business /readyz answers,
	// controller-manager and scheduler ready), one run per cluster.
	ReadySeconds []float64 `json:"readySeconds"`
	// ReadyTimelines: for each of those runs, when each milestone was
	// first seen (pods created, scheduled, running, ready; etcd Available).
	ReadyTimelines []string `json:"readyTimelines,omitempty"`
	// ReadySecondsEtcd3 is the same with a 3-member etcd.
	ReadySecondsEtcd3 float64 `json:"readySecondsEtcd3"`
	// UpgradeSeconds: 3 apiservers v1.33 → v1.34, patch applied → every
	// component at the new version.
	UpgradeSeconds  float64 `json:"upgradeSeconds"`
	UpgradeRequests int64   `json:"upgradeRequests"`
	UpgradeFailed   int64   `json:"upgradeFailed"`
	UpgradeTimeline string  `json:"upgradeTimeline,omitempty"`
	// RotateSeconds: certificate rotation of the same HA cluster, which
	// rolls every component (the shape of a patch upgrade).
	RotateSeconds float64 `json:"rotateSeconds"`
	RotateFailed  int64   `json:"rotateFailed"`
	// RSSMiB per idle single-replica control plane, by component.
	RSSMiB []map[string]int `json:"rssMiB"`
	// IdleCPUMillicores per idle control plane.
	IdleCPUMillicores []float64 `json:"idleCPUMillicores"`
	// GCVariants: one more idle control plane with another GOGC on
	// apiserver, controller-manager and scheduler (spec.controlPlane.*.env)
	// than kok's default.
	GCVariants []GCVariant `json:"gcVariants"`
	// Capacity estimates how many idle control planes fit on this node.
	CapacityByMemory int    `json:"capacityByMemory"`
	CapacityByCPU    int    `json:"capacityByCPU"`
	Err              string `json:"error,omitempty"`
}

// GCVariant is an idle control plane run with GOGC set in its env.
type GCVariant struct {
	GOGC              string         `json:"gogc"`
	ReadySeconds      float64        `json:"readySeconds"`
	RSSMiB            map[string]int `json:"rssMiB"`
	IdleCPUMillicores float64        `json:"idleCPUMillicores"`
}

func benchClusters(out, kokBin, cacheDir string) {
	res := &ClusterResult{Benchmark: "cluster operator", Time: time.Now().UTC(), Commit: gitCommit(), Machine: machine()}
	res.Err = onMetaCluster("clusters", kokBin, cacheDir, func(ctx context.Context, c client.Client, _ *local.Config) error {
		return runClusterBench(ctx, res, c)
	})
	writeClusters(out, res)
}

// onMetaCluster brings up a fresh meta cluster, runs a benchmark against it
// and tears it down; it returns the benchmark's error as text ("" if none).
func onMetaCluster(name, kokBin, cacheDir string, run func(context.Context, client.Client, *local.Config) error) string {
	stateDir, _ := os.MkdirTemp("/var/lib", "kok-bench-"+name+"-")
	down := func() {
		_ = local.Down(context.Background(), local.DownOptions{StateDir: stateDir, Purge: true, Builder: builder(cacheDir), Out: io.Discard})
	}
	// An interrupt (Ctrl-C, SIGTERM) ends the benchmark's context, so the
	// deferred teardown stops the meta cluster instead of leaving it; one
	// while kok up runs takes effect once it returns.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if r := up(name+"-meta", "meta cluster for the "+name+" benchmark", kokBin, stateDir, cacheDir); r.Err != "" {
		down() // stop what kok up started: log.Fatalf runs no deferred call
		stop()
		log.Fatalf("kok up: %s", r.Err)
	}
	defer stop()
	defer down()
	if ctx.Err() != nil {
		return "interrupted while the meta cluster came up"
	}
	cfg, err := local.LoadConfig(stateDir)
	if err != nil {
		return err.Error()
	}
	c, err := metaClient(cfg.Kubeconfig())
	if err != nil {
		return err.Error()
	}
	if err := run(ctx, c, cfg); err != nil {
		log.Printf("%s benchmark: %v", name, err)
		return err.Error()
	}
	return ""
}

// metaClient is a client (with watches) of the meta cluster of kubeconfig.
func metaClient(kubeconfig string) (client.WithWatch, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	// client-go's default 5 requests/s would time the bench, not kok.
	rc.QPS, rc.Burst = 100, 200
	return client.NewWithWatch(rc, client.Options{Scheme: manager.Scheme()})
}

// timeClusterCreation measures P1 (and P2) on a running meta cluster, for development.
func timeClusterCreation(kubeconfig string, runs int, withP2 bool) error {
	c, err := metaClient(kubeconfig)
	if err != nil {
		return err
	}
	ctx := context.Background()
	create, _ := clusterCreator(ctx, c)
	for i := range runs {
		kc, _, err := create(fmt.Sprintf("quick-p1-%d", i), "v1.34.4", 1, 1)
		if err != nil {
			return err
		}
		if err := clusterctl.Delete(ctx, c, kc, io.Discard); err != nil {
			return err
		}
	}
	if !withP2 {
		return nil
	}
	ha, _, err := create("quick-p2", "v1.33.13", 3, 1)
	if err != nil {
		return err
	}
	bc, err := businessClient(ctx, c, ha)
	if err != nil {
		return err
	}
	took, ok, failed, _, err := measureRollout(ctx, c, ha, bc, `{"spec":{"version":"v1.34.4"}}`)
	fmt.Printf("HA upgrade v1.33.13 → v1.34.4: %.1fs, %d requests, %d failed (%v)\n", took, ok+failed, failed, err)
	return clusterctl.Delete(ctx, c, ha, io.Discard)
}

type createFunc func(name, version string, replicas, etcdReplicas int32) (*clusterv1.KubeCluster, float64, error)

// clusterCreator returns a function that creates a cluster, waits until it
// is Ready and says how long that took, and one that returns the timeline
// of the last creation.
func clusterCreator(ctx context.Context, c client.Client) (createFunc, func() []string) {
	var lastTimeline []string
	create := func(name, version string, replicas, etcdReplicas int32) (*clusterv1.KubeCluster, float64, error) {
		tl, err := startTimeline(ctx, c.(client.WithWatch), name)
		if err != nil {
			return nil, 0, err
		}
		start := time.Now()
		kc, err := clusterctl.Create(ctx, c, clusterctl.CreateOptions{Name: name, Version: version, Replicas: replicas, EtcdReplicas: etcdReplicas})
		if err != nil {
			tl.finish()
			return nil, 0, err
		}
		defer func() {
			lastTimeline = tl.finish()
			fmt.Printf("%-10s %s\n", name, fmtTimeline(lastTimeline))
		}()
		wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		if err := clusterctl.Wait(wctx, c, kc, io.Discard); err != nil {
			return nil, 0, err
		}
		bc, err := businessClient(ctx, c, kc)
		if err != nil {
			return nil, 0, err
		}
		if _, err := bc.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
			return nil, 0, fmt.Errorf("%s /readyz: %w", name, err)
		}
		took := time.Since(start).Seconds()
		fmt.Printf("%-10s Ready in %5.1fs\n", name, took)
		// Beyond Ready: controller-manager and scheduler at work (each
		// holds its lease in the business cluster).
		for _, lease := range []string{"kube-controller-manager", "kube-scheduler"} {
			for time.Since(start) < 2*time.Minute {
				l, err := bc.CoordinationV1().Leases("kube-system").Get(ctx, lease, metav1.GetOptions{})
				if err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
					tl.markAt(lease+" lease held", time.Since(start))
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		return kc, took, nil
	}
	return create, func() []string { return lastTimeline }
}

func runClusterBench(ctx context.Context, res *ClusterResult, c client.Client) error {
	create, timelineOf := clusterCreator(ctx, c)
	var lastTimeline []string

	// P1: one after another, so each start has the machine to itself.
	var singles []*clusterv1.KubeCluster
	for i := range 3 {
		kc, took, err := create(fmt.Sprintf("p1-%d", i), "v1.34.4", 1, 1)
		if err != nil {
			return err
		}
		singles = append(singles, kc)
		res.ReadySeconds = append(res.ReadySeconds, took)
		res.ReadyTimelines = append(res.ReadyTimelines, fmtTimeline(timelineOf()))
	}
	// P3: let them idle, then read memory and CPU.
	time.Sleep(30 * time.Second)
	for _, kc := range singles {
		mem, cpu, err := controlPlaneUsage(ctx, c, kc, 20*time.Second, kc.Name)
		if err != nil {
			return err
		}
		res.RSSMiB = append(res.RSSMiB, mem)
		res.IdleCPUMillicores = append(res.IdleCPUMillicores, cpu)
		fmt.Printf("%-10s RSS %v MiB, idle CPU %.0fm\n", kc.Name, mem, cpu)
	}
	meanRSS, meanCPU := 0.0, 0.0
	for i := range res.RSSMiB {
		// What one more control plane costs: its private memory (the
		// binary's pages are shared by every control plane of a version).
		meanRSS += float64(res.RSSMiB[i]["total/private"]) / float64(len(res.RSSMiB))
		meanCPU += res.IdleCPUMillicores[i] / float64(len(res.RSSMiB))
	}
	if avail := memAvailableMiB(); meanRSS > 0 {
		res.CapacityByMemory = len(singles) + int(float64(avail-1024)/meanRSS) // keep 1 GiB spare
	}
	if meanCPU > 0 {
		res.CapacityByCPU = int(float64(res.Machine.CPUs*1000) * 0.8 / meanCPU)
	}
	// The same idle control plane with another GC target: 25 for density,
	// 100 (Go's own) for what kok's default saves.
	for _, gogc := range []string{"25", "100"} {
		v, err := gcVariant(ctx, c, "p3-gogc-"+gogc, gogc)
		if err != nil {
			return err
		}
		res.GCVariants = append(res.GCVariants, v)
		fmt.Printf("GOGC=%-4s ready in %.1fs, RSS %v MiB, idle CPU %.0fm\n", gogc, v.ReadySeconds, v.RSSMiB, v.IdleCPUMillicores)
	}
	for _, kc := range singles {
		if err := clusterctl.Delete(ctx, c, kc, io.Discard); err != nil {
			return err
		}
	}

	_, took, err := create("p1-etcd3", "v1.34.4", 1, 3)
	if err != nil {
		return err
	}
	res.ReadySecondsEtcd3 = took
	if kc, err := clusterctl.Find(ctx, c, "p1-etcd3", ""); err == nil {
		_ = clusterctl.Delete(ctx, c, kc, io.Discard)
	}

	// P2: HA upgrade under client load, then a rotation that rolls everything.
	ha, _, err := create("p2", "v1.33.13", 3, 1)
	if err != nil {
		return err
	}
	bc, err := businessClient(ctx, c, ha)
	if err != nil {
		return err
	}
	measureRoll := func(patch string) (float64, int64, int64, error) {
		took, ok, failed, tl, err := measureRollout(ctx, c, ha, bc, patch)
		lastTimeline = tl
		return took, ok, failed, err
	}
	res.UpgradeSeconds, res.UpgradeRequests, res.UpgradeFailed, err = measureRoll(`{"spec":{"version":"v1.34.4"}}`)
	res.UpgradeTimeline = fmtTimeline(lastTimeline)
	fmt.Printf("HA upgrade v1.33.13 → v1.34.4: %.1fs, %d requests, %d failed\n", res.UpgradeSeconds, res.UpgradeRequests, res.UpgradeFailed)
	if err != nil {
		return err
	}
	var rotReq int64
	res.RotateSeconds, rotReq, res.RotateFailed, err = measureRoll(fmt.Sprintf(`{"metadata":{"annotations":{%q:"bench-%d"}}}`, cluster.AnnRotate, time.Now().Unix()))
	fmt.Printf("HA certificate rotation (rolls every component): %.1fs, %d requests, %d failed\n", res.RotateSeconds, rotReq, res.RotateFailed)
	return err
}

// measureRollout applies patch to a Ready cluster under client load and
// waits until it is rolled out: how long that took, requests that succeeded
// and failed, and the timeline of the new pods.
func measureRollout(ctx context.Context, c client.Client, kc *clusterv1.KubeCluster, bc kubernetes.Interface, patch string) (float64, int64, int64, []string, error) {
	load := startLoad(ctx, bc)
	time.Sleep(2 * time.Second)
	tl, err := startTimeline(ctx, c.(client.WithWatch), kc.Namespace)
	if err != nil {
		load.stop()
		return 0, 0, 0, nil, err
	}
	start := time.Now()
	if err := c.Patch(ctx, kc, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		load.stop()
		return 0, 0, 0, tl.finish(), err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	time.Sleep(time.Second)
	err = waitRolled(wctx, c, kc)
	took := time.Since(start).Seconds()
	time.Sleep(2 * time.Second)
	ok, failed := load.stop()
	steps := tl.finish()
	fmt.Printf("rollout: %s\n", fmtTimeline(steps))
	return took, ok, failed, steps, err
}

// waitRolled waits until every Deployment of the cluster runs its current
// template on all replicas and the cluster is Ready at its spec version.
func waitRolled(ctx context.Context, c client.Client, kc *clusterv1.KubeCluster) error {
	for {
		cur := &clusterv1.KubeCluster{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(kc), cur); err != nil {
			return err
		}
		p := statusCondition(cur, clusterv1.ConditionProgressing)
		r := statusCondition(cur, clusterv1.ConditionReady)
		if cur.Status.ObservedGeneration == cur.Generation && cur.Status.Version == cur.Spec.Version && p == "False" && r == "True" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not rolled out: %w", kc.Name, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func statusCondition(kc *clusterv1.KubeCluster, t string) string {
	for _, c := range kc.Status.Conditions {
		if c.Type == t {
			return string(c.Status)
		}
	}
	return ""
}

func businessClient(ctx context.Context, c client.Client, kc *clusterv1.KubeCluster) (kubernetes.Interface, error) {
	data, err := clusterctl.Kubeconfig(ctx, c, kc)
	if err != nil {
		return nil, err
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

type load struct {
	ok, failed atomic.Int64
	done       chan struct{}
	wg         sync.WaitGroup
}

// startLoad keeps two clients listing and creating against the cluster.
func startLoad(ctx context.Context, bc kubernetes.Interface) *load {
	l := &load{done: make(chan struct{})}
	for w := range 2 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.done:
					return
				default:
				}
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				var err error
				if i%2 == 0 {
					_, err = bc.CoreV1().Namespaces().List(rctx, metav1.ListOptions{})
				} else {
					_, err = bc.CoreV1().ConfigMaps("default").Create(rctx, &corev1.ConfigMap{
						ObjectMeta: metav1.ObjectMeta{GenerateName: fmt.Sprintf("load-%d-", w)}}, metav1.CreateOptions{})
				}
				cancel()
				if err != nil {
					l.failed.Add(1)
					log.Printf("request failed: %v", err)
				} else {
					l.ok.Add(1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *load) stop() (int64, int64) {
	close(l.done)
	l.wg.Wait()
	return l.ok.Load(), l.failed.Load()
}

// controlPlaneUsage sums RSS (MiB, by component) and CPU (millicores over
// window) of a cluster's pods: etcd, apiserver, controller-manager, scheduler.
// gcVariant creates an idle control plane (namespace p1-0) whose three
// Kubernetes components run with GOGC=gogc, measures it and deletes it.
func gcVariant(ctx context.Context, c client.Client, name, gogc string) (GCVariant, error) {
	v := GCVariant{GOGC: gogc}
	kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "p1-0"}}
	kc.Spec.Version = "v1.34.4"
	env := []corev1.EnvVar{{Name: "GOGC", Value: gogc}}
	kc.Spec.ControlPlane.APIServer.Env = env
	kc.Spec.ControlPlane.ControllerManager.Env = env
	kc.Spec.ControlPlane.Scheduler.Env = env
	start := time.Now()
	if err := c.Create(ctx, kc); err != nil {
		return v, err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	err := clusterctl.Wait(wctx, c, kc, io.Discard)
	cancel()
	if err != nil {
		return v, err
	}
	v.ReadySeconds = time.Since(start).Seconds()
	time.Sleep(30 * time.Second)
	if v.RSSMiB, v.IdleCPUMillicores, err = controlPlaneUsage(ctx, c, kc, 20*time.Second, name); err != nil {
		return v, err
	}
	return v, clusterctl.Delete(ctx, c, kc, io.Discard)
}

func controlPlaneUsage(ctx context.Context, c client.Client, kc *clusterv1.KubeCluster, window time.Duration, instance string) (map[string]int, float64, error) {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(kc.Namespace)); err != nil {
		return nil, 0, err
	}
	byUID := map[types.UID]string{}
	var uids []types.UID
	for _, p := range pods.Items {
		// etcd pods carry their EtcdCluster's name (<cluster>-etcd).
		if in := p.Labels[kube.LabelInstance]; in != instance && in != instance+"-etcd" {
			continue
		}
		byUID[p.UID] = p.Labels[kube.LabelName]
		uids = append(uids, p.UID)
	}
	mem := map[string]int{}
	var all []int
	for uid, list := range podPIDs(uids...) {
		comp := byUID[uid]
		for _, pid := range list {
			rss, anon, pss := procStatusKB(pid, "VmRSS:"), procStatusKB(pid, "RssAnon:"), smapsPssKB(pid)
			mem[comp] += rss >> 10
			mem["total"] += rss >> 10
			mem[comp+"/private"] += anon >> 10
			mem["total/private"] += anon >> 10
			mem[comp+"/pss"] += pss >> 10
			mem["total/pss"] += pss >> 10
		}
		all = append(all, list...)
	}
	return mem, cpuMillicores(all, window), nil
}

func procStatusKB(pid int, key string) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }() // read only: nothing to lose
	s := bufio.NewScanner(f)
	for s.Scan() {
		if strings.HasPrefix(s.Text(), key) {
			kb, _ := strconv.Atoi(strings.Fields(s.Text())[1])
			return kb
		}
	}
	return 0
}

// smapsPssKB is the proportional set size: shared pages (the Kubernetes
// binary, shared by every control plane of a version) divided among users.
func smapsPssKB(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "Pss:") {
			kb, _ := strconv.Atoi(strings.Fields(l)[1])
			return kb
		}
	}
	return 0
}

func procCPUTicks(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces).
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(fields) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(fields[11], 64)
	s, _ := strconv.ParseFloat(fields[12], 64)
	return u + s
}

func memAvailableMiB() int {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }() // read only: nothing to lose
	s := bufio.NewScanner(f)
	for s.Scan() {
		if strings.HasPrefix(s.Text(), "MemAvailable:") {
			kb, _ := strconv.Atoi(strings.Fields(s.Text())[1])
			return kb >> 10
		}
	}
	return 0
}

func writeClusters(dir string, res *ClusterResult) {
	name := saveJSON(dir, "clusters", res.Time, res.Commit, res)
	var b strings.Builder
	m := res.Machine
	fmt.Fprintf(&b, "# Cluster operator benchmark\n\nLatest run: %s, commit %s, %d CPUs %s, %d GiB (JSON beside this file).\n\n",
		res.Time.Format("2006-01-02 15:04"), res.Commit, m.CPUs, m.CPUModel, m.MemoryGiB)
	if res.Err != "" {
		fmt.Fprintf(&b, "**The run failed:** %s\n\n", res.Err)
	}
	sorted := slices.Clone(res.ReadySeconds)
	slices.Sort(sorted)
	median := 0.0
	if len(sorted) > 0 {
		median = sorted[len(sorted)/2]
	}
	fmt.Fprintf(&b, "| | result | goal |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| P1 KubeCluster applied → Ready (apiserver /readyz, kcm + scheduler ready), 1-member etcd | median %.1fs of %v | ≤ 10 s |\n", median, fmtSeconds(res.ReadySeconds))
	fmt.Fprintf(&b, "| P1 with a 3-member etcd | %.1fs | |\n", res.ReadySecondsEtcd3)
	for i, tl := range res.ReadyTimelines {
		fmt.Fprintf(&b, "| P1 run %d: where the time went | %s | |\n", i, tl)
	}
	fmt.Fprintf(&b, "| P2 HA (3 apiservers) minor upgrade v1.33.13 → v1.34.4 | %.1fs, %d failed of %d requests | ≤ 20 s, 0 failed |\n", res.UpgradeSeconds, res.UpgradeFailed, res.UpgradeRequests)
	if res.UpgradeTimeline != "" {
		fmt.Fprintf(&b, "| P2 upgrade: where the time went (new pods) | %s | |\n", res.UpgradeTimeline)
	}
	fmt.Fprintf(&b, "| P2 HA certificate rotation (rolls every component, like a patch upgrade) | %.1fs, %d failed | |\n", res.RotateSeconds, res.RotateFailed)
	for i, r := range res.RSSMiB {
		fmt.Fprintf(&b, "| P3 idle control plane %d (etcd + apiserver + kcm + scheduler; GOGC=%s, kok's default) | private %d MiB (etcd %d, apiserver %d, kcm %d, scheduler %d); PSS %d MiB; RSS %d MiB; idle CPU %.0fm | ≤ 250 MiB |\n",
			i, cluster.DefaultGOGC, r["total/private"], r["etcd/private"], r[cluster.APIServer+"/private"], r[cluster.ControllerManager+"/private"], r[cluster.Scheduler+"/private"],
			r["total/pss"], r["total"], res.IdleCPUMillicores[i])
	}
	for _, v := range res.GCVariants {
		r := v.RSSMiB
		fmt.Fprintf(&b, "| P3 idle control plane with GOGC=%s (`spec.controlPlane.*.env`; Ready in %.1fs) | private %d MiB (etcd %d, apiserver %d, kcm %d, scheduler %d); PSS %d MiB; RSS %d MiB; idle CPU %.0fm | |\n",
			v.GOGC, v.ReadySeconds, r["total/private"], r["etcd/private"], r[cluster.APIServer+"/private"], r[cluster.ControllerManager+"/private"], r[cluster.Scheduler+"/private"],
			r["total/pss"], r["total"], v.IdleCPUMillicores)
	}
	fmt.Fprintf(&b, "| P3 control planes one meta node holds (idle) | %d by memory, %d by CPU (80%% of %d cores) | |\n", res.CapacityByMemory, res.CapacityByCPU, m.CPUs)
	fmt.Fprintf(&b, "\nRSS counts the pages of the Kubernetes binary in every process; they are shared by every control plane of a "+
		"version (one file in the image layer), so the memory one more control plane costs is its private memory; PSS "+
		"divides the shared pages among the processes using them. Capacity by memory = MemAvailable after the idle clusters "+
		"/ private memory per control plane; by CPU = 80 %% of the cores / idle CPU per control plane.\n")
	if err := os.WriteFile(filepath.Join(dir, "clusters.md"), []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("results: %s and %s\n", name, filepath.Join(dir, "clusters.md"))
}

func fmtSeconds(v []float64) string {
	var parts []string
	for _, s := range v {
		parts = append(parts, fmt.Sprintf("%.1fs", s))
	}
	return strings.Join(parts, ", ")
}
