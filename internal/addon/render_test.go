package addon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	addonv1 "github.com/kubeonkube/kok/api/addon/v1alpha1"
	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
)

func testCluster() *clusterv1.KubeCluster {
	return &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo"},
		Spec: clusterv1.KubeClusterSpec{Version: "v1.34.4", Network: clusterv1.NetworkSpec{
			ServiceCIDR: "10.96.0.0/12", PodCIDR: "10.244.0.0/16", DNSDomain: "cluster.local"}},
		Status: clusterv1.KubeClusterStatus{Version: "v1.34.4"}}
}

// TestCatalogRenders renders every Addon of config/addons for a cluster.
func TestCatalogRenders(t *testing.T) {
	files, err := filepath.Glob("../../config/addons/*-*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no addons: %v", err)
	}
	cv, err := ClusterValuesFor(testCluster(), "https://10.200.0.7:6443")
	if err != nil {
		t.Fatal(err)
	}
	if cv.APIServerHost != "10.200.0.7" || cv.APIServerPort != 6443 || cv.DNSAddress != "10.96.0.10" || cv.Minor != "v1.34" {
		t.Fatalf("values %+v", cv)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		a := &addonv1.Addon{}
		if err := yaml.UnmarshalStrict(data, a); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if a.Name != a.Spec.Addon+"-"+a.Spec.Version {
			t.Errorf("%s: named %s", f, a.Name)
		}
		values, err := MergeValues(a.Spec.Values, nil)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := Render(a, Values{Cluster: cv, Registry: "kok.local", Values: values})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, o := range objs {
			if o.GetLabels()[LabelAddon] != a.Spec.Addon {
				t.Errorf("%s: %s not labelled", f, Key(o))
			}
			if o.GetKind() == "Deployment" || o.GetKind() == "DaemonSet" {
				containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
				for _, c := range containers {
					if img := c.(map[string]any)["image"].(string); !strings.HasPrefix(img, "kok.local/") {
						t.Errorf("%s: image %s is not from the registry setting", f, img)
					}
				}
				// konnectivity's agents dial the proxy servers where
				// nodes reach the apiserver.
				if a.Spec.Addon == "konnectivity" {
					args := fmt.Sprint(containers[0].(map[string]any)["args"])
					if !strings.Contains(args, "--proxy-server-host=10.200.0.7") || !strings.Contains(args, "--proxy-server-port=8132") {
						t.Errorf("%s: agent args %s", f, args)
					}
				}
			}
		}
	}
}

func TestSelectAddon(t *testing.T) {
	mk := func(version string, minors ...string) addonv1.Addon {
		return addonv1.Addon{Spec: addonv1.AddonSpec{Addon: "coredns", Version: version, KubernetesVersions: minors}}
	}
	catalog := []addonv1.Addon{mk("1.9.0", "v1.33"), mk("1.10.0", "v1.33", "v1.34"), mk("1.12.0", "v1.34", "v1.35")}
	for _, tc := range []struct {
		pinned, minor, want, err string
	}{
		{"", "v1.33", "1.10.0", ""},
		{"", "v1.34", "1.12.0", ""},
		{"1.9.0", "v1.33", "1.9.0", ""},
		{"1.9.0", "v1.34", "", "supports Kubernetes v1.33, not v1.34"},
		{"2.0.0", "v1.34", "", "no coredns 2.0.0 (it has 1.9.0, 1.10.0, 1.12.0)"},
		{"", "v1.36", "", "no version of coredns supports Kubernetes v1.36"},
	} {
		got, err := SelectAddon(catalog, "coredns", tc.pinned, tc.minor)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s@%s: error %v, want %q", tc.pinned, tc.minor, err, tc.err)
		case tc.err == "" && (err != nil || got.Spec.Version != tc.want):
			t.Errorf("%s@%s: %v %v, want %s", tc.pinned, tc.minor, got, err, tc.want)
		}
	}
	if _, err := SelectAddon(catalog, "flannel", "", "v1.34"); err == nil || !strings.Contains(err.Error(), "apply an Addon named flannel-<version>") {
		t.Errorf("a missing addon: %v", err)
	}
}

func TestMergeValuesAndKeep(t *testing.T) {
	got, err := MergeValues(&apiextensionsv1.JSON{Raw: []byte(`{"replicas":1,"resources":{"cpu":"10m","memory":"32Mi"}}`)},
		&apiextensionsv1.JSON{Raw: []byte(`{"replicas":3,"resources":{"memory":"64Mi"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	res := got["resources"].(map[string]any)
	if got["replicas"] != float64(3) || res["cpu"] != "10m" || res["memory"] != "64Mi" {
		t.Errorf("merged %v", got)
	}
	if _, err := MergeValues(&apiextensionsv1.JSON{Raw: []byte(`[1]`)}, nil); err == nil {
		t.Error("a list as values is refused")
	}
	obj := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"replicas": int64(1), "paused": false}}}
	if Keep(obj, "spec.replicas, metadata.labels.x") {
		t.Error("a field list does not skip the object")
	}
	if _, found, _ := unstructured.NestedInt64(obj.Object, "spec", "replicas"); found {
		t.Error("spec.replicas kept by the user is still applied")
	}
	if !Keep(obj, "*") {
		t.Error(`"*" leaves the whole object alone`)
	}
}

func TestWorkloadProblem(t *testing.T) {
	dep := func(replicas, available, updated, gen, observed int64) *unstructured.Unstructured {
		o := &unstructured.Unstructured{Object: map[string]any{"kind": "Deployment",
			"metadata": map[string]any{"name": "coredns", "namespace": "kube-system", "generation": gen},
			"spec":     map[string]any{"replicas": replicas},
			"status":   map[string]any{"availableReplicas": available, "updatedReplicas": updated, "observedGeneration": observed}}}
		return o
	}
	if p := WorkloadProblem(dep(2, 2, 2, 3, 3)); p != "" {
		t.Errorf("an available Deployment: %q", p)
	}
	if p := WorkloadProblem(dep(2, 1, 2, 3, 3)); !strings.Contains(p, "1/2 available") {
		t.Errorf("a Deployment short of replicas: %q", p)
	}
	if p := WorkloadProblem(dep(2, 2, 2, 4, 3)); p == "" {
		t.Error("a Deployment whose new generation is not observed yet is not healthy")
	}
	if CompareVersions("v0.28.10", "v0.28.9") <= 0 || CompareVersions("1.14.7", "1.14.7") != 0 || CompareVersions("1.2", "1.10") >= 0 {
		t.Error("versions compare by their numbers")
	}
}
