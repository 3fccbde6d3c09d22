package local

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	nodev1ac "github.com/kubeonkube/kok/api/node/v1alpha1/applyconfiguration/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/local/hosts"
	"github.com/kubeonkube/kok/internal/manager"
)

// DefaultComponents are what a local host runs as a node: the container
// runtime, the kubelet at its cluster's version, and kok's node agent
// (config/components).
var DefaultComponents = []nodev1.ComponentRef{
	{Name: "containerd", Version: "1.6.20"},
	{Name: "kubelet"},
	{Name: "kok-agent", Version: "0.1.0-dev"},
}

// ApplyMachine makes a local host a node of a business cluster: it
// applies the Secret with the host's SSH key and a Machine (in the
// cluster's namespace, named as the host) that pins the host's key. The
// machine operator does the rest, over SSH, as for any host.
func ApplyMachine(ctx context.Context, cfg *rest.Config, h *hosts.Host, cluster, namespace string) (*nodev1.Machine, error) {
	if namespace == "" {
		namespace = cluster
	}
	cl, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return nil, err
	}
	key, err := os.ReadFile(h.PrivateKeyPath)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", h.Name, err)
	}
	secretName := h.Name + "-ssh"
	secret := &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: namespace,
			Labels: map[string]string{kube.LabelManagedBy: kube.ManagedBy}},
		Type: corev1.SecretTypeSSHAuth, Data: map[string][]byte{corev1.SSHAuthPrivateKey: key}}
	if err := kube.Apply(ctx, cl, nil, secret); err != nil {
		return nil, fmt.Errorf("applying Secret %s/%s: %w", namespace, secretName, err)
	}
	spec := nodev1ac.MachineSpec().WithClusterName(cluster).WithAddress(h.Address).
		WithSSH(nodev1ac.SSHAccess().WithPort(int32(h.Port)).WithUser(h.User).
			WithCredentialsSecret(secretName).WithHostKey(h.HostKey))
	for _, c := range DefaultComponents {
		ref := nodev1ac.ComponentRef().WithName(c.Name)
		if c.Version != "" {
			ref.WithVersion(c.Version)
		}
		spec.WithComponents(ref)
	}
	m := &nodev1.Machine{}
	ac := nodev1ac.Machine(h.Name, namespace).WithSpec(spec)
	if err := kube.ApplyConfigurationInto(ctx, cl, ac, m); err != nil {
		return nil, fmt.Errorf("applying Machine %s/%s: %w", namespace, h.Name, err)
	}
	return m, nil
}

// DeleteMachinesOf deletes the Machines whose address is the host's and
// waits until they are gone: each drains its node, deletes it and cleans
// the host first (the machine operator's teardown). It says what it waits
// for on out.
func DeleteMachinesOf(ctx context.Context, cfg *rest.Config, h *hosts.Host, out io.Writer) error {
	cl, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return err
	}
	var list nodev1.MachineList
	if err := cl.List(ctx, &list); err != nil {
		return fmt.Errorf("listing Machines: %w", err)
	}
	for i := range list.Items {
		m := &list.Items[i]
		if m.Spec.Address != h.Address {
			continue
		}
		fmt.Fprintf(out, "deleting Machine %s/%s (drain, delete the node, clean the host)\n", m.Namespace, m.Name)
		if err := cl.Delete(ctx, m); client.IgnoreNotFound(err) != nil {
			return err
		}
		var last string
		err := poll(ctx, time.Second, 10*time.Minute, func(ctx context.Context) (bool, error) {
			got := &nodev1.Machine{}
			err := cl.Get(ctx, client.ObjectKeyFromObject(m), got)
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			if c := meta.FindStatusCondition(got.Status.Conditions, nodev1.MachineReady); c != nil {
				last = c.Message
			}
			return false, nil
		}, func() error { return fmt.Errorf("the Machine %s/%s is still there: %s", m.Namespace, m.Name, last) })
		if err != nil {
			return err
		}
	}
	return nil
}
