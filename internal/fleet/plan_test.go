package fleet

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	addonv1 "github.com/kubeonkube/kok/api/addon/v1alpha1"
	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/cluster"
)

var t0 = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

// fleetOf is n selected clusters c0…c(n-1) at v1.33.13, the first
// `canaries` of them canaries.
func fleetOf(n, canaries int) []Cluster {
	var cs []Cluster
	for i := range n {
		cs = append(cs, Cluster{Namespace: "ns", Name: fmt.Sprintf("c%d", i), Selected: true, Canary: i < canaries,
			Version: "v1.33.13", Window: true})
	}
	return cs
}

func states(p Plan) string {
	var out []string
	for _, t := range p.Targets {
		out = append(out, fmt.Sprintf("%s:%d:%s", t.Name, t.Wave, t.State))
	}
	return strings.Join(out, " ")
}

// step runs a pass and applies its Start to the clusters, as the
// controller does.
func step(spec clusterv1.ClusterUpgradeSpec, targets []clusterv1.ClusterUpgradeTarget, cs []Cluster, now time.Time) Plan {
	p := PlanRollout(PlanInput{Spec: spec, Targets: targets, Clusters: cs, Now: now})
	for _, k := range p.Start {
		for i := range cs {
			if cs[i].key() == k {
				cs[i].Version = spec.To
			}
		}
	}
	return p
}

func healthy(cs []Cluster, names ...string) {
	for i := range cs {
		for _, n := range names {
			if cs[i].Name == n {
				cs[i].Health = Health{Healthy: true}
			}
		}
	}
}

func TestRolloutCanaryThenWaves(t *testing.T) {
	spec := clusterv1.ClusterUpgradeSpec{To: "v1.34.4", MaxParallel: 2, Canary: &metav1.LabelSelector{}}
	cs := fleetOf(5, 1)
	p := step(spec, nil, cs, t0)
	if got, want := states(p), "c0:0:Upgrading c1:1:Pending c2:1:Pending c3:2:Pending c4:2:Pending"; got != want {
		t.Fatalf("first pass: %s, want %s", got, want)
	}
	if p.Waves != 3 || p.Wave != 0 || len(p.Start) != 1 || p.Start[0] != "ns/c0" {
		t.Fatalf("waves %d wave %d start %v", p.Waves, p.Wave, p.Start)
	}
	// Nothing else starts while the canary is not healthy.
	cs[0].Health = Health{Waiting: "not Ready"}
	p = step(spec, p.Targets, cs, t0.Add(time.Minute))
	if got := states(p); !strings.Contains(got, "c1:1:Pending") || len(p.Start) != 0 || p.Targets[0].Message != "not Ready" {
		t.Fatalf("canary not healthy yet: %s, start %v, message %q", got, p.Start, p.Targets[0].Message)
	}
	healthy(cs, "c0")
	p = step(spec, p.Targets, cs, t0.Add(2*time.Minute))
	if got, want := states(p), "c0:0:Succeeded c1:1:Upgrading c2:1:Upgrading c3:2:Pending c4:2:Pending"; got != want {
		t.Fatalf("after the canary: %s, want %s", got, want)
	}
	healthy(cs, "c1")
	p = step(spec, p.Targets, cs, t0.Add(3*time.Minute))
	if got, want := states(p), "c0:0:Succeeded c1:1:Succeeded c2:1:Upgrading c3:2:Pending c4:2:Pending"; got != want {
		t.Fatalf("a wave waits for all of it: %s, want %s", got, want)
	}
	healthy(cs, "c2", "c3", "c4")
	p = step(spec, p.Targets, cs, t0.Add(4*time.Minute))
	p = step(spec, p.Targets, cs, t0.Add(5*time.Minute))
	if got, want := states(p), "c0:0:Succeeded c1:1:Succeeded c2:1:Succeeded c3:2:Succeeded c4:2:Succeeded"; got != want || !p.Done {
		t.Fatalf("done: %s (done %t), want %s", got, p.Done, want)
	}
}

func TestRolloutHaltsOnFailureAndResumesAfterFix(t *testing.T) {
	spec := clusterv1.ClusterUpgradeSpec{To: "v1.34.4", MaxParallel: 2, HealthTimeout: &metav1.Duration{Duration: 5 * time.Minute}}
	cs := fleetOf(4, 0)
	p := step(spec, nil, cs, t0)
	cs[0].Health = Health{Failing: "pod c0-apiserver: container kube-apiserver ImagePullBackOff"}
	healthy(cs, "c1")
	p = step(spec, p.Targets, cs, t0.Add(time.Minute))
	if !p.Halted || p.Failed != 1 || len(p.Start) != 0 || !strings.Contains(p.Targets[0].Message, "ImagePullBackOff") {
		t.Fatalf("halted %t failed %d start %v: %s", p.Halted, p.Failed, p.Start, states(p))
	}
	if got, want := states(p), "c0:0:Failed c1:0:Succeeded c2:1:Pending c3:1:Pending"; got != want {
		t.Fatalf("halted: %s, want %s", got, want)
	}
	// The fix: c0 passes the gate; the rollout goes on by itself.
	healthy(cs, "c0")
	p = step(spec, p.Targets, cs, t0.Add(2*time.Minute))
	if p.Halted || states(p) != "c0:0:Succeeded c1:0:Succeeded c2:1:Upgrading c3:1:Upgrading" {
		t.Fatalf("after the fix: halted %t %s", p.Halted, states(p))
	}
	// A budget of two lets the rollout go on past two failures; a timeout
	// is a failure too.
	spec.FailureBudget = 2
	p = step(spec, p.Targets, cs, t0.Add(8*time.Minute))
	if p.Halted || p.Failed != 2 || !strings.Contains(p.Targets[2].Message, "not healthy 5m0s") {
		t.Fatalf("timeouts: halted %t failed %d %s: %q", p.Halted, p.Failed, states(p), p.Targets[2].Message)
	}
}

func TestRolloutJournal(t *testing.T) {
	spec := clusterv1.ClusterUpgradeSpec{To: "v1.34.4", MaxParallel: 1}
	cs := fleetOf(3, 0)
	p := PlanRollout(PlanInput{Spec: spec, Clusters: cs, Now: t0})
	// The pass stopped after the journal, before spec.version was set: the
	// next pass sets it, and starts nothing more (maxParallel 1).
	p = PlanRollout(PlanInput{Spec: spec, Targets: p.Targets, Clusters: cs, Now: t0.Add(time.Second)})
	if len(p.Start) != 1 || p.Start[0] != "ns/c0" || states(p) != "c0:0:Upgrading c1:1:Pending c2:2:Pending" {
		t.Fatalf("resume: start %v, %s", p.Start, states(p))
	}
	// Paused: in-flight clusters are gated, no new one starts.
	spec.Paused = true
	cs[0].Version = "v1.34.4"
	healthy(cs, "c0")
	p = PlanRollout(PlanInput{Spec: spec, Targets: p.Targets, Clusters: cs, Now: t0.Add(time.Minute)})
	if len(p.Start) != 0 || states(p) != "c0:0:Succeeded c1:1:Pending c2:2:Pending" {
		t.Fatalf("paused: start %v, %s", p.Start, states(p))
	}
}

func TestRolloutMembership(t *testing.T) {
	spec := clusterv1.ClusterUpgradeSpec{To: "v1.34.4", MaxParallel: 2, Soak: &metav1.Duration{Duration: 10 * time.Minute}}
	cs := fleetOf(3, 0)
	cs[1].Version = "v1.34.4" // at the target
	cs = append(cs, Cluster{Namespace: "ns", Name: "old", Selected: true, Version: "v1.32.9", Window: true},
		Cluster{Namespace: "ns", Name: "sleepy", Selected: true, Version: "v1.33.13", Hibernated: true, Window: true},
		Cluster{Namespace: "ns", Name: "other", Version: "v1.33.13", Window: true})
	p := step(spec, nil, cs, t0)
	if got, want := states(p), "c0:0:Upgrading c1:0:Skipped c2:0:Upgrading old:0:Skipped sleepy:1:Pending"; got != want {
		t.Fatalf("membership: %s, want %s", got, want)
	}
	if !strings.Contains(p.Targets[3].Message, "one minor version at a time") {
		t.Fatalf("two minors behind: %q", p.Targets[3].Message)
	}
	// A cluster created mid-rollout joins a wave not under way.
	cs = append(cs, Cluster{Namespace: "ns", Name: "new", Selected: true, Version: "v1.33.13", Window: true})
	healthy(cs, "c0", "c2")
	p = step(spec, p.Targets, cs, t0.Add(time.Minute))
	if got, want := states(p), "c0:0:Succeeded c1:0:Skipped c2:0:Succeeded old:0:Skipped sleepy:1:Pending new:1:Pending"; got != want {
		t.Fatalf("joined: %s, want %s", got, want)
	}
	// The soak holds wave 1 for ten minutes after wave 0 finished.
	if p.SoakUntil == nil || !p.SoakUntil.Equal(&metav1.Time{Time: t0.Add(11 * time.Minute)}) || len(p.Start) != 0 {
		t.Fatalf("soak until %v, start %v", p.SoakUntil, p.Start)
	}
	p = step(spec, p.Targets, cs, t0.Add(11*time.Minute))
	// The hibernated cluster gets the target and is done; new upgrades.
	if got, want := states(p), "c0:0:Succeeded c1:0:Skipped c2:0:Succeeded old:0:Skipped sleepy:1:Hibernated new:1:Upgrading"; got != want {
		t.Fatalf("after the soak: %s, want %s", got, want)
	}
	// A cluster that leaves the selection mid-upgrade is removed.
	cs[len(cs)-1].Selected = false
	p = step(spec, p.Targets, cs, t0.Add(12*time.Minute))
	if got := states(p); !strings.HasSuffix(got, "new:1:Removed") || !p.Done {
		t.Fatalf("removed: %s (done %t)", got, p.Done)
	}
}

func TestRolloutWindows(t *testing.T) {
	spec := clusterv1.ClusterUpgradeSpec{To: "v1.34.4", MaxParallel: 2}
	cs := fleetOf(2, 0)
	cs[1].Window, cs[1].NextWindow = false, t0.Add(3*time.Hour)
	p := step(spec, nil, cs, t0)
	if states(p) != "c0:0:Upgrading c1:0:Pending" || !strings.Contains(p.Targets[1].Message, "2026-12-03T13:00:00Z") {
		t.Fatalf("%s: %q", states(p), p.Targets[1].Message)
	}
}

func TestInWindow(t *testing.T) {
	// t0 is Thursday 10:00 UTC.
	win := func(start, dur string, days ...string) clusterv1.MaintenanceWindow {
		d, _ := time.ParseDuration(dur)
		return clusterv1.MaintenanceWindow{Start: start, Duration: metav1.Duration{Duration: d}, Days: days}
	}
	for _, tc := range []struct {
		windows []clusterv1.MaintenanceWindow
		open    bool
		next    time.Time
	}{
		{nil, true, t0},
		{[]clusterv1.MaintenanceWindow{win("09:00", "2h")}, true, t0},
		{[]clusterv1.MaintenanceWindow{win("11:00", "2h")}, false, t0.Add(time.Hour)},
		{[]clusterv1.MaintenanceWindow{win("22:00", "14h", "Wednesday")}, true, t0}, // opened yesterday
		{[]clusterv1.MaintenanceWindow{win("02:00", "1h", "Saturday")}, false, time.Date(2026, 12, 5, 2, 0, 0, 0, time.UTC)},
		{[]clusterv1.MaintenanceWindow{win("02:00", "1h", "Saturday"), win("12:00", "1h")}, false, t0.Add(2 * time.Hour)},
	} {
		open, next := InWindow(tc.windows, t0)
		if open != tc.open || (!open && !next.Equal(tc.next)) {
			t.Errorf("%v: open %t next %v, want %t %v", tc.windows, open, next, tc.open, tc.next)
		}
	}
}

func TestGate(t *testing.T) {
	ready := []metav1.Condition{{Type: clusterv1.ConditionReady, Status: metav1.ConditionTrue}}
	kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Generation: 2},
		Spec:   clusterv1.KubeClusterSpec{Version: "v1.34.4", Addons: []clusterv1.AddonRef{{Name: "coredns"}}},
		Status: clusterv1.KubeClusterStatus{ObservedGeneration: 2, Version: "v1.34.4", Conditions: ready}}
	addon := addonv1.ClusterAddon{Spec: addonv1.ClusterAddonSpec{Addon: "coredns"},
		Status: addonv1.ClusterAddonStatus{KubernetesVersion: "v1.34.4", Conditions: []metav1.Condition{{Type: addonv1.AddonHealthy, Status: metav1.ConditionTrue}}}}
	pod := func(version, reason string) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "apiserver-" + version, Annotations: map[string]string{cluster.AnnVersion: version}},
			Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "kube-apiserver",
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "back-off pulling image"}}}}}}
	}
	machine := func(name, kubelet, pinned string, ready bool) nodev1.Machine {
		st := metav1.ConditionFalse
		if ready {
			st = metav1.ConditionTrue
		}
		return nodev1.Machine{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:   nodev1.MachineSpec{Components: []nodev1.ComponentRef{{Name: "containerd"}, {Name: "kubelet", Version: pinned}}},
			Status: nodev1.MachineStatus{KubeletVersion: kubelet, Conditions: []metav1.Condition{{Type: nodev1.MachineReady, Status: st}}}}
	}
	old := kc.DeepCopy()
	old.Status.Version = "v1.33.13"
	sick := addon.DeepCopy()
	sick.Status.Conditions[0].Status = metav1.ConditionFalse
	if got := HealthyParts([]addonv1.ClusterAddon{addon, *sick}, []nodev1.Machine{machine("m2", "", "", true), machine("m1", "", "", true), machine("m3", "", "", false)}); strings.Join(got, ",") != "addon/coredns,machine/m1,machine/m2" {
		t.Errorf("HealthyParts: %v", got)
	}
	stale := addon.DeepCopy()
	stale.Status.KubernetesVersion = "v1.33.13"
	failing := stale.DeepCopy()
	failing.Status.Conditions = append(failing.Status.Conditions, metav1.Condition{Type: addonv1.AddonApplied, Status: metav1.ConditionFalse,
		Reason: "ApplyFailed", Message: "reading Deployment kube-system/coredns: context deadline exceeded (retried)"})
	for _, tc := range []struct {
		name string
		in   GateInput
		want string
	}{
		{"healthy", GateInput{To: "v1.34.4", Cluster: kc, Addons: []addonv1.ClusterAddon{addon}}, "healthy"},
		{"control plane behind", GateInput{To: "v1.34.4", Cluster: old, Addons: []addonv1.ClusterAddon{addon}}, "waiting: the control plane runs v1.33.13"},
		{"readyz", GateInput{To: "v1.34.4", Cluster: kc, Readyz: fmt.Errorf("etcd not ok")}, "waiting: apiserver /readyz: etcd not ok"},
		{"addon behind", GateInput{To: "v1.34.4", Cluster: kc, Addons: []addonv1.ClusterAddon{*stale}}, "waiting: addons: coredns is applied for v1.33.13"},
		{"addon behind, its apply failing", GateInput{To: "v1.34.4", Cluster: kc, Addons: []addonv1.ClusterAddon{*failing}},
			"waiting: addons: coredns is applied for v1.33.13 (ApplyFailed: reading Deployment kube-system/coredns: context deadline exceeded (retried))"},
		{"new pod cannot pull", GateInput{To: "v1.34.4", Cluster: old, Pods: []corev1.Pod{pod("v1.34.4", "ImagePullBackOff")}}, "failing: pod apiserver-v1.34.4: "},
		{"machines at the target", GateInput{To: "v1.34.4", Cluster: kc, Addons: []addonv1.ClusterAddon{addon},
			Machines: []nodev1.Machine{machine("m1", "v1.34.4", "", true), machine("m2", "v1.33.13", "v1.33.13", true)}}, "healthy"},
		{"a node behind", GateInput{To: "v1.34.4", Cluster: kc, Addons: []addonv1.ClusterAddon{addon}, HealthyAtStart: []string{"machine/m1"},
			Machines: []nodev1.Machine{machine("m1", "v1.33.13", "", true)}}, "waiting: machines: m1 runs kubelet v1.33.13"},
		{"a pinned node not Ready", GateInput{To: "v1.34.4", Cluster: kc, Addons: []addonv1.ClusterAddon{addon}, HealthyAtStart: []string{"machine/m2"},
			Machines: []nodev1.Machine{machine("m2", "v1.33.13", "v1.33.13", false)}}, "waiting: machines: m2 is not Ready (it was before the upgrade)"},
		{"a node broken before the upgrade", GateInput{To: "v1.34.4", Cluster: kc, Addons: []addonv1.ClusterAddon{addon},
			Machines: []nodev1.Machine{machine("m1", "v1.33.13", "", false)}}, "healthy"},
		{"an addon that was healthy", GateInput{To: "v1.34.4", Cluster: kc, Addons: []addonv1.ClusterAddon{*sick}, HealthyAtStart: []string{"addon/coredns"}},
			"waiting: addons: coredns is not Healthy (it was before the upgrade)"},
		{"an addon that was not healthy before", GateInput{To: "v1.34.4", Cluster: kc, Addons: []addonv1.ClusterAddon{*sick}}, "healthy"},
		{"old pod is not the upgrade's", GateInput{To: "v1.34.4", Cluster: kc, Addons: []addonv1.ClusterAddon{addon}, Pods: []corev1.Pod{pod("v1.33.13", "CrashLoopBackOff")}}, "healthy"},
	} {
		h := Gate(tc.in)
		got := "healthy"
		switch {
		case h.Failing != "":
			got = "failing: " + h.Failing
		case !h.Healthy:
			got = "waiting: " + h.Waiting
		}
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: %s, want %s…", tc.name, got, tc.want)
		}
	}
}
