package agent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
)

// Supervisor runs the components' services and restarts one that stops.
// A service runs in its own session, so it outlives an agent restart; the
// next agent adopts it through its pid file.
type Supervisor struct {
	Dir string // pid files and logs
	// StopTimeout is how long a service has to stop after SIGTERM.
	StopTimeout time.Duration

	mu    sync.Mutex
	procs map[string]*service
	// Exited is signalled when a service stops on its own.
	Exited chan string
}

type service struct {
	spec     nodev1.Service
	pid      int
	running  bool
	stopping bool
	restarts int
	since    time.Time
	lastExit string
	// next is when a stopped service may start again (backoff).
	next    time.Time
	backoff time.Duration
	done    chan struct{}
}

// NewSupervisor returns a supervisor keeping pid files and logs in dir.
func NewSupervisor(dir string) *Supervisor {
	return &Supervisor{Dir: dir, StopTimeout: 10 * time.Second, procs: map[string]*service{}, Exited: make(chan string, 16)}
}

const (
	backoffMin = time.Second
	backoffMax = 30 * time.Second
	// stableAfter: a service that ran this long restarts without waiting.
	stableAfter = 10 * time.Second
)

// Ensure makes the running services the wanted ones: it starts what is
// missing or stopped (once its backoff passed), restarts those named in
// restart or whose command changed, and stops what is no longer wanted.
func (s *Supervisor) Ensure(wanted []nodev1.Service, restart []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := map[string]bool{}
	for _, w := range wanted {
		names[w.Name] = true
		p, ok := s.procs[w.Name]
		if !ok {
			p = &service{spec: w}
			s.procs[w.Name] = p
			s.adopt(p)
		}
		changed := !slices.Equal(p.spec.Command, w.Command)
		p.spec = w
		if p.running && (changed || slices.Contains(restart, w.Name)) {
			s.stopLocked(p)
			p.next = time.Time{}
		}
		if !p.running && !time.Now().Before(p.next) {
			if err := s.start(p); err != nil {
				p.lastExit = "did not start: " + err.Error()
				s.delay(p)
			}
		}
	}
	for name, p := range s.procs {
		if !names[name] {
			if p.running {
				s.stopLocked(p)
			}
			_ = os.Remove(s.pidFile(name))
			delete(s.procs, name)
		}
	}
}

// Adopt takes over the running ones of services without starting any.
func (s *Supervisor) Adopt(services []nodev1.Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range services {
		if _, ok := s.procs[w.Name]; ok {
			continue
		}
		p := &service{spec: w}
		if s.adopt(p); p.running {
			s.procs[w.Name] = p
		}
	}
}

// Report lists the services, sorted by name.
func (s *Supervisor) Report() []ServiceReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ServiceReport
	for name, p := range s.procs {
		r := ServiceReport{Name: name, Running: p.running, Restarts: p.restarts, LastExit: p.lastExit}
		if p.running {
			r.PID, r.Since = p.pid, p.since
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// StopAll stops every service (the agent is told to stop them).
func (s *Supervisor) StopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, p := range s.procs {
		if p.running {
			s.stopLocked(p)
		}
		_ = os.Remove(s.pidFile(name))
	}
}

func (s *Supervisor) pidFile(name string) string { return filepath.Join(s.Dir, name+".pid") }
func (s *Supervisor) logFile(name string) string { return filepath.Join(s.Dir, name+".log") }

// start runs a service in its own session, output to its log file.
func (s *Supervisor) start(p *service) error {
	if len(p.spec.Command) == 0 {
		return errors.New("no command")
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return err
	}
	log, err := os.OpenFile(s.logFile(p.spec.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = log.Close() }()
	cmd := exec.Command(p.spec.Command[0], p.spec.Command[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.pid, p.running, p.since, p.stopping = cmd.Process.Pid, true, time.Now(), false
	p.done = make(chan struct{})
	_ = os.WriteFile(s.pidFile(p.spec.Name), []byte(fmt.Sprintf("%d %s\n", p.pid, commandKey(p.spec.Command))), 0o644)
	done := p.done
	go func() {
		err := cmd.Wait()
		s.exited(p, done, describeExit(err))
	}()
	return nil
}

// adopt takes over a service an earlier agent started, if its pid file
// names a live process running the same command.
func (s *Supervisor) adopt(p *service) {
	data, err := os.ReadFile(s.pidFile(p.spec.Name))
	if err != nil {
		return
	}
	pidStr, key, _ := strings.Cut(strings.TrimSpace(string(data)), " ")
	pid, err := strconv.Atoi(pidStr)
	if err != nil || key != commandKey(p.spec.Command) || !alive(pid) {
		return
	}
	p.pid, p.running, p.since = pid, true, time.Now()
	p.done = make(chan struct{})
	done := p.done
	go func() {
		for alive(pid) {
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
		s.exited(p, done, "exited")
	}()
}

// exited records that a service's process ended.
func (s *Supervisor) exited(p *service, done chan struct{}, how string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-done:
		return // already recorded
	default:
	}
	close(done)
	p.running = false
	if p.stopping {
		return
	}
	p.lastExit = how
	p.restarts++
	if time.Since(p.since) >= stableAfter {
		p.backoff = 0
		p.next = time.Time{}
	} else {
		s.delay(p)
	}
	select {
	case s.Exited <- p.spec.Name:
	default:
	}
}

func (s *Supervisor) delay(p *service) {
	p.backoff = min(max(p.backoff*2, backoffMin), backoffMax)
	p.next = time.Now().Add(p.backoff)
}

// stopLocked stops a running service: SIGTERM to its process group, then
// SIGKILL after StopTimeout.
func (s *Supervisor) stopLocked(p *service) {
	p.stopping = true
	pid, done := p.pid, p.done
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	s.mu.Unlock()
	select {
	case <-done:
	case <-time.After(s.StopTimeout):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
	s.mu.Lock()
	p.running = false
}

// NextStart is the earliest time a stopped service may be started again,
// or zero when none waits.
func (s *Supervisor) NextStart() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var t time.Time
	for _, p := range s.procs {
		if !p.running && (t.IsZero() || p.next.Before(t)) {
			t = p.next
		}
	}
	return t
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie (state Z) has ended.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func commandKey(cmd []string) string {
	return strconv.Quote(strings.Join(cmd, "\x00"))
}

func describeExit(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exited 0"
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + unix.SignalName(ws.Signal())
		}
		return fmt.Sprintf("exited %d", ee.ExitCode())
	default:
		return err.Error()
	}
}
