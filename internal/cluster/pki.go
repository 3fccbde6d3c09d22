package cluster

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	netutils "k8s.io/utils/net"

	"github.com/kubeonkube/kok/internal/kubeconfig"
	"github.com/kubeonkube/kok/internal/pki"
)

// Secret keys.
const (
	KeySAPrivate  = "sa.key"
	KeySAPublic   = "sa.pub"
	KeyKubeconfig = "value"
)

// Secret is a Secret's data and the rotation request it was issued for.
type Secret struct {
	Data     pki.SecretData
	Rotation string
}

// PKIInput is what the certificates must say.
type PKIInput struct {
	Names Names
	// MetaDomain is the meta cluster's DNS domain, DNSDomain the business
	// cluster's.
	MetaDomain, DNSDomain string
	ServiceCIDR           string
	// ServiceIP is the apiserver Service's cluster IP once known.
	ServiceIP string
	Port      int32
	ExtraSANs []string
	// EtcdCA signs the apiserver's etcd client certificate.
	EtcdCA *pki.KeyPair
	// Rotation is the value of the rotate-certificates annotation.
	Rotation string
}

// InternalServer is the URL controller-manager and scheduler use.
func (in PKIInput) InternalServer() string {
	return fmt.Sprintf("https://%s:%d", in.Names.ServiceHost(), in.Port)
}

// LocalServer is the URL of the apiserver in the same pod.
func (in PKIInput) LocalServer() string { return fmt.Sprintf("https://127.0.0.1:%d", APIServerPort) }

// KonnectivityUser is who the proxy servers are to the apiservers; the
// konnectivity addon lets that user review tokens.
const KonnectivityUser = "system:konnectivity-server"

// AdminServer is the URL in the admin kubeconfig: the Service address,
// reachable from anywhere in the meta cluster and from its nodes.
func (in PKIInput) AdminServer() string {
	if in.ServiceIP == "" {
		return in.InternalServer()
	}
	return "https://" + net.JoinHostPort(in.ServiceIP, fmt.Sprint(in.Port))
}

// ServingSANs are the names and addresses the apiserver answers to.
func (in PKIInput) ServingSANs() ([]string, []net.IP, error) {
	svc := in.Names.Service()
	dns := []string{
		svc, svc + "." + in.Names.Namespace, in.Names.ServiceHost(), in.Names.ServiceHost() + "." + in.MetaDomain,
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + in.DNSDomain,
		"localhost",
	}
	ips := []net.IP{net.ParseIP("127.0.0.1")}
	_, cidr, err := netutils.ParseCIDRSloppy(in.ServiceCIDR)
	if err != nil {
		return nil, nil, fmt.Errorf("serviceCIDR %q: %w", in.ServiceCIDR, err)
	}
	first, err := netutils.GetIndexedIP(cidr, 1)
	if err != nil {
		return nil, nil, err
	}
	ips = append(ips, first)
	if ip := net.ParseIP(in.ServiceIP); ip != nil {
		ips = append(ips, ip)
	}
	for _, s := range in.ExtraSANs {
		if ip := net.ParseIP(s); ip != nil {
			ips = append(ips, ip)
		} else if s = strings.TrimSpace(s); s != "" {
			dns = append(dns, s)
		}
	}
	return dns, ips, nil
}

// PlanPKI returns the content every certificate and kubeconfig Secret must
// have. Good existing Secrets come back unchanged; changed lists the ones
// that are new or differ. A missing CA is made anew, which reissues every
// leaf signed by it.
func PlanPKI(in PKIInput, have map[string]Secret, now time.Time) (map[string]Secret, []string, error) {
	n := in.Names
	want := map[string]Secret{}
	var changed []string
	set := func(name string, s Secret) {
		want[name] = s
		changed = append(changed, name)
	}

	ca := func(name, cn string) (*pki.KeyPair, error) {
		cur := have[name]
		if kp, err := pki.FromSecret(cur.Data); err == nil && kp.Cert.IsCA {
			want[name] = cur
			return kp, nil
		}
		kp, err := pki.NewCA(cn)
		if err != nil {
			return nil, err
		}
		key, err := kp.KeyPEM()
		if err != nil {
			return nil, err
		}
		// ca.crt is the trust bundle; during a two-phase CA rotation it
		// holds the old and the new CA while tls.crt/tls.key sign.
		set(name, Secret{Data: pki.SecretData{pki.KeyCert: kp.CertPEM(), pki.KeyKey: key, pki.KeyCA: kp.CertPEM()}})
		return kp, nil
	}
	clusterCA, err := ca(n.CASecret(), n.Cluster+"-ca")
	if err != nil {
		return nil, nil, err
	}
	proxyCA, err := ca(n.FrontProxyCASecret(), n.Cluster+"-front-proxy-ca")
	if err != nil {
		return nil, nil, err
	}

	// The service-account key pair signs tokens: kept unless unreadable.
	if cur := have[n.ServiceAccountSecret()]; validSAKey(cur.Data) {
		want[n.ServiceAccountSecret()] = cur
	} else {
		key, err := pki.NewKey()
		if err != nil {
			return nil, nil, err
		}
		pub, err := pki.PublicKeyPEM(key)
		if err != nil {
			return nil, nil, err
		}
		kp := &pki.KeyPair{Key: key}
		priv, err := kp.KeyPEM()
		if err != nil {
			return nil, nil, err
		}
		set(n.ServiceAccountSecret(), Secret{Data: pki.SecretData{KeySAPrivate: priv, KeySAPublic: pub}})
	}

	// Leaves follow pki.Keep; a rotation request reissues them too.
	leaf := func(name string, signer *pki.KeyPair, spec pki.CertSpec) error {
		cur := have[name]
		if cur.Rotation != in.Rotation {
			cur.Data = nil
		}
		data, issued, err := signer.LeafSecret(cur.Data, signer.CertPEM(), spec, now)
		if err != nil {
			return err
		}
		if issued {
			set(name, Secret{Data: data, Rotation: in.Rotation})
		} else {
			want[name] = cur
		}
		return nil
	}
	dns, ips, err := in.ServingSANs()
	if err != nil {
		return nil, nil, err
	}
	if err := leaf(n.APIServerSecret(), clusterCA, pki.CertSpec{CommonName: "kube-apiserver", Server: true, DNSNames: dns, IPs: ips}); err != nil {
		return nil, nil, err
	}
	// The proxy servers beside the apiservers answer the agents at the
	// apiserver's own names.
	if err := leaf(n.KonnectivityServerSecret(), clusterCA, pki.CertSpec{CommonName: "konnectivity-server", Server: true, DNSNames: dns, IPs: ips}); err != nil {
		return nil, nil, err
	}
	if err := leaf(n.KubeletClientSecret(), clusterCA, pki.CertSpec{CommonName: "kube-apiserver-kubelet-client",
		Organization: []string{"system:masters"}, Client: true}); err != nil {
		return nil, nil, err
	}
	if err := leaf(n.FrontProxyClientSecret(), proxyCA, pki.CertSpec{CommonName: "front-proxy-client", Client: true}); err != nil {
		return nil, nil, err
	}
	if in.EtcdCA == nil {
		return nil, nil, fmt.Errorf("the etcd CA is not available yet")
	}
	if err := leaf(n.EtcdClientSecret(), in.EtcdCA, pki.CertSpec{CommonName: EtcdUser(n), Client: true}); err != nil {
		return nil, nil, err
	}

	kubeconfigs := []struct {
		secret, user, cn, server string
		org                      []string
	}{
		{n.ControllerManagerKubeconfig(), "kube-controller-manager", "system:kube-controller-manager", in.InternalServer(), nil},
		{n.SchedulerKubeconfig(), "kube-scheduler", "system:kube-scheduler", in.InternalServer(), nil},
		{n.AdminKubeconfig(), "kok-admin", "kok-admin", in.AdminServer(), []string{"system:masters"}},
		// The proxy server reaches the apiserver in its own pod.
		{n.KonnectivityKubeconfig(), "konnectivity-server", KonnectivityUser, in.LocalServer(), nil},
	}
	for _, k := range kubeconfigs {
		cur := have[k.secret]
		spec := pki.CertSpec{CommonName: k.cn, Organization: k.org, Client: true}
		if cur.Rotation == in.Rotation && validKubeconfig(cur.Data[KeyKubeconfig], k.server, clusterCA, spec, now) {
			want[k.secret] = cur
			continue
		}
		kp, err := clusterCA.Issue(spec)
		if err != nil {
			return nil, nil, err
		}
		key, err := kp.KeyPEM()
		if err != nil {
			return nil, nil, err
		}
		cfg, err := kubeconfig.Build(kubeconfig.Spec{ClusterName: n.Cluster, UserName: k.user, Server: k.server,
			CA: clusterCA.CertPEM(), ClientCert: kp.CertPEM(), ClientKey: key})
		if err != nil {
			return nil, nil, err
		}
		set(k.secret, Secret{Data: pki.SecretData{KeyKubeconfig: cfg}, Rotation: in.Rotation})
	}
	return want, changed, nil
}

// EtcdUser is the common name of the apiserver's etcd client certificate
// (the etcd user a shared cluster confines to the cluster's prefix).
func EtcdUser(n Names) string { return "kube-apiserver." + n.Namespace + "." + n.Cluster }

func validSAKey(d pki.SecretData) bool {
	kp, err := pki.ParseKey(d[KeySAPrivate])
	if err != nil {
		return false
	}
	pub, err := pki.PublicKeyPEM(kp)
	return err == nil && bytes.Equal(pub, d[KeySAPublic])
}

// validKubeconfig reports whether data is a kubeconfig for server whose
// credentials pki.Keep allows for spec.
func validKubeconfig(data []byte, server string, ca *pki.KeyPair, spec pki.CertSpec, now time.Time) bool {
	cfg, err := clientcmd.Load(data)
	if err != nil || cfg.Contexts[cfg.CurrentContext] == nil {
		return false
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	cl, user := cfg.Clusters[ctx.Cluster], cfg.AuthInfos[ctx.AuthInfo]
	if cl == nil || user == nil || cl.Server != server || !bytes.Equal(cl.CertificateAuthorityData, ca.CertPEM()) {
		return false
	}
	kp, err := pki.ParseKeyPair(user.ClientCertificateData, user.ClientKeyData)
	if err != nil {
		return false
	}
	return pki.Keep(kp.Cert, ca.Cert, spec, now)
}
