package local

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeonkube/kok/internal/local/build"
	"github.com/kubeonkube/kok/internal/local/proc"
	"github.com/kubeonkube/kok/internal/local/storage"
	"github.com/kubeonkube/kok/internal/local/supervisor"
)

// SupervisorPidFile is the pid file of the supervisor of a state directory.
func SupervisorPidFile(stateDir string) string {
	return filepath.Join(stateDir, "run", "supervisor.pid")
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
	defer func() { _ = os.Remove(SupervisorPidFile(stateDir)) }()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	s := &supervisor.Supervisor{
		Procs:  processes(c, b, self),
		RunDir: c.PidDir(),
		LogDir: c.LogDir(),
		Log:    log.New(os.Stderr, "", log.LstdFlags),
		Every: func(ctx context.Context) {
			if err := EnsureGuard(ctx, c.GuardCIDR); err != nil {
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

// startSupervisor runs "kok supervise" (self is the kok executable) for the
// state directory of c, detached from this terminal.
func startSupervisor(self string, c *Config) error {
	if err := os.MkdirAll(c.LogDir(), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(c.LogDir(), "supervisor.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	// Only handed to the supervisor as its stdout and stderr: this process
	// writes nothing to it, and the child keeps its own descriptor.
	defer func() { _ = logf.Close() }()
	// A status file left by a supervisor that died describes processes
	// that are gone; waiting on it would see them "ready".
	if err := os.Remove(supervisor.StatusFile(c.PidDir())); err != nil && !os.IsNotExist(err) {
		return err
	}
	cmd := exec.Command(self, "supervise", "--state-dir", c.StateDir, "--cache-dir", c.CacheDir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the supervisor: %w", err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	// The supervisor writes its own pid file; wait for it (up to 5 s) so
	// the next command sees it.
	return poll(context.Background(), 100*time.Millisecond, 5*time.Second, func(context.Context) (bool, error) {
		id, alive := proc.Alive(SupervisorPidFile(c.StateDir))
		return alive && id.PID == pid, nil
	}, func() error {
		return fmt.Errorf("the supervisor (pid %d) did not start; see %s", pid, filepath.Join(c.LogDir(), "supervisor.log"))
	})
}

// maxStartRestarts: a component restarting this often while kok up waits is
// failing, not starting.
const maxStartRestarts = 3

// waitComponents waits, for as long as ctx lasts, until the named components
// are ready, and fails fast with the end of a component's log when it keeps
// crashing.
func waitComponents(ctx context.Context, c *Config, names []string) error {
	var st map[string]supervisor.State
	return poll(ctx, 200*time.Millisecond, 0, func(context.Context) (bool, error) {
		st, _ = supervisor.ReadStatus(c.PidDir())
		ready := true
		for _, n := range names {
			s, ok := st[n]
			if !ok || !s.Ready {
				ready = false
			}
			if ok && s.Restarts >= maxStartRestarts {
				return false, fmt.Errorf("%s keeps exiting (%d restarts, last: %s); end of %s:\n%s",
					n, s.Restarts, s.LastExit, filepath.Join(c.LogDir(), n+".log"), logTail(filepath.Join(c.LogDir(), n+".log"), 15))
			}
		}
		if ready {
			return true, nil
		}
		if _, alive := proc.Alive(SupervisorPidFile(c.StateDir)); !alive {
			return false, fmt.Errorf("the supervisor exited; end of %s:\n%s", filepath.Join(c.LogDir(), "supervisor.log"),
				logTail(filepath.Join(c.LogDir(), "supervisor.log"), 15))
		}
		return false, nil
	}, func() error {
		var waiting []string
		for _, n := range names {
			if !st[n].Ready {
				waiting = append(waiting, n)
			}
		}
		return fmt.Errorf("timed out waiting for %s; see the logs in %s", strings.Join(waiting, ", "), c.LogDir())
	})
}

// stopRecorded stops components whose pid files name a live process, in
// reverse start order, releasing pods through the CRI before containerd
// stops. It returns how many it stopped.
func stopRecorded(c *Config) int {
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
