//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
)

// TestFleetUpgrade rolls a release over ten real business clusters (eight
// labelled env=prod, two env=dev; one prod cluster is created while the
// rollout runs) with `kok upgrade --selector env=prod --canary tier=canary
// --max-parallel 3`:
//   - the canary goes alone, then waves of three;
//   - a cluster whose apiserver image is broken fails the gate with the
//     kubelet's own reason, the rollout halts (budget 0) and `kok upgrade`
//     exits non-zero; the later waves and the dev clusters stay untouched;
//   - removing the bad image resumes the rollout, which finishes;
//   - the cluster created mid-rollout joins a wave of its own at the end;
//   - kok-manager killed mid-wave: the new one goes on from the journal, and
//     never more than three clusters upgrade at once.
//
// The clusters share one EtcdCluster (each under its own prefix and etcd
// user) so ten control planes fit on two cores.
func TestFleetUpgrade(t *testing.T) {
	cfg := sharedCluster(t)
	ctx := context.Background()
	c := metaClient(t, cfg)
	const (
		from, to = "v1.33.13", "v1.34.4"
		etcdNS   = "fleet-etcd"
		rollout  = "fleet-e2e"
		broken   = "kok.local/kube-apiserver:" + to + "-broken"
	)
	prod := []string{"fleet-p1", "fleet-p2", "fleet-p3", "fleet-p4", "fleet-p5", "fleet-p6", "fleet-p7"}
	dev := []string{"fleet-d1", "fleet-d2"}
	late := "fleet-p8"

	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: etcdNS}}); err != nil {
		t.Fatal(err)
	}
	e := &etcdv1.EtcdCluster{ObjectMeta: metav1.ObjectMeta{Name: "fleet", Namespace: etcdNS},
		Spec: etcdv1.EtcdClusterSpec{Replicas: 1, Version: "v3.6.16", EnableAuth: true}}
	if err := c.Create(ctx, e); err != nil {
		t.Fatal(err)
	}
	// Ten control planes at kok's default requests (180m each) would ask
	// for more CPU than the meta node's two cores; these idle at a few
	// millicores, and a rolling update needs room for one more pod each.
	lean := clusterv1.ComponentSpec{Resources: &corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("64Mi")}}}
	create := func(name string, labels map[string]string) *clusterv1.KubeCluster {
		t.Helper()
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			t.Fatal(err)
		}
		kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: name, Labels: labels},
			Spec: clusterv1.KubeClusterSpec{Version: from, Etcd: clusterv1.EtcdSpec{Ref: &clusterv1.EtcdRef{Name: e.Name, Namespace: etcdNS}},
				ControlPlane: clusterv1.ControlPlaneSpec{APIServer: lean, ControllerManager: lean, Scheduler: lean}}}
		if err := c.Create(ctx, kc); err != nil {
			t.Fatal(err)
		}
		return kc
	}
	all := map[string]*clusterv1.KubeCluster{}
	for i, name := range prod {
		labels := map[string]string{"env": "prod", "kok.dev/e2e": "fleet"}
		if i == 0 {
			labels["tier"] = "canary"
		}
		all[name] = create(name, labels)
	}
	for _, name := range dev {
		all[name] = create(name, map[string]string{"env": "dev", "kok.dev/e2e": "fleet"})
	}
	t.Cleanup(func() {
		_ = c.Delete(ctx, &clusterv1.ClusterUpgrade{ObjectMeta: metav1.ObjectMeta{Name: rollout}})
		for _, name := range append(append(append([]string{}, prod...), dev...), late) {
			_ = c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
		}
		_ = c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: etcdNS}})
	})
	start := time.Now()
	for _, name := range append(append([]string{}, prod...), dev...) {
		waitClusterReady(t, c, all[name], 8*time.Minute)
	}
	t.Logf("%d clusters at %s Ready in %s", len(all), from, time.Since(start).Round(time.Second))
	// The canary has a node: its gate waits for the Machine to be Ready
	// again with its kubelet at the target.
	const node = "fleet-m1"
	mustKok(t, shared.stateDir, "machine", "create", node, "--cluster", "fleet-p1")
	t.Cleanup(func() { _, _ = kok(t, shared.stateDir, "machine", "delete", node) })
	waitMachine(t, c, "fleet-p1", node, nodev1.MachineReady, 5*time.Minute)
	rulesPath, _ := kokRules(t)
	prom := startPrometheus(t, cfg, c, rulesPath)

	// Someone pushed a bad apiserver image to fleet-p2 (wave 1): the
	// running replica keeps serving, the upgrade cannot pull its image.
	patch := func(name, body string) {
		t.Helper()
		if err := c.Patch(ctx, &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: name}},
			client.RawPatch(types.MergePatchType, []byte(body))); err != nil {
			t.Fatal(err)
		}
	}
	patch("fleet-p2", `{"spec":{"controlPlane":{"apiServer":{"image":"`+broken+`"}}}}`)

	// Clusters upgrading at once, as the clusters show it: spec.version at
	// the target and the control plane not yet Ready there.
	mon := &parallelMonitor{to: to}
	stop := mon.run(c)
	defer stop()

	type result struct {
		out string
		err error
	}
	cli := make(chan result, 1)
	go func() {
		out, err := kok(t, shared.stateDir, "upgrade", "--name", rollout, "--selector", "env=prod", "--to", to,
			"--canary", "tier=canary", "--max-parallel", "3", "--health-timeout", "8m", "--timeout", "30m")
		cli <- result{out, err}
	}()
	// A prod cluster created while the canary upgrades joins the rollout.
	upgradeStatus := func() *clusterv1.ClusterUpgrade {
		cu := &clusterv1.ClusterUpgrade{}
		if err := c.Get(ctx, client.ObjectKey{Name: rollout}, cu); err != nil {
			t.Fatal(err)
		}
		return cu
	}
	target := func(cu *clusterv1.ClusterUpgrade, name string) *clusterv1.ClusterUpgradeTarget {
		for i := range cu.Status.Clusters {
			if cu.Status.Clusters[i].Name == name {
				return &cu.Status.Clusters[i]
			}
		}
		return nil
	}
	eventually(t, 2*time.Minute, "the canary upgrading", func() error {
		cu := &clusterv1.ClusterUpgrade{}
		if err := c.Get(ctx, client.ObjectKey{Name: rollout}, cu); err != nil {
			return err
		}
		if p1 := target(cu, "fleet-p1"); p1 == nil || p1.State != clusterv1.UpgradeUpgrading {
			return fmt.Errorf("fleet-p1: %+v", p1)
		}
		return nil
	})
	all[late] = create(late, map[string]string{"env": "prod", "kok.dev/e2e": "fleet"})

	var r result
	select {
	case r = <-cli:
	case <-time.After(25 * time.Minute):
		t.Fatalf("kok upgrade still runs after 25 minutes:\n%s", describeRollout(upgradeStatus()))
	}
	t.Logf("kok upgrade returned after %s (its output is above)", time.Since(start).Round(time.Second))
	if r.err == nil {
		t.Fatal("kok upgrade exited 0 although the rollout halted")
	}
	if !strings.Contains(r.out, "fleet-p2") || !strings.Contains(r.out, "ImagePull") {
		t.Errorf("kok upgrade's output does not name fleet-p2 and its image pull failure:\n%s", r.out)
	}
	cu := upgradeStatus()
	if cu.Status.Phase != clusterv1.RolloutHalted || !meta.IsStatusConditionTrue(cu.Status.Conditions, clusterv1.ConditionHalted) {
		t.Fatalf("rollout not halted:\n%s", describeRollout(cu))
	}
	eventually(t, time.Minute, "Prometheus fires KokClusterUpgradeHalted", func() error {
		on, err := prom.fires("KokClusterUpgradeHalted", model.LabelSet{"upgrade": rollout})
		if err == nil && !on {
			return fmt.Errorf("not firing")
		}
		return err
	})
	if p2 := target(cu, "fleet-p2"); p2 == nil || p2.State != clusterv1.UpgradeFailed || !strings.Contains(p2.Message, "ImagePull") {
		t.Fatalf("fleet-p2 in the journal: %+v", p2)
	}
	// Waves by name after the canary; the late cluster gets a wave of its
	// own (the last wave had no room).
	wantWave := map[string]int32{"fleet-p1": 0, "fleet-p2": 1, "fleet-p3": 1, "fleet-p4": 1, "fleet-p5": 2, "fleet-p6": 2, "fleet-p7": 2, late: 3}
	for name, w := range wantWave {
		if tg := target(cu, name); tg == nil || tg.Wave != w {
			t.Errorf("%s: want wave %d, journal has %+v", name, w, tg)
		}
	}
	// The clusters already on their way when it halted finish; nothing
	// else starts.
	eventually(t, 8*time.Minute, "the rest of wave 1 upgraded, nothing more started", func() error {
		cu := upgradeStatus()
		for _, name := range []string{"fleet-p1", "fleet-p3", "fleet-p4"} {
			if tg := target(cu, name); tg == nil || tg.State != clusterv1.UpgradeSucceeded {
				return fmt.Errorf("%s: %+v", name, tg)
			}
		}
		return nil
	})
	// The canary passed its gate with its node at the target.
	if p1 := target(cu, "fleet-p1"); p1 == nil || !slices.Contains(p1.HealthyAtStart, "machine/"+node) {
		t.Errorf("fleet-p1's journal does not gate on its Machine: %+v", p1)
	}
	if m := getMachine(t, c, "fleet-p1", node); m.Status.KubeletVersion != to || !meta.IsStatusConditionTrue(m.Status.Conditions, nodev1.MachineReady) {
		t.Errorf("fleet-p1 passed its gate with Machine %s at kubelet %s, %s", node, m.Status.KubeletVersion, describeConditions(m.Status.Conditions))
	}
	cu = upgradeStatus()
	if cu.Status.Phase != clusterv1.RolloutHalted {
		t.Fatalf("rollout no longer halted:\n%s", describeRollout(cu))
	}
	for _, name := range []string{"fleet-p5", "fleet-p6", "fleet-p7", late, "fleet-d1", "fleet-d2"} {
		if kc := getCluster(t, c, name, name); kc.Spec.Version != from {
			t.Errorf("%s was touched by the halted rollout: spec.version %s", name, kc.Spec.Version)
		}
	}

	// The fix: drop the bad image. fleet-p2 passes the gate, the rollout
	// resumes; kok-manager is killed while wave 2 runs.
	patch("fleet-p2", `{"spec":{"controlPlane":{"apiServer":{"image":null}}}}`)
	eventually(t, 8*time.Minute, "wave 2 upgrading", func() error {
		cu := &clusterv1.ClusterUpgrade{}
		if err := c.Get(ctx, client.ObjectKey{Name: rollout}, cu); err != nil {
			return err
		}
		if p5 := target(cu, "fleet-p5"); p5 == nil || p5.State != clusterv1.UpgradeUpgrading {
			return fmt.Errorf("fleet-p5: %+v (%s)", p5, cu.Status.Summary)
		}
		return nil
	})
	before := upgradeStatus()
	var mgr corev1.PodList
	if err := c.List(ctx, &mgr, client.InNamespace("kok-system"), client.MatchingLabels{"app.kubernetes.io/name": "kok", "app.kubernetes.io/component": "manager"}); err != nil || len(mgr.Items) == 0 {
		t.Fatalf("kok-manager pods: %v (%d)", err, len(mgr.Items))
	}
	for i := range mgr.Items {
		if err := c.Delete(ctx, &mgr.Items[i], client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("kok-manager killed mid-wave 2 (%s)", before.Status.Summary)

	if _, err := kok(t, shared.stateDir, "upgrade", "status", "-w", rollout); err != nil {
		t.Fatalf("the rollout did not finish: %v\n%s", err, describeRollout(upgradeStatus()))
	}
	cu = upgradeStatus()
	if cu.Status.Phase != clusterv1.RolloutSucceeded || cu.Status.Failed != 0 {
		t.Fatalf("rollout:\n%s", describeRollout(cu))
	}
	for _, name := range append(append([]string{}, prod...), late) {
		kc := getCluster(t, c, name, name)
		if kc.Spec.Version != to || kc.Status.Version != to || !meta.IsStatusConditionTrue(kc.Status.Conditions, clusterv1.ConditionReady) {
			t.Errorf("%s: spec %s, status %s, Ready %v", name, kc.Spec.Version, kc.Status.Version, meta.IsStatusConditionTrue(kc.Status.Conditions, clusterv1.ConditionReady))
		}
		// Started once: the start the journal had before the kill stands.
		if b := target(before, name); b != nil && b.StartTime != nil {
			if a := target(cu, name); a == nil || a.StartTime == nil || !a.StartTime.Equal(b.StartTime) {
				t.Errorf("%s started again after kok-manager's restart: %v → %v", name, b.StartTime, a)
			}
		}
	}
	for _, name := range dev {
		if kc := getCluster(t, c, name, name); kc.Spec.Version != from || kc.Status.Version != from {
			t.Errorf("dev cluster %s changed: spec %s, status %s", name, kc.Spec.Version, kc.Status.Version)
		}
	}
	if n := mon.max(); n > 3 {
		t.Errorf("%d clusters upgraded at once (maxParallel 3): %s", n, mon.when())
	} else {
		t.Logf("at most %d clusters upgraded at once (maxParallel 3)", n)
	}
	t.Logf("rollout of %d clusters finished %s after it started", len(prod)+1, time.Since(start).Round(time.Second))
	wide := mustKok(t, shared.stateDir, "get", "clusters", "-o", "wide", "-l", "kok.dev/e2e=fleet")
	for _, name := range append(append([]string{late}, prod...), dev...) {
		if !strings.Contains(wide, name) {
			t.Errorf("kok get clusters -o wide does not list %s", name)
		}
	}
}

// describeRollout is a rollout's journal, a line per cluster.
func describeRollout(cu *clusterv1.ClusterUpgrade) string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s, wave %d/%d: %s\n", cu.Status.Phase, cu.Status.Wave, cu.Status.Waves, cu.Status.Summary)
	for _, tg := range cu.Status.Clusters {
		fmt.Fprintf(&b, "  %s/%s wave %d %s: %s\n", tg.Namespace, tg.Name, tg.Wave, tg.State, tg.Message)
	}
	return b.String()
}

// parallelMonitor samples the clusters labelled kok.dev/e2e=fleet and
// keeps the largest number seen upgrading at once: spec.version at the
// target while the control plane is not Ready at it.
type parallelMonitor struct {
	to      string
	mu      sync.Mutex
	most    int
	mostSet []string
}

func (m *parallelMonitor) run(c client.Client) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var list clusterv1.KubeClusterList
			if err := c.List(ctx, &list, client.MatchingLabels{"kok.dev/e2e": "fleet"}); err == nil {
				var upgrading []string
				for _, kc := range list.Items {
					if kc.Spec.Version == m.to && (kc.Status.Version != m.to || !meta.IsStatusConditionTrue(kc.Status.Conditions, clusterv1.ConditionReady)) {
						upgrading = append(upgrading, kc.Name)
					}
				}
				m.mu.Lock()
				if len(upgrading) > m.most {
					m.most, m.mostSet = len(upgrading), upgrading
				}
				m.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	return func() { cancel(); <-done }
}

func (m *parallelMonitor) max() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.most
}

func (m *parallelMonitor) when() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.mostSet, ", ")
}
