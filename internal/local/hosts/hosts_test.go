package hosts

import (
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"w1", "a", "worker-1", strings.Repeat("a", MaxNameLength)} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "W1", "-w", "w-", "w_1", "w.1", "a/b", strings.Repeat("a", MaxNameLength+1)} {
		if err := ValidateName(bad); err == nil {
			t.Errorf("ValidateName(%q) accepted it", bad)
		}
	}
}

func TestVethNames(t *testing.T) {
	long := strings.Repeat("a", MaxNameLength)
	seen := map[string]string{}
	for _, name := range []string{"w1", "w2", long, long[:62]} {
		m, p := vethNames(name)
		for _, n := range []string{m, p} {
			if len(n) > 15 {
				t.Errorf("%s: interface name %q is longer than 15 bytes", name, n)
			}
		}
		if m == p {
			t.Errorf("%s: both ends are %q", name, m)
		}
		if other, ok := seen[m]; ok {
			t.Errorf("%s and %s share interface %s", name, other, m)
		}
		seen[m] = name
		if m2, p2 := vethNames(name); m2 != m || p2 != p {
			t.Errorf("%s: names change between calls", name)
		}
	}
	if got := netnsName("w1"); got != "kokm-w1" {
		t.Errorf("netnsName(w1) = %q", got)
	}
}

func TestLowestFree(t *testing.T) {
	used := func(last ...int) map[string]bool {
		m := map[string]bool{}
		for _, n := range last {
			m[nthIP(Subnet, n).String()] = true
		}
		return m
	}
	cases := []struct {
		used map[string]bool
		want string
	}{
		{used(), "10.202.0.10"},
		{used(10), "10.202.0.11"},
		{used(10, 11, 13), "10.202.0.12"},
		{used(11, 12), "10.202.0.10"},
		{used(1, 2, 3), "10.202.0.10"},
	}
	for _, c := range cases {
		ip, err := lowestFree(Subnet, FirstHost, c.used)
		if err != nil || ip.String() != c.want {
			t.Errorf("lowestFree(%v) = %v, %v; want %s", c.used, ip, err, c.want)
		}
	}
	full := map[string]bool{}
	for n := FirstHost; n <= 254; n++ {
		full[nthIP(Subnet, n).String()] = true
	}
	if ip, err := lowestFree(Subnet, FirstHost, full); err == nil {
		t.Errorf("a full subnet gave %s", ip)
	}
	delete(full, "10.202.0.254")
	if ip, err := lowestFree(Subnet, FirstHost, full); err != nil || ip.String() != "10.202.0.254" {
		t.Errorf("the last free address: %v, %v", ip, err)
	}
}

func TestAlias(t *testing.T) {
	h := &Host{Name: "w1", Address: "10.202.0.10", StateDir: "/var/lib/kok e2e"}
	name, addr, dir, ok := parseAlias(vethAlias(h) + "\n")
	if !ok || name != h.Name || addr != h.Address || dir != h.StateDir {
		t.Errorf("parseAlias(vethAlias) = %q %q %q %v", name, addr, dir, ok)
	}
	for _, bad := range []string{"", "something else", "kok-host w1", "kok-host w1 not-an-ip /x"} {
		if _, _, _, ok := parseAlias(bad); ok {
			t.Errorf("parseAlias(%q) accepted it", bad)
		}
	}
}

func TestCheckGuardCovers(t *testing.T) {
	if err := checkGuardCovers("10.200.0.0/13", Subnet); err != nil {
		t.Errorf("the default guard: %v", err)
	}
	for _, g := range []string{"10.200.0.0/16", "10.202.0.0/25", "192.168.0.0/16", "bogus"} {
		if err := checkGuardCovers(g, Subnet); err == nil {
			t.Errorf("guard %s was taken to cover %s", g, Subnet)
		}
	}
}

func TestRenderSSHDConfig(t *testing.T) {
	h := &Host{Name: "w1", Address: "10.202.0.10", Port: 22}
	conf := renderSSHDConfig(h)
	want := map[string]string{
		"ListenAddress":                "10.202.0.10:22",
		"HostKey":                      hostKeyFile,
		"PermitRootLogin":              "prohibit-password",
		"PasswordAuthentication":       "no",
		"KbdInteractiveAuthentication": "no",
		"PubkeyAuthentication":         "yes",
		"AuthorizedKeysFile":           ".ssh/authorized_keys",
		"UsePAM":                       "no",
		"PidFile":                      "/run/sshd.pid",
	}
	got := map[string]string{}
	for _, l := range strings.Split(conf, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, _ := strings.Cut(l, " ")
		if _, dup := got[k]; dup {
			t.Errorf("%s set twice", k)
		}
		got[k] = v
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s %q, want %q", k, got[k], v)
		}
	}
	if strings.Contains(conf, "Include") {
		t.Error("the machine's sshd_config.d must not apply to the host")
	}
}

func TestNewKey(t *testing.T) {
	priv, pub, err := newKey("root@w1")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	parsed, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(pub))
	if err != nil || comment != "root@w1" || parsed.Type() != ssh.KeyAlgoED25519 {
		t.Fatalf("public key %q: %v, comment %q", pub, err, comment)
	}
	if string(signer.PublicKey().Marshal()) != string(parsed.Marshal()) {
		t.Error("the public key is not the private key's")
	}
}

const mountinfo = `22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
30 25 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 27 0:40 / /var/lib/kok\040x/pods/a rw - tmpfs tmpfs rw
51 50 0:41 / /var/lib/kok\040x/pods/a/b rw - tmpfs tmpfs rw
52 27 0:4 net:[4026532] /run/netns/kokm-w2 rw - nsfs nsfs rw
`

func TestMountinfo(t *testing.T) {
	ms, err := parseMountinfo(strings.NewReader(mountinfo))
	if err != nil || len(ms) != 13 {
		t.Fatalf("parsed %d mounts, %v", len(ms), err)
	}
	if m := ms[10]; m.Mountpoint != "/var/lib/kok x/pods/a" || m.FSType != "tmpfs" {
		t.Errorf("escaped mount point: %+v", m)
	}
	if got, want := mountpointsUnder(ms, "/var"), []string{"/var/lib/kok x/pods/a/b", "/var/lib/kok x/pods/a"}; !reflect.DeepEqual(got, want) {
		t.Errorf("mountpointsUnder(/var) = %q, want %q", got, want)
	}
	if got := mountpointsUnder(ms, "/dev/shm"); len(got) != 2 {
		t.Errorf("stacked mounts on /dev/shm: %q, want it twice", got)
	}
	if got := mountpointsUnder(ms, "/va"); len(got) != 0 {
		t.Errorf("mountpointsUnder(/va) = %q: a prefix is not a parent", got)
	}

	hs := cgroupHierarchies(ms)
	var got []string
	for _, h := range hs {
		got = append(got, h.Mountpoint+" "+h.FSType+" "+cgroupMountData(h))
	}
	want := []string{
		"/sys/fs/cgroup/cpu,cpuacct cgroup cpu,cpuacct",
		"/sys/fs/cgroup/memory cgroup memory",
		"/sys/fs/cgroup/systemd cgroup xattr,name=systemd",
		"/sys/fs/cgroup/unified cgroup2 ",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("hierarchies:\n%q\nwant\n%q", got, want)
	}

	v2, _ := parseMountinfo(strings.NewReader("31 23 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"))
	if hs := cgroupHierarchies(v2); len(hs) != 1 || cgroupMountData(hs[0]) != "memory_recursiveprot" {
		t.Errorf("a cgroup v2 machine: %+v", hs)
	}
}
