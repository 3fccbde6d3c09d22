package local

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kubeonkube/kok/internal/local/build"
)

// cleanupHost removes what the node left on the host once its processes are
// gone. Each step is best effort and idempotent.
func cleanupHost(ctx context.Context, c *Config, b *build.Builder) {
	killLeftovers(c.CgroupRoot(), c.ContainerdSocket())
	if b != nil {
		// kube-proxy knows its own rules best.
		if kube := kubeBin(b, c.KubernetesVersion); fileExists(kube) {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_ = exec.CommandContext(cctx, kube, "kube-proxy", "--cleanup").Run()
			cancel()
		}
	}
	removeNodeChains(ctx)
	if err := unmountUnder(c.StateDir, c.RunDir); err != nil {
		log.Printf("warning: %v", err)
	}
	removeCgroupRoot(c.CgroupRoot())
	removeHostNetwork(ctx, c.Bridge, c.GuardCIDR)
	// Last: nothing of kok runs any more that could send traffic.
	RemoveGuard(ctx)
	_ = os.RemoveAll(c.RunDir)
	_ = os.Remove(SupervisorPidFile(c.StateDir))
}

// shimPIDs finds the containerd shims serving kok's containerd: they carry
// its socket address on their command line.
func shimPIDs(containerdSocket string) []int {
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
			if args[i] == "-address" && args[i+1] == containerdSocket {
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

// killLeftovers ends containers (processes in the pods' cgroup root) and
// shims left behind when the runtime could not tear them down itself, and
// releases the network namespaces they held.
func killLeftovers(cgroupRoot, containerdSocket string) {
	pids := cgroupPIDs(cgroupRoot)
	netns := map[uint64]bool{}
	hostNS, _ := netnsInode(os.Getpid())
	for pid := range pids {
		if ino, ok := netnsInode(pid); ok && ino != hostNS {
			netns[ino] = true
		}
	}
	for _, pid := range shimPIDs(containerdSocket) {
		pids[pid] = true
	}
	for pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// Give them up to 5 s to be gone; whatever is not is left as it is.
	_ = poll(context.Background(), 100*time.Millisecond, 5*time.Second, func(context.Context) (bool, error) {
		return len(cgroupPIDs(cgroupRoot)) == 0, nil
	}, nil)
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
	_ = f.Close()
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
