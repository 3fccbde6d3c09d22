package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	addonv1 "github.com/kubeonkube/kok/api/addon/v1alpha1"
	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	clusterac "github.com/kubeonkube/kok/api/cluster/v1alpha1/applyconfiguration/cluster/v1alpha1"
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/cluster"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/workload"
)

// Reconciler drives ClusterUpgrades.
type Reconciler struct {
	client.Client
	Recorder record.EventRecorder
	// Readyz asks the apiserver of a cluster for /readyz (nil: ready); a
	// seam tests replace. Default: through the cluster's admin kubeconfig.
	Readyz func(ctx context.Context, kc *clusterv1.KubeCluster) error
	// Now is the clock (tests move it).
	Now func() time.Time
}

// +kubebuilder:rbac:groups=cluster.kok.dev,resources=clusterupgrades,verbs=get;list;watch
// +kubebuilder:rbac:groups=cluster.kok.dev,resources=clusterupgrades/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=cluster.kok.dev,resources=kubeclusters,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=addon.kok.dev,resources=clusteraddons,verbs=get;list;watch
// +kubebuilder:rbac:groups=node.kok.dev,resources=machines,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// SetupWithManager registers the controller. Any change of a KubeCluster
// or a ClusterAddon wakes the rollouts that are not finished.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorderFor("fleet-operator")
	}
	if r.Readyz == nil {
		r.Readyz = readyzThroughKubeconfig(r.Client)
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&clusterv1.ClusterUpgrade{}).
		Watches(&clusterv1.KubeCluster{}, handler.EnqueueRequestsFromMapFunc(r.activeRollouts)).
		Watches(&addonv1.ClusterAddon{}, handler.EnqueueRequestsFromMapFunc(r.activeRollouts)).
		Watches(&nodev1.Machine{}, handler.EnqueueRequestsFromMapFunc(r.activeRollouts)).
		Complete(r)
}

func (r *Reconciler) activeRollouts(ctx context.Context, _ client.Object) []reconcile.Request {
	var list clusterv1.ClusterUpgradeList
	if err := r.List(ctx, &list); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, cu := range list.Items {
		if cu.Status.Phase != clusterv1.RolloutSucceeded || cu.Status.Failed > 0 {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&cu)})
		}
	}
	return out
}

const (
	requeueRunning = 10 * time.Second
	requeueHalted  = 30 * time.Second
	requeueDone    = time.Minute
)

// Reconcile runs one pass: observe, plan, journal in status, then start.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	cu := &clusterv1.ClusterUpgrade{}
	if err := r.Get(ctx, req.NamespacedName, cu); err != nil {
		if apierrors.IsNotFound(err) {
			forgetMetrics(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	now := r.Now()
	in, problem, err := r.observe(ctx, cu, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	var plan Plan
	if problem == "" {
		plan = PlanRollout(*in)
	}
	before := cu.Status.DeepCopy()
	computeStatus(cu, &plan, problem, now)
	recordMetrics(cu)
	// The journal is written before any cluster is touched: a pass that
	// stops after it finds its clusters in status as Upgrading.
	if !equality.Semantic.DeepEqual(before, &cu.Status) {
		if err := r.Status().Update(ctx, cu); err != nil {
			return ctrl.Result{}, err
		}
	}
	for _, line := range plan.Events {
		reason := "Progress"
		if strings.Contains(line, " failed: ") {
			reason = "ClusterFailed"
		}
		r.Recorder.Event(cu, eventType(reason), reason, line)
	}
	var startErrs []error
	for _, key := range plan.Start {
		ns, name, _ := strings.Cut(key, "/")
		if err := r.setVersion(ctx, ns, name, cu.Spec.To); err != nil {
			startErrs = append(startErrs, fmt.Errorf("setting %s to %s: %w", key, cu.Spec.To, err))
		}
	}
	if err := errors.Join(startErrs...); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: requeue(cu, &plan, now)}, nil
}

func eventType(reason string) string {
	if reason == "ClusterFailed" {
		return corev1.EventTypeWarning
	}
	return corev1.EventTypeNormal
}

// requeue: soon while clusters upgrade, at the end of a soak, slower while
// halted (failed clusters are gated again: a fix resumes the rollout).
func requeue(cu *clusterv1.ClusterUpgrade, plan *Plan, now time.Time) time.Duration {
	switch {
	case cu.Status.Phase == clusterv1.RolloutSucceeded && plan.Failed == 0:
		return 0
	case plan.Halted:
		return requeueHalted
	case plan.SoakUntil != nil && plan.SoakUntil.After(now):
		return min(plan.SoakUntil.Sub(now)+time.Second, requeueDone)
	case plan.Done:
		return requeueDone
	}
	return requeueRunning
}

// setVersion sets a cluster's spec.version (server-side apply of that one
// field, as kok).
func (r *Reconciler) setVersion(ctx context.Context, ns, name, to string) error {
	ac := clusterac.KubeCluster(name, ns).WithSpec(clusterac.KubeClusterSpec().WithVersion(to))
	return kube.ApplyConfigurationInto(ctx, r.Client, ac, &clusterv1.KubeCluster{})
}

// observe reads the clusters the rollout selects or has journaled, with
// the health of those on their way. problem says why nothing can be
// planned (a bad selector, a release not in the catalog).
func (r *Reconciler) observe(ctx context.Context, cu *clusterv1.ClusterUpgrade, now time.Time) (*PlanInput, string, error) {
	in := &PlanInput{Spec: cu.Spec, Targets: cu.Status.Clusters, Now: now}
	switch err := r.Get(ctx, client.ObjectKey{Name: cu.Spec.To}, &clusterv1.KubernetesVersion{}); {
	case apierrors.IsNotFound(err):
		return nil, fmt.Sprintf("KubernetesVersion %s is not in the catalog: apply it first, or upgrade to one that is (kubectl get kubernetesversions)", cu.Spec.To), nil
	case err != nil:
		return nil, "", fmt.Errorf("reading KubernetesVersion %s: %w", cu.Spec.To, err)
	}
	sel, err := metav1.LabelSelectorAsSelector(&cu.Spec.Selector)
	if err != nil {
		return nil, "spec.selector: " + err.Error(), nil
	}
	canary := labels.Nothing()
	if cu.Spec.Canary != nil {
		if canary, err = metav1.LabelSelectorAsSelector(cu.Spec.Canary); err != nil {
			return nil, "spec.canary: " + err.Error(), nil
		}
	}
	namespaces := func(string) bool { return true }
	if cu.Spec.NamespaceSelector != nil {
		nsSel, err := metav1.LabelSelectorAsSelector(cu.Spec.NamespaceSelector)
		if err != nil {
			return nil, "spec.namespaceSelector: " + err.Error(), nil
		}
		var list corev1.NamespaceList
		if err := r.List(ctx, &list, client.MatchingLabelsSelector{Selector: nsSel}); err != nil {
			return nil, "", fmt.Errorf("listing namespaces: %w", err)
		}
		names := map[string]bool{}
		for _, ns := range list.Items {
			names[ns.Name] = true
		}
		namespaces = func(ns string) bool { return names[ns] }
	}
	var list clusterv1.KubeClusterList
	if err := r.List(ctx, &list); err != nil {
		return nil, "", fmt.Errorf("listing KubeClusters: %w", err)
	}
	journal := map[string]clusterv1.ClusterUpgradeTarget{}
	// Only clusters of the lowest wave with a Pending cluster can start
	// this pass (and clusters joining now): theirs is the healthy set to
	// journal at the start.
	nextWave := int32(-1)
	for _, t := range cu.Status.Clusters {
		journal[t.Namespace+"/"+t.Name] = t
		if t.State == clusterv1.UpgradePending && (nextWave < 0 || t.Wave < nextWave) {
			nextWave = t.Wave
		}
	}
	for i := range list.Items {
		kc := &list.Items[i]
		key := kc.Namespace + "/" + kc.Name
		c := Cluster{Namespace: kc.Namespace, Name: kc.Name, Version: kc.Spec.Version, Hibernated: kc.Spec.Hibernated,
			Deleting: kc.DeletionTimestamp != nil, Selected: namespaces(kc.Namespace) && sel.Matches(labels.Set(kc.Labels)),
			Canary: canary.Matches(labels.Set(kc.Labels))}
		t, known := journal[key]
		if !c.Selected && !known {
			continue
		}
		c.Window, c.NextWindow = InWindow(kc.Spec.MaintenanceWindows, now)
		switch {
		case t.State == clusterv1.UpgradeUpgrading || t.State == clusterv1.UpgradeFailed:
			gi, err := r.gateInput(ctx, kc, cu.Spec.To)
			if err != nil {
				return nil, "", err
			}
			gi.HealthyAtStart = t.HealthyAtStart
			if kc.Status.Version == cu.Spec.To && kc.Spec.Version == cu.Spec.To {
				gi.Readyz = r.Readyz(ctx, kc)
			}
			c.Health = Gate(gi)
		case c.Selected && !kc.Spec.Hibernated && (!known || (t.State == clusterv1.UpgradePending && t.Wave == nextWave)):
			// What is healthy before it starts is what the gate waits for.
			addons, machines, err := r.parts(ctx, kc)
			if err != nil {
				return nil, "", err
			}
			c.HealthyParts = HealthyParts(addons, machines)
		}
		in.Clusters = append(in.Clusters, c)
	}
	return in, "", nil
}

// parts are a cluster's ClusterAddons and Machines.
func (r *Reconciler) parts(ctx context.Context, kc *clusterv1.KubeCluster) ([]addonv1.ClusterAddon, []nodev1.Machine, error) {
	var addons addonv1.ClusterAddonList
	if err := r.List(ctx, &addons, client.InNamespace(kc.Namespace)); err != nil {
		return nil, nil, fmt.Errorf("listing ClusterAddons of %s: %w", kc.Name, err)
	}
	var machines nodev1.MachineList
	if err := r.List(ctx, &machines, client.InNamespace(kc.Namespace)); err != nil {
		return nil, nil, fmt.Errorf("listing the Machines of %s: %w", kc.Name, err)
	}
	var ours []addonv1.ClusterAddon
	for _, a := range addons.Items {
		if a.Spec.ClusterName == kc.Name {
			ours = append(ours, a)
		}
	}
	var nodes []nodev1.Machine
	for _, m := range machines.Items {
		if m.Spec.ClusterName == kc.Name && m.DeletionTimestamp == nil {
			nodes = append(nodes, m)
		}
	}
	return ours, nodes, nil
}

// gateInput reads what the gate needs of one cluster from the meta
// cluster: its parts and control-plane pods.
func (r *Reconciler) gateInput(ctx context.Context, kc *clusterv1.KubeCluster, to string) (GateInput, error) {
	gi := GateInput{To: to, Cluster: kc, Readyz: ErrNotAsked}
	var err error
	if gi.Addons, gi.Machines, err = r.parts(ctx, kc); err != nil {
		return gi, err
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(kc.Namespace), client.MatchingLabels{kube.LabelInstance: kc.Name}); err != nil {
		return gi, fmt.Errorf("listing the pods of %s: %w", kc.Name, err)
	}
	for _, p := range pods.Items {
		if slices.Contains([]string{cluster.APIServer, cluster.ControllerManager, cluster.Scheduler}, p.Labels[kube.LabelName]) {
			gi.Pods = append(gi.Pods, p)
		}
	}
	return gi, nil
}

// readyzThroughKubeconfig asks /readyz with the admin kubeconfig the
// cluster operator publishes, through clients kept per cluster.
func readyzThroughKubeconfig(c client.Reader) func(ctx context.Context, kc *clusterv1.KubeCluster) error {
	clients := &workload.Cache{Reader: c}
	return func(ctx context.Context, kc *clusterv1.KubeCluster) error {
		w, err := clients.Get(ctx, kc)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		body, err := w.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(body)))
		}
		return nil
	}
}
