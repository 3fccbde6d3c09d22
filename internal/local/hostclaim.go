package local

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kubeonkube/kok/internal/local/proc"
)

// One meta cluster per host: its bridge, node address, ports, pod cgroup
// root, run directory and network guard are the host's, not the state
// directory's. The claim file names the state directory that holds them;
// kok up refuses to start a second meta cluster beside a running one, and
// kok down of another state directory leaves the running one's host
// resources alone. It lives beside the run directory (a tmpfs: a reboot
// clears it with everything it guards).

// HostClaimFile is where the state directory holding c's host resources is
// named.
func HostClaimFile(c *Config) string { return strings.TrimSuffix(c.RunDir, "/") + ".owner" }

// hostHeldByOther returns the state directory of another meta cluster that
// runs on this host and holds c's host resources, or "".
func hostHeldByOther(c *Config) string {
	data, err := os.ReadFile(HostClaimFile(c))
	if err != nil {
		return ""
	}
	owner := strings.TrimSpace(string(data))
	if owner == "" || owner == absDir(c.StateDir) {
		return ""
	}
	if _, alive := proc.Alive(SupervisorPidFile(owner)); !alive {
		return "" // a claim left by a crash: nothing runs there
	}
	return owner
}

// checkHostFree: kok up may start a meta cluster here.
func checkHostFree(c *Config) error {
	if owner := hostHeldByOther(c); owner != "" {
		return &PreflightError{
			fmt.Sprintf("another kok meta cluster runs on this host, from %s: it holds bridge %s, address %s, the meta cluster's ports and %s",
				owner, c.Bridge, c.NodeIP(), c.RunDir),
			"use that one (kok status --state-dir " + owner + "), or stop it first: kok down --state-dir " + owner}
	}
	return nil
}

// claimHost records c's state directory as the holder of the host.
func claimHost(c *Config) error {
	if err := os.WriteFile(HostClaimFile(c), []byte(absDir(c.StateDir)+"\n"), 0o644); err != nil {
		return fmt.Errorf("recording the meta cluster's claim on the host: %w", err)
	}
	return nil
}

// absDir is dir as an absolute path, so a claim names it from anywhere.
func absDir(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return dir
}

// releaseHost removes the claim unless another running meta cluster holds it.
func releaseHost(c *Config) {
	if hostHeldByOther(c) != "" {
		return
	}
	if err := os.Remove(HostClaimFile(c)); err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "warning: %v\n", err)
	}
}
