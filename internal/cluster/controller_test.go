package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/conditions"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/pki"
)

// TestManagedEtcdSpecCarriesEveryField: a field added to ManagedEtcd must
// reach the EtcdCluster (under the same JSON name) or this test fails.
func TestManagedEtcdSpecCarriesEveryField(t *testing.T) {
	m := &clusterv1.ManagedEtcd{Replicas: 3, Version: "v3.6.16",
		Storage: &etcdv1.EtcdStorage{Size: resource.MustParse("2Gi"), StorageClassName: ptr.To("fast"), EmptyDir: true}}
	mv := reflect.ValueOf(m).Elem()
	for i := range mv.NumField() {
		if mv.Field(i).IsZero() {
			t.Fatalf("set ManagedEtcd.%s in this test", mv.Type().Field(i).Name)
		}
	}
	want, _ := json.Marshal(m)
	got, _ := json.Marshal(ManagedEtcdSpec(m, m.Version))
	var wantMap, gotMap map[string]any
	_ = json.Unmarshal(want, &wantMap)
	_ = json.Unmarshal(got, &gotMap)
	for k, v := range wantMap {
		if !reflect.DeepEqual(gotMap[k], v) {
			t.Errorf("spec.etcd.managed.%s = %v does not reach the EtcdCluster (got %v)", k, v, gotMap[k])
		}
	}
}

func fakeScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, clusterv1.AddToScheme, etcdv1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// availableEtcd is the EtcdCluster of cluster "a" as the etcd operator
// publishes it, with its CA Secret.
func availableEtcd(t *testing.T) []client.Object {
	ca, err := pki.NewCA("etcd")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ca.KeyPEM()
	ec := &etcdv1.EtcdCluster{ObjectMeta: metav1.ObjectMeta{Name: "a-etcd", Namespace: "ns"},
		Spec: etcdv1.EtcdClusterSpec{Replicas: 1, Version: "v3.6.16"},
		Status: etcdv1.EtcdClusterStatus{Version: "v3.6.16", Phase: etcdv1.PhaseRunning, ReadyMembers: 1, CASecretName: "a-etcd-ca",
			ClientEndpoint: "https://a-etcd-client.ns.svc:2379",
			Conditions:     []metav1.Condition{{Type: etcdv1.ConditionAvailable, Status: metav1.ConditionTrue, Reason: "QuorumHealthy", LastTransitionTime: metav1.Now()}}}}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "a-etcd-ca", Namespace: "ns"}, Data: map[string][]byte{pki.KeyCA: ca.CertPEM(), "ca.key": key}}
	return []client.Object{ec, sec}
}

// sharedEtcd is EtcdCluster "shared" with authentication on, its CA
// published, not available at the moment.
func sharedEtcd(t *testing.T) []client.Object {
	objs := availableEtcd(t)
	ec := objs[0].(*etcdv1.EtcdCluster)
	ec.Name, ec.Spec.EnableAuth = "shared", true
	ec.Status.Conditions[0].Status, ec.Status.Conditions[0].Reason = metav1.ConditionFalse, "QuorumLost"
	return objs
}

// TestReconcileGlue drives Reconcile against a fake API with injected
// errors and failing components: each path leaves status truthful.
func TestReconcileGlue(t *testing.T) {
	errAPI := errors.New("injected API failure")
	crashing := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "a-kube-apiserver-x", Namespace: "ns",
		Labels: map[string]string{kube.LabelName: APIServer, kube.LabelInstance: "a"}},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: APIServer,
			State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: "Error: unknown flag: --bogus-flag"}}}}}}
	for _, tc := range []struct {
		name   string
		paused bool
		// shared: the cluster uses EtcdCluster "shared" (auth on) by
		// reference; held: the pass must not count the generation
		// observed.
		shared, held bool
		extra        []client.Object
		funcs        interceptor.Funcs
		wantErr      string
		// conditions that must say something
		wantCond map[string]string
		// objects that must (not) exist afterwards
		wantDeployments int
	}{
		{name: "new cluster waits for etcd and applies no control plane", extra: nil,
			wantCond: map[string]string{clusterv1.ConditionReady: "WaitingForEtcd"}},
		{name: "etcd published: certificates and every component are applied", extra: availableEtcd(t),
			wantDeployments: 3, wantCond: map[string]string{clusterv1.ConditionCertificatesReady: "Issued", clusterv1.ConditionReady: "ControlPlaneUnavailable"}},
		{name: "a crash-looping component names its own error", extra: append(availableEtcd(t), crashing),
			wantDeployments: 3, wantCond: map[string]string{clusterv1.ConditionControlPlaneAvailable: "unknown flag: --bogus-flag"}},
		{name: "a control plane waiting for its shared etcd has not acted on the spec", shared: true, held: true, extra: sharedEtcd(t),
			wantCond: map[string]string{clusterv1.ConditionEtcdReady: "NotAvailable", clusterv1.ConditionProgressing: "etcd user is made first"}},
		{name: "paused writes nothing", paused: true, extra: availableEtcd(t),
			wantCond: map[string]string{clusterv1.ConditionProgressing: "paused"}},
		{name: "an API error fails the pass and says so", extra: availableEtcd(t),
			funcs: interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				if _, ok := obj.(*corev1.Service); ok {
					return errAPI
				}
				return c.Get(ctx, key, obj, opts...)
			}},
			wantErr: "reading Service a-apiserver", wantCond: map[string]string{clusterv1.ConditionReady: "injected API failure"}},
		{name: "a failed apply fails the pass and says so", extra: availableEtcd(t),
			funcs: interceptor.Funcs{Apply: func(context.Context, client.WithWatch, runtime.ApplyConfiguration, ...client.ApplyOption) error {
				return errAPI
			}},
			wantErr: "injected API failure", wantCond: map[string]string{clusterv1.ConditionReady: "ReconcileFailed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			catalog := &clusterv1.KubernetesVersion{ObjectMeta: metav1.ObjectMeta{Name: "v1.34.4"},
				Spec: clusterv1.KubernetesVersionSpec{Version: "v1.34.4", EtcdVersions: []string{"v3.6.16"},
					Images: clusterv1.ComponentImages{APIServer: "kube-apiserver:v1.34.4", ControllerManager: "kube-controller-manager:v1.34.4", Scheduler: "kube-scheduler:v1.34.4"}}}
			kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns", UID: "uid-a", Generation: 1},
				Spec: clusterv1.KubeClusterSpec{Version: "v1.34.4", Paused: tc.paused,
					Network: clusterv1.NetworkSpec{ServiceCIDR: "10.96.0.0/12", DNSDomain: "cluster.local", APIServer: clusterv1.APIServerService{Port: 6443, Type: "ClusterIP"}}}}
			if !tc.paused {
				kc.Finalizers = []string{Finalizer}
			}
			if tc.shared {
				kc.Spec.Etcd.Ref = &clusterv1.EtcdRef{Name: "shared"}
			}
			c := fake.NewClientBuilder().WithScheme(fakeScheme(t)).WithObjects(append([]client.Object{kc, catalog}, tc.extra...)...).
				WithStatusSubresource(&clusterv1.KubeCluster{}).WithInterceptorFuncs(tc.funcs).Build()
			r := &Reconciler{Client: c, APIReader: c, Recorder: record.NewFakeRecorder(100), MetaDomain: "cluster.local",
				Bootstrap: func(context.Context, []byte, string, []byte) error { return nil }}

			_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(kc)})
			if (err != nil) != (tc.wantErr != "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
			}
			got := &clusterv1.KubeCluster{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(kc), got); err != nil {
				t.Fatal(err)
			}
			// Only a pass that went through acted on the generation.
			if acted := got.Status.ObservedGeneration == kc.Generation; acted != (tc.wantErr == "" && !tc.held) {
				t.Errorf("observedGeneration %d after a pass with error %v", got.Status.ObservedGeneration, err)
			}
			for typ, want := range tc.wantCond {
				cond := meta.FindStatusCondition(got.Status.Conditions, typ)
				if cond == nil || !strings.Contains(cond.Reason+" "+cond.Message, want) {
					t.Errorf("%s does not say %q: %+v", typ, want, got.Status.Conditions)
				}
			}
			var ds appsv1.DeploymentList
			if err := c.List(ctx, &ds); err != nil {
				t.Fatal(err)
			}
			if len(ds.Items) != tc.wantDeployments {
				t.Errorf("%d Deployments, want %d", len(ds.Items), tc.wantDeployments)
			}
			if tc.paused {
				var secrets corev1.SecretList
				var ecs etcdv1.EtcdClusterList
				_ = c.List(ctx, &secrets)
				_ = c.List(ctx, &ecs)
				if len(secrets.Items) != 1 || len(ecs.Items) != 1 || got.Status.Phase != clusterv1.PhasePaused {
					t.Errorf("paused cluster: %d Secrets %d EtcdClusters phase %s", len(secrets.Items), len(ecs.Items), got.Status.Phase)
				}
			}
			if conditions.IsTrue(got.Status.Conditions, clusterv1.ConditionReady) {
				t.Error("Ready without a running control plane")
			}
		})
	}
}

func TestRequeueAfter(t *testing.T) {
	ready := func(status metav1.ConditionStatus) metav1.Condition {
		return metav1.Condition{Type: clusterv1.ConditionReady, Status: status, LastTransitionTime: metav1.Now()}
	}
	tunnels := func(status metav1.ConditionStatus, since time.Duration) metav1.Condition {
		return metav1.Condition{Type: clusterv1.ConditionKonnectivityReady, Status: status,
			LastTransitionTime: metav1.NewTime(time.Now().Add(-since))}
	}
	servers := []serverAgents{{}}
	for _, tc := range []struct {
		name  string
		conds []metav1.Condition
		konn  []serverAgents
		want  time.Duration
	}{
		{"not Ready yet", []metav1.Condition{ready(metav1.ConditionFalse)}, nil, requeueBusy},
		{"Ready, no konnectivity", []metav1.Condition{ready(metav1.ConditionTrue)}, nil, requeueSteady},
		{"proxy servers waiting for their first agents", []metav1.Condition{ready(metav1.ConditionTrue), tunnels(metav1.ConditionFalse, time.Minute)}, servers, requeueTunnels},
		{"no agent for long: a cluster without nodes", []metav1.Condition{ready(metav1.ConditionTrue), tunnels(metav1.ConditionFalse, 10*time.Minute)}, servers, requeueSteady},
		{"agents connected", []metav1.Condition{ready(metav1.ConditionTrue), tunnels(metav1.ConditionTrue, time.Minute)}, servers, requeueSteady},
	} {
		kc := &clusterv1.KubeCluster{Status: clusterv1.KubeClusterStatus{Conditions: tc.conds}}
		st := &state{catalog: &clusterv1.KubernetesVersion{}, konnectivity: tc.konn}
		if got := requeueAfter(kc, st); got != tc.want {
			t.Errorf("%s: requeueAfter = %v, want %v", tc.name, got, tc.want)
		}
	}
}
