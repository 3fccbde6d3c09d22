// Package proc identifies the processes kok started. A pid file records the
// pid together with the process start time and the boot id, so a pid reused
// by another process after a crash or a reboot is never mistaken for ours.
package proc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Identity pins one process instance.
type Identity struct {
	PID       int
	StartTime uint64 // clock ticks since boot, /proc/PID/stat field 22
	BootID    string
}

// Self returns the identity of process pid as it is now.
func Self(pid int) (Identity, error) {
	st, err := startTime(pid)
	if err != nil {
		return Identity{}, err
	}
	return Identity{PID: pid, StartTime: st, BootID: bootID()}, nil
}

// Write records the identity of pid in file.
func Write(file string, pid int) error {
	id, err := Self(pid)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d %d %s\n", id.PID, id.StartTime, id.BootID)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

// Read parses a pid file.
func Read(file string) (Identity, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return Identity{}, err
	}
	f := strings.Fields(string(data))
	if len(f) != 3 {
		return Identity{}, fmt.Errorf("pid file %s is malformed", file)
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return Identity{}, fmt.Errorf("pid file %s: %w", file, err)
	}
	st, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return Identity{}, fmt.Errorf("pid file %s: %w", file, err)
	}
	return Identity{PID: pid, StartTime: st, BootID: f[2]}, nil
}

// Alive reports whether the process recorded in file still runs. A missing,
// malformed or stale file means not alive.
func Alive(file string) (Identity, bool) {
	id, err := Read(file)
	if err != nil {
		return id, false
	}
	return id, id.Running()
}

// Running reports whether this exact process instance still runs.
func (id Identity) Running() bool {
	if id.PID <= 0 || id.BootID != bootID() {
		return false
	}
	st, err := startTime(id.PID)
	return err == nil && st == id.StartTime && !zombie(id.PID)
}

// Stop sends SIGTERM to the process group of id (the process when it leads
// no group), waits up to grace, then sends SIGKILL. It returns once the
// process is gone.
func (id Identity) Stop(grace time.Duration) {
	if !id.Running() {
		return
	}
	signal(id.PID, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !id.Running() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	signal(id.PID, syscall.SIGKILL)
	for i := 0; i < 50 && id.Running(); i++ {
		time.Sleep(100 * time.Millisecond)
	}
}

func signal(pid int, sig syscall.Signal) {
	if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
		_ = syscall.Kill(-pid, sig)
		return
	}
	_ = syscall.Kill(pid, sig)
}

func startTime(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it start
	// past the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, errors.New("unexpected /proc stat format")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func zombie(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && s[i+2] == 'Z'
}

func bootID() string {
	data, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(data))
}

// RSS returns the resident set size of pid in bytes.
func RSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) < 2 {
		return 0, errors.New("unexpected statm format")
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, err
	}
	return pages * int64(os.Getpagesize()), nil
}
