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

// TestBuilderBuildsEachLayerOnce: images sharing a file set share the one
// layer a Builder made for it; a changed source file makes a new one.
func TestBuilderBuildsEachLayerOnce(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "kube")
	if err := os.WriteFile(bin, []byte("kube"), 0o755); err != nil {
		t.Fatal(err)
	}
	layer := []File{{Src: bin, Dst: "/usr/local/bin/kube", Mode: 0o755}}
	b := &Builder{}
	var got []v1.Layer
	for _, e := range []string{"kube-apiserver", "kube-proxy"} {
		img, err := b.Build(Spec{Ref: Prefix + e + ":v1", Layers: [][]File{layer}, Entrypoint: []string{e}})
		if err != nil {
			t.Fatal(err)
		}
		ls, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ls[0])
	}
	if len(b.layers) != 1 {
		t.Fatalf("%d layers built for one file set", len(b.layers))
	}
	if err := os.WriteFile(bin, []byte("kube, rebuilt"), 0o755); err != nil {
		t.Fatal(err)
	}
	img, err := b.Build(Spec{Ref: Prefix + "kube-apiserver:v2", Layers: [][]File{layer}})
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := img.Layers()
	d0, _ := got[0].Digest()
	d1, _ := got[1].Digest()
	d2, _ := ls[0].Digest()
	if d0 != d1 || d2 == d0 || len(b.layers) != 2 {
		t.Fatalf("digests %s %s %s, %d layers: want the first two equal and a new one after the change", d0, d1, d2, len(b.layers))
	}
}
