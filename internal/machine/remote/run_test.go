package remote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/wait"
)

func TestTailKeepsTheLastBytes(t *testing.T) {
	tl := newTail(10)
	var all []byte
	for _, w := range []string{"abc", "defghij", "k", "", "lmnopqrstuvwxyz0123456789", "AB", strings.Repeat("x", 7)} {
		if n, err := tl.Write([]byte(w)); n != len(w) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", w, n, err)
		}
		all = append(all, w...)
		want := all[max(0, len(all)-10):]
		if got := tl.Bytes(); !bytes.Equal(got, want) {
			t.Fatalf("after %q: Bytes = %q, want %q", w, got, want)
		}
	}
	if newTail(10).Bytes() != nil {
		t.Error("an empty tail is not nil")
	}
}

func TestStderrTail(t *testing.T) {
	for _, tc := range []struct {
		stderr string
		n      int
		want   string
	}{
		{"", 10, ""},
		{"  short error\n\n", 100, "short error"},
		{"line 1\nline 2\nfatal: it broke\n", 20, "…fatal: it broke"},
		{"line 1\nline 2\nfatal: it broke\n", 12, "…it broke"},
		{"abc\ndefgh", 8, "…defgh"},
		{"0123456789", 10, "0123456789"},
		{"0123456789", 9, "…456789"},
		{"0123456789", 3, ""},
		{"0123456789", 0, ""},
		{"ééééé", 8, "…éé"}, // never half a character
		{"bad \xff byte", 100, "bad \uFFFD byte"},
	} {
		got := Result{Stderr: []byte(tc.stderr)}.StderrTail(tc.n)
		if got != tc.want || len(got) > max(tc.n, 0) || !utf8.ValidString(got) {
			t.Errorf("StderrTail(%q, %d) = %q, want %q", tc.stderr, tc.n, got, tc.want)
		}
	}
}

// runWrapped runs script as Run does, with this machine's /bin/sh -s in a
// process group of its own (the watchdog signals its group), stdin held open
// until closeStdin is closed or the shell ends.
func runWrapped(t *testing.T, script string, closeStdin <-chan struct{}) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "/bin/sh", "-s")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(stdin, wrapScript(script)); err != nil {
		t.Fatal(err)
	}
	go func() {
		<-closeStdin
		_ = stdin.Close()
	}()
	err = cmd.Wait() // closes stdin too
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	case err != nil:
		t.Fatal(err)
	}
	// Nothing of the group is left alive: neither the watchdog nor the
	// script.
	pgid := cmd.Process.Pid
	var left []int
	err = wait.PollUntilContextTimeout(t.Context(), 10*time.Millisecond, 2*time.Second, true,
		func(context.Context) (bool, error) {
			left = liveInGroup(t, pgid)
			return len(left) == 0, nil
		})
	if err != nil {
		t.Errorf("processes %v of group %d outlive the shell", left, pgid)
	}
	return code, out.String(), errOut.String()
}

// liveInGroup lists the processes of group pgid that are not zombies (an
// orphan killed with its parent waits for init to reap it).
func liveInGroup(t *testing.T, pgid int) []int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var live []int
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...
		i := bytes.LastIndexByte(b, ')')
		fields := strings.Fields(string(b[i+1:]))
		if i < 0 || len(fields) < 3 || fields[0] == "Z" || fields[2] != strconv.Itoa(pgid) {
			continue
		}
		pid, _ := strconv.Atoi(strings.Fields(string(b))[0])
		live = append(live, pid)
	}
	return live
}

// wrapScript's promises, checked with this machine's /bin/sh.
func TestWrapScript(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		wantOut      string
		wantErr      string
		wantCode     int
	}{
		{name: "empty", script: ""},
		{name: "shebang", script: "#!/bin/sh\necho hi", wantOut: "hi\n"},
		{name: "exit code", script: "echo a\nexit 7\necho b", wantOut: "a\n", wantCode: 7},
		{name: "set -e", script: "set -e\necho a\nfalse\necho b", wantOut: "a\n", wantCode: 1},
		{name: "own EXIT trap", script: "trap 'echo trapped' EXIT\nexit 4", wantOut: "trapped\n", wantCode: 4},
		{name: "stdin is empty", script: "cat\necho done", wantOut: "done\n"},
		{name: "heredoc", script: "cat <<EOF\nx y\nEOF", wantOut: "x y\n"},
		{name: "no trailing newline after heredoc", script: "cat <<'EOF'\n$HOME\nEOF", wantOut: "$HOME\n"},
		{name: "line numbers are the script's", script: "true\n\nnonexistent-kok-command", wantErr: "3: nonexistent-kok-command", wantCode: 127},
		{name: "syntax error runs nothing", script: "echo ran\nif then fi", wantCode: 2},
		{name: "watchdog gone after the script", script: "echo ok", wantOut: "ok\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runWrapped(t, tc.script, nil)
			if code != tc.wantCode || stdout != tc.wantOut || !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, stdout, stderr, tc.wantCode, tc.wantOut, tc.wantErr)
			}
		})
	}
}

// Closing stdin ends the script, including what it waits for and what
// ignores SIGTERM.
func TestWrapScriptWatchdog(t *testing.T) {
	for name, script := range map[string]string{
		"sleep":          "sleep 30\necho not reached",
		"ignores TERM":   "trap '' TERM\nsleep 30 & wait\nsleep 30",
		"in a pipe/loop": "while :; do sleep 30 | cat; done",
	} {
		t.Run(name, func(t *testing.T) {
			closeStdin := make(chan struct{})
			time.AfterFunc(200*time.Millisecond, func() { close(closeStdin) })
			start := time.Now()
			code, stdout, _ := runWrapped(t, script, closeStdin)
			took := time.Since(start)
			if took > 2*time.Second || code < 128 || stdout != "" {
				t.Errorf("ended after %v with exit %d, stdout %q; want a signal within ~1.2s", took, code, stdout)
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	for _, s := range []string{"", "plain", "it's", "'", "a b\tc\nd", `$HOME "x" \ ; | & * ? ~ $(id) ` + "`id`"} {
		out, err := exec.CommandContext(t.Context(), "/bin/sh", "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("sh printf %s = %q, %v; want %q", shellQuote(s), out, err, s)
		}
	}
}

func TestUnixPerm(t *testing.T) {
	for mode, want := range map[os.FileMode]uint32{
		0o644: 0o644, 0o600: 0o600, 0o755 | os.ModeSetuid: 0o4755,
		0o775 | os.ModeSetgid: 0o2775, 0o777 | os.ModeSticky: 0o1777,
	} {
		if got, err := unixPerm(mode); err != nil || got != want {
			t.Errorf("unixPerm(%v) = %o, %v; want %o", mode, got, err, want)
		}
	}
	for _, bad := range []os.FileMode{os.ModeDir | 0o755, os.ModeSymlink | 0o777} {
		if _, err := unixPerm(bad); err == nil {
			t.Errorf("unixPerm(%v) succeeded", bad)
		}
	}
}

func TestAsRoot(t *testing.T) {
	if got := (&Client{user: "root"}).asRoot("/bin/sh -s"); got != "/bin/sh -s" {
		t.Errorf("root: %q", got)
	}
	if got := (&Client{user: "ubuntu"}).asRoot("/bin/sh -s"); got != "sudo -n /bin/sh -s" {
		t.Errorf("ubuntu: %q", got)
	}
}

func TestSignalNumber(t *testing.T) {
	for name, want := range map[string]int{"TERM": 15, "KILL": 9, "HUP": 1, "SEGV": 11} {
		if got, ok := signalNumber(name); !ok || got != want {
			t.Errorf("signalNumber(%s) = %d, %v", name, got, ok)
		}
	}
	for _, bad := range []string{"", "WINCH", "SIGTERM"} {
		if _, ok := signalNumber(bad); ok {
			t.Errorf("signalNumber(%q) found", bad)
		}
	}
}
