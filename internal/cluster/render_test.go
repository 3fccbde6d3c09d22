package cluster

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
)

func renderAll(in RenderInput) []*appsv1.Deployment {
	return []*appsv1.Deployment{APIServerDeployment(in), ControllerManagerDeployment(in), SchedulerDeployment(in)}
}

func renderInput() RenderInput {
	spec := &clusterv1.KubeClusterSpec{Version: "v1.34.4", ControlPlane: clusterv1.ControlPlaneSpec{Replicas: 3},
		Network: clusterv1.NetworkSpec{ServiceCIDR: "10.96.0.0/12", DNSDomain: "cluster.local"}}
	return RenderInput{Names: Names{Cluster: "c", Namespace: "ns"}, Spec: spec,
		Catalog:    &clusterv1.KubernetesVersionSpec{Version: "v1.34.4", Images: clusterv1.ComponentImages{APIServer: "kube-apiserver:v1.34.4"}},
		ConfigHash: "h1", EtcdServers: "https://etcd:2379", EtcdPrefix: "/registry", ServiceIP: "10.201.0.9"}
}

// The recorded template is the whole template, as applied: kept again, it
// must not differ (a difference rolls the pods).
func TestRecordedTemplateIsTheTemplate(t *testing.T) {
	for _, d := range renderAll(renderInput()) {
		var rec corev1.PodTemplateSpec
		if err := json.Unmarshal([]byte(d.Annotations[AnnTemplate]), &rec); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(rec, d.Spec.Template) {
			t.Errorf("%s: recorded template differs from the rendered one", d.Name)
		}
	}
}

func TestKeepTemplate(t *testing.T) {
	in := renderInput()
	prev := APIServerDeployment(in)
	// An older kok rendered it differently.
	prev.Spec.Template.Spec.Containers[0].Args = append(prev.Spec.Template.Spec.Containers[0].Args, "--older-kok")
	prev = recordTemplate(prev)

	same := APIServerDeployment(in)
	if !KeepTemplate(prev, same) || !reflect.DeepEqual(same.Spec.Template, prev.Spec.Template) {
		t.Fatal("same inputs: the earlier template must be kept")
	}
	in.ConfigHash = "h2" // new certificates
	changed := APIServerDeployment(in)
	if KeepTemplate(prev, changed) || reflect.DeepEqual(changed.Spec.Template, prev.Spec.Template) {
		t.Fatal("changed inputs: the current rendering must be applied")
	}
	if KeepTemplate(nil, changed) {
		t.Fatal("nothing to keep without an earlier Deployment")
	}
	// Replicas are not in the template: scaling re-renders nothing.
	scaled := renderInput()
	scaled.Spec.ControlPlane.Replicas = 5
	if APIServerDeployment(scaled).Annotations[AnnInputs] != APIServerDeployment(renderInput()).Annotations[AnnInputs] {
		t.Fatal("replicas changed the inputs hash")
	}
}

// Every component gets kok's GC target; a KubeCluster's GOGC replaces it.
func TestDefaultGOGC(t *testing.T) {
	gogc := func(d *appsv1.Deployment) []string {
		var v []string
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.Name == "GOGC" {
				v = append(v, e.Value)
			}
		}
		return v
	}
	in := renderInput()
	for _, d := range renderAll(in) {
		if got := gogc(d); !reflect.DeepEqual(got, []string{DefaultGOGC}) {
			t.Errorf("%s: GOGC %v, want [%s]", d.Name, got, DefaultGOGC)
		}
	}
	in.Spec.ControlPlane.Scheduler.Env = []corev1.EnvVar{{Name: "GOGC", Value: "25"}, {Name: "X", Value: "y"}}
	if got := gogc(SchedulerDeployment(in)); !reflect.DeepEqual(got, []string{"25"}) {
		t.Errorf("scheduler with GOGC=25 in its env: GOGC %v", got)
	}
}

// Only the apiserver, behind a Service, has a readiness probe; the
// controller-manager and scheduler hold their leases through 40 s of a
// slow apiserver, unless extraArgs say otherwise.
func TestProbesAndLeases(t *testing.T) {
	in := renderInput()
	in.Spec.ControlPlane.Scheduler.ExtraArgs = map[string]string{"leader-elect-renew-deadline": "20s"}
	for _, d := range renderAll(in) {
		c := d.Spec.Template.Spec.Containers[0]
		if c.StartupProbe == nil || c.LivenessProbe == nil || c.LivenessProbe.TimeoutSeconds != 15 {
			t.Errorf("%s: startup %v, liveness %v", d.Name, c.StartupProbe, c.LivenessProbe)
		}
		api := c.Name == APIServer
		if (c.ReadinessProbe != nil) != api {
			t.Errorf("%s: readiness probe %v", d.Name, c.ReadinessProbe)
		}
		if api {
			continue
		}
		want := map[string]bool{"--leader-elect=true": true, "--leader-elect-lease-duration=60s": true, "--leader-elect-retry-period=5s": true,
			"--leader-elect-renew-deadline=40s": c.Name == ControllerManager, "--leader-elect-renew-deadline=20s": c.Name == Scheduler}
		for arg, ok := range want {
			if slices.Contains(c.Args, arg) != ok {
				t.Errorf("%s: has %s = %v, want %v (args %v)", d.Name, arg, !ok, ok, c.Args)
			}
		}
	}
}
