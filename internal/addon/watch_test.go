package addon

import (
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
)

func deploymentAt(gen, observed, available int64, rv string, labels map[string]string) *unstructured.Unstructured {
	o := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "coredns", "namespace": "kube-system", "generation": gen, "resourceVersion": rv},
		"spec":     map[string]any{"replicas": int64(2)},
		"status":   map[string]any{"observedGeneration": observed, "availableReplicas": available, "updatedReplicas": int64(2)},
	}}
	o.SetLabels(labels)
	return o
}

func TestChanged(t *testing.T) {
	l := map[string]string{LabelCluster: "c1"}
	healthy := deploymentAt(1, 1, 2, "1", l)
	for _, tc := range []struct {
		name string
		obj  *unstructured.Unstructured
		want bool
	}{
		{"status churn, same health", deploymentAt(1, 1, 2, "2", l), false},
		{"a pod lost", deploymentAt(1, 1, 1, "2", l), true},
		{"spec edited", deploymentAt(2, 1, 2, "2", l), true},
		{"label removed", deploymentAt(1, 1, 2, "2", nil), true},
	} {
		if got := changed(healthy, tc.obj); got != tc.want {
			t.Errorf("%s: changed = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Recovering wakes it too: Healthy comes back without a resync.
	if !changed(deploymentAt(1, 1, 1, "2", l), deploymentAt(1, 1, 2, "3", l)) {
		t.Error("a workload available again did not wake its addon")
	}
}

var errTest = errors.New("no version of coredns supports Kubernetes 1.35")

func TestRequeue(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   state
		want time.Duration
	}{
		{"hibernated cluster", state{waiting: "hibernated", clusterWait: true}, 0},
		{"business apiserver not answering", state{waiting: "dial tcp: connection refused"}, settling},
		{"objects just written", state{sent: 3, unhealthy: []string{"0/2 available"}}, settling},
		{"unhealthy, nothing written: its watch wakes it", state{unhealthy: []string{"0/2 available"}}, resync},
		{"healthy", state{}, resync},
		{"no Addon version for this release", state{planErr: errTest}, resync},
	} {
		if got := requeue(&tc.st); got != tc.want {
			t.Errorf("%s: requeue = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A cluster going away, hibernated or without addons is not watched.
func TestWatchesNeeded(t *testing.T) {
	now := metav1.Now()
	for _, tc := range []struct {
		name string
		kc   clusterv1.KubeCluster
		want bool
	}{
		{"running with addons", clusterv1.KubeCluster{Spec: clusterv1.KubeClusterSpec{Addons: []clusterv1.AddonRef{{Name: "coredns"}}}}, true},
		{"hibernated", clusterv1.KubeCluster{Spec: clusterv1.KubeClusterSpec{Hibernated: true, Addons: []clusterv1.AddonRef{{Name: "coredns"}}}}, false},
		{"no addons", clusterv1.KubeCluster{Spec: clusterv1.KubeClusterSpec{Addons: []clusterv1.AddonRef{}}}, false},
		{"deleting", clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now},
			Spec: clusterv1.KubeClusterSpec{Addons: []clusterv1.AddonRef{{Name: "coredns"}}}}, false},
	} {
		if got := watchesNeeded(&tc.kc); got != tc.want {
			t.Errorf("%s: watchesNeeded = %v, want %v", tc.name, got, tc.want)
		}
	}
}
