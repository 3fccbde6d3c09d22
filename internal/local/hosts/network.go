package hosts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kubeonkube/kok/internal/kube"
)

// Routing that keeps the hosts' packets on the machine even when the
// iptables guard is gone (another state directory's kok down removes it):
// packets arriving from the bridge are looked up first in routeTable, which
// sends the guarded range on to the main table and nothing else anywhere;
// and the guarded range has a blackhole route in the main table (metric
// routeMetric, behind the meta cluster's route to its bridge), so an
// address kok has not placed never takes the default route.
const (
	routeTable  = "10202"
	rulePref    = "10202"
	routeMetric = "10202"
)

// run executes a command and returns its combined output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func linkExists(name string) bool {
	_, err := os.Lstat(filepath.Join("/sys/class/net", name))
	return err == nil
}

func netnsPath(ns string) string { return filepath.Join("/run/netns", ns) }

func mustCIDR(cidr string) *net.IPNet {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	return n
}

// nthIP is the n-th address of an IPv4 subnet.
func nthIP(cidr string, n int) net.IP { return net.ParseIP(kube.NthIP(cidr, n)).To4() }

// lowestFree is the lowest address of subnet (a /24) from its first-th on
// that is not in used.
func lowestFree(subnet string, first int, used map[string]bool) (net.IP, error) {
	ones, bits := mustCIDR(subnet).Mask.Size()
	last := 1<<(bits-ones) - 2 // the one before the broadcast address
	for n := first; n <= last && n < 256; n++ {
		ip := nthIP(subnet, n)
		if !used[ip.String()] {
			return ip, nil
		}
	}
	return nil, fmt.Errorf("no free address left in %s: every one from .%d on has a host (kok machine list; kok machine delete NAME)", subnet, first)
}

// A host's veth carries an alias naming its host, address and state
// directory, so that hosts of every state directory on this machine share
// the bridge's addresses without taking one another's.
const aliasPrefix = "kok-host "

func vethAlias(h *Host) string {
	return aliasPrefix + h.Name + " " + h.Address + " " + h.StateDir
}

// parseAlias reads vethAlias.
func parseAlias(s string) (name, addr, stateDir string, ok bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), aliasPrefix)
	if !ok {
		return "", "", "", false
	}
	f := strings.SplitN(rest, " ", 3)
	if len(f) != 3 || net.ParseIP(f[1]) == nil {
		return "", "", "", false
	}
	return f[0], f[1], f[2], true
}

// claimant is the host (name and state directory) whose alias the veth of
// host name carries, if it has one: the host that holds the machine's
// resources of that name (netns, veth, cgroups).
func claimant(name string) (string, string, bool) {
	veth, _ := vethNames(name)
	alias, err := os.ReadFile(filepath.Join("/sys/class/net", veth, "ifalias"))
	if err != nil {
		return "", "", false
	}
	n, _, stateDir, ok := parseAlias(string(alias))
	return n, stateDir, ok
}

// checkClaim fails when the machine's resources of host name belong to a
// host of another state directory (or, for a hash collision of the veth's
// name, to another host).
func checkClaim(name, stateDir string) error {
	n, dir, ok := claimant(name)
	if !ok || n == name && dir == stateDir {
		return nil
	}
	veth, _ := vethNames(name)
	return fmt.Errorf("host %s: its network (interface %s) is in use by host %s of state directory %s: delete that one first (kok machine delete %s --state-dir %s) or choose another name",
		name, veth, n, dir, n, dir)
}

// bridgePorts are the interfaces plugged into the bridge, with their aliases.
func bridgePorts() map[string]string {
	ports := map[string]string{}
	entries, _ := os.ReadDir(filepath.Join("/sys/class/net", Bridge, "brif"))
	for _, e := range entries {
		alias, _ := os.ReadFile(filepath.Join("/sys/class/net", e.Name(), "ifalias"))
		ports[e.Name()] = strings.TrimSpace(string(alias))
	}
	return ports
}

// allocate picks the address of a new host of stateDir: the lowest free one
// among the hosts of stateDir and those other state directories run on the
// bridge.
func allocate(stateDir string) (net.IP, error) {
	used := map[string]bool{}
	hs, err := List(stateDir)
	if err != nil {
		return nil, err
	}
	for _, h := range hs {
		used[h.Address] = true
	}
	for _, alias := range bridgePorts() {
		if _, addr, _, ok := parseAlias(alias); ok {
			used[addr] = true
		}
	}
	return lowestFree(Subnet, FirstHost, used)
}

// ensureNetwork sets up the bridge and the host's network namespace, veth,
// address and routes; each step is idempotent.
func ensureNetwork(ctx context.Context, h *Host, guardCIDR string) error {
	if err := ensureBridge(ctx, guardCIDR); err != nil {
		return err
	}
	if err := checkClaim(h.Name, h.StateDir); err != nil {
		return err
	}
	if _, err := os.Stat(netnsPath(h.Netns)); err != nil {
		if _, err := run(ctx, "ip", "netns", "add", h.Netns); err != nil {
			return fmt.Errorf("host %s: creating its network namespace: %w", h.Name, err)
		}
	}
	_, peer := vethNames(h.Name)
	if !linkExists(h.Veth) {
		if _, err := run(ctx, "ip", "link", "add", h.Veth, "type", "veth", "peer", "name", peer, "netns", h.Netns); err != nil {
			return fmt.Errorf("host %s: creating its veth: %w", h.Name, err)
		}
	}
	steps := [][]string{
		{"link", "set", h.Veth, "master", Bridge},
		{"link", "set", h.Veth, "alias", vethAlias(h)},
		{"link", "set", h.Veth, "up"},
	}
	for _, s := range steps {
		if _, err := run(ctx, "ip", s...); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	// Inside: the peer becomes eth0. `ip -n` enters the namespace for
	// the ip command itself only.
	if _, err := run(ctx, "ip", "-n", h.Netns, "link", "show", "eth0"); err != nil {
		if _, err := run(ctx, "ip", "-n", h.Netns, "link", "set", peer, "name", "eth0"); err != nil {
			return fmt.Errorf("host %s: naming its interface eth0: %w", h.Name, err)
		}
	}
	inside := [][]string{
		{"addr", "replace", fmt.Sprintf("%s/%d", h.Address, h.PrefixLength), "dev", "eth0"},
		{"link", "set", "eth0", "up"},
		{"link", "set", "lo", "up"},
		{"route", "replace", "default", "via", h.Gateway, "dev", "eth0"},
	}
	for _, s := range inside {
		if _, err := run(ctx, "ip", append([]string{"-n", h.Netns}, s...)...); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	return nil
}

// ensureBridge sets up the bridge, forwarding and the routing that keeps
// the hosts' packets on the machine.
func ensureBridge(ctx context.Context, guardCIDR string) error {
	if !linkExists(Bridge) {
		if _, err := run(ctx, "ip", "link", "add", Bridge, "type", "bridge"); err != nil {
			return fmt.Errorf("creating bridge %s: %w", Bridge, err)
		}
	}
	ones, _ := mustCIDR(Subnet).Mask.Size()
	steps := [][]string{
		{"addr", "replace", fmt.Sprintf("%s/%d", nthIP(Subnet, 1), ones), "dev", Bridge},
		{"link", "set", Bridge, "up"},
		{"route", "replace", "blackhole", guardCIDR, "metric", routeMetric},
		{"route", "replace", "throw", guardCIDR, "table", routeTable},
		{"route", "replace", "unreachable", "default", "table", routeTable},
	}
	for _, s := range steps {
		if _, err := run(ctx, "ip", s...); err != nil {
			return err
		}
	}
	rules, err := run(ctx, "ip", "rule", "show", "pref", rulePref)
	if err != nil {
		return err
	}
	if strings.TrimSpace(rules) == "" {
		if _, err := run(ctx, "ip", "rule", "add", "pref", rulePref, "iif", Bridge, "lookup", routeTable); err != nil {
			return err
		}
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enabling IPv4 forwarding: %w", err)
	}
	return nil
}

// removeNetwork deletes the host's veth (both ends) and network namespace.
func removeNetwork(ctx context.Context, h *Host) error {
	if linkExists(h.Veth) {
		if _, err := run(ctx, "ip", "link", "del", h.Veth); err != nil && linkExists(h.Veth) {
			return err
		}
	}
	if _, err := os.Stat(netnsPath(h.Netns)); err == nil {
		if _, err := run(ctx, "ip", "netns", "del", h.Netns); err != nil {
			// ip netns del is umount + unlink; do it by hand.
			_ = unmount(netnsPath(h.Netns))
			if err := os.Remove(netnsPath(h.Netns)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("removing network namespace %s: %w", h.Netns, err)
			}
		}
	}
	return nil
}

// removeBridgeIfUnused deletes the bridge and the hosts' routing once no
// host is plugged into it.
func removeBridgeIfUnused(ctx context.Context) {
	if len(bridgePorts()) > 0 {
		return
	}
	if linkExists(Bridge) {
		_, _ = run(ctx, "ip", "link", "del", Bridge)
	}
	for i := 0; i < 10; i++ {
		if _, err := run(ctx, "ip", "rule", "del", "pref", rulePref); err != nil {
			break
		}
	}
	_, _ = run(ctx, "ip", "route", "flush", "table", routeTable)
	out, _ := run(ctx, "ip", "-o", "route", "show", "type", "blackhole")
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && f[0] == "blackhole" && f[len(f)-2] == "metric" && f[len(f)-1] == routeMetric {
			_, _ = run(ctx, "ip", "route", "del", "blackhole", f[1], "metric", routeMetric)
		}
	}
}
