package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
)

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// component writes its install count to a file, so tests see how often
// each script ran.
func testComponent(dir string, blobURL, blobDigest string) Component {
	c := Component{Name: "web", Version: "v1", Variant: "debian",
		Artifacts: []Artifact{{Path: filepath.Join(dir, "bin/tool"), URL: blobURL, Digest: blobDigest}},
		Files:     []File{{Path: filepath.Join(dir, "etc/web.conf"), Content: []byte("port=80\n")}},
		Scripts: nodev1.Scripts{
			Install:   "echo x >> " + filepath.Join(dir, "installs"),
			Check:     "test -f " + filepath.Join(dir, "healthy") + " || { echo 'web is not healthy' >&2; exit 3; }",
			Repair:    "touch " + filepath.Join(dir, "healthy") + "; echo r >> " + filepath.Join(dir, "repairs"),
			Uninstall: "rm -f " + filepath.Join(dir, "healthy"),
		},
		Services: []nodev1.Service{{Name: "web", Command: []string{"sleep", "300"}, RestartOn: []string{filepath.Join(dir, "etc/web.conf")}}},
	}
	c.ComputeHash()
	return c
}

func lines(t *testing.T, path string) int {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "\n")
}

func TestApply(t *testing.T) {
	blob := []byte("#!/bin/sh\necho tool\n")
	fetches := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches++
		_, _ = w.Write(blob)
	}))
	defer srv.Close()
	dir := t.TempDir()
	a := &Applier{Paths: Paths{Dir: filepath.Join(dir, "state")}}
	c := testComponent(dir, srv.URL, digest(blob))
	d := &Desired{Components: []Component{c}}
	ctx := context.Background()

	// First pass installs; the check is not run (install is the check).
	out := a.Apply(ctx, d)
	if r := out.Report.Components[0]; !r.Ready || r.Action != "installed" || r.Hash != c.Hash {
		t.Fatalf("first pass: %+v", r)
	}
	if got := out.Restart; len(got) != 1 || got[0] != "web" {
		t.Fatalf("first pass restarts %v, want [web]", got)
	}
	if lines(t, filepath.Join(dir, "installs")) != 1 || fetches != 1 {
		t.Fatal("want one install and one fetch")
	}
	if st, _ := os.Stat(filepath.Join(dir, "bin/tool")); st == nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("artifact not installed 0755: %v", st)
	}

	// Second pass: the check fails, so repair runs, and the check passes.
	out = a.Apply(ctx, d)
	if r := out.Report.Components[0]; !r.Ready || !strings.HasPrefix(r.Action, "repaired") || !strings.Contains(r.Action, "web is not healthy") {
		t.Fatalf("second pass: %+v", r)
	}
	if lines(t, filepath.Join(dir, "installs")) != 1 || lines(t, filepath.Join(dir, "repairs")) != 1 {
		t.Fatal("want no second install, one repair")
	}
	if len(out.Restart) != 0 {
		t.Fatalf("nothing changed, yet restarts %v", out.Restart)
	}

	// Drift: an edited file is restored and its service restarts; a
	// deleted artifact comes back from the cache, not the registry.
	_ = os.WriteFile(filepath.Join(dir, "etc/web.conf"), []byte("port=8080\n"), 0o644)
	_ = os.Remove(filepath.Join(dir, "bin/tool"))
	out = a.Apply(ctx, d)
	if r := out.Report.Components[0]; !r.Ready || !strings.Contains(r.Action, "restored") {
		t.Fatalf("drift pass: %+v", r)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "etc/web.conf")); string(got) != "port=80\n" {
		t.Fatalf("config not restored: %q", got)
	}
	if len(out.Restart) != 1 || fetches != 1 {
		t.Fatalf("restart %v (want [web]), fetches %d (want 1)", out.Restart, fetches)
	}

	// A new version installs again (an upgrade).
	c2 := c
	c2.Version = "v2"
	c2.ComputeHash()
	out = a.Apply(ctx, &Desired{Components: []Component{c2}})
	if r := out.Report.Components[0]; !r.Ready || r.Action != "upgraded" {
		t.Fatalf("upgrade: %+v", r)
	}
}

func TestApplyFailures(t *testing.T) {
	blob := []byte("real")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("tampered")) }))
	defer srv.Close()
	dir := t.TempDir()
	a := &Applier{Paths: Paths{Dir: filepath.Join(dir, "state")}}
	ctx := context.Background()

	c := testComponent(dir, srv.URL, digest(blob))
	out := a.Apply(ctx, &Desired{Components: []Component{c}})
	if r := out.Report.Components[0]; r.Ready || !strings.Contains(r.Error, "refusing it") {
		t.Fatalf("tampered artifact: %+v", r)
	}

	bad := Component{Name: "bad", Version: "v1", Scripts: nodev1.Scripts{Install: "echo step one; echo 'E: package foo has no candidate' >&2; exit 100"}}
	bad.ComputeHash()
	next := Component{Name: "next", Version: "v1", Scripts: nodev1.Scripts{Install: "true"}}
	next.ComputeHash()
	out = a.Apply(ctx, &Desired{Components: []Component{bad, next}})
	r := out.Report.Components
	if r[0].Ready || !strings.Contains(r[0].Error, "install script of bad failed (exit status 100): E: package foo has no candidate") {
		t.Fatalf("failing script: %+v", r[0])
	}
	if r[1].Ready || r[1].Error != "waiting for the components before it" {
		t.Fatalf("a component after a failed one: %+v", r[1])
	}
	if _, err := os.Stat(a.Paths.Applied("bad")); err == nil {
		t.Fatal("a failed install was recorded as applied")
	}
}

func TestSupervisorRestarts(t *testing.T) {
	s := NewSupervisor(t.TempDir())
	s.StopTimeout = 2 * time.Second
	svc := nodev1.Service{Name: "sleeper", Command: []string{"sleep", "300"}}
	s.Ensure([]nodev1.Service{svc}, nil)
	first := s.Report()[0]
	if !first.Running {
		t.Fatalf("not running: %+v", first)
	}
	defer s.StopAll()
	p, _ := os.FindProcess(first.PID)
	_ = p.Kill()
	select {
	case <-s.Exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the supervisor did not notice the kill")
	}
	// Killed young: it waits out its backoff (1 s) before starting again.
	time.Sleep(time.Until(s.NextStart()))
	s.Ensure([]nodev1.Service{svc}, nil)
	second := s.Report()[0]
	if !second.Running || second.PID == first.PID || second.Restarts != 1 || second.LastExit != "killed by SIGKILL" {
		t.Fatalf("after a kill: %+v", second)
	}
	// A restart asked for replaces the process; a second supervisor adopts it.
	s.Ensure([]nodev1.Service{svc}, []string{"sleeper"})
	third := s.Report()[0]
	if third.PID == second.PID || !third.Running {
		t.Fatalf("asked restart: %+v", third)
	}
	s2 := NewSupervisor(s.Dir)
	s2.Adopt([]nodev1.Service{svc})
	if r := s2.Report(); len(r) != 1 || r[0].PID != third.PID {
		t.Fatalf("adopted %+v, want pid %d", r, third.PID)
	}
}

func TestServicesToRestart(t *testing.T) {
	base := Component{Name: "kubelet", Version: "v1",
		Artifacts: []Artifact{{Path: "/usr/local/bin/kubelet", Digest: "sha256:a"}},
		Files:     []File{{Path: "/etc/kubelet.yaml", Content: []byte("a")}, {Path: "/etc/other", Content: []byte("x")}},
		Services: []nodev1.Service{
			{Name: "kubelet", Command: []string{"kubelet"}, RestartOn: []string{"/usr/local/bin/kubelet", "/etc/kubelet.yaml"}},
			{Name: "helper", Command: []string{"helper"}},
		}}
	edit := func(f func(*Component)) *Component {
		c := base
		c.Files = append([]File(nil), base.Files...)
		c.Services = append([]nodev1.Service(nil), base.Services...)
		f(&c)
		return &c
	}
	for _, tc := range []struct {
		name string
		next *Component
		want string
	}{
		{"unchanged", edit(func(*Component) {}), ""},
		{"kubelet config", edit(func(c *Component) { c.Files[0].Content = []byte("b") }), "kubelet,helper"},
		{"other file", edit(func(c *Component) { c.Files[1].Content = []byte("y") }), "helper"},
		{"command", edit(func(c *Component) { c.Services[1].Command = []string{"helper", "-v"} }), "helper"},
	} {
		if got := strings.Join(ServicesToRestart(&base, tc.next), ","); got != tc.want {
			t.Errorf("%s: restart %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := ServicesToRestart(nil, &base); len(got) != 2 {
		t.Errorf("first install restarts %v, want both", got)
	}
}

// TestDaemon: the daemon applies desired.json handed over with Submit,
// runs the services, starts a killed one again at once, and reports.
func TestDaemon(t *testing.T) {
	dir := t.TempDir()
	p := Paths{Dir: filepath.Join(dir, "agent")}
	c := Component{Name: "svc", Version: "v1", Scripts: nodev1.Scripts{Install: "true", Check: "true"},
		Services: []nodev1.Service{{Name: "sleeper", Command: []string{"sleep", "300"}}}}
	c.ComputeHash()
	d := &Desired{Machine: "ns/m", Components: []Component{c}}
	data, _ := json.Marshal(d)
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Desired(), data, 0o600); err != nil {
		t.Fatal(err)
	}
	daemon := NewDaemon(p.Dir)
	daemon.Interval = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		daemon.Services.StopAll()
	}()
	report := func() *Report {
		var r Report
		raw, err := os.ReadFile(p.Status())
		if err != nil || json.Unmarshal(raw, &r) != nil {
			return nil
		}
		return &r
	}
	waitFor := func(what string, ok func(*Report) bool) *Report {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if r := report(); r != nil && ok(r) {
				return r
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s: last report %+v", what, report())
		return nil
	}
	first := waitFor("ready", func(r *Report) bool {
		return r.Desired == d.Hash() && r.Ready() && len(r.Services) == 1 && r.Services[0].Running
	})
	killed := time.Now()
	_ = syscall.Kill(first.Services[0].PID, syscall.SIGKILL)
	second := waitFor("restarted", func(r *Report) bool {
		return len(r.Services) == 1 && r.Services[0].Running && r.Services[0].PID != first.Services[0].PID
	})
	if took := time.Since(killed); took > 3*time.Second || second.Services[0].Restarts != 1 || second.Services[0].LastExit != "killed by SIGKILL" {
		t.Fatalf("restarted after %s: %+v", took, second.Services[0])
	}
}
