package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/kubeonkube/kok/internal/local/build"
	"github.com/kubeonkube/kok/internal/local/hosts"
	"github.com/kubeonkube/kok/internal/local/proc"
)

// DownOptions configure kok down.
type DownOptions struct {
	StateDir string
	// Purge also deletes the state directory (etcd data, PKI, logs).
	Purge   bool
	Builder *build.Builder
	Out     io.Writer
}

// Down deletes the local hosts of a state directory, stops its meta cluster
// and removes what kok put on the host (processes, mounts, iptables rules,
// the bridge, cgroups).
// Only processes recorded in kok's pid files, the shims of kok's containerd
// and processes in kok's pod cgroups are signalled.
func Down(ctx context.Context, o DownOptions) error {
	if err := checkRoot(); err != nil {
		return err
	}
	// The local hosts first: they may run without a meta cluster.
	names, err := hosts.DeleteAll(ctx, o.StateDir)
	for _, n := range names {
		fmt.Fprintf(o.Out, "deleted host %s\n", n)
	}
	if err != nil {
		return fmt.Errorf("deleting the local hosts: %w", err)
	}
	c, err := LoadConfig(o.StateDir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(o.Out, "no kok meta cluster in %s\n", o.StateDir)
		return nil
	}
	if err != nil {
		if !o.Purge {
			return err
		}
		d := DefaultConfig()
		d.StateDir = o.StateDir
		c = &d
	}
	start := time.Now()
	if id, alive := proc.Alive(SupervisorPidFile(c.StateDir)); alive {
		fmt.Fprintf(o.Out, "stopping the supervisor (pid %d) and its components\n", id.PID)
		id.Stop(3 * time.Minute)
	}
	if n := stopRecorded(c); n > 0 {
		fmt.Fprintf(o.Out, "stopped %d processes the supervisor had left\n", n)
	}
	if owner := hostHeldByOther(c); owner != "" {
		// The bridge, cgroups, run directory and guard are the running
		// meta cluster's now: this state's own processes are stopped.
		fmt.Fprintf(o.Out, "the host's bridge, cgroups and network guard stay: the meta cluster of %s runs on them\n", owner)
	} else {
		cleanupHost(ctx, c, o.Builder)
		releaseHost(c)
	}
	if o.Purge {
		if mountsUnder(c.StateDir) {
			return fmt.Errorf("something is still mounted below %s; not deleting it (see /proc/self/mountinfo)", c.StateDir)
		}
		if err := os.RemoveAll(c.StateDir); err != nil {
			return fmt.Errorf("removing %s: %w", c.StateDir, err)
		}
		fmt.Fprintf(o.Out, "removed %s\n", c.StateDir)
	}
	fmt.Fprintf(o.Out, "kok meta cluster stopped in %.1fs\n", time.Since(start).Seconds())
	return nil
}
