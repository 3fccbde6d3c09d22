package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/conditions"
)

// fakeEtcd answers as a one-member cluster whose member c-0 is healthy;
// addErr is what MemberAddAsLearner answers.
type fakeEtcd struct {
	Client
	addErr error
	added  int
}

func (f *fakeEtcd) MemberList(context.Context, ...clientv3.OpOption) (*clientv3.MemberListResponse, error) {
	return &clientv3.MemberListResponse{Header: &etcdserverpb.ResponseHeader{ClusterId: 0xc1},
		Members: []*etcdserverpb.Member{{ID: 1, Name: "c-0", PeerURLs: []string{"https://c-0.c-peer.ns.svc:2380"}}}}, nil
}

func (f *fakeEtcd) AlarmList(context.Context) (*clientv3.AlarmResponse, error) {
	return &clientv3.AlarmResponse{}, nil
}

func (f *fakeEtcd) AuthStatus(context.Context) (*clientv3.AuthStatusResponse, error) {
	return &clientv3.AuthStatusResponse{}, nil
}

func (f *fakeEtcd) Status(context.Context, string) (*clientv3.StatusResponse, error) {
	return &clientv3.StatusResponse{Header: &etcdserverpb.ResponseHeader{}, Version: "3.6.16", Leader: 1, RaftIndex: 10, DbSize: 1 << 20, DbSizeInUse: 1 << 20}, nil
}

func (f *fakeEtcd) MemberAddAsLearner(context.Context, []string) (*clientv3.MemberAddResponse, error) {
	f.added++
	if f.addErr != nil {
		return nil, f.addErr
	}
	return &clientv3.MemberAddResponse{Member: &etcdserverpb.Member{ID: 2}}, nil
}

func (f *fakeEtcd) Close() error { return nil }

func testScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := etcdv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func testCluster(replicas int32, paused bool) *etcdv1.EtcdCluster {
	return &etcdv1.EtcdCluster{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "ns", Generation: 1, UID: "uid-c"},
		Spec: etcdv1.EtcdClusterSpec{Replicas: replicas, Version: "v3.6.16", Paused: paused,
			Storage: etcdv1.EtcdStorage{Size: resource.MustParse("1Gi")}}}
}

// runningMember is the objects of a cluster whose first member runs: its
// pod (ready, with an address), its claim and its certificates.
func runningMember(t *testing.T, r *Reconciler, e *etcdv1.EtcdCluster) []client.Object {
	t.Helper()
	n := Names{Cluster: e.Name, Namespace: e.Namespace}
	certs, _, err := PlanCerts(n, "cluster.local", Certs{}, true, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pod := MemberPod(n, e, "c-0", Join{New: true}, PodOptions{Image: r.Image(e.Spec.Version)})
	pod.Status = corev1.PodStatus{PodIP: "10.0.0.5", Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	pvc := PVC(n, "c-0", e.Spec.Storage)
	pvc.Status.Phase = corev1.ClaimBound
	e.Status = etcdv1.EtcdClusterStatus{ClusterID: "c1", Members: []etcdv1.MemberStatus{{Name: "c-0", ID: "1", Role: etcdv1.RoleLeader}}}
	secret := func(name string, d map[string][]byte) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: n.Namespace}, Data: d}
	}
	return []client.Object{pod, pvc, secret(n.CASecret(), certs.CA), secret(n.ServerSecret(), certs.Server), secret(n.ClientSecret(), certs.Client)}
}

// TestReconcileGlue drives Reconcile against a fake API and a fake etcd,
// with injected errors: every path leaves status truthful and asks to be
// retried.
func TestReconcileGlue(t *testing.T) {
	errAPI := errors.New("etcdserver: injected API failure")
	for _, tc := range []struct {
		name     string
		cluster  *etcdv1.EtcdCluster
		running  bool
		dialErr  error
		addErr   error
		failList bool
		failSSA  bool
		dropCA   bool
		// want
		wantErr      string
		wantPhase    string
		wantCond     map[string]bool
		wantMsg      map[string]string
		wantPods     int
		wantSecrets  int
		wantServices int
		wantJournal  string
		wantAdds     int
	}{
		{name: "new cluster bootstraps its first member", cluster: testCluster(3, false),
			wantPhase: etcdv1.PhaseCreating, wantPods: 1, wantSecrets: 3, wantServices: 2,
			wantCond: map[string]bool{etcdv1.ConditionProgressing: true, etcdv1.ConditionAvailable: false}},
		{name: "paused changes nothing", cluster: testCluster(3, true),
			wantPhase: etcdv1.PhasePaused, wantPods: 0, wantSecrets: 0, wantServices: 0,
			wantMsg: map[string]string{etcdv1.ConditionProgressing: "paused: Bootstrap"}},
		{name: "API error listing pods", cluster: testCluster(3, false), failList: true,
			wantErr: "listing member pods"},
		{name: "apply fails: status says so, retried with backoff", cluster: testCluster(3, false), failSSA: true,
			wantErr:   "injected API failure",
			wantPhase: etcdv1.PhaseCreating, wantCond: map[string]bool{etcdv1.ConditionDegraded: true},
			wantMsg: map[string]string{etcdv1.ConditionDegraded: "injected API failure"}},
		{name: "unreachable etcd names the cause", cluster: testCluster(3, false), running: true,
			dialErr:   errors.New("tls: failed to verify certificate"),
			wantPhase: etcdv1.PhaseQuorumLost, wantPods: 1, wantSecrets: 3, wantServices: 2,
			wantCond: map[string]bool{etcdv1.ConditionAvailable: false},
			wantMsg:  map[string]string{etcdv1.ConditionAvailable: "tls: failed to verify certificate"}},
		{name: "a lost CA Secret is not made anew while members exist", cluster: testCluster(3, false), running: true, dropCA: true,
			wantPhase: etcdv1.PhaseRunning, wantPods: 1, wantSecrets: 2, wantServices: 2,
			wantCond: map[string]bool{etcdv1.ConditionAvailable: true, etcdv1.ConditionDegraded: true},
			wantMsg:  map[string]string{etcdv1.ConditionDegraded: "CA secret c-ca is missing or damaged and members exist"}},
		{name: "healthy member grows by a learner", cluster: testCluster(3, false), running: true,
			wantPhase: etcdv1.PhaseUpdating, wantPods: 2, wantSecrets: 3, wantServices: 2, wantAdds: 1,
			// cleared by the next pass, which sees the learner and its pod
			wantJournal: "AddLearner",
			wantCond:    map[string]bool{etcdv1.ConditionAvailable: true, etcdv1.ConditionProgressing: true}},
		{name: "a refused add is journaled and retried", cluster: testCluster(3, false), running: true,
			addErr:    rpctypes.ErrUnhealthy,
			wantPhase: etcdv1.PhaseUpdating, wantPods: 1, wantSecrets: 3, wantServices: 2, wantAdds: 1, wantJournal: "AddLearner",
			wantCond: map[string]bool{etcdv1.ConditionDegraded: true},
			wantMsg:  map[string]string{etcdv1.ConditionDegraded: "unhealthy cluster"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			rec := record.NewFakeRecorder(100)
			r := &Reconciler{Recorder: rec, Domain: "cluster.local"}
			objs := []client.Object{tc.cluster}
			if tc.running {
				for _, o := range runningMember(t, r, tc.cluster) {
					if tc.dropCA && o.GetName() == "c-ca" {
						continue
					}
					objs = append(objs, o)
				}
			}
			fe := &fakeEtcd{addErr: tc.addErr}
			r.Dial = func([]string, *tls.Config) (Client, error) {
				if tc.dialErr != nil {
					return nil, tc.dialErr
				}
				return fe, nil
			}
			funcs := interceptor.Funcs{}
			if tc.failList {
				funcs.List = func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error { return errAPI }
			}
			if tc.failSSA {
				funcs.Apply = func(context.Context, client.WithWatch, runtime.ApplyConfiguration, ...client.ApplyOption) error {
					return errAPI
				}
			}
			c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...).
				WithStatusSubresource(&etcdv1.EtcdCluster{}).WithInterceptorFuncs(funcs).Build()
			r.Client, r.APIReader = c, c

			res, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(tc.cluster)})
			switch {
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Reconcile: %v", err)
			case tc.wantErr == "" && res.RequeueAfter == 0:
				t.Error("no retry asked for")
			}
			if tc.failList {
				return // nothing was observed, so no status was written
			}
			var e etcdv1.EtcdCluster
			if err := c.Get(ctx, client.ObjectKeyFromObject(tc.cluster), &e); err != nil {
				t.Fatal(err)
			}
			if e.Status.Phase != tc.wantPhase {
				t.Errorf("phase %q, want %q (conditions %+v)", e.Status.Phase, tc.wantPhase, e.Status.Conditions)
			}
			for typ, want := range tc.wantCond {
				if got := conditions.IsTrue(e.Status.Conditions, typ); got != want {
					t.Errorf("%s = %v, want %v (%+v)", typ, got, want, e.Status.Conditions)
				}
			}
			for typ, want := range tc.wantMsg {
				found := false
				for _, cond := range e.Status.Conditions {
					if cond.Type == typ && strings.Contains(cond.Message, want) {
						found = true
					}
				}
				if !found {
					t.Errorf("%s does not say %q: %+v", typ, want, e.Status.Conditions)
				}
			}
			var pods corev1.PodList
			var secrets corev1.SecretList
			var services corev1.ServiceList
			for _, l := range []client.ObjectList{&pods, &secrets, &services} {
				if err := c.List(ctx, l, client.InNamespace("ns")); err != nil {
					t.Fatal(err)
				}
			}
			if len(pods.Items) != tc.wantPods || len(secrets.Items) != tc.wantSecrets || len(services.Items) != tc.wantServices {
				t.Errorf("pods %d secrets %d services %d, want %d %d %d", len(pods.Items), len(secrets.Items), len(services.Items),
					tc.wantPods, tc.wantSecrets, tc.wantServices)
			}
			if fe.added != tc.wantAdds {
				t.Errorf("MemberAddAsLearner called %d times, want %d", fe.added, tc.wantAdds)
			}
			gotJournal := ""
			if e.Status.Operation != nil {
				gotJournal = e.Status.Operation.Type
			}
			if gotJournal != tc.wantJournal {
				t.Errorf("journal %q, want %q", gotJournal, tc.wantJournal)
			}
			if tc.addErr != nil && len(rec.Events) > 0 {
				for len(rec.Events) > 0 {
					if ev := <-rec.Events; strings.Contains(ev, "StepFailed") {
						t.Errorf("an expected refusal raised a warning: %s", ev)
					}
				}
			}
		})
	}
}
