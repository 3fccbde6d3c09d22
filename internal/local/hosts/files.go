package hosts

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// ownDir is a directory of the host's own: Target inside the host is the
// bind mount of Source (relative to the host's state directory).
type ownDir struct {
	Target, Source string
	Mode           os.FileMode
	// Subdirs are created in it (mode 0755, or Mode for "tmp").
	Subdirs []string
}

// ownDirs are the directories a host writes into instead of the machine's.
var ownDirs = []ownDir{
	{Target: "/var", Source: "fs/var", Mode: 0o755, Subdirs: []string{"lib", "log", "cache", "spool", "tmp"}},
	{Target: "/usr/local", Source: "fs/usr-local", Mode: 0o755, Subdirs: []string{"bin", "sbin", "lib", "share", "etc", "include", "src"}},
	{Target: "/root", Source: "fs/root", Mode: 0o700, Subdirs: []string{".ssh"}},
	{Target: "/home", Source: "fs/home", Mode: 0o755},
	{Target: "/opt", Source: "fs/opt", Mode: 0o755},
	{Target: "/srv", Source: "fs/srv", Mode: 0o755},
	{Target: "/tmp", Source: "fs/tmp", Mode: sticky},
}

// sticky is the mode of a directory everyone writes into (/tmp).
const sticky = os.ModeSticky | 0o777

// The overlay of the machine's /etc: etcUpper holds what the host changed.
const (
	etcUpper = "etc/upper"
	etcWork  = "etc/work"
)

// sshd's files inside the host (through the /etc overlay).
const (
	sshdConfig  = "/etc/ssh/sshd_config"
	hostKeyFile = "/etc/ssh/ssh_host_ed25519_key"
)

// writeFile writes atomically, so a crash never leaves half a file.
func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// mkdir creates dir with exactly mode (no umask).
func mkdir(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.Chmod(dir, mode)
}

// newKey is a new ed25519 key: its private half as OpenSSH PEM, its public
// half in authorized_keys form ("ssh-ed25519 AAAA…", with comment if given).
func newKey(comment string) ([]byte, string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, "", err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, "", err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	if comment != "" {
		line += " " + comment
	}
	return pem.EncodeToMemory(block), line, nil
}

// renderSSHDConfig is the host's sshd_config: on its address only, its own
// host key, root by key only.
func renderSSHDConfig(h *Host) string {
	return fmt.Sprintf(`# sshd of the local host %s (written by kok machine create)
ListenAddress %s
HostKey %s
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UsePAM no
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
`, h.Name, h.SSHAddress(), hostKeyFile)
}

// renderHosts is the host's /etc/hosts.
func renderHosts(h *Host) string {
	return fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", h.Address, h.Name)
}

// writeHostFiles creates the host's directories, its keys, sshd_config and
// the files of its /etc that are its own (hostname, hosts, machine-id).
func writeHostFiles(h *Host) error {
	if err := mkdir(h.Dir, 0o700); err != nil {
		return err
	}
	for _, d := range []string{etcUpper, etcWork} {
		if err := mkdir(filepath.Join(h.Dir, d), 0o755); err != nil {
			return err
		}
	}
	for _, d := range ownDirs {
		src := filepath.Join(h.Dir, d.Source)
		if err := mkdir(src, d.Mode); err != nil {
			return err
		}
		for _, s := range d.Subdirs {
			mode := os.FileMode(0o755)
			switch s {
			case "tmp":
				mode = sticky
			case ".ssh":
				mode = 0o700
			}
			if err := mkdir(filepath.Join(src, s), mode); err != nil {
				return err
			}
		}
	}
	varDir := filepath.Join(h.Dir, "fs/var")
	// As Debian has them: login records sshd writes to.
	for _, f := range []string{"log/lastlog", "log/wtmp", "log/btmp"} {
		if err := writeFile(filepath.Join(varDir, f), nil, 0o660); err != nil {
			return err
		}
	}
	for link, to := range map[string]string{"run": "/run", "lock": "/run/lock"} {
		if err := os.Symlink(to, filepath.Join(varDir, link)); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}

	// Keys: the host's, pinned by whoever connects, and the client's,
	// the only one root's authorized_keys holds.
	hostPriv, hostPub, err := newKey("root@" + h.Name)
	if err != nil {
		return err
	}
	clientPriv, clientPub, err := newKey("kok@" + h.Name)
	if err != nil {
		return err
	}
	h.HostKey = strings.Join(strings.Fields(hostPub)[:2], " ")
	upper := filepath.Join(h.Dir, etcUpper)
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	files := []struct {
		path string
		data string
		mode os.FileMode
	}{
		{h.PrivateKeyPath, string(clientPriv), 0o600},
		{h.PrivateKeyPath + ".pub", clientPub + "\n", 0o644},
		{filepath.Join(h.Dir, "known_hosts"), h.Address + " " + h.HostKey + "\n", 0o644},
		{filepath.Join(h.Dir, "fs/root/.ssh/authorized_keys"), clientPub + "\n", 0o600},
		{filepath.Join(upper, strings.TrimPrefix(hostKeyFile, "/etc/")), string(hostPriv), 0o600},
		{filepath.Join(upper, strings.TrimPrefix(hostKeyFile, "/etc/")+".pub"), hostPub + "\n", 0o644},
		{filepath.Join(upper, strings.TrimPrefix(sshdConfig, "/etc/")), renderSSHDConfig(h), 0o644},
		{filepath.Join(upper, "hostname"), h.Name + "\n", 0o644},
		{filepath.Join(upper, "hosts"), renderHosts(h), 0o644},
		{filepath.Join(upper, "machine-id"), hex.EncodeToString(id) + "\n", 0o444},
	}
	for _, f := range files {
		if err := writeFile(f.path, []byte(f.data), f.mode); err != nil {
			return err
		}
	}
	// The machine's own host keys of other types stay hidden (overlay
	// whiteouts): the host has only its own.
	keys, _ := filepath.Glob("/etc/ssh/ssh_host_*_key*")
	for _, k := range keys {
		base := filepath.Base(k)
		if strings.HasPrefix(base, "ssh_host_ed25519_key") {
			continue
		}
		if err := unix.Mknod(filepath.Join(upper, "ssh", base), unix.S_IFCHR, 0); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("hiding the machine's %s from the host: %w", k, err)
		}
	}
	return nil
}

func unmount(p string) error {
	return syscall.Unmount(p, syscall.MNT_DETACH)
}

// removeDir deletes a host's state directory; nothing may be mounted below
// it (the host's mounts live in its own mount namespace, gone with its
// processes).
func removeDir(dir string) error {
	ms, err := readMountinfo()
	if err != nil {
		return err
	}
	for _, mp := range mountpointsUnder(ms, dir) {
		if err := unmount(mp); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("unmounting %s: %w", mp, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	return nil
}
