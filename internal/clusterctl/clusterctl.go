// Package clusterctl is the client side of KubeClusters: create one, wait
// for it, fetch its kubeconfig, delete it. The CLI and `kok up` use it.
package clusterctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/cluster"
	"github.com/kubeonkube/kok/internal/kube"
)

// LabelCreatedBy marks namespaces the CLI made for a cluster (and removes
// with it).
const LabelCreatedBy = "cluster.kok.dev/created-for"

// CreateOptions describe a new cluster.
type CreateOptions struct {
	Name, Namespace string
	// Version defaults to the newest release in the catalog that is not
	// deprecated.
	Version      string
	Replicas     int32
	EtcdReplicas int32
}

// Create makes the namespace (when missing) and the KubeCluster.
func Create(ctx context.Context, c client.Client, o CreateOptions) (*clusterv1.KubeCluster, error) {
	if o.Namespace == "" {
		o.Namespace = o.Name
	}
	if o.Version == "" {
		v, err := NewestVersion(ctx, c)
		if err != nil {
			return nil, err
		}
		o.Version = v
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Namespace, Labels: map[string]string{LabelCreatedBy: o.Name}}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("namespace %s: %w", o.Namespace, err)
	}
	kc := &clusterv1.KubeCluster{
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace},
		Spec: clusterv1.KubeClusterSpec{Version: o.Version,
			ControlPlane: clusterv1.ControlPlaneSpec{Replicas: max(o.Replicas, 1)},
			Etcd:         clusterv1.EtcdSpec{Managed: &clusterv1.ManagedEtcd{Replicas: max(o.EtcdReplicas, 1)}}},
	}
	if err := c.Create(ctx, kc); err != nil {
		return nil, err
	}
	return kc, nil
}

// NewestVersion is the newest catalog release that is not deprecated.
func NewestVersion(ctx context.Context, c client.Client) (string, error) {
	var list clusterv1.KubernetesVersionList
	if err := c.List(ctx, &list); err != nil {
		return "", fmt.Errorf("reading the KubernetesVersion catalog: %w", err)
	}
	var names []string
	for _, v := range list.Items {
		if !v.Spec.Deprecated {
			names = append(names, v.Name)
		}
	}
	if len(names) == 0 {
		return "", errors.New("the KubernetesVersion catalog is empty: apply config/catalog (kubectl apply -k config/catalog)")
	}
	slices.SortFunc(names, kube.CompareVersions)
	return names[len(names)-1], nil
}

// Find locates a cluster by name: in namespace when given, else in any
// namespace (an ambiguous name is an error that lists the candidates).
func Find(ctx context.Context, c client.Client, name, namespace string) (*clusterv1.KubeCluster, error) {
	if namespace != "" {
		kc := &clusterv1.KubeCluster{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, kc); err != nil {
			return nil, err
		}
		return kc, nil
	}
	var list clusterv1.KubeClusterList
	if err := c.List(ctx, &list); err != nil {
		return nil, err
	}
	var found []clusterv1.KubeCluster
	for _, kc := range list.Items {
		if kc.Name == name {
			found = append(found, kc)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no KubeCluster named %q (kok get clusters lists them)", name)
	case 1:
		return &found[0], nil
	default:
		var where []string
		for _, kc := range found {
			where = append(where, kc.Namespace)
		}
		return nil, fmt.Errorf("KubeCluster %q exists in several namespaces (%s): pick one with --namespace", name, strings.Join(where, ", "))
	}
}

// Wait waits for the cluster to be Ready at its spec version with no rollout
// in progress, printing each change of what it waits for.
func Wait(ctx context.Context, c client.Client, kc *clusterv1.KubeCluster, out io.Writer) error {
	start := time.Now()
	last := ""
	for {
		cur := &clusterv1.KubeCluster{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(kc), cur); err != nil {
			return err
		}
		ready := meta.FindStatusCondition(cur.Status.Conditions, clusterv1.ConditionReady)
		rolling := meta.IsStatusConditionTrue(cur.Status.Conditions, clusterv1.ConditionProgressing)
		if ready != nil && ready.Status == metav1.ConditionTrue && cur.Status.ObservedGeneration == cur.Generation &&
			cur.Status.Version == cur.Spec.Version && !rolling {
			fmt.Fprintf(out, "[%5.1fs] %s/%s is Ready: %s\n", time.Since(start).Seconds(), cur.Namespace, cur.Name, ready.Message)
			*kc = *cur
			return nil
		}
		msg := cur.Status.Phase
		if p := meta.FindStatusCondition(cur.Status.Conditions, clusterv1.ConditionProgressing); p != nil && p.Status == metav1.ConditionTrue {
			msg += ": " + p.Message
		} else if ready != nil {
			msg += ": " + ready.Message
		}
		if msg != last && msg != "" {
			fmt.Fprintf(out, "[%5.1fs] %s\n", time.Since(start).Seconds(), msg)
			last = msg
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s/%s is not Ready (%s): %w", kc.Namespace, kc.Name, msg, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Kubeconfig returns the cluster's admin kubeconfig.
func Kubeconfig(ctx context.Context, c client.Client, kc *clusterv1.KubeCluster) ([]byte, error) {
	name := kc.Status.AdminKubeconfigSecret
	if name == "" {
		name = cluster.Names{Cluster: kc.Name, Namespace: kc.Namespace}.AdminKubeconfig()
	}
	var s corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: kc.Namespace, Name: name}, &s); err != nil {
		return nil, fmt.Errorf("admin kubeconfig of %s/%s: %w", kc.Namespace, kc.Name, err)
	}
	return s.Data[cluster.KeyKubeconfig], nil
}

// WithServer points every cluster of a kubeconfig at server.
func WithServer(kubeconfig []byte, server string) ([]byte, error) {
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return nil, err
	}
	if u, err := url.Parse(server); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want an https URL such as https://10.0.0.5:30643", server)
	}
	for _, cl := range cfg.Clusters {
		cl.Server = server
	}
	return clientcmd.Write(*cfg)
}

// Delete deletes the cluster and waits until its teardown is done; a
// namespace the CLI made for it goes too.
func Delete(ctx context.Context, c client.Client, kc *clusterv1.KubeCluster, out io.Writer) error {
	if err := c.Delete(ctx, kc); err != nil {
		return client.IgnoreNotFound(err)
	}
	fmt.Fprintf(out, "deleting %s/%s\n", kc.Namespace, kc.Name)
	for {
		err := c.Get(ctx, client.ObjectKeyFromObject(kc), &clusterv1.KubeCluster{})
		if apierrors.IsNotFound(err) {
			break
		} else if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s/%s is still being torn down: %w", kc.Namespace, kc.Name, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	var ns corev1.Namespace
	if err := c.Get(ctx, client.ObjectKey{Name: kc.Namespace}, &ns); err == nil && ns.Labels[LabelCreatedBy] == kc.Name {
		if err := c.Delete(ctx, &ns); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		fmt.Fprintf(out, "deleted namespace %s\n", ns.Name)
	}
	fmt.Fprintf(out, "deleted %s/%s\n", kc.Namespace, kc.Name)
	return nil
}
