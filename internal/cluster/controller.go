package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/conditions"
	"github.com/kubeonkube/kok/internal/kube"
)

// Reconciler runs KubeClusters. One pass observes everything into a state
// (observe.go), runs the apply phases in order (phases.go) unless the
// cluster is paused, and computes every condition and the phase from the
// state in one place (status.go).
type Reconciler struct {
	client.Client
	Recorder record.EventRecorder
	// APIReader reads certificate Secrets past the cache: a cache that has
	// not seen a Secret this operator just wrote would have it issue the
	// material again (a new CA, every pod rolled twice).
	APIReader client.Reader
	// ImageRegistry prefixes catalog images (one override for air-gapped
	// sites).
	ImageRegistry string
	// MetaDomain is the meta cluster's DNS domain.
	MetaDomain string
	// Bootstrap keeps the business cluster's bootstrap objects; nil uses
	// EnsureBootstrapObjects through the admin kubeconfig.
	Bootstrap func(ctx context.Context, kubeconfig []byte, server string, caPEM []byte) error
	// EtcdTenant gives a cluster on a shared, authenticated EtcdCluster its
	// prefix-confined etcd user; nil uses etcd.EnsureTenant through the
	// EtcdCluster's root client.
	EtcdTenant func(ctx context.Context, ec *etcdv1.EtcdCluster, user, prefix string) error
	// KonnectivityAgents counts a proxy server's agents; nil reads its
	// metrics at the pod's address.
	KonnectivityAgents KonnectivityAgents
	// bootstrapped and tenants remember, per existing cluster, what was
	// last applied into the business cluster or etcd and when, so neither
	// is asked again each pass; entries expire after refreshEvery and go
	// with their cluster.
	bootstrapped, tenants memo
	// applied skips applies of meta-cluster objects whose rendering and
	// observed generation are what the last apply left (steady passes
	// send nothing); secretVersions tells a certificate Secret the cache
	// has not caught up with.
	applied        kube.Applied
	secretVersions versions
	// Workers is how many KubeClusters are reconciled at once (default 1).
	Workers int
}

// +kubebuilder:rbac:groups=cluster.kok.dev,resources=kubeclusters,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=cluster.kok.dev,resources=kubeclusters/status;kubeclusters/finalizers,verbs=get;update;patch
// +kubebuilder:rbac:groups=cluster.kok.dev,resources=kubernetesversions,verbs=get;list;watch
// +kubebuilder:rbac:groups=etcd.kok.dev,resources=etcdclusters,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;secrets;configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorderFor("cluster-operator")
	}
	if r.MetaDomain == "" {
		r.MetaDomain = "cluster.local"
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&clusterv1.KubeCluster{}).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.Secret{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&etcdv1.EtcdCluster{}, builder.WithPredicates(etcdSummaryChanged)).
		Watches(&clusterv1.KubernetesVersion{}, handler.EnqueueRequestsFromMapFunc(r.clustersOfVersion)).
		Watches(&etcdv1.EtcdCluster{}, handler.EnqueueRequestsFromMapFunc(r.clustersOfSharedEtcd), builder.WithPredicates(etcdSummaryChanged)).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Complete(r)
}

// etcdSummaryChanged passes the EtcdCluster updates a KubeCluster acts on.
// Raft indexes and database sizes change with every write; reacting to
// them would reconcile every business cluster after each of its own writes.
var etcdSummaryChanged = predicate.Funcs{UpdateFunc: func(ev event.UpdateEvent) bool {
	o, ok1 := ev.ObjectOld.(*etcdv1.EtcdCluster)
	n, ok2 := ev.ObjectNew.(*etcdv1.EtcdCluster)
	if !ok1 || !ok2 {
		return true
	}
	available := func(e *etcdv1.EtcdCluster) bool {
		return conditions.IsTrue(e.Status.Conditions, etcdv1.ConditionAvailable)
	}
	return o.Generation != n.Generation || !o.DeletionTimestamp.Equal(n.DeletionTimestamp) ||
		o.Status.Phase != n.Status.Phase || o.Status.ReadyMembers != n.Status.ReadyMembers ||
		o.Status.Version != n.Status.Version || o.Status.ClientEndpoint != n.Status.ClientEndpoint ||
		o.Status.CASecretName != n.Status.CASecretName ||
		o.Status.AuthEnabled != n.Status.AuthEnabled || available(o) != available(n)
}}

const (
	requeueBusy    = 2 * time.Second
	requeueSteady  = time.Minute
	requeueTunnels = 10 * time.Second
	// tunnelsPatience: how long proxy servers without agents are looked
	// at every requeueTunnels (nodes joining a new cluster) before the
	// cluster falls back to the steady minute (a cluster without nodes).
	tunnelsPatience = 5 * time.Minute
)

// Reconcile drives one KubeCluster towards its spec and records status.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	kc := &clusterv1.KubeCluster{}
	if err := r.Get(ctx, req.NamespacedName, kc); err != nil {
		if apierrors.IsNotFound(err) {
			r.bootstrapped.forget(req.NamespacedName)
			r.tenants.forget(req.NamespacedName)
			n := Names{Cluster: req.Name, Namespace: req.Namespace}
			for _, s := range n.secretNames() {
				r.secretVersions.forget(types.NamespacedName{Namespace: req.Namespace, Name: s})
			}
			forgetMetrics(req.Namespace, req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	n := Names{Cluster: kc.Name, Namespace: kc.Namespace}
	if kc.DeletionTimestamp != nil {
		return r.teardown(ctx, kc, n)
	}
	if !kc.Spec.Paused && controllerutil.AddFinalizer(kc, Finalizer) {
		if err := r.Update(ctx, kc); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding the teardown finalizer: %w", err)
		}
	}
	orig := kc.DeepCopy()
	st, err := r.observe(ctx, kc, n)
	if err == nil && !kc.Spec.Paused {
		err = r.act(ctx, kc, n, st)
	}
	if err != nil {
		r.Recorder.Event(kc, corev1.EventTypeWarning, "ReconcileFailed", err.Error())
	}
	computeStatus(kc, n, st, err)
	recordMetrics(kc, st)
	// An unchanged status is not written (a steady pass sends nothing).
	if !equality.Semantic.DeepEqual(orig.Status, kc.Status) {
		if serr := r.Status().Patch(ctx, kc, client.MergeFrom(orig)); serr != nil {
			return ctrl.Result{}, errors.Join(err, fmt.Errorf("writing status: %w", serr))
		}
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: requeueAfter(kc, st)}, nil
}

// requeueAfter: soon while anything is on its way, otherwise a steady
// re-check.
func requeueAfter(kc *clusterv1.KubeCluster, st *state) time.Duration {
	if st.catalog == nil || kc.Spec.Paused {
		return requeueSteady
	}
	if kc.Spec.Hibernated && !conditions.IsTrue(kc.Status.Conditions, clusterv1.ConditionProgressing) {
		// Nothing runs: watched objects wake it; certificates due meanwhile
		// are renewed when it wakes, before its apiservers start.
		return refreshEvery
	}
	if conditions.IsTrue(kc.Status.Conditions, clusterv1.ConditionProgressing) || !conditions.IsTrue(kc.Status.Conditions, clusterv1.ConditionReady) {
		return requeueBusy
	}
	if c := meta.FindStatusCondition(kc.Status.Conditions, clusterv1.ConditionKonnectivityReady); len(st.konnectivity) > 0 &&
		(c == nil || c.Status != metav1.ConditionTrue && time.Since(c.LastTransitionTime.Time) < tunnelsPatience) {
		// Proxy servers run and wait for agents (nodes joining).
		return requeueTunnels
	}
	return requeueSteady
}

// teardown removes the control plane in order: controller-manager and
// scheduler, then the apiservers, then the Service and etcd (kept with
// deletionPolicy Retain). Secrets go with the KubeCluster.
func (r *Reconciler) teardown(ctx context.Context, kc *clusterv1.KubeCluster, n Names) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(kc, Finalizer) {
		return ctrl.Result{}, nil
	}
	if kc.Status.Phase != clusterv1.PhaseDeleting {
		orig := kc.DeepCopy()
		kc.Status.Phase = clusterv1.PhaseDeleting
		if err := r.Status().Patch(ctx, kc, client.MergeFrom(orig)); err != nil {
			return ctrl.Result{}, fmt.Errorf("recording the deletion: %w", err)
		}
	}
	for _, stage := range [][]string{{ControllerManager, Scheduler}, {APIServer}} {
		gone := true
		for _, c := range stage {
			d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: n.Namespace, Name: n.Deployment(c)}}
			if err := r.Delete(ctx, d, client.PropagationPolicy(metav1.DeletePropagationBackground)); err == nil {
				gone = false
			} else if !apierrors.IsNotFound(err) {
				return ctrl.Result{}, fmt.Errorf("deleting %s: %w", d.Name, err)
			}
			var pods corev1.PodList
			if err := r.List(ctx, &pods, client.InNamespace(n.Namespace), client.MatchingLabels(n.Selector(c))); err != nil {
				return ctrl.Result{}, fmt.Errorf("listing %s pods: %w", c, err)
			}
			if len(pods.Items) > 0 {
				gone = false
			}
		}
		if !gone {
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: n.Namespace, Name: n.Service()}}
	if err := r.Delete(ctx, svc); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("deleting Service %s: %w", svc.Name, err)
	}
	if kc.Spec.Etcd.Ref == nil {
		if err := r.releaseManagedEtcd(ctx, kc, n); err != nil {
			return ctrl.Result{}, err
		}
	}
	controllerutil.RemoveFinalizer(kc, Finalizer)
	if err := r.Update(ctx, kc); err != nil {
		return ctrl.Result{}, fmt.Errorf("removing the teardown finalizer: %w", err)
	}
	return ctrl.Result{}, nil
}

// releaseManagedEtcd deletes the cluster's own EtcdCluster, or with
// deletionPolicy Retain lets it go on without an owner.
func (r *Reconciler) releaseManagedEtcd(ctx context.Context, kc *clusterv1.KubeCluster, n Names) error {
	ec := &etcdv1.EtcdCluster{}
	err := r.Get(ctx, client.ObjectKey{Namespace: n.Namespace, Name: n.ManagedEtcd()}, ec)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("reading EtcdCluster %s: %w", n.ManagedEtcd(), err)
	case kc.Spec.DeletionPolicy == "Retain":
		if !metav1.IsControlledBy(ec, kc) {
			return nil
		}
		orig := ec.DeepCopy()
		ec.OwnerReferences = slices.DeleteFunc(ec.OwnerReferences, func(o metav1.OwnerReference) bool { return o.UID == kc.UID })
		if err := r.Patch(ctx, ec, client.MergeFrom(orig)); err != nil {
			return fmt.Errorf("releasing EtcdCluster %s: %w", ec.Name, err)
		}
		r.Recorder.Eventf(kc, corev1.EventTypeNormal, "EtcdRetained", "EtcdCluster %s and its volumes are kept (deletionPolicy Retain)", ec.Name)
		return nil
	default:
		if err := r.Delete(ctx, ec); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting EtcdCluster %s: %w", ec.Name, err)
		}
		return nil
	}
}

func (r *Reconciler) clustersOfVersion(ctx context.Context, obj client.Object) []reconcile.Request {
	return r.clustersWhere(ctx, func(kc *clusterv1.KubeCluster) bool { return kc.Spec.Version == obj.GetName() })
}

func (r *Reconciler) clustersOfSharedEtcd(ctx context.Context, obj client.Object) []reconcile.Request {
	return r.clustersWhere(ctx, func(kc *clusterv1.KubeCluster) bool {
		ref := kc.Spec.Etcd.Ref
		return ref != nil && etcdKey(kc, Names{Cluster: kc.Name, Namespace: kc.Namespace}) == client.ObjectKeyFromObject(obj)
	})
}

func (r *Reconciler) clustersWhere(ctx context.Context, match func(*clusterv1.KubeCluster) bool) []reconcile.Request {
	var list clusterv1.KubeClusterList
	if err := r.List(ctx, &list); err != nil {
		log.FromContext(ctx).Error(err, "listing KubeClusters")
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		if match(&list.Items[i]) {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name}})
		}
	}
	return out
}
