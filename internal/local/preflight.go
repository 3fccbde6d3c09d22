package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"time"
)

// AptPackages are the Debian packages the local meta cluster needs.
// openssh-server gives local hosts their sshd (its service on the machine
// is not started: see ensurePackages); procps the pgrep and pkill their
// components' scripts use.
var AptPackages = []string{"containerd", "runc", "containernetworking-plugins", "iptables", "conntrack", "iproute2", "kmod",
	"openssh-server", "procps"}

// requiredFiles are what the packages provide, checked before installing.
var requiredFiles = map[string]string{
	"containerd":              "containerd",
	"ctr":                     "containerd",
	"runc":                    "runc",
	"/usr/lib/cni/bridge":     "containernetworking-plugins",
	"/usr/lib/cni/host-local": "containernetworking-plugins",
	"/usr/lib/cni/loopback":   "containernetworking-plugins",
	"/usr/lib/cni/portmap":    "containernetworking-plugins",
	"iptables":                "iptables",
	"conntrack":               "conntrack",
	"ip":                      "iproute2",
	"nsenter":                 "util-linux",
	"containerd-shim-runc-v2": "containerd",
	"/usr/sbin/sshd":          "openssh-server",
	"pgrep":                   "procps",
}

// ports the meta cluster listens on, with their owners.
var ports = []struct {
	port  int
	owner string
}{
	{2379, "etcd client"}, {2380, "etcd peer"}, {2381, "etcd metrics"},
	{10248, "kubelet healthz"}, {10250, "kubelet"}, {10249, "kube-proxy metrics"},
	{10256, "kube-proxy healthz"}, {10257, "kube-controller-manager"}, {10259, "kube-scheduler"},
}

// PreflightError is a failed check: what is wrong and how to fix it.
type PreflightError struct{ Problem, Fix string }

func (e *PreflightError) Error() string { return e.Problem + "\n  fix: " + e.Fix }

// checkRoot: the meta cluster runs containerd, the kubelet and iptables.
func checkRoot() error {
	if os.Geteuid() != 0 {
		return &PreflightError{"kok up must run as root: it starts containerd and the kubelet and sets up iptables and a bridge",
			"run it as root, e.g. sudo kok up"}
	}
	return nil
}

func checkCgroups() error {
	hs, err := cgroupHierarchies()
	if err != nil || len(hs) == 0 {
		return &PreflightError{"no cgroup filesystem is mounted under /sys/fs/cgroup; the kubelet cannot run pods without cgroups",
			"mount the cgroup hierarchies (cgroup v1 controllers or cgroup2) under /sys/fs/cgroup"}
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return nil // cgroup v2
	}
	for _, c := range []string{"cpu", "memory", "pids", "cpuset"} {
		if _, err := os.Stat("/sys/fs/cgroup/" + c); err != nil {
			return &PreflightError{fmt.Sprintf("the %s cgroup controller is not mounted under /sys/fs/cgroup", c),
				"mount it (mount -t cgroup -o " + c + " cgroup /sys/fs/cgroup/" + c + ")"}
		}
	}
	return nil
}

// checkPorts reports the first port already taken by another process: c's
// apiserver and registry ports, or one of ports.
func checkPorts(c *Config) error {
	all := append([]struct {
		port  int
		owner string
	}{{c.APIServerPort, "kube-apiserver"}, {c.RegistryPort, "kok-registry"}}, ports...)
	for _, p := range all {
		// A process killed a moment ago (a crash, or kok's own leftovers
		// just stopped) may still hold its port while it exits.
		err := poll(context.Background(), 250*time.Millisecond, 5*time.Second, func(context.Context) (bool, error) {
			l, err := net.Listen("tcp", fmt.Sprintf(":%d", p.port))
			if err != nil {
				// A pod of this cluster on the node's network (the
				// registry) outlives a crash of containerd and the
				// kubelet: it is this cluster's, not a conflict.
				return heldByPod(p.port, c.CgroupRoot()), nil
			}
			l.Close()
			return true, nil
		}, func() error {
			who := portOwner(p.port)
			return &PreflightError{fmt.Sprintf("port %d (%s) is already in use%s", p.port, p.owner, who),
				"stop whatever listens there (another Kubernetes? see 'ss -ltnp'), or 'kok down' if it is an old kok"}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// heldByPod: the process listening on port runs in the pods' cgroup root.
func heldByPod(port int, cgroupRoot string) bool {
	out, err := exec.Command("ss", "-ltnpH", fmt.Sprintf("sport = :%d", port)).Output()
	if err != nil {
		return false
	}
	m := ssPid.FindStringSubmatch(string(out))
	if m == nil {
		return false
	}
	data, err := os.ReadFile("/proc/" + m[1] + "/cgroup")
	if err != nil {
		return false
	}
	return podCgroup(string(data), cgroupRoot)
}

var ssPid = regexp.MustCompile(`pid=([0-9]+)`)

// podCgroup: a /proc/PID/cgroup text places the process under root in
// its memory hierarchy (cgroup v1) or its unified one (v2).
func podCgroup(procCgroup, root string) bool {
	for _, l := range strings.Fields(procCgroup) {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 || !strings.HasPrefix(parts[2], root+"/") {
			continue
		}
		if parts[1] == "" || slices.Contains(strings.Split(parts[1], ","), "memory") {
			return true
		}
	}
	return false
}

func portOwner(port int) string {
	out, err := exec.Command("ss", "-ltnpH", fmt.Sprintf("sport = :%d", port)).Output()
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		return ""
	}
	line := strings.Fields(strings.Split(strings.TrimSpace(string(out)), "\n")[0])
	return " by " + line[len(line)-1]
}

func missingPackages() []string {
	seen := map[string]bool{}
	var pkgs []string
	for file, pkg := range requiredFiles {
		var err error
		if strings.HasPrefix(file, "/") {
			_, err = os.Stat(file)
		} else {
			_, err = exec.LookPath(file)
		}
		if err != nil && !seen[pkg] {
			seen[pkg] = true
			pkgs = append(pkgs, pkg)
		}
	}
	return pkgs
}

// ensurePackages installs missing Debian packages with apt-get.
func ensurePackages(ctx context.Context, progress io.Writer) error {
	missing := missingPackages()
	if len(missing) == 0 {
		return nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return &PreflightError{fmt.Sprintf("missing packages %v and no apt-get to install them", missing),
			"install containerd, runc, the CNI plugins (in /usr/lib/cni), iptables, conntrack and iproute2"}
	}
	fmt.Fprintf(progress, "    installing %s with apt-get\n", strings.Join(missing, " "))
	// Packages with a service (openssh-server) must not start it on this
	// machine: a policy-rc.d refuses every start while apt runs, unless
	// the machine has its own.
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\n# kok up: no service starts while it installs packages\nexit 101\n"), 0o755); err == nil {
			defer func() { _ = os.Remove(policy) }()
		}
	}
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "-q", "--no-install-recommends"}, AptPackages...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, tail(string(out), 600))
		}
		return nil
	}
	if err := install(); err != nil {
		// The package lists may be missing or stale: refresh and retry.
		if out, uerr := exec.CommandContext(ctx, "apt-get", "update", "-q").CombinedOutput(); uerr != nil {
			return &PreflightError{"apt-get update failed, so missing packages cannot be installed: " + tail(string(out), 400),
				"check the network path to the Debian mirror, or install by hand: apt-get install " + strings.Join(AptPackages, " ")}
		}
		if err := install(); err != nil {
			return &PreflightError{"installing packages failed: " + err.Error(),
				"install by hand: apt-get install " + strings.Join(AptPackages, " ")}
		}
	}
	if m := missingPackages(); len(m) > 0 {
		return &PreflightError{fmt.Sprintf("packages %v are installed but their programs are still missing", m),
			"check PATH holds /usr/sbin and /usr/bin"}
	}
	return nil
}

// checkStateDir refuses a state directory that another tool owns.
func checkStateDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return &PreflightError{fmt.Sprintf("state directory %s cannot be read: %v", dir, err), "choose another with --state-dir"}
	}
	if len(entries) > 0 {
		if _, err := os.Stat(configFile(dir)); err != nil {
			if _, perr := os.Stat(dir + "/pki"); perr != nil {
				return &PreflightError{fmt.Sprintf("state directory %s is not empty and holds no kok state", dir),
					"choose another with --state-dir, or empty it"}
			}
		}
	}
	return nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
