package image

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestImagesShareEqualLayers(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "tool")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	layer := []File{{Src: bin, Dst: "/usr/local/bin/tool", Mode: 0o755}, {Dst: "/usr/local/bin/alias", Link: "tool"}, {Dst: "/tmp", Dir: true}}
	a, err := Build(Spec{Ref: Prefix + "aa:v1", Layers: [][]File{layer}, Entrypoint: []string{"/usr/local/bin/tool"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(Spec{Ref: Prefix + "bb:v1", Layers: [][]File{layer}, Entrypoint: []string{"/usr/local/bin/alias"}})
	if err != nil {
		t.Fatal(err)
	}
	la, _ := a.Layers()
	lb, _ := b.Layers()
	da, _ := la[0].Digest()
	db, _ := lb[0].Digest()
	if da != db {
		t.Fatalf("equal file sets must give equal layers: %s vs %s", da, db)
	}
	ca, _ := ConfigDigest(a)
	cb, _ := ConfigDigest(b)
	if ca == cb {
		t.Fatal("different entrypoints must give different configs")
	}

	// The layer holds the file, the link and a sticky /tmp.
	rc, err := la[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	tr := tar.NewReader(rc)
	seen := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[h.Name] = h
	}
	if h := seen["usr/local/bin/tool"]; h == nil || h.Mode != 0o755 {
		t.Fatalf("tool missing or wrong mode: %+v", h)
	}
	if h := seen["usr/local/bin/alias"]; h == nil || h.Linkname != "tool" {
		t.Fatalf("alias link missing: %+v", h)
	}
	if h := seen["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Fatalf("/tmp missing or not sticky: %+v", h)
	}

	out := filepath.Join(dir, "images.tar")
	if err := WriteTarball(out, map[string]v1.Image{Prefix + "aa:v1": a, Prefix + "bb:v1": b}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(out); err != nil || st.Size() == 0 {
		t.Fatalf("tarball not written: %v", err)
	}
}
