package etcd

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/conditions"
	"github.com/kubeonkube/kok/internal/kube"
)

// computeStatus writes every status field, condition and the phase of e
// from what the pass observed, the step it planned and how that went. It
// is the only place that sets EtcdCluster conditions.
func computeStatus(e *etcdv1.EtcdCluster, n Names, obs *observation, step Step, stepErr error, now time.Time) {
	st := &e.Status
	st.ObservedGeneration = e.Generation
	st.ClientEndpoint = n.ClientEndpoint()
	st.CASecretName, st.ClientSecretName = n.CASecret(), n.ClientSecret()
	if obs.clusterID != "" {
		st.ClusterID = obs.clusterID
	}
	if !obs.Reachable {
		// Keep the membership last seen (it is how lost pods come back
		// when no member answers), marked unhealthy.
		for i := range st.Members {
			st.Members[i].Healthy = false
		}
	} else {
		st.Members = st.Members[:0]
	}
	ready, lowest := int32(0), ""
	for _, m := range obs.Members {
		ms := obs.members[m.Name]
		st.Members = append(st.Members, ms)
		if ms.Healthy && ms.Role != etcdv1.RoleLearner {
			ready++
		}
		if ms.Version != "" && (lowest == "" || kube.CompareVersions(ms.Version, lowest) < 0) {
			lowest = ms.Version
		}
	}
	st.ReadyMembers = ready
	if obs.Reachable {
		st.AuthEnabled = obs.AuthEnabled
	}
	if stepErr == nil && (step.Action == ActEnableAuth || step.Action == ActDisableAuth) {
		st.AuthEnabled = step.Action == ActEnableAuth
	}
	if stepErr == nil && (step.Action == ActRecoverSpace || (step.Action == ActDefrag && step.Member == "")) {
		st.LastDefragTime = &metav1.Time{Time: now}
	}
	if lowest != "" {
		st.Version = lowest
	}

	voters, _ := split(obs.Members)
	quorum := int32(len(voters))/2 + 1
	set := func(t string, ok bool, reason, msg string) {
		conditions.Set(&st.Conditions, e.Generation, t, ok, reason, msg)
	}
	available := obs.Reachable && ready >= quorum && len(voters) > 0
	msg := fmt.Sprintf("%d of %d voting members healthy", ready, len(voters))
	if obs.etcdErr != nil {
		msg = fmt.Sprintf("no member answered: %v", obs.etcdErr)
	}
	set(etcdv1.ConditionAvailable, available, conditions.Pick(available, "QuorumHealthy", "QuorumUnavailable"), msg)
	progressing := step.Action != ActNone && step.Action != ActQuorumLost
	set(etcdv1.ConditionProgressing, progressing, string(step.Action), step.Reason)
	degraded := stepErr != nil || (obs.Reachable && int(ready) < obs.Replicas)
	msg = step.Reason
	switch {
	case stepErr != nil && step.Action == ActNone:
		msg = stepErr.Error()
	case stepErr != nil:
		msg = fmt.Sprintf("%s: %v", step, stepErr)
	}
	set(etcdv1.ConditionDegraded, degraded, conditions.Pick(degraded, "Degraded", "AsExpected"), msg)
	lost := step.Action == ActQuorumLost
	set(etcdv1.ConditionQuorumLost, lost, conditions.Pick(lost, "QuorumLost", "QuorumPresent"), conditions.Pick(lost, step.Reason, ""))
	switch {
	case lost:
		st.Phase = etcdv1.PhaseQuorumLost
	case e.Spec.Paused:
		st.Phase = etcdv1.PhasePaused
	case progressing && !available:
		st.Phase = etcdv1.PhaseCreating
	case progressing:
		st.Phase = etcdv1.PhaseUpdating
	case available:
		st.Phase = etcdv1.PhaseRunning
	default:
		st.Phase = etcdv1.PhaseUnavailable
	}
}
