package machine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/conditions"
	"github.com/kubeonkube/kok/internal/machine/remote"
)

// Reconciler runs Machines. This first pass reaches the host over SSH
// (host key pinned), discovers its facts and resolves the components it
// asks for (versions, variants, install order); installing them and
// joining the node come next.
type Reconciler struct {
	client.Client
	Recorder record.EventRecorder
	// Dial reaches a host; nil dials it for real over SSH.
	Dial func(ctx context.Context, t remote.Target) (Host, error)
}

// Host is what the reconciler asks of a reached host.
type Host interface {
	Facts(ctx context.Context) (nodev1.HostFacts, error)
	Close() error
}

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
		Complete(r)
}

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
	// recheck is how often a reached host is reached again.
	recheck = time.Minute
)

// state is what one pass learned about a Machine.
type state struct {
	cluster *clusterv1.KubeCluster
	// components found, by component name; missing lists the Component
	// objects that do not exist.
	components map[string]*nodev1.Component
	missing    []string
	// credsErr: the credentials Secret is missing or holds no key.
	credsErr error
	// facts of the host when it was reached; reachErr why it was not.
	facts    *nodev1.HostFacts
	reachErr error
	// order is the install order; planErr why there is none (a missing
	// dependency, a cycle, no variant for the host).
	order   []string
	planErr error
}

// Reconcile observes a Machine and its host and records status.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	m := &nodev1.Machine{}
	if err := r.Get(ctx, req.NamespacedName, m); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if m.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	st, err := r.observe(ctx, m)
	if err != nil {
		return ctrl.Result{}, err
	}
	orig := m.DeepCopy()
	computeStatus(m, st)
	if err := r.Status().Patch(ctx, m, client.MergeFrom(orig)); err != nil {
		return ctrl.Result{}, fmt.Errorf("writing status: %w", err)
	}
	if st.reachErr != nil && conditions.IsTrue(orig.Status.Conditions, nodev1.MachineReachable) {
		r.Recorder.Eventf(m, corev1.EventTypeWarning, "Unreachable", "%v", st.reachErr)
	}
	return ctrl.Result{RequeueAfter: retryAfter(m, st)}, nil
}

// observe reads the cluster, the components and the credentials, and
// reaches the host (unless the Machine is paused).
func (r *Reconciler) observe(ctx context.Context, m *nodev1.Machine) (*state, error) {
	st := &state{components: map[string]*nodev1.Component{}}
	kc := &clusterv1.KubeCluster{}
	switch err := r.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.ClusterName}, kc); {
	case err == nil:
		st.cluster = kc
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("reading KubeCluster %s: %w", m.Spec.ClusterName, err)
	}
	for _, ref := range m.Spec.Components {
		version := ref.Version
		if version == "" && st.cluster != nil {
			version = st.cluster.Spec.Version
		}
		if version == "" {
			continue // decided once the cluster exists
		}
		c := &nodev1.Component{}
		name := ComponentName(ref.Name, version)
		switch err := r.Get(ctx, client.ObjectKey{Name: name}, c); {
		case err == nil:
			st.components[ref.Name] = c
		case apierrors.IsNotFound(err):
			st.missing = append(st.missing, name)
		default:
			return nil, fmt.Errorf("reading Component %s: %w", name, err)
		}
	}

	target, err := r.target(ctx, m)
	if err != nil {
		st.credsErr = err
	} else if !m.Spec.Paused {
		st.facts, st.reachErr = r.reach(ctx, target)
	}
	if st.facts != nil && len(st.missing) == 0 {
		st.order, st.planErr = plan(m, st)
	}
	return st, nil
}

// target is how the host is reached, from the spec and the credentials
// Secret.
func (r *Reconciler) target(ctx context.Context, m *nodev1.Machine) (remote.Target, error) {
	t := remote.Target{Address: m.Spec.Address, Port: m.Spec.SSH.Port, User: m.Spec.SSH.User, HostKey: m.Spec.SSH.HostKey}
	var s corev1.Secret
	switch err := r.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.SSH.CredentialsSecret}, &s); {
	case apierrors.IsNotFound(err):
		return t, fmt.Errorf("secret %s does not exist: create it with the private key under %q", m.Spec.SSH.CredentialsSecret, CredentialsKey)
	case err != nil:
		return t, fmt.Errorf("reading Secret %s: %w", m.Spec.SSH.CredentialsSecret, err)
	}
	if t.PrivateKey = s.Data[CredentialsKey]; len(t.PrivateKey) == 0 {
		return t, fmt.Errorf("secret %s holds no %q", m.Spec.SSH.CredentialsSecret, CredentialsKey)
	}
	return t, nil
}

// reach dials the host and reads its facts.
func (r *Reconciler) reach(ctx context.Context, t remote.Target) (*nodev1.HostFacts, error) {
	dial := r.Dial
	if dial == nil {
		dial = func(ctx context.Context, t remote.Target) (Host, error) { return remote.Dial(ctx, t) }
	}
	h, err := dial(ctx, t)
	if err != nil {
		return nil, err
	}
	defer func() { _ = h.Close() }()
	f, err := h.Facts(ctx)
	if err != nil {
		return nil, fmt.Errorf("discovering the host's facts: %w", err)
	}
	return &f, nil
}

// plan resolves each component's variant for the host and the install
// order.
func plan(m *nodev1.Machine, st *state) ([]string, error) {
	var wanted []string
	deps := map[string][]string{}
	for _, ref := range m.Spec.Components {
		c, ok := st.components[ref.Name]
		if !ok {
			return nil, errors.New("the KubeCluster's version is not known yet")
		}
		if _, err := SelectVariant(c, *st.facts); err != nil {
			return nil, err
		}
		wanted = append(wanted, ref.Name)
		deps[ref.Name] = c.Spec.DependsOn
	}
	return InstallOrder(wanted, deps)
}

// computeStatus writes every condition, the facts and the phase.
func computeStatus(m *nodev1.Machine, st *state) {
	s := &m.Status
	set := func(t string, ok bool, reason, msg string) {
		conditions.Set(&s.Conditions, m.Generation, t, ok, reason, msg)
	}
	s.ObservedGeneration = m.Generation
	if st.facts != nil {
		s.Facts = st.facts
	}

	switch {
	case st.credsErr != nil:
		set(nodev1.MachineReachable, false, "CredentialsNotFound", st.credsErr.Error())
	case m.Spec.Paused:
		// Not reached while paused: the condition keeps what it said.
	case errors.Is(st.reachErr, remote.ErrHostKeyMismatch):
		set(nodev1.MachineReachable, false, "HostKeyMismatch", st.reachErr.Error())
	case errors.Is(st.reachErr, remote.ErrAuthentication):
		set(nodev1.MachineReachable, false, "AuthenticationFailed",
			st.reachErr.Error()+": put the Machine's public key in the host's authorized_keys, or the right private key in spec.ssh.credentialsSecret")
	case st.reachErr != nil:
		set(nodev1.MachineReachable, false, "Unreachable", st.reachErr.Error()+" (retried with backoff)")
	default:
		set(nodev1.MachineReachable, true, "HostKeyVerified",
			fmt.Sprintf("%s:%d proved its pinned host key; %s %s %s, kernel %s", m.Spec.Address, sshPort(m), st.facts.OS, st.facts.OSVersion, st.facts.Arch, st.facts.KernelVersion))
	}

	switch {
	case len(st.missing) > 0:
		set(nodev1.MachineComponentsReady, false, "ComponentNotFound",
			fmt.Sprintf("Component %s does not exist: apply it (a Component is named <component>-<version>) or change spec.components", strings.Join(st.missing, ", ")))
	case st.planErr != nil:
		set(nodev1.MachineComponentsReady, false, "NotPlannable", st.planErr.Error())
	case st.order != nil:
		set(nodev1.MachineComponentsReady, false, "Planned", "install order: "+strings.Join(st.order, ", "))
	default:
		set(nodev1.MachineComponentsReady, false, "WaitingForHost", "components are planned once the host is reached")
	}

	switch {
	case st.cluster == nil:
		set(nodev1.MachineReady, false, "ClusterNotFound",
			fmt.Sprintf("KubeCluster %s does not exist in namespace %s: create it or fix spec.clusterName", m.Spec.ClusterName, m.Namespace))
	case !conditions.IsTrue(s.Conditions, nodev1.MachineReachable):
		set(nodev1.MachineReady, false, "HostNotReachable", "the host is not reachable: see the Reachable condition")
	default:
		set(nodev1.MachineReady, false, "NotJoined", "the node has not joined "+m.Spec.ClusterName+" yet")
	}
	switch {
	case m.DeletionTimestamp != nil:
		s.Phase = nodev1.MachinePhaseDeleting
	case conditions.IsTrue(s.Conditions, nodev1.MachineReachable):
		s.Phase = nodev1.MachinePhaseProvisioning
	default:
		s.Phase = nodev1.MachinePhasePending
	}
}

func sshPort(m *nodev1.Machine) int32 {
	if m.Spec.SSH.Port == 0 {
		return remote.DefaultPort
	}
	return m.Spec.SSH.Port
}

// retryAfter: a reached host is re-checked every minute; an unreachable
// one after as long as it has been unreachable (5 s to 5 min), so the
// retries back off.
func retryAfter(m *nodev1.Machine, st *state) time.Duration {
	if st.reachErr == nil && st.credsErr == nil {
		return recheck
	}
	c := meta.FindStatusCondition(m.Status.Conditions, nodev1.MachineReachable)
	wait := retryMin
	if c != nil && c.Status == metav1.ConditionFalse {
		wait = max(wait, time.Since(c.LastTransitionTime.Time))
	}
	return min(wait, retryMax)
}
