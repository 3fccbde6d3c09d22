package machine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/conditions"
	"github.com/kubeonkube/kok/internal/machine/remote"
	"github.com/kubeonkube/kok/internal/workload"
)

// Reconciler runs Machines: it reaches each host over SSH (host key
// pinned), puts kok's node agent on it, hands the agent the host's desired
// state (every component rendered for this host and cluster, artifacts
// pinned by digest), gives the kubelet a bootstrap token to join with, and
// carries what the agent and the business cluster say into the Machine's
// status. A deleted Machine's node is drained and deleted and the host
// cleaned.
type Reconciler struct {
	client.Client
	Recorder record.EventRecorder
	// Registry is where hosts fetch artifacts.
	Registry *Registry
	// Dial reaches a host; nil dials it for real over SSH.
	Dial func(ctx context.Context, t remote.Target) (Host, error)
	// Workload reaches a business cluster; nil uses its admin kubeconfig.
	Workload WorkloadFunc

	workloads     workload.Cache
	workloadsInit sync.Once
}

// MaxConcurrentHosts is how many Machines are reconciled at once.
const MaxConcurrentHosts = 10

// Finalizer holds a Machine until its node is drained and deleted and
// its host cleaned.
const Finalizer = "node.kok.dev/machine"

// CredentialsKey is the key of the private key in a Machine's credentials
// Secret (the kubernetes.io/ssh-auth layout).
const CredentialsKey = corev1.SSHAuthPrivateKey

// +kubebuilder:rbac:groups=node.kok.dev,resources=machines,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=node.kok.dev,resources=machines/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=node.kok.dev,resources=components,verbs=get;list;watch
// +kubebuilder:rbac:groups=cluster.kok.dev,resources=kubeclusters,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorderFor("machine-operator")
	}
	// A Machine waits on objects it names: each wakes the Machines that
	// name it, so a Component, Secret or KubeCluster applied after the
	// Machine is seen at once.
	return ctrl.NewControllerManagedBy(mgr).
		// A pass waits on its host (SSH, scripts): hosts are worked on in
		// parallel, each by one worker at a time.
		WithOptions(controller.Options{MaxConcurrentReconciles: MaxConcurrentHosts}).
		// Its own status writes do not wake it (each pass reaches the host).
		For(&nodev1.Machine{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&nodev1.Component{}, handler.EnqueueRequestsFromMapFunc(r.machinesWhere(func(m *nodev1.Machine, o client.Object) bool {
			c := o.(*nodev1.Component)
			return slices.ContainsFunc(m.Spec.Components, func(ref nodev1.ComponentRef) bool { return ref.Name == c.Spec.Component })
		}))).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.machinesWhere(func(m *nodev1.Machine, o client.Object) bool {
			return m.Namespace == o.GetNamespace() && m.Spec.SSH.CredentialsSecret == o.GetName()
		}))).
		Watches(&clusterv1.KubeCluster{}, handler.EnqueueRequestsFromMapFunc(r.machinesWhere(func(m *nodev1.Machine, o client.Object) bool {
			return m.Namespace == o.GetNamespace() && m.Spec.ClusterName == o.GetName()
		}))).
		// Machines move to a new release one at a time: one that reaches
		// it (or goes) lets the next of its cluster go.
		Watches(&nodev1.Machine{}, handler.EnqueueRequestsFromMapFunc(r.machinesWhere(func(m *nodev1.Machine, o client.Object) bool {
			return m.Namespace == o.GetNamespace() && m.Spec.ClusterName == o.(*nodev1.Machine).Spec.ClusterName && m.Name > o.GetName()
		})), builder.WithPredicates(releaseOrReadyChanged)).
		Complete(r)
}

// releaseOrReadyChanged passes the Machine updates that can end another
// Machine's wait for its turn.
var releaseOrReadyChanged = predicate.Funcs{UpdateFunc: func(ev event.UpdateEvent) bool {
	o, ok1 := ev.ObjectOld.(*nodev1.Machine)
	n, ok2 := ev.ObjectNew.(*nodev1.Machine)
	ready := func(m *nodev1.Machine) bool { return conditions.IsTrue(m.Status.Conditions, nodev1.MachineReady) }
	return !ok1 || !ok2 || machineRelease(o) != machineRelease(n) || ready(o) != ready(n) ||
		o.Spec.Paused != n.Spec.Paused || !o.DeletionTimestamp.Equal(n.DeletionTimestamp)
}}

// machinesWhere maps an object to the Machines match says it concerns.
func (r *Reconciler) machinesWhere(match func(*nodev1.Machine, client.Object) bool) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		var list nodev1.MachineList
		opts := []client.ListOption{}
		if o.GetNamespace() != "" {
			opts = append(opts, client.InNamespace(o.GetNamespace()))
		}
		if err := r.List(ctx, &list, opts...); err != nil {
			log.FromContext(ctx).Error(err, "listing Machines")
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

const (
	// retryMin and retryMax bound the wait before a host that could not be
	// reached is tried again; the wait doubles with the time it has been
	// unreachable.
	retryMin = 5 * time.Second
	retryMax = 5 * time.Minute
	// recheck is how often a Ready Machine's host is reached again;
	// progressing is the wait while it is on its way.
	recheck     = 30 * time.Second
	progressing = 2 * time.Second
)

// Reconcile observes a Machine, its host and its node, acts one step and
// records status.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	m := &nodev1.Machine{}
	if err := r.Get(ctx, req.NamespacedName, m); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if m.DeletionTimestamp != nil && !controllerutil.ContainsFinalizer(m, Finalizer) {
		return ctrl.Result{}, nil
	}
	st, err := r.observe(ctx, m)
	if err != nil {
		return ctrl.Result{}, err
	}
	if st.host != nil {
		defer func() { _ = st.host.Close() }()
	}
	orig := m.DeepCopy()

	if m.DeletionTimestamp != nil {
		done, err := r.teardown(ctx, m, st)
		st.actErr = err
		if done {
			controllerutil.RemoveFinalizer(m, Finalizer)
			if err := r.Patch(ctx, m, client.MergeFrom(orig)); err != nil {
				return ctrl.Result{}, fmt.Errorf("removing the finalizer: %w", err)
			}
			return ctrl.Result{}, nil
		}
	} else if !m.Spec.Paused {
		// The finalizer goes on before the host is first written to: a
		// Machine that never touched its host has nothing to undo.
		if st.host != nil && st.desired != nil && controllerutil.AddFinalizer(m, Finalizer) {
			if err := r.Patch(ctx, m, client.MergeFrom(orig)); err != nil {
				return ctrl.Result{}, fmt.Errorf("adding the finalizer: %w", err)
			}
			orig = m.DeepCopy()
		}
		st.actErr = r.act(ctx, m, st)
	}

	computeStatus(m, st)
	if err := r.Status().Patch(ctx, m, client.MergeFrom(orig)); err != nil {
		return ctrl.Result{}, fmt.Errorf("writing status: %w", err)
	}
	r.events(orig, m, st)
	return ctrl.Result{RequeueAfter: retryAfter(m, st)}, nil
}

// events raises a Warning when the host becomes unreachable or a step
// fails, and a Normal event when the Machine becomes Ready.
func (r *Reconciler) events(before, after *nodev1.Machine, st *state) {
	if st.reachErr != nil && conditions.IsTrue(before.Status.Conditions, nodev1.MachineReachable) {
		r.Recorder.Eventf(after, corev1.EventTypeWarning, "Unreachable", "%v", st.reachErr)
	}
	if st.actErr != nil {
		r.Recorder.Eventf(after, corev1.EventTypeWarning, "ApplyFailed", "%v", st.actErr)
	}
	for _, refused := range st.refusedCSRs {
		r.Recorder.Eventf(after, corev1.EventTypeWarning, "CertificateRefused", "certificate request %s: left pending", refused)
	}
	if st.submitted {
		via := "over SSH"
		if st.viaCluster {
			via = "through the business cluster"
		}
		r.Recorder.Eventf(after, corev1.EventTypeNormal, "DesiredStateSubmitted", "handed to the agent %s: %s", via, strings.Join(st.order, ", "))
	}
	for _, now := range after.Status.Services {
		for _, was := range before.Status.Services {
			if was.Name == now.Name && now.Restarts > was.Restarts {
				r.Recorder.Eventf(after, corev1.EventTypeWarning, "ServiceRestarted", "%s stopped (%s); the agent started it again (%d restarts)",
					now.Name, now.LastExit, now.Restarts)
			}
		}
	}
	for _, now := range after.Status.Components {
		for _, was := range before.Status.Components {
			if was.Name == now.Name && now.LastRepairTime != nil && (was.LastRepairTime == nil || now.LastRepairTime.After(was.LastRepairTime.Time)) {
				r.Recorder.Eventf(after, corev1.EventTypeWarning, "Repaired", "%s: %s", now.Name, now.LastRepair)
			}
		}
	}
	if !conditions.IsTrue(before.Status.Conditions, nodev1.MachineReady) && conditions.IsTrue(after.Status.Conditions, nodev1.MachineReady) {
		r.Recorder.Eventf(after, corev1.EventTypeNormal, "Ready", "node %s is Ready", after.Name)
	}
}

// workload reaches a cluster's business cluster.
func (r *Reconciler) workload(ctx context.Context, kc *clusterv1.KubeCluster) (*Workload, error) {
	if r.Workload != nil {
		return r.Workload(ctx, kc)
	}
	r.workloadsInit.Do(func() { r.workloads.Reader = r.Client })
	return r.workloads.Get(ctx, kc)
}

// retryAfter: a Ready Machine is re-checked every 30 seconds; one on its way
// every two seconds; an unreachable host after as long as it has been
// unreachable (5 s to 5 min), so the retries back off.
func retryAfter(m *nodev1.Machine, st *state) time.Duration {
	if st.reachErr == nil && st.credsErr == nil {
		if st.release.Settles > 0 {
			return min(st.release.Settles, recheck)
		}
		if conditions.IsTrue(m.Status.Conditions, nodev1.MachineReady) {
			return recheck
		}
		return progressing
	}
	c := meta.FindStatusCondition(m.Status.Conditions, nodev1.MachineReachable)
	wait := retryMin
	if c != nil && c.Status == metav1.ConditionFalse {
		wait = max(wait, time.Since(c.LastTransitionTime.Time))
	}
	return min(wait, retryMax)
}
