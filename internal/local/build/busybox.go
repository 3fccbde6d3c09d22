package build

import (
	"archive/tar"
	"bytes"
	"compress/bzip2"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
)

// BusyboxVersion is the upstream BusyBox release the conformance suite's
// images carry: the one Kubernetes' own busybox test image is (upstream's
// source, default configuration, static). Debian's busybox-static is not
// it where specs look: Debian reverts upstream's keeping of environment
// variables whose names are no shell identifiers (a Secret key data-1 as
// a variable), which the specs expect `sh -c env` to print.
const BusyboxVersion = "1.37.0"

// busyboxSource is upstream's release tarball as Debian's archive keeps it
// (the orig tarball of Debian's busybox source package) and its SHA-256.
var busyboxSource = struct{ URL, SHA256 string }{
	URL:    "http://deb.debian.org/debian/pool/main/b/busybox/busybox_" + BusyboxVersion + ".orig.tar.bz2",
	SHA256: "3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4",
}

// busyboxConfig are the settings changed from upstream's defconfig.
var busyboxConfig = map[string]string{"CONFIG_STATIC": "y"}

// BusyboxTools are the Debian packages a BusyBox build needs.
var BusyboxTools = []string{"gcc", "make", "libc6-dev"}

// EnsureBusybox builds BusyBox from upstream's source with a C compiler,
// unless the same build is cached, and returns the binary's path.
func (b *Builder) EnsureBusybox(ctx context.Context) (string, error) {
	p := &Product{Name: "busybox", Version: BusyboxVersion,
		Files: map[string]string{"source": busyboxSource.URL + "#" + busyboxSource.SHA256, "config": fmt.Sprint(busyboxConfig)}}
	dir, err := b.install(p, b.cachedC, "", func(tmp string) error {
		for _, tool := range []string{"gcc", "make"} {
			if _, err := exec.LookPath(tool); err != nil {
				return fmt.Errorf("building busybox %s needs %s: apt-get install %s", p.Version, tool, strings.Join(BusyboxTools, " "))
			}
		}
		b.progress("building busybox %s from upstream's source (first time only; ≈2 min on 2 cores)", p.Version)
		src := b.srcDir(p.Name, p.Version)
		if err := os.RemoveAll(src); err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(src) }()
		if err := fetchTarBz2(ctx, busyboxSource.URL, busyboxSource.SHA256, src); err != nil {
			return fmt.Errorf("busybox %s source: %w", p.Version, err)
		}
		tree := filepath.Join(src, "busybox-"+p.Version)
		if err := b.runIn(ctx, tree, "make", "defconfig"); err != nil {
			return err
		}
		if err := setKconfig(filepath.Join(tree, ".config"), busyboxConfig); err != nil {
			return err
		}
		if err := b.runIn(ctx, tree, "make", "-j"+strconv.Itoa(runtime.NumCPU()), "busybox"); err != nil {
			return err
		}
		return copyFile(filepath.Join(tree, "busybox"), filepath.Join(tmp, "busybox"), 0o755)
	})
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "busybox"), nil
}

// cachedC: a C product is built with the current recipe; the Go version
// plays no part in it.
func (b *Builder) cachedC(p *Product) bool {
	st, err := b.readStamp(p)
	if err != nil || st.Recipe != p.recipe() {
		return false
	}
	_, err = os.Stat(filepath.Join(b.Dir(p.Name, p.Version), "busybox"))
	return err == nil
}

// runIn runs a command other than go in dir, its output to the build log.
func (b *Builder) runIn(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var tail tailBuffer
	w := io.Writer(&tail)
	if b.Log != nil {
		w = io.MultiWriter(b.Log, &tail)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s in %s: %w\n%s", name, strings.Join(args, " "), dir, err, tail.String())
	}
	return nil
}

// setKconfig sets options in a Kconfig .config file, whether they are
// set there or commented out as "not set".
func setKconfig(path string, values map[string]string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	text := string(data)
	for k, v := range values {
		re := regexp.MustCompile(`(?m)^(# ` + regexp.QuoteMeta(k) + ` is not set|` + regexp.QuoteMeta(k) + `=.*)$`)
		if !re.MatchString(text) {
			return fmt.Errorf("%s: no %s to set", path, k)
		}
		text = re.ReplaceAllLiteralString(text, k+"="+v)
	}
	return os.WriteFile(path, []byte(text), 0o644)
}

// fetchTarBz2 downloads a .tar.bz2, checks its SHA-256 and unpacks it
// under dir.
func fetchTarBz2(ctx context.Context, url, sum, dir string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if got := sha256.Sum256(data); hex.EncodeToString(got[:]) != sum {
		return fmt.Errorf("%s has SHA-256 %x, want %s", url, got, sum)
	}
	return untar(tar.NewReader(bzip2.NewReader(bytes.NewReader(data))), dir)
}

// untar writes a tar stream's directories, files and symbolic links under
// dir, refusing any path or link that would leave it.
func untar(tr *tar.Reader, dir string) error {
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if !filepath.IsLocal(name) {
			return fmt.Errorf("tar entry %q leaves the directory", h.Name)
		}
		target := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(target, 0o755)
		case tar.TypeReg:
			err = writeFrom(tr, target, os.FileMode(h.Mode)&0o777)
		case tar.TypeSymlink:
			if !filepath.IsLocal(filepath.Join(filepath.Dir(name), h.Linkname)) {
				return fmt.Errorf("tar entry %q links out of the directory (%s)", h.Name, h.Linkname)
			}
			if err = os.MkdirAll(filepath.Dir(target), 0o755); err == nil {
				err = os.Symlink(h.Linkname, target)
			}
		}
		if err != nil {
			return err
		}
	}
}

func writeFrom(r io.Reader, path string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func copyFile(src, dst string, mode os.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read only
	return writeFrom(f, dst, mode)
}
