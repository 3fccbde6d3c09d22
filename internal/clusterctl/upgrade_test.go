package clusterctl

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
)

func TestRenderUpgrade(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { v := metav1.NewTime(now.Add(d)); return &v }
	cu := &clusterv1.ClusterUpgrade{ObjectMeta: metav1.ObjectMeta{Name: "cve"}, Spec: clusterv1.ClusterUpgradeSpec{To: "v1.34.4", MaxParallel: 2},
		Status: clusterv1.ClusterUpgradeStatus{Phase: clusterv1.RolloutRunning, Wave: 1, Waves: 3, Total: 5, Done: 1, Summary: "1/5 done, 2 upgrading, 2 pending",
			Clusters: []clusterv1.ClusterUpgradeTarget{
				{Namespace: "a", Name: "p0", State: clusterv1.UpgradeSucceeded, From: "v1.33.13", StartTime: at(-5 * time.Minute), FinishTime: at(-3 * time.Minute)},
				{Namespace: "a", Name: "p1", Wave: 1, State: clusterv1.UpgradeUpgrading, From: "v1.33.13", StartTime: at(-time.Minute), Message: "not Ready"},
				{Namespace: "a", Name: "p2", Wave: 1, State: clusterv1.UpgradeUpgrading, From: "v1.33.13", StartTime: at(-time.Minute)},
				{Namespace: "a", Name: "p3", Wave: 2, State: clusterv1.UpgradePending, From: "v1.33.13"},
				{Namespace: "a", Name: "p4", Wave: 2, State: clusterv1.UpgradePending, From: "v1.33.13"},
			}}}
	out := RenderUpgrade(cu, now)
	for _, want := range []string{"cve → v1.34.4  Running   [######........................] 1/5 done, 2 upgrading, 2 pending  wave 2/3  ETA 4m",
		"a/p0", "Succeeded  v1.33.13  2m", "a/p1", "Upgrading  v1.33.13  60s    not Ready"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
}

func TestUpgradeWatchLogsChanges(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	cu := &clusterv1.ClusterUpgrade{ObjectMeta: metav1.ObjectMeta{Name: "cve"}, Spec: clusterv1.ClusterUpgradeSpec{To: "v1.34.4"},
		Status: clusterv1.ClusterUpgradeStatus{Phase: clusterv1.RolloutRunning, Waves: 2, Total: 2, Summary: "1 upgrading, 1 pending",
			Clusters: []clusterv1.ClusterUpgradeTarget{
				{Namespace: "a", Name: "p0", State: clusterv1.UpgradeUpgrading, Message: "the control plane runs v1.33.13"},
				{Namespace: "a", Name: "p1", Wave: 1, State: clusterv1.UpgradePending}}}}
	var w upgradeWatch
	first := w.next(cu, now, false)
	if !strings.Contains(first, "a/p0") || !strings.Contains(first, "a/p1") {
		t.Fatalf("the first look shows everything:\n%s", first)
	}
	// Time passes, a message changes: nothing to say.
	cu.Status.Clusters[0].Message = "addons: coredns is applied for v1.33.13"
	if out := w.next(cu, now.Add(time.Second), false); out != "" {
		t.Errorf("a redraw for a message:\n%s", out)
	}
	cu.Status.Clusters[0].State, cu.Status.Clusters[0].Message = clusterv1.UpgradeSucceeded, "healthy at v1.34.4"
	cu.Status.Clusters[1].State = clusterv1.UpgradeUpgrading
	cu.Status.Summary, cu.Status.Wave, cu.Status.Done = "1/2 done, 1 upgrading", 1, 1
	out := w.next(cu, now.Add(2*time.Second), false)
	for _, want := range []string{"10:00:02 cve → v1.34.4", "a/p0 wave 0 Upgrading → Succeeded  healthy at v1.34.4", "a/p1 wave 1 Pending → Upgrading"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if strings.Count(out, "\n") != 3 {
		t.Errorf("want a header line and two cluster lines:\n%s", out)
	}
	if final := w.next(cu, now.Add(3*time.Second), true); !strings.HasPrefix(final, "--- 10:00:03\n") {
		t.Errorf("the end shows everything again:\n%s", final)
	}
}
