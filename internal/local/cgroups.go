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
)

const cgroupFS = "/sys/fs/cgroup"

// cgroupHierarchies lists the mounted cgroup v1 hierarchies (cpu, memory, …)
// or the single v2 mount.
func cgroupHierarchies() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
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

// ensureCgroupRoot creates the pods' cgroup root (Config.CgroupRoot) in
// every hierarchy, as the kubelet with the cgroupfs driver expects.
func ensureCgroupRoot(root string) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	if len(hs) == 0 {
		return fmt.Errorf("no cgroup filesystem is mounted under %s: the kubelet needs cgroups (mount cgroup v1 hierarchies or cgroup2 there)", cgroupFS)
	}
	for _, h := range hs {
		dir := filepath.Join(h, root)
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
func cgroupPIDs(root string) map[int]bool {
	pids := map[int]bool{}
	hs, _ := cgroupHierarchies()
	for _, h := range hs {
		dir := filepath.Join(h, root)
		_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
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
func removeCgroupRoot(root string) {
	hs, _ := cgroupHierarchies()
	for _, h := range hs {
		dir := filepath.Join(h, root)
		var dirs []string
		_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
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
