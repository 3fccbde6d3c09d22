package local

import (
	"os"
	"testing"
)

// The busybox layer links each applet where busybox installs it and in
// /bin, once: specs run /bin/sysctl (busybox puts it in /sbin).
// Any busybox lists its applets the same way: the host's stands in for
// the one kok builds.
func TestBusyboxLayer(t *testing.T) {
	const busybox = "/bin/busybox"
	if _, err := os.Stat(busybox); err != nil {
		t.Skipf("%s: %v (apt-get install busybox-static)", busybox, err)
	}
	files, err := busyboxLayer(busybox)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		if seen[f.Dst] {
			t.Errorf("%s twice in the layer", f.Dst)
		}
		seen[f.Dst] = true
	}
	for _, want := range []string{"/bin/sh", "/sbin/sysctl", "/bin/sysctl", "/usr/bin/env", "/bin/env"} {
		if !seen[want] {
			t.Errorf("no %s in the layer", want)
		}
	}
}
