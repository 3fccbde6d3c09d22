//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/keyutil"
)

// businessRESTConfig is a cluster's admin REST config, read the way a user
// does, with `kok get kubeconfig`.
func businessRESTConfig(t *testing.T, stateDir, name string) *rest.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	mustKok(t, stateDir, "get", "kubeconfig", name, "-o", path)
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// joinWithBootstrapToken does what a joining kubelet does (TLS bootstrap)
// against a business cluster: with a bootstrap token it finds cluster-info
// signed for its token, asks for a node client certificate, gets it
// approved and signed by the cluster's controller-manager, and registers
// its Node with that certificate.
func joinWithBootstrapToken(t *testing.T, admin kubernetes.Interface, adminCfg *rest.Config) {
	t.Helper()
	ctx := context.Background()
	const id, secret, node = "kok0e2", "0123456789abcdef", "e2e-worker"
	tok := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-" + id, Namespace: metav1.NamespaceSystem},
		Type: corev1.SecretTypeBootstrapToken,
		StringData: map[string]string{"token-id": id, "token-secret": secret, "usage-bootstrap-authentication": "true",
			"usage-bootstrap-signing": "true", "auth-extra-groups": "system:bootstrappers:kok"}}
	if _, err := admin.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, tok, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Discovery: anyone may read cluster-info; the bootstrap signer signs
	// it for each token, so a joining node can trust what it read.
	anon := kubernetes.NewForConfigOrDie(&rest.Config{Host: adminCfg.Host, TLSClientConfig: rest.TLSClientConfig{CAData: adminCfg.CAData}, Timeout: 10 * time.Second})
	eventually(t, time.Minute, "cluster-info signed for the token", func() error {
		cm, err := anon.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, "cluster-info", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cm.Data["jws-kubeconfig-"+id] == "" {
			return fmt.Errorf("no jws-kubeconfig-%s in cluster-info yet", id)
		}
		return nil
	})

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}}}, key)
	if err != nil {
		t.Fatal(err)
	}
	asToken := kubernetes.NewForConfigOrDie(&rest.Config{Host: adminCfg.Host, BearerToken: id + "." + secret,
		TLSClientConfig: rest.TLSClientConfig{CAData: adminCfg.CAData}, Timeout: 10 * time.Second})
	csr, err := asToken.CertificatesV1().CertificateSigningRequests().Create(ctx, &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "node-csr-"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName: certificatesv1.KubeAPIServerClientKubeletSignerName,
			Usages:     []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
		}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("CSR as the bootstrap token: %v", err)
	}
	var issued []byte
	eventually(t, time.Minute, "CSR approved and signed", func() error {
		got, err := admin.CertificatesV1().CertificateSigningRequests().Get(ctx, csr.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(got.Status.Certificate) == 0 {
			return fmt.Errorf("conditions %v, no certificate yet", got.Status.Conditions)
		}
		issued = got.Status.Certificate
		return nil
	})
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	asNode := kubernetes.NewForConfigOrDie(&rest.Config{Host: adminCfg.Host,
		TLSClientConfig: rest.TLSClientConfig{CAData: adminCfg.CAData, CertData: issued, KeyData: keyPEM}, Timeout: 10 * time.Second})
	if _, err := asNode.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("registering Node %s with the issued certificate: %v", node, err)
	}
	t.Logf("joined: bootstrap token %s → CSR %s approved → Node %s registered as system:node:%s", id, csr.Name, node, node)
	_ = admin.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{})
}
