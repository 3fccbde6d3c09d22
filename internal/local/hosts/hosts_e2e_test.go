//go:build e2e

package hosts_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/local/hosts"
	"github.com/kubeonkube/kok/internal/machine/remote"
)

// TestMain lets the test binary be the hosts' init, as kok is: Create runs
// `<self> machine init …`.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "machine" && os.Args[2] == "init" {
		var o hosts.InitOptions
		fs := flag.NewFlagSet("init", flag.ContinueOnError)
		fs.StringVar(&o.Name, "name", "", "")
		fs.StringVar(&o.Dir, "dir", "", "")
		fs.BoolVar(&o.PID1, "pid1", false, "")
		if err := fs.Parse(os.Args[3:]); err != nil {
			os.Exit(2)
		}
		if err := hosts.Init(context.Background(), o); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getpid() == 1 {
		fmt.Fprintf(os.Stderr, "the test binary runs as PID 1 but not as a host's init: %q\n", os.Args)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func requirements(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("local hosts need root")
	}
	for _, p := range []string{hosts.SSHD, "ip", "nsenter", "iptables"} {
		if _, err := exec.LookPath(p); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is missing and CI is set: %v", p, err)
			}
			t.Skipf("%s is missing: %v", p, err)
		}
	}
}

// guardChainExists reports whether kok's network guard is installed.
func guardChainExists() bool {
	return exec.Command("iptables", "-w", "-t", "filter", "-S", local.GuardChain).Run() == nil
}

// run runs script on the host and returns its stdout; a failure ends the test.
func run(t *testing.T, ctx context.Context, c *remote.Client, name, script string) string {
	t.Helper()
	res, err := c.Run(ctx, script)
	if err != nil {
		t.Fatalf("%s: running %q: %v", name, script, err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("%s: %q exited %d: %s%s", name, script, res.ExitCode, res.Stdout, res.Stderr)
	}
	return strings.TrimSpace(string(res.Stdout))
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func TestHosts(t *testing.T) {
	requirements(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	stateDir := t.TempDir()
	suffix := make([]byte, 2)
	_, _ = rand.Read(suffix)
	names := []string{"e2e-a-" + hex.EncodeToString(suffix), "e2e-b-" + hex.EncodeToString(suffix)}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cidr := local.DefaultConfig().GuardCIDR
	hadGuard := guardChainExists()
	hadBridge := exists("/sys/class/net/" + hosts.Bridge)
	opts := func(name string) hosts.Options {
		return hosts.Options{
			StateDir: stateDir, Name: name, Self: self, GuardCIDR: cidr,
			Guard: func(ctx context.Context) error { return local.EnsureGuard(ctx, cidr) },
		}
	}
	t.Cleanup(func() {
		for _, n := range names {
			if err := hosts.Delete(context.Background(), stateDir, n); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		if !hadGuard {
			local.RemoveGuard(context.Background())
		}
	})
	for _, f := range []string{"/etc/kok-test", "/usr/local/bin/x"} {
		if exists(f) {
			t.Fatalf("%s exists on the machine already: the test could not tell the host's from the machine's", f)
		}
	}

	// Create both; sshd answers when Create returns.
	hs := map[string]*hosts.Host{}
	for _, n := range names {
		start := time.Now()
		h, res, err := hosts.Create(ctx, opts(n))
		if err != nil {
			t.Fatalf("creating %s: %v", n, err)
		}
		t.Logf("host %s %s in %.3fs at %s (init pid %d)", n, res, time.Since(start).Seconds(), h.Address, h.InitPID)
		if res != hosts.Created {
			t.Errorf("creating %s: %s, want %s", n, res, hosts.Created)
		}
		hs[n] = h
	}
	a, b := hs[names[0]], hs[names[1]]
	if a.Address != "10.202.0.10" && !hadBridge {
		t.Errorf("first host got %s, want the lowest free address 10.202.0.10", a.Address)
	}
	if a.Address == b.Address {
		t.Fatalf("both hosts got %s", a.Address)
	}
	if _, res, err := hosts.Create(ctx, opts(names[0])); err != nil || res != hosts.WasRunning {
		t.Errorf("creating %s again: %s, %v; want %s", names[0], res, err, hosts.WasRunning)
	}
	if l, err := hosts.List(stateDir); err != nil || len(l) != 2 {
		t.Errorf("List: %d hosts, %v; want 2", len(l), err)
	}
	// Memory of an idle host: its init and sshd.
	for _, h := range hs {
		init := memory(h.InitPID)
		var sshd [2]int64
		for _, pid := range children(h.InitPID) {
			m := memory(pid)
			sshd[0], sshd[1] = sshd[0]+m[0], sshd[1]+m[1]
		}
		t.Logf("host %s: init RSS %.1f MiB (anonymous %.1f), sshd RSS %.1f MiB (anonymous %.1f)", h.Name,
			float64(init[0])/(1<<20), float64(init[1])/(1<<20), float64(sshd[0])/(1<<20), float64(sshd[1])/(1<<20))
	}

	// The machine listens on the bridge address; the hosts must reach it.
	l, err := net.Listen("tcp", net.JoinHostPort(a.Gateway, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("kok\n"))
			_ = c.Close()
		}
	}()
	machinePort := l.Addr().(*net.TCPAddr).Port

	clients := map[string]*remote.Client{}
	for _, h := range hs {
		key, err := os.ReadFile(h.PrivateKeyPath)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c, err := remote.Dial(ctx, remote.Target{Address: h.Address, Port: int32(h.Port), User: h.User, PrivateKey: key, HostKey: h.HostKey})
		if err != nil {
			t.Fatalf("ssh to %s: %v\n%s", h.Name, err, readLog(h))
		}
		t.Logf("ssh login to %s in %.3fs", h.Name, time.Since(start).Seconds())
		defer func() { _ = c.Close() }()
		clients[h.Name] = c
	}

	for _, h := range []*hosts.Host{a, b} {
		c := clients[h.Name]
		other := b
		if h == b {
			other = a
		}
		t.Run(h.Name, func(t *testing.T) {
			if got := run(t, ctx, c, h.Name, "hostname"); got != h.Name {
				t.Errorf("hostname %q, want %q", got, h.Name)
			}
			if got := run(t, ctx, c, h.Name, "ip -4 -o addr show"); !strings.Contains(got, "eth0") || !strings.Contains(got, " "+h.Address+"/24 ") {
				t.Errorf("ip -4 addr shows no %s/24 on eth0:\n%s", h.Address, got)
			}
			if got := run(t, ctx, c, h.Name, "tr '\\0' ' ' </proc/1/cmdline"); !strings.Contains(got, "machine init --name "+h.Name) || !strings.Contains(got, "--pid1") {
				t.Errorf("PID 1 is %q, want the host's init", got)
			}
			if got := run(t, ctx, c, h.Name, "ls /proc | grep -c '^[0-9]'"); got == "" || len(got) > 2 {
				t.Errorf("the host sees %s processes: not a process tree of its own", got)
			}

			// Its own /etc and /usr/local; the rest of the machine's
			// root read-only.
			run(t, ctx, c, h.Name, "echo "+h.Name+" >/etc/kok-test && mkdir -p /usr/local/bin && echo x >/usr/local/bin/x && cat /etc/kok-test /usr/local/bin/x")
			for _, f := range []string{"/etc/kok-test", "/usr/local/bin/x"} {
				if exists(f) {
					t.Errorf("%s written in the host appeared on the machine", f)
					_ = os.Remove(f)
				}
			}
			if got, _ := os.ReadFile(filepath.Join(h.Dir, "etc/upper/kok-test")); strings.TrimSpace(string(got)) != h.Name {
				t.Errorf("the host's /etc/kok-test is not in its overlay: %q", got)
			}
			if !exists(filepath.Join(h.Dir, "fs/usr-local/bin/x")) {
				t.Errorf("the host's /usr/local/bin/x is not in its own directory")
			}
			if res, err := c.Run(ctx, "touch /usr/bin/kok-test"); err != nil || res.ExitCode == 0 || exists("/usr/bin/kok-test") {
				t.Errorf("touch /usr/bin/kok-test in the host: exit %d, %v; want a read-only /usr", res.ExitCode, err)
				_ = os.Remove("/usr/bin/kok-test")
			}
			if got := run(t, ctx, c, h.Name, "ls -A /var; readlink /var/run; ls /run"); !strings.Contains(got, "lib") || !strings.Contains(got, "sshd") {
				t.Errorf("the host's /var and /run:\n%s", got)
			}

			// Network: the other host's sshd and the machine's bridge
			// address (bash /dev/tcp: ping would need a package).
			if got := run(t, ctx, c, h.Name, fmt.Sprintf("bash -c 'exec 3<>/dev/tcp/%s/22; head -c 4 <&3'", other.Address)); got != "SSH-" {
				t.Errorf("from %s, %s:22 answered %q", h.Name, other.Address, got)
			}
			if got := run(t, ctx, c, h.Name, fmt.Sprintf("bash -c 'exec 3<>/dev/tcp/%s/%d; head -c 3 <&3'", h.Gateway, machinePort)); got != "kok" {
				t.Errorf("from %s, the machine at %s:%d answered %q", h.Name, h.Gateway, machinePort, got)
			}
			if _, err := exec.LookPath("ping"); err == nil {
				run(t, ctx, c, h.Name, fmt.Sprintf("ping -c1 -W2 %s && ping -c1 -W2 %s", other.Address, h.Gateway))
			}

			// Cgroups: writable, rooted at /kok-hosts/NAME on the machine.
			controllers := []string{}
			for _, ctl := range []string{"cpu", "memory", "pids", "cpuset"} {
				if exists(filepath.Join("/sys/fs/cgroup", ctl, "cgroup.procs")) {
					controllers = append(controllers, ctl)
				}
			}
			if len(controllers) == 0 {
				t.Skip("no cgroup v1 cpu, memory, pids or cpuset hierarchy on this machine")
			}
			list := strings.Join(controllers, " ")
			run(t, ctx, c, h.Name, "for c in "+list+"; do mkdir /sys/fs/cgroup/$c/kok-e2e; done")
			for _, ctl := range controllers {
				if p := filepath.Join("/sys/fs/cgroup", ctl, "kok-hosts", h.Name, "kok-e2e"); !exists(p) {
					t.Errorf("mkdir /sys/fs/cgroup/%s/kok-e2e in the host made no %s on the machine", ctl, p)
				}
			}
			got := run(t, ctx, c, h.Name, "sh -c 'for c in cpu memory pids; do [ -d /sys/fs/cgroup/$c ] && echo $$ >/sys/fs/cgroup/$c/kok-e2e/cgroup.procs; done; cat /proc/self/cgroup'")
			for _, ctl := range []string{"cpu", "memory", "pids"} {
				if strings.Contains(list, ctl) && !strings.Contains(got, ":"+ctl+":/kok-e2e\n") && !strings.HasSuffix(got, ":"+ctl+":/kok-e2e") {
					t.Errorf("a process moved into %s/kok-e2e inside the host sees /proc/self/cgroup:\n%s", ctl, got)
				}
			}
			run(t, ctx, c, h.Name, "for c in "+list+"; do rmdir /sys/fs/cgroup/$c/kok-e2e; done")
			for _, ctl := range controllers {
				if p := filepath.Join("/sys/fs/cgroup", ctl, "kok-hosts", h.Name, "kok-e2e"); exists(p) {
					t.Errorf("rmdir in the host left %s on the machine", p)
				}
			}
		})
	}

	// A host whose init died comes back with the same address and keys.
	old := *a
	if err := exec.Command("kill", "-9", strconv.Itoa(a.InitPID)).Run(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, a.InitPID)
	_ = clients[a.Name].Close()
	start := time.Now()
	a2, res, err := hosts.Create(ctx, opts(a.Name))
	if err != nil {
		t.Fatalf("restarting %s: %v", a.Name, err)
	}
	t.Logf("host %s %s in %.3fs", a.Name, res, time.Since(start).Seconds())
	if res != hosts.Restarted || a2.Address != old.Address || a2.HostKey != old.HostKey || a2.InitPID == old.InitPID {
		t.Errorf("restart: %s, address %s, pid %d; want %s, %s, a new pid", res, a2.Address, a2.InitPID, hosts.Restarted, old.Address)
	}
	key, _ := os.ReadFile(a2.PrivateKeyPath)
	c, err := remote.Dial(ctx, remote.Target{Address: a2.Address, Port: int32(a2.Port), User: a2.User, PrivateKey: key, HostKey: old.HostKey})
	if err != nil {
		t.Fatalf("ssh to the restarted %s: %v", a.Name, err)
	}
	if got := run(t, ctx, c, a.Name, "cat /etc/kok-test"); got != a.Name {
		t.Errorf("the restarted host lost its /etc: %q", got)
	}
	_ = c.Close()
	hs[a.Name] = a2

	// Delete leaves nothing behind.
	for _, h := range hs {
		start := time.Now()
		if err := hosts.Delete(ctx, stateDir, h.Name); err != nil {
			t.Fatalf("deleting %s: %v", h.Name, err)
		}
		t.Logf("host %s deleted in %.3fs", h.Name, time.Since(start).Seconds())
		if err := hosts.Delete(ctx, stateDir, h.Name); err != nil {
			t.Errorf("deleting %s again: %v", h.Name, err)
		}
		checkGone(t, h)
	}
	if !hadBridge && exists("/sys/class/net/"+hosts.Bridge) {
		t.Errorf("bridge %s left after the last host", hosts.Bridge)
	}
	if out, _ := exec.Command("ip", "rule", "show").CombinedOutput(); !hadBridge && bytes.Contains(out, []byte(hosts.Bridge)) {
		t.Errorf("ip rule for %s left:\n%s", hosts.Bridge, out)
	}
}

// memory is the RSS of pid and its anonymous part, in bytes.
func memory(pid int) [2]int64 {
	var m [2]int64
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(status), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			m[0] = kb << 10
		case "RssAnon:":
			m[1] = kb << 10
		}
	}
	return m
}

// children are the processes whose parent is pid (any of its threads).
func children(pid int) []int {
	var pids []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		data, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(data)) {
			if p, err := strconv.Atoi(f); err == nil {
				pids = append(pids, p)
			}
		}
	}
	return pids
}

func readLog(h *hosts.Host) string {
	data, _ := os.ReadFile(h.LogFile())
	return string(data)
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for i := 0; i < 100; i++ {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if errors.Is(err, os.ErrNotExist) || (err == nil && strings.Contains(string(data), ") Z ")) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("pid %d did not end", pid)
}

// checkGone: no netns, veth, mount, cgroup, process or directory of h.
func checkGone(t *testing.T, h *hosts.Host) {
	t.Helper()
	if exists("/run/netns/" + h.Netns) {
		t.Errorf("netns %s left", h.Netns)
	}
	if exists("/sys/class/net/" + h.Veth) {
		t.Errorf("veth %s left", h.Veth)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mi, []byte(h.Dir)) || bytes.Contains(mi, []byte(h.Netns)) {
		t.Errorf("mounts of %s left:\n%s", h.Name, mi)
	}
	cgs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*/kok-hosts", h.Name))
	if len(cgs) > 0 {
		t.Errorf("cgroups left: %v", cgs)
	}
	if exists(h.Dir) {
		t.Errorf("state directory %s left", h.Dir)
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.Contains(cmdline, []byte(h.Dir)) || bytes.Contains(cmdline, []byte(h.SSHAddress())) {
			t.Errorf("process %s of %s left: %q", e.Name(), h.Name, cmdline)
		}
		if stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); e.Name() == strconv.Itoa(h.InitPID) && !bytes.Contains(stat, []byte(") Z ")) {
			t.Errorf("init (pid %d) of %s left", h.InitPID, h.Name)
		}
	}
}
