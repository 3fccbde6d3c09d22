package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Paths are where the agent keeps its state on the host.
type Paths struct{ Dir string }

// DefaultDir is the agent's state directory on a host.
const DefaultDir = "/var/lib/kok-agent"

func (p Paths) Desired() string            { return filepath.Join(p.Dir, "desired.json") }
func (p Paths) Status() string             { return filepath.Join(p.Dir, "status.json") }
func (p Paths) Lock() string               { return filepath.Join(p.Dir, "lock") }
func (p Paths) PidFile() string            { return filepath.Join(p.Dir, "agent.pid") }
func (p Paths) Applied(name string) string { return filepath.Join(p.Dir, "applied", name+".json") }
func (p Paths) Cache(digest string) string {
	return filepath.Join(p.Dir, "artifacts", strings.ReplaceAll(digest, ":", "-"))
}
func (p Paths) ServiceDir() string { return filepath.Join(p.Dir, "services") }

// Applier applies Desired documents to this host.
type Applier struct {
	Paths Paths
	// HTTP fetches artifacts; nil uses a client with a 5-minute timeout.
	HTTP *http.Client
	// ScriptTimeout bounds one script (default 5 minutes).
	ScriptTimeout time.Duration
	Now           func() time.Time
}

// Outcome is what one apply pass did: the report, and the services whose
// inputs changed (by component), which the supervisor restarts.
type Outcome struct {
	Report  Report
	Restart []string
}

// Apply brings every component of d to its final state, in order:
// artifacts and files are put in place (a drifted one is rewritten), a
// component whose hash differs from what was applied is installed, and
// an applied one is checked and, if the check fails, repaired. A component
// that fails stops the pass: the ones after it depend on it, or may.
//
// install=false only checks and repairs already-applied components and
// installs nothing new (the daemon's periodic pass runs with true too:
// desired.json is the operator's word).
func (a *Applier) Apply(ctx context.Context, d *Desired) Outcome {
	now := a.now()
	out := Outcome{Report: Report{Desired: d.Hash(), Time: now}}
	failed := false
	for i := range d.Components {
		c := &d.Components[i]
		cr := ComponentReport{Name: c.Name, Version: c.Version, Variant: c.Variant, LastCheck: now}
		if failed {
			cr.Error = "waiting for the components before it"
			out.Report.Components = append(out.Report.Components, cr)
			continue
		}
		prev, _ := a.loadApplied(c.Name)
		if prev != nil && prev.Hash == c.Hash {
			cr.Hash = prev.Hash
		}
		restart, err := a.applyOne(ctx, c, prev, &cr)
		if err != nil {
			cr.Ready = false
			cr.Error = err.Error()
			failed = true
		} else {
			cr.Ready = true
			cr.Hash = c.Hash
		}
		out.Restart = append(out.Restart, restart...)
		out.Report.Components = append(out.Report.Components, cr)
	}
	return out
}

func (a *Applier) applyOne(ctx context.Context, c *Component, prev *Component, cr *ComponentReport) ([]string, error) {
	drifted, err := a.placeContent(ctx, c)
	if err != nil {
		return nil, err
	}
	restart := servicesTouching(c, drifted)
	if prev == nil || prev.Hash != c.Hash {
		cr.Action = "installed"
		if prev != nil {
			cr.Action = "upgraded"
		}
		if err := a.run(ctx, c, "install", c.Scripts.Install); err != nil {
			return nil, err
		}
		if err := a.saveApplied(c); err != nil {
			return nil, err
		}
		return union(restart, ServicesToRestart(prev, c)), nil
	}
	cr.Action = "checked"
	if len(drifted) > 0 {
		cr.Action = "restored " + strings.Join(drifted, ", ")
	}
	if err := a.run(ctx, c, "check", c.Scripts.Check); err != nil {
		repair := c.Scripts.Repair
		if repair == "" {
			repair = c.Scripts.Install
		}
		if rerr := a.run(ctx, c, "repair", repair); rerr != nil {
			return restart, fmt.Errorf("%w; repair: %w", err, rerr)
		}
		if err2 := a.run(ctx, c, "check", c.Scripts.Check); err2 != nil {
			return restart, fmt.Errorf("still failing after repair: %w", err2)
		}
		cr.Action = "repaired (" + firstLine(err.Error()) + ")"
	}
	return restart, nil
}

// placeContent puts every artifact and file of c in place and returns the
// paths it had to (re)write. A path written for the first time counts too.
func (a *Applier) placeContent(ctx context.Context, c *Component) ([]string, error) {
	var changed []string
	for _, art := range c.Artifacts {
		mode, err := parseMode(art.Mode, 0o755)
		if err != nil {
			return nil, fmt.Errorf("artifact %s: %w", art.Path, err)
		}
		if ok, _ := fileHasDigest(art.Path, art.Digest, mode); ok {
			continue
		}
		if err := a.fetch(ctx, art, mode); err != nil {
			return nil, err
		}
		changed = append(changed, art.Path)
	}
	for _, f := range c.Files {
		mode, err := parseMode(f.Mode, 0o644)
		if err != nil {
			return nil, fmt.Errorf("file %s: %w", f.Path, err)
		}
		if old, err := os.ReadFile(f.Path); err == nil && bytes.Equal(old, f.Content) {
			if st, err := os.Stat(f.Path); err == nil && st.Mode().Perm() == mode {
				continue
			}
		}
		if err := writeAtomic(f.Path, f.Content, mode); err != nil {
			return nil, fmt.Errorf("writing %s: %w", f.Path, err)
		}
		changed = append(changed, f.Path)
	}
	return changed, nil
}

// fetch puts an artifact at its path: from the cache when it holds the
// digest, else over HTTP, checked against the digest before it is used.
func (a *Applier) fetch(ctx context.Context, art Artifact, mode os.FileMode) error {
	cache := a.Paths.Cache(art.Digest)
	if ok, _ := fileHasDigest(cache, art.Digest, 0); !ok {
		if err := a.download(ctx, art, cache); err != nil {
			return err
		}
	}
	src, err := os.Open(cache)
	if err != nil {
		return err
	}
	defer func() { _ = src.Close() }()
	// Streamed: an artifact can be a 130 MB binary, and the agent stays
	// small.
	if err := writeAtomicFrom(art.Path, src, mode); err != nil {
		return fmt.Errorf("installing artifact %s: %w", art.Path, err)
	}
	return nil
}

func (a *Applier) download(ctx context.Context, art Artifact, dst string) error {
	hc := a.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Minute}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, art.URL, nil)
	if err != nil {
		return fmt.Errorf("artifact %s: %w", art.Path, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("fetching artifact %s from %s: %w", art.Path, art.URL, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching artifact %s from %s: %s", art.Path, art.URL, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".fetch-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), resp.Body); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("fetching artifact %s from %s: %w", art.Path, art.URL, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != art.Digest {
		return fmt.Errorf("artifact %s from %s has digest %s, want %s: refusing it", art.Path, art.URL, got, art.Digest)
	}
	return os.Rename(tmp.Name(), dst)
}

// run runs one of c's scripts with sh -e; a failure carries the script's
// exit and the tail of its stderr.
func (a *Applier) run(ctx context.Context, c *Component, what, script string) error {
	if strings.TrimSpace(script) == "" {
		return nil
	}
	timeout := a.ScriptTimeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-e", "-c", script)
	cmd.Env = append(os.Environ(), "KOK_COMPONENT="+c.Name, "KOK_VERSION="+c.Version, "KOK_VARIANT="+c.Variant,
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.WaitDelay = 5 * time.Second
	var stderr tailBuffer
	cmd.Stdout = io.Discard
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf("%s script of %s failed (%v)", what, c.Name, err)
	if ctx.Err() != nil {
		msg = fmt.Sprintf("%s script of %s did not finish in %s", what, c.Name, timeout)
	}
	if t := strings.TrimSpace(stderr.String()); t != "" {
		msg += ": " + t
	}
	return errors.New(msg)
}

func (a *Applier) loadApplied(name string) (*Component, error) {
	data, err := os.ReadFile(a.Paths.Applied(name))
	if err != nil {
		return nil, err
	}
	var c Component
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

func (a *Applier) saveApplied(c *Component) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return writeAtomic(a.Paths.Applied(c.Name), data, 0o600)
}

// Applied lists the components applied on this host, by name.
func (a *Applier) Applied() map[string]*Component {
	out := map[string]*Component{}
	entries, _ := os.ReadDir(filepath.Dir(a.Paths.Applied("x")))
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		if c, err := a.loadApplied(name); err == nil {
			out[name] = c
		}
	}
	return out
}

// Forget removes what was applied of a component (after its uninstall).
func (a *Applier) Forget(name string) error {
	err := os.Remove(a.Paths.Applied(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func (a *Applier) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// servicesTouching names c's services that use one of paths.
func servicesTouching(c *Component, paths []string) []string {
	if len(paths) == 0 {
		return nil
	}
	var out []string
	for _, s := range c.Services {
		if len(s.RestartOn) == 0 || slices.ContainsFunc(paths, func(p string) bool { return slices.Contains(s.RestartOn, p) }) {
			out = append(out, s.Name)
		}
	}
	return out
}

// ServicesToRestart names the services of next whose inputs differ from
// prev: a service restarts when a path in its RestartOn (every artifact
// and file of the component when empty) changed, or its command did. A
// component seen for the first time restarts every service.
func ServicesToRestart(prev, next *Component) []string {
	if prev == nil {
		var all []string
		for _, s := range next.Services {
			all = append(all, s.Name)
		}
		return all
	}
	old := map[string]string{}
	for _, a := range prev.Artifacts {
		old[a.Path] = a.Digest + a.Mode
	}
	for _, f := range prev.Files {
		old[f.Path] = string(f.Content) + f.Mode
	}
	changed := map[string]bool{}
	seen := map[string]bool{}
	for _, a := range next.Artifacts {
		seen[a.Path] = true
		changed[a.Path] = old[a.Path] != a.Digest+a.Mode
	}
	for _, f := range next.Files {
		seen[f.Path] = true
		changed[f.Path] = old[f.Path] != string(f.Content)+f.Mode
	}
	for p := range old {
		if !seen[p] {
			changed[p] = true // removed
		}
	}
	prevCmd := map[string][]string{}
	for _, s := range prev.Services {
		prevCmd[s.Name] = s.Command
	}
	var out []string
	for _, s := range next.Services {
		restart := !slices.Equal(prevCmd[s.Name], s.Command)
		paths := s.RestartOn
		if len(paths) == 0 {
			for p := range changed {
				paths = append(paths, p)
			}
		}
		for _, p := range paths {
			restart = restart || changed[p]
		}
		if restart {
			out = append(out, s.Name)
		}
	}
	return out
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func parseMode(s string, def os.FileMode) (os.FileMode, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o7777 {
		return 0, fmt.Errorf("mode %q is not an octal file mode such as 0644", s)
	}
	return os.FileMode(n), nil
}

// fileHasDigest: path exists with that sha256 digest (and mode, unless 0).
func fileHasDigest(path, digest string, mode os.FileMode) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer func() { _ = f.Close() }()
	if mode != 0 {
		st, err := f.Stat()
		if err != nil || st.Mode().Perm() != mode {
			return false, err
		}
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, err
	}
	return "sha256:"+hex.EncodeToString(h.Sum(nil)) == digest, nil
}

// writeAtomic writes data to path through a temporary file and a rename,
// so a reader never sees half a file and a running binary can be replaced.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	return writeAtomicFrom(path, bytes.NewReader(data), mode)
}

// writeAtomicFrom is writeAtomic with the content read from r.
func writeAtomicFrom(path string, r io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := io.Copy(tmp, r); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// tailBuffer keeps the last 2 KiB written to it.
type tailBuffer struct{ b []byte }

const tailMax = 2048

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > tailMax {
		t.b = t.b[len(t.b)-tailMax:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
