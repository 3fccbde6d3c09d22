package local

import (
	"context"
	"fmt"
	"io"
	"os"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/clusterctl"
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
	fmt.Fprintf(out, "\nDemo business cluster %q (its control plane runs as pods in namespace %s):\n  kok kubectl --kubeconfig %s get ns\n",
		DemoCluster, DemoCluster, kubeconfig)
}

// indent prefixes each write so nested progress reads as part of a step.
type indent struct{ w io.Writer }

func (i indent) Write(p []byte) (int, error) {
	if _, err := fmt.Fprintf(i.w, "    %s", p); err != nil {
		return 0, err
	}
	return len(p), nil
}
