package supervisor

import (
	"context"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubeonkube/kok/internal/local/proc"
)

func fileReady(path string) func(context.Context) error {
	return func(context.Context) error {
		_, err := os.Stat(path)
		return err
	}
}

// TestOrderRestartStop runs three shell processes: b waits for a's
// readiness, c crashes once and is restarted; on stop all are gone and the
// stop order is the reverse of the start order.
func TestOrderRestartStop(t *testing.T) {
	dir := t.TempDir()
	marker := func(n string) string { return filepath.Join(dir, n+".ready") }
	trace := filepath.Join(dir, "trace")
	sh := func(name, extra string) *Process {
		script := "echo start " + name + " >> " + trace + "; " + extra +
			"trap 'echo stop " + name + " >> " + trace + "; exit 0' TERM; touch " + marker(name) + "; while true; do sleep 0.1; done"
		return &Process{Name: name, Path: "/bin/sh", Args: []string{"-c", script}, Ready: fileReady(marker(name)), StopGrace: 5 * time.Second}
	}
	a := sh("a", "")
	b := sh("b", "")
	b.After = []string{"a"}
	crashOnce := filepath.Join(dir, "crashed")
	c := sh("c", "if [ ! -e "+crashOnce+" ]; then touch "+crashOnce+"; exit 3; fi; ")
	c.After = []string{"b"}

	s := &Supervisor{Procs: []*Process{c, b, a}, RunDir: filepath.Join(dir, "run"), LogDir: filepath.Join(dir, "logs"),
		Log: log.New(io.Discard, "", 0)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()

	deadline := time.Now().Add(20 * time.Second)
	for {
		st, _ := ReadStatus(s.RunDir)
		if st["a"].Ready && st["b"].Ready && st["c"].Ready {
			if st["c"].Restarts != 1 {
				t.Fatalf("c restarts = %d, want 1", st["c"].Restarts)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes not ready in time: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var ids []proc.Identity
	for _, n := range []string{"a", "b", "c"} {
		id, alive := proc.Alive(PidFile(s.RunDir, n))
		if !alive {
			t.Fatalf("%s has no live pid file", n)
		}
		ids = append(ids, id)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	for _, id := range ids {
		if id.Running() {
			t.Fatalf("pid %d still runs after stop", id.PID)
		}
	}
	data, _ := os.ReadFile(trace)
	var starts, stops []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(l)
		if f[0] == "start" {
			starts = append(starts, f[1])
		} else {
			stops = append(stops, f[1])
		}
	}
	if got := strings.Join(starts, ""); got != "abcc" {
		t.Errorf("start order %q, want abcc (c started twice)", got)
	}
	if got := strings.Join(stops, ""); got != "cba" {
		t.Errorf("stop order %q, want cba", got)
	}
}

func TestOrderRejectsCyclesAndUnknowns(t *testing.T) {
	s := &Supervisor{Procs: []*Process{{Name: "a", After: []string{"b"}}, {Name: "b", After: []string{"a"}}}}
	if _, err := s.order(); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("want cycle error, got %v", err)
	}
	s = &Supervisor{Procs: []*Process{{Name: "a", After: []string{"x"}}}}
	if _, err := s.order(); err == nil || !strings.Contains(err.Error(), "unknown") {
		t.Errorf("want unknown-dependency error, got %v", err)
	}
	s = &Supervisor{Procs: []*Process{{Name: "a"}, {Name: "a"}}}
	if _, err := s.order(); err == nil {
		t.Error("want duplicate error")
	}
}
