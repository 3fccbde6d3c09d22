package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const env = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"

func TestParseLease(t *testing.T) {
	l, err := parseLease([]byte(env))
	if err != nil {
		t.Fatal(err)
	}
	if l.Network.String() != "10.244.0.0/16" || l.Subnet.String() != "10.244.3.0/24" || l.MTU != 1450 || !l.IPMasq {
		t.Errorf("lease %+v", l)
	}
	for _, bad := range []string{"", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=x\nFLANNEL_MTU=1450",
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=0"} {
		if _, err := parseLease([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestConflist(t *testing.T) {
	l, _ := parseLease([]byte(env))
	b, err := conflist(l)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Plugins []struct {
			Type   string
			IPMasq bool `json:"ipMasq"`
			MTU    int
			IPAM   struct {
				Ranges [][]struct{ Subnet string }
			}
		}
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	br := c.Plugins[0]
	if br.Type != "bridge" || br.IPMasq || br.MTU != 1450 || br.IPAM.Ranges[0][0].Subnet != "10.244.3.0/24" || c.Plugins[1].Type != "portmap" {
		t.Errorf("conflist %s", b)
	}
}

func TestSync(t *testing.T) {
	dir := t.TempDir()
	lease, conf := filepath.Join(dir, "subnet.env"), filepath.Join(dir, "net.d", "10-flannel.conflist")
	if _, err := sync(lease, conf); err == nil || !strings.Contains(err.Error(), "no subnet lease") {
		t.Fatalf("without a lease: %v", err)
	}
	if err := os.WriteFile(lease, []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false} {
		if wrote, err := sync(lease, conf); err != nil || wrote != want {
			t.Fatalf("pass %d: wrote %v (%v), want %v", i, wrote, err, want)
		}
	}
	if err := os.WriteFile(conf, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if wrote, err := sync(lease, conf); err != nil || !wrote {
		t.Fatalf("an edited file is not written again: %v %v", wrote, err)
	}
}
