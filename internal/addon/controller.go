package addon

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	addonv1 "github.com/kubeonkube/kok/api/addon/v1alpha1"
	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/conditions"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/workload"
)

// Reconciler keeps ClusterAddons: each pass renders the addon for its
// cluster, server-side applies every object into the business cluster
// (putting back what was deleted or edited, leaving what a KeepAnnotation
// names), deletes what an older version had and this one has not, and
// reports Applied and Healthy.
type Reconciler struct {
	client.Client
	Recorder record.EventRecorder
	// ImageRegistry prefixes every image.
	ImageRegistry string
	// Workload reaches a business cluster; nil uses its admin kubeconfig.
	Workload workload.Func
	// Workers is how many ClusterAddons (and KubeClusters' addon lists)
	// are reconciled at once; at least one.
	Workers int

	workloads     workload.Cache
	workloadsInit sync.Once
	watches       *watcher
	// applied skips ClusterAddons whose entry and object are unchanged.
	applied kube.Applied
}

// Finalizer holds a ClusterAddon until its objects are gone from the
// business cluster.
const Finalizer = "addon.kok.dev/cleanup"

const (
	// resync: an addon is checked this often when nothing woke it: each
	// object is read, and applied only if it no longer holds kok's
	// rendering. Its watches wake it at once when an object is deleted or
	// edited, or a workload's health changes (watcher), so the resync only
	// covers a watch that was down. settling: the next look after a pass
	// that wrote something or could not finish.
	resync   = 5 * time.Minute
	settling = 5 * time.Second
)

// +kubebuilder:rbac:groups=addon.kok.dev,resources=addons,verbs=get;list;watch
// +kubebuilder:rbac:groups=addon.kok.dev,resources=clusteraddons,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=addon.kok.dev,resources=clusteraddons/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=cluster.kok.dev,resources=kubeclusters,verbs=get;list;watch
// +kubebuilder:rbac:groups=cluster.kok.dev,resources=kubeclusters/finalizers,verbs=update

// SetupWithManager registers the ClusterAddon controller and the one that
// makes ClusterAddons from KubeClusters.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorderFor("addon-operator")
	}
	r.watches = newWatcher()
	err := ctrl.NewControllerManagedBy(mgr).Named("clusteraddon").
		For(&addonv1.ClusterAddon{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A new Addon version, or a cluster whose control plane changed
		// release, re-renders its addons.
		Watches(&addonv1.Addon{}, handler.EnqueueRequestsFromMapFunc(r.addonsWhere(func(ca *addonv1.ClusterAddon, o client.Object) bool {
			return ca.Spec.Addon == o.(*addonv1.Addon).Spec.Addon
		}))).
		Watches(&clusterv1.KubeCluster{}, handler.EnqueueRequestsFromMapFunc(r.addonsWhere(func(ca *addonv1.ClusterAddon, o client.Object) bool {
			return ca.Namespace == o.GetNamespace() && ca.Spec.ClusterName == o.GetName()
		}))).
		// An addon object deleted or edited in a business cluster.
		WatchesRawSource(source.Channel(r.watches.events, handler.EnqueueRequestsFromMapFunc(r.addonsWhere(func(ca *addonv1.ClusterAddon, o client.Object) bool {
			return ca.Namespace == o.GetNamespace() && ca.Spec.ClusterName == o.GetName() && ca.Spec.Addon == o.GetLabels()[LabelAddon]
		})))).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Complete(r)
	if err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).Named("clusteraddons-of-kubecluster").
		For(&clusterv1.KubeCluster{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&addonv1.ClusterAddon{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Complete(reconcile.Func(r.reconcileCluster))
}

func (r *Reconciler) addonsWhere(match func(*addonv1.ClusterAddon, client.Object) bool) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		var list addonv1.ClusterAddonList
		var opts []client.ListOption
		if o.GetNamespace() != "" {
			opts = append(opts, client.InNamespace(o.GetNamespace()))
		}
		if err := r.List(ctx, &list, opts...); err != nil {
			log.FromContext(ctx).Error(err, "listing ClusterAddons")
			return nil
		}
		var out []reconcile.Request
		for i := range list.Items {
			if match(&list.Items[i], o) {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
			}
		}
		return out
	}
}

// reconcileCluster makes one ClusterAddon per entry of a KubeCluster's
// spec.addons and deletes those no longer listed.
func (r *Reconciler) reconcileCluster(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	kc := &clusterv1.KubeCluster{}
	if err := r.Get(ctx, req.NamespacedName, kc); err != nil {
		if apierrors.IsNotFound(err) && r.watches != nil {
			r.watches.stop(req.NamespacedName)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if r.watches != nil && !watchesNeeded(kc) {
		r.watches.stop(req.NamespacedName)
	}
	if kc.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	var list addonv1.ClusterAddonList
	if err := r.List(ctx, &list, client.InNamespace(kc.Namespace), client.MatchingLabels{LabelCluster: kc.Name}); err != nil {
		return reconcile.Result{}, err
	}
	current := map[string]*addonv1.ClusterAddon{}
	for i := range list.Items {
		current[list.Items[i].Name] = &list.Items[i]
	}
	want := map[string]bool{}
	for _, ref := range kc.Spec.Addons {
		ca := &addonv1.ClusterAddon{ObjectMeta: metav1.ObjectMeta{Name: ClusterAddonName(kc.Name, ref.Name), Namespace: kc.Namespace,
			Labels: map[string]string{LabelCluster: kc.Name, LabelAddon: ref.Name}},
			Spec: addonv1.ClusterAddonSpec{ClusterName: kc.Name, Addon: ref.Name, Version: ref.Version, Values: ref.Values}}
		// Unchanged entries are not applied again (a KubeCluster's other
		// spec changes reach here too).
		if err := r.applied.Apply(ctx, r.Client, kc, ca, current[ca.Name]); err != nil {
			return reconcile.Result{}, err
		}
		want[ca.Name] = true
	}
	for i := range list.Items {
		ca := &list.Items[i]
		if !want[ca.Name] && metav1.IsControlledBy(ca, kc) && ca.DeletionTimestamp == nil {
			if err := r.Delete(ctx, ca); client.IgnoreNotFound(err) != nil {
				return reconcile.Result{}, fmt.Errorf("removing addon %s: %w", ca.Spec.Addon, err)
			}
		}
	}
	return reconcile.Result{}, nil
}

// watchesNeeded: a cluster going away, hibernated or without addons has
// nothing in its business cluster to watch; its informers would only
// retry against an apiserver that is not there. A ClusterAddon pass that
// applies starts them again.
func watchesNeeded(kc *clusterv1.KubeCluster) bool {
	return kc.DeletionTimestamp == nil && !kc.Spec.Hibernated && len(kc.Spec.Addons) > 0
}

// ClusterAddonName is the ClusterAddon of addon in cluster.
func ClusterAddonName(cluster, addon string) string { return cluster + "-" + addon }

// state is what one pass learned.
type state struct {
	cluster  *clusterv1.KubeCluster
	addon    *addonv1.Addon
	workload *workload.Cluster
	objects  []*unstructured.Unstructured
	waiting  string // why nothing can be rendered yet
	// clusterWait: waiting is the KubeCluster's state (missing, not up,
	// hibernated), whose next change wakes the ClusterAddon.
	clusterWait bool
	planErr     error
	applyErr    error
	unhealthy   []string
	applied     int // objects that hold the rendering
	sent        int // of them, written by this pass
}

// Reconcile observes a ClusterAddon, applies its objects and records status.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ca := &addonv1.ClusterAddon{}
	if err := r.Get(ctx, req.NamespacedName, ca); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	orig := ca.DeepCopy()
	st, err := r.observe(ctx, ca)
	if err != nil {
		return ctrl.Result{}, err
	}
	if ca.DeletionTimestamp != nil {
		if !controllerutil.ContainsFinalizer(ca, Finalizer) {
			return ctrl.Result{}, nil
		}
		if err := r.remove(ctx, ca, st); err != nil {
			return ctrl.Result{}, err
		}
		controllerutil.RemoveFinalizer(ca, Finalizer)
		return ctrl.Result{}, r.Patch(ctx, ca, client.MergeFrom(orig))
	}
	if st.workload != nil && len(st.objects) > 0 {
		if controllerutil.AddFinalizer(ca, Finalizer) {
			if err := r.Patch(ctx, ca, client.MergeFrom(orig)); err != nil {
				return ctrl.Result{}, err
			}
			orig = ca.DeepCopy()
		}
		r.apply(ctx, ca, st)
		r.watch(ca, st)
	}
	computeStatus(ca, st)
	if !equality.Semantic.DeepEqual(orig.Status, ca.Status) {
		if err := r.Status().Patch(ctx, ca, client.MergeFrom(orig)); err != nil {
			return ctrl.Result{}, fmt.Errorf("writing status: %w", err)
		}
	}
	if st.applyErr != nil {
		r.Recorder.Eventf(ca, corev1.EventTypeWarning, "ApplyFailed", "%v", st.applyErr)
	}
	return ctrl.Result{RequeueAfter: requeue(st)}, nil
}

// requeue is when to look again without an event: never while the
// KubeCluster's own state is what waits (a thousand hibernated clusters
// would otherwise keep five thousand ClusterAddons polling; the KubeCluster
// watch wakes them), soon after a pass that wrote objects or could not
// reach the business cluster, and at the resync otherwise — healthy or
// not, a workload's change of health wakes the addon through its watch (an
// addon whose Deployment waits for a node used to poll every business
// apiserver every 5 s), and a rendering error waits for the catalog or the
// ClusterAddon to change, which wake it too.
func requeue(st *state) time.Duration {
	switch {
	case st.clusterWait:
		return 0
	case st.waiting != "" || st.applyErr != nil || st.sent > 0:
		return settling
	}
	return resync
}

// observe reads the cluster, picks and renders the addon's version, and
// reaches the business cluster.
func (r *Reconciler) observe(ctx context.Context, ca *addonv1.ClusterAddon) (*state, error) {
	st := &state{}
	kc := &clusterv1.KubeCluster{}
	switch err := r.Get(ctx, client.ObjectKey{Namespace: ca.Namespace, Name: ca.Spec.ClusterName}, kc); {
	case apierrors.IsNotFound(err):
		st.waiting = fmt.Sprintf("KubeCluster %s does not exist in namespace %s", ca.Spec.ClusterName, ca.Namespace)
		st.clusterWait = true
		return st, nil
	case err != nil:
		return nil, err
	}
	st.cluster = kc
	if kc.Spec.Hibernated {
		st.waiting, st.clusterWait = kc.Name+" is hibernated: its addons are kept again when it wakes", true
		return st, nil
	}
	if kc.Status.Version == "" || kc.Status.AdminKubeconfigSecret == "" {
		st.waiting, st.clusterWait = "the control plane of "+kc.Name+" is not up yet", true
		return st, nil
	}
	w, err := r.workload(ctx, kc)
	if err != nil {
		st.waiting = err.Error()
		return st, nil
	}
	st.workload = w
	var catalog addonv1.AddonList
	if err := r.List(ctx, &catalog); err != nil {
		return nil, err
	}
	if st.addon, st.planErr = SelectAddon(catalog.Items, ca.Spec.Addon, ca.Spec.Version, minorOf(kc.Status.Version)); st.planErr != nil {
		return st, nil
	}
	cv, err := ClusterValuesFor(kc, w.Server)
	if err != nil {
		st.planErr = err
		return st, nil
	}
	values, err := MergeValues(st.addon.Spec.Values, ca.Spec.Values)
	if err != nil {
		st.planErr = err
		return st, nil
	}
	st.objects, st.planErr = Render(st.addon, Values{Cluster: cv, Registry: r.ImageRegistry, Values: values})
	for _, o := range st.objects {
		labels := o.GetLabels()
		labels[LabelCluster] = kc.Name
		o.SetLabels(labels)
	}
	return st, nil
}

// apply server-side applies every object (fields a KeepAnnotation names
// left out), deletes objects the previous rendering had and this one has
// not, and judges the workloads' health from the answers.
func (r *Reconciler) apply(ctx context.Context, ca *addonv1.ClusterAddon, st *state) {
	c := st.workload.Objects
	for _, obj := range st.objects {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(obj.GroupVersionKind())
		var held *unstructured.Unstructured
		err := c.Get(ctx, client.ObjectKeyFromObject(obj), live)
		switch {
		case err == nil:
			if Keep(obj, live.GetAnnotations()[KeepAnnotation]) {
				st.health(live)
				st.applied++
				continue
			}
			held = live
		case !apierrors.IsNotFound(err) && !meta.IsNoMatchError(err):
			st.applyErr = fmt.Errorf("reading %s: %w", Key(obj), err)
			return
		}
		// A steady pass reads each object and writes none: what still
		// holds this rendering as kok applied it is left alone.
		sent, err := kube.ApplyObjectUnlessHeld(ctx, c, obj, held)
		if err != nil {
			st.applyErr = err
			return
		}
		if sent {
			st.sent++
			st.health(obj)
		} else {
			st.health(live)
		}
		st.applied++
	}
	rendered := map[string]bool{}
	for _, o := range st.objects {
		rendered[Key(o)] = true
	}
	for _, ref := range ca.Status.Objects {
		o := objectOf(ref)
		if rendered[Key(o)] {
			continue
		}
		if err := c.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) && !meta.IsNoMatchError(err) {
			st.applyErr = fmt.Errorf("deleting %s, which this version no longer has: %w", Key(o), err)
			return
		}
	}
}

// remove deletes the addon's objects from the business cluster (nothing
// to do when the cluster itself is gone or going).
func (r *Reconciler) remove(ctx context.Context, ca *addonv1.ClusterAddon, st *state) error {
	if st.cluster == nil || st.cluster.DeletionTimestamp != nil || st.workload == nil {
		return nil
	}
	// What was last applied, and what this rendering has (a pass that
	// failed half-way applied some of it).
	objs := slices.Clone(st.objects)
	for _, ref := range ca.Status.Objects {
		objs = append(objs, objectOf(ref))
	}
	seen := map[string]bool{}
	for _, o := range slices.Backward(objs) {
		if seen[Key(o)] {
			continue
		}
		seen[Key(o)] = true
		if err := st.workload.Objects.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) && !meta.IsNoMatchError(err) {
			return fmt.Errorf("removing %s from %s: %w", Key(o), ca.Spec.ClusterName, err)
		}
	}
	return nil
}

// objectOf is the object ref names (no content).
func objectOf(ref addonv1.AddonObject) *unstructured.Unstructured {
	o := &unstructured.Unstructured{}
	o.SetAPIVersion(ref.APIVersion)
	o.SetKind(ref.Kind)
	o.SetNamespace(ref.Namespace)
	o.SetName(ref.Name)
	return o
}

// health notes a workload that is not available yet.
func (st *state) health(o *unstructured.Unstructured) {
	if problem := WorkloadProblem(o); problem != "" {
		st.unhealthy = append(st.unhealthy, problem)
	}
}

// WorkloadProblem says why a Deployment, DaemonSet or APIService is not
// available ("" when it is, or for any other kind).
func WorkloadProblem(o *unstructured.Unstructured) string {
	num := func(path ...string) int64 {
		v, _, _ := unstructured.NestedInt64(o.Object, path...)
		return v
	}
	name := o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
	stale := num("status", "observedGeneration") < o.GetGeneration()
	switch o.GetKind() {
	case "Deployment":
		want := int64(1)
		if v, found, _ := unstructured.NestedInt64(o.Object, "spec", "replicas"); found {
			want = v
		}
		if avail, updated := num("status", "availableReplicas"), num("status", "updatedReplicas"); stale || avail < want || updated < want {
			return fmt.Sprintf("%s: %d/%d available, %d updated", name, avail, want, updated)
		}
	case "DaemonSet":
		want := num("status", "desiredNumberScheduled")
		if avail, updated := num("status", "numberAvailable"), num("status", "updatedNumberScheduled"); stale || avail < want || updated < want {
			return fmt.Sprintf("%s: %d/%d available, %d updated", name, avail, want, updated)
		}
	case "APIService":
		conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "Available" {
				if m["status"] == "True" {
					return ""
				}
				return fmt.Sprintf("%s: %v", name, m["message"])
			}
		}
		return name + ": not available yet"
	}
	return ""
}

// computeStatus writes the conditions, the version and the objects.
func computeStatus(ca *addonv1.ClusterAddon, st *state) {
	s := &ca.Status
	set := func(t string, ok bool, reason, msg string) {
		conditions.Set(&s.Conditions, ca.Generation, t, ok, reason, msg)
	}
	s.ObservedGeneration = ca.Generation
	switch {
	case st.waiting != "":
		set(addonv1.AddonApplied, false, "WaitingForCluster", st.waiting)
		set(addonv1.AddonHealthy, false, "WaitingForCluster", "applied once the cluster answers")
		return
	case st.planErr != nil:
		set(addonv1.AddonApplied, false, "NotRenderable", st.planErr.Error())
		set(addonv1.AddonHealthy, false, "NotRenderable", "see the Applied condition")
		return
	case st.applyErr != nil:
		set(addonv1.AddonApplied, false, "ApplyFailed", st.applyErr.Error()+" (retried)")
	default:
		if st.sent > 0 || s.LastAppliedTime == nil {
			now := metav1.Now()
			s.LastAppliedTime = &now
		}
		s.Version, s.KubernetesVersion = st.addon.Spec.Version, st.cluster.Status.Version
		s.Objects = nil
		for _, o := range st.objects {
			s.Objects = append(s.Objects, addonv1.AddonObject{APIVersion: o.GetAPIVersion(), Kind: o.GetKind(), Namespace: o.GetNamespace(), Name: o.GetName()})
		}
		set(addonv1.AddonApplied, true, "Applied", fmt.Sprintf("%s %s: %d objects applied for Kubernetes %s (put back when changed)",
			st.addon.Spec.Addon, st.addon.Spec.Version, st.applied, st.cluster.Status.Version))
	}
	switch {
	case st.applyErr != nil:
		set(addonv1.AddonHealthy, false, "ApplyFailed", "see the Applied condition")
	case len(st.unhealthy) > 0:
		set(addonv1.AddonHealthy, false, "NotAvailable", strings.Join(st.unhealthy, "; "))
	default:
		set(addonv1.AddonHealthy, true, "Available", "every workload of the addon is available")
	}
}

// watch has the objects' kinds watched in the business cluster, so a
// deleted or edited object wakes this ClusterAddon at once.
func (r *Reconciler) watch(ca *addonv1.ClusterAddon, st *state) {
	if r.watches == nil || st.workload.Dynamic == nil || st.applyErr != nil {
		return
	}
	var gvrs []schema.GroupVersionResource
	for _, o := range st.objects {
		gvk := o.GroupVersionKind()
		m, err := st.workload.Objects.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			continue // applied a moment ago: the mapping is there, or the resync covers it
		}
		gvrs = append(gvrs, m.Resource)
	}
	r.watches.ensure(types.NamespacedName{Namespace: ca.Namespace, Name: ca.Spec.ClusterName}, st.workload, gvrs)
}

func (r *Reconciler) workload(ctx context.Context, kc *clusterv1.KubeCluster) (*workload.Cluster, error) {
	if r.Workload != nil {
		return r.Workload(ctx, kc)
	}
	r.workloadsInit.Do(func() { r.workloads.Reader = r.Client })
	return r.workloads.Get(ctx, kc)
}
