// Package build compiles the Kubernetes, etcd and CoreDNS binaries kok runs
// from the Go module proxy, at pinned versions, into a cache directory.
//
// Each product is built from a small generated wrapper module that requires
// the upstream module at the pinned version. Kubernetes is built as one
// multi-call binary ("kube") that dispatches on its name or first argument;
// links named after each component point at it. A stamp file records what was
// built and how, so a changed recipe or a half-finished build is rebuilt.
package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// recipeVersion changes whenever the way binaries are produced changes, so
// cached outputs of an older recipe are rebuilt.
const recipeVersion = "1"

// Builder builds binaries into CacheDir.
type Builder struct {
	// CacheDir holds wrapper modules (src/) and outputs (bin/).
	CacheDir string
	// Go is the go command; "go" from PATH when empty.
	Go string
	// Log receives the output of go commands. Discarded when nil.
	Log io.Writer
	// Progress receives one human line per step. Discarded when nil.
	Progress io.Writer
}

// Product is one thing to build: a wrapper module and the binaries made from it.
type Product struct {
	// Name and Version identify the product, e.g. kubernetes v1.34.4.
	Name, Version string
	// GoMod is the wrapper module's go.mod.
	GoMod string
	// Files are extra source files of the wrapper module (name → content).
	Files map[string]string
	// Binaries maps an output name to the package path built into it.
	Binaries map[string]string
	// TestBinaries maps an output name to a package whose test binary
	// (go test -c) it is; the package's test-only requirements are
	// resolved as it builds.
	TestBinaries map[string]string
	// Links maps a link name to the binary it points at.
	Links map[string]string
	// LDFlags is passed to go build.
	LDFlags string
}

// Stamp records a finished build.
type Stamp struct {
	Product   string    `json:"product"`
	Version   string    `json:"version"`
	Recipe    string    `json:"recipe"`
	GoVersion string    `json:"goVersion"`
	Built     time.Time `json:"built"`
	Seconds   float64   `json:"seconds"`
}

// Dir is where the binaries of a product end up.
func (b *Builder) Dir(name, version string) string {
	return filepath.Join(b.CacheDir, "bin", name, version)
}

func (b *Builder) srcDir(name, version string) string {
	return filepath.Join(b.CacheDir, "src", name, version)
}

func (b *Builder) goCmd() string {
	if b.Go != "" {
		return b.Go
	}
	return "go"
}

// recipe hashes everything that determines the output.
func (p *Product) recipe() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n%s\n", recipeVersion, p.Name, p.Version, p.GoMod, p.LDFlags)
	for _, m := range []map[string]string{p.Files, p.Binaries, p.Links, p.TestBinaries} {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			fmt.Fprintf(h, "%s=%s\n", k, m[k])
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Cached reports whether p is built with the current recipe.
func (b *Builder) Cached(p *Product) bool {
	st, err := b.readStamp(p)
	if err != nil || st.Recipe != p.recipe() || st.GoVersion != runtime.Version() {
		return false
	}
	for _, m := range []map[string]string{p.Binaries, p.TestBinaries} {
		for out := range m {
			if _, err := os.Stat(filepath.Join(b.Dir(p.Name, p.Version), out)); err != nil {
				return false
			}
		}
	}
	return true
}

func (b *Builder) readStamp(p *Product) (*Stamp, error) {
	data, err := os.ReadFile(filepath.Join(b.Dir(p.Name, p.Version), ".stamp.json"))
	if err != nil {
		return nil, err
	}
	var st Stamp
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Ensure builds p unless a build with the same recipe is cached, and returns
// the directory holding its binaries.
func (b *Builder) Ensure(ctx context.Context, p *Product) (string, error) {
	return b.install(p, b.Cached, runtime.Version(), func(tmp string) error {
		b.progress("building %s %s from the Go module proxy (first time only; Kubernetes takes ≈6 min on 2 cores)", p.Name, p.Version)
		src := b.srcDir(p.Name, p.Version)
		if err := os.RemoveAll(src); err != nil {
			return err
		}
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		files := map[string]string{"go.mod": p.GoMod}
		for k, v := range p.Files {
			files[k] = v
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o644); err != nil {
				return err
			}
		}
		if err := b.run(ctx, src, "mod", "tidy"); err != nil {
			return fmt.Errorf("resolving modules for %s %s: %w", p.Name, p.Version, err)
		}
		for _, out := range slices.Sorted(maps.Keys(p.Binaries)) {
			args := []string{"build", "-trimpath", "-ldflags", p.LDFlags, "-o", filepath.Join(tmp, out), p.Binaries[out]}
			if err := b.run(ctx, src, args...); err != nil {
				return fmt.Errorf("building %s of %s %s: %w", out, p.Name, p.Version, err)
			}
		}
		for _, out := range slices.Sorted(maps.Keys(p.TestBinaries)) {
			args := []string{"test", "-c", "-mod=mod", "-trimpath", "-ldflags", p.LDFlags, "-o", filepath.Join(tmp, out), p.TestBinaries[out]}
			if err := b.run(ctx, src, args...); err != nil {
				return fmt.Errorf("building %s of %s %s: %w", out, p.Name, p.Version, err)
			}
		}
		for _, link := range slices.Sorted(maps.Keys(p.Links)) {
			if err := os.Symlink(p.Links[link], filepath.Join(tmp, link)); err != nil {
				return err
			}
		}
		return nil
	})
}

// install runs build, which writes p's outputs into a scratch directory,
// unless cached(p); then stamps them with p's recipe (and goVersion, the
// toolchain that built them, if any) and moves them into place, so an
// interrupted build never leaves a directory that looks complete. One
// build of a product runs at a time, across processes; whoever waited
// finds the other's result.
func (b *Builder) install(p *Product, cached func(*Product) bool, goVersion string, build func(tmp string) error) (string, error) {
	dir := b.Dir(p.Name, p.Version)
	if cached(p) {
		return dir, nil
	}
	unlock, err := lockFile(dir + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if cached(p) {
		return dir, nil
	}
	start := time.Now()
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	if err := build(tmp); err != nil {
		return "", err
	}
	st := Stamp{Product: p.Name, Version: p.Version, Recipe: p.recipe(), GoVersion: goVersion,
		Built: time.Now().UTC(), Seconds: time.Since(start).Seconds()}
	data, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, ".stamp.json"), data, 0o644); err != nil {
		return "", err
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	b.progress("built %s %s in %s", p.Name, p.Version, time.Since(start).Round(time.Second))
	return dir, nil
}

func (b *Builder) run(ctx context.Context, dir string, args ...string) error {
	cmd := exec.CommandContext(ctx, b.goCmd(), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOWORK=off", "GOFLAGS=-mod=mod -buildvcs=false")
	var tail tailBuffer
	w := io.Writer(&tail)
	if b.Log != nil {
		w = io.MultiWriter(b.Log, &tail)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("the Go toolchain is needed to build components: install Go ≥ 1.24 and put it on PATH: %w", err)
		}
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, tail.String())
	}
	return nil
}

func (b *Builder) progress(format string, args ...any) {
	if b.Progress != nil {
		fmt.Fprintf(b.Progress, format+"\n", args...)
	}
}

// tailBuffer keeps the last few KiB written to it, for error messages.
type tailBuffer struct{ buf []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.buf) }

// lockFile takes an exclusive advisory lock, waiting for other holders.
func lockFile(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close() // nothing was written: the file is only a lock
	}, nil
}
