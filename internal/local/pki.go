package local

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/kubeonkube/kok/internal/kubeconfig"
	"github.com/kubeonkube/kok/internal/pki"
)

// ensurePKI creates the meta cluster's CAs, certificates and kubeconfigs,
// keeping whatever is present and still good. It is idempotent.
func ensurePKI(c *Config) error {
	dir := c.PKIDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := ensureCA(dir, "ca", "kok-meta-ca")
	if err != nil {
		return err
	}
	etcdCA, err := ensureCA(dir, "etcd-ca", "kok-meta-etcd-ca")
	if err != nil {
		return err
	}
	frontCA, err := ensureCA(dir, "front-proxy-ca", "kok-meta-front-proxy-ca")
	if err != nil {
		return err
	}
	nodeIP := c.NodeIP()
	loop := net.ParseIP("127.0.0.1")
	leaves := []struct {
		ca   *pki.KeyPair
		name string
		spec pki.CertSpec
	}{
		{ca, "apiserver", pki.CertSpec{CommonName: "kube-apiserver", Server: true,
			DNSNames: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
				"kubernetes.default.svc." + c.DNSDomain, "localhost", c.NodeName},
			IPs: []net.IP{loop, nodeIP, c.APIServiceIP()}}},
		{ca, "apiserver-kubelet-client", pki.CertSpec{CommonName: "kube-apiserver-kubelet-client",
			Organization: []string{"system:masters"}, Client: true}},
		{ca, "kubelet", pki.CertSpec{CommonName: c.NodeName, Server: true,
			DNSNames: []string{c.NodeName, "localhost"}, IPs: []net.IP{loop, nodeIP}}},
		{etcdCA, "etcd-server", pki.CertSpec{CommonName: "etcd", Server: true, Client: true,
			DNSNames: []string{"localhost"}, IPs: []net.IP{loop}}},
		{etcdCA, "apiserver-etcd-client", pki.CertSpec{CommonName: "kube-apiserver-etcd-client", Client: true}},
		{frontCA, "front-proxy-client", pki.CertSpec{CommonName: "front-proxy-client", Client: true}},
	}
	for _, l := range leaves {
		if _, err := ensureLeaf(dir, l.name, l.ca, l.spec); err != nil {
			return err
		}
	}
	if err := ensureServiceAccountKey(dir); err != nil {
		return err
	}

	// Kubeconfigs: one client identity each.
	users := []struct {
		file string
		spec pki.CertSpec
	}{
		{"admin.conf", pki.CertSpec{CommonName: "kok-admin", Organization: []string{"system:masters"}, Client: true}},
		{"controller-manager.conf", pki.CertSpec{CommonName: "system:kube-controller-manager", Client: true}},
		{"scheduler.conf", pki.CertSpec{CommonName: "system:kube-scheduler", Client: true}},
		{"kubelet.conf", pki.CertSpec{CommonName: "system:node:" + c.NodeName, Organization: []string{"system:nodes"}, Client: true}},
		{"kube-proxy.conf", pki.CertSpec{CommonName: "system:kube-proxy", Client: true}},
	}
	for _, u := range users {
		kp, err := ensureLeaf(dir, u.file[:len(u.file)-len(".conf")]+"-client", ca, u.spec)
		if err != nil {
			return err
		}
		key, err := kp.KeyPEM()
		if err != nil {
			return err
		}
		data, err := kubeconfig.Build(kubeconfig.Spec{ClusterName: "kok-meta", UserName: u.spec.CommonName,
			Server: c.APIServerURL(), CA: ca.CertPEM(), ClientCert: kp.CertPEM(), ClientKey: key})
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(c.ConfDir(), u.file), data, 0o600); err != nil {
			return err
		}
	}
	admin, err := os.ReadFile(filepath.Join(c.ConfDir(), "admin.conf"))
	if err != nil {
		return err
	}
	return writeFile(c.Kubeconfig(), admin, 0o600)
}

func ensureCA(dir, name, cn string) (*pki.KeyPair, error) {
	if kp, err := loadKeyPair(dir, name); err == nil {
		if time.Until(kp.Cert.NotAfter) > 30*24*time.Hour {
			return kp, nil
		}
		return nil, fmt.Errorf("CA %s expires %s: rotate it (kok down --purge recreates the meta cluster)", name, kp.Cert.NotAfter)
	} else if !os.IsNotExist(err) {
		return nil, fmt.Errorf("reading %s: %w (remove the state directory with 'kok down --purge' to start over)", filepath.Join(dir, name+".crt"), err)
	}
	kp, err := pki.NewCA(cn)
	if err != nil {
		return nil, err
	}
	return kp, saveKeyPair(dir, name, kp)
}

// ensureLeaf keeps an existing certificate pki.Keep allows; otherwise it
// issues a new one.
func ensureLeaf(dir, name string, ca *pki.KeyPair, spec pki.CertSpec) (*pki.KeyPair, error) {
	if kp, err := loadKeyPair(dir, name); err == nil && pki.Keep(kp.Cert, ca.Cert, spec, time.Now()) {
		return kp, nil
	}
	kp, err := ca.Issue(spec)
	if err != nil {
		return nil, err
	}
	return kp, saveKeyPair(dir, name, kp)
}

func ensureServiceAccountKey(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "sa.key")); err == nil {
		return nil
	}
	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	kp := &pki.KeyPair{Key: key}
	keyPEM, err := kp.KeyPEM()
	if err != nil {
		return err
	}
	pub, err := pki.PublicKeyPEM(key)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "sa.pub"), pub, 0o644); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, "sa.key"), keyPEM, 0o600)
}

func loadKeyPair(dir, name string) (*pki.KeyPair, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, name+".crt"))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, name+".key"))
	if err != nil {
		return nil, err
	}
	return pki.ParseKeyPair(certPEM, keyPEM)
}

func saveKeyPair(dir, name string, kp *pki.KeyPair) error {
	key, err := kp.KeyPEM()
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, name+".key"), key, 0o600); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, name+".crt"), kp.CertPEM(), 0o644)
}
