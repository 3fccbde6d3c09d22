package machine

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"slices"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
)

// ServingCSRProblem says why a kubelet serving certificate request may
// not be approved for a Machine ("" when it matches): it must come from
// the Machine's node (system:node:<name>), ask for that subject only
// (CN system:node:<name>, O system:nodes), for server auth, with no
// address but the Machine's and no name but the node's.
func ServingCSRProblem(csr *certificatesv1.CertificateSigningRequest, m *nodev1.Machine) string {
	node := "system:node:" + m.Name
	if csr.Spec.SignerName != certificatesv1.KubeletServingSignerName {
		return "signer " + csr.Spec.SignerName + " is not " + certificatesv1.KubeletServingSignerName
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
	if req.Subject.CommonName != node || !slices.Equal(req.Subject.Organization, []string{"system:nodes"}) {
		return fmt.Sprintf("subject %q is not CN=%s, O=system:nodes", req.Subject.String(), node)
	}
	for _, u := range csr.Spec.Usages {
		if u != certificatesv1.UsageServerAuth && u != certificatesv1.UsageDigitalSignature && u != certificatesv1.UsageKeyEncipherment {
			return fmt.Sprintf("usage %q is not for serving", u)
		}
	}
	if !slices.Contains(csr.Spec.Usages, certificatesv1.UsageServerAuth) {
		return "no server auth usage"
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return "the request names e-mail addresses or URIs"
	}
	want := net.ParseIP(m.Spec.Address)
	for _, ip := range req.IPAddresses {
		if !ip.Equal(want) {
			return fmt.Sprintf("address %s is not the Machine's (%s)", ip, m.Spec.Address)
		}
	}
	for _, dns := range req.DNSNames {
		if dns != m.Name && (m.Status.Facts == nil || dns != m.Status.Facts.Hostname) {
			return fmt.Sprintf("name %s is not the node's", dns)
		}
	}
	if len(req.IPAddresses) == 0 && len(req.DNSNames) == 0 {
		return "the request names no address"
	}
	return ""
}

// approveCSRs approves the pending certificate requests of the Machine's
// node that match it: kubelet serving certificates (ServingCSRProblem) and
// the agent's client certificate (AgentCSRProblem). It returns the
// problems of those that do not match: they stay pending, as nothing else
// approves them.
func approveCSRs(ctx context.Context, cs kubernetes.Interface, m *nodev1.Machine) ([]string, error) {
	list, err := cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing certificate signing requests: %w", err)
	}
	var refused []string
	for i := range list.Items {
		csr := &list.Items[i]
		if csr.Spec.Username != "system:node:"+m.Name || decided(csr) {
			continue
		}
		var problem, reason, msg string
		switch csr.Spec.SignerName {
		case certificatesv1.KubeletServingSignerName:
			problem, reason, msg = ServingCSRProblem(csr, m), "KokMachineMatches", "node name and addresses match Machine %s/%s"
		case certificatesv1.KubeAPIServerClientSignerName:
			problem, reason, msg = AgentCSRProblem(csr, m), "KokAgentOfMachine", "the node agent of Machine %s/%s"
		default:
			continue
		}
		if problem != "" {
			refused = append(refused, csr.Name+": "+problem)
			continue
		}
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: reason,
			Message: fmt.Sprintf(msg, m.Namespace, m.Name)})
		if _, err := cs.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
			return refused, fmt.Errorf("approving %s: %w", csr.Name, err)
		}
	}
	return refused, nil
}

func decided(csr *certificatesv1.CertificateSigningRequest) bool {
	for _, c := range csr.Status.Conditions {
		if c.Type == certificatesv1.CertificateApproved || c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed {
			return true
		}
	}
	return false
}
