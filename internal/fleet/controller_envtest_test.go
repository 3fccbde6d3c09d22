//go:build envtest

package fleet_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	addonv1 "github.com/kubeonkube/kok/api/addon/v1alpha1"
	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/cluster"
	"github.com/kubeonkube/kok/internal/fleet"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/manager"
	"github.com/kubeonkube/kok/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m, nil) }

func waitFor(t *testing.T, what string, timeout time.Duration, f func() error) {
	t.Helper()
	testenv.WaitFor(t, what, timeout, f)
}

// startManager runs the fleet operator until the returned stop is called.
func startManager(t *testing.T) (stop func()) {
	t.Helper()
	mgr, err := ctrl.NewManager(testenv.Config, testenv.ManagerOptions(manager.Scheme()))
	if err != nil {
		t.Fatal(err)
	}
	r := &fleet.Reconciler{Client: mgr.GetClient(), Readyz: func(context.Context, *clusterv1.KubeCluster) error { return nil }}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = mgr.Start(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// operator plays the cluster operator (envtest runs none): a cluster whose
// spec.version changed reports it as running, Ready, unless it is held.
type operator struct {
	c    client.Client
	mu   sync.Mutex
	hold map[string]bool
	// maxUnhealthy is the most clusters seen at once with the target in
	// spec but not yet running it.
	maxUnhealthy int
}

func (o *operator) setHold(name string, on bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.hold[name] = on
}

func (o *operator) run(ctx context.Context, to string) {
	for ctx.Err() == nil {
		var list clusterv1.KubeClusterList
		if err := o.c.List(ctx, &list); err == nil {
			unhealthy := 0
			for i := range list.Items {
				kc := &list.Items[i]
				if kc.Spec.Version != to || kc.Status.Version == to {
					continue
				}
				unhealthy++
				o.mu.Lock()
				held := o.hold[kc.Name]
				o.mu.Unlock()
				if held {
					continue
				}
				running(ctx, o.c, kc, to)
			}
			o.mu.Lock()
			o.maxUnhealthy = max(o.maxUnhealthy, unhealthy)
			o.mu.Unlock()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func running(ctx context.Context, c client.Client, kc *clusterv1.KubeCluster, version string) {
	kc.Status.ObservedGeneration, kc.Status.Version, kc.Status.Phase = kc.Generation, version, clusterv1.PhaseReady
	meta.SetStatusCondition(&kc.Status.Conditions, metav1.Condition{Type: clusterv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Ready"})
	_ = c.Status().Update(ctx, kc)
}

// TestRollout upgrades a labelled fleet: the canary alone, then waves of
// two; a cluster whose new apiserver cannot pull its image halts the
// rollout with the rest untouched; a kok-manager restart mid-wave starts no
// cluster twice nor more than maxParallel at once; the fix resumes it.
func TestRollout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := client.New(testenv.Config, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"v1.33.13", "v1.34.4"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "config", "catalog", "kubernetesversion-"+v+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := kube.ApplyManifests(ctx, c, data); err != nil {
			t.Fatal(err)
		}
	}
	const from, to = "v1.33.13", "v1.34.4"
	names := []string{"p0", "p1", "p2", "p3", "p4", "dev"}
	for _, name := range names {
		env := "prod"
		if name == "dev" {
			env = "dev"
		}
		kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"env": env}},
			Spec: clusterv1.KubeClusterSpec{Version: from, Addons: []clusterv1.AddonRef{}}}
		if name == "p0" {
			kc.Labels["canary"] = "true"
		}
		if err := c.Create(ctx, kc); err != nil {
			t.Fatal(err)
		}
		running(ctx, c, kc, from)
	}
	// p4 runs a Healthy addon: its start journals it as a part the gate
	// waits for again.
	ca := &addonv1.ClusterAddon{ObjectMeta: metav1.ObjectMeta{Name: "p4-coredns", Namespace: "default"},
		Spec: addonv1.ClusterAddonSpec{ClusterName: "p4", Addon: "coredns"}}
	if err := c.Create(ctx, ca); err != nil {
		t.Fatal(err)
	}
	ca.Status.Conditions = []metav1.Condition{{Type: addonv1.AddonHealthy, Status: metav1.ConditionTrue, Reason: "Available", LastTransitionTime: metav1.Now()}}
	if err := c.Status().Update(ctx, ca); err != nil {
		t.Fatal(err)
	}
	op := &operator{c: c, hold: map[string]bool{"p1": true, "p2": true, "p3": true}}
	go op.run(ctx, to)
	stop := startManager(t)

	cu := &clusterv1.ClusterUpgrade{ObjectMeta: metav1.ObjectMeta{Name: "cve"}, Spec: clusterv1.ClusterUpgradeSpec{To: to,
		Selector: metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}},
		Canary:   &metav1.LabelSelector{MatchLabels: map[string]string{"canary": "true"}}, MaxParallel: 2,
		HealthTimeout: &metav1.Duration{Duration: time.Minute}}}
	if err := c.Create(ctx, cu); err != nil {
		t.Fatal(err)
	}
	state := func() string {
		if err := c.Get(ctx, client.ObjectKeyFromObject(cu), cu); err != nil {
			return err.Error()
		}
		var out []string
		for _, t := range cu.Status.Clusters {
			out = append(out, fmt.Sprintf("%s:%d:%s", t.Name, t.Wave, t.State))
		}
		return cu.Status.Phase + " " + strings.Join(out, " ")
	}
	expect := func(what, want string) {
		t.Helper()
		waitFor(t, what, 30*time.Second, func() error {
			if got := state(); got != want {
				return fmt.Errorf("%s, want %s", got, want)
			}
			return nil
		})
	}
	expect("canary done, wave 1 held", "Running p0:0:Succeeded p1:1:Upgrading p2:1:Upgrading p3:2:Pending p4:2:Pending")

	// kok-manager goes away mid-wave and comes back: the journal holds.
	stop()
	stop = startManager(t)
	defer func() { stop() }()
	op.setHold("p1", false)
	op.setHold("p2", false)

	// p3's new apiserver cannot pull its image.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p3-apiserver-new", Namespace: "default",
		Labels:      map[string]string{kube.LabelInstance: "p3", kube.LabelName: cluster.APIServer},
		Annotations: map[string]string{cluster.AnnVersion: to}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: cluster.APIServer, Image: "broken.example/kube-apiserver:nope"}}}}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: cluster.APIServer, Image: pod.Spec.Containers[0].Image,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "pull access denied for broken.example/kube-apiserver"}}}}
	if err := c.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	expect("halted on p3", "Halted p0:0:Succeeded p1:1:Succeeded p2:1:Succeeded p3:2:Failed p4:2:Succeeded")
	halted := meta.FindStatusCondition(cu.Status.Conditions, clusterv1.ConditionHalted)
	if halted == nil || !strings.Contains(halted.Message, "default/p3: pod p3-apiserver-new") || !strings.Contains(halted.Message, "ImagePullBackOff") {
		t.Fatalf("Halted condition %+v", halted)
	}
	dev := &clusterv1.KubeCluster{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "dev"}, dev); err != nil || dev.Spec.Version != from {
		t.Fatalf("dev cluster is outside the selector and must stay at %s: %s (%v)", from, dev.Spec.Version, err)
	}

	// The fix (the pod replaced by one that runs) resumes the rollout.
	if err := c.Delete(ctx, pod); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	op.setHold("p3", false)
	expect("done after the fix", "Succeeded p0:0:Succeeded p1:1:Succeeded p2:1:Succeeded p3:2:Succeeded p4:2:Succeeded")
	if op.maxUnhealthy > 2 {
		t.Fatalf("%d clusters upgraded at once, maxParallel is 2", op.maxUnhealthy)
	}
	for _, tg := range cu.Status.Clusters {
		want := ""
		if tg.Name == "p4" {
			want = "addon/coredns"
		}
		if got := strings.Join(tg.HealthyAtStart, ","); got != want {
			t.Errorf("%s: healthyAtStart %q, want %q", tg.Name, got, want)
		}
	}
	if cu.Status.Summary != "5/5 done" || cu.Status.CompletionTime == nil {
		t.Fatalf("summary %q, completion %v", cu.Status.Summary, cu.Status.CompletionTime)
	}
	// kok-manager's metrics say the same.
	if got := gauge(t, "kok_cluster_upgrade_clusters", map[string]string{"upgrade": "cve", "state": "Succeeded"}); got != 5 {
		t.Fatalf("kok_cluster_upgrade_clusters{state=Succeeded} = %v", got)
	}
	if got := gauge(t, "kok_cluster_upgrade_halted", map[string]string{"upgrade": "cve"}); got != 0 {
		t.Fatalf("kok_cluster_upgrade_halted = %v", got)
	}
}

// gauge reads one series of kok-manager's metrics registry.
func gauge(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}
