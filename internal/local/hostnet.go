package local

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kubeonkube/kok/internal/local/hosts"
)

// GuardChain is the iptables chain that keeps kok's traffic on the machine.
const GuardChain = "KOK-GUARD"

// run executes a command and returns its combined output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// guardRules are the rules of GuardChain: traffic from kok's ranges
// (guardCIDR, Config.GuardCIDR) may only go to kok's ranges; everything else
// from them is dropped before it can be routed out of the machine. Frames
// the local hosts' bridge carries from one host to another pass whatever
// their addresses (flannel's host-gw sends pod ranges through the nodes'
// own addresses): the bridge has no port off the machine.
func guardRules(guardCIDR string) [][]string {
	return [][]string{
		{"-i", hosts.Bridge, "-o", hosts.Bridge, "-j", "RETURN"},
		{"-s", guardCIDR, "-d", guardCIDR, "-j", "RETURN"},
		{"-s", guardCIDR, "-j", "DROP"},
	}
}

// EnsureGuard installs the network guard for guardCIDR (Config.GuardCIDR)
// and keeps its jump first in FORWARD. It is safe to call repeatedly; the
// supervisor re-asserts it periodically because kube-proxy and CNI plugins
// insert rules of their own.
func EnsureGuard(ctx context.Context, guardCIDR string) error {
	if _, err := run(ctx, "iptables", "-w", "-t", "filter", "-N", GuardChain); err != nil &&
		!strings.Contains(err.Error(), "exists") {
		return fmt.Errorf("creating the network guard: %w", err)
	}
	want := ""
	for _, r := range guardRules(guardCIDR) {
		want += "-A " + GuardChain + " " + strings.Join(r, " ") + "\n"
	}
	have, err := run(ctx, "iptables", "-w", "-t", "filter", "-S", GuardChain)
	if err != nil {
		return err
	}
	if normalizeRules(have, GuardChain) != want {
		if _, err := run(ctx, "iptables", "-w", "-t", "filter", "-F", GuardChain); err != nil {
			return err
		}
		for _, r := range guardRules(guardCIDR) {
			if _, err := run(ctx, "iptables", append([]string{"-w", "-t", "filter", "-A", GuardChain}, r...)...); err != nil {
				return err
			}
		}
	}
	fwd, err := run(ctx, "iptables", "-w", "-t", "filter", "-S", "FORWARD")
	if err != nil {
		return err
	}
	rules := ruleLines(fwd, "FORWARD")
	if len(rules) > 0 && rules[0] == "-A FORWARD -j "+GuardChain {
		return nil
	}
	for _, r := range rules {
		if r == "-A FORWARD -j "+GuardChain {
			_, _ = run(ctx, "iptables", "-w", "-t", "filter", "-D", "FORWARD", "-j", GuardChain)
		}
	}
	_, err = run(ctx, "iptables", "-w", "-t", "filter", "-I", "FORWARD", "1", "-j", GuardChain)
	return err
}

// RemoveGuard deletes the guard; kok down calls it last.
func RemoveGuard(ctx context.Context) {
	for i := 0; i < 10; i++ {
		if _, err := run(ctx, "iptables", "-w", "-t", "filter", "-D", "FORWARD", "-j", GuardChain); err != nil {
			break
		}
	}
	_, _ = run(ctx, "iptables", "-w", "-t", "filter", "-F", GuardChain)
	_, _ = run(ctx, "iptables", "-w", "-t", "filter", "-X", GuardChain)
}

func ruleLines(out, chain string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "-A "+chain+" ") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return lines
}

func normalizeRules(out, chain string) string {
	s := ""
	for _, l := range ruleLines(out, chain) {
		s += l + "\n"
	}
	return s
}

// ensureHostNetwork prepares the bridge, routes and kernel settings the node
// needs. The whole guarded range is routed to the bridge, so traffic from the
// host to an address kok has not (yet) placed never takes the default route.
func ensureHostNetwork(ctx context.Context, c *Config) error {
	if _, err := run(ctx, "ip", "link", "show", c.Bridge); err != nil {
		if _, err := run(ctx, "ip", "link", "add", c.Bridge, "type", "bridge"); err != nil {
			return fmt.Errorf("creating bridge %s: %w", c.Bridge, err)
		}
	}
	ones := strings.SplitN(c.NodeSubnet, "/", 2)[1]
	steps := [][]string{
		{"ip", "addr", "replace", c.NodeIP().String() + "/" + ones, "dev", c.Bridge},
		{"ip", "link", "set", c.Bridge, "up"},
		{"ip", "route", "replace", c.GuardCIDR, "dev", c.Bridge, "metric", "1000"},
	}
	for _, s := range steps {
		if _, err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	for key, val := range map[string]string{
		"net/ipv4/ip_forward":                 "1",
		"net/bridge/bridge-nf-call-iptables":  "1",
		"net/bridge/bridge-nf-call-ip6tables": "1",
	} {
		p := filepath.Join("/proc/sys", key)
		if _, err := os.Stat(p); os.IsNotExist(err) && strings.HasPrefix(key, "net/bridge") {
			_, _ = run(ctx, "modprobe", "br_netfilter")
		}
		if err := os.WriteFile(p, []byte(val), 0o644); err != nil {
			return fmt.Errorf("setting %s: %w (the kernel needs bridge netfilter: modprobe br_netfilter)", strings.ReplaceAll(key, "/", "."), err)
		}
	}
	return nil
}

// removeHostNetwork undoes ensureHostNetwork (sysctls are left as set).
func removeHostNetwork(ctx context.Context, bridge, guardCIDR string) {
	_, _ = run(ctx, "ip", "route", "del", guardCIDR, "dev", bridge)
	_, _ = run(ctx, "ip", "link", "del", bridge)
}

// nodeChainPrefixes name the iptables chains the node's own programs create:
// CNI plugins (CNI-*), the kubelet and kube-proxy (KUBE-*).
var nodeChainPrefixes = []string{"CNI-", "KUBE-"}

func isNodeChain(name string) bool {
	for _, p := range nodeChainPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// removeNodeChains deletes the iptables chains the node's programs created
// and the rules that jump to them. kok up refuses to start next to another
// Kubernetes node (its ports would be taken), so these chains are kok's.
func removeNodeChains(ctx context.Context) {
	for _, table := range []string{"nat", "filter", "mangle"} {
		out, err := run(ctx, "iptables", "-w", "-t", table, "-S")
		if err != nil {
			continue
		}
		var chains []string
		for _, l := range strings.Split(out, "\n") {
			f := splitRule(l)
			if len(f) >= 2 && f[0] == "-N" && isNodeChain(f[1]) {
				chains = append(chains, f[1])
			}
			if len(f) >= 4 && f[0] == "-A" && !isNodeChain(f[1]) {
				for i := 0; i+1 < len(f); i++ {
					if f[i] == "-j" && isNodeChain(f[i+1]) {
						_, _ = run(ctx, "iptables", append([]string{"-w", "-t", table, "-D"}, f[1:]...)...)
					}
				}
			}
		}
		for _, ch := range chains {
			_, _ = run(ctx, "iptables", "-w", "-t", table, "-F", ch)
		}
		for _, ch := range chains {
			_, _ = run(ctx, "iptables", "-w", "-t", table, "-X", ch)
		}
	}
}

// splitRule splits an iptables -S line into arguments, honouring the double
// quotes iptables puts around comments.
func splitRule(line string) []string {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range line {
		switch {
		case r == '"':
			inQuote, have = !inQuote, true
		case r == ' ' && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}
