package cluster

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/conditions"
	"github.com/kubeonkube/kok/internal/kube"
)

// computeStatus writes every status field, condition and the phase of kc
// from what the pass observed and did (st) and the error that ended it.
// It is the only place that sets KubeCluster conditions.
func computeStatus(kc *clusterv1.KubeCluster, n Names, st *state, passErr error) {
	s := &kc.Status
	set := func(t string, ok bool, reason, msg string) {
		conditions.Set(&s.Conditions, kc.Generation, t, ok, reason, msg)
	}
	if passErr == nil && (st == nil || !st.etcdHeld) {
		// Only a pass that went through counts as having acted on this
		// generation; a failed one is retried and says why in Ready, and
		// one whose control plane waits for its etcd user applied none
		// of it (the EtcdCluster's return wakes it).
		s.ObservedGeneration = kc.Generation
	}
	defer func() { s.Phase = phase(kc) }()
	if st == nil || !st.observed {
		// Nothing trustworthy was read: say why, keep the rest as it was.
		set(clusterv1.ConditionReady, false, "ReconcileFailed", errString(passErr))
		return
	}
	if st.catalog == nil {
		msg := fmt.Sprintf("KubernetesVersion %q is not in the catalog: pick one of %s, or apply a KubernetesVersion for it",
			kc.Spec.Version, st.catalogNames)
		set(clusterv1.ConditionReady, false, "UnknownVersion", msg)
		set(clusterv1.ConditionProgressing, false, "UnknownVersion", msg)
		return
	}

	// Where things are.
	s.EtcdCluster = st.etcdKey.String()
	if ip := st.serviceIP(); ip != "" {
		s.ServiceIP = ip
		s.Endpoint = endpointOf(kc, st)
	}
	if _, ok := st.secrets[n.AdminKubeconfig()]; ok {
		s.AdminKubeconfigSecret = n.AdminKubeconfig()
	}

	// etcd.
	etcdOK := st.etcdAvailable()
	switch {
	case st.etcd == nil:
		set(clusterv1.ConditionEtcdReady, false, "NotFound", fmt.Sprintf("EtcdCluster %s does not exist", st.etcdKey))
	case st.tenantErr != nil:
		set(clusterv1.ConditionEtcdReady, false, "TenantUser", fmt.Sprintf("etcd user of this cluster in %s: %v", st.etcdKey, st.tenantErr))
	case !etcdOK:
		set(clusterv1.ConditionEtcdReady, false, "NotAvailable", fmt.Sprintf("EtcdCluster %s is not available (%s)", st.etcdKey, st.etcd.Status.Phase))
	case !st.etcdCompatible():
		set(clusterv1.ConditionEtcdReady, true, "Incompatible", fmt.Sprintf("EtcdCluster %s runs %s; %s supports %s",
			st.etcdKey, st.etcd.Status.Version, kc.Spec.Version, strings.Join(st.catalog.Spec.EtcdVersions, ", ")))
	default:
		set(clusterv1.ConditionEtcdReady, true, "Available", fmt.Sprintf("EtcdCluster %s %s serves %d members",
			st.etcdKey, st.etcd.Status.Version, st.etcd.Status.ReadyMembers))
	}
	if st.etcdCA == nil {
		set(clusterv1.ConditionCertificatesReady, false, "WaitingForEtcd", "the etcd CA is not there yet")
		set(clusterv1.ConditionReady, false, "WaitingForEtcd", "etcd is being created")
		set(clusterv1.ConditionProgressing, true, "WaitingForEtcd", "etcd is being created")
		return
	}

	// Certificates.
	switch {
	case st.pkiErr != nil:
		set(clusterv1.ConditionCertificatesReady, false, "IssueFailed", st.pkiErr.Error())
	case len(st.secrets) < len(n.secretNames()):
		set(clusterv1.ConditionCertificatesReady, false, "Missing", "certificates and kubeconfigs are not all issued yet")
	default:
		set(clusterv1.ConditionCertificatesReady, true, "Issued", "certificates and kubeconfigs are valid")
	}

	// Components and the rollout.
	s.Components = nil
	var versions []string
	allDone := true
	var progress, unavailable []string
	for _, c := range components {
		d := st.deployments[c]
		if d == nil {
			allDone = false
			progress = append(progress, c+" not created yet")
			unavailable = append(unavailable, withProblem(c+" has no Deployment yet", st.problems[c]))
			continue
		}
		v := d.Annotations[AnnVersion]
		s.Components = append(s.Components, clusterv1.ComponentStatus{Name: c, Version: v, Replicas: d.Status.Replicas,
			UpdatedReplicas: d.Status.UpdatedReplicas, ReadyReplicas: d.Status.ReadyReplicas, LastError: st.problems[c]})
		versions = append(versions, v)
		if !rolledOut(d) {
			allDone = false
		}
		if d.Status.AvailableReplicas == 0 {
			unavailable = append(unavailable, withProblem(c+" has no available replica", st.problems[c]))
		}
		switch {
		case d.Status.ObservedGeneration < d.Generation:
			progress = append(progress, fmt.Sprintf("%s %s: rollout starting", c, v))
		case !rolledOut(d) || v != kc.Spec.Version:
			progress = append(progress, withProblem(fmt.Sprintf("%s %s: %d/%d updated, %d ready", c, v,
				d.Status.UpdatedReplicas, ptrValue(d.Spec.Replicas), d.Status.ReadyReplicas), st.problems[c]))
		}
	}
	if allDone {
		s.Version = kube.OldestVersion(versions...)
	}
	running := int32(0)
	for _, d := range st.deployments {
		running += d.Status.Replicas
	}
	hibernated := "the control plane is hibernated (no replicas; etcd keeps the data): set spec.hibernated to false to wake it"
	switch {
	case kc.Spec.Hibernated:
		set(clusterv1.ConditionControlPlaneAvailable, false, "Hibernated", hibernated)
	case len(unavailable) == 0:
		set(clusterv1.ConditionControlPlaneAvailable, true, "Available", "apiserver, controller-manager and scheduler are available")
	default:
		set(clusterv1.ConditionControlPlaneAvailable, false, "Unavailable", strings.Join(unavailable, "; "))
	}
	rollout := st.rollout
	if rollout.Targets == nil {
		rollout = planRollout(kc, st)
	}
	if kc.Spec.Paused {
		rollout.Waiting = "paused"
	}
	switch {
	case kc.Spec.Hibernated && running > 0:
		set(clusterv1.ConditionProgressing, true, "Hibernating", fmt.Sprintf("%d control-plane pods still run", running))
	case kc.Spec.Hibernated:
		set(clusterv1.ConditionProgressing, false, "Hibernated", hibernated)
	case len(progress) == 0:
		set(clusterv1.ConditionProgressing, false, "Complete", "every component runs "+kc.Spec.Version)
	case rollout.Waiting != "":
		set(clusterv1.ConditionProgressing, true, "RollingOut", rollout.Waiting+"; "+strings.Join(progress, "; "))
	default:
		set(clusterv1.ConditionProgressing, true, "RollingOut", strings.Join(progress, "; "))
	}

	// The tunnels from the apiservers to the nodes (not part of Ready: a
	// control plane serves without nodes).
	switch {
	case kc.Spec.KonnectivityEnabled() && kc.Spec.Hibernated:
		set(clusterv1.ConditionKonnectivityReady, false, "Hibernated", "no apiserver runs while the cluster is hibernated")
	case kc.Spec.KonnectivityEnabled():
		ok, reason, msg := konnectivityCondition(kc.Spec.Version, st.catalog.Spec.Images.KonnectivityServer != "", st.konnectivity)
		if reason == "NoServer" {
			msg = withProblem(msg, st.problems[APIServer])
		}
		set(clusterv1.ConditionKonnectivityReady, ok, reason, msg)
	default:
		meta.RemoveStatusCondition(&s.Conditions, clusterv1.ConditionKonnectivityReady)
	}

	// Ready sums it up.
	switch {
	case passErr != nil:
		set(clusterv1.ConditionReady, false, "ReconcileFailed", passErr.Error())
	case kc.Spec.Hibernated:
		set(clusterv1.ConditionReady, false, "Hibernated", hibernated)
	case len(unavailable) == 0 && etcdOK && st.bootstrapErr != nil:
		set(clusterv1.ConditionReady, false, "BootstrapObjectsFailed", st.bootstrapErr.Error())
	case len(unavailable) == 0 && etcdOK:
		set(clusterv1.ConditionReady, true, "Ready", "the control plane serves at "+s.Endpoint)
	case !etcdOK:
		set(clusterv1.ConditionReady, false, "EtcdNotReady", "etcd is not available")
	default:
		set(clusterv1.ConditionReady, false, "ControlPlaneUnavailable", "the control plane is not available yet: "+strings.Join(unavailable, "; "))
	}
}

// endpointOf is the apiserver URL reachable in the meta cluster.
func endpointOf(kc *clusterv1.KubeCluster, st *state) string {
	return fmt.Sprintf("https://%s:%d", st.serviceIP(), kc.Spec.Network.APIServer.Port)
}

// controlPlaneAvailable: every component has an available replica.
func controlPlaneAvailable(st *state) bool {
	for _, c := range components {
		if d := st.deployments[c]; d == nil || d.Status.AvailableReplicas == 0 {
			return false
		}
	}
	return true
}

func withProblem(what, problem string) string {
	if problem == "" {
		return what
	}
	return what + " (" + problem + ")"
}

func errString(err error) string {
	if err == nil {
		return "the cluster could not be observed"
	}
	return err.Error()
}

// rolledOut: every replica runs the Deployment's current template and is
// available.
func rolledOut(d *appsv1.Deployment) bool {
	if d == nil {
		return false
	}
	want := ptrValue(d.Spec.Replicas)
	return d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == want &&
		d.Status.Replicas == want && d.Status.AvailableReplicas == want
}

func ptrValue(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

// phase summarizes the conditions.
func phase(kc *clusterv1.KubeCluster) string {
	ready := conditions.IsTrue(kc.Status.Conditions, clusterv1.ConditionReady)
	switch {
	case kc.DeletionTimestamp != nil:
		return clusterv1.PhaseDeleting
	case kc.Spec.Paused:
		return clusterv1.PhasePaused
	case kc.Spec.Hibernated:
		return clusterv1.PhaseHibernated
	case kc.Status.Version != "" && kc.Status.Version != kc.Spec.Version:
		return clusterv1.PhaseUpgrading
	case ready:
		return clusterv1.PhaseReady
	case kc.Status.Version == "":
		return clusterv1.PhaseProvisioning
	default:
		return clusterv1.PhaseDegraded
	}
}
