package local

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGuardCoversEveryRange(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.ServiceCIDR = "192.168.0.0/16"
	if err := c.Validate(); err == nil {
		t.Fatal("a service range outside the guarded range must be refused")
	}
}

func TestAddresses(t *testing.T) {
	c := DefaultConfig()
	if got := c.NodeIP().String(); got != "10.200.0.1" {
		t.Errorf("NodeIP = %s", got)
	}
	if got := c.APIServiceIP().String(); got != "10.201.0.1" {
		t.Errorf("APIServiceIP = %s", got)
	}
	if got := c.DNSServiceIP().String(); got != "10.201.0.10" {
		t.Errorf("DNSServiceIP = %s", got)
	}
	if got := c.RegistryAddress(); got != "10.200.0.1:5000" {
		t.Errorf("RegistryAddress = %s", got)
	}
	if got := c.RegistryDir(); got != "/var/lib/kok/registry" {
		t.Errorf("RegistryDir = %s", got)
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
