package cluster

import (
	"slices"
	"testing"
	"time"

	"github.com/kubeonkube/kok/internal/pki"
)

func testInput(t *testing.T) PKIInput {
	t.Helper()
	etcdCA, err := pki.NewCA("etcd-ca")
	if err != nil {
		t.Fatal(err)
	}
	return PKIInput{Names: Names{Cluster: "c1", Namespace: "ns"}, MetaDomain: "cluster.local", DNSDomain: "biz.local",
		ServiceCIDR: "10.96.0.0/12", ServiceIP: "10.201.0.7", Port: 6443, ExtraSANs: []string{"api.example.com", "192.0.2.10"}, EtcdCA: etcdCA}
}

func TestPlanPKIIsStable(t *testing.T) {
	in := testInput(t)
	now := time.Now()
	first, changed, err := PlanPKI(in, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != len(in.Names.secretNames()) {
		t.Fatalf("a new cluster issues every Secret, got %v", changed)
	}
	second, changed, err := PlanPKI(in, first, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 0 {
		t.Fatalf("nothing to change an hour later, got %v", changed)
	}
	if HashSecrets(first[in.Names.APIServerSecret()].Data) != HashSecrets(second[in.Names.APIServerSecret()].Data) {
		t.Fatal("kept Secret differs")
	}
	kp, err := pki.ParseKeyPair(first[in.Names.APIServerSecret()].Data[pki.KeyCert], first[in.Names.APIServerSecret()].Data[pki.KeyKey])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"10.201.0.7", "10.96.0.1", "192.0.2.10", "api.example.com", "kubernetes.default.svc.biz.local",
		"c1-apiserver.ns.svc", "c1-apiserver.ns.svc.cluster.local"} {
		if err := kp.Cert.VerifyHostname(name); err != nil {
			t.Errorf("serving certificate does not cover %s: %v", name, err)
		}
	}
}

func TestPlanPKIReissues(t *testing.T) {
	in := testInput(t)
	now := time.Now()
	first, _, err := PlanPKI(in, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	n := in.Names
	cas := []string{n.CASecret(), n.FrontProxyCASecret(), n.ServiceAccountSecret()}

	// Near expiry: leaves are renewed, CAs and the SA key stay.
	_, changed, err := PlanPKI(in, first, now.Add(330*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cas {
		if slices.Contains(changed, s) {
			t.Errorf("%s must not change on renewal", s)
		}
	}
	if !slices.Contains(changed, n.APIServerSecret()) || !slices.Contains(changed, n.AdminKubeconfig()) {
		t.Errorf("renewal must reissue leaves, got %v", changed)
	}

	// A rotation request reissues every leaf and kubeconfig.
	in.Rotation = "2026-11-24"
	_, changed, err = PlanPKI(in, first, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != len(n.secretNames())-len(cas) {
		t.Errorf("rotation reissues %d leaves, got %v", len(n.secretNames())-len(cas), changed)
	}

	// A new Service address changes the serving certs (the apiserver's and
	// the proxy server's) and the admin kubeconfig only.
	in.Rotation = ""
	in.ServiceIP = "10.201.0.99"
	_, changed, err = PlanPKI(in, first, now)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(changed)
	if want := []string{n.AdminKubeconfig(), n.APIServerSecret(), n.KonnectivityServerSecret()}; !slices.Equal(changed, want) {
		t.Errorf("new address: changed %v, want %v", changed, want)
	}

	// A lost CA is made anew and everything it signed follows.
	damaged := map[string]Secret{}
	for k, v := range first {
		damaged[k] = v
	}
	delete(damaged, n.CASecret())
	_, changed, err = PlanPKI(in, damaged, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{n.CASecret(), n.APIServerSecret(), n.KubeletClientSecret(), n.SchedulerKubeconfig()} {
		if !slices.Contains(changed, s) {
			t.Errorf("after a lost CA %s must be reissued (changed %v)", s, changed)
		}
	}
	if slices.Contains(changed, n.FrontProxyClientSecret()) {
		t.Error("the front-proxy client does not depend on the cluster CA")
	}
}
