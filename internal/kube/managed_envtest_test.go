//go:build envtest

package kube_test

import (
	"context"
	"sync/atomic"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m, nil) }

// rendered are objects as an operator renders them: typed, whole, with
// the zero values and nested structs a rendering carries.
func rendered(image string) []client.Object {
	labels := map[string]string{"app": "web"}
	return []client.Object{
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", Labels: labels,
			Annotations: map[string]string{"kok.dev/version": "v1"}},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: labels},
				Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromInt32(1))}},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{"checksum": "abc"}},
					Spec: corev1.PodSpec{AutomountServiceAccountToken: ptr.To(false), PriorityClassName: "system-cluster-critical",
						Containers: []corev1.Container{{Name: "web", Image: image, Command: []string{"/web"}, Args: []string{"--port=8080", "--v=2"},
							Env:   []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}},
							Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
							Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
								corev1.ResourceCPU: resource.MustParse("5m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
							ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz",
								Port: intstr.FromString("http"), Scheme: corev1.URISchemeHTTPS}}, PeriodSeconds: 1},
							VolumeMounts: []corev1.VolumeMount{{Name: "certs", MountPath: "/certs", ReadOnly: true}}}},
						Volumes: []corev1.Volume{{Name: "certs", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "web-certs"}}}}}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", Labels: labels},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Selector: labels,
				Ports: []corev1.ServicePort{{Name: "https", Port: 6443, TargetPort: intstr.FromString("http")}}}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", Labels: labels},
			Data: map[string]string{"config.yaml": "a: 1\n"}},
	}
}

// TestAppliedAfterRestart: an Applied with nothing on record (an operator
// that just started) sends nothing for objects that hold what it renders,
// and applies those someone else changed or whose rendering changed.
func TestAppliedAfterRestart(t *testing.T) {
	ctx := context.Background()
	c, err := client.NewWithWatch(testenv.Config, client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	var applies atomic.Int32
	counting := interceptor.NewClient(c, interceptor.Funcs{
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			applies.Add(1)
			return c.Apply(ctx, obj, opts...)
		}})
	// pass applies the rendering with a fresh Applied, reading each object
	// first as an operator's cache would hold it, and counts the applies.
	pass := func(image string) int32 {
		t.Helper()
		var a kube.Applied
		before := applies.Load()
		for _, obj := range rendered(image) {
			current := obj.DeepCopyObject().(client.Object)
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), current); err != nil {
				current = nil
			}
			if err := a.Apply(ctx, counting, nil, obj, current); err != nil {
				t.Fatal(err)
			}
		}
		return applies.Load() - before
	}
	if n := pass("web:1"); n != 3 {
		t.Fatalf("first pass applied %d objects, want 3", n)
	}
	if n := pass("web:1"); n != 0 {
		t.Fatalf("a restarted operator applied %d unchanged objects, want 0", n)
	}

	// A label of someone else's leaves kok's fields alone: nothing to do.
	if err := c.Patch(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}},
		client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"team":"a"}}}`)), client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	if n := pass("web:1"); n != 0 {
		t.Fatalf("another writer's own label had %d objects applied, want 0", n)
	}

	// Someone else's change of a field kok applied is taken back.
	for _, p := range []struct {
		obj   client.Object
		patch string
	}{
		{&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}}, `{"spec":{"replicas":5}}`},
		{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}}, `{"data":{"config.yaml":"a: 2\n"}}`},
		{&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}}, `{"metadata":{"labels":{"app":null}}}`},
	} {
		if err := c.Patch(ctx, p.obj, client.RawPatch(types.MergePatchType, []byte(p.patch)), client.FieldOwner("someone")); err != nil {
			t.Fatal(err)
		}
	}
	if n := pass("web:1"); n != 3 {
		t.Fatalf("%d of 3 objects someone else changed were applied", n)
	}
	d := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "web"}, d); err != nil || *d.Spec.Replicas != 2 {
		t.Fatalf("replicas not taken back: %v %v", d.Spec.Replicas, err)
	}
	if n := pass("web:1"); n != 0 {
		t.Fatalf("after taking them back, %d objects applied again", n)
	}

	// A new rendering is applied.
	if n := pass("web:2"); n != 1 {
		t.Fatalf("a new image had %d objects applied, want 1", n)
	}
}

// TestApplyObjectUnlessHeld: a steady pass over rendered manifests (an
// addon's) reads and writes nothing back while the objects hold what kok
// applied, and applies what someone else changed or deleted.
func TestApplyObjectUnlessHeld(t *testing.T) {
	ctx := context.Background()
	c, err := client.New(testenv.Config, client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	manifest := []byte(`apiVersion: v1
kind: ConfigMap
metadata: {name: held, namespace: default, labels: {app: held}}
data: {a: "1"}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: held, namespace: default}
spec:
  selector: {matchLabels: {app: held}}
  template:
    metadata: {labels: {app: held}}
    spec:
      containers: [{name: c, image: "held:1", args: ["--v=2"], resources: {requests: {cpu: 10m}}}]
---
# Not one of client-go's kinds: proven held by a schema deduced from the
# object (metrics-server's APIService was re-sent on every pass).
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.held.example.com}
spec:
  group: held.example.com
  version: v1beta1
  service: {name: held, namespace: default}
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
`)
	// pass applies every object of the manifest as an addon's pass does
	// (read, then apply unless held) and says how many it sent.
	pass := func() int {
		t.Helper()
		objs, err := kube.Decode(manifest)
		if err != nil {
			t.Fatal(err)
		}
		sent := 0
		for _, obj := range objs {
			live := &unstructured.Unstructured{}
			live.SetGroupVersionKind(obj.GroupVersionKind())
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), live); err != nil {
				live = nil
			}
			ok, err := kube.ApplyObjectUnlessHeld(ctx, c, obj, live)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				sent++
			}
		}
		return sent
	}
	if n := pass(); n != 3 {
		t.Fatalf("first pass sent %d objects, want 3", n)
	}
	if n := pass(); n != 0 {
		t.Fatalf("a steady pass sent %d objects, want 0", n)
	}
	if err := c.Patch(ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "held", Namespace: "default"}},
		client.RawPatch(types.JSONPatchType, []byte(`[{"op":"replace","path":"/spec/template/spec/containers/0/args/0","value":"--v=9"}]`)),
		client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "held", Namespace: "default"}}); err != nil {
		t.Fatal(err)
	}
	svc := &unstructured.Unstructured{}
	svc.SetAPIVersion("apiregistration.k8s.io/v1")
	svc.SetKind("APIService")
	svc.SetName("v1beta1.held.example.com")
	if err := c.Patch(ctx, svc, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"versionPriority":5}}`)), client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	if n := pass(); n != 3 {
		t.Fatalf("after two edits and a deletion, %d of 3 objects were sent", n)
	}
	ds := &appsv1.DaemonSet{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "held"}, ds); err != nil || ds.Spec.Template.Spec.Containers[0].Args[0] != "--v=2" {
		t.Fatalf("edited args not taken back: %v %v", ds.Spec.Template.Spec.Containers, err)
	}
	if n := pass(); n != 0 {
		t.Fatalf("after putting them back, %d objects sent again", n)
	}
}
