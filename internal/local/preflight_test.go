package local

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckPortsNamesTheTakenPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := DefaultConfig()
	c.APIServerPort = l.Addr().(*net.TCPAddr).Port
	err = checkPorts(&c)
	var pe *PreflightError
	if !errors.As(err, &pe) {
		// Another listener on the fixed ports would also fail the check;
		// what matters is a clear error either way.
		t.Fatalf("want a PreflightError, got %v", err)
	}
	if !strings.Contains(err.Error(), "in use") || pe.Fix == "" {
		t.Fatalf("error should say the port is in use and how to fix it: %v", err)
	}
}

func TestCheckStateDirRefusesForeignDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := checkStateDir(dir); err != nil {
		t.Fatalf("empty dir: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "someone-elses-file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkStateDir(dir); err == nil {
		t.Fatal("a non-empty directory without kok state must be refused")
	}
	if err := checkStateDir(filepath.Join(dir, "missing")); err != nil {
		t.Fatalf("a missing dir is fine (kok up creates it): %v", err)
	}
}

func TestPodCgroup(t *testing.T) {
	pod := "12:memory:/kok/kubepods/besteffort/pod1/abc\n11:cpu,cpuacct:/kok/kubepods/besteffort/pod1/abc\n1:name=systemd:/system.slice/containerd.service\n0::/\n"
	other := "12:memory:/system.slice/ssh.service\n0::/system.slice/ssh.service\n"
	v2 := "0::/kok/kubepods/pod1/abc\n"
	if !podCgroup(pod, "/kok") || podCgroup(other, "/kok") || !podCgroup(v2, "/kok") || podCgroup(pod, "/ko") {
		t.Fatal("podCgroup")
	}
}
