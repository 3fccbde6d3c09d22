//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kubeonkube/kok/internal/local"
)

// shared is one meta cluster that the operator tests (operator_*_test.go,
// run after the local_* tests by file order) share (bringing a
// cluster up per test would cost a minute each on two cores). TestPlatform
// keeps its own, because it crashes and tears its cluster down.
var shared struct {
	once     sync.Once
	stateDir string
	cfg      *local.Config
	err      error
}

func sharedCluster(t *testing.T) *local.Config {
	t.Helper()
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("/var/lib", "kok-e2e-shared-")
		if err != nil {
			shared.err = err
			return
		}
		shared.stateDir = dir
		// The tests make their own business clusters.
		if _, err := kok(t, dir, "up", "--demo=false"); err != nil {
			shared.err = fmt.Errorf("kok up: %w", err)
			return
		}
		shared.cfg, shared.err = local.LoadConfig(dir)
	})
	if shared.err != nil {
		t.Fatalf("shared meta cluster: %v", shared.err)
	}
	return shared.cfg
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.stateDir != "" {
		args := []string{"down", "--state-dir", shared.stateDir}
		if code == 0 {
			args = append(args, "--purge")
		}
		cmd := exec.Command(filepath.Join(repoRoot(), "bin", "kok"), args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		_ = cmd.Run()
	}
	os.Exit(code)
}
