package remote

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
)

// factsMarker starts the line that opens each section of factsScript's output.
const factsMarker = "@@kok-facts "

// factsScript prints every fact in one round trip, each section under a
// marker line; parseFacts reads it. nproc counts the CPUs the host lets
// processes run on (affinity, cpusets), getconf the online ones where nproc
// is missing (busybox without it).
const factsScript = `m='` + factsMarker + `'
echo "${m}os-release"; cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release
echo "${m}arch"; uname -m
echo "${m}kernel"; uname -r
echo "${m}cpus"; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN
echo "${m}meminfo"; grep '^MemTotal:' /proc/meminfo
echo "${m}hostname"; uname -n
`

// Facts reads the host's OS, architecture, kernel, CPUs, memory and hostname
// in one round trip.
func (c *Client) Facts(ctx context.Context) (nodev1.HostFacts, error) {
	res, err := c.Run(ctx, factsScript)
	if err != nil {
		return nodev1.HostFacts{}, fmt.Errorf("reading host facts: %w", err)
	}
	facts, err := parseFacts(res.Stdout)
	if err != nil {
		return facts, fmt.Errorf("reading host facts on %s: %w (exit %d: %s)", c.addr, err, res.ExitCode, res.StderrTail(512))
	}
	return facts, nil
}

// parseFacts reads factsScript's output. On error the facts it could read
// are filled in.
func parseFacts(out []byte) (nodev1.HostFacts, error) {
	sections := map[string][]string{}
	var current string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if name, ok := strings.CutPrefix(line, factsMarker); ok {
			current = name
			sections[current] = []string{}
			continue
		}
		if current != "" {
			sections[current] = append(sections[current], line)
		}
	}
	if err := sc.Err(); err != nil {
		return nodev1.HostFacts{}, fmt.Errorf("reading the facts script's output: %w", err)
	}
	// first is the first non-empty line of a section.
	first := func(name string) string {
		for _, l := range sections[name] {
			if l = strings.TrimSpace(l); l != "" {
				return l
			}
		}
		return ""
	}

	var facts nodev1.HostFacts
	var errs []error
	osRelease := parseOSRelease(sections["os-release"])
	facts.OS, facts.OSVersion = osRelease["ID"], osRelease["VERSION_ID"]
	if facts.OS == "" {
		errs = append(errs, errors.New("no ID in os-release"))
	}

	if machine := first("arch"); machine == "" {
		errs = append(errs, errors.New("no architecture (uname -m)"))
	} else if arch, ok := goArch(machine); ok {
		facts.Arch = arch
	} else {
		errs = append(errs, fmt.Errorf("architecture %q (uname -m) has no Go name kok knows", machine))
	}

	facts.KernelVersion = first("kernel")
	if facts.KernelVersion == "" {
		errs = append(errs, errors.New("no kernel release (uname -r)"))
	}

	if n, err := strconv.ParseInt(first("cpus"), 10, 32); err != nil || n < 1 {
		errs = append(errs, fmt.Errorf("CPU count %q is not a positive number", first("cpus")))
	} else {
		facts.CPUs = int32(n)
	}

	if mem, err := parseMemTotal(first("meminfo")); err != nil {
		errs = append(errs, err)
	} else {
		facts.MemoryBytes = mem
	}

	facts.Hostname = first("hostname")
	if facts.Hostname == "" {
		errs = append(errs, errors.New("no hostname (uname -n)"))
	}
	return facts, errors.Join(errs...)
}

// parseOSRelease reads os-release(5) lines: KEY=value, the value possibly in
// single or double quotes (with \-escapes in double quotes).
func parseOSRelease(lines []string) map[string]string {
	vars := map[string]string{}
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		switch {
		case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
			v = unescapeDoubleQuoted(v[1 : len(v)-1])
		case len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'':
			v = v[1 : len(v)-1]
		}
		vars[k] = v
	}
	return vars
}

// unescapeDoubleQuoted undoes the escapes a shell honours in double quotes.
func unescapeDoubleQuoted(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\\\"$`", s[i+1]) >= 0 {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseMemTotal reads "MemTotal:  16318480 kB" (/proc/meminfo) into bytes.
func parseMemTotal(line string) (int64, error) {
	fields := strings.Fields(line)
	if len(fields) != 3 || fields[0] != "MemTotal:" || fields[2] != "kB" {
		return 0, fmt.Errorf("memory: %q is not a MemTotal line of /proc/meminfo", line)
	}
	kb, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil || kb < 1 {
		return 0, fmt.Errorf("memory: %q is not a MemTotal line of /proc/meminfo", line)
	}
	return kb * 1024, nil
}

// goArch is the Go name (GOARCH) of a machine name as uname -m prints it.
func goArch(machine string) (string, bool) {
	switch machine {
	case "x86_64", "amd64":
		return "amd64", true
	case "aarch64", "arm64":
		return "arm64", true
	case "i386", "i486", "i586", "i686":
		return "386", true
	case "armv6l", "armv7l", "armv8l":
		return "arm", true
	case "ppc64le", "ppc64", "s390x", "riscv64", "mips", "mips64":
		return machine, true
	case "mipsel":
		return "mipsle", true
	case "mips64el":
		return "mips64le", true
	case "loongarch64":
		return "loong64", true
	}
	return "", false
}
