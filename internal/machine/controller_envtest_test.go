//go:build envtest

package machine_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/machine"
	"github.com/kubeonkube/kok/internal/machine/remote/sshdtest"
	"github.com/kubeonkube/kok/internal/manager"
	"github.com/kubeonkube/kok/internal/testenv"
)

var c client.Client

// TestMain starts one real kube-apiserver (envtest) with kok's CRDs and
// the machine controller for every test of the package.
func TestMain(m *testing.M) {
	testenv.Main(m, func(ctx context.Context, cfg *rest.Config) error {
		mgr, err := ctrl.NewManager(cfg, testenv.ManagerOptions(manager.Scheme()))
		if err != nil {
			return err
		}
		if err := (&machine.Reconciler{Client: mgr.GetClient(), Registry: &machine.Registry{Name: "kok.local"}}).SetupWithManager(mgr); err != nil {
			return err
		}
		if c, err = client.New(cfg, client.Options{Scheme: manager.Scheme()}); err != nil {
			return err
		}
		go func() { _ = mgr.Start(ctx) }()
		return nil
	})
}

// waitCondition waits until the Machine's condition t says want (its
// reason or message contains it).
func waitCondition(t *testing.T, m *nodev1.Machine, typ, want string) *metav1.Condition {
	t.Helper()
	var got *metav1.Condition
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(m), m); err != nil {
			return false, nil
		}
		got = meta.FindStatusCondition(m.Status.Conditions, typ)
		return got != nil && strings.Contains(got.Reason+": "+got.Message, want), nil
	})
	if err != nil {
		t.Fatalf("%s never said %q: %+v", typ, want, got)
	}
	return got
}

func component(name, version string, deps ...string) *nodev1.Component {
	return &nodev1.Component{ObjectMeta: metav1.ObjectMeta{Name: name + "-" + version},
		Spec: nodev1.ComponentSpec{Component: name, Version: version, DependsOn: deps, Variants: []nodev1.ComponentVariant{{
			Name: "any-linux", Match: nodev1.HostMatch{OS: hostOS(), Architectures: []string{}},
			Scripts: nodev1.Scripts{Install: "true", Check: "true", Uninstall: "true"},
		}}}}
}

// hostOS is this machine's os-release ID (the sshd the test reaches runs
// here).
func hostOS() string {
	data, _ := os.ReadFile("/etc/os-release")
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "ID="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "linux"
}

// TestMachineReachesItsHost drives Machines against a real sshd on
// loopback: the pinned key is checked, facts discovered, components
// resolved; wrong keys, missing hosts, credentials, clusters and
// Components are named in conditions.
func TestMachineReachesItsHost(t *testing.T) {
	ctx := context.Background()
	sshd := sshdtest.Start(t)
	target := sshd.Target()
	ns := "default"
	for _, o := range []client.Object{
		&clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Namespace: ns}, Spec: clusterv1.KubeClusterSpec{Version: "v1.34.4", Paused: true}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ssh", Namespace: ns}, Type: corev1.SecretTypeSSHAuth,
			Data: map[string][]byte{corev1.SSHAuthPrivateKey: target.PrivateKey}},
		component("containerd", "1.6.20"),
		component("kubelet", "v1.34.4", "containerd"),
		component("kok-agent", "0.1.0-dev"),
	} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(name string, mut func(*nodev1.Machine)) *nodev1.Machine {
		m := &nodev1.Machine{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: nodev1.MachineSpec{ClusterName: "team-a", Address: target.Address,
				SSH:        nodev1.SSHAccess{Port: target.Port, User: target.User, CredentialsSecret: "ssh", HostKey: target.HostKey},
				Components: []nodev1.ComponentRef{{Name: "kubelet"}, {Name: "containerd", Version: "1.6.20"}, {Name: "kok-agent", Version: "0.1.0-dev"}}}}
		if mut != nil {
			mut(m)
		}
		if err := c.Create(ctx, m); err != nil {
			t.Fatal(err)
		}
		return m
	}

	t.Run("reached with its pinned key", func(t *testing.T) {
		m := mk("good", nil)
		cond := waitCondition(t, m, nodev1.MachineReachable, "HostKeyVerified")
		if m.Status.Facts == nil || m.Status.Facts.OS != hostOS() || m.Status.Facts.CPUs == 0 || m.Status.Facts.MemoryBytes == 0 {
			t.Fatalf("facts %+v", m.Status.Facts)
		}
		// The cluster is paused and has no admin kubeconfig: the plan
		// waits for it, and says so.
		waitCondition(t, m, nodev1.MachineComponentsReady, "install order: containerd, kubelet, kok-agent; rendered once the business cluster answers")
		if m.Status.Phase != nodev1.MachinePhaseProvisioning {
			t.Fatalf("phase %s", m.Status.Phase)
		}
		t.Logf("Reachable: %s", cond.Message)
	})
	t.Run("a wrong host key is refused", func(t *testing.T) {
		other := sshdtest.NewHostKey(t)
		m := mk("wrong-key", func(m *nodev1.Machine) { m.Spec.SSH.HostKey = other })
		cond := waitCondition(t, m, nodev1.MachineReachable, "HostKeyMismatch")
		if cond.Status != metav1.ConditionFalse || !strings.Contains(cond.Message, "spec.ssh.hostKey") || m.Status.Facts != nil {
			t.Fatalf("Reachable %+v, facts %+v", cond, m.Status.Facts)
		}
	})
	t.Run("an unreachable host is retried", func(t *testing.T) {
		m := mk("nobody-home", func(m *nodev1.Machine) { m.Spec.SSH.Port = sshdtest.FreePort(t) })
		waitCondition(t, m, nodev1.MachineReachable, "Unreachable")
	})
	t.Run("missing credentials are named", func(t *testing.T) {
		m := mk("no-creds", func(m *nodev1.Machine) { m.Spec.SSH.CredentialsSecret = "nope" })
		waitCondition(t, m, nodev1.MachineReachable, "secret nope does not exist")
	})
	t.Run("a missing cluster and Component are named", func(t *testing.T) {
		m := mk("orphan", func(m *nodev1.Machine) {
			m.Spec.ClusterName = "team-x"
			m.Spec.Components = []nodev1.ComponentRef{{Name: "gpu-driver", Version: "550"}}
		})
		waitCondition(t, m, nodev1.MachineReady, "KubeCluster team-x does not exist")
		waitCondition(t, m, nodev1.MachineComponentsReady, "Component gpu-driver-550 does not exist")
	})
	t.Run("a Component applied later is seen at once", func(t *testing.T) {
		m := mk("late", func(m *nodev1.Machine) {
			m.Spec.Components = []nodev1.ComponentRef{{Name: "late", Version: "1"}, {Name: "kok-agent", Version: "0.1.0-dev"}}
		})
		waitCondition(t, m, nodev1.MachineComponentsReady, "Component late-1 does not exist")
		start := time.Now()
		if err := c.Create(ctx, component("late", "1")); err != nil {
			t.Fatal(err)
		}
		waitCondition(t, m, nodev1.MachineComponentsReady, "install order: late, kok-agent")
		// The periodic re-check is a minute away: the watch did it.
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("the new Component was seen after %s", took)
		}
	})
	t.Run("a component without a variant for the host is named", func(t *testing.T) {
		odd := component("odd", "1")
		odd.Spec.Variants[0].Match = nodev1.HostMatch{OS: "plan9"}
		if err := c.Create(ctx, odd); err != nil {
			t.Fatal(err)
		}
		m := mk("odd-host", func(m *nodev1.Machine) { m.Spec.Components = []nodev1.ComponentRef{{Name: "odd", Version: "1"}} })
		waitCondition(t, m, nodev1.MachineComponentsReady, "add a variant")
	})
}
