package pki

import (
	"crypto/x509"
	"net"
	"testing"
	"time"
)

func TestIssueAndVerify(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(CertSpec{
		CommonName: "kube-apiserver", Server: true,
		DNSNames: []string{"kubernetes.default.svc"}, IPs: []net.IP{net.ParseIP("10.0.0.1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "kubernetes.default.svc"}); err != nil {
		t.Fatalf("leaf does not verify against its CA: %v", err)
	}
	if !Covers(leaf.Cert, []string{"kubernetes.default.svc"}, []net.IP{net.ParseIP("10.0.0.1")}) {
		t.Fatal("Covers: want true for the SANs the cert was issued with")
	}
	if Covers(leaf.Cert, []string{"other.example"}, nil) {
		t.Fatal("Covers: want false for a name not in the cert")
	}

	keyPEM, err := leaf.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseKeyPair(leaf.CertPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Cert.Equal(leaf.Cert) {
		t.Fatal("round trip changed the certificate")
	}
}

func TestIssueRejectsBadSpecs(t *testing.T) {
	ca, err := NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Issue(CertSpec{Server: true}); err == nil {
		t.Error("want error for a missing common name")
	}
	if _, err := ca.Issue(CertSpec{CommonName: "x"}); err == nil {
		t.Error("want error for a cert without usage")
	}
}

func TestNeedsRenewal(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &x509.Certificate{NotBefore: start, NotAfter: start.Add(100 * time.Hour)}
	cases := []struct {
		at   time.Time
		want bool
	}{
		{start.Add(-time.Hour), true},
		{start.Add(10 * time.Hour), false},
		{start.Add(79 * time.Hour), false},
		{start.Add(81 * time.Hour), true},
		{start.Add(200 * time.Hour), true},
	}
	for _, tc := range cases {
		if got := NeedsRenewal(c, 0.2, tc.at); got != tc.want {
			t.Errorf("NeedsRenewal at %v = %v, want %v", tc.at, got, tc.want)
		}
	}
}

func TestKeep(t *testing.T) {
	ca, err := NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	spec := CertSpec{CommonName: "kube-apiserver", Organization: []string{"a"}, Server: true, DNSNames: []string{"api"}}
	leaf, err := ca.Issue(spec)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if !Keep(leaf.Cert, ca.Cert, spec, now) {
		t.Fatal("a fresh leaf for the same spec must be kept")
	}
	renamed := spec
	renamed.CommonName = "renamed"
	wider := spec
	wider.DNSNames = append([]string{"more"}, spec.DNSNames...)
	client := spec
	client.Client = true
	org := spec
	org.Organization = []string{"b"}
	for name, c := range map[string]struct {
		ca   *x509.Certificate
		spec CertSpec
		now  time.Time
	}{
		"other CA":         {other.Cert, spec, now},
		"renamed subject":  {ca.Cert, renamed, now},
		"other org":        {ca.Cert, org, now},
		"new SAN":          {ca.Cert, wider, now},
		"new usage":        {ca.Cert, client, now},
		"near expiry":      {ca.Cert, spec, leaf.Cert.NotAfter.Add(-time.Hour)},
		"before NotBefore": {ca.Cert, spec, leaf.Cert.NotBefore.Add(-time.Hour)},
	} {
		if Keep(leaf.Cert, c.ca, c.spec, c.now) {
			t.Errorf("%s: want reissue", name)
		}
	}
	data, err := leaf.SecretData(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	got, issued, err := ca.LeafSecret(data, ca.CertPEM(), spec, now)
	if err != nil || issued || string(got[KeyCert]) != string(data[KeyCert]) {
		t.Fatalf("LeafSecret must keep a good certificate: issued=%v err=%v", issued, err)
	}
	if _, issued, err := ca.LeafSecret(data, ca.CertPEM(), renamed, now); err != nil || !issued {
		t.Fatalf("LeafSecret must reissue a renamed certificate: issued=%v err=%v", issued, err)
	}
	if _, issued, err := ca.LeafSecret(data, other.CertPEM(), spec, now); err != nil || !issued {
		t.Fatalf("LeafSecret must reissue for a new trust bundle: issued=%v err=%v", issued, err)
	}
}
