// Package remote is how the machine operator reaches a host over SSH on day 0:
// it connects only to a host that proves the key pinned in the Machine
// (spec.ssh.hostKey), runs shell scripts as root, writes files atomically and
// reads the host's facts.
//
// Every call takes a context; cancelling it ends what the call started on the
// host (see Client.Run).
package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// DefaultDialTimeout bounds Dial when the context has no earlier deadline.
const DefaultDialTimeout = 10 * time.Second

// Defaults of the Machine API (SSHAccess).
const (
	DefaultPort = 22
	DefaultUser = "root"
)

var (
	// ErrUnreachable: no SSH connection could be set up with the host (TCP
	// connect or SSH version exchange/key exchange failed or timed out).
	ErrUnreachable = errors.New("cannot reach the host's sshd")
	// ErrHostKeyMismatch: the host presented another key than the pinned one.
	// The error is a *HostKeyMismatchError.
	ErrHostKeyMismatch = errors.New("host key mismatch")
	// ErrAuthentication: the host proved its key but refused to log the user
	// in with the private key.
	ErrAuthentication = errors.New("authentication failed")
)

// Target is a host as the Machine API describes it: where (Address, Port), as
// whom (User, PrivateKey), and the host key it must prove (HostKey).
type Target struct {
	// Address is an IP or DNS name.
	Address string
	// Port of sshd; 0 means 22.
	Port int32
	// User to log in as; empty means root. A user other than root runs
	// everything through `sudo -n` (the API asks for password-less sudo).
	User string
	// PrivateKey in PEM or OpenSSH form, unencrypted (the "ssh-privatekey"
	// key of a kubernetes.io/ssh-auth Secret).
	PrivateKey []byte
	// HostKey is the pinned host key in authorized_keys form
	// ("ssh-ed25519 AAAA... comment").
	HostKey string
}

func (t Target) addr() string {
	port := t.Port
	if port == 0 {
		port = DefaultPort
	}
	return net.JoinHostPort(t.Address, strconv.Itoa(int(port)))
}

func (t Target) user() string {
	if t.User == "" {
		return DefaultUser
	}
	return t.User
}

// HostKeyMismatchError is the error of a host that presented another key than
// the pinned one, or has no key of the pinned type. errors.Is(err,
// ErrHostKeyMismatch) reports it.
type HostKeyMismatchError struct {
	// Addr is host:port as dialled.
	Addr string
	// Pinned is the pinned key's SHA256 fingerprint (as ssh-keygen -l
	// prints it), PinnedType its type.
	Pinned, PinnedType string
	// Presented is the fingerprint of the key the host presented,
	// PresentedType its type; empty when the host has no key of the pinned
	// type, and Offered lists the types it has.
	Presented, PresentedType string
	Offered                  []string
}

func (e *HostKeyMismatchError) Error() string {
	presented := fmt.Sprintf("presented host key %s (%s)", e.Presented, e.PresentedType)
	if e.Presented == "" {
		presented = fmt.Sprintf("has no host key of the pinned type (it offers %s)", strings.Join(e.Offered, ", "))
	}
	return fmt.Sprintf("host %s %s, not the pinned %s (%s): "+
		"if the host was reinstalled, put its new key in spec.ssh.hostKey "+
		"(read it on the host itself, e.g. /etc/ssh/%s, not from this connection); "+
		"otherwise something else answers at this address",
		e.Addr, presented, e.Pinned, e.PinnedType, hostKeyFile(e.PinnedType))
}

// Unwrap makes errors.Is(err, ErrHostKeyMismatch) true.
func (e *HostKeyMismatchError) Unwrap() error { return ErrHostKeyMismatch }

// hostKeyFile is where OpenSSH keeps the public host key of a type.
func hostKeyFile(keyType string) string {
	switch keyType {
	case ssh.KeyAlgoED25519:
		return "ssh_host_ed25519_key.pub"
	case ssh.KeyAlgoRSA:
		return "ssh_host_rsa_key.pub"
	case ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
		return "ssh_host_ecdsa_key.pub"
	}
	return "ssh_host_*_key.pub"
}

// hostKeyAlgorithms are the algorithms to ask for so that a host with keys of
// several types presents the one of the pinned type (rather than, say, its
// ed25519 key when an RSA key is pinned).
func hostKeyAlgorithms(pinned ssh.PublicKey) []string {
	if pinned.Type() == ssh.KeyAlgoRSA {
		// SHA-1 signatures (ssh-rsa) are off: OpenSSH has signed with
		// SHA-2 since 7.2.
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	}
	return []string{pinned.Type()}
}

// Client is a connection to one host. It is safe for concurrent use: every
// call opens its own SSH session.
type Client struct {
	conn *ssh.Client
	addr string
	user string
}

// Dial connects to the host, accepting it only if it proves the pinned
// HostKey, and logs in with the private key. The connection must be set up
// before ctx ends and within DefaultDialTimeout.
//
// Errors: ErrUnreachable (wrapping the network error), a *HostKeyMismatchError
// (errors.Is ErrHostKeyMismatch), ErrAuthentication, or one that says which
// part of t is malformed. A ctx that ends first gives its error.
func Dial(ctx context.Context, t Target) (*Client, error) {
	addr := t.addr()
	user := t.user()
	if t.Address == "" {
		return nil, errors.New("connecting over SSH: no address")
	}
	pinned, _, _, _, err := ssh.ParseAuthorizedKey([]byte(t.HostKey))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: parsing the pinned host key (authorized_keys form, \"ssh-ed25519 AAAA...\"): %w", addr, err)
	}
	signer, err := ssh.ParsePrivateKey(t.PrivateKey)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("connecting to %s: the private key is passphrase-protected; give an unencrypted key", addr)
		}
		return nil, fmt.Errorf("connecting to %s: parsing the private key: %w", addr, err)
	}

	// Set by the callback once the host proved the pinned key: a handshake
	// that fails after that failed at logging in.
	var hostVerified atomic.Bool
	cfg := &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyAlgorithms: hostKeyAlgorithms(pinned),
		HostKeyCallback: func(_ string, _ net.Addr, presented ssh.PublicKey) error {
			if !bytes.Equal(presented.Marshal(), pinned.Marshal()) {
				return &HostKeyMismatchError{
					Addr:          addr,
					Presented:     ssh.FingerprintSHA256(presented),
					PresentedType: presented.Type(),
					Pinned:        ssh.FingerprintSHA256(pinned),
					PinnedType:    pinned.Type(),
				}
			}
			hostVerified.Store(true)
			return nil
		},
	}

	dialCtx, cancel := context.WithTimeout(ctx, DefaultDialTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dialCtx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connecting to %s: %w", addr, context.Cause(ctx))
		}
		return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, addr, err)
	}
	// The handshake has the same deadline; a ctx cancelled meanwhile closes
	// the connection under it.
	if deadline, ok := dialCtx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, addr, err)
		}
	}
	stop := context.AfterFunc(dialCtx, func() { _ = conn.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	stopped := stop()
	if err == nil && !stopped {
		// The context ended just as the handshake succeeded.
		_ = sc.Close()
		err = dialCtx.Err()
	}
	if err != nil {
		_ = conn.Close()
		var mismatch *HostKeyMismatchError
		var negotiation *ssh.AlgorithmNegotiationError
		switch {
		case errors.As(err, &mismatch):
			return nil, fmt.Errorf("connecting to %s: %w", addr, mismatch)
		case errors.As(err, &negotiation) && negotiation.What == "host key":
			return nil, fmt.Errorf("connecting to %s: %w", addr, &HostKeyMismatchError{
				Addr:       addr,
				Pinned:     ssh.FingerprintSHA256(pinned),
				PinnedType: pinned.Type(),
				Offered:    negotiation.RequestedAlgorithms,
			})
		case ctx.Err() != nil:
			return nil, fmt.Errorf("connecting to %s: %w", addr, context.Cause(ctx))
		case ctxExpired(ctx):
			// The connection's deadline, which is ctx's, fired a moment
			// before ctx's own timer.
			return nil, fmt.Errorf("connecting to %s: %w", addr, context.DeadlineExceeded)
		case hostVerified.Load():
			return nil, fmt.Errorf("logging in as %s at %s: %w (is the key's public half in the user's authorized_keys?): %w",
				user, addr, ErrAuthentication, err)
		default:
			return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, addr, err)
		}
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		_ = sc.Close()
		return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, addr, err)
	}
	// A host that dies silently is noticed by TCP keep-alives (net.Dialer
	// enables them), which end the connection and every call on it.
	return &Client{conn: ssh.NewClient(sc, chans, reqs), addr: addr, user: user}, nil
}

// ctxExpired reports whether ctx has a deadline that has passed.
func ctxExpired(ctx context.Context) bool {
	deadline, ok := ctx.Deadline()
	return ok && !time.Now().Before(deadline)
}

// Addr is host:port of the client's host.
func (c *Client) Addr() string { return c.addr }

// Close ends the connection; calls in flight on it fail.
func (c *Client) Close() error {
	if err := c.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("closing the connection to %s: %w", c.addr, err)
	}
	return nil
}
