package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
)

// Reconciler runs EtcdClusters.
type Reconciler struct {
	client.Client
	Recorder record.EventRecorder
	// APIReader reads certificate Secrets past the cache: a cache that has
	// not seen a Secret this operator just wrote would have it issue the
	// material again (a new CA, every pod rolled twice).
	APIReader client.Reader
	// ImageRegistry prefixes every image (one override for air-gapped sites).
	ImageRegistry string
	// Domain is the meta cluster's DNS domain.
	Domain string
	// ManagerImage is kok-manager's own image (a restored cluster's first
	// member runs it to restore the snapshot).
	ManagerImage string
}

// +kubebuilder:rbac:groups=etcd.kok.dev,resources=etcdclusters,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=etcd.kok.dev,resources=etcdclusters/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=pods;services;secrets;persistentvolumeclaims,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorderFor("etcd-operator")
	}
	// Its own status writes (raft indexes move with every write) do not
	// wake it: spec changes, owned objects and the periodic pass do.
	return ctrl.NewControllerManagedBy(mgr).
		For(&etcdv1.EtcdCluster{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&corev1.Pod{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.Secret{}).
		Owns(&corev1.PersistentVolumeClaim{}).
		Complete(r)
}

// Image is the etcd image of a version.
func (r *Reconciler) Image(version string) string {
	reg := r.ImageRegistry
	if reg == "" {
		reg = "kok.local"
	}
	return reg + "/etcd:" + version
}

const (
	requeueBusy   = 2 * time.Second
	requeueSteady = 30 * time.Second
	etcdTimeout   = 5 * time.Second
)

// Reconcile observes one EtcdCluster, takes the next step and records status.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	e := &etcdv1.EtcdCluster{}
	if err := r.Get(ctx, req.NamespacedName, e); err != nil {
		if apierrors.IsNotFound(err) {
			forgetClusterMetrics(req.Namespace, req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if e.DeletionTimestamp != nil {
		forgetClusterMetrics(e.Namespace, e.Name)
		return ctrl.Result{}, nil // owned objects go with it (garbage collection)
	}
	n := Names{Cluster: e.Name, Namespace: e.Namespace}

	pods, err := r.memberPods(ctx, n)
	if err != nil {
		return ctrl.Result{}, err
	}
	// A cluster is bootstrapped once a member answered (a first member that
	// takes long to start, e.g. restoring a snapshot, is still "Creating").
	bootstrapped := e.Status.ClusterID != "" || meta.IsStatusConditionTrue(e.Status.Conditions, etcdv1.ConditionAvailable)
	certs, err := r.ensureBase(ctx, e, n, !bootstrapped && len(pods) == 0)
	if err != nil {
		return ctrl.Result{}, err
	}
	tlsCfg, err := ClientTLS(certs.Client)
	if err != nil {
		return ctrl.Result{}, err
	}

	obs := Observed{Cluster: e.Name, Replicas: int(e.Spec.Replicas), Version: e.Spec.Version, Pods: map[string]Pod{}, LostVolumes: map[string]bool{},
		Config:       ConfigHash(e, r.Image(e.Spec.Version)),
		Bootstrapped: bootstrapped, DefragThreshold: 50, AuthWanted: e.Spec.EnableAuth}
	if d := e.Spec.Defrag; d != nil {
		obs.DefragThreshold = int(d.FragmentationThresholdPercent)
		if d.Schedule != "" {
			if sched, err := cronParser.Parse(d.Schedule); err == nil {
				last := e.CreationTimestamp.Time
				if e.Status.LastDefragTime != nil {
					last = e.Status.LastDefragTime.Time
				}
				obs.DefragDue = !time.Now().Before(sched.Next(last))
			} else {
				r.Recorder.Eventf(e, corev1.EventTypeWarning, "InvalidSchedule", "spec.defrag.schedule %q: %v", d.Schedule, err)
			}
		}
	}
	for _, p := range pods {
		obs.Pods[p.Name] = observePod(&p)
	}
	if err := r.observeVolumes(ctx, e, n, &obs); err != nil {
		return ctrl.Result{}, err
	}
	members, clusterID := r.observeEtcd(ctx, n, pods, tlsCfg, &obs)
	if e.Status.Operation != nil {
		id, _ := strconv.ParseUint(e.Status.Operation.ID, 16, 64)
		obs.Journal = &Journal{Type: e.Status.Operation.Type, Member: e.Status.Operation.Member, ID: id}
		// A journaled change that is complete is cleared before planning.
		if _, done := finishJournal(obs); done {
			if err := r.journal(ctx, e, "", "", 0); err != nil {
				return ctrl.Result{}, err
			}
			obs.Journal = nil
		}
	}

	step := Plan(obs)
	if e.Spec.Paused && step.Action != ActNone {
		step = Step{Action: ActNone, Reason: "paused: " + step.String()}
	}
	if step.Action == ActNone {
		logger.V(1).Info("plan", "step", step.String())
	} else {
		logger.Info("plan", "step", step.String(), "operation", e.Status.Operation)
	}
	stepErr := r.act(ctx, e, n, step, obs, tlsCfg)
	if stepErr != nil {
		if expectedRefusal(stepErr) {
			// etcd turns membership changes away for a few seconds after
			// the last one; the step is retried. An event per retry would
			// crowd out the ones that matter (events are rate-limited
			// per object).
			logger.Info("step deferred", "step", step.String(), "reason", stepErr.Error())
		} else {
			r.Recorder.Eventf(e, corev1.EventTypeWarning, "StepFailed", "%s: %v", step, stepErr)
		}
	}
	if err := r.writeStatus(ctx, e, n, obs, members, clusterID, step, stepErr); err != nil {
		return ctrl.Result{}, err
	}
	recordClusterMetrics(e, step, stepErr)
	if step.Action == ActNone {
		return ctrl.Result{RequeueAfter: requeueSteady}, nil
	}
	return ctrl.Result{RequeueAfter: requeueBusy}, nil
}

func (r *Reconciler) memberPods(ctx context.Context, n Names) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(n.Namespace), client.MatchingLabels(n.Selector())); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// observePod reads what Plan needs from a pod.
func observePod(p *corev1.Pod) Pod {
	op := Pod{Name: p.Name, Version: p.Annotations[AnnVersion], Config: p.Annotations[AnnConfig], Terminating: p.DeletionTimestamp != nil}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			op.Ready = true
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		// etcd refuses to start a member whose data directory was lost
		// while the cluster still knows it.
		if t := cs.LastTerminationState.Terminated; t != nil && strings.Contains(t.Message, "has already been bootstrapped") {
			op.DataLost = true
		}
	}
	return op
}

// observeVolumes reads the claim of every member with a pod or in status
// once: a claim gone, being deleted or lost took the member's data with it
// (obs.LostVolumes); a voter status recorded whose claim is still there can
// come back on it (obs.KnownMembers).
func (r *Reconciler) observeVolumes(ctx context.Context, e *etcdv1.EtcdCluster, n Names, obs *Observed) error {
	if e.Spec.Storage.EmptyDir {
		return nil
	}
	voters := map[string]bool{}
	for _, m := range e.Status.Members {
		voters[m.Name] = m.Role != etcdv1.RoleLearner
	}
	names := slices.Collect(maps.Keys(voters))
	for name := range obs.Pods {
		if _, ok := voters[name]; !ok {
			names = append(names, name)
		}
	}
	for _, name := range names {
		var pvc corev1.PersistentVolumeClaim
		err := r.Get(ctx, client.ObjectKey{Namespace: n.Namespace, Name: n.PVC(name)}, &pvc)
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		present := err == nil && pvc.DeletionTimestamp == nil
		if !present || pvc.Status.Phase == corev1.ClaimLost {
			obs.LostVolumes[name] = true
		}
		if present && voters[name] {
			obs.KnownMembers = append(obs.KnownMembers, name)
		}
	}
	return nil
}

// observeEtcd asks the members about membership and each one's state.
func (r *Reconciler) observeEtcd(ctx context.Context, n Names, pods []corev1.Pod, tlsCfg *tls.Config, obs *Observed) (map[string]etcdv1.MemberStatus, string) {
	var endpoints []string
	for _, p := range pods {
		if p.Status.PodIP != "" && p.DeletionTimestamp == nil {
			endpoints = append(endpoints, n.ClientURL(p.Name))
		}
	}
	status := map[string]etcdv1.MemberStatus{}
	if len(endpoints) == 0 {
		return status, ""
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, DialTimeout: etcdTimeout, Logger: zap.NewNop()})
	if err != nil {
		return status, ""
	}
	defer cli.Close()
	lctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	list, err := cli.MemberList(lctx)
	cancel()
	if err != nil {
		return status, ""
	}
	obs.Reachable = true
	clusterID := fmt.Sprintf("%x", list.Header.ClusterId)
	alarms := map[uint64][]string{}
	actx, cancel := context.WithTimeout(ctx, etcdTimeout)
	if al, err := cli.AlarmList(actx); err == nil {
		for _, a := range al.Alarms {
			alarms[a.MemberID] = append(alarms[a.MemberID], a.Alarm.String())
		}
	}
	if as, err := cli.AuthStatus(actx); err == nil {
		obs.AuthEnabled = as.Enabled
	} else {
		obs.AuthEnabled = obs.AuthWanted // unknown: change nothing
	}
	cancel()
	for _, m := range list.Members {
		name := m.Name
		if name == "" && len(m.PeerURLs) > 0 {
			name, _ = n.MemberFromPeerURL(m.PeerURLs[0])
		}
		mem := Member{Name: name, ID: m.ID, Learner: m.IsLearner, Started: m.Name != "", Version: obs.Pods[name].Version}
		ms := etcdv1.MemberStatus{Name: name, ID: fmt.Sprintf("%x", m.ID), Role: etcdv1.RoleFollower, Version: obs.Pods[name].Version}
		if m.IsLearner {
			ms.Role = etcdv1.RoleLearner
		}
		if mem.Started {
			sctx, cancel := context.WithTimeout(ctx, etcdTimeout)
			st, err := cli.Status(sctx, n.ClientURL(name))
			cancel()
			if err == nil {
				mem.Healthy, mem.RaftIndex, mem.DBSize, mem.DBInUse = true, st.RaftIndex, st.DbSize, st.DbSizeInUse
				ms.Healthy, ms.RaftIndex, ms.DBSize, ms.DBSizeInUse, ms.Version = true, st.RaftIndex, st.DbSize, st.DbSizeInUse, "v"+st.Version
				if st.Leader == m.ID {
					ms.Role = etcdv1.RoleLeader
				}
				if st.Leader != 0 {
					obs.LeaderID = st.Leader
				}
			}
		}
		mem.Alarms, ms.Alarms = alarms[m.ID], alarms[m.ID]
		obs.Members = append(obs.Members, mem)
		status[name] = ms
	}
	return status, clusterID
}

// act performs one step. Membership changes are journaled in status first.
func (r *Reconciler) act(ctx context.Context, e *etcdv1.EtcdCluster, n Names, step Step, obs Observed, tlsCfg *tls.Config) error {
	switch step.Action {
	case ActBootstrap:
		r.Recorder.Eventf(e, corev1.EventTypeNormal, "Bootstrap", "creating first member %s", step.Member)
		return r.createMember(ctx, e, n, step.Member, Join{New: true, Peers: map[string]string{step.Member: n.PeerURL(step.Member)}})
	case ActCreatePod:
		return r.createMember(ctx, e, n, step.Member, r.joinExisting(n, obs, step.Member))
	case ActAddLearner:
		if err := r.journal(ctx, e, "AddLearner", step.Member, 0); err != nil {
			return err
		}
		r.Recorder.Eventf(e, corev1.EventTypeNormal, "AddLearner", "adding %s as a learner", step.Member)
		var id uint64
		err := r.withEtcd(ctx, n, obs, tlsCfg, func(ctx context.Context, cli *clientv3.Client) error {
			resp, err := cli.MemberAddAsLearner(ctx, []string{n.PeerURL(step.Member)})
			if err == nil {
				id = resp.Member.ID
			}
			return err
		})
		if err != nil {
			return err
		}
		if err := r.journal(ctx, e, "AddLearner", step.Member, id); err != nil {
			return err
		}
		join := r.joinExisting(n, obs, step.Member)
		return r.createMember(ctx, e, n, step.Member, join)
	case ActPromote:
		if err := r.journal(ctx, e, "Promote", step.Member, step.ID); err != nil {
			return err
		}
		r.Recorder.Eventf(e, corev1.EventTypeNormal, "Promote", "promoting learner %s", step.Member)
		if err := r.withEtcd(ctx, n, obs, tlsCfg, func(ctx context.Context, cli *clientv3.Client) error {
			_, err := cli.MemberPromote(ctx, step.ID)
			return err
		}); err != nil {
			return err
		}
		return r.journal(ctx, e, "", "", 0)
	case ActRemove:
		if err := r.journal(ctx, e, "Remove", step.Member, step.ID); err != nil {
			return err
		}
		r.Recorder.Eventf(e, corev1.EventTypeNormal, "Remove", "removing member %s (%s)", step.Member, step.Reason)
		if err := r.withEtcd(ctx, n, obs, tlsCfg, func(ctx context.Context, cli *clientv3.Client) error {
			_, err := cli.MemberRemove(ctx, step.ID)
			return err
		}); err != nil {
			return err
		}
		if err := r.deleteMember(ctx, n, step.Member); err != nil {
			return err
		}
		return r.journal(ctx, e, "", "", 0)
	case ActDeletePod:
		if err := r.deleteMember(ctx, n, step.Member); err != nil {
			return err
		}
		if e.Status.Operation != nil && e.Status.Operation.Member == step.Member {
			return r.journal(ctx, e, "", "", 0)
		}
		return nil
	case ActUpgrade:
		// The member comes back at the new version on its own volume
		// (ActCreatePod on the next pass).
		r.Recorder.Eventf(e, corev1.EventTypeNormal, "Upgrade", "restarting %s at %s (%s)", step.Member, e.Spec.Version, step.Reason)
		return client.IgnoreNotFound(r.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: step.Member, Namespace: n.Namespace}}))
	case ActRecoverSpace:
		r.Recorder.Eventf(e, corev1.EventTypeWarning, "NoSpace", "%s reports NOSPACE: compacting, defragmenting every member and disarming the alarm", step.Member)
		return r.withEtcdTimeout(ctx, n, obs, tlsCfg, maintenanceTimeout, func(ctx context.Context, cli *clientv3.Client) error {
			return recoverSpace(ctx, cli, n, obs)
		})
	case ActDefrag:
		members := defragOrder(obs.Members, obs.LeaderID)
		if step.Member != "" {
			members = []Member{{Name: step.Member}}
		}
		r.Recorder.Eventf(e, corev1.EventTypeNormal, "Defragment", "defragmenting %s (%s)", memberNames(members), step.Reason)
		return r.withEtcdTimeout(ctx, n, obs, tlsCfg, maintenanceTimeout, func(ctx context.Context, cli *clientv3.Client) error {
			return defragment(ctx, cli, n, members)
		})
	case ActEnableAuth:
		r.Recorder.Event(e, corev1.EventTypeNormal, "EnableAuth", "turning on etcd authentication (root user for kok, a prefix-confined user per business cluster)")
		return r.withEtcd(ctx, n, obs, tlsCfg, enableAuth)
	case ActDisableAuth:
		r.Recorder.Event(e, corev1.EventTypeNormal, "DisableAuth", "turning off etcd authentication")
		return r.withEtcd(ctx, n, obs, tlsCfg, func(ctx context.Context, cli *clientv3.Client) error {
			_, err := cli.AuthDisable(ctx)
			return err
		})
	case ActMoveLeader:
		r.Recorder.Eventf(e, corev1.EventTypeNormal, "MoveLeader", "moving leadership off %s before its restart", step.Member)
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{n.ClientURL(step.Member)}, TLS: tlsCfg, DialTimeout: etcdTimeout, Logger: zap.NewNop()})
		if err != nil {
			return err
		}
		defer cli.Close()
		mctx, cancel := context.WithTimeout(ctx, etcdTimeout)
		defer cancel()
		_, err = cli.MoveLeader(mctx, step.Target)
		return err
	}
	return nil
}

// joinExisting lists the peers a joining (or returning) member is told of.
func (r *Reconciler) joinExisting(n Names, obs Observed, member string) Join {
	peers := map[string]string{member: n.PeerURL(member)}
	for _, m := range obs.Members {
		if m.Name != "" {
			peers[m.Name] = n.PeerURL(m.Name)
		}
	}
	return Join{Peers: peers, Token: n.Namespace + "-" + n.Cluster}
}

func (r *Reconciler) withEtcd(ctx context.Context, n Names, obs Observed, tlsCfg *tls.Config, f func(context.Context, *clientv3.Client) error) error {
	return r.withEtcdTimeout(ctx, n, obs, tlsCfg, etcdTimeout, f)
}

func (r *Reconciler) withEtcdTimeout(ctx context.Context, n Names, obs Observed, tlsCfg *tls.Config, timeout time.Duration, f func(context.Context, *clientv3.Client) error) error {
	var endpoints []string
	for _, m := range obs.Members {
		if m.Healthy && !m.Learner {
			endpoints = append(endpoints, n.ClientURL(m.Name))
		}
	}
	if len(endpoints) == 0 {
		return errors.New("no healthy voting member to talk to")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, DialTimeout: etcdTimeout, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return f(cctx, cli)
}

// journal records (or, with an empty type, clears) the membership change
// in flight, before the etcd call is made.
func (r *Reconciler) journal(ctx context.Context, e *etcdv1.EtcdCluster, typ, member string, id uint64) error {
	patch := client.MergeFrom(e.DeepCopy())
	if typ == "" {
		e.Status.Operation = nil
	} else {
		op := &etcdv1.MembershipOperation{Type: typ, Member: member, Started: metav1.Now()}
		if id != 0 {
			op.ID = fmt.Sprintf("%x", id)
		}
		if e.Status.Operation != nil && e.Status.Operation.Type == typ && e.Status.Operation.Member == member {
			op.Started = e.Status.Operation.Started
		}
		e.Status.Operation = op
	}
	return r.Status().Patch(ctx, e, patch)
}

func (r *Reconciler) createMember(ctx context.Context, e *etcdv1.EtcdCluster, n Names, member string, join Join) error {
	if join.Token == "" {
		join.Token = n.Namespace + "-" + n.Cluster
	}
	if !e.Spec.Storage.EmptyDir {
		pvc := PVC(n, member, e.Spec.Storage)
		if err := controllerutil.SetControllerReference(e, pvc, r.Scheme()); err != nil {
			return err
		}
		if err := r.Create(ctx, pvc); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	pod := MemberPod(n, e, member, join, PodOptions{Image: r.Image(e.Spec.Version), ManagerImage: r.ManagerImage})
	if err := controllerutil.SetControllerReference(e, pod, r.Scheme()); err != nil {
		return err
	}
	if err := r.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

func (r *Reconciler) deleteMember(ctx context.Context, n Names, member string) error {
	if err := r.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: member, Namespace: n.Namespace}}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	err := r.Delete(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: n.PVC(member), Namespace: n.Namespace}})
	return client.IgnoreNotFound(err)
}

// ensureBase makes the Services and certificate Secrets.
func (r *Reconciler) ensureBase(ctx context.Context, e *etcdv1.EtcdCluster, n Names, newCluster bool) (Certs, error) {
	for _, svc := range []*corev1.Service{ClientService(n), PeerService(n)} {
		if err := r.apply(ctx, e, svc); err != nil {
			return Certs{}, err
		}
	}
	have := Certs{}
	for name, dst := range map[string]*SecretData{n.CASecret(): &have.CA, n.ServerSecret(): &have.Server, n.ClientSecret(): &have.Client} {
		var s corev1.Secret
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: n.Namespace, Name: name}, &s); err == nil {
			*dst = s.Data
		} else if !apierrors.IsNotFound(err) {
			return Certs{}, err
		}
	}
	want, changed, err := PlanCerts(n, r.domain(), have, newCluster, time.Now())
	if err != nil {
		return Certs{}, err
	}
	for _, name := range changed {
		data := map[string]SecretData{n.CASecret(): want.CA, n.ServerSecret(): want.Server, n.ClientSecret(): want.Client}[name]
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: n.Namespace, Labels: n.Selector()}, Data: data}
		if err := r.apply(ctx, e, s); err != nil {
			return Certs{}, err
		}
	}
	return want, nil
}

func (r *Reconciler) domain() string {
	if r.Domain == "" {
		return "cluster.local"
	}
	return r.Domain
}

// apply creates or updates an owned object to the rendered state.
func (r *Reconciler) apply(ctx context.Context, e *etcdv1.EtcdCluster, obj client.Object) error {
	if err := controllerutil.SetControllerReference(e, obj, r.Scheme()); err != nil {
		return err
	}
	existing := obj.DeepCopyObject().(client.Object)
	err := r.Get(ctx, client.ObjectKeyFromObject(obj), existing)
	if apierrors.IsNotFound(err) {
		return r.Create(ctx, obj)
	}
	if err != nil {
		return err
	}
	switch want := obj.(type) {
	case *corev1.Service:
		have := existing.(*corev1.Service)
		want.Spec.ClusterIP, want.Spec.ClusterIPs = have.Spec.ClusterIP, have.Spec.ClusterIPs
		if equalService(have, want) {
			return nil
		}
		have.Spec.Ports, have.Spec.Selector, have.Spec.PublishNotReadyAddresses = want.Spec.Ports, want.Spec.Selector, want.Spec.PublishNotReadyAddresses
		return r.Update(ctx, have)
	case *corev1.Secret:
		have := existing.(*corev1.Secret)
		have.Data = want.Data
		return r.Update(ctx, have)
	}
	return nil
}

func equalService(have, want *corev1.Service) bool {
	if have.Spec.PublishNotReadyAddresses != want.Spec.PublishNotReadyAddresses || len(have.Spec.Ports) != len(want.Spec.Ports) {
		return false
	}
	for i := range want.Spec.Ports {
		if have.Spec.Ports[i].Port != want.Spec.Ports[i].Port || have.Spec.Ports[i].Name != want.Spec.Ports[i].Name {
			return false
		}
	}
	for k, v := range want.Spec.Selector {
		if have.Spec.Selector[k] != v {
			return false
		}
	}
	return true
}

// ClientTLS builds an mTLS client config from the client Secret's data
// (tls.crt, tls.key, ca.crt).
func ClientTLS(d SecretData) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(d["tls.crt"], d["tls.key"])
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(d["ca.crt"])
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// writeStatus records what was observed and done.
func (r *Reconciler) writeStatus(ctx context.Context, e *etcdv1.EtcdCluster, n Names, obs Observed, members map[string]etcdv1.MemberStatus,
	clusterID string, step Step, stepErr error) error {
	patch := client.MergeFrom(e.DeepCopy())
	st := &e.Status
	st.ObservedGeneration = e.Generation
	st.ClientEndpoint = n.ClientEndpoint()
	st.CASecretName, st.ClientSecretName = n.CASecret(), n.ClientSecret()
	if clusterID != "" {
		st.ClusterID = clusterID
	}
	if !obs.Reachable {
		// Keep the membership last seen (it is how lost pods come back
		// when no member answers), marked unhealthy.
		for i := range st.Members {
			st.Members[i].Healthy = false
		}
	} else {
		st.Members = st.Members[:0]
	}
	ready, lowest := int32(0), ""
	for _, m := range obs.Members {
		ms := members[m.Name]
		st.Members = append(st.Members, ms)
		if ms.Healthy && ms.Role != etcdv1.RoleLearner {
			ready++
		}
		if ms.Version != "" && (lowest == "" || versionLess(ms.Version, lowest)) {
			lowest = ms.Version
		}
	}
	st.ReadyMembers = ready
	if obs.Reachable {
		st.AuthEnabled = obs.AuthEnabled
	}
	if stepErr == nil && (step.Action == ActEnableAuth || step.Action == ActDisableAuth) {
		st.AuthEnabled = step.Action == ActEnableAuth
	}
	if stepErr == nil && (step.Action == ActRecoverSpace || (step.Action == ActDefrag && step.Member == "")) {
		st.LastDefragTime = &metav1.Time{Time: time.Now()}
	}
	if lowest != "" {
		st.Version = lowest
	}
	voters, _ := split(obs.Members)
	quorum := int32(len(voters))/2 + 1
	gen := e.Generation
	set := func(t string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	available := obs.Reachable && ready >= quorum && len(voters) > 0
	set(etcdv1.ConditionAvailable, available, boolReason(available, "QuorumHealthy", "QuorumUnavailable"),
		fmt.Sprintf("%d of %d voting members healthy", ready, len(voters)))
	progressing := step.Action != ActNone && step.Action != ActQuorumLost
	set(etcdv1.ConditionProgressing, progressing, string(step.Action), step.Reason)
	degraded := stepErr != nil || (obs.Reachable && int(ready) < obs.Replicas)
	msg := step.Reason
	if stepErr != nil {
		msg = fmt.Sprintf("%s: %v", step, stepErr)
	}
	set(etcdv1.ConditionDegraded, degraded, boolReason(degraded, "Degraded", "AsExpected"), msg)
	lost := step.Action == ActQuorumLost
	set(etcdv1.ConditionQuorumLost, lost, boolReason(lost, "QuorumLost", "QuorumPresent"), boolReason(lost, step.Reason, ""))
	switch {
	case lost:
		st.Phase = "QuorumLost"
	case e.Spec.Paused:
		st.Phase = "Paused"
	case progressing && !available:
		st.Phase = "Creating"
	case progressing:
		st.Phase = "Updating"
	case available:
		st.Phase = "Running"
	default:
		st.Phase = "Unavailable"
	}
	return r.Status().Patch(ctx, e, patch)
}

// expectedRefusal: etcd declined a membership change it will accept once the
// cluster has settled (a member connected for too short a time, a learner
// not yet in sync).
func expectedRefusal(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, rpctypes.ErrUnhealthy.Error()) || strings.Contains(msg, rpctypes.ErrMemberLearnerNotReady.Error())
}

func boolReason(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}

// versionLess compares vX.Y.Z strings numerically.
func versionLess(a, b string) bool {
	pa, pb := strings.Split(strings.TrimPrefix(a, "v"), "."), strings.Split(strings.TrimPrefix(b, "v"), ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			return x < y
		}
	}
	return len(pa) < len(pb)
}
