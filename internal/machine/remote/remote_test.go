package remote_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubeonkube/kok/internal/machine/remote"
	"github.com/kubeonkube/kok/internal/machine/remote/sshdtest"
)

// These tests run against a real OpenSSH sshd on 127.0.0.1 (sshdtest); the
// host it reaches is this machine, so what a script did is checked directly.

// dial connects to srv; the client is closed when the test ends.
func dial(t *testing.T, srv *sshdtest.Server) *remote.Client {
	t.Helper()
	c, err := remote.Dial(t.Context(), srv.Target())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

func TestRunExitCodeIsAResult(t *testing.T) {
	c := dial(t, sshdtest.Start(t))
	res, err := c.Run(t.Context(), "echo hello; echo oops >&2; exit 3")
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.ExitCode != 3 || string(res.Stdout) != "hello\n" || string(res.Stderr) != "oops\n" || res.Signal != "" {
		t.Errorf("Run = %+v (stdout %q, stderr %q), want exit 3, hello, oops", res, res.Stdout, res.Stderr)
	}

	res, err = c.Run(t.Context(), "#!/bin/sh\nset -eu\nid -u")
	if err != nil || res.ExitCode != 0 || strings.TrimSpace(string(res.Stdout)) != strconv.Itoa(os.Geteuid()) {
		t.Errorf("Run(id -u) = %+v, %v; want exit 0, %d", res, err, os.Geteuid())
	}
}

func TestRunFailingScriptStderrTail(t *testing.T) {
	c := dial(t, sshdtest.Start(t))
	script := `set -e
i=0; while [ $i -lt 2000 ]; do echo "progress line $i" >&2; i=$((i+1)); done
cat /nonexistent/kok-file
echo never reached`
	res, err := c.Run(t.Context(), script)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.ExitCode == 0 || len(res.Stdout) != 0 {
		t.Errorf("Run = exit %d, stdout %q; want a failure before the echo", res.ExitCode, res.Stdout)
	}
	tail := res.StderrTail(80)
	if len(tail) > 80 || !strings.HasPrefix(tail, "…") || !strings.HasSuffix(tail, "/nonexistent/kok-file: No such file or directory") {
		t.Errorf("StderrTail(80) = %q (%d bytes), want ≤ 80 bytes ending with cat's error", tail, len(tail))
	}
}

func TestRunKeepsTheLastOutput(t *testing.T) {
	c := dial(t, sshdtest.Start(t))
	// 200 KiB of 'a' then END, on both streams.
	res, err := c.Run(t.Context(), `head -c 204800 /dev/zero | tr '\0' a; echo END
head -c 204800 /dev/zero | tr '\0' b >&2; echo END >&2`)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Run = exit %d, %v", res.ExitCode, err)
	}
	for name, out := range map[string][]byte{"stdout": res.Stdout, "stderr": res.Stderr} {
		if len(out) != remote.MaxOutput || !bytes.HasSuffix(out, []byte("END\n")) {
			t.Errorf("%s: %d bytes ending %q, want the last %d ending END", name, len(out), out[max(0, len(out)-8):], remote.MaxOutput)
		}
	}
}

func TestRunScriptCannotReadItsOwnText(t *testing.T) {
	c := dial(t, sshdtest.Start(t))
	// cat reads stdin: it must get nothing (not the rest of the script) and
	// not wait for input; both lines after it run.
	script := "cat\necho after cat\n" + strings.Repeat("# padding\n", 5000) + "echo last line\n"
	res, err := c.Run(t.Context(), script)
	if err != nil || res.ExitCode != 0 || string(res.Stdout) != "after cat\nlast line\n" {
		t.Errorf("Run = %+v (stdout %q), %v; want after cat, last line", res, res.Stdout, err)
	}
}

func TestRunConcurrently(t *testing.T) {
	c := dial(t, sshdtest.Start(t))
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			res, err := c.Run(t.Context(), fmt.Sprintf("sleep 0.2; echo %d", i))
			if err != nil || string(res.Stdout) != fmt.Sprintf("%d\n", i) {
				t.Errorf("Run %d = %q, %v", i, res.Stdout, err)
			}
		})
	}
	wg.Wait()
}

func TestRunCancelEndsTheScript(t *testing.T) {
	c := dial(t, sshdtest.Start(t))
	pidFile := filepath.Join(t.TempDir(), "sleep.pid")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type ended struct {
		res remote.Result
		err error
		at  time.Time
	}
	done := make(chan ended, 1)
	go func() {
		res, err := c.Run(ctx, fmt.Sprintf("sh -c 'echo $$ >%s; exec sleep 30'", pidFile))
		done <- ended{res, err, time.Now()}
	}()

	pid := waitForPID(t, pidFile)
	cancelled := time.Now()
	cancel()
	var e ended
	select {
	case e = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run still running 10s after its context was cancelled")
	}
	took := e.at.Sub(cancelled)
	t.Logf("Run returned %v after cancel: %v", took.Round(time.Millisecond), e.err)
	if took > 2*time.Second {
		t.Errorf("Run returned %v after cancel, want ≤ 2s", took)
	}
	var runErr *remote.RunError
	if !errors.Is(e.err, context.Canceled) || !errors.As(e.err, &runErr) {
		t.Errorf("Run error = %v, want a *remote.RunError wrapping context.Canceled", e.err)
	}
	// And sleep is gone from the host, not left behind.
	err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 2*time.Second, true,
		func(context.Context) (bool, error) { return !running(pid), nil })
	if err != nil {
		t.Errorf("sleep (pid %d) still runs on the host after cancel", pid)
	}

	// The client still works.
	if res, err := c.Run(t.Context(), "echo ok"); err != nil || string(res.Stdout) != "ok\n" {
		t.Errorf("Run after a cancelled one = %q, %v", res.Stdout, err)
	}
}

func TestLostConnectionEndsTheScript(t *testing.T) {
	c := dial(t, sshdtest.Start(t))
	pidFile := filepath.Join(t.TempDir(), "sleep.pid")
	done := make(chan error, 1)
	go func() {
		_, err := c.Run(t.Context(), fmt.Sprintf("sh -c 'echo $$ >%s; exec sleep 30'", pidFile))
		done <- err
	}()
	pid := waitForPID(t, pidFile)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		var runErr *remote.RunError
		if !errors.As(err, &runErr) {
			t.Errorf("Run on a closed connection = %v, want a *remote.RunError", err)
		}
		t.Logf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run still running 5s after its connection was closed")
	}
	err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 3*time.Second, true,
		func(context.Context) (bool, error) { return !running(pid), nil })
	if err != nil {
		t.Errorf("sleep (pid %d) still runs on the host after the connection was lost", pid)
	}
}

// waitForPID waits for a script to write its pid to file.
func waitForPID(t *testing.T, file string) int {
	t.Helper()
	var pid int
	err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) {
			b, err := os.ReadFile(file)
			if err != nil || !bytes.HasSuffix(b, []byte("\n")) {
				return false, nil
			}
			pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
			return err == nil, err
		})
	if err != nil {
		t.Fatalf("the script did not write its pid: %v", err)
	}
	return pid
}

// running reports whether pid is a live (not zombie) process.
func running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func TestWriteFile(t *testing.T) {
	c := dial(t, sshdtest.Start(t))
	dir := filepath.Join(t.TempDir(), "a", "b")
	file := filepath.Join(dir, "data.bin")

	// Every byte value, \r\n, NULs, no trailing newline; more than a
	// channel window (the receiver's flow control) and remote.MaxOutput.
	data := make([]byte, 3<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	for i := range 256 {
		data[i] = byte(i)
	}
	start := time.Now()
	if err := c.WriteFile(t.Context(), file, data, 0o640); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	t.Logf("wrote %d MiB in %v", len(data)>>20, time.Since(start).Round(time.Millisecond))
	checkFile(t, file, data, 0o640)

	// Replaced, with another mode; setuid too.
	if err := c.WriteFile(t.Context(), file, []byte("short\n"), 0o755|os.ModeSetuid); err != nil {
		t.Fatalf("WriteFile again: %v", err)
	}
	checkFile(t, file, []byte("short\n"), 0o755|os.ModeSetuid)
	if err := c.WriteFile(t.Context(), file, nil, 0o600); err != nil {
		t.Fatalf("WriteFile (empty): %v", err)
	}
	checkFile(t, file, nil, 0o600)

	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Errorf("%s holds %v (%v), want only data.bin: no temporary file left", dir, entries, err)
	}

	// A parent that is a file: an error with the host's words, and the file
	// stays.
	err = c.WriteFile(t.Context(), filepath.Join(file, "child"), data, 0o644)
	if err == nil || !strings.Contains(err.Error(), "mkdir: cannot create directory") {
		t.Errorf("WriteFile under a file = %v, want mkdir's own error", err)
	}
	checkFile(t, file, nil, 0o600)

	for _, bad := range []string{"relative/path", "/a/../b", "/"} {
		if err := c.WriteFile(t.Context(), bad, data, 0o644); err == nil {
			t.Errorf("WriteFile(%q) = nil, want an error", bad)
		}
	}
}

func checkFile(t *testing.T, file string, want []byte, mode os.FileMode) {
	t.Helper()
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: %d bytes differ from the %d written", file, len(got), len(want))
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != mode {
		t.Errorf("%s: mode %v, want %v", file, fi.Mode(), mode)
	}
}

func TestFactsOfThisMachine(t *testing.T) {
	c := dial(t, sshdtest.Start(t))
	start := time.Now()
	facts, err := c.Facts(t.Context())
	if err != nil {
		t.Fatalf("Facts: %v", err)
	}
	t.Logf("Facts in %v: %+v", time.Since(start).Round(time.Millisecond), facts)

	osRelease, err := os.ReadFile("/etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	for key, got := range map[string]string{"ID": facts.OS, "VERSION_ID": facts.OSVersion} {
		want := ""
		for l := range strings.Lines(string(osRelease)) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), key+"="); ok {
				want = strings.Trim(v, `"'`)
			}
		}
		if got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if facts.Arch != runtime.GOARCH {
		t.Errorf("Arch = %q, want %q", facts.Arch, runtime.GOARCH)
	}
	if want := command(t, "uname", "-r"); facts.KernelVersion != want {
		t.Errorf("KernelVersion = %q, want %q", facts.KernelVersion, want)
	}
	if want := command(t, "nproc"); strconv.Itoa(int(facts.CPUs)) != want {
		t.Errorf("CPUs = %d, want %s (nproc)", facts.CPUs, want)
	}
	meminfo, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	var kb int64
	if _, err := fmt.Sscanf(string(meminfo), "MemTotal: %d kB", &kb); err != nil || facts.MemoryBytes != kb*1024 {
		t.Errorf("MemoryBytes = %d, want %d KiB from /proc/meminfo (%v)", facts.MemoryBytes, kb, err)
	}
	if want, err := os.Hostname(); err != nil || facts.Hostname != want {
		t.Errorf("Hostname = %q, want %q (%v)", facts.Hostname, want, err)
	}
}

func command(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), name, args...).Output()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

func TestDialWrongHostKey(t *testing.T) {
	srv := sshdtest.Start(t)
	target := srv.Target()
	target.HostKey = sshdtest.NewHostKey(t)
	c, err := remote.Dial(t.Context(), target)
	if err == nil {
		_ = c.Close()
		t.Fatal("Dial with a wrong pinned key succeeded")
	}
	t.Logf("Dial: %v", err)
	if !errors.Is(err, remote.ErrHostKeyMismatch) {
		t.Errorf("Dial error %v is not remote.ErrHostKeyMismatch", err)
	}
	hostPub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(srv.Target().HostKey))
	pinnedPub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(target.HostKey))
	for _, want := range []string{ssh.FingerprintSHA256(hostPub), ssh.FingerprintSHA256(pinnedPub), "spec.ssh.hostKey"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Dial error %q does not name %s", err, want)
		}
	}
	// The key was not even offered to a host that did not prove itself.
	if strings.Contains(srv.Log(), "publickey") {
		t.Errorf("the client authenticated to an unproven host:\n%s", srv.Log())
	}
}

func TestDialPinnedTypeTheHostLacks(t *testing.T) {
	srv := sshdtest.Start(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	target := srv.Target()
	target.HostKey = string(ssh.MarshalAuthorizedKey(pub))
	_, err = remote.Dial(t.Context(), target)
	t.Logf("Dial: %v", err)
	var mismatch *remote.HostKeyMismatchError
	if !errors.As(err, &mismatch) || !strings.Contains(err.Error(), "ssh-ed25519") || !strings.Contains(err.Error(), "ssh_host_rsa_key.pub") {
		t.Errorf("Dial with an RSA key pinned at an ed25519-only host = %v, want a mismatch naming what it offers", err)
	}
}

func TestDialWrongClientKey(t *testing.T) {
	target := sshdtest.Start(t).Target()
	target.PrivateKey = sshdtest.NewPrivateKey(t)
	_, err := remote.Dial(t.Context(), target)
	t.Logf("Dial: %v", err)
	if !errors.Is(err, remote.ErrAuthentication) || errors.Is(err, remote.ErrUnreachable) {
		t.Errorf("Dial with a key the host does not know = %v, want remote.ErrAuthentication", err)
	}
}

func TestDialNothingListening(t *testing.T) {
	target := remote.Target{Address: "127.0.0.1", Port: sshdtest.FreePort(t), PrivateKey: sshdtest.NewPrivateKey(t), HostKey: sshdtest.NewHostKey(t)}
	start := time.Now()
	_, err := remote.Dial(t.Context(), target)
	t.Logf("Dial in %v: %v", time.Since(start).Round(time.Millisecond), err)
	if !errors.Is(err, remote.ErrUnreachable) || !strings.Contains(err.Error(), "cannot reach") {
		t.Errorf("Dial to a closed port = %v, want remote.ErrUnreachable saying cannot reach", err)
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Errorf("Dial error %v does not wrap the *net.OpError", err)
	}
}

func TestDialTimeoutFromContext(t *testing.T) {
	// A listener that accepts and never speaks SSH.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = conn.Close() })
		}
	}()
	target := remote.Target{Address: "127.0.0.1", Port: int32(l.Addr().(*net.TCPAddr).Port),
		PrivateKey: sshdtest.NewPrivateKey(t), HostKey: sshdtest.NewHostKey(t)}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = remote.Dial(ctx, target)
	took := time.Since(start)
	t.Logf("Dial in %v: %v", took.Round(time.Millisecond), err)
	if !errors.Is(err, context.DeadlineExceeded) || took > 2*time.Second {
		t.Errorf("Dial to a silent listener = %v after %v, want the context's deadline after ~300ms", err, took)
	}
}

func TestDialRefusesBadTargets(t *testing.T) {
	priv, hostKey := sshdtest.NewPrivateKey(t), sshdtest.NewHostKey(t)
	for _, tc := range []struct {
		name string
		t    remote.Target
		want string
	}{
		{"no address", remote.Target{PrivateKey: priv, HostKey: hostKey}, "no address"},
		{"no host key", remote.Target{Address: "127.0.0.1", PrivateKey: priv}, "pinned host key"},
		{"bad host key", remote.Target{Address: "127.0.0.1", PrivateKey: priv, HostKey: "ssh-ed25519 !!!"}, "pinned host key"},
		{"no private key", remote.Target{Address: "127.0.0.1", HostKey: hostKey}, "parsing the private key"},
		{"private key", remote.Target{Address: "127.0.0.1", PrivateKey: []byte("not a key"), HostKey: hostKey}, "parsing the private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := remote.Dial(t.Context(), tc.t)
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, remote.ErrUnreachable) {
				t.Errorf("Dial = %v, want an error about the %s", err, tc.want)
			}
		})
	}
}
