package kube

import "testing"

func TestCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"v1.34.4", "v1.34.4", 0},
		{"v1.33.13", "v1.34.4", -1},
		{"v1.34.10", "v1.34.9", 1},
		{"v3.6.16", "3.5.35", 1},
		{"bogus", "v1.0.0", -1},
	} {
		if got := CompareVersions(c.a, c.b); got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
	if got := OldestVersion("v1.34.4", "v1.33.13", "v1.34.0"); got != "v1.33.13" {
		t.Errorf("OldestVersion = %q", got)
	}
	if MinorVersion("v3.5.35") != 5 || MinorVersion("x") != 0 {
		t.Error("MinorVersion")
	}
	if Image("", "etcd", "v3.6.16") != "kok.local/etcd:v3.6.16" || Image("reg.site/kok", "etcd", "v1") != "reg.site/kok/etcd:v1" {
		t.Error("Image")
	}
}

func TestNthIP(t *testing.T) {
	for _, tc := range []struct {
		cidr string
		n    int
		want string
	}{
		{"10.96.0.0/12", 10, "10.96.0.10"},
		{"10.200.0.0/24", 1, "10.200.0.1"},
		{"10.0.0.250/16", 260, "10.0.1.4"}, // from the network address, carrying over
		{"fd00::/64", 1, ""},
		{"not a cidr", 1, ""},
	} {
		if got := NthIP(tc.cidr, tc.n); got != tc.want {
			t.Errorf("NthIP(%s, %d) = %q, want %q", tc.cidr, tc.n, got, tc.want)
		}
	}
}

func TestServerHostPort(t *testing.T) {
	for _, tc := range []struct {
		server, host string
		port         int
		bad          bool
	}{
		{server: "https://10.201.0.7:6443", host: "10.201.0.7", port: 6443},
		{server: "https://api.example", host: "api.example", port: 443},
		{server: "https://[fd00::1]:6443", host: "fd00::1", port: 6443},
		{server: "::", bad: true},
	} {
		host, port, err := ServerHostPort(tc.server)
		if (err != nil) != tc.bad || host != tc.host || port != tc.port {
			t.Errorf("ServerHostPort(%q) = %q, %d, %v", tc.server, host, port, err)
		}
	}
}
