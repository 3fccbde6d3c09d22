//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	addonv1 "github.com/kubeonkube/kok/api/addon/v1alpha1"
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/addon"
	"github.com/kubeonkube/kok/internal/agent"
	"github.com/kubeonkube/kok/internal/local/hosts"
	"github.com/kubeonkube/kok/internal/machine"
	"github.com/kubeonkube/kok/internal/machine/remote"
)

// hostShell runs a script on a local host over SSH, as the operator does
// (the host key pinned).
func hostShell(t *testing.T, stateDir, name, script string) string {
	t.Helper()
	h, err := hosts.Load(stateDir, name)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(h.PrivateKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := remote.Dial(ctx, remote.Target{Address: h.Address, Port: int32(h.Port), User: h.User, PrivateKey: key, HostKey: h.HostKey})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	res, err := c.Run(ctx, script)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("on %s: %q: exit %d: %s", name, script, res.ExitCode, res.Stderr)
	}
	return strings.TrimSpace(string(res.Stdout))
}

func getMachine(t *testing.T, c client.Client, ns, name string) *nodev1.Machine {
	t.Helper()
	m := &nodev1.Machine{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, m); err != nil {
		t.Fatal(err)
	}
	return m
}

// waitMachine waits for a Machine condition to be true and returns the
// Machine then.
func waitMachine(t *testing.T, c client.Client, ns, name, cond string, timeout time.Duration) *nodev1.Machine {
	t.Helper()
	var m *nodev1.Machine
	eventually(t, timeout, "Machine "+name+" "+cond, func() error {
		m = getMachine(t, c, ns, name)
		if ok := meta.IsStatusConditionTrue(m.Status.Conditions, cond); !ok {
			return fmt.Errorf("phase %s, conditions %s", m.Status.Phase, describeConditions(m.Status.Conditions))
		}
		return nil
	})
	return m
}

func describeConditions(conds []metav1.Condition) string {
	var parts []string
	for _, c := range conds {
		parts = append(parts, fmt.Sprintf("%s=%s (%s: %s)", c.Type, c.Status, c.Reason, c.Message))
	}
	return strings.Join(parts, "; ")
}

func serviceRestarts(t *testing.T, m *nodev1.Machine, name string) int32 {
	for _, s := range m.Status.Services {
		if s.Name == name {
			return s.Restarts
		}
	}
	t.Fatalf("Machine %s reports no service %s: %+v", m.Name, name, m.Status.Services)
	return 0
}

// waitAddonHealthy waits for a cluster's ClusterAddon of addon to be
// Healthy.
func waitAddonHealthy(t *testing.T, c client.Client, cluster, addonName string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, addonName+" Healthy", func() error {
		ca := &addonv1.ClusterAddon{}
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: cluster, Name: cluster + "-" + addonName}, ca); err != nil {
			return err
		}
		if cond := meta.FindStatusCondition(ca.Status.Conditions, addonv1.AddonHealthy); cond == nil || cond.Status != metav1.ConditionTrue {
			return fmt.Errorf("Healthy %+v", cond)
		}
		return nil
	})
}

// TestMachines: local hosts (network, mount, UTS and PID namespaces with
// their own sshd) become Ready nodes of a business cluster through the
// machine operator — over SSH, with kok-agent, components from the default
// catalog and every artifact and image from kok's registry — and stay so.
func TestMachines(t *testing.T) {
	cfg := sharedCluster(t)
	dir := shared.stateDir
	ctx := context.Background()
	c := metaClient(t, cfg)
	const cluster = "nodes"
	names := []string{"node-a", "node-b", "node-c"}

	mustKok(t, dir, "create", "cluster", cluster, "--version", "v1.34.4")
	bc := businessClient(t, dir, cluster)
	start := time.Now()
	for _, n := range names {
		out := mustKok(t, dir, "machine", "create", n, "--cluster", cluster)
		t.Logf("%s", out)
	}
	t.Cleanup(func() {
		for _, n := range names {
			_, _ = kok(t, dir, "machine", "delete", n)
		}
	})

	// kok-manager restarts while the machines provision: they finish, and
	// no host is provisioned twice at once (one agent daemon each).
	mc := clientset(t, cfg.Kubeconfig())
	eventually(t, time.Minute, "a Machine provisioning", func() error {
		m := getMachine(t, c, cluster, names[0])
		if meta.IsStatusConditionTrue(m.Status.Conditions, nodev1.MachineReachable) {
			return nil
		}
		return fmt.Errorf("phase %q", m.Status.Phase)
	})
	if err := mc.CoreV1().Pods("kok-system").DeleteCollection(ctx, metav1.DeleteOptions{},
		metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=manager"}); err != nil {
		t.Fatal(err)
	}
	t.Log("kok-manager restarted while the machines provision")

	t.Run("hosts join and become Ready nodes", func(t *testing.T) {
		for _, n := range names {
			m := waitMachine(t, c, cluster, n, nodev1.MachineReady, 5*time.Minute)
			t.Logf("%s Ready %s after the hosts were created; components %+v", n, time.Since(start).Round(time.Second), m.Status.Components)
			if m.Status.KubeletVersion != "v1.34.4" || m.Status.NodeName != n || m.Status.Facts == nil || m.Status.Facts.OS != "debian" {
				t.Fatalf("status %+v", m.Status)
			}
		}
		nodes, err := bc.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes.Items {
			if n.Status.NodeInfo.KubeletVersion != "v1.34.4" || n.Labels["node.kok.dev/machine"] != n.Name {
				t.Errorf("node %s: kubelet %s, labels %v", n.Name, n.Status.NodeInfo.KubeletVersion, n.Labels)
			}
		}
		for _, n := range names {
			if out := hostShell(t, dir, n, "pgrep -c -f 'kok-agent run'"); out != "1" {
				t.Errorf("%s runs %s agent daemons, want 1", n, out)
			}
		}
		if len(nodes.Items) != len(names) {
			t.Fatalf("%d nodes, want %d", len(nodes.Items), len(names))
		}
		// The bootstrap tokens are gone once the nodes joined.
		eventually(t, time.Minute, "bootstrap tokens deleted", func() error {
			s, err := bc.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{FieldSelector: "type=bootstrap.kubernetes.io/token"})
			if err != nil || len(s.Items) > 0 {
				return fmt.Errorf("%d tokens left (%v)", len(s.Items), err)
			}
			return nil
		})
	})

	t.Run("a pod runs on each node, its image pulled from the registry", func(t *testing.T) {
		for _, n := range names {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "hello-" + n, Namespace: "default"},
				Spec: corev1.PodSpec{NodeName: n, Containers: []corev1.Container{{Name: "pause", Image: "kok.local/pause:kok",
					ImagePullPolicy: corev1.PullAlways}}}}
			if _, err := bc.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range names {
			eventually(t, 2*time.Minute, "pod on "+n+" running", func() error {
				p, err := bc.CoreV1().Pods("default").Get(ctx, "hello-"+n, metav1.GetOptions{})
				if err != nil {
					return err
				}
				if p.Status.Phase != corev1.PodRunning {
					return fmt.Errorf("phase %s: %+v", p.Status.Phase, p.Status.ContainerStatuses)
				}
				return nil
			})
		}
		// Each kubelet serves with a certificate the operator approved
		// because it names the Machine's node and address, so the
		// apiserver reaches it (logs).
		for _, n := range names {
			eventually(t, time.Minute, "serving certificate of "+n+" approved", func() error {
				csrs, err := bc.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
				if err != nil {
					return err
				}
				for _, csr := range csrs.Items {
					for _, c := range csr.Status.Conditions {
						if csr.Spec.Username == "system:node:"+n && csr.Spec.SignerName == "kubernetes.io/kubelet-serving" && c.Reason == "KokMachineMatches" {
							return nil
						}
					}
				}
				return fmt.Errorf("no approved serving certificate request of %s", n)
			})
			eventually(t, time.Minute, "logs through the kubelet of "+n, func() error {
				_, err := bc.CoreV1().Pods("default").GetLogs("hello-"+n, &corev1.PodLogOptions{}).DoRaw(ctx)
				return err
			})
		}
		// The host's containerd pulled it: nothing was imported there.
		out := hostShell(t, dir, names[0], "ctr --address /run/containerd/containerd.sock -n k8s.io images ls -q | grep pause")
		if !strings.Contains(out, "kok.local/pause:kok") {
			t.Fatalf("images on %s: %s", names[0], out)
		}
	})

	var w *webApp
	addresses := map[string]string{}
	t.Run("pods reach each other across nodes, through Services and by name", func(t *testing.T) {
		// The default addons are Healthy.
		for _, a := range []string{"kube-proxy", "flannel", "coredns", "metrics-server", "konnectivity"} {
			waitAddonHealthy(t, c, cluster, a, 3*time.Minute)
		}
		for _, n := range names {
			addresses[n] = getMachine(t, c, cluster, n).Spec.Address
		}
		start := time.Now()
		w = deployWeb(t, bc, "web", names)
		t.Logf("a web pod ready on each node %s after it was created", time.Since(start).Round(100*time.Millisecond))
		checkPodNetwork(t, bc, businessRESTConfig(t, dir, cluster), w, addresses)
		// kubectl top nodes: metrics-server, through the apiserver.
		eventually(t, 2*time.Minute, "resource metrics of every node", func() error {
			raw, err := bc.CoreV1().RESTClient().Get().AbsPath("/apis/metrics.k8s.io/v1beta1/nodes").DoRaw(ctx)
			if err != nil {
				return err
			}
			var m struct {
				Items []struct{ Metadata metav1.ObjectMeta }
			}
			if err := json.Unmarshal(raw, &m); err != nil || len(m.Items) != len(names) {
				return fmt.Errorf("%d node metrics (%v): %s", len(m.Items), err, raw)
			}
			return nil
		})
		// flannel's kok-cni wrote the node's CNI configuration.
		if out := hostShell(t, dir, names[0], "cat /etc/cni/net.d/10-flannel.conflist"); !strings.Contains(out, `"bridge"`) {
			t.Fatalf("the CNI configuration on %s:\n%s", names[0], out)
		}
	})

	t.Run("logs, exec, port-forward and metrics ride konnectivity when the meta cluster cannot reach the nodes", func(t *testing.T) {
		if w == nil {
			t.Skip("no web app: the pod network test failed")
		}
		checkKonnectivity(t, cfg, c, cluster, bc, businessRESTConfig(t, dir, cluster), w, addresses)
	})

	t.Run("the agent restores killed services and edited files", func(t *testing.T) {
		n := names[1]
		for _, svc := range []string{"kubelet", "containerd"} {
			before := serviceRestarts(t, getMachine(t, c, cluster, n), svc)
			killed := time.Now()
			hostShell(t, dir, n, "pkill -KILL -x "+svc)
			back := time.Duration(0)
			eventually(t, 30*time.Second, svc+" running again on "+n, func() error {
				if out := hostShell(t, dir, n, "pgrep -x "+svc+" || :"); out == "" {
					return fmt.Errorf("%s not running", svc)
				}
				if back == 0 {
					back = time.Since(killed)
				}
				return nil
			})
			t.Logf("%s killed on %s: running again after %s", svc, n, back.Round(10*time.Millisecond))
			eventually(t, 2*time.Minute, "status shows the restart", func() error {
				m := getMachine(t, c, cluster, n)
				if got := serviceRestarts(t, m, svc); got <= before {
					return fmt.Errorf("%s restarts %d", svc, got)
				}
				return nil
			})
		}
		// Only what the change touches restarts: the kubelet, not containerd.
		containerd := hostShell(t, dir, n, "pgrep -x containerd")
		hostShell(t, dir, n, "echo 'maxPods: 1' >> /var/lib/kubelet/config.yaml")
		eventually(t, 2*time.Minute, "the kubelet config restored", func() error {
			if out := hostShell(t, dir, n, "grep -c 'maxPods: 1' /var/lib/kubelet/config.yaml || :"); out != "0" {
				return fmt.Errorf("still edited")
			}
			m := getMachine(t, c, cluster, n)
			for _, cs := range m.Status.Components {
				if cs.Name == "kubelet" && strings.Contains(cs.LastRepair, "/var/lib/kubelet/config.yaml") {
					return nil
				}
			}
			return fmt.Errorf("status does not say so yet: %+v", m.Status.Components)
		})
		waitMachine(t, c, cluster, n, nodev1.MachineReady, 2*time.Minute)
		if now := hostShell(t, dir, n, "pgrep -x containerd"); now != containerd {
			t.Errorf("containerd restarted (pid %s, was %s) though only the kubelet's config changed", now, containerd)
		}
	})

	t.Run("after day 0 each host learns and reports through its business cluster only", func(t *testing.T) {
		for _, n := range names {
			eventually(t, 2*time.Minute, n+" reporting through its Lease", func() error {
				cond := meta.FindStatusCondition(getMachine(t, c, cluster, n).Status.Conditions, nodev1.MachineReachable)
				if cond == nil || cond.Reason != "AgentHeartbeat" {
					return fmt.Errorf("Reachable %+v", cond)
				}
				return nil
			})
			lease, err := bc.CoordinationV1().Leases(machine.LinkNamespace).Get(ctx, "node-"+n, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if lease.Spec.RenewTime == nil || time.Since(lease.Spec.RenewTime.Time) > agent.LeaseDuration || lease.Annotations[agent.ReportAnnotation] == "" {
				t.Fatalf("lease of %s: %+v", n, lease)
			}
			node, err := bc.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, nc := range node.Status.Conditions {
				found = found || (nc.Type == agent.NodeCondition && nc.Status == corev1.ConditionTrue)
			}
			if !found {
				t.Errorf("node %s has no %s=True: %+v", n, agent.NodeCondition, node.Status.Conditions)
			}
		}
		// Only the host's own agent may read its desired state: not
		// another host's agent, not the kubelet.
		for _, tc := range []struct {
			user   string
			groups []string
			want   bool
		}{
			{"kok:agent:" + names[0], []string{agent.AgentGroup}, true},
			{"kok:agent:" + names[1], []string{agent.AgentGroup}, false},
			{"system:node:" + names[0], []string{"system:nodes"}, false},
		} {
			sar, err := bc.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: tc.user, Groups: tc.groups, ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: machine.LinkNamespace, Verb: "get", Resource: "secrets", Name: "node-" + names[0]}}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if sar.Status.Allowed != tc.want {
				t.Errorf("%s may read node-%s's desired state: %v, want %v", tc.user, names[0], sar.Status.Allowed, tc.want)
			}
		}
		// A deleted Lease stops the heartbeat; once it is stale the
		// operator reaches the host and puts the agent's objects back.
		leases := bc.CoordinationV1().Leases(machine.LinkNamespace)
		if err := leases.Delete(ctx, "node-"+names[1], metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deleted := time.Now()
		eventually(t, 3*time.Minute, "the heartbeat of "+names[1]+" back", func() error {
			l, err := leases.Get(ctx, "node-"+names[1], metav1.GetOptions{})
			if err != nil || l.Spec.RenewTime == nil || l.Spec.RenewTime.Time.Before(deleted) {
				return fmt.Errorf("lease %v (%v)", l, err)
			}
			return nil
		})
		t.Logf("a deleted heartbeat Lease was renewed again after %s", time.Since(deleted).Round(time.Second))
	})

	t.Run("a Component added as YAML is used, and a failing script's stderr is in status", func(t *testing.T) {
		good := &nodev1.Component{ObjectMeta: metav1.ObjectMeta{Name: "motd-1"}, Spec: nodev1.ComponentSpec{Component: "motd", Version: "1",
			Variants: []nodev1.ComponentVariant{
				{Name: "debian-13", Match: nodev1.HostMatch{OS: "debian", OSVersions: []string{"13"}},
					Scripts: nodev1.Scripts{Install: "exit 1", Check: "exit 1", Uninstall: "true"}},
				{Name: "debian-12", Match: nodev1.HostMatch{OS: "debian", OSVersions: []string{"12"}},
					Files:   []nodev1.TemplatedFile{{Path: "/etc/motd", Template: "{{ .Node.Name }} of {{ .Cluster.Name }}\n"}},
					Scripts: nodev1.Scripts{Install: "true", Check: "test -s /etc/motd", Uninstall: "true"}},
			}}}
		bad := &nodev1.Component{ObjectMeta: metav1.ObjectMeta{Name: "broken-1"}, Spec: nodev1.ComponentSpec{Component: "broken", Version: "1",
			Variants: []nodev1.ComponentVariant{{Name: "any", Match: nodev1.HostMatch{OS: "debian"},
				Scripts: nodev1.Scripts{Install: "echo 'E: Unable to locate package nvidia-driver-550' >&2; exit 100", Check: "true", Uninstall: "true"}}}}}
		for _, o := range []client.Object{good, bad} {
			if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
		add := func(n, comp string) {
			m := getMachine(t, c, cluster, n)
			patch := client.MergeFrom(m.DeepCopy())
			m.Spec.Components = append(m.Spec.Components, nodev1.ComponentRef{Name: comp, Version: "1"})
			if err := c.Patch(ctx, m, patch); err != nil {
				t.Fatal(err)
			}
		}
		// The host is cut off from SSH: the change reaches it through
		// the business cluster.
		h, err := hosts.Load(dir, names[0])
		if err != nil {
			t.Fatal(err)
		}
		sshRule := []string{"INPUT", "-p", "tcp", "--dport", fmt.Sprint(h.Port), "-j", "DROP"}
		if out, err := exec.Command("ip", append([]string{"netns", "exec", h.Netns, "iptables", "-I"}, sshRule...)...).CombinedOutput(); err != nil {
			t.Fatalf("blocking SSH: %v: %s", err, out)
		}
		unblock := func() {
			_ = exec.Command("ip", append([]string{"netns", "exec", h.Netns, "iptables", "-D"}, sshRule...)...).Run()
		}
		t.Cleanup(unblock)
		add(names[0], "motd")
		eventually(t, 2*time.Minute, "motd on "+names[0]+" with SSH blocked", func() error {
			out, _ := exec.Command("nsenter", "-t", fmt.Sprint(h.InitPID), "-m", "cat", "/etc/motd").Output()
			if strings.TrimSpace(string(out)) != names[0]+" of "+cluster {
				return fmt.Errorf("motd %q", out)
			}
			m := getMachine(t, c, cluster, names[0])
			if !meta.IsStatusConditionTrue(m.Status.Conditions, nodev1.MachineComponentsReady) || len(m.Status.Components) != 4 {
				return fmt.Errorf("status: %+v", m.Status.Conditions)
			}
			return nil
		})
		unblock()
		add(names[2], "broken")
		eventually(t, 2*time.Minute, "the failing script named in status", func() error {
			m := getMachine(t, c, cluster, names[2])
			cond := meta.FindStatusCondition(m.Status.Conditions, nodev1.MachineComponentsReady)
			if cond == nil || cond.Status != metav1.ConditionFalse || !strings.Contains(cond.Message, "E: Unable to locate package nvidia-driver-550") {
				return fmt.Errorf("ComponentsReady %+v", cond)
			}
			return nil
		})
		// Taking the broken component out heals the Machine.
		m := getMachine(t, c, cluster, names[2])
		patch := client.MergeFrom(m.DeepCopy())
		m.Spec.Components = m.Spec.Components[:len(m.Spec.Components)-1]
		if err := c.Patch(ctx, m, patch); err != nil {
			t.Fatal(err)
		}
		waitMachine(t, c, cluster, names[2], nodev1.MachineReady, 2*time.Minute)
	})

	t.Run("bad input is named in conditions or refused", func(t *testing.T) {
		good := getMachine(t, c, cluster, names[0])
		mk := func(name string, mut func(*nodev1.Machine)) {
			m := &nodev1.Machine{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: cluster}, Spec: *good.Spec.DeepCopy()}
			mut(m)
			if err := c.Create(ctx, m); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				// Nothing was installed through these (no finalizer): they
				// go at once, and touch no host.
				if err := c.Delete(ctx, m); err != nil {
					t.Error(err)
				}
			})
		}
		reason := func(name, cond string) *metav1.Condition {
			var got *metav1.Condition
			eventually(t, time.Minute, name+" "+cond, func() error {
				got = meta.FindStatusCondition(getMachine(t, c, cluster, name).Status.Conditions, cond)
				if got == nil || got.Status != metav1.ConditionFalse {
					return fmt.Errorf("%s: %+v", cond, got)
				}
				return nil
			})
			return got
		}
		// node-b's key does not prove node-a's address.
		mk("wrong-key", func(m *nodev1.Machine) { m.Spec.SSH.HostKey = getMachine(t, c, cluster, names[1]).Spec.SSH.HostKey })
		if got := reason("wrong-key", nodev1.MachineReachable); got.Reason != "HostKeyMismatch" {
			t.Fatalf("a wrong host key: %+v", got)
		}
		mk("nobody-home", func(m *nodev1.Machine) { m.Spec.Address = "10.202.0.250" })
		if got := reason("nobody-home", nodev1.MachineReachable); got.Reason != "Unreachable" || !strings.Contains(got.Message, "retried with backoff") {
			t.Fatalf("an unreachable host: %+v", got)
		}
		mk("no-such-component", func(m *nodev1.Machine) {
			m.Spec.Components = append(m.Spec.Components, nodev1.ComponentRef{Name: "gpu-driver", Version: "550"})
		})
		if got := reason("no-such-component", nodev1.MachineComponentsReady); got.Reason != "ComponentNotFound" || !strings.Contains(got.Message, "gpu-driver-550") {
			t.Fatalf("a missing Component: %+v", got)
		}
		mk("no-such-cluster", func(m *nodev1.Machine) { m.Spec.ClusterName = "nowhere" })
		if got := reason("no-such-cluster", nodev1.MachineReady); got.Reason != "ClusterNotFound" {
			t.Fatalf("a missing cluster: %+v", got)
		}
		for _, n := range []string{"wrong-key", "nobody-home", "no-such-component", "no-such-cluster"} {
			if m := getMachine(t, c, cluster, n); len(m.Finalizers) > 0 {
				t.Errorf("%s holds finalizers %v though it never wrote to a host", n, m.Finalizers)
			}
		}
		// A Component in use is never edited: publish a new version.
		comp := &nodev1.Component{}
		if err := c.Get(ctx, client.ObjectKey{Name: "containerd-1.6.20"}, comp); err != nil {
			t.Fatal(err)
		}
		comp.Spec.Variants[0].Scripts.Check = "true"
		if err := c.Update(ctx, comp); err == nil || !strings.Contains(err.Error(), "new version") {
			t.Fatalf("editing an in-use Component: %v", err)
		}
	})

	t.Run("flannel's host-gw backend routes pods between nodes of one segment", func(t *testing.T) {
		if w == nil {
			t.Skip("no web app: the pod network test failed")
		}
		// The hosts share one L2 segment (the kok0 bridge): flannel can
		// route pod ranges through the nodes' own addresses, no VXLAN.
		t.Logf("%s", mustKok(t, dir, "addons", "install", "flannel", "--cluster", cluster, "--set", "backend=host-gw"))
		switched := time.Now()
		dss := bc.AppsV1().DaemonSets("kube-system")
		eventually(t, 3*time.Minute, "flanneld restarted with host-gw on every node", func() error {
			ds, err := dss.Get(ctx, "kube-flannel", metav1.GetOptions{})
			if err != nil {
				return err
			}
			st := ds.Status
			if st.ObservedGeneration < ds.Generation || st.UpdatedNumberScheduled != st.DesiredNumberScheduled || st.NumberAvailable != st.DesiredNumberScheduled {
				return fmt.Errorf("generation %d observed %d, %d of %d updated, %d available", ds.Generation, st.ObservedGeneration,
					st.UpdatedNumberScheduled, st.DesiredNumberScheduled, st.NumberAvailable)
			}
			return nil
		})
		waitAddonHealthy(t, c, cluster, "flannel", 3*time.Minute)
		// Each node routes the other nodes' pod ranges via their addresses.
		for _, from := range names {
			for _, to := range names {
				if to == from {
					continue
				}
				node, err := bc.CoreV1().Nodes().Get(ctx, to, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				want := node.Spec.PodCIDR + " via " + addresses[to]
				eventually(t, time.Minute, from+" routing "+want, func() error {
					if routes := hostShell(t, dir, from, "ip route show "+node.Spec.PodCIDR); !strings.Contains(routes, want) {
						return fmt.Errorf("route to %s: %q", node.Spec.PodCIDR, routes)
					}
					return nil
				})
			}
		}
		t.Logf("every node routes the others' pod ranges directly %s after the switch", time.Since(switched).Round(100*time.Millisecond))
		checkPodNetwork(t, bc, businessRESTConfig(t, dir, cluster), w, addresses)
	})

	t.Run("addons are kept: deleted and edited objects come back, kept changes stay", func(t *testing.T) {
		// CoreDNS came with the cluster; kok addons changes its values.
		t.Logf("%s", mustKok(t, dir, "addons", "install", "coredns", "--cluster", cluster, "--set", "replicas=2"))
		deps := bc.AppsV1().Deployments("kube-system")
		eventually(t, time.Minute, "CoreDNS at 2 replicas", func() error {
			d, err := deps.Get(ctx, "coredns", metav1.GetOptions{})
			if err != nil || *d.Spec.Replicas != 2 {
				return fmt.Errorf("replicas %v (%v)", d.Spec.Replicas, err)
			}
			return nil
		})
		waitAddonHealthy(t, c, cluster, "coredns", 3*time.Minute)
		if out := mustKok(t, dir, "addons", "list", "--cluster", cluster); !strings.Contains(out, "coredns") || !strings.Contains(out, "flannel") || !strings.Contains(out, "True") {
			t.Fatalf("kok addons list:\n%s", out)
		}
		// An edited kube-proxy DaemonSet is put back.
		dss := bc.AppsV1().DaemonSets("kube-system")
		edit := []byte(`[{"op":"replace","path":"/spec/template/spec/containers/0/resources/requests/cpu","value":"55m"}]`)
		if _, err := dss.Patch(ctx, "kube-proxy", types.JSONPatchType, edit, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		edited := time.Now()
		eventually(t, 2*time.Minute, "the edited kube-proxy DaemonSet put back", func() error {
			ds, err := dss.Get(ctx, "kube-proxy", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if cpu := ds.Spec.Template.Spec.Containers[0].Resources.Requests.Cpu().String(); cpu != "10m" {
				return fmt.Errorf("cpu request %s", cpu)
			}
			return nil
		})
		t.Logf("the edited kube-proxy DaemonSet was put back after %s", time.Since(edited).Round(100*time.Millisecond))
		old, err := deps.Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := deps.Delete(ctx, "coredns", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deleted := time.Now()
		eventually(t, 2*time.Minute, "the deleted CoreDNS Deployment back", func() error {
			d, err := deps.Get(ctx, "coredns", metav1.GetOptions{})
			if err != nil || d.UID == old.UID {
				return fmt.Errorf("not back (%v)", err)
			}
			return nil
		})
		t.Logf("the deleted CoreDNS Deployment was back after %s", time.Since(deleted).Round(100*time.Millisecond))
		waitAddonHealthy(t, c, cluster, "coredns", 3*time.Minute)
		// A user's kept change stays: replicas annotated as theirs.
		patch := []byte(`{"metadata":{"annotations":{"` + addon.KeepAnnotation + `":"spec.replicas"}},"spec":{"replicas":3}}`)
		if _, err := deps.Patch(ctx, "coredns", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		consistently(t, 40*time.Second, "the kept replicas", func() error {
			d, err := deps.Get(ctx, "coredns", metav1.GetOptions{})
			if err != nil || *d.Spec.Replicas != 3 {
				return fmt.Errorf("replicas %v (%v)", d.Spec.Replicas, err)
			}
			return nil
		})
		mustKok(t, dir, "addons", "remove", "coredns", "--cluster", cluster)
		eventually(t, time.Minute, "coredns removed from the cluster", func() error {
			if _, err := deps.Get(ctx, "coredns", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("still there (%v)", err)
			}
			return nil
		})
	})

	t.Run("a deleted Machine drains, its Node goes and the host is clean", func(t *testing.T) {
		n := names[2]
		m := getMachine(t, c, cluster, n)
		if err := c.Delete(ctx, m); err != nil {
			t.Fatal(err)
		}
		eventually(t, 3*time.Minute, "Machine "+n+" gone", func() error {
			got := &nodev1.Machine{}
			err := c.Get(ctx, client.ObjectKeyFromObject(m), got)
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (%v): %s", err, describeConditions(got.Status.Conditions))
		})
		if _, err := bc.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("node %s: %v", n, err)
		}
		if _, err := bc.CoreV1().Secrets(machine.LinkNamespace).Get(ctx, "node-"+n, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("the desired state of %s is still in the business cluster: %v", n, err)
		}
		if _, err := bc.RbacV1().ClusterRoles().Get(ctx, "kok:agent:"+n, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("the agent's cluster role of %s is still there: %v", n, err)
		}
		left := hostShell(t, dir, n, "ls -d /usr/local/bin/kok-agent /usr/local/bin/kubelet /usr/local/bin/containerd /var/lib/kubelet /etc/containerd /var/lib/kok-agent /etc/kubernetes/kubelet.conf 2>/dev/null || :; pgrep -l 'kubelet|containerd|kok-agent' || :")
		if left != "" {
			t.Fatalf("left on the host:\n%s", left)
		}
	})
}
