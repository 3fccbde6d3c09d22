package hosts

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const cgroupFS = "/sys/fs/cgroup"

// mountEntry is one line of /proc/PID/mountinfo.
type mountEntry struct {
	// Root is the mount's root within its filesystem, Mountpoint where it
	// is mounted.
	Root, Mountpoint string
	FSType, Source   string
	// SuperOptions are the filesystem's options (for a cgroup v1
	// hierarchy, its controllers: "rw,cpu,cpuacct").
	SuperOptions string
}

// parseMountinfo reads proc(5) mountinfo lines:
// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS.
func parseMountinfo(r io.Reader) ([]mountEntry, error) {
	var ms []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+3 > len(f) {
			continue
		}
		m := mountEntry{Root: unescape(f[3]), Mountpoint: unescape(f[4]), FSType: f[sep+1], Source: unescape(f[sep+2])}
		if sep+3 < len(f) {
			m.SuperOptions = f[sep+3]
		}
		ms = append(ms, m)
	}
	return ms, sc.Err()
}

func unescape(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

func readMountinfo() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	return parseMountinfo(f)
}

// under reports whether path is dir or below it.
func under(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}

// mountpointsUnder are the mount points at or below dir, deepest first; a
// mount point with mounts stacked on it is there once for each (unmounting
// it takes the top one).
func mountpointsUnder(ms []mountEntry, dir string) []string {
	var mps []string
	for _, m := range ms {
		if under(m.Mountpoint, dir) {
			mps = append(mps, m.Mountpoint)
		}
	}
	sort.SliceStable(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	return mps
}

// cgroupHierarchies are the cgroup filesystems mounted under /sys/fs/cgroup
// (v1 hierarchies and the v2 one).
func cgroupHierarchies(ms []mountEntry) []mountEntry {
	var hs []mountEntry
	seen := map[string]bool{}
	for _, m := range ms {
		v1 := m.FSType == "cgroup" && strings.HasPrefix(m.Mountpoint, cgroupFS+"/")
		v2 := m.FSType == "cgroup2" && under(m.Mountpoint, cgroupFS)
		if v1 || v2 {
			if !seen[m.Mountpoint] {
				seen[m.Mountpoint] = true
				hs = append(hs, m)
			}
		}
	}
	return hs
}

// cgroupMountData is what mounting hierarchy m again takes: its controllers
// and name, without what only the initial cgroup namespace may set.
func cgroupMountData(m mountEntry) string {
	var keep []string
	for _, o := range strings.Split(m.SuperOptions, ",") {
		switch {
		case o == "rw" || o == "ro" || o == "":
		case strings.HasPrefix(o, "release_agent="), o == "nsdelegate":
		default:
			keep = append(keep, o)
		}
	}
	return strings.Join(keep, ",")
}

func machineHierarchies() ([]mountEntry, error) {
	ms, err := readMountinfo()
	if err != nil {
		return nil, err
	}
	hs := cgroupHierarchies(ms)
	if len(hs) == 0 {
		return nil, fmt.Errorf("no cgroup filesystem is mounted under %s", cgroupFS)
	}
	return hs, nil
}

// hostCgroups are the host's cgroup directories on the machine, one per
// hierarchy.
func hostCgroups(name string) ([]string, error) {
	hs, err := machineHierarchies()
	if err != nil {
		return nil, err
	}
	dirs := make([]string, 0, len(hs))
	for _, h := range hs {
		dirs = append(dirs, filepath.Join(h.Mountpoint, CgroupParent, name))
	}
	return dirs, nil
}

// ensureCgroups creates /kok-hosts/NAME in every hierarchy, with the cpus and
// memory nodes a cpuset needs before a task can join it, and on a cgroup v2
// hierarchy the controllers enabled down to it.
func ensureCgroups(name string) error {
	hs, err := machineHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		parent := filepath.Join(h.Mountpoint, CgroupParent)
		dir := filepath.Join(parent, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
		for _, d := range []string{parent, dir} {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				up, err := os.ReadFile(filepath.Join(filepath.Dir(d), f))
				if err != nil {
					continue
				}
				if cur, _ := os.ReadFile(filepath.Join(d, f)); strings.TrimSpace(string(cur)) == "" {
					if err := os.WriteFile(filepath.Join(d, f), up, 0o644); err != nil {
						return fmt.Errorf("setting %s of %s: %w", f, d, err)
					}
				}
			}
		}
		// Only a cgroup v2 machine has its controllers there (on a
		// hybrid one they are the v1 hierarchies').
		if h.FSType == "cgroup2" && h.Mountpoint == cgroupFS {
			for _, d := range []string{h.Mountpoint, parent} {
				ctrl, _ := os.ReadFile(filepath.Join(d, "cgroup.controllers"))
				for _, c := range strings.Fields(string(ctrl)) {
					_ = os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte("+"+c), 0o644)
				}
			}
		}
	}
	return nil
}

// joinCgroups moves process pid (all its threads) into the host's cgroups.
func joinCgroups(name string, pid int) error {
	dirs, err := hostCgroups(name)
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("joining cgroup %s: %w", d, err)
		}
	}
	return nil
}

// cgroupPIDs are the processes in the host's cgroup trees.
func cgroupPIDs(name string) map[int]bool {
	pids := map[int]bool{}
	dirs, _ := hostCgroups(name)
	for _, d := range dirs {
		_ = filepath.Walk(d, func(p string, info os.FileInfo, err error) error {
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

// killCgroups kills every process in the host's cgroups and waits up to 5 s
// for them to be gone; it returns how many are left.
func killCgroups(name string) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := cgroupPIDs(name)
		if len(pids) == 0 || time.Now().After(deadline) {
			return len(pids)
		}
		for pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removeCgroups deletes the host's cgroup trees, deepest first, and
// /kok-hosts once no host is left in it.
func removeCgroups(name string) error {
	dirs, err := hostCgroups(name)
	if err != nil {
		return err
	}
	var left []string
	for _, d := range dirs {
		var sub []string
		_ = filepath.Walk(d, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.IsDir() {
				sub = append(sub, p)
			}
			return nil
		})
		sort.Slice(sub, func(i, j int) bool { return len(sub[i]) > len(sub[j]) })
		for _, s := range sub {
			_ = syscall.Rmdir(s)
		}
		if _, err := os.Stat(d); err == nil {
			left = append(left, d)
		}
		_ = syscall.Rmdir(filepath.Dir(d))
	}
	if len(left) > 0 {
		return fmt.Errorf("cgroups %s could not be removed", strings.Join(left, ", "))
	}
	return nil
}
