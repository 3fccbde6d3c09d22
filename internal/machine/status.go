package machine

import (
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/agent"
	"github.com/kubeonkube/kok/internal/conditions"
	"github.com/kubeonkube/kok/internal/machine/remote"
)

// computeStatus writes every condition, the facts, the components, the
// node and the phase from what the pass observed and did.
func computeStatus(m *nodev1.Machine, st *state) {
	s := &m.Status
	set := func(t string, ok bool, reason, msg string) {
		conditions.Set(&s.Conditions, m.Generation, t, ok, reason, msg)
	}
	s.ObservedGeneration = m.Generation
	if st.facts != nil {
		s.Facts = st.facts
	}
	if st.hibernated {
		set(nodev1.MachineReady, false, "ClusterHibernated", fmt.Sprintf("KubeCluster %s is hibernated: the host is left as it is until it wakes", m.Spec.ClusterName))
		s.Phase = nodev1.MachinePhaseDegraded
		return
	}

	// Reachable.
	switch {
	case st.credsErr != nil:
		set(nodev1.MachineReachable, false, "CredentialsNotFound", st.credsErr.Error())
	case m.Spec.Paused:
		// Not reached while paused: the condition keeps what it said.
	case errors.Is(st.reachErr, remote.ErrHostKeyMismatch):
		set(nodev1.MachineReachable, false, "HostKeyMismatch", st.reachErr.Error())
	case errors.Is(st.reachErr, remote.ErrAuthentication):
		set(nodev1.MachineReachable, false, "AuthenticationFailed",
			st.reachErr.Error()+": put the Machine's public key in the host's authorized_keys, or the right private key in spec.ssh.credentialsSecret")
	case st.reachErr != nil:
		set(nodev1.MachineReachable, false, "Unreachable", st.reachErr.Error()+" (retried with backoff)")
	case st.viaCluster:
		set(nodev1.MachineReachable, true, "AgentHeartbeat",
			fmt.Sprintf("the agent reports through Lease %s/%s in the business cluster every %s; the host is reached over SSH again only if it stops",
				LinkNamespace, linkObject(m), agent.LeaseDuration/4))
	default:
		set(nodev1.MachineReachable, true, "HostKeyVerified",
			fmt.Sprintf("%s:%d proved its pinned host key; %s %s %s, kernel %s", m.Spec.Address, sshPort(m), st.facts.OS, st.facts.OSVersion, st.facts.Arch, st.facts.KernelVersion))
	}

	// Components, from the agent's report when it is about what is
	// desired now.
	if st.report != nil {
		s.Components = componentStatuses(st)
		s.Services = nil
		for _, svc := range st.report.Services {
			s.Services = append(s.Services, nodev1.ServiceStatus{Name: svc.Name, Running: svc.Running,
				Restarts: int32(svc.Restarts), LastExit: svc.LastExit})
		}
		t := metav1.NewTime(st.report.Time)
		s.AgentReportTime = &t
	}
	current := st.report != nil && st.desired != nil && st.report.Desired == st.desired.Hash()
	switch {
	case len(st.missing) > 0:
		set(nodev1.MachineComponentsReady, false, "ComponentNotFound",
			fmt.Sprintf("Component %s does not exist: apply it (a Component is named <component>-<version>) or change spec.components", strings.Join(st.missing, ", ")))
	case st.planErr != nil:
		set(nodev1.MachineComponentsReady, false, "NotPlannable", st.planErr.Error())
	case st.actErr != nil:
		set(nodev1.MachineComponentsReady, false, "ApplyFailed", st.actErr.Error()+" (retried)")
	case st.desired == nil && st.order != nil && st.workloadErr != nil:
		set(nodev1.MachineComponentsReady, false, "ClusterNotReachable",
			"install order: "+strings.Join(st.order, ", ")+"; rendered once the business cluster answers: "+st.workloadErr.Error())
	case st.desired == nil:
		if !m.Spec.Paused {
			set(nodev1.MachineComponentsReady, false, "WaitingForHost", "components are planned once the host is reached")
		}
	case !current:
		set(nodev1.MachineComponentsReady, false, "Installing", "the agent is applying: "+strings.Join(st.order, ", "))
	case st.report.Ready():
		var parts []string
		for _, c := range st.report.Components {
			parts = append(parts, c.Name+" "+c.Version)
		}
		set(nodev1.MachineComponentsReady, true, "AtFinalState", strings.Join(parts, ", ")+" at their final state (checked by the agent)")
	default:
		for _, c := range st.report.Components {
			if !c.Ready {
				set(nodev1.MachineComponentsReady, false, "ComponentFailed", c.Name+": "+c.Error+" (the agent retries)")
				break
			}
		}
	}

	// The node.
	s.NodeName, s.KubeletVersion = "", ""
	switch {
	case st.node != nil:
		s.NodeName, s.KubeletVersion = st.node.Name, st.node.Status.NodeInfo.KubeletVersion
		set(nodev1.MachineNodeJoined, true, "Joined", fmt.Sprintf("node %s joined %s", st.node.Name, m.Spec.ClusterName))
	case st.workloadErr != nil:
		set(nodev1.MachineNodeJoined, false, "ClusterNotReachable", st.workloadErr.Error())
	case conditions.IsTrue(s.Conditions, nodev1.MachineComponentsReady):
		set(nodev1.MachineNodeJoined, false, "Joining", "the kubelet is joining with the Machine's bootstrap token")
	default:
		set(nodev1.MachineNodeJoined, false, "WaitingForComponents", "the node joins once its components are at their final state")
	}
	switch ready := nodeReady(st.node); {
	case st.node == nil:
		set(nodev1.MachineNodeReady, false, "NotJoined", "the node has not joined yet")
	case ready != nil && ready.Status == corev1.ConditionTrue:
		set(nodev1.MachineNodeReady, true, "KubeletReady", ready.Message)
	case ready != nil:
		set(nodev1.MachineNodeReady, false, orDefault(ready.Reason, "NotReady"), ready.Message)
	default:
		set(nodev1.MachineNodeReady, false, "NotReported", "the kubelet has not reported the node's readiness yet")
	}

	// Ready.
	switch {
	case m.DeletionTimestamp != nil && len(st.blocking) > 0:
		reason := "Draining"
		if time.Since(m.DeletionTimestamp.Time) > drainTimeout {
			reason = "DrainTimeout"
		}
		set(nodev1.MachineReady, false, reason, fmt.Sprintf("draining node %s: waiting for %s", m.Name, strings.Join(st.blocking, ", ")))
	case m.DeletionTimestamp != nil:
		set(nodev1.MachineReady, false, "Deleting", "the node is drained and deleted, then the host is cleaned"+errSuffix(st.actErr))
	case st.cluster == nil:
		set(nodev1.MachineReady, false, "ClusterNotFound",
			fmt.Sprintf("KubeCluster %s does not exist in namespace %s: create it or fix spec.clusterName", m.Spec.ClusterName, m.Namespace))
	case !conditions.IsTrue(s.Conditions, nodev1.MachineReachable):
		set(nodev1.MachineReady, false, "HostNotReachable", "the host is not reachable: see the Reachable condition")
	case !conditions.IsTrue(s.Conditions, nodev1.MachineComponentsReady):
		set(nodev1.MachineReady, false, "ComponentsNotReady", "see the ComponentsReady condition")
	case !conditions.IsTrue(s.Conditions, nodev1.MachineNodeJoined):
		set(nodev1.MachineReady, false, "NotJoined", "the node has not joined "+m.Spec.ClusterName+" yet")
	case !conditions.IsTrue(s.Conditions, nodev1.MachineNodeReady):
		set(nodev1.MachineReady, false, "NodeNotReady", "see the NodeReady condition")
	default:
		set(nodev1.MachineReady, true, "Ready", fmt.Sprintf("node %s is Ready in %s, its components at their final state", m.Name, m.Spec.ClusterName))
	}

	upToDate(m, st)

	switch {
	case m.DeletionTimestamp != nil:
		s.Phase = nodev1.MachinePhaseDeleting
	case conditions.IsTrue(s.Conditions, nodev1.MachineReady):
		s.Phase = nodev1.MachinePhaseReady
	case conditions.IsTrue(s.Conditions, nodev1.MachineNodeJoined):
		s.Phase = nodev1.MachinePhaseDegraded
	case conditions.IsTrue(s.Conditions, nodev1.MachineComponentsReady):
		s.Phase = nodev1.MachinePhaseJoining
	case conditions.IsTrue(s.Conditions, nodev1.MachineReachable):
		s.Phase = nodev1.MachinePhaseProvisioning
	default:
		s.Phase = nodev1.MachinePhasePending
	}
}

// upToDate says whether the Machine runs its cluster's release, is on
// its way there, or waits for its turn.
func upToDate(m *nodev1.Machine, st *state) {
	if st.cluster == nil || m.DeletionTimestamp != nil || !followsCluster(m) {
		return
	}
	s := &m.Status
	set := func(ok bool, reason, msg string) {
		conditions.Set(&s.Conditions, m.Generation, nodev1.MachineUpToDate, ok, reason, msg)
	}
	target := runningVersion(st.cluster)
	switch rel, now := st.release, machineRelease(m); {
	case rel.WaitsFor != "":
		set(false, "WaitingForTurn", fmt.Sprintf("runs %s; moves to %s after Machine %s has run it, Ready, for %s (one node at a time)",
			rel.Current, target, rel.WaitsFor, NodeSettle))
	case now == target:
		set(true, "UpToDate", "runs "+target+", the release of the cluster's control plane")
	case now == "":
		set(false, "Installing", "installing "+target)
	default:
		set(false, "Upgrading", fmt.Sprintf("moving from %s to %s", now, target))
	}
}

func componentStatuses(st *state) []nodev1.ComponentStatus {
	var out []nodev1.ComponentStatus
	for _, c := range st.report.Components {
		cs := nodev1.ComponentStatus{Name: c.Name, Version: c.Version, Variant: c.Variant, Hash: c.Hash, Ready: c.Ready,
			LastError: c.Error}
		if !c.LastCheck.IsZero() {
			t := metav1.NewTime(c.LastCheck)
			cs.LastCheck = &t
		}
		if c.LastRepair != "" {
			t := metav1.NewTime(c.LastRepairTime)
			cs.LastRepair, cs.LastRepairTime = c.LastRepair, &t
		}
		out = append(out, cs)
	}
	return out
}

func nodeReady(n *corev1.Node) *corev1.NodeCondition {
	if n == nil {
		return nil
	}
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return ": " + err.Error()
}

func sshPort(m *nodev1.Machine) int32 {
	if m.Spec.SSH.Port == 0 {
		return remote.DefaultPort
	}
	return m.Spec.SSH.Port
}
