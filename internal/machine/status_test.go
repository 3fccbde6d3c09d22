package machine

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/agent"
)

func TestComputeStatus(t *testing.T) {
	desired := &agent.Desired{Components: []agent.Component{{Name: "containerd", Hash: "sha256:1"}}}
	report := &agent.Report{Desired: desired.Hash(), Time: time.Now(),
		Components: []agent.ComponentReport{{Name: "containerd", Version: "1.6.20", Ready: true}}}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}, Status: corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Message: "kubelet is posting ready status"}},
		NodeInfo:   corev1.NodeSystemInfo{KubeletVersion: "v1.34.4"}}}
	ready := func() *state {
		return &state{cluster: &clusterv1.KubeCluster{}, facts: &nodev1.HostFacts{OS: "debian"}, order: []string{"containerd"},
			desired: desired, report: report, node: node, viaCluster: true}
	}
	machineAt := func(deleted time.Duration) *nodev1.Machine {
		m := &nodev1.Machine{ObjectMeta: metav1.ObjectMeta{Name: "w1", Namespace: "team-a", Generation: 1},
			Spec: nodev1.MachineSpec{ClusterName: "c"}}
		if deleted > 0 {
			m.DeletionTimestamp = &metav1.Time{Time: time.Now().Add(-deleted)}
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		m       *nodev1.Machine
		st      func() *state
		cond    string
		reason  string
		message string
		phase   string
	}{
		{"ready, reporting through the cluster", machineAt(0), ready, nodev1.MachineReady, "Ready", "node w1 is Ready", nodev1.MachinePhaseReady},
		{"reachable through the heartbeat", machineAt(0), ready, nodev1.MachineReachable, "AgentHeartbeat", "Lease kok-system/node-w1", nodev1.MachinePhaseReady},
		{"draining", machineAt(time.Minute), func() *state {
			st := ready()
			st.blocking = []string{"default/web-1 (a PodDisruptionBudget allows no eviction now)"}
			return st
		}, nodev1.MachineReady, "Draining", "waiting for default/web-1", nodev1.MachinePhaseDeleting},
		{"a drain past its timeout names the blocking pods", machineAt(drainTimeout + time.Minute), func() *state {
			st := ready()
			st.blocking = []string{"default/web-1 (a PodDisruptionBudget allows no eviction now)"}
			return st
		}, nodev1.MachineReady, "DrainTimeout", "default/web-1 (a PodDisruptionBudget allows no eviction now)", nodev1.MachinePhaseDeleting},
		{"a component failing", machineAt(0), func() *state {
			st := ready()
			st.report = &agent.Report{Desired: desired.Hash(), Components: []agent.ComponentReport{{Name: "containerd", Error: "check: exit 1: no socket"}}}
			return st
		}, nodev1.MachineComponentsReady, "ComponentFailed", "containerd: check: exit 1: no socket", nodev1.MachinePhaseDegraded},
	} {
		m := tc.m
		computeStatus(m, tc.st())
		c := meta.FindStatusCondition(m.Status.Conditions, tc.cond)
		if c == nil || c.Reason != tc.reason || !strings.Contains(c.Message, tc.message) {
			t.Errorf("%s: %s = %+v, want reason %s and %q", tc.name, tc.cond, c, tc.reason, tc.message)
		}
		if m.Status.Phase != tc.phase {
			t.Errorf("%s: phase %s, want %s", tc.name, m.Status.Phase, tc.phase)
		}
	}
}
