//go:build envtest

package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/testenv"
)

// c talks to the package's one real kube-apiserver (envtest) with the CRDs
// installed: the CRDs themselves must be accepted (CEL cost limits
// included) for the tests to start.
var c client.Client

func TestMain(m *testing.M) {
	testenv.Main(m, func(_ context.Context, cfg *rest.Config) (err error) {
		c, err = testenv.NewClient(cfg, nodev1.AddToScheme)
		return err
	})
}

const digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

func component(name, comp, version string) *nodev1.Component {
	return &nodev1.Component{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: nodev1.ComponentSpec{Component: comp, Version: version, Variants: []nodev1.ComponentVariant{{
			Name: "debian-amd64", Match: nodev1.HostMatch{OS: "debian", OSVersions: []string{"12"}, Architectures: []string{"amd64"}},
			Artifacts: []nodev1.Artifact{{Path: "/usr/local/bin/" + comp, Source: comp + ":" + version, Digest: digest, Mode: "0755"}},
			Files:     []nodev1.TemplatedFile{{Path: "/etc/kok/" + comp + ".conf", Template: "server: {{ .Cluster.APIServer }}\n"}},
			Scripts:   nodev1.Scripts{Install: "true", Check: "true", Uninstall: "true"},
			Services:  []nodev1.Service{{Name: comp, Command: []string{"/usr/local/bin/" + comp}}},
		}}}}
}

func TestComponentAdmission(t *testing.T) {
	ctx := context.Background()
	good := component("kubelet-v1.34.4", "kubelet", "v1.34.4")
	if err := c.Create(ctx, good); err != nil {
		t.Fatalf("a valid Component is refused: %v", err)
	}
	if good.Spec.Disruption != nodev1.DisruptionRestart || good.Spec.Variants[0].Files[0].Mode != "0644" {
		t.Fatalf("defaults not applied: disruption %q file mode %q", good.Spec.Disruption, good.Spec.Variants[0].Files[0].Mode)
	}

	for _, tc := range []struct {
		name   string
		mutate func(*nodev1.Component)
		want   string
	}{
		{"name not component-version", func(x *nodev1.Component) { x.Name = "kubelet" }, "metadata.name must be <spec.component>-<spec.version>"},
		{"no variant", func(x *nodev1.Component) { x.Spec.Variants = nil }, "spec.variants"},
		{"bad digest", func(x *nodev1.Component) { x.Spec.Variants[0].Artifacts[0].Digest = "md5:abc" }, "digest"},
		{"relative path", func(x *nodev1.Component) { x.Spec.Variants[0].Files[0].Path = "etc/x" }, "path"},
		{"no check script", func(x *nodev1.Component) { x.Spec.Variants[0].Scripts.Check = "" }, "check"},
		{"unknown disruption", func(x *nodev1.Component) { x.Spec.Disruption = "Sometimes" }, "Unsupported value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := component("containerd-1.6.20", "containerd", "1.6.20")
			tc.mutate(x)
			err := c.Create(ctx, x)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want a refusal saying %q, got %v", tc.want, err)
			}
		})
	}

	t.Run("a published version is immutable", func(t *testing.T) {
		edited := good.DeepCopy()
		edited.Spec.Variants[0].Scripts.Install = "echo changed"
		err := c.Update(ctx, edited)
		if err == nil || !strings.Contains(err.Error(), "publish the change as a new version") {
			t.Fatalf("want the edit refused, got %v", err)
		}
		// Labels and annotations may still change.
		labelled := good.DeepCopy()
		labelled.Labels = map[string]string{"team": "platform"}
		if err := c.Update(ctx, labelled); err != nil {
			t.Fatalf("a label change is refused: %v", err)
		}
	})
}

func machine(name string) *nodev1.Machine {
	return &nodev1.Machine{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: nodev1.MachineSpec{ClusterName: "team-a", Address: "10.200.8.11",
			SSH:        nodev1.SSHAccess{CredentialsSecret: "w1-ssh", HostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3Fm2zb0c0aO0qK2f7dQ8N6g3OjE0h1m8mLqfZ9K1Xz root@w1"},
			Components: []nodev1.ComponentRef{{Name: "containerd", Version: "1.6.20"}, {Name: "kubelet"}}}}
}

func TestMachineAdmission(t *testing.T) {
	ctx := context.Background()
	good := machine("w1")
	if err := c.Create(ctx, good); err != nil {
		t.Fatalf("a valid Machine is refused: %v", err)
	}
	if good.Spec.SSH.Port != 22 || good.Spec.SSH.User != "root" {
		t.Fatalf("defaults not applied: %+v", good.Spec.SSH)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*nodev1.Machine)
		want   string
	}{
		{"no host key", func(m *nodev1.Machine) { m.Spec.SSH.HostKey = "" }, "hostKey"},
		{"a fingerprint is not a key", func(m *nodev1.Machine) { m.Spec.SSH.HostKey = "SHA256:abcdef" }, "hostKey"},
		{"no component", func(m *nodev1.Machine) { m.Spec.Components = nil }, "components"},
		{"name is not a DNS label", func(m *nodev1.Machine) { m.Name = "w1.example" }, "the node's name"},
		{"port out of range", func(m *nodev1.Machine) { m.Spec.SSH.Port = 70000 }, "port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := machine("w2")
			tc.mutate(m)
			err := c.Create(ctx, m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want a refusal saying %q, got %v", tc.want, err)
			}
		})
	}
	for _, tc := range []struct {
		name   string
		mutate func(*nodev1.Machine)
		want   string
	}{
		{"cluster", func(m *nodev1.Machine) { m.Spec.ClusterName = "team-b" }, "clusterName is immutable"},
		{"address", func(m *nodev1.Machine) { m.Spec.Address = "10.200.8.12" }, "address is immutable"},
	} {
		t.Run("changing the "+tc.name, func(t *testing.T) {
			m := good.DeepCopy()
			tc.mutate(m)
			err := c.Update(ctx, m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want a refusal saying %q, got %v", tc.want, err)
			}
		})
	}
}

// TestDefaultCatalog: every Component of the default catalog
// (config/components) is accepted as it is shipped, and renders for a
// Debian 12 amd64 host (machine.Render's side is tested there).
func TestDefaultCatalog(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "..", "config", "components", "*-*.yaml"))
	if len(files) < 4 {
		t.Fatalf("config/components holds %d Components, want containerd, kubelet (each version) and kok-agent", len(files))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		comp := &nodev1.Component{}
		if err := yaml.UnmarshalStrict(data, comp); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		// Other tests may have made one of the same name.
		_ = c.Delete(context.Background(), comp.DeepCopy())
		if err := c.Create(context.Background(), comp); err != nil {
			t.Errorf("%s is refused: %v", f, err)
		}
	}
}
