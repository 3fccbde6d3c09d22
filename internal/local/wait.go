package local

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
)

// poll calls check at once, then every interval, until it reports done or
// fails, or until ctx ends or timeout passes (0: only ctx bounds the wait).
// A check's error ends the wait and is returned as it is. A wait that runs
// out returns timedOut(), which says what was still missing; without
// timedOut, the context's error.
func poll(ctx context.Context, interval, timeout time.Duration, check func(context.Context) (bool, error), timedOut func() error) error {
	var failed error
	cond := func(ctx context.Context) (bool, error) {
		done, err := check(ctx)
		failed = err
		return done, err
	}
	var err error
	if timeout > 0 {
		err = wait.PollUntilContextTimeout(ctx, interval, timeout, true, cond)
	} else {
		err = wait.PollUntilContextCancel(ctx, interval, true, cond)
	}
	if err == nil || failed != nil || timedOut == nil {
		return err
	}
	return timedOut()
}

// waitNodeReady waits for the node to be Ready with a kubelet that renewed
// its node lease after since, so a status left from before a restart does
// not count.
func waitNodeReady(ctx context.Context, cs kubernetes.Interface, name string, since time.Time) error {
	var last string
	return poll(ctx, 250*time.Millisecond, 0, func(ctx context.Context) (bool, error) {
		node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					if cond.Status == corev1.ConditionTrue {
						lease, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, name, metav1.GetOptions{})
						if err == nil && lease.Spec.RenewTime != nil && !lease.Spec.RenewTime.Time.Before(since.Truncate(time.Second)) {
							return true, nil
						}
						last = "kubelet has not renewed its lease yet"
						continue
					}
					last = cond.Reason + ": " + cond.Message
				}
			}
		case apierrors.IsNotFound(err):
			last = "not registered yet"
		default:
			last = err.Error()
		}
		return false, nil
	}, func() error {
		return fmt.Errorf("node %s not Ready: %s", name, last)
	})
}

// waitDeployment waits until every replica of a Deployment is a pod that
// became Ready after since: a Deployment status left from before a restart
// does not count.
func waitDeployment(ctx context.Context, cs kubernetes.Interface, ns, name string, since time.Time) error {
	var last string
	return poll(ctx, 250*time.Millisecond, 0, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		ready, err := freshReadyPods(ctx, cs, ns, d.Spec.Selector, since)
		if err == nil && ready >= want && d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == want {
			return true, nil
		}
		last = fmt.Sprintf("%d/%d pods ready", ready, want)
		return false, nil
	}, func() error {
		return fmt.Errorf("deployment %s/%s not ready (%s); kubectl -n %s describe pods", ns, name, last, ns)
	})
}

func freshReadyPods(ctx context.Context, cs kubernetes.Interface, ns string, sel *metav1.LabelSelector, since time.Time) (int32, error) {
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(sel)})
	if err != nil {
		return 0, err
	}
	var n int32
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue &&
				!cond.LastTransitionTime.Time.Before(since.Truncate(time.Second)) {
				n++
			}
		}
	}
	return n, nil
}

// waitWebhook waits until kok's admission webhook answers: a Ready
// kok-manager pod is not enough, the apiserver reaches it through the
// Service only once kube-proxy has programmed its endpoint, and until then
// every create of a kok resource fails with "failed calling webhook". The
// probe is a dry-run create of a KubeCluster; any answer, a refusal too,
// means the webhook serves.
func waitWebhook(ctx context.Context, cl client.Client, version string) error {
	var last string
	return poll(ctx, 250*time.Millisecond, 2*time.Minute, func(ctx context.Context) (bool, error) {
		probe := &clusterv1.KubeCluster{
			ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceDefault, Name: "kok-up-webhook-probe"},
			Spec: clusterv1.KubeClusterSpec{Version: version, ControlPlane: clusterv1.ControlPlaneSpec{Replicas: 1},
				Etcd: clusterv1.EtcdSpec{Managed: &clusterv1.ManagedEtcd{Replicas: 1}}},
		}
		err := cl.Create(ctx, probe, client.DryRunAll)
		if err != nil && strings.Contains(err.Error(), "failed calling webhook") {
			last = err.Error()
			return false, nil
		}
		return true, nil
	}, func() error {
		return fmt.Errorf("kok's admission webhook does not answer: %s; kubectl -n kok-system logs deploy/kok-manager", last)
	})
}
