package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestPidFileIdentity(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sleep.pid")
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }()
	if err := Write(file, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	id, alive := Alive(file)
	if !alive || id.PID != cmd.Process.Pid {
		t.Fatalf("Alive = %v, %v; want the sleep process", id, alive)
	}

	// A pid file naming the same pid with another start time is stale.
	stale := id
	stale.StartTime++
	if stale.Running() {
		t.Fatal("identity with a different start time must not count as running")
	}

	start := time.Now()
	id.Stop(5 * time.Second)
	if id.Running() {
		t.Fatal("process still running after Stop")
	}
	if time.Since(start) > 4*time.Second {
		t.Fatalf("Stop took %v; SIGTERM should end sleep at once", time.Since(start))
	}
	if _, alive := Alive(file); alive {
		t.Fatal("Alive after Stop")
	}
}

func TestReadMalformed(t *testing.T) {
	file := filepath.Join(t.TempDir(), "x.pid")
	if err := os.WriteFile(file, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(file); err == nil {
		t.Fatal("want error for malformed pid file")
	}
	if _, alive := Alive(file); alive {
		t.Fatal("malformed pid file must not count as alive")
	}
}
