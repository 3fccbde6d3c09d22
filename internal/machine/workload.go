package machine

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/workload"
)

// Workload is a business cluster as the machine operator sees it.
type Workload = workload.Cluster

// WorkloadFunc reaches a KubeCluster's business cluster.
type WorkloadFunc = workload.Func

// Bootstrap tokens: one per Machine while it joins (kubeadm's format,
// bootstrap.kubernetes.io/token Secrets in kube-system).
const (
	tokenTTL     = time.Hour
	tokenRefresh = 30 * time.Minute
	// TokenGroup is the extra group of every Machine's bootstrap token.
	TokenGroup = "system:bootstrappers:kok:machines"
)

// tokenID is the Machine's token id: six characters derived from its UID.
func tokenID(m *nodev1.Machine) string {
	sum := sha256.Sum256([]byte(m.UID))
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b strings.Builder
	for i := 0; i < 6; i++ {
		b.WriteByte(alphabet[int(sum[i])%len(alphabet)])
	}
	return b.String()
}

func tokenSecretName(m *nodev1.Machine) string { return "bootstrap-token-" + tokenID(m) }

// ensureToken returns the Machine's bootstrap token, creating it or
// pushing its expiry out when less than tokenRefresh is left.
func ensureToken(ctx context.Context, cs kubernetes.Interface, m *nodev1.Machine, now time.Time) (string, error) {
	secrets := cs.CoreV1().Secrets(metav1.NamespaceSystem)
	id := tokenID(m)
	s, err := secrets.Get(ctx, tokenSecretName(m), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		secret, err := randomToken(16)
		if err != nil {
			return "", err
		}
		s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: tokenSecretName(m), Namespace: metav1.NamespaceSystem,
			Labels: map[string]string{"node.kok.dev/machine": m.Namespace + "." + m.Name}},
			Type: corev1.SecretTypeBootstrapToken,
			StringData: map[string]string{"token-id": id, "token-secret": secret,
				"expiration":                     now.Add(tokenTTL).UTC().Format(time.RFC3339),
				"usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
				"auth-extra-groups": TokenGroup, "description": "kok Machine " + m.Namespace + "/" + m.Name + " joining"}}
		if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return "", fmt.Errorf("creating the bootstrap token: %w", err)
		}
		return id + "." + secret, nil
	case err != nil:
		return "", fmt.Errorf("reading the bootstrap token: %w", err)
	}
	exp, _ := time.Parse(time.RFC3339, string(s.Data["expiration"]))
	if exp.Sub(now) < tokenRefresh {
		s.Data["expiration"] = []byte(now.Add(tokenTTL).UTC().Format(time.RFC3339))
		if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			return "", fmt.Errorf("refreshing the bootstrap token: %w", err)
		}
	}
	return id + "." + string(s.Data["token-secret"]), nil
}

// deleteToken removes the Machine's bootstrap token (the node joined, or
// the Machine is going).
func deleteToken(ctx context.Context, cs kubernetes.Interface, m *nodev1.Machine) error {
	err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, tokenSecretName(m), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the bootstrap token: %w", err)
	}
	return nil
}

func randomToken(n int) (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			return "", err
		}
		b[i] = alphabet[k.Int64()]
	}
	return string(b), nil
}

// bootstrapKubeconfig is the kubeconfig a kubelet joins with: the
// cluster's CA (pinned: written over the host-key-checked SSH channel) and
// the Machine's token.
func bootstrapKubeconfig(server string, ca []byte, token string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["cluster"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["kubelet-bootstrap"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["bootstrap"] = &clientcmdapi.Context{Cluster: "cluster", AuthInfo: "kubelet-bootstrap"}
	cfg.CurrentContext = "bootstrap"
	return clientcmd.Write(*cfg)
}

// applyNodeMetadata sets the Machine's labels and taints on its Node
// (server-side apply: kok owns only those it set).
func applyNodeMetadata(ctx context.Context, cs kubernetes.Interface, m *nodev1.Machine) error {
	labels := map[string]string{"node.kok.dev/machine": m.Name}
	for k, v := range m.Spec.NodeLabels {
		labels[k] = v
	}
	node := corev1ac.Node(m.Name).WithLabels(labels)
	spec := corev1ac.NodeSpec()
	for _, t := range m.Spec.Taints {
		spec.WithTaints(corev1ac.Taint().WithKey(t.Key).WithValue(t.Value).WithEffect(t.Effect))
	}
	node.WithSpec(spec)
	_, err := cs.CoreV1().Nodes().Apply(ctx, node, kube.ApplyOptions())
	if err != nil {
		return fmt.Errorf("labelling node %s: %w", m.Name, err)
	}
	return nil
}

// nodeMetadataCurrent: the node carries every label and taint the Machine
// asks for (so nothing needs applying).
func nodeMetadataCurrent(n *corev1.Node, m *nodev1.Machine) bool {
	if n.Labels["node.kok.dev/machine"] != m.Name {
		return false
	}
	for k, v := range m.Spec.NodeLabels {
		if got, ok := n.Labels[k]; !ok || got != v {
			return false
		}
	}
	for _, t := range m.Spec.Taints {
		if !slices.ContainsFunc(n.Spec.Taints, func(have corev1.Taint) bool {
			return have.Key == t.Key && have.Value == t.Value && have.Effect == t.Effect
		}) {
			return false
		}
	}
	return true
}

// drain cordons the node and evicts its pods through the eviction API,
// so PodDisruptionBudgets are respected. It returns the pods still there
// ("" when none is left): each with why it stays.
func drain(ctx context.Context, cs kubernetes.Interface, nodeName string) ([]string, error) {
	patch := []byte(`{"spec":{"unschedulable":true}}`)
	if _, err := cs.CoreV1().Nodes().Patch(ctx, nodeName, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("cordoning node %s: %w", nodeName, err)
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", nodeName).String()})
	if err != nil {
		return nil, fmt.Errorf("listing the pods of node %s: %w", nodeName, err)
	}
	var blocking []string
	for _, p := range pods.Items {
		if skipOnDrain(&p) {
			continue
		}
		ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}}
		err := cs.PolicyV1().Evictions(p.Namespace).Evict(ctx, ev)
		switch {
		case err == nil, apierrors.IsNotFound(err):
			if p.DeletionTimestamp == nil {
				blocking = append(blocking, p.Namespace+"/"+p.Name+" (evicted, terminating)")
			} else {
				blocking = append(blocking, p.Namespace+"/"+p.Name+" (terminating)")
			}
		case apierrors.IsTooManyRequests(err):
			blocking = append(blocking, p.Namespace+"/"+p.Name+" (a PodDisruptionBudget allows no eviction now)")
		default:
			blocking = append(blocking, fmt.Sprintf("%s/%s (%v)", p.Namespace, p.Name, err))
		}
	}
	return blocking, nil
}

// skipOnDrain: DaemonSet pods and static (mirror) pods stay; a pod that
// already ended is gone as far as draining is concerned.
func skipOnDrain(p *corev1.Pod) bool {
	if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		return true
	}
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return true
	}
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" {
			return true
		}
	}
	return false
}

func sha256Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}
