package local

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckPortsNamesTheTakenPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := DefaultConfig()
	c.APIServerPort = l.Addr().(*net.TCPAddr).Port
	err = c.checkPorts()
	var pe *PreflightError
	if !errors.As(err, &pe) {
		// Another listener on the fixed ports would also fail the check;
		// what matters is a clear error either way.
		t.Fatalf("want a PreflightError, got %v", err)
	}
	if !strings.Contains(err.Error(), "in use") || pe.Fix == "" {
		t.Fatalf("error should say the port is in use and how to fix it: %v", err)
	}
}

func TestLoadConfigDamaged(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte("{half a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(dir)
	if err == nil || !strings.Contains(err.Error(), "--purge") {
		t.Fatalf("a damaged config.json should tell how to start over, got %v", err)
	}
}

func TestCheckStateDirRefusesForeignDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := checkStateDir(dir); err != nil {
		t.Fatalf("empty dir: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "someone-elses-file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkStateDir(dir); err == nil {
		t.Fatal("a non-empty directory without kok state must be refused")
	}
	if err := checkStateDir(filepath.Join(dir, "missing")); err != nil {
		t.Fatalf("a missing dir is fine (kok up creates it): %v", err)
	}
}

func TestPKIIsIdempotentAndRepairsDamage(t *testing.T) {
	c := DefaultConfig()
	c.StateDir = t.TempDir()
	if err := c.ensurePKI(); err != nil {
		t.Fatal(err)
	}
	crt := filepath.Join(c.PKIDir(), "apiserver.crt")
	before, _ := os.ReadFile(crt)
	if err := c.ensurePKI(); err != nil {
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
	if err := c.ensurePKI(); err != nil {
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
	if err := c.ensurePKI(); err == nil || !strings.Contains(err.Error(), "--purge") {
		t.Fatalf("damaged CA: want an error naming the way out, got %v", err)
	}
}
