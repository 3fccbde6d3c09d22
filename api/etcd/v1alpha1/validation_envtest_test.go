//go:build envtest

package v1alpha1_test

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/testenv"
)

var c client.Client

func TestMain(m *testing.M) {
	testenv.Main(m, func(_ context.Context, cfg *rest.Config) (err error) {
		c, err = testenv.NewClient(cfg, etcdv1.AddToScheme)
		return err
	})
}

func TestEtcdClusterAdmission(t *testing.T) {
	ctx := context.Background()

	newCluster := func(name string, mutate func(*etcdv1.EtcdCluster)) *etcdv1.EtcdCluster {
		e := &etcdv1.EtcdCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
		e.Spec.Replicas = 3
		e.Spec.Version = "v3.6.16"
		if mutate != nil {
			mutate(e)
		}
		return e
	}

	t.Run("defaults", func(t *testing.T) {
		e := &etcdv1.EtcdCluster{ObjectMeta: metav1.ObjectMeta{Name: "defaults", Namespace: "default"}}
		// Replicas and version are zero here; send them absent so the
		// API defaults apply.
		u := map[string]any{"apiVersion": etcdv1.GroupVersion.String(), "kind": "EtcdCluster",
			"metadata": map[string]any{"name": "defaults", "namespace": "default"}, "spec": map[string]any{}}
		if err := c.Create(ctx, unstructuredFrom(u)); err != nil {
			t.Fatal(err)
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(e), e); err != nil {
			t.Fatal(err)
		}
		if e.Spec.Replicas != 3 || e.Spec.Version != "v3.6.16" || e.Spec.Storage.Size.String() != "1Gi" {
			t.Fatalf("defaults not applied: %+v", e.Spec)
		}
	})

	rejected := []struct {
		name    string
		mutate  func(*etcdv1.EtcdCluster)
		message string
	}{
		{"zero replicas", func(e *etcdv1.EtcdCluster) { e.Spec.Replicas = 0 }, "replicas must be 1, 3, 5 or 7"},
		{"even replicas", func(e *etcdv1.EtcdCluster) { e.Spec.Replicas = 4 }, "replicas must be 1, 3, 5 or 7"},
		{"too many replicas", func(e *etcdv1.EtcdCluster) { e.Spec.Replicas = 9 }, "replicas must be 1, 3, 5 or 7"},
		{"unknown version", func(e *etcdv1.EtcdCluster) { e.Spec.Version = "v3.4.0" }, "unsupported etcd version: use one of"},
		{"emptyDir with class", func(e *etcdv1.EtcdCluster) {
			cls := "fast"
			e.Spec.Storage = etcdv1.EtcdStorage{EmptyDir: true, StorageClassName: &cls, Size: resource.MustParse("1Gi")}
		}, "storageClassName has no meaning"},
	}
	for i, tc := range rejected {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Create(ctx, newCluster("bad-"+string(rune('a'+i)), tc.mutate))
			if err == nil || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("want rejection with %q, got %v", tc.message, err)
			}
		})
	}

	t.Run("name too long for the derived objects", func(t *testing.T) {
		err := c.Create(ctx, newCluster(strings.Repeat("e", 57), nil))
		if err == nil || !strings.Contains(err.Error(), "the longest name that works is 56 characters") {
			t.Fatalf("want a 57-character name refused, got %v", err)
		}
		if err := c.Create(ctx, newCluster(strings.Repeat("e", 56), nil)); err != nil {
			t.Fatalf("a 56-character name is refused: %v", err)
		}
	})

	t.Run("downgrade refused, upgrade allowed", func(t *testing.T) {
		e := newCluster("upgrade", func(e *etcdv1.EtcdCluster) { e.Spec.Version = "v3.5.35" })
		if err := c.Create(ctx, e); err != nil {
			t.Fatal(err)
		}
		e.Spec.Version = "v3.6.16"
		if err := c.Update(ctx, e); err != nil {
			t.Fatalf("one-minor upgrade refused: %v", err)
		}
		e.Spec.Version = "v3.5.35"
		err := c.Update(ctx, e)
		if err == nil || !strings.Contains(err.Error(), "cannot be downgraded") {
			t.Fatalf("want downgrade refused, got %v", err)
		}
	})

	t.Run("storage immutable", func(t *testing.T) {
		e := newCluster("storage", nil)
		if err := c.Create(ctx, e); err != nil {
			t.Fatal(err)
		}
		e.Spec.Storage.Size = resource.MustParse("5Gi")
		err := c.Update(ctx, e)
		if err == nil || !strings.Contains(err.Error(), "spec.storage is immutable") {
			t.Fatalf("want storage change refused, got %v", err)
		}
	})
}
