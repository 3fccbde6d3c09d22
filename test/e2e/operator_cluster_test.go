//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/cluster"
	"github.com/kubeonkube/kok/internal/clusterctl"
	"github.com/kubeonkube/kok/internal/etcd"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/manager"
	"github.com/kubeonkube/kok/internal/pki"
)

func metaClient(t *testing.T, cfg *local.Config) client.Client {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(rc, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// businessClient reads a cluster's admin kubeconfig the way a user does,
// with `kok get kubeconfig`.
func businessClient(t *testing.T, stateDir, name string) kubernetes.Interface {
	t.Helper()
	return kubernetes.NewForConfigOrDie(businessRESTConfig(t, stateDir, name))
}

func getCluster(t *testing.T, c client.Client, ns, name string) *clusterv1.KubeCluster {
	t.Helper()
	kc := &clusterv1.KubeCluster{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, kc); err != nil {
		t.Fatal(err)
	}
	return kc
}

func waitClusterReady(t *testing.T, c client.Client, kc *clusterv1.KubeCluster, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := clusterctl.Wait(ctx, c, kc, testWriter{t}); err != nil {
		t.Fatal(err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// controlPlanePods maps pod name to UID for a cluster's control plane.
func controlPlanePods(t *testing.T, c client.Client, ns, name string) map[string]types.UID {
	t.Helper()
	var pods corev1.PodList
	if err := c.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels{kube.LabelInstance: name}); err != nil {
		t.Fatal(err)
	}
	out := map[string]types.UID{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			out[p.Name] = p.UID
		}
	}
	return out
}

// settled waits until a cluster runs exactly its declared pods: every
// Deployment rolled out and no pod left terminating from an earlier rollout.
func settled(t *testing.T, c client.Client, ns, name string) {
	t.Helper()
	eventually(t, 2*time.Minute, "control plane rolled out, no pod terminating", func() error {
		n := cluster.Names{Cluster: name, Namespace: ns}
		for _, comp := range []string{cluster.APIServer, cluster.ControllerManager, cluster.Scheduler} {
			var d appsv1.Deployment
			if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: n.Deployment(comp)}, &d); err != nil {
				return err
			}
			want := *d.Spec.Replicas
			if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas != want || d.Status.Replicas != want || d.Status.AvailableReplicas != want {
				return fmt.Errorf("%s still rolling out", comp)
			}
		}
		var pods corev1.PodList
		if err := c.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels{kube.LabelInstance: name}); err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				return fmt.Errorf("%s terminating", p.Name)
			}
		}
		return nil
	})
}

// TestKubeCluster creates a business cluster with the CLI, uses it through
// its own kubeconfig, breaks what the operator owns and restarts the
// operator, then deletes the cluster.
func TestKubeCluster(t *testing.T) {
	cfg := sharedCluster(t)
	dir := shared.stateDir
	ctx := context.Background()
	c := metaClient(t, cfg)
	const name = "alpha"

	start := time.Now()
	out := mustKok(t, dir, "create", "cluster", name, "--version", "v1.34.4")
	if !strings.Contains(out, "is Ready") {
		t.Fatalf("kok create cluster did not report Ready:\n%s", out)
	}
	t.Logf("KubeCluster Ready in %s", time.Since(start).Round(100*time.Millisecond))
	if out := mustKok(t, dir, "get", "clusters"); !strings.Contains(out, name) || !strings.Contains(out, "Ready") {
		t.Fatalf("kok get clusters:\n%s", out)
	}
	bc := businessClient(t, dir, name)
	// Rendered once: nothing the first passes wrote was issued or rendered
	// a second time (each would roll the control plane as it started).
	for _, comp := range []string{cluster.APIServer, cluster.ControllerManager, cluster.Scheduler} {
		var d appsv1.Deployment
		if err := c.Get(ctx, client.ObjectKey{Namespace: name, Name: cluster.Names{Cluster: name, Namespace: name}.Deployment(comp)}, &d); err != nil {
			t.Fatal(err)
		}
		if d.Generation != 1 {
			t.Errorf("%s Deployment at generation %d right after creation: it was rendered again", comp, d.Generation)
		}
	}

	t.Run("the business cluster serves", func(t *testing.T) {
		nss, err := bc.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(nss.Items) < 4 {
			t.Fatalf("namespaces: %v", nss.Items)
		}
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "hello"}, Data: map[string]string{"k": "v"}}
		if _, err := bc.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		got, err := bc.CoreV1().ConfigMaps("default").Get(ctx, "hello", metav1.GetOptions{})
		if err != nil || got.Data["k"] != "v" {
			t.Fatalf("read back: %v %v", got, err)
		}
		// The controller-manager works: the namespace gets its root CA.
		eventually(t, time.Minute, "kube-root-ca.crt in default", func() error {
			_, err := bc.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
			return err
		})
		for _, lease := range []string{"kube-controller-manager", "kube-scheduler"} {
			eventually(t, time.Minute, lease+" holds its lease", func() error {
				l, err := bc.CoordinationV1().Leases("kube-system").Get(ctx, lease, metav1.GetOptions{})
				if err != nil {
					return err
				}
				if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || time.Since(l.Spec.RenewTime.Time) > 30*time.Second {
					return fmt.Errorf("lease %s not held", lease)
				}
				return nil
			})
		}
		if _, err := bc.CoreV1().ConfigMaps("kube-public").Get(ctx, "cluster-info", metav1.GetOptions{}); err != nil {
			t.Fatalf("bootstrap cluster-info: %v", err)
		}
	})

	t.Run("a node joins with a bootstrap token", func(t *testing.T) {
		joinWithBootstrapToken(t, bc, businessRESTConfig(t, dir, name))
	})

	n := cluster.Names{Cluster: name, Namespace: name}
	t.Run("deleted or edited objects come back", func(t *testing.T) {
		kc := getCluster(t, c, name, name)
		ip := kc.Status.ServiceIP
		for _, obj := range []client.Object{
			&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: n.Deployment(cluster.APIServer)}},
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: n.Service()}},
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: n.SchedulerKubeconfig()}},
		} {
			if err := c.Delete(ctx, obj); err != nil {
				t.Fatal(err)
			}
		}
		// A hand edit of a declared field is reverted.
		edit := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"template":{"spec":{"containers":[{"name":"kube-controller-manager","image":"kok.local/kube-controller-manager:v0.0.0"}]}}}}`))
		if err := c.Patch(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: n.Deployment(cluster.ControllerManager)}}, edit); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, "objects restored", func() error {
			var d appsv1.Deployment
			if err := c.Get(ctx, client.ObjectKey{Namespace: name, Name: n.Deployment(cluster.ControllerManager)}, &d); err != nil {
				return err
			}
			if img := d.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(img, ":v1.34.4") {
				return fmt.Errorf("controller-manager image still %s", img)
			}
			var s corev1.Service
			if err := c.Get(ctx, client.ObjectKey{Namespace: name, Name: n.Service()}, &s); err != nil {
				return err
			}
			if s.Spec.ClusterIP != ip {
				return fmt.Errorf("Service came back at %s, was %s", s.Spec.ClusterIP, ip)
			}
			return c.Get(ctx, client.ObjectKey{Namespace: name, Name: n.SchedulerKubeconfig()}, &corev1.Secret{})
		})
		waitClusterReady(t, c, getCluster(t, c, name, name), 3*time.Minute)
		eventually(t, time.Minute, "business cluster answers again", func() error {
			_, err := bc.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
			return err
		})
	})

	t.Run("restarting kok-manager leaves the control plane alone", func(t *testing.T) {
		settled(t, c, name, name)
		before := controlPlanePods(t, c, name, name)
		kc := getCluster(t, c, name, name)
		depGen := map[string]int64{}
		for _, comp := range []string{cluster.APIServer, cluster.ControllerManager, cluster.Scheduler} {
			var d appsv1.Deployment
			if err := c.Get(ctx, client.ObjectKey{Namespace: name, Name: n.Deployment(comp)}, &d); err != nil {
				t.Fatal(err)
			}
			depGen[comp] = d.Generation
		}
		var mgrPods corev1.PodList
		if err := c.List(ctx, &mgrPods, client.InNamespace("kok-system"), client.MatchingLabels{"app.kubernetes.io/name": "kok", "app.kubernetes.io/component": "manager"}); err != nil {
			t.Fatal(err)
		}
		if len(mgrPods.Items) == 0 {
			t.Fatal("no kok-manager pod")
		}
		for i := range mgrPods.Items {
			if err := c.Delete(ctx, &mgrPods.Items[i]); err != nil {
				t.Fatal(err)
			}
		}
		cs := clientset(t, cfg.Kubeconfig())
		waitPodsReady(t, cs, "kok-system", "app.kubernetes.io/name=kok,app.kubernetes.io/component=manager", 1, 2*time.Minute)
		eventually(t, 2*time.Minute, "a new kok-manager leads", func() error {
			l, err := cs.CoordinationV1().Leases("kok-system").Get(ctx, "kok-manager.kok.dev", metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, p := range mgrPods.Items {
				if l.Spec.HolderIdentity != nil && strings.HasPrefix(*l.Spec.HolderIdentity, p.Name) {
					return fmt.Errorf("the old manager %s still holds the lease", p.Name)
				}
			}
			return nil
		})
		// An idle reconcile writes nothing, so prove the new manager works
		// on this cluster by removing something it must put back.
		if err := c.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: n.Service()}}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, "the new manager restored the Service", func() error {
			return c.Get(ctx, client.ObjectKey{Namespace: name, Name: n.Service()}, &corev1.Service{})
		})
		waitClusterReady(t, c, kc, time.Minute)
		consistently(t, 5*time.Second, "control-plane pods unchanged after kok-manager restarted", func() error {
			after := controlPlanePods(t, c, name, name)
			for pod, uid := range before {
				if after[pod] != uid {
					return fmt.Errorf("control-plane pod %s changed (%s → %s) when kok-manager restarted", pod, uid, after[pod])
				}
			}
			return nil
		})
		for comp, gen := range depGen {
			var d appsv1.Deployment
			if err := c.Get(ctx, client.ObjectKey{Namespace: name, Name: n.Deployment(comp)}, &d); err != nil {
				t.Fatal(err)
			}
			if d.Generation != gen {
				t.Errorf("%s Deployment changed (generation %d → %d) when kok-manager restarted", comp, gen, d.Generation)
			}
		}
	})

	t.Run("delete tears down in order", func(t *testing.T) {
		mustKok(t, dir, "delete", "cluster", name)
		eventually(t, 2*time.Minute, "namespace gone", func() error {
			err := c.Get(ctx, client.ObjectKey{Name: name}, &corev1.Namespace{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("namespace %s still there (%v)", name, err)
		})
	})
}

// TestKubeClusterUpgradeHA upgrades three apiservers from v1.33 to v1.34
// while clients keep calling them and a Service on two machines, and
// counts failed requests; kube-proxy and the kubelets follow once the
// control plane finished.
func TestKubeClusterUpgradeHA(t *testing.T) {
	cfg := sharedCluster(t)
	dir := shared.stateDir
	ctx := context.Background()
	c := metaClient(t, cfg)
	const name = "ha"
	mustKok(t, dir, "create", "cluster", name, "--version", "v1.33.13", "--replicas", "3")
	bc := businessClient(t, dir, name)
	if v, err := bc.Discovery().ServerVersion(); err != nil || v.GitVersion != "v1.33.13" {
		t.Fatalf("server version %v, %v", v, err)
	}
	// Two machines at v1.33 run a web app behind a NodePort Service.
	nodes := []string{"ha-1", "ha-2"}
	for _, n := range nodes {
		mustKok(t, dir, "machine", "create", n, "--cluster", name)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			_, _ = kok(t, dir, "machine", "delete", n)
		}
	})
	for _, n := range nodes {
		waitMachine(t, c, name, n, nodev1.MachineReady, 5*time.Minute)
	}
	web := deployWeb(t, bc, "web", nodes)
	entry := net.JoinHostPort(getMachine(t, c, name, nodes[0]).Spec.Address, fmt.Sprint(web.nodePort))
	// Ready pods are not yet a programmed NodePort: kube-proxy refuses
	// connections until it has synced the new Service (a CI run counted
	// six such refusals, in the first 0.1 s, as upgrade failures).
	eventually(t, time.Minute, "the NodePort answers", func() error {
		_, err := get(entry, "/hostname")
		return err
	})
	var api, svc, logs tally
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				var err error
				switch {
				case i%2 == 0:
					_, err = bc.CoreV1().Namespaces().List(rctx, metav1.ListOptions{})
				case i%10 == 1:
					// kubectl logs: apiserver → konnectivity → kubelet.
					p := web.pods[nodes[i%len(nodes)]]
					_, err = bc.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(rctx)
					cancel()
					logs.record(err)
					continue
				default:
					cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("w%d-%d", w, i)}}
					_, err = bc.CoreV1().ConfigMaps("default").Create(rctx, cm, metav1.CreateOptions{})
				}
				cancel()
				api.record(err)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, err := get(entry, "/hostname")
			svc.record(err)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	// Every change of the web Service's ready endpoints, to place a
	// failed request.
	var sliceLog tally
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	if wi, err := bc.DiscoveryV1().EndpointSlices("web").Watch(wctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=web"}); err == nil {
		go func() {
			for ev := range wi.ResultChan() {
				if es, ok := ev.Object.(*discoveryv1.EndpointSlice); ok {
					ready := 0
					for _, e := range es.Endpoints {
						if e.Conditions.Ready != nil && *e.Conditions.Ready {
							ready++
						}
					}
					sliceLog.record(fmt.Errorf("%s %s: %d of %d endpoints ready", ev.Type, es.Name, ready, len(es.Endpoints)))
				}
			}
		}()
	}
	// The Machines' UpToDate conditions: the nodes move one at a time.
	var nodeLog tally
	var maxMoving atomic.Int32
	go func() {
		last := map[string]string{}
		for wctx.Err() == nil {
			moving := int32(0)
			for _, n := range nodes {
				var m nodev1.Machine
				if err := c.Get(wctx, client.ObjectKey{Namespace: name, Name: n}, &m); err != nil {
					continue
				}
				cond := meta.FindStatusCondition(m.Status.Conditions, nodev1.MachineUpToDate)
				if cond == nil {
					continue
				}
				if cond.Reason == "Upgrading" {
					moving++
				}
				if last[n] != cond.Reason {
					last[n] = cond.Reason
					nodeLog.record(fmt.Errorf("%s %s: %s", n, cond.Reason, cond.Message))
				}
			}
			if moving > maxMoving.Load() {
				maxMoving.Store(moving)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	time.Sleep(2 * time.Second)
	start := time.Now()
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"version":"v1.34.4"}}`))
	kc := getCluster(t, c, name, name)
	if err := c.Patch(ctx, kc, patch); err != nil {
		t.Fatal(err)
	}
	waitClusterReady(t, c, kc, 5*time.Minute)
	took := time.Since(start)
	t.Logf("upgrade started %s, control plane done %s", start.Format("15:04:05.000"), time.Now().Format("15:04:05.000"))
	// Then the addons and the nodes: kube-proxy's image is the release
	// the control plane runs, and so is the kubelet of a Machine that
	// pins none.
	eventually(t, 5*time.Minute, "kube-proxy and the kubelets at v1.34.4", func() error {
		ds, err := bc.AppsV1().DaemonSets("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if img := ds.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(img, ":v1.34.4") || ds.Status.UpdatedNumberScheduled != ds.Status.DesiredNumberScheduled ||
			ds.Status.NumberAvailable != ds.Status.DesiredNumberScheduled {
			return fmt.Errorf("kube-proxy %s: %d of %d updated, %d available", img, ds.Status.UpdatedNumberScheduled, ds.Status.DesiredNumberScheduled, ds.Status.NumberAvailable)
		}
		for _, n := range nodes {
			if m := getMachine(t, c, name, n); m.Status.KubeletVersion != "v1.34.4" || !meta.IsStatusConditionTrue(m.Status.Conditions, nodev1.MachineReady) {
				return fmt.Errorf("%s: kubelet %s, %s", n, m.Status.KubeletVersion, describeConditions(m.Status.Conditions))
			}
		}
		return nil
	})
	all := time.Since(start)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("upgrade v1.33.13 → v1.34.4 with 3 apiservers took %s (%s with kube-proxy and two kubelets); apiserver: %d requests ok, %d failed; Service: %d ok, %d failed",
		took.Round(100*time.Millisecond), all.Round(100*time.Millisecond), api.ok.Load(), api.failed.Load(), svc.ok.Load(), svc.failed.Load())
	// Logs go through the proxy servers, which are replaced with their
	// apiservers; the agents find the new ones through the Service. The
	// window is measured, not judged.
	t.Logf("kubectl logs during the upgrade (through konnectivity): %d ok, %d failed\n%s", logs.ok.Load(), logs.failed.Load(), logs.list())
	t.Logf("the Machines' UpToDate conditions:\n%s", nodeLog.list())
	// Failures are reported after the teardown, last in the output.
	var failures []string
	if f := api.failed.Load(); f > 0 {
		failures = append(failures, fmt.Sprintf("%d requests failed during the upgrade:\n%s", f, api.list()))
	}
	if f := svc.failed.Load(); f > 0 {
		failures = append(failures, fmt.Sprintf("%d requests to the Service failed during the upgrade:\n%s\nthe web EndpointSlices meanwhile:\n%s\nthe Machines meanwhile:\n%s",
			f, svc.list(), sliceLog.list(), nodeLog.list()))
	}
	if n := maxMoving.Load(); n > 1 {
		failures = append(failures, fmt.Sprintf("%d Machines were upgrading at once:\n%s", n, nodeLog.list()))
	}
	defer func() {
		for _, f := range failures {
			t.Error(f)
		}
	}()
	if v, err := bc.Discovery().ServerVersion(); err != nil || v.GitVersion != "v1.34.4" {
		t.Fatalf("after the upgrade: server version %v, %v", v, err)
	}
	for _, comp := range kc.Status.Components {
		if comp.Version != "v1.34.4" || comp.ReadyReplicas != 3 {
			t.Errorf("component %+v not upgraded", comp)
		}
	}
	// The new proxy servers all have their agents again.
	eventually(t, 2*time.Minute, "KonnectivityReady after the upgrade", func() error {
		kc := getCluster(t, c, name, name)
		if cond := meta.FindStatusCondition(kc.Status.Conditions, clusterv1.ConditionKonnectivityReady); cond == nil || cond.Status != metav1.ConditionTrue {
			return fmt.Errorf("%+v", cond)
		}
		return nil
	})
	for _, n := range nodes {
		mustKok(t, dir, "machine", "delete", n)
	}
	if os.Getenv("KOK_E2E_KEEP") == "" {
		mustKok(t, dir, "delete", "cluster", name)
	}
}

// TestKubeClusterBadSpecs: invalid specs are refused at admission with a
// message that says what to do (CRD rules and kok's webhook).
func TestKubeClusterBadSpecs(t *testing.T) {
	cfg := sharedCluster(t)
	ctx := context.Background()
	c := metaClient(t, cfg)
	ns := "badspecs"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Logf("deleting namespace %s: %v", ns, err)
		}
	}()
	mk := func(name string, mut func(*clusterv1.KubeCluster)) *clusterv1.KubeCluster {
		kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: clusterv1.KubeClusterSpec{Version: "v1.34.4", Paused: true}}
		if mut != nil {
			mut(kc)
		}
		return kc
	}
	for _, tc := range []struct {
		name string
		mut  func(*clusterv1.KubeCluster)
		want string
	}{
		{"unknown-version", func(kc *clusterv1.KubeCluster) { kc.Spec.Version = "v1.34.99" }, `Unsupported value: "v1.34.99": supported values: "v1.33.13", "v1.34.4"`},
		{"bad-version", func(kc *clusterv1.KubeCluster) { kc.Spec.Version = "1.34" }, "spec.version"},
		{"zero-replicas", func(kc *clusterv1.KubeCluster) { kc.Spec.ControlPlane.Replicas = -1 }, "spec.controlPlane.replicas"},
		{"two-etcds", func(kc *clusterv1.KubeCluster) {
			kc.Spec.Etcd = clusterv1.EtcdSpec{Managed: &clusterv1.ManagedEtcd{}, Ref: &clusterv1.EtcdRef{Name: "shared"}}
		}, "set only one of spec.etcd.managed and spec.etcd.ref"},
		{"bad-cidr", func(kc *clusterv1.KubeCluster) { kc.Spec.Network.ServiceCIDR = "10.96.0.0/33" }, "serviceCIDR must be a CIDR"},
		{strings.Repeat("n", 52), nil, "the longest name that works is 51 characters"},
	} {
		err := c.Create(ctx, mk(tc.name, tc.mut))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want an error containing %q, got %v", tc.name, tc.want, err)
		}
	}

	longest := mk(strings.Repeat("n", 51), nil)
	if err := c.Create(ctx, longest); err != nil {
		t.Fatalf("a 51-character name is refused: %v", err)
	}
	kc := mk("good", nil)
	if err := c.Create(ctx, kc); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ patch, want string }{
		{`{"spec":{"version":"v1.33.13"}}`, "Kubernetes cannot be downgraded"},
		{`{"spec":{"version":"v1.36.0"}}`, "upgrades go one minor version at a time"},
		{`{"spec":{"version":"v1.35.0"}}`, `Unsupported value: "v1.35.0"`},
		{`{"spec":{"network":{"serviceCIDR":"10.100.0.0/16"}}}`, "network.serviceCIDR is immutable"},
	} {
		err := c.Patch(ctx, kc.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(tc.patch)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("patch %s: want an error containing %q, got %v", tc.patch, tc.want, err)
		}
	}
	if err := c.Delete(ctx, kc); err != nil {
		t.Fatal(err)
	}

	// A flag the apiserver does not know is accepted (extraArgs are the
	// user's to choose), and the apiserver's own error reaches the
	// KubeCluster's conditions and its component status.
	bad := mk("unknown-flag", func(kc *clusterv1.KubeCluster) {
		kc.Spec.Paused = false
		kc.Spec.ControlPlane.APIServer.ExtraArgs = map[string]string{"bogus-flag": "1"}
	})
	if err := c.Create(ctx, bad); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, "the apiserver's own error in the KubeCluster's status", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(bad), bad); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(bad.Status.Conditions, clusterv1.ConditionControlPlaneAvailable)
		if cond == nil || cond.Status != metav1.ConditionFalse || !strings.Contains(cond.Message, "unknown flag: --bogus-flag") {
			return fmt.Errorf("ControlPlaneAvailable: %+v", cond)
		}
		for _, comp := range bad.Status.Components {
			if comp.Name == cluster.APIServer && strings.Contains(comp.LastError, "unknown flag: --bogus-flag") {
				t.Logf("ControlPlaneAvailable=False: %s", cond.Message)
				return nil
			}
		}
		return fmt.Errorf("components %+v", bad.Status.Components)
	})
	if err := c.Delete(ctx, bad); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "the cluster with the unknown flag gone", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(bad), bad); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
}

// TestInstallManifests: what a platform team applies to its own meta cluster
// — the kustomize tree and the Helm chart — is accepted by a real apiserver
// (server-side dry run of every object).
func TestInstallManifests(t *testing.T) {
	cfg := sharedCluster(t)
	ctx := context.Background()
	c := metaClient(t, cfg)
	kcmd := exec.Command(kokBin(t), "kubectl", "kustomize", filepath.Join(repoRoot(), "config", "default"))
	kcmd.Env = append(os.Environ(), "KOK_STATE_DIR="+shared.stateDir)
	kustomized, err := kcmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v (%s)", err, kustomized)
	}
	sources := map[string][]byte{"kustomize config/default": kustomized}
	if helm := os.Getenv("KOK_HELM"); helm != "" {
		out, err := exec.Command(helm, "template", "kok", filepath.Join(repoRoot(), "charts", "kok"), "--namespace", "kok-system",
			"--include-crds", "--set", "registry=registry.example.com/kok").CombinedOutput()
		if err != nil {
			t.Fatalf("helm template: %v\n%s", err, out)
		}
		sources["helm charts/kok"] = out
	} else {
		t.Log("KOK_HELM unset: the chart is not checked (make e2e sets it)")
	}
	for name, data := range sources {
		objs, err := kube.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if err := c.Patch(ctx, o, client.Apply, client.FieldOwner("kok-e2e-dryrun"), client.ForceOwnership, client.DryRunAll); err != nil {
				t.Errorf("%s: %s %s rejected: %v", name, o.GetKind(), o.GetName(), err)
			}
		}
		t.Logf("%s: %d objects accepted", name, len(objs))
	}
}

// TestKubeClusterSharedEtcd runs two business clusters on one EtcdCluster:
// each keeps its keys under its own prefix and sees only its own objects.
func TestKubeClusterSharedEtcd(t *testing.T) {
	cfg := sharedCluster(t)
	ctx := context.Background()
	c := metaClient(t, cfg)
	const etcdNS = "shared-etcd"
	tenants := []string{"tenant-a", "tenant-b"}
	for _, ns := range append([]string{etcdNS}, tenants...) {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	e := &etcdv1.EtcdCluster{ObjectMeta: metav1.ObjectMeta{Name: "shared", Namespace: etcdNS},
		Spec: etcdv1.EtcdClusterSpec{Replicas: 1, Version: "v3.6.16", EnableAuth: true}}
	if err := c.Create(ctx, e); err != nil {
		t.Fatal(err)
	}
	var clusters []*clusterv1.KubeCluster
	for _, name := range tenants {
		kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: name},
			Spec: clusterv1.KubeClusterSpec{Version: "v1.34.4", Etcd: clusterv1.EtcdSpec{Ref: &clusterv1.EtcdRef{Name: "shared", Namespace: etcdNS}}}}
		if err := c.Create(ctx, kc); err != nil {
			t.Fatal(err)
		}
		clusters = append(clusters, kc)
	}
	for _, kc := range clusters {
		waitClusterReady(t, c, kc, 4*time.Minute)
	}
	a, b := businessClient(t, shared.stateDir, tenants[0]), businessClient(t, shared.stateDir, tenants[1])
	if _, err := a.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "only-in-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CoreV1().Namespaces().Get(ctx, "only-in-a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("tenant-b sees tenant-a's namespace (err %v)", err)
	}
	if _, err := b.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}

	// etcd itself confines each apiserver to its prefix: tenant-a's
	// certificate reads tenant-a's keys and is refused tenant-b's.
	if err := c.Get(ctx, client.ObjectKeyFromObject(e), e); err != nil || !e.Status.AuthEnabled {
		t.Fatalf("shared EtcdCluster: auth enabled %v (%v)", e.Status.AuthEnabled, err)
	}
	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: tenants[0], Name: cluster.Names{Cluster: tenants[0], Namespace: tenants[0]}.EtcdClientSecret()}, &sec); err != nil {
		t.Fatal(err)
	}
	tlsA, err := etcd.ClientTLS(pki.SecretData{"tls.crt": sec.Data[pki.KeyCert], "tls.key": sec.Data[pki.KeyKey], "ca.crt": sec.Data[pki.KeyCA]})
	if err != nil {
		t.Fatal(err)
	}
	asA := etcdClientAs(t, c, e, tlsA)
	defer asA.Close()
	own, err := asA.Get(ctx, cluster.SharedEtcdPrefix(clusters[0])+"/registry/namespaces/only-in-a")
	if err != nil || len(own.Kvs) != 1 {
		t.Fatalf("tenant-a reading its own namespace from etcd: %v (%d keys)", err, len(own.Kvs))
	}
	if _, err := asA.Get(ctx, cluster.SharedEtcdPrefix(clusters[1])+"/", clientv3.WithPrefix()); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("tenant-a's etcd user read tenant-b's prefix (err %v)", err)
	}
	if _, err := asA.Put(ctx, "/outside", "x"); err == nil {
		t.Fatal("tenant-a's etcd user wrote outside its prefix")
	}
	t.Logf("etcd user %s: own prefix readable, tenant-b's refused", cluster.EtcdUser(cluster.Names{Cluster: tenants[0], Namespace: tenants[0]}))

	for _, kc := range clusters {
		mustKok(t, shared.stateDir, "delete", "cluster", kc.Name, "-n", kc.Namespace)
	}
	// The shared EtcdCluster is not the clusters' to delete.
	if err := c.Get(ctx, client.ObjectKeyFromObject(e), e); err != nil || e.DeletionTimestamp != nil {
		t.Fatalf("shared EtcdCluster after both clusters went: %v %v", err, e.DeletionTimestamp)
	}
	for _, ns := range append([]string{etcdNS}, tenants...) {
		_ = c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
}
