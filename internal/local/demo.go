package local

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/clusterctl"
	"github.com/kubeonkube/kok/internal/local/hosts"
	"github.com/kubeonkube/kok/internal/manager"
)

// DemoCluster is the business cluster kok up creates.
const DemoCluster = "demo"

// ensureDemo creates the demo business cluster at a Kubernetes version
// unless it exists, waits for it and writes its admin kubeconfig
// (Config.DemoKubeconfig).
func ensureDemo(ctx context.Context, cfg *rest.Config, version, kubeconfig string, out io.Writer) error {
	cl, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return err
	}
	kc := &clusterv1.KubeCluster{}
	err = cl.Get(ctx, client.ObjectKey{Namespace: DemoCluster, Name: DemoCluster}, kc)
	if apierrors.IsNotFound(err) {
		if kc, err = clusterctl.Create(ctx, cl, clusterctl.CreateOptions{Name: DemoCluster, Version: version}); err != nil {
			return fmt.Errorf("creating the demo cluster: %w", err)
		}
	} else if err != nil {
		return err
	}
	if err := clusterctl.Wait(ctx, cl, kc, indent{out}); err != nil {
		return err
	}
	data, err := clusterctl.Kubeconfig(ctx, cl, kc)
	if err != nil {
		return err
	}
	return os.WriteFile(kubeconfig, data, 0o600)
}

// printDemo prints the one line that uses the demo business cluster.
func printDemo(out io.Writer, kubeconfig string) {
	fmt.Fprintf(out, "\nDemo business cluster %q (its control plane runs as pods in namespace %s; its nodes are the local hosts %s):\n  kok kubectl --kubeconfig %s get nodes\n  kok kubectl get machines -n %s\n",
		DemoCluster, DemoCluster, strings.Join(DemoMachines, ", "), kubeconfig, DemoCluster)
}

// indent prefixes each write so nested progress reads as part of a step.
type indent struct{ w io.Writer }

func (i indent) Write(p []byte) (int, error) {
	if _, err := fmt.Fprintf(i.w, "    %s", p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// DemoMachines are the local hosts kok up joins to the demo cluster.
var DemoMachines = []string{"demo-1", "demo-2"}

// ensureDemoMachines makes the demo hosts (kok machine create NAME
// --cluster demo) unless they run, and waits for their Machines to be
// Ready: each host installed over SSH by the machine operator and joined
// as a node.
func ensureDemoMachines(ctx context.Context, cfg *rest.Config, c *Config, self string, out io.Writer) error {
	cl, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return err
	}
	for _, name := range DemoMachines {
		h, res, err := hosts.Create(ctx, hosts.Options{StateDir: c.StateDir, Name: name, Self: self, GuardCIDR: c.GuardCIDR,
			Guard: func(ctx context.Context) error { return EnsureGuard(ctx, c.GuardCIDR) }})
		if err != nil {
			return fmt.Errorf("host %s: %w", name, err)
		}
		if _, err := ApplyMachine(ctx, cfg, h, DemoCluster, DemoCluster); err != nil {
			return err
		}
		fmt.Fprintf(out, "    host %s (%s) %s; Machine %s/%s applied\n", name, h.Address, res, DemoCluster, name)
	}
	for _, name := range DemoMachines {
		var last string
		err := poll(ctx, time.Second, 0, func(ctx context.Context) (bool, error) {
			m := &nodev1.Machine{}
			if err := cl.Get(ctx, client.ObjectKey{Namespace: DemoCluster, Name: name}, m); err != nil {
				last = err.Error()
				return false, nil
			}
			cond := meta.FindStatusCondition(m.Status.Conditions, nodev1.MachineReady)
			if cond != nil {
				last = cond.Reason + ": " + cond.Message
			}
			return cond != nil && cond.Status == metav1.ConditionTrue, nil
		}, func() error { return fmt.Errorf("the Machine %s/%s is not Ready: %s", DemoCluster, name, last) })
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "    node %s Ready\n", name)
	}
	return nil
}
