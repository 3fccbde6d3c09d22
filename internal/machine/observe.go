package machine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/agent"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/machine/remote"
)

// AgentComponent is the component that is kok's node agent: the operator
// puts its binary (its first artifact) on the host itself, and hands the
// rest to it.
const AgentComponent = "kok-agent"

// state is what one pass learned about a Machine.
type state struct {
	cluster *clusterv1.KubeCluster
	// release is what the unpinned components run: the control plane's
	// release, or the one the host runs while it waits for its turn.
	release NodeRelease
	// components found, by component name; missing lists the Component
	// objects that do not exist.
	components map[string]*nodev1.Component
	missing    []string
	// credsErr: the credentials Secret is missing or holds no key.
	credsErr error

	// The business cluster: workloadErr says why it cannot be reached;
	// node is the Machine's Node (nil before it joined).
	workload    *Workload
	workloadErr error
	node        *corev1.Node

	// The host: its facts when it was reached, reachErr why it was not.
	host     Host
	facts    *nodev1.HostFacts
	reachErr error
	// report is the agent's last report (nil before the agent ran);
	// agentDigest the digest of the agent binary on the host; joined says
	// the kubelet holds its own credentials (kubelet.conf).
	report      *agent.Report
	agentDigest string
	joined      bool
	// bootstrapDigest is the digest of the host's bootstrap kubeconfig
	// ("" when it has none).
	bootstrapDigest string
	// agentRunning: the agent's daemon runs on the host.
	agentRunning bool
	// heartbeat is what the agent's Lease in the business cluster says;
	// viaCluster: it is fresh, so the host was not reached over SSH this
	// pass and the agent learns the desired state from its Secret.
	heartbeat  heartbeat
	viaCluster bool
	// hibernated: the cluster is hibernated; nothing is reached or done.
	hibernated bool

	// order is the install order and desired what the host must run;
	// planErr why there is none (a missing dependency, a cycle, no variant
	// for the host, an artifact that cannot be resolved).
	order   []string
	desired *agent.Desired
	planErr error

	// What this pass did, for status and events.
	submitted bool
	actErr    error
	// blocking lists the pods a drain waits for.
	blocking []string
	// refusedCSRs: serving certificate requests of the node that do not
	// match the Machine, with why.
	refusedCSRs []string
}

// Host is what the reconciler asks of a reached host.
type Host interface {
	Facts(ctx context.Context) (nodev1.HostFacts, error)
	Run(ctx context.Context, script string) (remote.Result, error)
	WriteFile(ctx context.Context, path string, data []byte, mode os.FileMode) error
	Close() error
}

// Paths on the host the operator itself reads or writes.
const (
	BootstrapKubeconfigPath = "/etc/kubernetes/bootstrap-kubelet.conf"
	KubeletKubeconfigPath   = "/etc/kubernetes/kubelet.conf"
	desiredUpload           = agent.DefaultDir + "/desired.next"
)

// observe reads the cluster, the components and the credentials, reaches
// the business cluster and the host (unless the Machine is paused), and
// plans what the host must run. It writes nothing.
func (r *Reconciler) observe(ctx context.Context, m *nodev1.Machine) (*state, error) {
	st := &state{components: map[string]*nodev1.Component{}}
	kc := &clusterv1.KubeCluster{}
	switch err := r.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.ClusterName}, kc); {
	case err == nil:
		st.cluster = kc
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("reading KubeCluster %s: %w", m.Spec.ClusterName, err)
	}
	if st.cluster != nil && st.cluster.Spec.Hibernated && m.DeletionTimestamp == nil {
		// No apiserver runs to join or report to: the host is left as it
		// is until the cluster wakes (its agent keeps what it runs).
		st.hibernated = true
		return st, nil
	}
	if st.cluster != nil {
		var siblings nodev1.MachineList
		if err := r.List(ctx, &siblings, client.InNamespace(m.Namespace)); err != nil {
			return nil, fmt.Errorf("listing Machines: %w", err)
		}
		st.release = PlanNodeRelease(m, siblings.Items, runningVersion(st.cluster), time.Now())
	}
	for _, ref := range m.Spec.Components {
		version := ref.Version
		if version == "" && st.cluster != nil {
			version = st.release.Version
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

	if st.cluster != nil {
		st.workload, st.workloadErr = r.workload(ctx, st.cluster)
		if st.workload != nil {
			n, err := st.workload.Client.CoreV1().Nodes().Get(ctx, m.Name, metav1.GetOptions{})
			switch {
			case err == nil:
				st.node = n
			case !apierrors.IsNotFound(err):
				st.workloadErr = fmt.Errorf("reading node %s: %w", m.Name, err)
			}
		}
		if st.node != nil {
			hb, err := readHeartbeat(ctx, st.workload.Client, m)
			if err != nil {
				st.workloadErr = err
			}
			st.heartbeat = hb
		}
	}

	target, err := r.target(ctx, m)
	switch {
	case err != nil:
		st.credsErr = err
	case m.Spec.Paused:
	case needsHost(m, st, time.Now()):
		r.reach(ctx, target, st)
	default:
		// The agent is alive and reports through the cluster: the host
		// is left alone.
		st.viaCluster, st.facts, st.report, st.joined = true, m.Status.Facts, st.heartbeat.report, true
	}
	if st.facts != nil && len(st.missing) == 0 {
		st.order, st.desired, st.planErr = r.plan(ctx, m, st)
	}
	return st, nil
}

// needsHost says whether the host must be reached over SSH this pass:
// on day 0 (until the node joined and the agent's heartbeat is fresh), when
// the heartbeat stopped (the agent is started again over SSH), and to
// uninstall.
func needsHost(m *nodev1.Machine, st *state, now time.Time) bool {
	return m.DeletionTimestamp != nil || st.node == nil || m.Status.Facts == nil || !st.heartbeat.fresh(now)
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

// hostProbe reads, in one script, what the operator needs to know of a
// host besides its facts: the agent's report, whether its daemon runs, the
// agent binary's digest, the bootstrap kubeconfig's and whether the kubelet
// has joined.
const hostProbe = `agent=$1
printf 'joined=%s\n' "$(test -s ` + KubeletKubeconfigPath + ` && echo yes || echo no)"
if [ -s ` + BootstrapKubeconfigPath + ` ]; then printf 'bootstrap=%s\n' "$(sha256sum ` + BootstrapKubeconfigPath + ` | cut -d' ' -f1)"; fi
if [ -x "$agent" ]; then printf 'agent=%s\n' "$(sha256sum "$agent" | cut -d' ' -f1)"; fi
pid=$(cat ` + agent.DefaultDir + `/agent.pid 2>/dev/null || :)
if [ -n "$pid" ] && grep -q kok-agent /proc/"$pid"/comm 2>/dev/null; then echo running=yes; fi
if [ -s ` + agent.DefaultDir + `/status.json ]; then printf 'report='; tr -d '\n' < ` + agent.DefaultDir + `/status.json; echo; fi
`

// reach dials the host, reads its facts and probes it. The connection
// stays open in st.host for the pass's actions.
func (r *Reconciler) reach(ctx context.Context, t remote.Target, st *state) {
	dial := r.Dial
	if dial == nil {
		dial = func(ctx context.Context, t remote.Target) (Host, error) {
			c, err := remote.Dial(ctx, t)
			if err != nil {
				return nil, err
			}
			return c, nil
		}
	}
	h, err := dial(ctx, t)
	if err != nil {
		st.reachErr = err
		return
	}
	f, err := h.Facts(ctx)
	if err != nil {
		_ = h.Close()
		st.reachErr = fmt.Errorf("discovering the host's facts: %w", err)
		return
	}
	st.host, st.facts = h, &f
	agentPath := "/usr/local/bin/kok-agent"
	if c := st.components[AgentComponent]; c != nil {
		if v, err := SelectVariant(c, f); err == nil && len(v.Artifacts) > 0 {
			agentPath = v.Artifacts[0].Path
		}
	}
	res, err := h.Run(ctx, "set -- "+shellQuote(agentPath)+"\n"+hostProbe)
	if err != nil || res.ExitCode != 0 {
		st.reachErr = fmt.Errorf("probing the host: %v %s", err, res.StderrTail(300))
		return
	}
	for _, line := range strings.Split(string(res.Stdout), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "joined":
			st.joined = v == "yes"
		case "agent":
			st.agentDigest = "sha256:" + v
		case "bootstrap":
			st.bootstrapDigest = "sha256:" + v
		case "running":
			st.agentRunning = true
		case "report":
			var rep agent.Report
			if err := json.Unmarshal([]byte(v), &rep); err == nil {
				st.report = &rep
			}
		}
	}
}

// plan resolves each component's variant for the host, the install order,
// and renders the desired state.
func (r *Reconciler) plan(ctx context.Context, m *nodev1.Machine, st *state) ([]string, *agent.Desired, error) {
	var wanted []string
	deps := map[string][]string{}
	variants := map[string]*nodev1.ComponentVariant{}
	for _, ref := range m.Spec.Components {
		c, ok := st.components[ref.Name]
		if !ok {
			return nil, nil, errors.New("the KubeCluster's version is not known yet")
		}
		v, err := SelectVariant(c, *st.facts)
		if err != nil {
			return nil, nil, err
		}
		wanted = append(wanted, ref.Name)
		deps[ref.Name] = c.Spec.DependsOn
		variants[ref.Name] = v
	}
	if _, ok := st.components[AgentComponent]; !ok {
		return nil, nil, fmt.Errorf("spec.components must include %s: it keeps the host at its final state", AgentComponent)
	}
	order, err := InstallOrder(wanted, deps)
	if err != nil {
		return nil, nil, err
	}
	if st.workload == nil {
		return order, nil, nil // rendered once the business cluster answers
	}
	values, err := r.values(m, st)
	if err != nil {
		return order, nil, err
	}
	d := &agent.Desired{Machine: m.Namespace + "/" + m.Name, Cluster: clusterLink(m)}
	resolve := func(a nodev1.Artifact) (agent.Artifact, error) { return r.Registry.Resolve(ctx, a) }
	for _, name := range order {
		rc, err := Render(st.components[name], variants[name], values, resolve)
		if err != nil {
			return order, nil, err
		}
		d.Components = append(d.Components, *rc)
	}
	return order, d, nil
}

// runningVersion is the release a cluster's control plane runs (the
// oldest of its components), which a Machine's unpinned components
// follow: kubelets move only after the control plane finished an upgrade,
// never ahead of an apiserver. A cluster not up yet has its spec's.
func runningVersion(kc *clusterv1.KubeCluster) string {
	if kc.Status.Version != "" {
		return kc.Status.Version
	}
	return kc.Spec.Version
}

// values are what templates see for this Machine.
func (r *Reconciler) values(m *nodev1.Machine, st *state) (Values, error) {
	kc := st.cluster
	caHash, err := CAHash(st.workload.CA)
	if err != nil {
		return Values{}, fmt.Errorf("the cluster's admin kubeconfig: %w", err)
	}
	net := kc.Spec.Network
	return Values{
		Cluster: ClusterValues{Name: kc.Name, Version: st.release.Version, APIServer: st.workload.Server,
			CA: string(st.workload.CA), CAHash: caHash,
			DNSAddress: kube.NthIP(net.ServiceCIDR, 10), DNSDomain: net.DNSDomain,
			PodCIDR: net.PodCIDR, ServiceCIDR: net.ServiceCIDR},
		Node: NodeValues{Name: m.Name, Address: m.Spec.Address, OS: st.facts.OS, OSVersion: st.facts.OSVersion,
			Arch: st.facts.Arch},
		Registry: r.Registry.Values(),
	}, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
