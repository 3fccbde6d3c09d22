package machine

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"slices"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1ac "k8s.io/client-go/applyconfigurations/coordination/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/kubernetes"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/agent"
	"github.com/kubeonkube/kok/internal/kube"
)

// After day 0 a host learns its desired state from its business cluster:
// a Secret per Machine in LinkNamespace that only that host's agent
// (user kok:agent:<node>) may read, and it reports through a Lease of the
// same name (renewed every 15 s, its report in an annotation) and a
// condition on its Node.

// LinkNamespace holds the hosts' desired states and heartbeats in a
// business cluster.
const LinkNamespace = "kok-system"

// desiredHashAnnotation on the Secret is the hash of the desired state it
// holds.
const desiredHashAnnotation = "node.kok.dev/desired-hash"

func linkObject(m *nodev1.Machine) string { return "node-" + m.Name }
func agentUser(m *nodev1.Machine) string  { return agent.AgentUserPrefix + m.Name }
func agentRole(m *nodev1.Machine) string  { return "kok:agent:" + m.Name }

// clusterLink is what the agent is told about its place in the cluster.
func clusterLink(m *nodev1.Machine) *agent.ClusterLink {
	return &agent.ClusterLink{Namespace: LinkNamespace, Object: linkObject(m), Node: m.Name, Kubeconfig: KubeletKubeconfigPath}
}

// heartbeat is what the agent's Lease says: its report and when it renewed
// it (zero when there is no Lease or no renewal yet).
type heartbeat struct {
	report  *agent.Report
	renewed time.Time
}

// fresh: the agent renewed its Lease within agent.LeaseDuration.
func (h heartbeat) fresh(now time.Time) bool {
	return h.report != nil && !h.renewed.IsZero() && now.Sub(h.renewed) < agent.LeaseDuration
}

// readHeartbeat reads the Machine's Lease.
func readHeartbeat(ctx context.Context, cs kubernetes.Interface, m *nodev1.Machine) (heartbeat, error) {
	l, err := cs.CoordinationV1().Leases(LinkNamespace).Get(ctx, linkObject(m), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return heartbeat{}, nil
	}
	if err != nil {
		return heartbeat{}, fmt.Errorf("reading the agent's heartbeat: %w", err)
	}
	var h heartbeat
	if l.Spec.RenewTime != nil {
		h.renewed = l.Spec.RenewTime.Time
	}
	if data, ok := l.Annotations[agent.ReportAnnotation]; ok {
		var r agent.Report
		if err := json.Unmarshal([]byte(data), &r); err == nil {
			h.report = &r
		}
	}
	return h, nil
}

// publishDesired puts d where the Machine's agent reads it, with the
// objects that let only that agent read it and report, unless the Secret
// already holds it; all puts every object back whatever the Secret holds
// (a deleted Lease or Role would otherwise stop the heartbeat for good).
func publishDesired(ctx context.Context, cs kubernetes.Interface, m *nodev1.Machine, d *agent.Desired, all bool) (bool, error) {
	name, hash := linkObject(m), d.Hash()
	s, err := cs.CoreV1().Secrets(LinkNamespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil && s.Annotations[desiredHashAnnotation] == hash && !all:
		return false, nil
	case err != nil && !apierrors.IsNotFound(err):
		return false, fmt.Errorf("reading the desired state's Secret: %w", err)
	}
	data, err := json.Marshal(d)
	if err != nil {
		return false, err
	}
	labels := map[string]string{"app.kubernetes.io/managed-by": "kok", "node.kok.dev/machine": m.Name}
	opts := kube.ApplyOptions()
	user := agentUser(m)
	steps := []struct {
		what  string
		apply func() error
	}{
		{"namespace " + LinkNamespace, func() error {
			_, err := cs.CoreV1().Namespaces().Apply(ctx, corev1ac.Namespace(LinkNamespace).WithLabels(map[string]string{"app.kubernetes.io/managed-by": "kok"}), opts)
			return err
		}},
		{"role", func() error {
			_, err := cs.RbacV1().Roles(LinkNamespace).Apply(ctx, rbacv1ac.Role(agentRole(m), LinkNamespace).WithLabels(labels).WithRules(
				rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("secrets").WithResourceNames(name).WithVerbs("get", "list", "watch"),
				rbacv1ac.PolicyRule().WithAPIGroups("coordination.k8s.io").WithResources("leases").WithResourceNames(name).WithVerbs("get", "update", "patch"),
			), opts)
			return err
		}},
		{"role binding", func() error {
			_, err := cs.RbacV1().RoleBindings(LinkNamespace).Apply(ctx, rbacv1ac.RoleBinding(agentRole(m), LinkNamespace).WithLabels(labels).
				WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup(rbacv1.GroupName).WithKind("Role").WithName(agentRole(m))).
				WithSubjects(rbacv1ac.Subject().WithAPIGroup(rbacv1.GroupName).WithKind(rbacv1.UserKind).WithName(user)), opts)
			return err
		}},
		{"cluster role", func() error {
			_, err := cs.RbacV1().ClusterRoles().Apply(ctx, rbacv1ac.ClusterRole(agentRole(m)).WithLabels(labels).WithRules(
				rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("nodes").WithResourceNames(m.Name).WithVerbs("get"),
				rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("nodes/status").WithResourceNames(m.Name).WithVerbs("patch"),
			), opts)
			return err
		}},
		{"cluster role binding", func() error {
			_, err := cs.RbacV1().ClusterRoleBindings().Apply(ctx, rbacv1ac.ClusterRoleBinding(agentRole(m)).WithLabels(labels).
				WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup(rbacv1.GroupName).WithKind("ClusterRole").WithName(agentRole(m))).
				WithSubjects(rbacv1ac.Subject().WithAPIGroup(rbacv1.GroupName).WithKind(rbacv1.UserKind).WithName(user)), opts)
			return err
		}},
		{"heartbeat lease", func() error {
			_, err := cs.CoordinationV1().Leases(LinkNamespace).Apply(ctx, coordinationv1ac.Lease(name, LinkNamespace).WithLabels(labels), opts)
			return err
		}},
		{"secret", func() error {
			_, err := cs.CoreV1().Secrets(LinkNamespace).Apply(ctx, corev1ac.Secret(name, LinkNamespace).WithLabels(labels).
				WithAnnotations(map[string]string{desiredHashAnnotation: hash}).
				WithType(corev1.SecretTypeOpaque).WithData(map[string][]byte{agent.DesiredKey: data}), opts)
			return err
		}},
	}
	for _, s := range steps {
		if err := s.apply(); err != nil {
			return false, fmt.Errorf("publishing the desired state (%s): %w", s.what, err)
		}
	}
	return true, nil
}

// unpublish deletes what publishDesired made for the Machine.
func unpublish(ctx context.Context, cs kubernetes.Interface, m *nodev1.Machine) error {
	name := linkObject(m)
	for what, del := range map[string]func() error{
		"secret": func() error { return cs.CoreV1().Secrets(LinkNamespace).Delete(ctx, name, metav1.DeleteOptions{}) },
		"lease": func() error {
			return cs.CoordinationV1().Leases(LinkNamespace).Delete(ctx, name, metav1.DeleteOptions{})
		},
		"role": func() error {
			return cs.RbacV1().Roles(LinkNamespace).Delete(ctx, agentRole(m), metav1.DeleteOptions{})
		},
		"role binding": func() error {
			return cs.RbacV1().RoleBindings(LinkNamespace).Delete(ctx, agentRole(m), metav1.DeleteOptions{})
		},
		"cluster role": func() error { return cs.RbacV1().ClusterRoles().Delete(ctx, agentRole(m), metav1.DeleteOptions{}) },
		"cluster role binding": func() error {
			return cs.RbacV1().ClusterRoleBindings().Delete(ctx, agentRole(m), metav1.DeleteOptions{})
		},
	} {
		if err := del(); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting the agent's %s: %w", what, err)
		}
	}
	return nil
}

// AgentCSRProblem says why a certificate request may not be approved as
// the Machine's agent certificate ("" when it matches): it must come from
// the Machine's node (system:node:<name>), for the kube-apiserver-client
// signer, with subject CN=kok:agent:<name>, O=kok:agents only, for client
// auth, naming no address.
func AgentCSRProblem(csr *certificatesv1.CertificateSigningRequest, m *nodev1.Machine) string {
	node := "system:node:" + m.Name
	if csr.Spec.SignerName != certificatesv1.KubeAPIServerClientSignerName {
		return "signer " + csr.Spec.SignerName + " is not " + certificatesv1.KubeAPIServerClientSignerName
	}
	if csr.Spec.Username != node {
		return fmt.Sprintf("requested by %s, not %s", csr.Spec.Username, node)
	}
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil {
		return "the request holds no PEM block"
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return "the request does not parse: " + err.Error()
	}
	if req.Subject.CommonName != agentUser(m) || !slices.Equal(req.Subject.Organization, []string{agent.AgentGroup}) {
		return fmt.Sprintf("subject %q is not CN=%s, O=%s", req.Subject.String(), agentUser(m), agent.AgentGroup)
	}
	for _, u := range csr.Spec.Usages {
		if u != certificatesv1.UsageClientAuth && u != certificatesv1.UsageDigitalSignature && u != certificatesv1.UsageKeyEncipherment {
			return fmt.Sprintf("usage %q is not for a client", u)
		}
	}
	if len(req.DNSNames) > 0 || len(req.IPAddresses) > 0 || len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return "a client certificate names no address"
	}
	return ""
}
