package local

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPKIIsIdempotentAndRepairsDamage(t *testing.T) {
	c := DefaultConfig()
	c.StateDir = t.TempDir()
	if err := ensurePKI(&c); err != nil {
		t.Fatal(err)
	}
	crt := filepath.Join(c.PKIDir(), "apiserver.crt")
	before, _ := os.ReadFile(crt)
	if err := ensurePKI(&c); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(crt)
	if string(before) != string(after) {
		t.Fatal("a second run must keep good certificates")
	}
	// A half-written leaf is reissued, signed by the same CA.
	if err := os.WriteFile(crt, before[:len(before)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ensurePKI(&c); err != nil {
		t.Fatalf("damaged leaf: %v", err)
	}
	ca, err := loadKeyPair(c.PKIDir(), "ca")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := loadKeyPair(c.PKIDir(), "apiserver")
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.Cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("reissued leaf not signed by the kept CA: %v", err)
	}
	// A damaged CA is not silently replaced: that would orphan every cert.
	if err := os.WriteFile(filepath.Join(c.PKIDir(), "ca.crt"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ensurePKI(&c); err == nil || !strings.Contains(err.Error(), "--purge") {
		t.Fatalf("damaged CA: want an error naming the way out, got %v", err)
	}
}
