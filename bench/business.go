package main

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	addonv1 "github.com/kubeonkube/kok/api/addon/v1alpha1"
	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/clusterctl"
	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/local/hosts"
)

// newHosts starts n hosts named prefix-0… beside the meta cluster, each
// behind its network guard.
func newHosts(ctx context.Context, cfg *local.Config, kokBin, prefix string, n int) ([]*hosts.Host, error) {
	var hs []*hosts.Host
	for i := range n {
		h, _, err := hosts.Create(ctx, hosts.Options{StateDir: cfg.StateDir, Name: fmt.Sprintf("%s-%d", prefix, i), Self: kokBin, GuardCIDR: cfg.GuardCIDR,
			Guard: func(ctx context.Context) error { return local.EnsureGuard(ctx, cfg.GuardCIDR) }})
		if err != nil {
			return nil, err
		}
		hs = append(hs, h)
	}
	return hs, nil
}

// createWithMachines creates the KubeCluster name (in the namespace name)
// at the meta cluster's Kubernetes version, with the default addons, and
// a Machine for each host.
func createWithMachines(ctx context.Context, c client.Client, cfg *local.Config, name string, hs []*hosts.Host) (*clusterv1.KubeCluster, error) {
	restCfg, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig())
	if err != nil {
		return nil, err
	}
	kc, err := clusterctl.Create(ctx, c, clusterctl.CreateOptions{Name: name, Version: cfg.KubernetesVersion})
	if err != nil {
		return nil, err
	}
	for _, h := range hs {
		if _, err := local.ApplyMachine(ctx, restCfg, h, name, name); err != nil {
			return nil, err
		}
	}
	return kc, nil
}

// machinesReady fails until every host's Machine of the cluster is Ready
// (for poll).
func machinesReady(ctx context.Context, c client.Client, cluster string, hs []*hosts.Host) error {
	for _, h := range hs {
		m := &nodev1.Machine{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: cluster, Name: h.Name}, m); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(m.Status.Conditions, nodev1.MachineReady) {
			return fmt.Errorf("the Machine %s is not Ready", h.Name)
		}
	}
	return nil
}

// addonsHealthy fails until each of the cluster's addons is Healthy (for
// poll).
func addonsHealthy(ctx context.Context, c client.Client, cluster string, addons []string) error {
	for _, a := range addons {
		ca := &addonv1.ClusterAddon{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: cluster, Name: cluster + "-" + a}, ca); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(ca.Status.Conditions, addonv1.AddonHealthy) {
			return fmt.Errorf("%s is not Healthy", a)
		}
	}
	return nil
}
