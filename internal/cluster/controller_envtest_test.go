//go:build envtest

package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/cluster"
	"github.com/kubeonkube/kok/internal/etcd"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/manager"
	"github.com/kubeonkube/kok/internal/pki"
	"github.com/kubeonkube/kok/internal/testenv"
)

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// markRolledOut plays the Deployment controller (envtest runs none): every
// replica of the current template is ready.
func markRolledOut(t *testing.T, c client.Client, ns, name string) {
	t.Helper()
	waitFor(t, "status of "+name, func() error {
		var d appsv1.Deployment
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &d); err != nil {
			return err
		}
		r := *d.Spec.Replicas
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: r, UpdatedReplicas: r, ReadyReplicas: r, AvailableReplicas: r}
		return c.Status().Update(context.Background(), &d)
	})
}

func deploymentVersion(c client.Client, ns, name string) string {
	var d appsv1.Deployment
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &d); err != nil {
		return ""
	}
	return d.Annotations[cluster.AnnVersion]
}

// TestReconcileOrder drives a KubeCluster against a real apiserver, playing
// etcd and the Deployment controller by hand: etcd first, certificates,
// apiservers before controller-manager and scheduler, an upgrade in order,
// and an ordered teardown.
func TestReconcileOrder(t *testing.T) {
	root := filepath.Join("..", "..")
	cfg := testenv.Config
	// Every write the operator sends, to show that a steady pass sends none.
	var writes atomic.Int32
	var lastWrite atomic.Value
	mcfg := rest.CopyConfig(cfg)
	mcfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			if req.Method != http.MethodGet {
				writes.Add(1)
				lastWrite.Store(req.Method + " " + req.URL.Path)
			}
			return rt.RoundTrip(req)
		})
	}
	mgr, err := ctrl.NewManager(mcfg, testenv.ManagerOptions(manager.Scheme()))
	if err != nil {
		t.Fatal(err)
	}
	var bootstraps atomic.Int32
	r := &cluster.Reconciler{Client: mgr.GetClient(), ImageRegistry: "registry.example",
		Bootstrap: func(context.Context, []byte, string, []byte) error { bootstraps.Add(1); return nil }}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = mgr.Start(ctx) }()
	c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"v1.33.13", "v1.34.4"} {
		data, err := os.ReadFile(filepath.Join(root, "config", "catalog", "kubernetesversion-"+v+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := kube.ApplyManifests(ctx, c, data); err != nil {
			t.Fatal(err)
		}
	}
	const ns, name = "default", "t1"
	n := cluster.Names{Cluster: name, Namespace: ns}
	kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: clusterv1.KubeClusterSpec{Version: "v1.33.13"}}
	if err := c.Create(ctx, kc); err != nil {
		t.Fatal(err)
	}

	// etcd first: the EtcdCluster is made, nothing else runs yet.
	ec := &etcdv1.EtcdCluster{}
	waitFor(t, "managed EtcdCluster", func() error {
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: n.ManagedEtcd()}, ec)
	})
	if ec.Spec.Version != "v3.6.16" || ec.Spec.Replicas != 1 || !metav1.IsControlledBy(ec, kc) {
		t.Fatalf("managed etcd: version %s replicas %d owners %v", ec.Spec.Version, ec.Spec.Replicas, ec.OwnerReferences)
	}
	var svc corev1.Service
	waitFor(t, "apiserver Service", func() error { return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: n.Service()}, &svc) })
	consistently(t, "no apiserver Deployment before the etcd CA exists (its etcd client certificate needs it)", func() error {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: n.Deployment(cluster.APIServer)}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("apiserver Deployment: %v", err)
		}
		return nil
	})

	// The etcd operator makes the cluster's CA (played here), then etcd
	// becomes available.
	etcdCA, err := pki.NewCA("etcd")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := etcdCA.KeyPEM()
	en := etcd.Names{Cluster: ec.Name, Namespace: ns}
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: en.CASecret(), Namespace: ns},
		Data: map[string][]byte{"ca.crt": etcdCA.CertPEM(), "ca.key": key}}); err != nil {
		t.Fatal(err)
	}
	// It publishes the CA's Secret in status (the contract between the
	// two operators), still unavailable.
	ec.Status = etcdv1.EtcdClusterStatus{CASecretName: en.CASecret(), Phase: "Creating"}
	if err := c.Status().Update(ctx, ec); err != nil {
		t.Fatal(err)
	}
	// The apiservers start with etcd, before it is available (they wait
	// for it), and so do controller-manager and scheduler.
	for _, comp := range []string{cluster.APIServer, cluster.ControllerManager, cluster.Scheduler} {
		waitFor(t, comp+" created with etcd", func() error {
			return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: n.Deployment(comp)}, &appsv1.Deployment{})
		})
	}
	ec.Status = etcdv1.EtcdClusterStatus{Version: "v3.6.16", ReadyMembers: 1, ClientEndpoint: en.ClientEndpoint(), Phase: "Running", CASecretName: en.CASecret(),
		Conditions: []metav1.Condition{{Type: etcdv1.ConditionAvailable, Status: metav1.ConditionTrue, Reason: "Quorum", LastTransitionTime: metav1.Now()}}}
	if err := c.Status().Update(ctx, ec); err != nil {
		t.Fatal(err)
	}

	// Then the apiservers, with every Secret they mount.
	var api appsv1.Deployment
	waitFor(t, "apiserver Deployment", func() error {
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: n.Deployment(cluster.APIServer)}, &api)
	})
	if img := api.Spec.Template.Spec.Containers[0].Image; img != "registry.example/kube-apiserver:v1.33.13" {
		t.Fatalf("apiserver image %s", img)
	}
	for _, s := range []string{n.CASecret(), n.APIServerSecret(), n.EtcdClientSecret(), n.AdminKubeconfig(), n.SchedulerKubeconfig()} {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: s}, &corev1.Secret{}); err != nil {
			t.Fatalf("secret %s: %v", s, err)
		}
	}
	markRolledOut(t, c, ns, n.Deployment(cluster.APIServer))
	for _, comp := range []string{cluster.ControllerManager, cluster.Scheduler} {
		waitFor(t, comp, func() error {
			if v := deploymentVersion(c, ns, n.Deployment(comp)); v != "v1.33.13" {
				return fmt.Errorf("%s at %q", comp, v)
			}
			return nil
		})
		markRolledOut(t, c, ns, n.Deployment(comp))
	}
	waitFor(t, "Ready", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(kc), kc); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(kc.Status.Conditions, clusterv1.ConditionReady) || kc.Status.Version != "v1.33.13" {
			return fmt.Errorf("phase %s version %s conditions %v", kc.Status.Phase, kc.Status.Version, kc.Status.Conditions)
		}
		return nil
	})
	if bootstraps.Load() == 0 {
		t.Fatal("bootstrap objects were not ensured")
	}
	// The default addons list konnectivity: each apiserver pod runs its
	// proxy server, the Service carries the agents' port, and the
	// condition says no server runs (envtest runs no pods).
	if err := c.Get(ctx, client.ObjectKeyFromObject(&api), &api); err != nil {
		t.Fatal(err)
	}
	if cs := api.Spec.Template.Spec.Containers; len(cs) != 2 || cs[1].Image != "registry.example/konnectivity-server:v0.34.0" {
		t.Fatalf("apiserver pod containers %v", cs)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: n.EgressSelectorConfigMap()}, &corev1.ConfigMap{}); err != nil {
		t.Fatalf("egress selector ConfigMap: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: n.Service()}, &svc); err != nil || len(svc.Spec.Ports) != 2 {
		t.Fatalf("apiserver Service ports %v (%v)", svc.Spec.Ports, err)
	}
	if cond := meta.FindStatusCondition(kc.Status.Conditions, clusterv1.ConditionKonnectivityReady); cond == nil || cond.Reason != "NoServer" {
		t.Fatalf("KonnectivityReady %+v", cond)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(&api), &api); err != nil {
		t.Fatal(err)
	}
	apiGen := api.Generation
	bootstrapsBefore := bootstraps.Load()

	// A reconcile of an unchanged cluster sends nothing: no apply, no
	// status write, nothing into the business cluster.
	consistently(t, "the cluster settled", func() error { return nil })
	writesBefore := writes.Load()
	if err := c.Patch(ctx, kc, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"poke":"1"}}}`))); err != nil {
		t.Fatal(err)
	}
	consistently(t, "an idle reconcile changes nothing", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(&api), &api); err != nil || api.Generation != apiGen {
			return fmt.Errorf("an idle reconcile changed the apiserver Deployment (generation %d → %d, %v)", apiGen, api.Generation, err)
		}
		if n := bootstraps.Load(); n != bootstrapsBefore {
			return fmt.Errorf("an idle reconcile applied the bootstrap objects again (%d → %d)", bootstrapsBefore, n)
		}
		if n := writes.Load(); n != writesBefore {
			return fmt.Errorf("an idle reconcile sent %d writes (last: %v)", n-writesBefore, lastWrite.Load())
		}
		return nil
	})
	// Someone else's edit of a Deployment's spec is taken back.
	if err := c.Patch(ctx, &api, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":5}}`)), client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the edited replicas taken back", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(&api), &api); err != nil {
			return err
		}
		if *api.Spec.Replicas != 1 {
			return fmt.Errorf("replicas %d", *api.Spec.Replicas)
		}
		return nil
	})
	apiGen = api.Generation
	markRolledOut(t, c, ns, n.Deployment(cluster.APIServer))

	// A template rendered by another kok-manager version (marked here) is
	// kept while its inputs stay the same: upgrading kok-manager does not
	// roll a running control plane.
	api.Spec.Template.Annotations["rendered-by"] = "an-older-kok"
	tmpl, _ := json.Marshal(api.Spec.Template)
	api.Annotations[cluster.AnnTemplate] = string(tmpl)
	// Applied as kok applies, so the current kok owns those fields.
	applied := &appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: api.Name, Namespace: api.Namespace, Annotations: api.Annotations,
			Labels: api.Labels, OwnerReferences: api.OwnerReferences}, Spec: api.Spec}
	if err := kube.Apply(ctx, c, nil, applied); err != nil {
		t.Fatal(err)
	}
	apiGen = applied.Generation
	markRolledOut(t, c, ns, n.Deployment(cluster.APIServer))
	if err := c.Patch(ctx, kc, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"poke":"2"}}}`))); err != nil {
		t.Fatal(err)
	}
	consistently(t, "the older template stays while the inputs do", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(&api), &api); err != nil || api.Generation != apiGen || api.Spec.Template.Annotations["rendered-by"] == "" {
			return fmt.Errorf("the older template was replaced without a change of inputs (generation %d → %d, %v)", apiGen, api.Generation, err)
		}
		return nil
	})
	// A real change (an apiserver flag) brings the current rendering.
	if err := c.Patch(ctx, kc, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"controlPlane":{"apiServer":{"extraArgs":{"v":"2"}}}}}`))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "apiserver re-rendered for the new flag", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(&api), &api); err != nil {
			return err
		}
		if api.Spec.Template.Annotations["rendered-by"] != "" || !slices.Contains(api.Spec.Template.Spec.Containers[0].Args, "--v=2") {
			return fmt.Errorf("template annotations %v, args %v", api.Spec.Template.Annotations, api.Spec.Template.Spec.Containers[0].Args)
		}
		return nil
	})
	markRolledOut(t, c, ns, n.Deployment(cluster.APIServer))

	// Without the konnectivity addon the apiservers reach nodes directly:
	// no proxy server, no agents' port, no condition.
	if err := c.Patch(ctx, kc, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"addons":[{"name":"kube-proxy"},{"name":"coredns"}]}}`))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "konnectivity gone", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(&api), &api); err != nil {
			return err
		}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: n.Service()}, &svc); err != nil {
			return err
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(kc), kc); err != nil {
			return err
		}
		if len(api.Spec.Template.Spec.Containers) != 1 || len(svc.Spec.Ports) != 1 ||
			meta.FindStatusCondition(kc.Status.Conditions, clusterv1.ConditionKonnectivityReady) != nil {
			return fmt.Errorf("%d containers, Service ports %v, conditions %v", len(api.Spec.Template.Spec.Containers), svc.Spec.Ports, kc.Status.Conditions)
		}
		return nil
	})
	markRolledOut(t, c, ns, n.Deployment(cluster.APIServer))

	// Hibernation scales every component to zero without touching a pod
	// template (so waking rolls nothing), and says so; waking scales back.
	templates := map[string]string{}
	for _, comp := range []string{cluster.APIServer, cluster.ControllerManager, cluster.Scheduler} {
		var d appsv1.Deployment
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: n.Deployment(comp)}, &d); err != nil {
			t.Fatal(err)
		}
		templates[comp] = d.Annotations[cluster.AnnTemplate]
	}
	hibernate := func(on bool, replicas int32, phase string) {
		t.Helper()
		if err := c.Patch(ctx, kc, client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"hibernated":%t}}`, on)))); err != nil {
			t.Fatal(err)
		}
		for _, comp := range []string{cluster.APIServer, cluster.ControllerManager, cluster.Scheduler} {
			waitFor(t, fmt.Sprintf("%s at %d replicas", comp, replicas), func() error {
				var d appsv1.Deployment
				if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: n.Deployment(comp)}, &d); err != nil {
					return err
				}
				if *d.Spec.Replicas != replicas || d.Annotations[cluster.AnnTemplate] != templates[comp] {
					return fmt.Errorf("replicas %d, template changed: %t", *d.Spec.Replicas, d.Annotations[cluster.AnnTemplate] != templates[comp])
				}
				return nil
			})
			markRolledOut(t, c, ns, n.Deployment(comp))
		}
		waitFor(t, "phase "+phase, func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(kc), kc); err != nil {
				return err
			}
			if kc.Status.Phase != phase {
				return fmt.Errorf("phase %s, conditions %v", kc.Status.Phase, kc.Status.Conditions)
			}
			return nil
		})
	}
	hibernate(true, 0, clusterv1.PhaseHibernated)
	if cond := meta.FindStatusCondition(kc.Status.Conditions, clusterv1.ConditionReady); cond == nil || cond.Reason != "Hibernated" ||
		kc.Status.Version != "v1.33.13" || kc.Status.ServiceIP == "" {
		t.Fatalf("hibernated: Ready %+v, version %q, service IP %q", cond, kc.Status.Version, kc.Status.ServiceIP)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(ec), &etcdv1.EtcdCluster{}); err != nil {
		t.Fatalf("etcd is kept while hibernated: %v", err)
	}
	hibernate(false, 1, clusterv1.PhaseReady)

	// Upgrade: apiservers first; the others wait until every apiserver runs it.
	if err := c.Patch(ctx, kc, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"version":"v1.34.4"}}`))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "apiserver at v1.34.4", func() error {
		if v := deploymentVersion(c, ns, n.Deployment(cluster.APIServer)); v != "v1.34.4" {
			return fmt.Errorf("apiserver at %s", v)
		}
		return nil
	})
	consistently(t, "controller-manager waits for the apiservers", func() error {
		if v := deploymentVersion(c, ns, n.Deployment(cluster.ControllerManager)); v != "v1.33.13" {
			return fmt.Errorf("controller-manager moved to %s before the apiservers finished", v)
		}
		return nil
	})
	if err := c.Get(ctx, client.ObjectKeyFromObject(kc), kc); err != nil || kc.Status.Phase != clusterv1.PhaseUpgrading {
		t.Fatalf("phase during the upgrade: %s (%v)", kc.Status.Phase, err)
	}
	markRolledOut(t, c, ns, n.Deployment(cluster.APIServer))
	for _, comp := range []string{cluster.ControllerManager, cluster.Scheduler} {
		waitFor(t, comp+" upgraded", func() error {
			if v := deploymentVersion(c, ns, n.Deployment(comp)); v != "v1.34.4" {
				return fmt.Errorf("%s at %q", comp, v)
			}
			return nil
		})
		markRolledOut(t, c, ns, n.Deployment(comp))
	}
	waitFor(t, "installed v1.34.4", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(kc), kc); err != nil {
			return err
		}
		if kc.Status.Version != "v1.34.4" || kc.Status.Phase != clusterv1.PhaseReady {
			return fmt.Errorf("version %s phase %s", kc.Status.Version, kc.Status.Phase)
		}
		return nil
	})

	// Teardown: the Deployments, the Service and the managed etcd go, then
	// the KubeCluster.
	if err := c.Delete(ctx, kc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "KubeCluster gone", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(kc), kc); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	for _, obj := range []client.Object{
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: n.Deployment(cluster.APIServer)}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: n.Service()}},
		&etcdv1.EtcdCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: n.ManagedEtcd()}},
	} {
		err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		if !apierrors.IsNotFound(err) && obj.GetDeletionTimestamp() == nil {
			t.Errorf("%T %s left after teardown (%v)", obj, obj.GetName(), err)
		}
	}

	// deletionPolicy Retain keeps the managed EtcdCluster, no longer owned.
	kept := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: "t2", Namespace: ns},
		Spec: clusterv1.KubeClusterSpec{Version: "v1.34.4", DeletionPolicy: "Retain"}}
	if err := c.Create(ctx, kept); err != nil {
		t.Fatal(err)
	}
	n2 := cluster.Names{Cluster: "t2", Namespace: ns}
	waitFor(t, "t2 etcd and finalizer", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(kept), kept); err != nil {
			return err
		}
		if len(kept.Finalizers) == 0 {
			return fmt.Errorf("no finalizer yet")
		}
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: n2.ManagedEtcd()}, &etcdv1.EtcdCluster{})
	})
	if err := c.Delete(ctx, kept); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "t2 gone, its etcd kept", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(kept), kept); !apierrors.IsNotFound(err) {
			return fmt.Errorf("KubeCluster still there (%v)", err)
		}
		var e etcdv1.EtcdCluster
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: n2.ManagedEtcd()}, &e); err != nil {
			return err
		}
		if e.DeletionTimestamp != nil || len(e.OwnerReferences) != 0 {
			return fmt.Errorf("retained EtcdCluster: deleting %v, owners %v", e.DeletionTimestamp, e.OwnerReferences)
		}
		return nil
	})
}

// TestSharedEtcdWaitsForTenant: on a shared EtcdCluster with
// authentication the control plane is created only once the cluster's etcd
// user exists (an apiserver started before it is refused and restarts with
// a back-off), and status says what it waits for.
func TestSharedEtcdWaitsForTenant(t *testing.T) {
	root := filepath.Join("..", "..")
	mgr, err := ctrl.NewManager(testenv.Config, testenv.ManagerOptions(manager.Scheme()))
	if err != nil {
		t.Fatal(err)
	}
	var tenants atomic.Value
	r := &cluster.Reconciler{Client: mgr.GetClient(), ImageRegistry: "registry.example",
		Bootstrap: func(context.Context, []byte, string, []byte) error { return nil },
		EtcdTenant: func(_ context.Context, _ *etcdv1.EtcdCluster, user, prefix string) error {
			tenants.Store(user + " " + prefix)
			return nil
		}}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = mgr.Start(ctx) }()
	c, err := client.New(testenv.Config, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "catalog", "kubernetesversion-v1.34.4.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := kube.ApplyManifests(ctx, c, data); err != nil {
		t.Fatal(err)
	}
	const ns = "shared"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	ec := &etcdv1.EtcdCluster{ObjectMeta: metav1.ObjectMeta{Name: "fleet", Namespace: ns},
		Spec: etcdv1.EtcdClusterSpec{Replicas: 1, Version: "v3.6.16", EnableAuth: true}}
	if err := c.Create(ctx, ec); err != nil {
		t.Fatal(err)
	}
	etcdCA, err := pki.NewCA("etcd")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := etcdCA.KeyPEM()
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "fleet-etcd-ca", Namespace: ns},
		Data: map[string][]byte{"ca.crt": etcdCA.CertPEM(), "ca.key": key}}); err != nil {
		t.Fatal(err)
	}
	ec.Status = etcdv1.EtcdClusterStatus{CASecretName: "fleet-etcd-ca", Phase: "Creating", AuthEnabled: true}
	if err := c.Status().Update(ctx, ec); err != nil {
		t.Fatal(err)
	}
	kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: "tenant", Namespace: ns},
		Spec: clusterv1.KubeClusterSpec{Version: "v1.34.4", Etcd: clusterv1.EtcdSpec{Ref: &clusterv1.EtcdRef{Name: "fleet"}}}}
	if err := c.Create(ctx, kc); err != nil {
		t.Fatal(err)
	}
	n := cluster.Names{Cluster: kc.Name, Namespace: ns}
	waitFor(t, "status saying what the control plane waits for", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(kc), kc); err != nil {
			return err
		}
		if cond := meta.FindStatusCondition(kc.Status.Conditions, clusterv1.ConditionProgressing); cond == nil ||
			!strings.Contains(cond.Message, "waits for EtcdCluster shared/fleet to be available") {
			return fmt.Errorf("Progressing %+v", cond)
		}
		return nil
	})
	consistently(t, "no control plane before the etcd user", func() error {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: n.Deployment(cluster.APIServer)}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("apiserver Deployment: %v", err)
		}
		return nil
	})
	ec.Status.Phase, ec.Status.Version, ec.Status.ReadyMembers = "Running", "v3.6.16", 1
	ec.Status.ClientEndpoint = "https://fleet-client.shared.svc:2379"
	ec.Status.Conditions = []metav1.Condition{{Type: etcdv1.ConditionAvailable, Status: metav1.ConditionTrue, Reason: "Quorum", LastTransitionTime: metav1.Now()}}
	if err := c.Status().Update(ctx, ec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the control plane, after the etcd user", func() error {
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: n.Deployment(cluster.APIServer)}, &appsv1.Deployment{})
	})
	if got, want := tenants.Load(), cluster.EtcdUser(n)+" "+cluster.SharedEtcdPrefix(kc)+"/"; got != want {
		t.Fatalf("etcd user %v, want %q", got, want)
	}
}
