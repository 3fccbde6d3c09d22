package local

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubeonkube/kok/internal/local/proc"
)

// A second meta cluster is refused while the first one's supervisor runs;
// a claim whose supervisor is gone (a crash) frees the host, and down of
// another state leaves a running holder's claim in place.
func TestHostClaim(t *testing.T) {
	tmp := t.TempDir()
	config := func(name string) *Config {
		c := DefaultConfig()
		c.StateDir, c.RunDir = filepath.Join(tmp, name), filepath.Join(tmp, "run", "kok")
		return &c
	}
	a, b := config("a"), config("b")
	if err := os.MkdirAll(filepath.Dir(a.RunDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkHostFree(b); err != nil {
		t.Fatalf("no claim yet: %v", err)
	}
	if err := claimHost(a); err != nil {
		t.Fatal(err)
	}
	if err := checkHostFree(b); err != nil {
		t.Fatalf("a's supervisor does not run, so b may start: %v", err)
	}
	// a's supervisor runs (this test's process stands in for it).
	if err := proc.Write(SupervisorPidFile(a.StateDir), os.Getpid()); err != nil {
		t.Fatal(err)
	}
	err := checkHostFree(b)
	var pe *PreflightError
	if !errors.As(err, &pe) || !strings.Contains(pe.Problem, a.StateDir) || !strings.Contains(pe.Fix, "kok down --state-dir "+a.StateDir) {
		t.Fatalf("b starting beside a running a: %v", err)
	}
	if err := checkHostFree(a); err != nil {
		t.Fatalf("a itself may start again: %v", err)
	}
	releaseHost(b)
	if _, err := os.Stat(HostClaimFile(a)); err != nil {
		t.Fatalf("b's down removed a's claim: %v", err)
	}
	releaseHost(a)
	if _, err := os.Stat(HostClaimFile(a)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a's down kept its claim: %v", err)
	}
}
