// Package sshdtest starts a real OpenSSH sshd on 127.0.0.1 for tests of code
// that reaches hosts through package remote: the host is this machine, logged
// into as the user running the test, with a host key and a client key made
// for the test.
//
// Without /usr/sbin/sshd (Debian's openssh-server) a test that starts one is
// skipped, unless $CI is set: CI installs it (.ci/run), so there it fails.
package sshdtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubeonkube/kok/internal/machine/remote"
)

// Path is the sshd started.
const Path = "/usr/sbin/sshd"

// Server is an sshd a test started.
type Server struct {
	target remote.Target
	log    *syncBuffer
}

// Target reaches the server as the user running the test, with the client key
// it authorizes and its host key pinned.
func (s *Server) Target() remote.Target {
	t := s.target
	t.PrivateKey = bytes.Clone(t.PrivateKey)
	return t
}

// Log is what sshd logged so far (LogLevel VERBOSE): connections, accepted
// keys, sessions.
func (s *Server) Log() string { return s.log.String() }

// Start starts sshd on a free port of 127.0.0.1 with its own configuration,
// host key and authorized key in a temporary directory. It is stopped (the
// process Start started, by its PID) when the test ends, and its log is
// printed if the test failed.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := os.Stat(Path); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s is missing (apt-get install openssh-server): %v", Path, err)
		}
		t.Fatalf("%s is missing and CI is set (.ci/run installs openssh-server): %v", Path, err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatalf("current user: %v", err)
	}
	if os.Geteuid() == 0 {
		// sshd's privilege separation directory; Debian's service creates it.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("creating /run/sshd: %v", err)
		}
	}

	dir := t.TempDir()
	hostKeyFile := filepath.Join(dir, "ssh_host_ed25519_key")
	hostPriv, hostPub := newKey(t)
	if err := os.WriteFile(hostKeyFile, hostPriv, 0o600); err != nil {
		t.Fatal(err)
	}
	clientPriv, clientPub := newKey(t)
	authorizedKeys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorizedKeys, []byte(clientPub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	config := filepath.Join(dir, "sshd_config")
	// LogLevel VERBOSE, not DEBUG: with -e, a session's debug lines reach
	// the session's stderr.
	conf := fmt.Sprintf(`ListenAddress 127.0.0.1
Port %d
HostKey %s
AuthorizedKeysFile %s
PidFile %s
PermitRootLogin yes
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
LogLevel VERBOSE
`, port, hostKeyFile, authorizedKeys, filepath.Join(dir, "sshd.pid"))
	if err := os.WriteFile(config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	log := &syncBuffer{}
	cmd := exec.Command(Path, "-D", "-e", "-f", config)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sshd: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("sshd log:\n%s", log)
		}
	})

	// Ready when it sends its version banner.
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	err = wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) {
			select {
			case <-exited:
				return false, errors.New("sshd exited")
			default:
			}
			return banner(addr), nil
		})
	if err != nil {
		t.Fatalf("sshd not listening on %s: %v\n%s", addr, err, log)
	}
	return &Server{
		target: remote.Target{Address: "127.0.0.1", Port: port, User: u.Username, PrivateKey: clientPriv, HostKey: hostPub},
		log:    log,
	}
}

// NewHostKey is a new key's public half in authorized_keys form: a host key
// no server has.
func NewHostKey(t testing.TB) string {
	t.Helper()
	_, pub := newKey(t)
	return pub
}

// NewPrivateKey is a new private key (OpenSSH PEM) that no server authorizes.
func NewPrivateKey(t testing.TB) []byte {
	t.Helper()
	priv, _ := newKey(t)
	return priv
}

// FreePort is a port of 127.0.0.1 that nothing listened on a moment ago.
func FreePort(t testing.TB) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

// newKey is a new ed25519 key: its private half in PEM (OpenSSH form), its
// public half in authorized_keys form.
func newKey(t testing.TB) ([]byte, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(block), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
}

// banner reports whether an SSH server answers at addr.
func banner(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-2.0-")
}

// syncBuffer is a bytes.Buffer a process and a test can share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
