package build

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEnsureBuildsOnceAndCaches builds a tiny product with the real go
// command, then checks the stamp makes the second call a cache hit and a
// changed recipe a rebuild.
func TestEnsureBuildsOnceAndCaches(t *testing.T) {
	b := &Builder{CacheDir: t.TempDir()}
	p := &Product{
		Name: "hello", Version: "v0.0.1",
		GoMod:    "module kok.local/build/hello\n\ngo 1.24.0\n",
		Files:    map[string]string{"main.go": "package main\n\nfunc main() { println(\"hi\") }\n"},
		Binaries: map[string]string{"hello": "."},
		Links:    map[string]string{"hi": "hello"},
		LDFlags:  "-s -w",
	}
	if b.Cached(p) {
		t.Fatal("cached before the first build")
	}
	dir, err := b.Ensure(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "hello")); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "hi")); err != nil || target != "hello" {
		t.Fatalf("link hi -> %q, %v", target, err)
	}
	if !b.Cached(p) {
		t.Fatal("not cached after a build")
	}
	p.LDFlags = "-s"
	if b.Cached(p) {
		t.Fatal("a changed recipe must not count as cached")
	}
}

func TestEnsureReportsBuildErrors(t *testing.T) {
	b := &Builder{CacheDir: t.TempDir()}
	p := &Product{Name: "broken", Version: "v0", GoMod: "module kok.local/x\n\ngo 1.24.0\n",
		Files: map[string]string{"main.go": "package main\n\nfunc main() { undefined() }\n"}, Binaries: map[string]string{"x": "."}}
	_, err := b.Ensure(context.Background(), p)
	if err == nil || !strings.Contains(err.Error(), "undefined") {
		t.Fatalf("want the compiler's message in the error, got %v", err)
	}
	if _, err := os.Stat(b.Dir("broken", "v0")); !os.IsNotExist(err) {
		t.Fatal("a failed build must not leave an output directory")
	}
}

// TestKubeMainMirrorsUpstreamConstructors: constructor signatures differ
// between releases (the kubelet's took a context from 1.34 on); the
// generated main calls each the way that release's own main does.
func TestKubeMainMirrorsUpstreamConstructors(t *testing.T) {
	mod := t.TempDir()
	mains := map[string]string{
		"cmd/kube-apiserver/apiserver.go":                   "command := app.NewAPIServerCommand()",
		"cmd/kube-controller-manager/controller-manager.go": "command := app.NewControllerManagerCommand()",
		"cmd/kube-scheduler/scheduler.go":                   "command := app.NewSchedulerCommand()",
		"cmd/kube-proxy/proxy.go":                           "command := app.NewProxyCommand()",
		"cmd/kubelet/kubelet.go":                            "command := app.NewKubeletCommand(context.Background())",
	}
	for f, body := range mains {
		p := filepath.Join(mod, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("package main\n\nfunc main() {\n\t"+body+"\n}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src, err := kubeMainFor(mod)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"kubelet": func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },`,
		`"kube-scheduler": func() *cobra.Command { return scheduler.NewSchedulerCommand() },`,
	} {
		if !strings.Contains(src, want) {
			t.Errorf("generated main lacks %s", want)
		}
	}
	if strings.Contains(src, "{{COMMANDS}}") {
		t.Error("placeholder left in generated main")
	}
}
