package main

import (
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
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/clusterctl"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/local"
)

// FleetResult is what the fleet benchmark writes (issue: fleet): one meta
// cluster holding Total KubeClusters, Live of them running and the rest
// hibernated, all on one shared EtcdCluster.
type FleetResult struct {
	Benchmark string    `json:"benchmark"`
	Time      time.Time `json:"time"`
	Commit    string    `json:"commit"`
	Machine   Machine   `json:"machine"`
	Total     int       `json:"total"`
	Live      int       `json:"live"`
	// LiveReadySeconds: the live clusters applied at once → all Ready.
	LiveReadySeconds float64 `json:"liveReadySeconds"`
	// CreateSeconds: the hibernated clusters applied (CreateWorkers
	// clients) → every one reconciled (phase Hibernated).
	CreateSeconds float64 `json:"createSeconds"`
	CreateWorkers int     `json:"createWorkers"`
	// Manager before any cluster, and idle with the whole fleet.
	ManagerBefore Usage `json:"managerBefore"`
	ManagerFleet  Usage `json:"managerFleet"`
	// Per managed cluster: (fleet − before) / Total.
	PerClusterMilliCPU float64 `json:"perClusterMilliCPU"`
	PerClusterMiB      float64 `json:"perClusterMiB"`
	// MetaRSSMiB: the meta cluster's own processes with the fleet.
	MetaRSSMiB map[string]int `json:"metaRSSMiB"`
	// Burst: a spec change to every hibernated cluster at once; seconds from
	// each one's patch to its status.observedGeneration catching up.
	BurstChanges int     `json:"burstChanges"`
	BurstSendS   float64 `json:"burstSendSeconds"`
	BurstP50     float64 `json:"burstP50Seconds"`
	BurstP99     float64 `json:"burstP99Seconds"`
	BurstMax     float64 `json:"burstMaxSeconds"`
	// Restart: the kok-manager pod deleted → its successor reconciled every
	// cluster once (controller_runtime_reconcile_total); Deployments the
	// restart changed (want 0).
	RestartSeconds float64 `json:"restartSeconds"`
	RestartChanged int     `json:"restartChangedDeployments"`
	// LiveRollout: the live clusters, canary (3 apiservers, a client
	// using it) then waves of LiveMaxParallel.
	LiveMaxParallel int           `json:"liveMaxParallel"`
	LiveRollout     RolloutResult `json:"liveRollout"`
	CanaryRequests  int64         `json:"canaryRequests"`
	CanaryFailed    int64         `json:"canaryFailed"`
	// FleetRollout: every cluster (the live ones already at the target).
	FleetMaxParallel int           `json:"fleetMaxParallel"`
	FleetRollout     RolloutResult `json:"fleetRollout"`
	// WakeSeconds: a hibernated cluster the fleet rollout gave the target,
	// woken → Ready at the target.
	WakeSeconds float64 `json:"wakeSeconds"`
	WakeVersion string  `json:"wakeVersion"`
	Err         string  `json:"error,omitempty"`
}

// Usage is kok-manager's resident memory and CPU over a window.
type Usage struct {
	RSSMiB    int     `json:"rssMiB"`
	MilliCPU  float64 `json:"milliCPU"`
	WindowSec float64 `json:"windowSeconds"`
}

// RolloutResult is a ClusterUpgrade's outcome.
type RolloutResult struct {
	Seconds float64        `json:"seconds"`
	Phase   string         `json:"phase"`
	States  map[string]int `json:"states"`
	// WaveSeconds: first start → last finish of each wave that upgraded
	// something.
	WaveSeconds []float64 `json:"waveSeconds,omitempty"`
	Waves       int32     `json:"waves"`
}

const (
	fleetFrom, fleetTo = "v1.33.13", "v1.34.4"
	fleetEtcdNS        = "fleet-etcd"
)

func benchFleet(out, kokBin, cacheDir string, total, live int) {
	res := &FleetResult{Benchmark: "fleet", Time: time.Now().UTC(), Commit: gitCommit(), Machine: machine(),
		Total: total, Live: live, CreateWorkers: 8, LiveMaxParallel: 5, FleetMaxParallel: 100}
	res.Err = onMetaCluster("fleet", kokBin, cacheDir, func(ctx context.Context, c client.Client, cfg *local.Config) error {
		return runFleetBench(ctx, res, c, cfg)
	})
	writeFleet(out, res)
}

func liveName(i int) string  { return fmt.Sprintf("live-%02d", i) }
func sleepName(i int) string { return fmt.Sprintf("sleep-%04d", i) }

func runFleetBench(ctx context.Context, res *FleetResult, c client.Client, cfg *local.Config) error {
	var err error
	time.Sleep(20 * time.Second)
	if res.ManagerBefore, err = managerUsage(ctx, c, time.Minute); err != nil {
		return err
	}
	fmt.Printf("kok-manager before: %+v\n", res.ManagerBefore)
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fleetEtcdNS}}); err != nil {
		return err
	}
	e := &etcdv1.EtcdCluster{ObjectMeta: metav1.ObjectMeta{Name: "fleet", Namespace: fleetEtcdNS},
		Spec: etcdv1.EtcdClusterSpec{Replicas: 1, Version: "v3.6.16", EnableAuth: true}}
	if err := c.Create(ctx, e); err != nil {
		return err
	}
	// kok's default requests (180m per control plane) would let only ten
	// control planes onto two cores; these idle at a few millicores.
	lean := clusterv1.ComponentSpec{Resources: &corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("5m"), corev1.ResourceMemory: resource.MustParse("64Mi")}}}
	newCluster := func(name string, labels map[string]string, hibernated bool, replicas int32) error {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			return err
		}
		cp := clusterv1.ControlPlaneSpec{Replicas: replicas, APIServer: lean, ControllerManager: lean, Scheduler: lean}
		if labels["canary"] == "true" {
			// The canary keeps kok's default requests: CPU is shared by
			// requests when the node is saturated, and its client is to
			// measure the upgrade, not the other nineteen's load.
			cp = clusterv1.ControlPlaneSpec{Replicas: replicas}
		}
		kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: name, Labels: labels},
			Spec: clusterv1.KubeClusterSpec{Version: fleetFrom, Hibernated: hibernated, ControlPlane: cp,
				Etcd: clusterv1.EtcdSpec{Ref: &clusterv1.EtcdRef{Name: e.Name, Namespace: fleetEtcdNS}}}}
		return retryTransient(ctx, func() error { return c.Create(ctx, kc) })
	}

	// The hibernated ones first, from several clients: taken on while
	// the node is idle, their creation measures kok-manager rather than
	// twenty control planes competing for the node's two cores.
	sleeping := res.Total - res.Live
	start := time.Now()
	if err := parallel(res.CreateWorkers, sleeping, func(i int) error {
		return newCluster(sleepName(i), map[string]string{"fleet": "bench", "tier": "sleeping"}, true, 1)
	}); err != nil {
		return err
	}
	sent := time.Since(start)
	if err := waitFleet(ctx, c, "tier=sleeping", sleeping, 30*time.Minute, func(kc *clusterv1.KubeCluster) bool {
		return kc.Status.ObservedGeneration == kc.Generation && kc.Status.Phase == clusterv1.PhaseHibernated
	}); err != nil {
		return fmt.Errorf("hibernated clusters: %w", err)
	}
	res.CreateSeconds = time.Since(start).Seconds()
	fmt.Printf("%d hibernated clusters applied in %.0fs, all reconciled after %.0fs\n", sleeping, sent.Seconds(), res.CreateSeconds)

	// Then the live clusters, all at once; the canary runs three apiservers.
	start = time.Now()
	for i := range res.Live {
		labels, replicas := map[string]string{"fleet": "bench", "tier": "live"}, int32(1)
		if i == 0 {
			labels["canary"], replicas = "true", 3
		}
		if err := newCluster(liveName(i), labels, false, replicas); err != nil {
			return err
		}
	}
	if err := waitFleet(ctx, c, "tier=live", res.Live, 15*time.Minute, func(kc *clusterv1.KubeCluster) bool {
		return meta.IsStatusConditionTrue(kc.Status.Conditions, clusterv1.ConditionReady)
	}); err != nil {
		return fmt.Errorf("live clusters: %w", err)
	}
	res.LiveReadySeconds = time.Since(start).Seconds()
	fmt.Printf("%d live clusters Ready in %.0fs\n", res.Live, res.LiveReadySeconds)

	time.Sleep(time.Minute)
	if res.ManagerFleet, err = managerUsage(ctx, c, 2*time.Minute); err != nil {
		return err
	}
	res.PerClusterMilliCPU = (res.ManagerFleet.MilliCPU - res.ManagerBefore.MilliCPU) / float64(res.Total)
	res.PerClusterMiB = float64(res.ManagerFleet.RSSMiB-res.ManagerBefore.RSSMiB) / float64(res.Total)
	res.MetaRSSMiB = rss(cfg.StateDir)
	fmt.Printf("kok-manager with the fleet: %+v (%.2f mCPU, %.2f MiB per cluster); meta %v\n", res.ManagerFleet, res.PerClusterMilliCPU, res.PerClusterMiB, res.MetaRSSMiB)

	if err := burst(ctx, c, res, sleeping); err != nil {
		return fmt.Errorf("burst: %w", err)
	}
	if err := restartManager(ctx, c, res); err != nil {
		return fmt.Errorf("restart: %w", err)
	}

	// The live clusters' rollout, a client on the canary throughout.
	canary := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: liveName(0), Namespace: liveName(0)}}
	bc, err := businessClient(ctx, c, canary)
	if err != nil {
		return err
	}
	l := startLoad(ctx, bc)
	live, err := rollout(ctx, c, "bench-live", "tier=live", "canary=true", int32(res.LiveMaxParallel), 45*time.Minute)
	requests, failed := l.stop()
	if err != nil {
		// An unfinished rollout (and its client's requests cut by the
		// stop) is not a result.
		return fmt.Errorf("live rollout: %w", err)
	}
	res.LiveRollout, res.CanaryRequests, res.CanaryFailed = live, requests+failed, failed
	fmt.Printf("live rollout: %+v; canary client %d requests, %d failed\n", res.LiveRollout, res.CanaryRequests, res.CanaryFailed)

	all, err := rollout(ctx, c, "bench-fleet", "fleet=bench", "", int32(res.FleetMaxParallel), 45*time.Minute)
	if err != nil {
		return fmt.Errorf("fleet rollout: %w", err)
	}
	res.FleetRollout = all
	fmt.Printf("fleet rollout: %+v\n", res.FleetRollout)

	// One of the hibernated clusters wakes at the target.
	name := sleepName(0)
	start = time.Now()
	if err := c.Patch(ctx, &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: name}},
		client.RawPatch(types.MergePatchType, []byte(`{"spec":{"hibernated":false}}`))); err != nil {
		return err
	}
	kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: name}}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := clusterctl.Wait(wctx, c, kc, io.Discard); err != nil {
		return fmt.Errorf("waking %s: %w", name, err)
	}
	res.WakeSeconds = time.Since(start).Seconds()
	if err := c.Get(ctx, client.ObjectKeyFromObject(kc), kc); err != nil {
		return err
	}
	res.WakeVersion = kc.Status.Version
	fmt.Printf("%s woke at %s in %.1fs\n", name, res.WakeVersion, res.WakeSeconds)
	return nil
}

// retryTransient retries f while the meta apiserver sheds load.
func retryTransient(ctx context.Context, f func() error) error {
	var err error
	for range 10 {
		if err = f(); err == nil || !strings.Contains(err.Error(), "rate") && !strings.Contains(err.Error(), "timeout") && !strings.Contains(err.Error(), "connection") {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return err
}

// parallel runs f(0..n-1) on workers goroutines; the first error wins.
func parallel(workers, n int, f func(int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs error
		next = make(chan int)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if errs == nil {
						errs = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errs
}

// waitFleet waits until want clusters matching selector pass ok.
func waitFleet(ctx context.Context, c client.Client, selector string, want int, timeout time.Duration, ok func(*clusterv1.KubeCluster) bool) error {
	sel, err := metav1.ParseToLabelSelector(selector)
	if err != nil {
		return err
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return err
	}
	last := 0
	err = wait.PollUntilContextTimeout(ctx, 2*time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		var l clusterv1.KubeClusterList
		if err := c.List(ctx, &l, client.MatchingLabelsSelector{Selector: s}); err != nil {
			return false, nil
		}
		n := 0
		for i := range l.Items {
			if ok(&l.Items[i]) {
				n++
			}
		}
		if n != last {
			fmt.Printf("  %s: %d/%d\n", selector, n, want)
			last = n
		}
		return n >= want, nil
	})
	if err != nil {
		return fmt.Errorf("%d of %d clusters (%s) got there: %w", last, want, selector, err)
	}
	return nil
}

// managerPod is the running kok-manager pod.
func managerPod(ctx context.Context, c client.Client) (*corev1.Pod, error) {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace("kok-system"), client.MatchingLabels{"app.kubernetes.io/name": "kok", "app.kubernetes.io/component": "manager"}); err != nil {
		return nil, err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no running kok-manager pod")
}

// managerUsage reads kok-manager's RSS and its CPU over window, from
// /proc (the meta node is this host).
func managerUsage(ctx context.Context, c client.Client, window time.Duration) (Usage, error) {
	p, err := managerPod(ctx, c)
	if err != nil {
		return Usage{}, err
	}
	pids := podPIDs(p.UID)[p.UID]
	if len(pids) == 0 {
		return Usage{}, fmt.Errorf("no process of pod %s found", p.Name)
	}
	u := Usage{WindowSec: window.Seconds(), MilliCPU: cpuMillicores(pids, window)}
	for _, pid := range pids {
		u.RSSMiB += procStatusKB(pid, "VmRSS:") >> 10
	}
	return u, nil
}

// podPIDs are the processes in each pod's cgroup (the pause process
// too), by pod UID.
func podPIDs(uids ...types.UID) map[types.UID][]int {
	out := map[types.UID][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err != nil {
			continue
		}
		for _, uid := range uids {
			if strings.Contains(string(data), "pod"+string(uid)) {
				out[uid] = append(out[uid], pid)
				break
			}
		}
	}
	return out
}

// cpuMillicores is the CPU the processes use over window (it sleeps).
func cpuMillicores(pids []int, window time.Duration) float64 {
	ticks := func() float64 {
		var t float64
		for _, pid := range pids {
			t += procCPUTicks(pid)
		}
		return t
	}
	before := ticks()
	time.Sleep(window)
	// USER_HZ is 100 on Linux.
	return (ticks() - before) / 100 / window.Seconds() * 1000
}

// burst changes the spec of every hibernated cluster (an apiserver flag;
// nothing runs, so nothing rolls) and times how long each takes to be
// reconciled: its patch → status.observedGeneration at the new generation.
func burst(ctx context.Context, c client.Client, res *FleetResult, n int) error {
	type mark struct {
		sent time.Time
		gen  int64
	}
	var mu sync.Mutex
	sent := map[string]mark{}
	start := time.Now()
	if err := parallel(res.CreateWorkers, n, func(i int) error {
		name := sleepName(i)
		kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: name}}
		t := time.Now()
		if err := retryTransient(ctx, func() error {
			return c.Patch(ctx, kc, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"controlPlane":{"apiServer":{"extraArgs":{"event-ttl":"2h"}}}}}`)))
		}); err != nil {
			return err
		}
		mu.Lock()
		sent[name] = mark{t, kc.Generation}
		mu.Unlock()
		return nil
	}); err != nil {
		return err
	}
	res.BurstChanges, res.BurstSendS = n, time.Since(start).Seconds()
	done := map[string]float64{}
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 20*time.Minute, true, func(ctx context.Context) (bool, error) {
		var l clusterv1.KubeClusterList
		if err := c.List(ctx, &l, client.MatchingLabels{"tier": "sleeping"}); err != nil {
			return false, nil
		}
		now := time.Now()
		for _, kc := range l.Items {
			m, ok := sent[kc.Name]
			if _, seen := done[kc.Name]; ok && !seen && kc.Status.ObservedGeneration >= m.gen {
				done[kc.Name] = now.Sub(m.sent).Seconds()
			}
		}
		return len(done) >= n, nil
	})
	if err != nil {
		return fmt.Errorf("%d of %d changes reconciled: %w", len(done), n, err)
	}
	var lat []float64
	for _, s := range done {
		lat = append(lat, s)
	}
	slices.Sort(lat)
	res.BurstP50, res.BurstP99, res.BurstMax = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	fmt.Printf("burst of %d changes (sent in %.1fs): p50 %.1fs p99 %.1fs max %.1fs\n", n, res.BurstSendS, res.BurstP50, res.BurstP99, res.BurstMax)
	return nil
}

// restartManager deletes the kok-manager pod and times its successor
// reconciling every KubeCluster, then checks no Deployment changed.
func restartManager(ctx context.Context, c client.Client, res *FleetResult) error {
	gens := func() (map[string]int64, error) {
		var l metav1.PartialObjectMetadataList
		l.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("DeploymentList"))
		if err := c.List(ctx, &l, client.MatchingLabels{kube.LabelManagedBy: kube.ManagedBy}); err != nil {
			return nil, err
		}
		out := map[string]int64{}
		for _, d := range l.Items {
			out[d.Namespace+"/"+d.Name] = d.Generation
		}
		return out, nil
	}
	before, err := gens()
	if err != nil {
		return err
	}
	old, err := managerPod(ctx, c)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := c.Delete(ctx, old); err != nil {
		return err
	}
	err = wait.PollUntilContextTimeout(ctx, time.Second, 20*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := managerPod(ctx, c)
		if err != nil || p.UID == old.UID {
			return false, nil
		}
		n, err := reconciled(ctx, p.Status.PodIP, "kubecluster")
		if err != nil {
			return false, nil
		}
		return n >= float64(res.Total), nil
	})
	if err != nil {
		return err
	}
	res.RestartSeconds = time.Since(start).Seconds()
	time.Sleep(10 * time.Second)
	after, err := gens()
	if err != nil {
		return err
	}
	for k, g := range after {
		if before[k] != g {
			res.RestartChanged++
		}
	}
	fmt.Printf("kok-manager restarted: every cluster reconciled after %.1fs, %d Deployments changed (of %d)\n", res.RestartSeconds, res.RestartChanged, len(after))
	return nil
}

// reconciled is controller_runtime_reconcile_total of one controller (all
// results), read from a kok-manager pod's metrics endpoint.
func reconciled(ctx context.Context, podIP, controller string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+podIP+":8080/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	var p expfmt.TextParser
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, m := range families["controller_runtime_reconcile_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "controller" && l.GetValue() == controller {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum, nil
}

// rollout runs a ClusterUpgrade to fleetTo and waits for it to finish.
func rollout(ctx context.Context, c client.Client, name, selector, canary string, maxParallel int32, timeout time.Duration) (RolloutResult, error) {
	var r RolloutResult
	start := time.Now()
	if _, err := clusterctl.StartUpgrade(ctx, c, clusterctl.UpgradeOptions{Name: name, Selector: selector, Canary: canary, To: fleetTo, MaxParallel: maxParallel}); err != nil {
		return r, err
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := clusterctl.WatchUpgrade(wctx, c, name, os.Stdout)
	r.Seconds = time.Since(start).Seconds()
	cu := &clusterv1.ClusterUpgrade{}
	if gerr := c.Get(ctx, client.ObjectKey{Name: name}, cu); gerr != nil {
		return r, gerr
	}
	r.Phase, r.Waves, r.States = cu.Status.Phase, cu.Status.Waves, map[string]int{}
	first, last := map[int32]time.Time{}, map[int32]time.Time{}
	for _, t := range cu.Status.Clusters {
		r.States[t.State]++
		if t.State != clusterv1.UpgradeSucceeded || t.StartTime == nil || t.FinishTime == nil {
			continue
		}
		if f, ok := first[t.Wave]; !ok || t.StartTime.Before(&metav1.Time{Time: f}) {
			first[t.Wave] = t.StartTime.Time
		}
		if l, ok := last[t.Wave]; !ok || t.FinishTime.After(l) {
			last[t.Wave] = t.FinishTime.Time
		}
	}
	for w := int32(0); w < r.Waves; w++ {
		if f, ok := first[w]; ok {
			r.WaveSeconds = append(r.WaveSeconds, last[w].Sub(f).Seconds())
		}
	}
	return r, err
}

func writeFleet(dir string, res *FleetResult) {
	name := saveJSON(dir, "fleet", res.Time, res.Commit, res)
	var b strings.Builder
	m := res.Machine
	fmt.Fprintf(&b, "# Fleet benchmark\n\nLatest run: %s, commit %s, %d CPUs %s, %d GiB (JSON beside this file). "+
		"One meta cluster, %d KubeClusters on one shared EtcdCluster (1 member, auth on: each cluster its own prefix and etcd user): "+
		"%d running (v1.33.13; the canary with 3 replicas of each component and kok's default requests, the others with requests of 5m CPU and 64Mi per component so they fit on the node), %d created hibernated.\n\n",
		res.Time.Format("2006-01-02 15:04"), res.Commit, m.CPUs, m.CPUModel, m.MemoryGiB, res.Total, res.Live, res.Total-res.Live)
	if res.Err != "" {
		fmt.Fprintf(&b, "**The run failed:** %s\n\n", res.Err)
	}
	fmt.Fprintf(&b, "| | result | goal |\n|---|---|---|\n")
	if res.CreateSeconds > 0 {
		fmt.Fprintf(&b, "| %d hibernated clusters applied (%d clients) → all reconciled | %.0fs | |\n", res.Total-res.Live, res.CreateWorkers, res.CreateSeconds)
	}
	if res.LiveReadySeconds > 0 {
		fmt.Fprintf(&b, "| then %d running clusters applied at once → all Ready | %.0fs | |\n", res.Live, res.LiveReadySeconds)
	}
	if res.ManagerBefore.WindowSec > 0 {
		fmt.Fprintf(&b, "| kok-manager before any cluster (idle, %.0fs window) | %d MiB RSS, %.1f mCPU | |\n", res.ManagerBefore.WindowSec, res.ManagerBefore.RSSMiB, res.ManagerBefore.MilliCPU)
	}
	if res.ManagerFleet.WindowSec > 0 {
		fmt.Fprintf(&b, "| kok-manager with %d clusters (idle, %.0fs window) | %d MiB RSS, %.1f mCPU | |\n", res.Total, res.ManagerFleet.WindowSec, res.ManagerFleet.RSSMiB, res.ManagerFleet.MilliCPU)
		fmt.Fprintf(&b, "| kok-manager per managed cluster | **%.2f mCPU, %.2f MiB** | ≤ 3 mCPU, ≤ 2 MiB (Kamaji ≈ 12 mCPU, 6 MiB per tenant) |\n", res.PerClusterMilliCPU, res.PerClusterMiB)
	}
	if len(res.MetaRSSMiB) > 0 {
		var parts []string
		for _, c := range append(append([]string(nil), local.ComponentNames...), "total") {
			parts = append(parts, fmt.Sprintf("%s %d", c, res.MetaRSSMiB[c]))
		}
		fmt.Fprintf(&b, "| meta cluster processes with the fleet (RSS MiB) | %s | |\n", strings.Join(parts, ", "))
	}
	if res.BurstChanges > 0 {
		fmt.Fprintf(&b, "| burst: a spec change to %d clusters at once (sent in %.1fs) → each reconciled | p50 %.1fs, p99 %.1fs, max %.1fs | |\n", res.BurstChanges, res.BurstSendS, res.BurstP50, res.BurstP99, res.BurstMax)
	}
	if res.RestartSeconds > 0 {
		fmt.Fprintf(&b, "| kok-manager pod deleted → the new one reconciled all %d | %.1fs; %d Deployments changed | 0 changed |\n", res.Total, res.RestartSeconds, res.RestartChanged)
	}
	if res.LiveRollout.Seconds > 0 {
		fmt.Fprintf(&b, "| rollout of the %d running clusters (canary, then waves of %d) | %.0fs, %s; %v; per wave %s | 0 failed |\n",
			res.Live, res.LiveMaxParallel, res.LiveRollout.Seconds, res.LiveRollout.Phase, res.LiveRollout.States, fmtSeconds(res.LiveRollout.WaveSeconds))
		fmt.Fprintf(&b, "| a client on the canary (3 apiservers) during that rollout | %d failed of %d requests | 0 failed |\n", res.CanaryFailed, res.CanaryRequests)
	}
	if res.FleetRollout.Seconds > 0 {
		fmt.Fprintf(&b, "| rollout of all %d (maxParallel %d) | %.0fs, %s; %v in %d waves | |\n",
			res.Total, res.FleetMaxParallel, res.FleetRollout.Seconds, res.FleetRollout.Phase, res.FleetRollout.States, res.FleetRollout.Waves)
	}
	if res.WakeSeconds > 0 {
		fmt.Fprintf(&b, "| a hibernated cluster woken after it → Ready | %.1fs, at %s | |\n", res.WakeSeconds, res.WakeVersion)
	}
	if res.Err != "" {
		fmt.Fprintf(&b, "\nRows missing from the table were not reached before the run stopped.\n")
	}
	fmt.Fprintf(&b, "\nHibernated clusters are not gated: nothing runs to check, so the rollout sets their spec.version and counts them "+
		"`Hibernated`; each wakes at the target, and its own operator then brings the control plane up in order (apiservers first). "+
		"Running clusters already at the target are `Skipped`, never downgraded. Per-cluster cost = (kok-manager with the fleet − "+
		"before) / clusters, RSS and CPU of the kok-manager pod's processes read from /proc over the window.\n")
	if err := os.WriteFile(filepath.Join(dir, "fleet.md"), []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("results: %s and %s\n", name, filepath.Join(dir, "fleet.md"))
}
