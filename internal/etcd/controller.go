package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/pki"
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
	// Dial connects to etcd members; nil dials them for real (Dial).
	Dial Dialer

	misses misses
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

const (
	requeueBusy   = 2 * time.Second
	requeueSteady = 30 * time.Second
	etcdTimeout   = 5 * time.Second
)

// Reconcile observes one EtcdCluster, plans the single next step, takes it
// (unless the cluster is paused) and records status.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	e := &etcdv1.EtcdCluster{}
	if err := r.Get(ctx, req.NamespacedName, e); err != nil {
		if apierrors.IsNotFound(err) {
			forgetClusterMetrics(req.Namespace, req.Name)
			r.misses.note(req.NamespacedName, false, time.Time{})
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if e.DeletionTimestamp != nil {
		forgetClusterMetrics(e.Namespace, e.Name)
		return ctrl.Result{}, nil // owned objects go with it (garbage collection)
	}
	n := Names{Cluster: e.Name, Namespace: e.Namespace}

	obs, err := r.observe(ctx, e, n)
	if err != nil {
		return ctrl.Result{}, err
	}
	now := time.Now()
	if since := r.misses.note(req.NamespacedName, healthMissed(obs.Observed), now); missTolerated(e, obs.Observed, since, now) {
		logger.Info("etcd missed a health check; status kept while its pods stay Ready",
			"since", since, "grace", healthGrace, "error", obs.etcdErr)
		return ctrl.Result{RequeueAfter: requeueBusy}, nil
	}
	if obs.Journal != nil {
		// A journaled change that is complete is cleared before planning.
		if _, done := finishJournal(obs.Observed); done {
			if err := r.journal(ctx, e, "", "", 0); err != nil {
				return ctrl.Result{}, err
			}
			obs.Journal = nil
		}
	}

	step := Plan(obs.Observed)
	if obs.certErr != nil {
		// Without good certificates nothing is changed; status says why.
		step = Step{Action: ActNone}
	}
	if e.Spec.Paused && step.Action != ActNone {
		step = Step{Action: ActNone, Reason: "paused: " + step.String()}
	}
	if step.Action == ActNone {
		logger.V(1).Info("plan", "step", step.String())
	} else {
		logger.Info("plan", "step", step.String(), "operation", e.Status.Operation)
	}
	var baseErr, stepErr error
	if !e.Spec.Paused {
		baseErr = r.applyBase(ctx, e, n, obs)
		if baseErr == nil {
			stepErr = r.act(ctx, e, n, step, obs)
		}
	}
	if obs.certErr != nil {
		r.Recorder.Eventf(e, corev1.EventTypeWarning, "CertificatesBlocked", "%v", obs.certErr)
	}
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
	problem := errors.Join(obs.certErr, baseErr, stepErr)
	orig := e.DeepCopy()
	computeStatus(e, n, obs, step, problem, now)
	// An unchanged status is not written (a steady pass sends nothing).
	if !equality.Semantic.DeepEqual(orig.Status, e.Status) {
		if err := r.Status().Patch(ctx, e, client.MergeFrom(orig)); err != nil {
			return ctrl.Result{}, errors.Join(baseErr, fmt.Errorf("writing status: %w", err))
		}
	}
	recordClusterMetrics(e, step, problem)
	switch {
	case baseErr != nil:
		// The API refused a write: retried with controller-runtime's
		// backoff.
		return ctrl.Result{}, baseErr
	case obs.certErr != nil, step.Action == ActNone && stepErr == nil:
		// A blocked CA needs a human; nothing to do soon otherwise.
		return ctrl.Result{RequeueAfter: requeueSteady}, nil
	}
	return ctrl.Result{RequeueAfter: requeueBusy}, nil
}

// act performs one step. Membership changes are journaled in status first.
func (r *Reconciler) act(ctx context.Context, e *etcdv1.EtcdCluster, n Names, step Step, o *observation) error {
	obs, tlsCfg := o.Observed, o.tlsCfg
	switch step.Action {
	case ActBootstrap:
		r.Recorder.Eventf(e, corev1.EventTypeNormal, "Bootstrap", "creating first member %s", step.Member)
		return r.createMember(ctx, e, n, step.Member, Join{New: true, Peers: map[string]string{step.Member: n.PeerURL(step.Member)}})
	case ActCreatePod:
		return r.createMember(ctx, e, n, step.Member, r.joinExisting(n, obs, step.Member))
	case ActAddLearner:
		if err := r.journal(ctx, e, ActAddLearner, step.Member, 0); err != nil {
			return err
		}
		r.Recorder.Eventf(e, corev1.EventTypeNormal, "AddLearner", "adding %s as a learner", step.Member)
		var id uint64
		err := r.withEtcd(ctx, n, obs, tlsCfg, func(ctx context.Context, cli Client) error {
			resp, err := cli.MemberAddAsLearner(ctx, []string{n.PeerURL(step.Member)})
			if err != nil {
				return fmt.Errorf("adding learner %s: %w", step.Member, err)
			}
			id = resp.Member.ID
			return nil
		})
		if err != nil {
			return err
		}
		if err := r.journal(ctx, e, ActAddLearner, step.Member, id); err != nil {
			return err
		}
		join := r.joinExisting(n, obs, step.Member)
		return r.createMember(ctx, e, n, step.Member, join)
	case ActPromote:
		if err := r.journal(ctx, e, ActPromote, step.Member, step.ID); err != nil {
			return err
		}
		r.Recorder.Eventf(e, corev1.EventTypeNormal, "Promote", "promoting learner %s", step.Member)
		if err := r.withEtcd(ctx, n, obs, tlsCfg, func(ctx context.Context, cli Client) error {
			if _, err := cli.MemberPromote(ctx, step.ID); err != nil {
				return fmt.Errorf("promoting %s: %w", step.Member, err)
			}
			return nil
		}); err != nil {
			return err
		}
		return r.journal(ctx, e, "", "", 0)
	case ActRemove:
		if err := r.journal(ctx, e, ActRemove, step.Member, step.ID); err != nil {
			return err
		}
		r.Recorder.Eventf(e, corev1.EventTypeNormal, "Remove", "removing member %s (%s)", step.Member, step.Reason)
		if err := r.withEtcd(ctx, n, obs, tlsCfg, func(ctx context.Context, cli Client) error {
			if _, err := cli.MemberRemove(ctx, step.ID); err != nil {
				return fmt.Errorf("removing member %s: %w", step.Member, err)
			}
			return nil
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
		return r.withEtcdTimeout(ctx, n, obs, tlsCfg, maintenanceTimeout, func(ctx context.Context, cli Client) error {
			return recoverSpace(ctx, cli, n, obs)
		})
	case ActDefrag:
		members := defragOrder(obs.Members, obs.LeaderID)
		if step.Member != "" {
			members = []Member{{Name: step.Member}}
		}
		r.Recorder.Eventf(e, corev1.EventTypeNormal, "Defragment", "defragmenting %s (%s)", memberNames(members), step.Reason)
		return r.withEtcdTimeout(ctx, n, obs, tlsCfg, maintenanceTimeout, func(ctx context.Context, cli Client) error {
			return defragment(ctx, cli, n, members)
		})
	case ActEnableAuth:
		r.Recorder.Event(e, corev1.EventTypeNormal, "EnableAuth", "turning on etcd authentication (root user for kok, a prefix-confined user per business cluster)")
		return r.withEtcd(ctx, n, obs, tlsCfg, enableAuth)
	case ActDisableAuth:
		r.Recorder.Event(e, corev1.EventTypeNormal, "DisableAuth", "turning off etcd authentication")
		return r.withEtcd(ctx, n, obs, tlsCfg, func(ctx context.Context, cli Client) error {
			if _, err := cli.AuthDisable(ctx); err != nil {
				return fmt.Errorf("disabling authentication: %w", err)
			}
			return nil
		})
	case ActMoveLeader:
		r.Recorder.Eventf(e, corev1.EventTypeNormal, "MoveLeader", "moving leadership off %s before its restart", step.Member)
		cli, err := r.dial([]string{n.ClientURL(step.Member)}, tlsCfg)
		if err != nil {
			return err
		}
		defer func() { _ = cli.Close() }()
		mctx, cancel := context.WithTimeout(ctx, etcdTimeout)
		defer cancel()
		if _, err := cli.MoveLeader(mctx, step.Target); err != nil {
			return fmt.Errorf("moving leadership from %s to %x: %w", step.Member, step.Target, err)
		}
		return nil
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

func (r *Reconciler) withEtcd(ctx context.Context, n Names, obs Observed, tlsCfg *tls.Config, f func(context.Context, Client) error) error {
	return r.withEtcdTimeout(ctx, n, obs, tlsCfg, etcdTimeout, f)
}

func (r *Reconciler) withEtcdTimeout(ctx context.Context, n Names, obs Observed, tlsCfg *tls.Config, timeout time.Duration, f func(context.Context, Client) error) error {
	var endpoints []string
	for _, m := range obs.Members {
		if m.Healthy && !m.Learner {
			endpoints = append(endpoints, n.ClientURL(m.Name))
		}
	}
	if len(endpoints) == 0 {
		return errors.New("no healthy voting member to talk to")
	}
	cli, err := r.dial(endpoints, tlsCfg)
	if err != nil {
		return err
	}
	defer func() { _ = cli.Close() }()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return f(cctx, cli)
}

// journal records (or, with an empty type, clears) the membership change
// in flight, before the etcd call is made.
func (r *Reconciler) journal(ctx context.Context, e *etcdv1.EtcdCluster, typ Action, member string, id uint64) error {
	patch := client.MergeFrom(e.DeepCopy())
	if typ == "" {
		e.Status.Operation = nil
	} else {
		op := &etcdv1.MembershipOperation{Type: string(typ), Member: member, Started: metav1.Now()}
		if id != 0 {
			op.ID = fmt.Sprintf("%x", id)
		}
		if e.Status.Operation != nil && e.Status.Operation.Type == string(typ) && e.Status.Operation.Member == member {
			op.Started = e.Status.Operation.Started
		}
		e.Status.Operation = op
	}
	if err := r.Status().Patch(ctx, e, patch); err != nil {
		return fmt.Errorf("journaling %q in status: %w", typ, err)
	}
	return nil
}

func (r *Reconciler) createMember(ctx context.Context, e *etcdv1.EtcdCluster, n Names, member string, join Join) error {
	if join.Token == "" {
		join.Token = n.Namespace + "-" + n.Cluster
	}
	// A member's claim and pod are made once and never updated: a pod is
	// replaced by deleting it, a claim's spec is immutable.
	if !e.Spec.Storage.EmptyDir {
		if err := kube.CreateOnce(ctx, r, e, PVC(n, member, e.Spec.Storage)); err != nil {
			return err
		}
	}
	return kube.CreateOnce(ctx, r, e, MemberPod(n, e, member, join, PodOptions{Image: r.Image(e.Spec.Version), ManagerImage: r.ManagerImage}))
}

func (r *Reconciler) deleteMember(ctx context.Context, n Names, member string) error {
	if err := r.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: member, Namespace: n.Namespace}}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting pod %s: %w", member, err)
	}
	if err := r.Delete(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: n.PVC(member), Namespace: n.Namespace}}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting claim %s: %w", n.PVC(member), err)
	}
	return nil
}

// applyBase keeps the Services and writes the certificate Secrets that
// observe found missing or due. It runs before every step, never while
// the cluster is paused.
func (r *Reconciler) applyBase(ctx context.Context, e *etcdv1.EtcdCluster, n Names, obs *observation) error {
	for _, svc := range []*corev1.Service{ClientService(n), PeerService(n)} {
		if err := kube.Apply(ctx, r, e, svc); err != nil {
			return err
		}
	}
	data := map[string]pki.SecretData{n.CASecret(): obs.certs.CA, n.ServerSecret(): obs.certs.Server, n.ClientSecret(): obs.certs.Client}
	for _, name := range obs.certChanged {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: n.Namespace, Labels: n.Selector()}, Data: data[name]}
		if err := kube.Apply(ctx, r, e, s); err != nil {
			return err
		}
	}
	return nil
}

func (r *Reconciler) domain() string {
	if r.Domain == "" {
		return "cluster.local"
	}
	return r.Domain
}

// expectedRefusal: etcd declined a membership change it will accept once the
// cluster has settled (a member connected for too short a time, a learner
// not yet in sync).
func expectedRefusal(err error) bool {
	return errors.Is(err, rpctypes.ErrUnhealthy) || errors.Is(err, rpctypes.ErrMemberLearnerNotReady)
}

func (r *Reconciler) dial(endpoints []string, tlsCfg *tls.Config) (Client, error) {
	if r.Dial != nil {
		return r.Dial(endpoints, tlsCfg)
	}
	return Dial(endpoints, tlsCfg)
}
