package image

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// libDirs are where the dynamic loader of a Debian machine finds
// libraries, in its order.
func libDirs() []string {
	triplet := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
	return []string{"/lib/" + triplet, "/usr/lib/" + triplet, "/lib64", "/usr/lib64", "/lib", "/usr/lib"}
}

// HostFiles are files of this machine to put in an image at the same
// paths, with every shared library each program loads (its interpreter and
// DT_NEEDED entries, transitively), so that a program packaged by a Debian
// machine runs in an image that holds nothing else. Links are followed: the
// image gets a copy of what they point at.
func HostFiles(paths ...string) ([]File, error) {
	var out []File
	seen := map[string]bool{}
	queue := append([]string(nil), paths...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil, err
		}
		st, err := os.Stat(real)
		if err != nil {
			return nil, err
		}
		out = append(out, File{Src: real, Dst: p, Mode: int64(st.Mode().Perm())})
		deps, err := elfDeps(real)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		queue = append(queue, deps...)
	}
	return out, nil
}

// elfDeps are the paths of the interpreter and libraries an ELF file
// needs; none for a file that is not ELF.
func elfDeps(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			return nil, nil
		}
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var deps []string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return nil, err
			}
			deps = append(deps, string(b[:len(b)-1])) // NUL-terminated
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return nil, err
	}
	for _, lib := range libs {
		found := ""
		for _, dir := range libDirs() {
			if _, err := os.Stat(filepath.Join(dir, lib)); err == nil {
				found = filepath.Join(dir, lib)
				break
			}
		}
		if found == "" {
			return nil, fmt.Errorf("library %s not found in %v", lib, libDirs())
		}
		deps = append(deps, found)
	}
	return deps, nil
}
