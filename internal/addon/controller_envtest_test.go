//go:build envtest

package addon_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	addonv1 "github.com/kubeonkube/kok/api/addon/v1alpha1"
	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/addon"
	"github.com/kubeonkube/kok/internal/manager"
	"github.com/kubeonkube/kok/internal/testenv"
	"github.com/kubeonkube/kok/internal/workload"
)

var c client.Client

// TestMain starts one real kube-apiserver (envtest) with kok's CRDs and
// the addon controllers; the same apiserver plays the business cluster.
func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	testenv.Main(m, func(ctx context.Context, cfg *rest.Config) error {
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		if c, err = client.New(cfg, client.Options{Scheme: manager.Scheme()}); err != nil {
			return err
		}
		dyn, err := dynamic.NewForConfig(cfg)
		if err != nil {
			return err
		}
		business := &workload.Cluster{Client: cs, Objects: c, Dynamic: dyn, Server: cfg.Host, CA: cfg.CAData}
		mgr, err := ctrl.NewManager(cfg, testenv.ManagerOptions(manager.Scheme()))
		if err != nil {
			return err
		}
		if err := (&addon.Reconciler{Client: mgr.GetClient(), ImageRegistry: "registry.example:5000/kok",
			Workload: func(context.Context, *clusterv1.KubeCluster) (*workload.Cluster, error) { return business, nil },
		}).SetupWithManager(mgr); err != nil {
			return err
		}
		go func() { _ = mgr.Start(ctx) }()
		return nil
	})
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	testenv.WaitFor(t, what, 40*time.Second, f)
}

func condition(t *testing.T, name, typ string) *metav1.Condition {
	ca := &addonv1.ClusterAddon{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, ca); err != nil {
		return nil
	}
	return meta.FindStatusCondition(ca.Status.Conditions, typ)
}

// TestClusterAddons: a KubeCluster's spec.addons becomes ClusterAddons
// whose objects are applied into the business cluster, put back when
// deleted or edited (but for fields a user keeps), and removed with them.
func TestClusterAddons(t *testing.T) {
	ctx := context.Background()
	data, err := os.ReadFile("../../config/addons/coredns-1.14.7.yaml")
	if err != nil {
		t.Fatal(err)
	}
	coredns := &addonv1.Addon{}
	if err := yaml.UnmarshalStrict(data, coredns); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, coredns); err != nil {
		t.Fatal(err)
	}
	kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "default"},
		// envtest's apiserver serves Services from 10.0.0.0/24.
		Spec: clusterv1.KubeClusterSpec{Version: "v1.34.4", Paused: true, Network: clusterv1.NetworkSpec{ServiceCIDR: "10.0.0.0/24"}, Addons: []clusterv1.AddonRef{
			{Name: "coredns", Values: &apiextensionsv1.JSON{Raw: []byte(`{"replicas": 2}`)}}}}}
	if err := c.Create(ctx, kc); err != nil {
		t.Fatal(err)
	}
	kc.Status = clusterv1.KubeClusterStatus{Version: "v1.34.4", AdminKubeconfigSecret: "demo-admin-kubeconfig"}
	if err := c.Status().Update(ctx, kc); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{}
	key := client.ObjectKey{Namespace: "kube-system", Name: "coredns"}

	t.Run("spec.addons is applied into the business cluster", func(t *testing.T) {
		eventually(t, "coredns applied", func() error {
			cond := condition(t, "demo-coredns", addonv1.AddonApplied)
			if cond == nil || cond.Status != metav1.ConditionTrue {
				return fmt.Errorf("Applied %+v", cond)
			}
			return c.Get(ctx, key, dep)
		})
		if *dep.Spec.Replicas != 2 || dep.Spec.Template.Spec.Containers[0].Image != "registry.example:5000/kok/coredns:v1.14.7" {
			t.Fatalf("deployment: replicas %d, image %s", *dep.Spec.Replicas, dep.Spec.Template.Spec.Containers[0].Image)
		}
		// No kubelet runs here: Healthy says which workload waits.
		cond := condition(t, "demo-coredns", addonv1.AddonHealthy)
		if cond == nil || cond.Reason != "NotAvailable" || !strings.Contains(cond.Message, "Deployment kube-system/coredns: 0/2 available") {
			t.Fatalf("Healthy %+v", cond)
		}
	})

	t.Run("a deleted or edited object is put back; a kept field stays", func(t *testing.T) {
		if err := c.Delete(ctx, dep); err != nil {
			t.Fatal(err)
		}
		deleted := time.Now()
		eventually(t, "the Deployment back", func() error {
			d := &appsv1.Deployment{}
			if err := c.Get(ctx, key, d); err != nil || d.UID == dep.UID {
				return fmt.Errorf("not back yet (%v)", err)
			}
			return nil
		})
		t.Logf("the deleted Deployment was back after %s", time.Since(deleted).Round(100*time.Millisecond))
		// An edit without the annotation is reverted; with it, kept.
		edit := func(replicas int32, keep string) {
			d := &appsv1.Deployment{}
			if err := c.Get(ctx, key, d); err != nil {
				t.Fatal(err)
			}
			d.Spec.Replicas = &replicas
			if keep != "" {
				d.Annotations = map[string]string{addon.KeepAnnotation: keep}
			}
			if err := c.Update(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		edit(5, "")
		d := &appsv1.Deployment{}
		eventually(t, "replicas reverted to the addon's 2", func() error {
			if err := c.Get(ctx, key, d); err != nil || *d.Spec.Replicas != 2 {
				return fmt.Errorf("replicas %v (%v)", d.Spec.Replicas, err)
			}
			return nil
		})
		// Passes over objects that hold the rendering write nothing.
		held := &appsv1.Deployment{}
		if err := c.Get(ctx, key, held); err != nil {
			t.Fatal(err)
		}
		time.Sleep(12 * time.Second) // two passes of an unhealthy addon
		if err := c.Get(ctx, key, d); err != nil || d.ResourceVersion != held.ResourceVersion {
			t.Fatalf("a held Deployment was written again: resourceVersion %s → %s (%v)", held.ResourceVersion, d.ResourceVersion, err)
		}
		edit(4, "spec.replicas")
		time.Sleep(12 * time.Second) // two passes of an unhealthy addon
		if err := c.Get(ctx, key, d); err != nil || *d.Spec.Replicas != 4 {
			t.Fatalf("the kept replicas: %v (%v)", d.Spec.Replicas, err)
		}
	})

	t.Run("bad input is named in conditions or refused", func(t *testing.T) {
		patch := client.MergeFrom(kc.DeepCopy())
		kc.Spec.Addons = append(kc.Spec.Addons, clusterv1.AddonRef{Name: "flannel"}, clusterv1.AddonRef{Name: "kube-dns", Version: "9"})
		if err := c.Patch(ctx, kc, patch); err != nil {
			t.Fatal(err)
		}
		eventually(t, "a missing addon named", func() error {
			cond := condition(t, "demo-flannel", addonv1.AddonApplied)
			if cond == nil || cond.Reason != "NotRenderable" || !strings.Contains(cond.Message, "apply an Addon named flannel-<version>") {
				return fmt.Errorf("Applied %+v", cond)
			}
			return nil
		})
		edited := coredns.DeepCopy()
		edited.Spec.Manifests += "\n# changed\n"
		if err := c.Update(ctx, edited); err == nil || !strings.Contains(err.Error(), "an Addon version is immutable") {
			t.Fatalf("editing an Addon version: %v", err)
		}
	})

	t.Run("an addon taken out of spec.addons is removed from the business cluster", func(t *testing.T) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(kc), kc); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(kc.DeepCopy())
		// An empty list, not a missing one (that gets the defaults).
		kc.Spec.Addons = []clusterv1.AddonRef{}
		if err := c.Patch(ctx, kc, patch); err != nil {
			t.Fatal(err)
		}
		eventually(t, "coredns removed", func() error {
			if err := c.Get(ctx, key, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("deployment still there (%v)", err)
			}
			if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "demo-coredns"}, &addonv1.ClusterAddon{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("ClusterAddon still there (%v)", err)
			}
			return nil
		})
	})
}
