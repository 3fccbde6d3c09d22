package hosts

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubeonkube/kok/internal/local/proc"
)

// How a host's init comes to be PID 1 of its namespaces:
//
//	kok machine create ─ nsenter --net=/run/netns/kokm-NAME ─▶ kok machine init   (outer: the machine's
//	    mount, PID and cgroup namespaces; joins /kok-hosts/NAME in every hierarchy, then starts)
//	  └▶ kok machine init --pid1   (new mount, UTS, IPC, PID and cgroup namespaces; the cgroup namespace
//	     is rooted where it was started: /kok-hosts/NAME) — sets up the mounts and runs sshd
//
// The outer process writes the pid file of the inner one and exits, so the
// init has no parent of kok's.

// InitArgs are the arguments, after the kok executable, of a host's init.
func InitArgs(name, dir string) []string {
	return []string{"machine", "init", "--name", name, "--dir", dir}
}

// pid1Flag marks the inner stage.
const pid1Flag = "--pid1"

// InitOptions are the flags of `kok machine init`.
type InitOptions struct {
	Name string
	// Dir is the host's state directory.
	Dir string
	// PID1 is the stage that runs as PID 1 of the host's namespaces.
	PID1 bool
}

// Init runs one stage of a host's init (kok machine init). The inner stage
// runs until ctx ends or it gets SIGTERM, then stops everything in the host.
func Init(ctx context.Context, o InitOptions) error {
	if err := ValidateName(o.Name); err != nil {
		return err
	}
	if !filepath.IsAbs(o.Dir) {
		return fmt.Errorf("the host's directory %q is not absolute", o.Dir)
	}
	if o.PID1 {
		return runPID1(ctx, o)
	}
	return runOuter(o)
}

// startInit starts the host's init and waits until its pid file names it.
func startInit(ctx context.Context, self string, h *Host) error {
	logf, err := os.OpenFile(h.LogFile(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = logf.Close() }()
	fmt.Fprintf(logf, "%s kok: starting the init of host %s\n", time.Now().Format(time.RFC3339), h.Name)
	if err := os.Remove(h.PidFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// nsenter, not `ip netns exec`: that one remounts /sys and hides the
	// cgroups (DESIGN gotcha 4).
	args := append([]string{"--net=" + netnsPath(h.Netns), "--", self}, InitArgs(h.Name, h.Dir)...)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, "nsenter", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("host %s: starting its init: %w\n%s", h.Name, err, logTail(h.LogFile(), 15))
	}
	id, alive := proc.Alive(h.PidFile())
	if !alive {
		return fmt.Errorf("host %s: its init did not start:\n%s", h.Name, logTail(h.LogFile(), 15))
	}
	h.InitPID = id.PID
	return h.save()
}

// waitSSH waits until the host's sshd sends its banner.
func waitSSH(ctx context.Context, h *Host, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if sshBanner(ctx, h.SSHAddress()) {
			return nil
		}
		if !h.Running() {
			return fmt.Errorf("host %s: its init exited:\n%s", h.Name, logTail(h.LogFile(), 15))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("host %s: sshd does not answer at %s after %s:\n%s", h.Name, h.SSHAddress(), timeout, logTail(h.LogFile(), 15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// sshBanner reports whether an SSH server answers at addr.
func sshBanner(ctx context.Context, addr string) bool {
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4)
	n, _ := conn.Read(buf)
	return string(buf[:n]) == "SSH-"
}

// logTail returns the last lines of a log file, indented.
func logTail(file string, lines int) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return "  (no log)"
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return "  " + strings.Join(all, "\n  ")
}

// runOuter joins the host's cgroups and starts the inner stage in new
// namespaces; the cgroup namespace is rooted at the cgroups it starts in.
func runOuter(o InitOptions) error {
	if err := joinCgroups(o.Name, os.Getpid()); err != nil {
		return err
	}
	cmd := exec.Command("/proc/self/exe", append(InitArgs(o.Name, o.Dir), pid1Flag)...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWPID | syscall.CLONE_NEWCGROUP,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the host's init in new namespaces: %w", err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return proc.Write(filepath.Join(o.Dir, "init.pid"), pid)
}

// runPID1 is the host's init: it makes the host's file system view, starts
// sshd and keeps it running, reaps every orphan, and on SIGTERM ends
// everything in the host.
func runPID1(ctx context.Context, o InitOptions) error {
	if os.Getpid() != 1 {
		return errors.New("kok machine init --pid1 runs only as PID 1 of a host's PID namespace (kok machine create starts it)")
	}
	logger := log.New(os.Stderr, "init["+o.Name+"] ", log.LstdFlags)
	// Signals first: a SIGTERM during setup must not be lost (PID 1 gets
	// no signal it has no handler for).
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT)
	if err := unix.Sethostname([]byte(o.Name)); err != nil {
		return fmt.Errorf("setting the hostname: %w", err)
	}
	if err := setupMounts(o.Dir); err != nil {
		return fmt.Errorf("setting up the host's mounts: %w", err)
	}
	logger.Printf("mounts ready; starting sshd")
	// What setup allocated is not needed again: give it back (the init
	// stays for the host's life).
	debug.FreeOSMemory()
	return supervise(ctx, logger, sigs)
}

// supervise runs sshd, starting it again when it exits (with backoff), and
// reaps every process that ends in the host.
func supervise(ctx context.Context, logger *log.Logger, sigs <-chan os.Signal) error {
	sshd := 0
	backoff := time.Second
	var started time.Time
	restart := time.NewTimer(0)
	reapTick := time.NewTicker(30 * time.Second)
	defer reapTick.Stop()
	start := func() {
		cmd := exec.Command(SSHD, "-D", "-e", "-f", sshdConfig)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.Dir = "/"
		if err := cmd.Start(); err != nil {
			logger.Printf("starting sshd: %v; again in %s", err, backoff)
			restart.Reset(backoff)
			return
		}
		sshd, started = cmd.Process.Pid, time.Now()
		// Reaped by reap below, not by os/exec.
		_ = cmd.Process.Release()
	}
	reap := func() {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				return
			}
			if pid == sshd {
				sshd = 0
				if time.Since(started) > time.Minute {
					backoff = time.Second
				}
				logger.Printf("sshd (pid %d) ended (%s); starting it again in %s", pid, exitString(ws), backoff)
				restart.Reset(backoff)
				backoff = min(2*backoff, 30*time.Second)
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return shutdown(logger, "the context ended")
		case s := <-sigs:
			if s == syscall.SIGCHLD {
				reap()
				continue
			}
			return shutdown(logger, s.String())
		case <-restart.C:
			if sshd == 0 {
				start()
			}
		case <-reapTick.C:
			reap()
		}
	}
}

func exitString(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("exit %d", ws.ExitStatus())
}

// shutdown ends every process of the host: SIGTERM, up to 5 s, SIGKILL.
func shutdown(logger *log.Logger, why string) error {
	logger.Printf("%s: stopping every process of the host", why)
	_ = unix.Kill(-1, unix.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	killed := false
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.ECHILD) {
			logger.Printf("stopped")
			return nil
		}
		if pid > 0 {
			continue
		}
		if !killed && time.Now().After(deadline) {
			logger.Printf("processes left after 5s; killing them")
			_ = unix.Kill(-1, unix.SIGKILL)
			killed = true
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// setupMounts makes the host's view of the file system in its (new, private)
// mount namespace. Sources in the host's directory are reached through a
// descriptor opened first, so covering /var (where the directory usually
// is) or /tmp does not lose them.
func setupMounts(dir string) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	machine, err := readMountinfo()
	if err != nil {
		return err
	}
	hierarchies := cgroupHierarchies(machine)
	cgroupLinks := map[string]string{}
	if entries, err := os.ReadDir(cgroupFS); err == nil {
		for _, e := range entries {
			if e.Type()&os.ModeSymlink != 0 {
				if to, err := os.Readlink(filepath.Join(cgroupFS, e.Name())); err == nil {
					cgroupLinks[e.Name()] = to
				}
			}
		}
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dir, err)
	}
	defer func() { _ = unix.Close(fd) }()
	src := func(rel string) string { return fmt.Sprintf("/proc/self/fd/%d/%s", fd, rel) }

	const (
		nodev  = unix.MS_NOSUID | unix.MS_NODEV
		noexec = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	)
	steps := []struct {
		what string
		do   func() error
	}{
		// The machine's /etc under the host's own changes. First, while
		// nothing covers the host's directory.
		{"/etc", func() error {
			if err := detachUnder("/etc"); err != nil {
				return err
			}
			opts := fmt.Sprintf("lowerdir=/etc,upperdir=%s,workdir=%s", filepath.Join(dir, etcUpper), filepath.Join(dir, etcWork))
			return unix.Mount("overlay", "/etc", "overlay", 0, opts)
		}},
		// Before /proc goes: the sources are reached through it.
		{"own directories", func() error {
			for _, d := range ownDirs {
				if err := detachUnder(d.Target); err != nil {
					return err
				}
				if err := unix.Mount(src(d.Source), d.Target, "", unix.MS_BIND, ""); err != nil {
					return fmt.Errorf("%s: %w", d.Target, err)
				}
			}
			return nil
		}},
		{"/proc", func() error {
			if err := detachUnder("/proc"); err != nil {
				return err
			}
			return unix.Mount("proc", "/proc", "proc", noexec, "")
		}},
		{"/sys", func() error {
			if err := detachUnder("/sys"); err != nil {
				return err
			}
			return unix.Mount("sysfs", "/sys", "sysfs", noexec, "")
		}},
		{"/sys/fs/cgroup", func() error {
			v2only := len(hierarchies) == 1 && hierarchies[0].Mountpoint == cgroupFS
			if !v2only {
				if err := unix.Mount("tmpfs", cgroupFS, "tmpfs", noexec, "mode=755"); err != nil {
					return err
				}
			}
			for _, h := range hierarchies {
				if err := os.MkdirAll(h.Mountpoint, 0o755); err != nil {
					return err
				}
				// Mounted in the host's cgroup namespace, a hierarchy's
				// root is the host's cgroup: /kok-hosts/NAME.
				if err := unix.Mount("cgroup", h.Mountpoint, h.FSType, noexec|unix.MS_RELATIME, cgroupMountData(h)); err != nil {
					return fmt.Errorf("mounting %s (%s %s): %w", h.Mountpoint, h.FSType, cgroupMountData(h), err)
				}
			}
			for name, to := range cgroupLinks {
				if err := os.Symlink(to, filepath.Join(cgroupFS, name)); err != nil {
					return err
				}
			}
			return nil
		}},
		{"/run", func() error {
			if err := detachUnder("/run"); err != nil {
				return err
			}
			if err := unix.Mount("tmpfs", "/run", "tmpfs", nodev, "mode=755"); err != nil {
				return err
			}
			// sshd's privilege separation directory.
			if err := os.Mkdir("/run/sshd", 0o755); err != nil {
				return err
			}
			return mkdir("/run/lock", sticky)
		}},
		{"/dev/shm and /dev/pts", func() error {
			if err := detachUnder("/dev/shm"); err != nil {
				return err
			}
			if err := unix.Mount("tmpfs", "/dev/shm", "tmpfs", nodev, "mode=1777"); err != nil {
				return err
			}
			// Its own pseudo-terminals: /dev/ptmx finds the devpts
			// mounted at /dev/pts.
			if err := detachUnder("/dev/pts"); err != nil {
				return err
			}
			return unix.Mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620,gid=5")
		}},
		// The rest of the machine's root (/usr, /bin, /lib, /sbin, …)
		// is read-only in the host: only this mount namespace's copy of
		// the root mount changes.
		{"read-only /", func() error {
			return unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, "")
		}},
		// Like a booted host, mounts propagate among the host's own (a
		// kubelet expects / shared); none reach the machine, whose copies
		// were made private first.
		{"shared propagation", func() error {
			return unix.Mount("", "/", "", unix.MS_REC|unix.MS_SHARED, "")
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return os.Chdir("/")
}

// detachUnder lazily unmounts everything at or below dir in this mount
// namespace (copies of the machine's mounts the host must not hold: other
// hosts' network namespaces under /run/netns, the meta cluster's volumes).
func detachUnder(dir string) error {
	ms, err := readMountinfo()
	if err != nil {
		return err
	}
	for _, mp := range mountpointsUnder(ms, dir) {
		// A parent detached first takes its children along: EINVAL.
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmounting %s: %w", mp, err)
		}
	}
	return nil
}
