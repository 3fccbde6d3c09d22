package build

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A setting commented out as "not set" and one already set are both
// rewritten; a missing one is an error, not a silent default.
func TestSetKconfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".config")
	in := "CONFIG_A=y\n# CONFIG_STATIC is not set\nCONFIG_B=\"x\"\n"
	if err := os.WriteFile(path, []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := setKconfig(path, map[string]string{"CONFIG_STATIC": "y", "CONFIG_B": `"y"`}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if want := "CONFIG_A=y\nCONFIG_STATIC=y\nCONFIG_B=\"y\"\n"; string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if err := setKconfig(path, map[string]string{"CONFIG_NOPE": "y"}); err == nil {
		t.Error("setting an option the file lacks succeeded")
	}
}

func TestUntar(t *testing.T) {
	archive := func(entries ...tar.Header) *tar.Reader {
		var buf bytes.Buffer
		w := tar.NewWriter(&buf)
		for _, h := range entries {
			h.Size = int64(len(h.Name))
			if h.Typeflag != tar.TypeReg {
				h.Size = 0
			}
			if err := w.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			if h.Size > 0 {
				_, _ = w.Write([]byte(h.Name))
			}
		}
		_ = w.Close()
		return tar.NewReader(&buf)
	}
	dir := t.TempDir()
	err := untar(archive(tar.Header{Name: "src/", Typeflag: tar.TypeDir, Mode: 0o755},
		tar.Header{Name: "src/a.c", Typeflag: tar.TypeReg, Mode: 0o644},
		tar.Header{Name: "src/link", Typeflag: tar.TypeSymlink, Linkname: "a.c"}), dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "src/link")); err != nil || string(got) != "src/a.c" {
		t.Errorf("src/link reads %q, %v", got, err)
	}
	err = untar(archive(tar.Header{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644}), dir)
	if err == nil || !strings.Contains(err.Error(), "leaves the directory") {
		t.Errorf("an entry outside the directory: %v", err)
	}
}
