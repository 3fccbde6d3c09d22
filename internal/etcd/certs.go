package etcd

import (
	"fmt"
	"time"

	"github.com/kubeonkube/kok/internal/pki"
)

// renewFraction: a certificate with less than this share of its life left
// is reissued (members pick the new files up from their projected volume
// on restart; the client certificate is read per connection).
const renewFraction = 0.2

// SecretData is the content of one Secret, by key.
type SecretData map[string][]byte

// Certs are the three Secrets a cluster needs.
type Certs struct {
	CA, Server, Client SecretData
}

// PlanCerts returns the Secrets to write: existing ones that are still good
// are returned unchanged (changed reports which differ). A missing or
// unreadable CA is made anew only when no member certificate depends on it
// (create is true): replacing a live CA would cut every member off.
func PlanCerts(n Names, domain string, have Certs, create bool, now time.Time) (want Certs, changed []string, err error) {
	ca, caErr := pki.ParseKeyPair(have.CA["ca.crt"], have.CA["ca.key"])
	if caErr != nil {
		if !create {
			return have, nil, fmt.Errorf("CA secret %s is missing or damaged and members exist: restore it (or recreate the cluster from a backup)", n.CASecret())
		}
		if ca, err = pki.NewCA(n.Cluster + "-etcd-ca"); err != nil {
			return have, nil, err
		}
		key, err := ca.KeyPEM()
		if err != nil {
			return have, nil, err
		}
		want.CA = SecretData{"ca.crt": ca.CertPEM(), "ca.key": key}
		changed = append(changed, n.CASecret())
	} else {
		want.CA = have.CA
	}
	leaf := func(name string, cur SecretData, spec pki.CertSpec) (SecretData, error) {
		if kp, err := pki.ParseKeyPair(cur["tls.crt"], cur["tls.key"]); err == nil &&
			kp.Cert.CheckSignatureFrom(ca.Cert) == nil && !pki.NeedsRenewal(kp.Cert, renewFraction, now) &&
			pki.Covers(kp.Cert, spec.DNSNames, spec.IPs) && string(cur["ca.crt"]) == string(want.CA["ca.crt"]) {
			return cur, nil
		}
		kp, err := ca.Issue(spec)
		if err != nil {
			return nil, err
		}
		key, err := kp.KeyPEM()
		if err != nil {
			return nil, err
		}
		changed = append(changed, name)
		return SecretData{"tls.crt": kp.CertPEM(), "tls.key": key, "ca.crt": want.CA["ca.crt"]}, nil
	}
	if want.Server, err = leaf(n.ServerSecret(), have.Server, pki.CertSpec{CommonName: MemberCN(n),
		Server: true, Client: true, DNSNames: n.ServerSANs(domain), IPs: nil}); err != nil {
		return have, nil, err
	}
	if want.Client, err = leaf(n.ClientSecret(), have.Client, pki.CertSpec{CommonName: "root", Client: true}); err != nil {
		return have, nil, err
	}
	return want, changed, nil
}
