// Package supervisor starts a set of processes once their dependencies are
// ready, restarts them with backoff when they exit, and stops them in reverse
// dependency order. It records pid files and a status file so other commands
// (kok status, kok down) can see what runs.
package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/kubeonkube/kok/internal/local/proc"
)

// Process is one supervised program.
type Process struct {
	Name string
	Path string
	Args []string
	Env  []string
	// After names processes that must be ready before this one starts.
	After []string
	// Ready probes readiness; nil means ready once started.
	Ready func(ctx context.Context) error
	// BeforeStop runs before the process is signalled to stop.
	BeforeStop func(ctx context.Context)
	// StopGrace is how long SIGTERM is given before SIGKILL (default 15 s).
	StopGrace time.Duration
}

// State is what the status file records per process.
type State struct {
	PID       int       `json:"pid,omitempty"`
	Started   time.Time `json:"started,omitempty"`
	ReadyAt   time.Time `json:"readyAt,omitempty"`
	Ready     bool      `json:"ready"`
	Restarts  int       `json:"restarts"`
	LastExit  string    `json:"lastExit,omitempty"`
	LastExitT time.Time `json:"lastExitTime,omitempty"`
}

// Supervisor runs Processes.
type Supervisor struct {
	Procs  []*Process
	RunDir string // pid files and status.json
	LogDir string // NAME.log per process
	Log    *log.Logger
	// Every is called periodically while running (e.g. to re-assert
	// network rules).
	Every         func(ctx context.Context)
	EveryInterval time.Duration

	mu     sync.Mutex
	states map[string]*State
	ready  map[string]chan struct{}
}

// PidFile is where the pid of process name is recorded.
func PidFile(runDir, name string) string { return filepath.Join(runDir, name+".pid") }

// StatusFile is where the supervisor records process states.
func StatusFile(runDir string) string { return filepath.Join(runDir, "status.json") }

// ReadStatus loads the status file.
func ReadStatus(runDir string) (map[string]State, error) {
	data, err := os.ReadFile(StatusFile(runDir))
	if err != nil {
		return nil, err
	}
	st := map[string]State{}
	return st, json.Unmarshal(data, &st)
}

// Run starts the processes and keeps them running until ctx ends, then stops
// them in reverse dependency order and returns.
func (s *Supervisor) Run(ctx context.Context) error {
	order, err := s.order()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.RunDir, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(s.LogDir, 0o755); err != nil {
		return err
	}
	s.states = map[string]*State{}
	s.ready = map[string]chan struct{}{}
	for _, p := range order {
		s.states[p.Name] = &State{}
		s.ready[p.Name] = make(chan struct{})
	}
	s.writeStatus()

	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	workers := map[string]*worker{}
	for _, p := range order {
		w := &worker{s: s, p: p, stop: make(chan struct{}), done: make(chan struct{})}
		workers[p.Name] = w
		go w.run(runCtx)
	}
	if s.Every != nil {
		go func() {
			t := time.NewTicker(s.EveryInterval)
			defer t.Stop()
			for {
				select {
				case <-runCtx.Done():
					return
				case <-t.C:
					s.Every(runCtx)
				}
			}
		}()
	}

	<-ctx.Done()
	s.Log.Printf("stopping %d processes", len(order))
	for i := len(order) - 1; i >= 0; i-- {
		w := workers[order[i].Name]
		w.shutdown()
	}
	return nil
}

// order sorts processes so each comes after its dependencies.
func (s *Supervisor) order() ([]*Process, error) {
	byName := map[string]*Process{}
	for _, p := range s.Procs {
		if _, dup := byName[p.Name]; dup {
			return nil, fmt.Errorf("process %q listed twice", p.Name)
		}
		byName[p.Name] = p
	}
	var out []*Process
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(p *Process) error
	visit = func(p *Process) error {
		switch state[p.Name] {
		case 1:
			return fmt.Errorf("dependency cycle through %q", p.Name)
		case 2:
			return nil
		}
		state[p.Name] = 1
		for _, dep := range p.After {
			d, ok := byName[dep]
			if !ok {
				return fmt.Errorf("process %q waits for unknown process %q", p.Name, dep)
			}
			if err := visit(d); err != nil {
				return err
			}
		}
		state[p.Name] = 2
		out = append(out, p)
		return nil
	}
	for _, p := range s.Procs {
		if err := visit(p); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Supervisor) update(name string, f func(*State)) {
	s.mu.Lock()
	f(s.states[name])
	s.mu.Unlock()
	s.writeStatus()
}

func (s *Supervisor) writeStatus() {
	s.mu.Lock()
	data, err := json.MarshalIndent(s.states, "", "  ")
	s.mu.Unlock()
	if err != nil {
		return
	}
	tmp := StatusFile(s.RunDir) + ".tmp"
	if os.WriteFile(tmp, data, 0o644) == nil {
		_ = os.Rename(tmp, StatusFile(s.RunDir))
	}
}

type worker struct {
	s    *Supervisor
	p    *Process
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	cmd       *exec.Cmd
	readyOnce sync.Once
}

const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
	// healthyRun resets the backoff: a process that ran this long before
	// exiting is restarted quickly.
	healthyRun = time.Minute
)

func (w *worker) run(ctx context.Context) {
	defer close(w.done)
	for _, dep := range w.p.After {
		select {
		case <-w.s.ready[dep]:
		case <-w.stop:
			return
		}
	}
	backoff := minBackoff
	for {
		started := time.Now()
		exited, err := w.start()
		if err != nil {
			w.s.Log.Printf("%s: start failed: %v", w.p.Name, err)
		} else {
			w.s.Log.Printf("%s: started pid %d", w.p.Name, w.pid())
			probeCtx, cancelProbe := context.WithCancel(ctx)
			go w.probe(probeCtx)
			select {
			case err = <-exited:
				cancelProbe()
			case <-w.stop:
				cancelProbe()
				return
			}
			w.s.update(w.p.Name, func(st *State) {
				st.Ready, st.PID = false, 0
				st.LastExit, st.LastExitT = fmt.Sprint(err), time.Now()
			})
			w.s.Log.Printf("%s: exited after %s: %v", w.p.Name, time.Since(started).Round(time.Millisecond), err)
		}
		if time.Since(started) > healthyRun {
			backoff = minBackoff
		}
		select {
		case <-w.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
		w.s.update(w.p.Name, func(st *State) { st.Restarts++ })
	}
}

func (w *worker) start() (<-chan error, error) {
	logFile, err := os.OpenFile(filepath.Join(w.s.LogDir, w.p.Name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logFile, "---- %s kok supervisor starts %s\n", time.Now().Format(time.RFC3339), w.p.Name)
	cmd := exec.Command(w.p.Path, w.p.Args...)
	cmd.Env = append(os.Environ(), w.p.Env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Own process group: a stop signal reaches the process and its helpers,
	// and a Ctrl-C in the terminal that ran kok up does not.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, err
	}
	w.mu.Lock()
	w.cmd = cmd
	w.mu.Unlock()
	if err := proc.Write(PidFile(w.s.RunDir, w.p.Name), cmd.Process.Pid); err != nil {
		w.s.Log.Printf("%s: writing pid file: %v", w.p.Name, err)
	}
	w.s.update(w.p.Name, func(st *State) { st.PID, st.Started, st.Ready = cmd.Process.Pid, time.Now(), false })
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		// exited carries the process's end; a failed close of its log is
		// only worth a line in the supervisor's own.
		if cerr := logFile.Close(); cerr != nil {
			w.s.Log.Printf("%s: closing its log: %v", w.p.Name, cerr)
		}
		exited <- err
	}()
	return exited, nil
}

func (w *worker) pid() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cmd == nil || w.cmd.Process == nil {
		return 0
	}
	return w.cmd.Process.Pid
}

// probe polls Ready until it passes, then marks the process ready.
func (w *worker) probe(ctx context.Context) {
	if w.p.Ready != nil {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := w.p.Ready(pctx)
			cancel()
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}
	w.s.update(w.p.Name, func(st *State) { st.Ready, st.ReadyAt = true, time.Now() })
	w.s.Log.Printf("%s: ready", w.p.Name)
	w.readyOnce.Do(func() { close(w.s.ready[w.p.Name]) })
}

// shutdown stops the worker's loop and its process.
func (w *worker) shutdown() {
	close(w.stop)
	if w.p.BeforeStop != nil && w.pid() != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		w.p.BeforeStop(ctx)
		cancel()
	}
	grace := w.p.StopGrace
	if grace == 0 {
		grace = 15 * time.Second
	}
	if pid := w.pid(); pid != 0 {
		if id, err := proc.Self(pid); err == nil {
			w.s.Log.Printf("%s: stopping pid %d", w.p.Name, pid)
			id.Stop(grace)
		}
	}
	<-w.done
	_ = os.Remove(PidFile(w.s.RunDir, w.p.Name))
	w.s.update(w.p.Name, func(st *State) { st.Ready, st.PID = false, 0 })
}
