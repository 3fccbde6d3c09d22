package etcd

import (
	"fmt"
	"time"

	"github.com/kubeonkube/kok/internal/pki"
)

// Certs are the three Secrets a cluster needs.
type Certs struct {
	CA, Server, Client pki.SecretData
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
		want.CA = pki.SecretData{"ca.crt": ca.CertPEM(), "ca.key": key}
		changed = append(changed, n.CASecret())
	} else {
		want.CA = have.CA
	}
	leaf := func(name string, cur pki.SecretData, spec pki.CertSpec) (pki.SecretData, error) {
		data, issued, err := ca.LeafSecret(cur, want.CA[pki.KeyCA], spec, now)
		if issued {
			changed = append(changed, name)
		}
		return data, err
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
