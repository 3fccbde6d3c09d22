package fleet

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	addonv1 "github.com/kubeonkube/kok/api/addon/v1alpha1"
	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/cluster"
	"github.com/kubeonkube/kok/internal/conditions"
	"github.com/kubeonkube/kok/internal/kube"
)

// GateInput is what the health gate reads about one cluster.
type GateInput struct {
	To      string
	Cluster *clusterv1.KubeCluster
	// Addons are the cluster's ClusterAddons.
	Addons []addonv1.ClusterAddon
	// Pods are the cluster's control-plane pods.
	Pods []corev1.Pod
	// Machines are the cluster's Machines (its nodes).
	Machines []nodev1.Machine
	// HealthyAtStart are the parts (HealthyParts) that were healthy when
	// the upgrade started.
	HealthyAtStart []string
	// Readyz is the answer of the apiserver's /readyz (nil: ready); not
	// asked (ErrNotAsked) until the control plane reports the target.
	Readyz error
}

// ErrNotAsked is the Readyz of a cluster whose apiserver was not asked.
var ErrNotAsked = errors.New("not asked")

// failingReasons are waiting reasons of a container that will not fix
// themselves without a change: the gate fails on them at once.
var failingReasons = []string{"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError"}

// HealthyParts names a cluster's healthy parts: "addon/<name>" for each
// Healthy ClusterAddon, "machine/<name>" for each Ready Machine.
func HealthyParts(addons []addonv1.ClusterAddon, machines []nodev1.Machine) []string {
	var out []string
	for _, a := range addons {
		if conditions.IsTrue(a.Status.Conditions, addonv1.AddonHealthy) {
			out = append(out, "addon/"+a.Spec.Addon)
		}
	}
	for _, m := range machines {
		if conditions.IsTrue(m.Status.Conditions, nodev1.MachineReady) {
			out = append(out, "machine/"+m.Name)
		}
	}
	slices.Sort(out)
	return out
}

// Gate is the health gate of a cluster upgraded to in.To: the control
// plane runs the target (every component, rolled out) and is Ready, its
// apiserver answers /readyz, every addon listed is applied for the target,
// and what was healthy when the upgrade started is healthy again: those
// addons Healthy, those Machines Ready with their kubelet at the target
// (unless the Machine pins the kubelet's version). A control-plane pod of
// the target that crash-loops or cannot get its image fails the gate at
// once, in the pod's own words.
func Gate(in GateInput) Health {
	kc := in.Cluster
	for i := range in.Pods {
		pod := &in.Pods[i]
		if pod.Annotations[cluster.AnnVersion] != in.To {
			continue // the old version's pods are not the upgrade's doing
		}
		for _, cs := range pod.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && slices.Contains(failingReasons, w.Reason) {
				return Health{Failing: "pod " + pod.Name + ": " + kube.ContainerProblem(pod)}
			}
		}
	}
	switch {
	case kc.Spec.Version != in.To:
		return Health{Waiting: "spec.version is " + kc.Spec.Version}
	case kc.Status.ObservedGeneration < kc.Generation:
		return Health{Waiting: "the cluster operator has not acted on the change yet: " + condMessage(kc, clusterv1.ConditionReady)}
	case kc.Status.Version != in.To:
		return Health{Waiting: fmt.Sprintf("the control plane runs %s: %s", orNone(kc.Status.Version), condMessage(kc, clusterv1.ConditionProgressing))}
	case !conditions.IsTrue(kc.Status.Conditions, clusterv1.ConditionReady):
		return Health{Waiting: "not Ready: " + condMessage(kc, clusterv1.ConditionReady)}
	case in.Readyz != nil:
		return Health{Waiting: "apiserver /readyz: " + in.Readyz.Error()}
	}
	wasHealthy := func(kind, name string) bool { return slices.Contains(in.HealthyAtStart, kind+"/"+name) }
	var waiting []string
	for _, a := range kc.Spec.Addons {
		i := slices.IndexFunc(in.Addons, func(ca addonv1.ClusterAddon) bool { return ca.Spec.Addon == a.Name })
		switch {
		case i < 0:
			waiting = append(waiting, a.Name+" has no ClusterAddon yet")
		case in.Addons[i].Status.KubernetesVersion != in.To:
			behind := fmt.Sprintf("%s is applied for %s", a.Name, orNone(in.Addons[i].Status.KubernetesVersion))
			// Why it is behind, when its own status says (a failed apply,
			// a business apiserver that does not answer).
			if c := meta.FindStatusCondition(in.Addons[i].Status.Conditions, addonv1.AddonApplied); c != nil && c.Status != metav1.ConditionTrue {
				behind += " (" + c.Reason + ": " + c.Message + ")"
			}
			waiting = append(waiting, behind)
		case wasHealthy("addon", a.Name) && !conditions.IsTrue(in.Addons[i].Status.Conditions, addonv1.AddonHealthy):
			waiting = append(waiting, a.Name+" is not Healthy (it was before the upgrade)")
		}
	}
	if len(waiting) > 0 {
		return Health{Waiting: "addons: " + strings.Join(waiting, "; ")}
	}
	for i := range in.Machines {
		m := &in.Machines[i]
		if !wasHealthy("machine", m.Name) {
			continue
		}
		follows := slices.ContainsFunc(m.Spec.Components, func(c nodev1.ComponentRef) bool { return c.Name == "kubelet" && c.Version == "" })
		switch {
		case follows && m.Status.KubeletVersion != in.To:
			waiting = append(waiting, fmt.Sprintf("%s runs kubelet %s", m.Name, orNone(m.Status.KubeletVersion)))
		case !conditions.IsTrue(m.Status.Conditions, nodev1.MachineReady):
			waiting = append(waiting, m.Name+" is not Ready (it was before the upgrade)")
		}
	}
	if len(waiting) > 0 {
		return Health{Waiting: "machines: " + strings.Join(waiting, "; ")}
	}
	return Health{Healthy: true}
}

func orNone(v string) string {
	if v == "" {
		return "nothing yet"
	}
	return v
}

func condMessage(kc *clusterv1.KubeCluster, t string) string {
	if c := meta.FindStatusCondition(kc.Status.Conditions, t); c != nil {
		return c.Message
	}
	return "no " + t + " condition"
}
