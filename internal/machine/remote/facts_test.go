package remote

import (
	"strings"
	"testing"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
)

func TestParseFacts(t *testing.T) {
	out := `@@kok-facts os-release
PRETTY_NAME="Ubuntu 24.04.1 LTS"
# a comment
NAME="Ubuntu"
VERSION_ID="24.04"
ID=ubuntu
ID_LIKE=debian
@@kok-facts arch
aarch64
@@kok-facts kernel
6.8.0-45-generic
@@kok-facts cpus
16
@@kok-facts meminfo
MemTotal:       65843020 kB
@@kok-facts hostname
worker-1
`
	got, err := parseFacts([]byte(out))
	if err != nil {
		t.Fatalf("parseFacts: %v", err)
	}
	want := nodev1.HostFacts{
		OS: "ubuntu", OSVersion: "24.04", Arch: "arm64", KernelVersion: "6.8.0-45-generic",
		CPUs: 16, MemoryBytes: 65843020 * 1024, Hostname: "worker-1",
	}
	if got != want {
		t.Errorf("parseFacts =\n%+v, want\n%+v", got, want)
	}
}

func TestParseFactsErrors(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		wantErr   []string
		want      nodev1.HostFacts
	}{{
		name:    "nothing",
		out:     "",
		wantErr: []string{"no ID in os-release", "no architecture", "no kernel release", "CPU count", "memory", "no hostname"},
	}, {
		name: "unknown architecture, no nproc, no os-release",
		out: "@@kok-facts os-release\n@@kok-facts arch\nsparc64\n@@kok-facts kernel\n5.10.0\n" +
			"@@kok-facts cpus\nsh: nproc: not found\n@@kok-facts meminfo\nMemTotal: 1024 kB\n@@kok-facts hostname\nh\n",
		wantErr: []string{"no ID in os-release", `architecture "sparc64"`, `CPU count "sh: nproc: not found"`},
		want:    nodev1.HostFacts{KernelVersion: "5.10.0", MemoryBytes: 1 << 20, Hostname: "h"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFacts([]byte(tc.out))
			if err == nil {
				t.Fatal("parseFacts succeeded")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if got != tc.want {
				t.Errorf("partial facts = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseOSRelease(t *testing.T) {
	got := parseOSRelease([]string{
		`ID=debian`,
		`VERSION_ID="12"`,
		`NAME='Single quoted'`,
		`PRETTY_NAME="with \"escapes\" \$x \\ \n"`,
		`   `,
		`#ID=commented`,
		`not a variable`,
	})
	want := map[string]string{
		"ID": "debian", "VERSION_ID": "12", "NAME": "Single quoted",
		"PRETTY_NAME": `with "escapes" $x \ \n`,
	}
	if len(got) != len(want) {
		t.Errorf("parseOSRelease = %q, want %q", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestGoArch(t *testing.T) {
	for machine, want := range map[string]string{
		"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm", "i686": "386",
		"ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "loongarch64": "loong64",
		"mips64el": "mips64le", "sparc64": "", "": "",
	} {
		got, ok := goArch(machine)
		if got != want || ok != (want != "") {
			t.Errorf("goArch(%q) = %q, %v; want %q", machine, got, ok, want)
		}
	}
}

func TestParseMemTotal(t *testing.T) {
	if got, err := parseMemTotal("MemTotal:        8048440 kB"); err != nil || got != 8048440*1024 {
		t.Errorf("parseMemTotal = %d, %v", got, err)
	}
	for _, bad := range []string{"", "MemFree: 1 kB", "MemTotal: x kB", "MemTotal: 1 MB", "MemTotal: 0 kB"} {
		if _, err := parseMemTotal(bad); err == nil {
			t.Errorf("parseMemTotal(%q) succeeded", bad)
		}
	}
}
