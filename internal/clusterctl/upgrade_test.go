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
