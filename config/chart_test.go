package config

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kubeonkube/kok/internal/kube"
)

const chart = "../charts/kok"

// TestChartInSync: the chart's copies of the generated CRDs, RBAC rules and
// catalog match config/ (make generate copies them).
func TestChartInSync(t *testing.T) {
	pairs := map[string]string{"rbac/role.yaml": filepath.Join(chart, "files", "role.yaml")}
	for _, glob := range []struct{ src, dst string }{{"crd/bases/*.yaml", "crds"}, {"catalog/kubernetesversion-*.yaml", "files/catalog"}, {"components/*-*.yaml", "files/components"}, {"addons/*-*.yaml", "files/addons"}} {
		srcs, _ := filepath.Glob(glob.src)
		dsts, _ := filepath.Glob(filepath.Join(chart, glob.dst, "*.yaml"))
		if len(srcs) != len(dsts) {
			t.Errorf("%s has %d files, %s %d: run make generate", glob.src, len(srcs), glob.dst, len(dsts))
		}
		for _, s := range srcs {
			pairs[s] = filepath.Join(chart, glob.dst, filepath.Base(s))
		}
	}
	for src, dst := range pairs {
		a, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(dst)
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s (%v): run make generate", dst, src, err)
		}
	}
}

// TestChartRenders renders the chart with helm (built by make tools) and
// checks that it installs what the kustomize manifests install, and that one
// registry value reaches every image.
func TestChartRenders(t *testing.T) {
	helm := os.Getenv("KOK_HELM")
	if helm == "" {
		t.Skip("KOK_HELM unset (make test builds helm and sets it)")
	}
	if _, err := os.Stat(helm); err != nil {
		t.Fatalf("helm at %s: %v (make tools builds it)", helm, err)
	}
	out, err := exec.Command(helm, "template", "kok", chart, "--namespace", "kok-system", "--include-crds",
		"--set", "registry=registry.example.com/mirror").CombinedOutput()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	objs, err := kube.Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	rendered := map[string]bool{}
	for _, o := range objs {
		rendered[o.GetKind()+"/"+o.GetName()] = true
		if o.GetKind() != "Deployment" {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			cm := c.(map[string]any)
			if img := cm["image"].(string); !strings.HasPrefix(img, "registry.example.com/mirror/") {
				t.Errorf("image %s ignores the registry value", img)
			}
			args, _ := cm["args"].([]any)
			if !slices.Contains(args, any("--image-registry=registry.example.com/mirror")) {
				t.Errorf("manager args %v do not pass the registry on", args)
			}
		}
	}
	manifests, err := Manifests()
	if err != nil {
		t.Fatal(err)
	}
	want, err := kube.Decode(manifests)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range want {
		key := o.GetKind() + "/" + o.GetName()
		if o.GetKind() == "Namespace" {
			continue // helm install --create-namespace makes it
		}
		if !rendered[key] {
			t.Errorf("the chart lacks %s, which config/ installs", key)
		}
	}
}
