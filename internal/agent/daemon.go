package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
)

// Daemon is `kok-agent run`: it applies desired.json whenever it changes
// or it is told to (SIGHUP), re-checks every Interval, keeps the services
// of applied components running, and writes status.json after each pass.
type Daemon struct {
	Applier  *Applier
	Services *Supervisor
	// Interval between checks (default 15 s).
	Interval time.Duration
	Log      *log.Logger

	// wake is signalled by the cluster link when it wrote a new desired
	// state; link runs while the desired state names a cluster.
	wake     chan struct{}
	link     *Link
	linkSpec ClusterLink
	linkStop context.CancelFunc
}

// NewDaemon returns a daemon keeping its state in dir.
func NewDaemon(dir string) *Daemon {
	p := Paths{Dir: dir}
	return &Daemon{Applier: &Applier{Paths: p}, Services: NewSupervisor(p.ServiceDir()), Interval: 15 * time.Second,
		Log: log.New(os.Stderr, "kok-agent: ", log.LstdFlags), wake: make(chan struct{}, 1)}
}

// Run runs passes until ctx ends. Services keep running when it returns
// (a restarted agent adopts them); SIGTERM stops the agent, not them.
func (d *Daemon) Run(ctx context.Context) error {
	p := d.Applier.Paths
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return err
	}
	if pid, ok := daemonPid(p); ok && pid != os.Getpid() {
		return fmt.Errorf("another kok-agent runs (pid %d)", pid)
	}
	if err := os.WriteFile(p.PidFile(), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	self, _ := os.Executable()
	selfDigest := digestOf(self)
	defer d.stopLink()

	for {
		wait := d.pass(ctx)
		if now := digestOf(self); selfDigest != "" && now != "" && now != selfDigest {
			// A new agent binary was installed: become it. Services keep
			// running and the new agent adopts them.
			d.Log.Printf("agent binary changed (%s), restarting", now)
			return syscall.Exec(self, os.Args, os.Environ())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		case <-d.wake:
		case <-d.Services.Exited:
			// A service stopped: restart it (after its backoff).
			if t := d.Services.NextStart(); !t.IsZero() {
				select {
				case <-time.After(time.Until(t)):
				case <-ctx.Done():
					return nil
				case <-hup:
				case <-d.wake:
				}
			}
		case <-time.After(wait):
		}
	}
}

// pass applies desired.json once and returns how long to wait before the
// next pass.
func (d *Daemon) pass(ctx context.Context) time.Duration {
	p := d.Applier.Paths
	desired, err := ReadDesired(p.Desired())
	if errors.Is(err, fs.ErrNotExist) {
		return d.Interval
	}
	if err != nil {
		d.Log.Printf("%v", err)
		d.writeReport(&Report{Time: time.Now(), Components: []ComponentReport{{Name: "desired", Error: err.Error()}}})
		return d.Interval
	}
	d.ensureLink(ctx, desired.Cluster)
	// A service that stopped starts again first, before the checks (which
	// may wait on it).
	d.Services.Ensure(d.services(desired), nil)
	unlock, err := lockFile(p.Lock())
	if err != nil {
		d.Log.Printf("lock: %v", err)
		return d.Interval
	}
	out := d.Applier.Apply(ctx, desired)
	unlock()
	d.carryRepairs(&out.Report)
	if len(out.Restart) > 0 {
		d.Log.Printf("restarting %s: their inputs changed", strings.Join(out.Restart, ", "))
	}
	d.Services.Ensure(d.services(desired), out.Restart)
	out.Report.Services = d.Services.Report()
	d.writeReport(&out.Report)
	if !out.Report.Ready() {
		return 2 * time.Second
	}
	return d.Interval
}

// carryRepairs records this pass's repairs in the report and keeps the
// last repair of each component from the report before.
func (d *Daemon) carryRepairs(r *Report) {
	var prev Report
	if data, err := os.ReadFile(d.Applier.Paths.Status()); err == nil {
		_ = json.Unmarshal(data, &prev)
	}
	for i := range r.Components {
		c := &r.Components[i]
		switch {
		case c.Action != "" && c.Action != "checked" && c.Action != "installed":
			c.LastRepair, c.LastRepairTime = c.Action, r.Time
		default:
			for _, p := range prev.Components {
				if p.Name == c.Name {
					c.LastRepair, c.LastRepairTime = p.LastRepair, p.LastRepairTime
				}
			}
		}
	}
}

// services are those of every component applied as desired; those of a
// component that failed its check keep running (it is being repaired).
func (d *Daemon) services(desired *Desired) []nodev1.Service {
	var out []nodev1.Service
	applied := d.Applier.Applied()
	for _, c := range desired.Components {
		if a, ok := applied[c.Name]; ok && a.Hash == c.Hash {
			out = append(out, c.Services...)
		}
	}
	return out
}

func (d *Daemon) writeReport(r *Report) {
	data, _ := json.Marshal(r)
	if err := writeAtomic(d.Applier.Paths.Status(), data, 0o644); err != nil {
		d.Log.Printf("writing status: %v", err)
	}
	if d.link != nil {
		d.link.Report(r)
	}
}

// ensureLink runs the cluster link the desired state names (restarting it
// when that changes) and stops it when it names none.
func (d *Daemon) ensureLink(ctx context.Context, spec *ClusterLink) {
	if spec != nil && d.link != nil && *spec == d.linkSpec {
		return
	}
	d.stopLink()
	if spec == nil {
		return
	}
	lctx, cancel := context.WithCancel(ctx)
	d.link, d.linkSpec, d.linkStop = NewLink(*spec, d.Applier.Paths, d.Log, d.wake), *spec, cancel
	go d.link.Run(lctx)
}

func (d *Daemon) stopLink() {
	if d.linkStop != nil {
		d.linkStop()
	}
	d.link, d.linkStop = nil, nil
}

// ReadDesired reads a Desired document.
func ReadDesired(path string) (*Desired, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d Desired
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &d, nil
}

// Submit is `kok-agent apply`: it stores a Desired document, starts the
// daemon unless it runs, and wakes it. It returns at once; the daemon's
// report (status.json) says how the apply went.
func Submit(p Paths, data []byte, self string) error {
	var d Desired
	if err := json.Unmarshal(data, &d); err != nil {
		return fmt.Errorf("the desired state is not valid: %w", err)
	}
	if err := writeAtomic(p.Desired(), data, 0o600); err != nil {
		return err
	}
	if pid, ok := daemonPid(p); ok {
		return syscall.Kill(pid, syscall.SIGHUP)
	}
	return StartDaemon(p, self)
}

// StartDaemon starts `kok-agent run` in its own session, logging to
// agent.log in the state directory.
func StartDaemon(p Paths, self string) error {
	logf, err := os.OpenFile(p.Dir+"/agent.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = logf.Close() }()
	cmd := exec.Command(self, "run", "--dir", p.Dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the agent: %w", err)
	}
	return cmd.Process.Release()
}

// daemonPid is the pid of a running daemon.
func daemonPid(p Paths) (int, bool) {
	data, err := os.ReadFile(p.PidFile())
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || !alive(pid) {
		return 0, false
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return pid, strings.HasPrefix(strings.TrimSpace(string(comm)), "kok-agent")
}

// lockFile takes an exclusive lock on path; the returned func releases it.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); _ = f.Close() }, nil
}

func digestOf(path string) string {
	if path == "" {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	// Size and modification time are enough to notice a replaced binary.
	return fmt.Sprintf("%d-%d", st.Size(), st.ModTime().UnixNano())
}
