//go:build e2e

package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/local/proc"
)

// TestUpRefusesBadConditions: kok up explains what is wrong and how to fix
// it, exits non-zero, and leaves nothing running.
func TestUpRefusesBadConditions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the e2e tests need root")
	}
	// The checks below look for the bridge and the guard on the host: they
	// hold only when no other meta cluster runs here.
	if err := exec.Command("ip", "link", "show", "kok0").Run(); err == nil {
		t.Fatal("bridge kok0 exists before the test: another kok meta cluster runs on this host (stop it with 'kok down --state-dir DIR')")
	}
	t.Run("not root", func(t *testing.T) {
		state := t.TempDir()
		cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", kokBin(t), "up", "--state-dir", state)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("kok up as nobody succeeded:\n%s", out)
		}
		if !strings.Contains(string(out), "must run as root") {
			t.Fatalf("want a message about root, got:\n%s", out)
		}
	})
	t.Run("port taken", func(t *testing.T) {
		l, err := net.Listen("tcp", ":10259")
		if err != nil {
			t.Skipf("cannot hold port 10259 for the test: %v", err)
		}
		defer l.Close()
		state := filepath.Join(t.TempDir(), "state")
		out, err := kok(t, state, "up")
		if err == nil {
			t.Fatalf("kok up with port 10259 taken succeeded")
		}
		if !strings.Contains(out, "10259") || !strings.Contains(out, "fix:") {
			t.Fatalf("want the port and a fix named, got:\n%s", out)
		}
		if _, alive := proc.Alive(local.SupervisorPidFile(state)); alive {
			t.Fatal("a supervisor was left running")
		}
		if err := exec.Command("ip", "link", "show", "kok0").Run(); err == nil {
			t.Fatal("the bridge was created although kok up refused to start")
		}
	})
	t.Run("foreign state directory", func(t *testing.T) {
		state := t.TempDir()
		if err := os.WriteFile(filepath.Join(state, "precious.txt"), []byte("not kok's"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := kok(t, state, "up")
		if err == nil || !strings.Contains(out, "holds no kok state") {
			t.Fatalf("want a refusal naming the directory, got err=%v:\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(state, "precious.txt")); err != nil {
			t.Fatal("kok up touched a file it does not own")
		}
	})
	t.Run("another meta cluster runs", func(t *testing.T) {
		// A claim on the host by another state directory whose supervisor
		// runs (this test's process stands in for it).
		other := t.TempDir()
		if err := proc.Write(local.SupervisorPidFile(other), os.Getpid()); err != nil {
			t.Fatal(err)
		}
		def := local.DefaultConfig()
		claim := local.HostClaimFile(&def)
		if err := os.WriteFile(claim, []byte(other+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = os.Remove(claim) }()
		state := filepath.Join(t.TempDir(), "state")
		out, err := kok(t, state, "up")
		if err == nil || !strings.Contains(out, "another kok meta cluster runs on this host, from "+other) ||
			!strings.Contains(out, "kok down --state-dir "+other) {
			t.Fatalf("want a refusal naming the running meta cluster and how to stop it, got err=%v:\n%s", err, out)
		}
		if err := exec.Command("ip", "link", "show", "kok0").Run(); err == nil {
			t.Fatal("the bridge was created although kok up refused to start")
		}
		// kok down of a stopped state directory leaves the running one's
		// bridge, cgroups, guard and claim alone.
		cfg := local.DefaultConfig()
		cfg.StateDir = state
		if err := cfg.Save(); err != nil {
			t.Fatal(err)
		}
		out, err = kok(t, state, "down")
		if err != nil || !strings.Contains(out, "the meta cluster of "+other+" runs on them") {
			t.Fatalf("want kok down to leave the host to %s, got err=%v:\n%s", other, err, out)
		}
		if _, err := os.Stat(claim); err != nil {
			t.Fatalf("the running meta cluster's claim is gone: %v", err)
		}
	})
	t.Run("failure after start stops what was started", func(t *testing.T) {
		state := filepath.Join(t.TempDir(), "state")
		out, err := kok(t, state, "up", "--timeout", "2s")
		if err == nil {
			t.Fatalf("kok up with a 2s timeout succeeded:\n%s", out)
		}
		if !strings.Contains(out, "stopping what it started") {
			t.Fatalf("want kok up to say it cleans up, got:\n%s", out)
		}
		if _, alive := proc.Alive(local.SupervisorPidFile(state)); alive {
			t.Fatal("the supervisor was left running")
		}
		if cfg, err := local.LoadConfig(state); err == nil {
			if left := ourProcesses(cfg); len(left) > 0 {
				t.Fatalf("processes left running: %v", left)
			}
		}
		if err := exec.Command("ip", "link", "show", "kok0").Run(); err == nil {
			t.Fatal("the bridge was left behind")
		}
		rules, _ := exec.Command("iptables-save").Output()
		if strings.Contains(string(rules), local.GuardChain) {
			t.Fatal("the network guard was left behind")
		}
	})
}
