package etcd

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"
)

func TestPlanCerts(t *testing.T) {
	n := Names{Cluster: "e", Namespace: "ns"}
	now := time.Now()
	want, changed, err := PlanCerts(n, "cluster.local", Certs{}, true, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 3 {
		t.Fatalf("a new cluster writes 3 secrets, got %v", changed)
	}
	block, _ := pem.Decode(want.Server["tls.crt"])
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("e-2.e-peer.ns.svc"); err != nil {
		t.Fatalf("server cert must cover every member's DNS name: %v", err)
	}

	again, changed, err := PlanCerts(n, "cluster.local", want, false, now)
	if err != nil || len(changed) != 0 {
		t.Fatalf("good certificates must be kept: changed=%v err=%v", changed, err)
	}
	if string(again.Client["tls.crt"]) != string(want.Client["tls.crt"]) {
		t.Fatal("client certificate changed without reason")
	}

	// Near expiry → reissued by the same CA.
	_, changed, err = PlanCerts(n, "cluster.local", want, false, now.Add(330*24*time.Hour))
	if err != nil || len(changed) != 2 {
		t.Fatalf("leaf certificates near expiry must be renewed (not the CA): changed=%v err=%v", changed, err)
	}

	// A lost CA while members exist is an error, never a silent new CA.
	broken := want
	broken.CA = nil
	if _, _, err := PlanCerts(n, "cluster.local", broken, false, now); err == nil {
		t.Fatal("want an error for a missing CA of a live cluster")
	}
}
