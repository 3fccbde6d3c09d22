package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeonkube/kok/internal/local/build"
	"github.com/kubeonkube/kok/internal/local/proc"
	"github.com/kubeonkube/kok/internal/local/storage"
	"github.com/kubeonkube/kok/internal/local/supervisor"
)

// DownOptions configure kok down.
type DownOptions struct {
	StateDir string
	// Purge also deletes the state directory (etcd data, PKI, logs).
	Purge   bool
	Builder *build.Builder
	Out     io.Writer
}

// Down stops the meta cluster of a state directory and removes what kok put
// on the host (processes, mounts, iptables rules, the bridge, cgroups).
// Only processes recorded in kok's pid files, the shims of kok's containerd
// and processes in kok's pod cgroups are signalled.
func Down(ctx context.Context, o DownOptions) error {
	if err := checkRoot(); err != nil {
		return err
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
	if n := stopRecorded(*c); n > 0 {
		fmt.Fprintf(o.Out, "stopped %d processes the supervisor had left\n", n)
	}
	c.cleanupHost(ctx, o.Builder)
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

// stopRecorded stops components whose pid files name a live process, in
// reverse start order, releasing pods through the CRI before containerd
// stops. It returns how many it stopped.
func stopRecorded(c Config) int {
	stopped := 0
	for i := len(ComponentNames) - 1; i >= 0; i-- {
		name := ComponentNames[i]
		file := supervisor.PidFile(c.PidDir(), name)
		id, alive := proc.Alive(file)
		if alive {
			if name == Containerd {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				_ = removeAllPods(ctx, c.ContainerdSocket())
				cancel()
			}
			id.Stop(20 * time.Second)
			stopped++
		}
		_ = os.Remove(file)
	}
	return stopped
}

// cleanupHost removes what the node left on the host once its processes are
// gone. Each step is best effort and idempotent.
func (c *Config) cleanupHost(ctx context.Context, b *build.Builder) {
	c.killLeftovers()
	if b != nil {
		// kube-proxy knows its own rules best.
		if kube := c.kubeBin(b); fileExists(kube) {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_ = exec.CommandContext(cctx, kube, "kube-proxy", "--cleanup").Run()
			cancel()
		}
	}
	removeNodeChains(ctx)
	if err := unmountUnder(c.StateDir, c.RunDir); err != nil {
		log.Printf("warning: %v", err)
	}
	c.removeCgroupRoot()
	c.removeHostNetwork(ctx)
	// Last: nothing of kok runs any more that could send traffic.
	RemoveGuard(ctx)
	_ = os.RemoveAll(c.RunDir)
	_ = os.Remove(SupervisorPidFile(c.StateDir))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Supervise runs the components of a state directory until ctx ends. It is
// what "kok supervise" runs, detached, on behalf of kok up.
func Supervise(ctx context.Context, stateDir string, b *build.Builder) error {
	c, err := LoadConfig(stateDir)
	if err != nil {
		return err
	}
	if id, alive := proc.Alive(SupervisorPidFile(stateDir)); alive && id.PID != os.Getpid() {
		return fmt.Errorf("a supervisor (pid %d) already runs for %s", id.PID, stateDir)
	}
	if err := proc.Write(SupervisorPidFile(stateDir), os.Getpid()); err != nil {
		return err
	}
	defer os.Remove(SupervisorPidFile(stateDir))
	self, err := os.Executable()
	if err != nil {
		return err
	}
	s := &supervisor.Supervisor{
		Procs:  c.processes(b, self),
		RunDir: c.PidDir(),
		LogDir: c.LogDir(),
		Log:    log.New(os.Stderr, "", log.LstdFlags),
		Every: func(ctx context.Context) {
			if err := c.EnsureGuard(ctx); err != nil {
				log.Printf("network guard: %v", err)
			}
		},
		EveryInterval: 15 * time.Second,
	}
	return s.Run(ctx)
}

// RunLocalStorage runs the volume provisioner of a state directory until ctx
// ends ("kok local-storage", started by the supervisor).
func RunLocalStorage(ctx context.Context, stateDir string) error {
	c, err := LoadConfig(stateDir)
	if err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(c.ConfDir(), "admin.conf"))
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	p := &storage.Provisioner{Client: cs, Dir: c.VolumeDir(), Node: c.NodeName, Log: log.New(os.Stderr, "", log.LstdFlags)}
	return p.Run(ctx, time.Second)
}
