package local

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const cgroupFS = "/sys/fs/cgroup"

// cgroupHierarchies lists the mounted cgroup v1 hierarchies (cpu, memory, …)
// or the single v2 mount.
func cgroupHierarchies() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// mountinfo: ... mountpoint(4) ... - fstype source options
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) {
			continue
		}
		fstype, mp := fields[sep+1], fields[4]
		if (fstype == "cgroup" || fstype == "cgroup2") && strings.HasPrefix(mp, cgroupFS) {
			dirs = append(dirs, mp)
		}
	}
	return dirs, sc.Err()
}

// ensureCgroupRoot creates the pods' cgroup root in every hierarchy, as the
// kubelet with the cgroupfs driver expects.
func (c *Config) ensureCgroupRoot() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	if len(hs) == 0 {
		return fmt.Errorf("no cgroup filesystem is mounted under %s: the kubelet needs cgroups (mount cgroup v1 hierarchies or cgroup2 there)", cgroupFS)
	}
	for _, h := range hs {
		dir := filepath.Join(h, c.CgroupRoot())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
		// A cpuset cgroup needs cpus and mems before tasks can join it.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if parent, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				cur, _ := os.ReadFile(filepath.Join(dir, f))
				if strings.TrimSpace(string(cur)) == "" {
					_ = os.WriteFile(filepath.Join(dir, f), parent, 0o644)
				}
			}
		}
	}
	return nil
}

// cgroupPIDs returns the processes in the pods' cgroup tree.
func (c *Config) cgroupPIDs() map[int]bool {
	pids := map[int]bool{}
	hs, _ := cgroupHierarchies()
	for _, h := range hs {
		root := filepath.Join(h, c.CgroupRoot())
		_ = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() || info.Name() != "cgroup.procs" {
				return nil
			}
			data, _ := os.ReadFile(p)
			for _, l := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(l); err == nil {
					pids[pid] = true
				}
			}
			return nil
		})
	}
	return pids
}

// removeCgroupRoot deletes the pods' cgroup tree, deepest first.
func (c *Config) removeCgroupRoot() {
	hs, _ := cgroupHierarchies()
	for _, h := range hs {
		root := filepath.Join(h, c.CgroupRoot())
		var dirs []string
		_ = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			_ = syscall.Rmdir(d)
		}
	}
}

// shimPIDs finds the containerd shims serving kok's containerd: they carry
// its socket address on their command line.
func (c *Config) shimPIDs() []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == c.ContainerdSocket() {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// netnsInode identifies the network namespace of pid.
func netnsInode(pid int) (uint64, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}

// killLeftovers ends containers and shims left behind when the runtime could
// not tear them down itself, and releases the network namespaces they held.
func (c *Config) killLeftovers() {
	pids := c.cgroupPIDs()
	netns := map[uint64]bool{}
	hostNS, _ := netnsInode(os.Getpid())
	for pid := range pids {
		if ino, ok := netnsInode(pid); ok && ino != hostNS {
			netns[ino] = true
		}
	}
	for _, pid := range c.shimPIDs() {
		pids[pid] = true
	}
	for pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for i := 0; i < 50 && len(c.cgroupPIDs()) > 0; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	// CRI network namespaces are bind mounts under /run/netns; release
	// only those our containers used.
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		p := filepath.Join("/run/netns", e.Name())
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil && netns[st.Ino] {
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
			_ = os.Remove(p)
		}
	}
}

// unmountUnder detaches every mount point below the given directories,
// deepest first, so that removing the directories never reaches through a
// mount into data that is not kok's.
func unmountUnder(dirs ...string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		for _, d := range dirs {
			if mp == d || strings.HasPrefix(mp, d+"/") {
				mps = append(mps, mp)
			}
		}
	}
	f.Close()
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	var firstErr error
	for _, mp := range mps {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && firstErr == nil && err != syscall.EINVAL {
			firstErr = fmt.Errorf("unmounting %s: %w", mp, err)
		}
	}
	return firstErr
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// mountsUnder reports whether any mount point remains below dir.
func mountsUnder(dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return true
	}
	for _, l := range strings.Split(string(data), "\n") {
		fields := strings.Fields(l)
		if len(fields) >= 5 {
			mp := unescapeMount(fields[4])
			if mp == dir || strings.HasPrefix(mp, dir+"/") {
				return true
			}
		}
	}
	return false
}
