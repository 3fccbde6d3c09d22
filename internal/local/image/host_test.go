package image

import (
	"os"
	"strings"
	"testing"
)

func TestHostFiles(t *testing.T) {
	const sh = "/bin/sh"
	if _, err := os.Stat(sh); err != nil {
		t.Skip("no /bin/sh")
	}
	files, err := HostFiles(sh)
	if err != nil {
		t.Fatal(err)
	}
	var libc, interp bool
	for _, f := range files {
		libc = libc || strings.Contains(f.Dst, "/libc.so")
		interp = interp || strings.Contains(f.Dst, "ld-linux")
		if f.Src == "" || f.Mode == 0 {
			t.Errorf("file %+v", f)
		}
	}
	if files[0].Dst != sh || !libc || !interp {
		t.Errorf("files %+v", files)
	}
}
