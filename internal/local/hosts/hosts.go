// Package hosts makes local hosts: Linux hosts on this machine that the
// machine operator reaches only over SSH and the network, as it would a VM.
//
// A host NAME has
//   - its own network namespace (kokm-NAME) with eth0 on a veth whose other
//     end is a port of the bridge kokm0 (10.202.0.1/24, inside the guarded
//     range), an address 10.202.0.N (the lowest free N ≥ 10) and a default
//     route via the bridge;
//   - its own mount namespace: /etc is an overlay of the machine's /etc,
//     /var, /usr/local, /root, /home, /opt, /srv and /tmp are directories of
//     its own under its state directory, /run and /dev/shm fresh tmpfs,
//     /proc and /sys its own, and the rest of the machine's root (/usr, /bin,
//     /lib, /sbin) read-only;
//   - its own hostname (UTS), process tree (PID 1 is kok's init) and IPC;
//   - its own cgroup view: a cgroup namespace rooted at /kok-hosts/NAME in
//     every hierarchy, mounted writable at /sys/fs/cgroup inside, so a
//     containerd and kubelet in the host make pod cgroups with default
//     settings (cgroupRoot "/");
//   - sshd on ADDRESS:22 with a host key made for it, logging in only root
//     with the key pair made for it.
//
// Everything is recorded under <stateDir>/hosts/NAME (host.json, keys, the
// host's own directories, init.pid, init.log) and removed by Delete.
//
// Files:
//
//	hosts.go    Host, Options; Create, Delete, List
//	network.go  the bridge, network namespaces, veths, addresses
//	cgroups.go  the hosts' cgroups
//	files.go    the host's directories, keys and sshd_config
//	init.go     the init (PID 1 of a host): namespaces, mounts, sshd, reaping
package hosts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/kubeonkube/kok/internal/local/proc"
)

const (
	// Bridge is the machine's bridge every host is plugged into.
	Bridge = "kokm0"
	// Subnet is the hosts' subnet; its first address is the bridge's.
	Subnet = "10.202.0.0/24"
	// FirstHost is the lowest last octet a host gets.
	FirstHost = 10
	// SSHPort and User are how a host is logged into.
	SSHPort = 22
	User    = "root"
	// CgroupParent is the cgroup (in every hierarchy) under which each host
	// has its own: /kok-hosts/NAME.
	CgroupParent = "/kok-hosts"
	// SSHD is the sshd a host runs (Debian's openssh-server).
	SSHD = "/usr/sbin/sshd"
	// MaxNameLength bounds a host name (a DNS label; also its hostname).
	MaxNameLength = 63

	netnsPrefix = "kokm-"
	fileName    = "host.json"
)

// Host is a local host as recorded in <stateDir>/hosts/NAME/host.json.
type Host struct {
	Name string `json:"name"`
	// Dir is the host's state directory.
	Dir string `json:"dir"`
	// StateDir is the state directory the host belongs to.
	StateDir string `json:"stateDir"`
	// Address is the host's IPv4 address on the bridge, PrefixLength its
	// subnet's, Gateway the bridge's address (its default route).
	Address      string `json:"address"`
	PrefixLength int    `json:"prefixLength"`
	Gateway      string `json:"gateway"`
	// Port and User: how sshd lets the key pair in.
	Port int    `json:"port"`
	User string `json:"user"`
	// HostKey is sshd's public key in authorized_keys form
	// ("ssh-ed25519 AAAA…"): pin it.
	HostKey string `json:"hostKey"`
	// PrivateKeyPath is the client key (OpenSSH PEM, 0600) that root's
	// authorized_keys holds.
	PrivateKeyPath string `json:"privateKeyPath"`
	// Netns is the network namespace (/var/run/netns/NETNS), Veth the
	// machine's end of the host's link.
	Netns string `json:"netns"`
	Veth  string `json:"veth"`
	// Cgroup is the host's cgroup in every hierarchy (/kok-hosts/NAME).
	Cgroup string `json:"cgroup"`
	// InitPID is the pid (as the machine sees it) of the host's init when it
	// was last started; init.pid pins the process.
	InitPID int       `json:"initPID,omitempty"`
	Created time.Time `json:"created"`
}

// Paths in the host's state directory.

// File is host.json.
func (h *Host) File() string { return filepath.Join(h.Dir, fileName) }

// PidFile pins the running init (package proc).
func (h *Host) PidFile() string { return filepath.Join(h.Dir, "init.pid") }

// LogFile holds what the init and sshd write.
func (h *Host) LogFile() string { return filepath.Join(h.Dir, "init.log") }

// Running reports whether the host's init runs.
func (h *Host) Running() bool {
	_, alive := proc.Alive(h.PidFile())
	return alive
}

// SSHAddress is host:port for SSH.
func (h *Host) SSHAddress() string {
	return net.JoinHostPort(h.Address, fmt.Sprint(h.Port))
}

// Options configure Create.
type Options struct {
	// StateDir holds the hosts under StateDir/hosts.
	StateDir string
	Name     string
	// Self is the kok executable: the host's init is `Self machine init`
	// (InitArgs).
	Self string
	// GuardCIDR is the range no packet may leave the machine from; the
	// hosts' subnet must lie in it.
	GuardCIDR string
	// Guard installs the network guard for GuardCIDR (local.EnsureGuard).
	// Create calls it before it creates anything.
	Guard func(ctx context.Context) error
	// Timeout bounds the wait for sshd to answer (default 20 s).
	Timeout time.Duration
	// Progress, when set, gets a line for each thing Create does.
	Progress io.Writer
}

// Result says what Create found and did.
type Result string

const (
	Created    Result = "created"
	Restarted  Result = "restarted"
	WasRunning Result = "already running"
)

// nameRE is a DNS label (RFC 1123).
var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// ValidateName checks that name can name a host: a DNS label of at most
// MaxNameLength characters (it becomes the hostname, the netns name
// kokm-NAME and the cgroup /kok-hosts/NAME; interface names are derived from
// a hash, see vethNames).
func ValidateName(name string) error {
	if len(name) > MaxNameLength {
		return fmt.Errorf("host name %q is %d characters long; at most %d fit a hostname", name, len(name), MaxNameLength)
	}
	if !nameRE.MatchString(name) {
		return fmt.Errorf("host name %q is not a DNS label: use lower-case letters, digits and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// vethNames are the machine's end of a host's link and the end's name inside
// before it is renamed eth0: interface names hold at most 15 bytes, so they
// come from a hash of the name.
func vethNames(name string) (machine, peer string) {
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:4])
	return "kmv" + h, "kmp" + h
}

func netnsName(name string) string { return netnsPrefix + name }

func hostsDir(stateDir string) string { return filepath.Join(stateDir, "hosts") }

func hostDir(stateDir, name string) string { return filepath.Join(hostsDir(stateDir), name) }

// Load reads the host NAME of a state directory; a missing host is an error
// that errors.Is(err, os.ErrNotExist).
func Load(stateDir, name string) (*Host, error) {
	return loadFile(filepath.Join(hostDir(stateDir, name), fileName))
}

func loadFile(file string) (*Host, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var h Host
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("%s is damaged (%v): delete the host and create it again", file, err)
	}
	return &h, nil
}

func (h *Host) save() error {
	data, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(h.File(), append(data, '\n'), 0o644)
}

// List returns the hosts of a state directory, by name.
func List(stateDir string) ([]*Host, error) {
	entries, err := os.ReadDir(hostsDir(stateDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var hs []*Host
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		h, err := loadFile(filepath.Join(hostsDir(stateDir), e.Name(), fileName))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		hs = append(hs, h)
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i].Name < hs[j].Name })
	return hs, nil
}

func checkRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("local hosts need root: they are made of network, mount, PID and cgroup namespaces (run it as root, e.g. with sudo)")
	}
	return nil
}

// tools are the programs Create runs, with the Debian package of each.
var tools = map[string]string{"ip": "iproute2", "nsenter": "util-linux", SSHD: "openssh-server"}

func checkTools() error {
	var missing []string
	for t, pkg := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, fmt.Sprintf("%s (apt-get install %s)", t, pkg))
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("local hosts need %s", strings.Join(missing, ", "))
	}
	return nil
}

// Create makes the host o.Name and starts it, or, when it exists, starts it
// again if its init is gone (same address and keys). It returns once the
// host's sshd answers.
func Create(ctx context.Context, o Options) (*Host, Result, error) {
	if err := ValidateName(o.Name); err != nil {
		return nil, "", err
	}
	if err := checkRoot(); err != nil {
		return nil, "", err
	}
	if o.Guard == nil {
		return nil, "", errors.New("creating a host: no network guard given (Options.Guard): nothing may leave the machine from a host")
	}
	if err := checkGuardCovers(o.GuardCIDR, Subnet); err != nil {
		return nil, "", err
	}
	// First, before anything exists that could send a packet.
	if err := o.Guard(ctx); err != nil {
		return nil, "", fmt.Errorf("installing the network guard for %s: %w", o.GuardCIDR, err)
	}
	if err := checkTools(); err != nil {
		return nil, "", err
	}
	if o.Self == "" {
		return nil, "", errors.New("creating a host: no kok executable to run its init (Options.Self)")
	}
	if o.Timeout == 0 {
		o.Timeout = 20 * time.Second
	}
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}
	unlock, err := lock(ctx)
	if err != nil {
		return nil, "", err
	}
	defer unlock()

	if err := checkClaim(o.Name, o.StateDir); err != nil {
		return nil, "", err
	}
	result := Restarted
	h, err := Load(o.StateDir, o.Name)
	if errors.Is(err, os.ErrNotExist) {
		result = Created
		if h, err = newHost(o); err != nil {
			return nil, "", err
		}
		fmt.Fprintf(progress, "host %s gets address %s\n", h.Name, h.Address)
	} else if err != nil {
		return nil, "", err
	}
	if err := ensureNetwork(ctx, h, o.GuardCIDR); err != nil {
		return nil, "", err
	}
	if err := ensureCgroups(h.Name); err != nil {
		return nil, "", err
	}
	if h.Running() {
		// Not only running: answering (a host that was just started
		// by another kok may still be coming up).
		if err := waitSSH(ctx, h, o.Timeout); err != nil {
			return h, "", err
		}
		return h, WasRunning, nil
	}
	if result == Restarted {
		fmt.Fprintf(progress, "host %s: its init is not running; starting it again\n", h.Name)
		// Whatever the old init left in the host's cgroups goes first.
		killCgroups(h.Name)
	}
	if err := startInit(ctx, o.Self, h); err != nil {
		return h, "", err
	}
	if err := waitSSH(ctx, h, o.Timeout); err != nil {
		return h, "", err
	}
	return h, result, nil
}

// checkGuardCovers makes sure every address of subnet lies in guard.
func checkGuardCovers(guard, subnet string) error {
	_, g, err := net.ParseCIDR(guard)
	if err != nil {
		return fmt.Errorf("guard range %q: %w", guard, err)
	}
	_, s, err := net.ParseCIDR(subnet)
	if err != nil {
		return err
	}
	gOnes, _ := g.Mask.Size()
	sOnes, _ := s.Mask.Size()
	if !g.Contains(s.IP) || sOnes < gOnes {
		return fmt.Errorf("the hosts' subnet %s lies outside the guarded range %s: their traffic could leave the machine", subnet, guard)
	}
	return nil
}

// newHost allocates an address and writes the host's files.
func newHost(o Options) (*Host, error) {
	dir := hostDir(o.StateDir, o.Name)
	// A directory without host.json is a create that did not finish.
	if err := removeDir(dir); err != nil {
		return nil, err
	}
	addr, err := allocate(o.StateDir)
	if err != nil {
		return nil, err
	}
	gw := nthIP(Subnet, 1)
	ones, _ := mustCIDR(Subnet).Mask.Size()
	veth, _ := vethNames(o.Name)
	h := &Host{
		Name: o.Name, Dir: dir, StateDir: o.StateDir,
		Address: addr.String(), PrefixLength: ones, Gateway: gw.String(),
		Port: SSHPort, User: User,
		PrivateKeyPath: filepath.Join(dir, "id_ed25519"),
		Netns:          netnsName(o.Name), Veth: veth,
		Cgroup:  CgroupParent + "/" + o.Name,
		Created: time.Now().UTC().Truncate(time.Second),
	}
	if err := writeHostFiles(h); err != nil {
		_ = removeDir(dir)
		return nil, err
	}
	if err := h.save(); err != nil {
		_ = removeDir(dir)
		return nil, err
	}
	return h, nil
}

// Delete stops the host NAME and removes everything of it: processes,
// network namespace and veth, cgroups, state directory; the bridge goes with
// the last host on it. A host that does not exist is not an error.
func Delete(ctx context.Context, stateDir, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := checkRoot(); err != nil {
		return err
	}
	unlock, err := lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	return deleteLocked(ctx, stateDir, name)
}

func deleteLocked(ctx context.Context, stateDir, name string) error {
	dir := hostDir(stateDir, name)
	h, err := Load(stateDir, name)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		// A create that did not finish: the names are derived.
		veth, _ := vethNames(name)
		h = &Host{Name: name, Dir: dir, StateDir: stateDir, Netns: netnsName(name), Veth: veth, Cgroup: CgroupParent + "/" + name}
	case err != nil:
		return err
	}
	stopInit(h)
	if checkClaim(name, stateDir) != nil {
		// The machine's resources of this name (netns, veth, cgroups)
		// are another state directory's host: only ours go.
		return removeDir(dir)
	}
	if left := killCgroups(h.Name); left > 0 {
		return fmt.Errorf("deleting host %s: %d processes in its cgroups did not end", name, left)
	}
	if err := removeNetwork(ctx, h); err != nil {
		return fmt.Errorf("deleting host %s: %w", name, err)
	}
	if err := removeCgroups(h.Name); err != nil {
		return fmt.Errorf("deleting host %s: %w", name, err)
	}
	if err := removeDir(dir); err != nil {
		return fmt.Errorf("deleting host %s: %w", name, err)
	}
	removeBridgeIfUnused(ctx)
	return nil
}

// DeleteAll deletes every host of a state directory (kok down) and returns
// their names.
func DeleteAll(ctx context.Context, stateDir string) ([]string, error) {
	entries, err := os.ReadDir(hostsDir(stateDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := checkRoot(); err != nil {
		return nil, err
	}
	unlock, err := lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var names []string
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || ValidateName(e.Name()) != nil {
			continue
		}
		if err := deleteLocked(ctx, stateDir, e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		names = append(names, e.Name())
	}
	if err := errors.Join(errs...); err != nil {
		return names, err
	}
	// Nothing of the hosts is left: the directory goes too.
	_ = os.Remove(hostsDir(stateDir))
	return names, nil
}

// stopInit ends the host's init: SIGTERM (it stops sshd and everything else
// in the host), then SIGKILL, which ends the whole PID namespace.
func stopInit(h *Host) {
	if id, alive := proc.Alive(h.PidFile()); alive {
		id.Stop(10 * time.Second)
	}
}

// lockFile serializes Create and Delete on this machine: the bridge,
// addresses, netns and cgroup names are the machine's, shared by every state
// directory.
const lockFile = "/run/kok-hosts.lock"

func lock(ctx context.Context) (func(), error) {
	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking the hosts: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("locking %s: %w", lockFile, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("waiting for another kok to finish with the hosts (%s): %w", lockFile, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
