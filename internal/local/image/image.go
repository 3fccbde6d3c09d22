// Package image assembles OCI images from local files in pure Go
// (go-containerregistry), writes them as tarballs and imports them into
// containerd. There is no registry and no Docker engine: every image kok runs
// locally is made here.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Prefix is the repository prefix of every locally built image.
const Prefix = "kok.local/"

// File is one file placed in an image.
type File struct {
	// Src is a path on this machine; empty for a directory or a link.
	Src string
	// Dst is the absolute path in the image.
	Dst string
	// Mode is the file mode; 0755 for binaries.
	Mode int64
	// Link, when set, makes Dst a symbolic link to Link.
	Link string
	// Dir makes Dst a directory.
	Dir bool
}

// Spec is an image: layers of files plus the config that runs it.
type Spec struct {
	// Ref is the image reference, e.g. kok.local/kube-apiserver:v1.34.4.
	Ref string
	// Layers are built in order; equal layers in different images get the
	// same digest, so containerd stores them once.
	Layers     [][]File
	Entrypoint []string
	Cmd        []string
	Env        []string
	// User is the image's user (e.g. "1234"); empty runs as root.
	User string
}

// epoch is the modification time of every file in every layer, so that
// layers are reproducible and shared.
var epoch = time.Unix(0, 0).UTC()

// Build assembles the image described by spec.
func Build(spec Spec) (v1.Image, error) { return (&Builder{}).Build(spec) }

// Builder assembles images and builds each distinct layer once: images that
// share a layer (every component image of one Kubernetes version) share its
// compressed bytes instead of compressing the same files again. It is safe
// for concurrent use; a layer stays in memory as long as the Builder.
type Builder struct {
	mu     sync.Mutex
	layers map[string]v1.Layer
}

// Build assembles the image described by spec, reusing layers built before.
func (b *Builder) Build(spec Spec) (v1.Image, error) {
	img := empty.Image
	for i, files := range spec.Layers {
		layer, err := b.layer(files)
		if err != nil {
			return nil, fmt.Errorf("image %s layer %d: %w", spec.Ref, i, err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			return nil, err
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", goarch()
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.Entrypoint = spec.Entrypoint
	cfg.Config.Cmd = spec.Cmd
	cfg.Config.User = spec.User
	cfg.Config.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, spec.Env...)
	return mutate.ConfigFile(img, cfg)
}

// layer returns the layer of files, built once per distinct file set (the
// sources identified by path, size and modification time).
func (b *Builder) layer(files []File) (v1.Layer, error) {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%q %q %o %q %v", f.Src, f.Dst, f.Mode, f.Link, f.Dir)
		if f.Src != "" {
			st, err := os.Stat(f.Src)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(h, " %d %d", st.Size(), st.ModTime().UnixNano())
		}
		fmt.Fprintln(h)
	}
	key := hex.EncodeToString(h.Sum(nil))
	b.mu.Lock()
	l, ok := b.layers[key]
	b.mu.Unlock()
	if ok {
		return l, nil
	}
	l, err := newLayer(files)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.layers == nil {
		b.layers = map[string]v1.Layer{}
	}
	b.layers[key] = l
	return l, nil
}

// newLayer writes files into a gzip'd tar held in memory-backed temp storage.
func newLayer(files []File) (v1.Layer, error) {
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	// Parent directories first, each once.
	dirs := map[string]bool{}
	var addDir func(d string) error
	addDir = func(d string) error {
		if d == "/" || d == "." || dirs[d] {
			return nil
		}
		if err := addDir(path.Dir(d)); err != nil {
			return err
		}
		dirs[d] = true
		mode := int64(0o755)
		if d == "/tmp" {
			mode = 0o1777
		}
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: mode, ModTime: epoch})
	}
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Dst < sorted[j].Dst })
	for _, f := range sorted {
		if !path.IsAbs(f.Dst) {
			return nil, fmt.Errorf("image path %q is not absolute", f.Dst)
		}
		if f.Dir {
			if err := addDir(f.Dst); err != nil {
				return nil, err
			}
			continue
		}
		if err := addDir(path.Dir(f.Dst)); err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(f.Dst, "/")
		if f.Link != "" {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: f.Link, Mode: 0o777, ModTime: epoch}); err != nil {
				return nil, err
			}
			continue
		}
		if err := addFile(tw, f, name); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
}

func addFile(tw *tar.Writer, f File, name string) error {
	src, err := os.Open(f.Src)
	if err != nil {
		return err
	}
	defer func() { _ = src.Close() }()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	mode := f.Mode
	if mode == 0 {
		mode = 0o644
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: st.Size(), Mode: mode, ModTime: epoch}); err != nil {
		return err
	}
	_, err = io.Copy(tw, src)
	return err
}

// WriteTarball writes images into one docker-archive tarball; layers shared
// by several images are written once.
func WriteTarball(file string, images map[string]v1.Image) error {
	refs := map[name.Reference]v1.Image{}
	for ref, img := range images {
		tag, err := name.NewTag(ref)
		if err != nil {
			return err
		}
		refs[tag] = img
	}
	tmp := file + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := tarball.MultiRefWrite(refs, f); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

// Containerd is a containerd instance reached through the ctr command.
type Containerd struct {
	// Ctr is the ctr binary; "ctr" from PATH when empty.
	Ctr string
	// Address is containerd's socket.
	Address string
	// Namespace is the containerd namespace; "k8s.io" for the CRI.
	Namespace string
}

func (c *Containerd) cmd(ctx context.Context, args ...string) *exec.Cmd {
	ctr := c.Ctr
	if ctr == "" {
		ctr = "ctr"
	}
	ns := c.Namespace
	if ns == "" {
		ns = "k8s.io"
	}
	return exec.CommandContext(ctx, ctr, append([]string{"--address", c.Address, "--namespace", ns}, args...)...)
}

// Import loads a tarball's images into containerd and unpacks them.
func (c *Containerd) Import(ctx context.Context, tarballPath string) error {
	out, err := c.cmd(ctx, "images", "import", "--no-unpack=false", tarballPath).CombinedOutput()
	if err != nil {
		return fmt.Errorf("importing %s into containerd: %w: %s", tarballPath, err, out)
	}
	return nil
}

// Images returns the image references containerd holds, with their digests.
func (c *Containerd) Images(ctx context.Context) (map[string]string, error) {
	out, err := c.cmd(ctx, "images", "ls").Output()
	if err != nil {
		return nil, fmt.Errorf("listing containerd images: %w", err)
	}
	imgs := map[string]string{}
	for i, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if i == 0 || len(fields) < 3 {
			continue
		}
		imgs[fields[0]] = fields[2]
	}
	return imgs, nil
}

// ConfigDigest identifies an image by its config (its "image ID"), which a
// docker-archive import into containerd preserves.
func ConfigDigest(img v1.Image) (string, error) {
	d, err := img.ConfigName()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

func goarch() string { return runtime.GOARCH }
