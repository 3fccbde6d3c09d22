package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// MaxOutput is how much of each of stdout and stderr a Result keeps: the last
// MaxOutput bytes.
const MaxOutput = 64 << 10

// How long a cancelled call waits for the session to end after closing its
// stdin (the host's watchdog sends SIGTERM at once and SIGKILL a second
// later), and then after closing the session.
const (
	stopGrace  = 2 * time.Second
	closeGrace = time.Second
)

// Result is how a script ended on the host.
type Result struct {
	// ExitCode of the script; for a script killed by a signal, 128 + the
	// signal's number (as a shell reports it), or -1 for a signal SSH does
	// not name.
	ExitCode int
	// Signal that killed the script ("TERM", "KILL", ...), if one did.
	Signal string
	// Stdout and Stderr are the last MaxOutput bytes of each.
	Stdout, Stderr []byte
}

// StderrTail is the end of the script's stderr for a status message: at most
// n bytes, surrounding white space trimmed; when cut, it starts with "…" and
// at a line (or at least a character) boundary. Invalid UTF-8 is replaced.
func (r Result) StderrTail(n int) string {
	s := strings.ToValidUTF8(string(bytes.TrimSpace(r.Stderr)), "\uFFFD")
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	keep := n - len(ellipsis)
	if keep <= 0 {
		return ""
	}
	cut := len(s) - keep
	for cut < len(s) && !utf8.RuneStart(s[cut]) {
		cut++
	}
	rest := s[cut:]
	// Drop a partial first line when whole lines follow.
	if i := strings.IndexByte(rest, '\n'); s[cut-1] != '\n' && i >= 0 && i < len(rest)-1 {
		rest = rest[i+1:]
	}
	return ellipsis + strings.TrimLeft(rest, " \t\r\n")
}

// RunError is the error of a script that did not run or did not finish, so
// that it has no exit code: no session could be opened, the connection broke,
// or ctx ended (errors.Is(err, context.Canceled) then holds). A script that
// ran and exited non-zero is not an error: see Result.ExitCode.
type RunError struct {
	// Addr is the host's host:port.
	Addr string
	// Op is what failed ("opening a session", ...).
	Op  string
	Err error
}

func (e *RunError) Error() string {
	return fmt.Sprintf("running a script on %s: %s: %v", e.Addr, e.Op, e.Err)
}

func (e *RunError) Unwrap() error { return e.Err }

// Run runs script as root on the host with /bin/sh and waits for it to end.
// A non-zero exit is in the Result, not an error; the error, a *RunError, says
// the script did not run or did not finish. The Result holds the output that
// arrived either way.
//
// The script is fed to `/bin/sh -s` on stdin rather than given as `sh -c
// <script>`: it never appears in a process's command line on the host
// (/proc/*/cmdline is world-readable and scripts carry join tokens), it has
// no size limit (one argument is at most 128 KiB on Linux) and needs no
// quoting through the login shell. The shell reads all of it before running
// any of it (see wrapScript), and the script's commands find an empty stdin:
// one that reads stdin (a prompt, `ssh`, …) can neither eat the rest of the
// script nor hang. The script therefore has no input of its own; give it
// data with WriteFile.
//
// The script's processes end with the session: when ctx ends, Run closes the
// session's stdin, and a watchdog that the wrapper starts beside the script
// sees end-of-file and sends SIGTERM, then SIGKILL a second later, to the
// session's process group (sshd makes each session its own). A lost
// connection ends them the same way, so that a retried script never runs
// beside a stale one. (SSH "signal" requests are not used: OpenSSH refuses
// them for root logins, where it runs without privilege separation.)
// Processes that leave the group (setsid, services started through systemd)
// are left alone.
func (c *Client) Run(ctx context.Context, script string) (Result, error) {
	return c.exec(ctx, c.asRoot("/bin/sh -s"), strings.NewReader(wrapScript(script)), true)
}

// wrapScript is the text that /bin/sh -s runs for script: one compound
// command, which the shell parses whole before running any of it. In it, a
// watchdog reads the session's stdin (fd 3) until end-of-file and then ends
// the process group; the script runs in a subshell with stdin from /dev/null
// (so `exit`, `set -e` and its own EXIT traps end only the subshell), and
// then the watchdog is stopped and reaped, and the subshell's status is the
// shell's.
//
// Everything before the script is on its first line, and "( :; " keeps the
// subshell non-empty, so the shell's error messages name the script's own
// line numbers; a first line "#!/bin/sh" becomes a comment.
func wrapScript(script string) string {
	return "{ { while read -r _; do :; done; trap '' TERM; kill -s TERM 0; sleep 1; kill -s KILL 0; } <&3 >/dev/null 2>&1 & " +
		"kok_watchdog=$!; ( :; " + script + "\n" +
		") </dev/null 3<&-\n" +
		"kok_status=$?; kill $kok_watchdog 2>/dev/null; wait $kok_watchdog 2>/dev/null; exit $kok_status\n" +
		"} 3<&0\n"
}

// asRoot is cmd as the login shell must run it to run it as root.
func (c *Client) asRoot(cmd string) string {
	if c.user == "root" {
		return cmd
	}
	// -n: fail rather than prompt for a password.
	return "sudo -n " + cmd
}

// exec runs cmd (a command line for the login shell) with input on its
// stdin. With holdStdin, stdin stays open after input until the command
// ends: Run's watchdog takes its end as the order to stop the script.
func (c *Client) exec(ctx context.Context, cmd string, input io.Reader, holdStdin bool) (Result, error) {
	fail := func(op string, err error) error { return &RunError{Addr: c.addr, Op: op, Err: err} }
	if err := ctx.Err(); err != nil {
		return Result{}, fail("not started", context.Cause(ctx))
	}
	s, err := c.conn.NewSession()
	if err != nil {
		return Result{}, fail("opening a session", err)
	}
	defer func() { _ = s.Close() }()
	stdin, err := s.StdinPipe()
	if err != nil {
		return Result{}, fail("opening a session", err)
	}
	stdout, stderr := newTail(MaxOutput), newTail(MaxOutput)
	s.Stdout, s.Stderr = stdout, stderr
	result := func() Result { return Result{ExitCode: -1, Stdout: stdout.Bytes(), Stderr: stderr.Bytes()} }

	if err := s.Start(cmd); err != nil {
		return result(), fail("starting the command", err)
	}
	// A write that fails is seen as the command's failure (a short file,
	// a script cut short) or as the session's end.
	go func() {
		_, _ = io.Copy(stdin, input)
		if !holdStdin {
			_ = stdin.Close()
		}
	}()
	// waitErr is Wait's result once done is closed.
	var waitErr error
	done := make(chan struct{})
	go func() {
		waitErr = s.Wait()
		close(done)
	}()

	select {
	case <-done:
		err = waitErr
	case <-ctx.Done():
		return result(), fail("interrupted", stopSession(s, stdin, done, context.Cause(ctx)))
	}

	r := result()
	var exit *ssh.ExitError
	switch {
	case err == nil:
		r.ExitCode = 0
	case errors.As(err, &exit):
		r.ExitCode = exit.ExitStatus()
		if sig := exit.Signal(); sig != "" {
			r.Signal = sig
			r.ExitCode = -1
			if n, ok := signalNumber(sig); ok {
				r.ExitCode = 128 + n
			}
		}
	default:
		var missing *ssh.ExitMissingError
		if errors.As(err, &missing) {
			return r, fail("the session ended without an exit status (connection lost?)", err)
		}
		return r, fail("waiting for the command", err)
	}
	return r, nil
}

// stopSession ends a running session whose context ended: it closes stdin
// (Run's watchdog then ends the script's processes; a file being written is
// left short, so WriteFile keeps the old one), waits up to stopGrace for the
// command to end, then closes the session. It returns cause, with what went
// wrong along the way.
func stopSession(s *ssh.Session, stdin io.Closer, done <-chan struct{}, cause error) error {
	errs := []error{cause}
	if err := stdin.Close(); err != nil && !errors.Is(err, io.EOF) {
		errs = append(errs, fmt.Errorf("closing stdin: %w", err))
	}
	timer := time.NewTimer(stopGrace)
	defer timer.Stop()
	select {
	case <-done:
		return errors.Join(errs...)
	case <-timer.C:
	}
	if err := s.Close(); err != nil && !errors.Is(err, io.EOF) {
		errs = append(errs, fmt.Errorf("closing the session: %w", err))
	}
	timer.Reset(closeGrace)
	select {
	case <-done:
		errs = append(errs, fmt.Errorf("the command did not end within %v of closing its stdin; its processes may still run on the host", stopGrace))
	case <-timer.C:
		errs = append(errs, errors.New("the session did not close; its processes may still run on the host"))
	}
	return errors.Join(errs...)
}

// signalNumber is the Linux number of a signal SSH names (RFC 4254 6.10).
func signalNumber(name string) (int, bool) {
	for i, n := range [...]string{1: "HUP", 2: "INT", 3: "QUIT", 4: "ILL", 6: "ABRT", 8: "FPE", 9: "KILL",
		10: "USR1", 11: "SEGV", 12: "USR2", 13: "PIPE", 14: "ALRM", 15: "TERM"} {
		if n != "" && n == name {
			return i, true
		}
	}
	return 0, false
}

// tail is an io.Writer that keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newTail(maxBytes int) *tail { return &tail{max: maxBytes} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.max {
		// Compact now and then rather than on every write.
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return n, nil
}

// Bytes is a copy of the last max bytes written.
func (t *tail) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if len(b) > t.max {
		b = b[len(b)-t.max:]
	}
	return bytes.Clone(b)
}
