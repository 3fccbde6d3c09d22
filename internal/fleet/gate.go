package fleet

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	addonv1 "github.com/kubeonkube/kok/api/addon/v1alpha1"
	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
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
	// Readyz is the answer of the apiserver's /readyz (nil: ready); not
	// asked (ErrNotAsked) until the control plane reports the target.
	Readyz error
}

// ErrNotAsked is the Readyz of a cluster whose apiserver was not asked.
var ErrNotAsked = errors.New("not asked")

// failingReasons are waiting reasons of a container that will not fix
// themselves without a change: the gate fails on them at once.
var failingReasons = []string{"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError"}

// Gate is the health gate of a cluster upgraded to in.To: the control
// plane runs the target (every component, rolled out) and is Ready, its
// apiserver answers /readyz, every addon is Healthy at the target, and no
// control-plane pod of the target crash-loops or cannot get its image —
// which fails the gate at once, in the pod's own words.
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
		return Health{Waiting: "the cluster operator has not seen the change yet"}
	case kc.Status.Version != in.To:
		return Health{Waiting: fmt.Sprintf("the control plane runs %s: %s", orNone(kc.Status.Version), condMessage(kc, clusterv1.ConditionProgressing))}
	case !conditions.IsTrue(kc.Status.Conditions, clusterv1.ConditionReady):
		return Health{Waiting: "not Ready: " + condMessage(kc, clusterv1.ConditionReady)}
	case in.Readyz != nil:
		return Health{Waiting: "apiserver /readyz: " + in.Readyz.Error()}
	}
	var waiting []string
	for _, a := range kc.Spec.Addons {
		i := slices.IndexFunc(in.Addons, func(ca addonv1.ClusterAddon) bool { return ca.Spec.Addon == a.Name })
		switch {
		case i < 0:
			waiting = append(waiting, a.Name+" has no ClusterAddon yet")
		case in.Addons[i].Status.KubernetesVersion != in.To:
			waiting = append(waiting, fmt.Sprintf("%s is applied for %s", a.Name, orNone(in.Addons[i].Status.KubernetesVersion)))
		case !conditions.IsTrue(in.Addons[i].Status.Conditions, addonv1.AddonHealthy):
			waiting = append(waiting, a.Name+" is not Healthy")
		}
	}
	if len(waiting) > 0 {
		return Health{Waiting: "addons: " + strings.Join(waiting, "; ")}
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
	for _, c := range kc.Status.Conditions {
		if c.Type == t {
			return c.Message
		}
	}
	return "no " + t + " condition"
}
