package local

import (
	"reflect"
	"testing"
)

func TestSplitRule(t *testing.T) {
	got := splitRule(`-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ`)
	want := []string{"-A", "POSTROUTING", "-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("splitRule = %q, want %q", got, want)
	}
}

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
}
