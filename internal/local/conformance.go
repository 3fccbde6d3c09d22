package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/kubeonkube/kok/internal/local/build"
	"github.com/kubeonkube/kok/internal/local/image"
	"github.com/kubeonkube/kok/internal/local/versions"
)

// E2ERegistry is where Kubernetes' e2e suite finds its test images in kok's
// registry: a KUBE_TEST_REPO_LIST (E2ERepoList) points the suite's
// registries here, and nodes pull kok.local/… from kok's registry.
const E2ERegistry = image.Prefix + "e2e-test-images"

// E2ERepoList is the content of the KUBE_TEST_REPO_LIST file that makes
// e2e.test name kok's images: the suite's own test images (agnhost,
// busybox, httpd, nginx, …) under E2ERegistry, pause and etcd under
// kok.local.
func E2ERepoList() string {
	kok := strings.TrimSuffix(image.Prefix, "/")
	return fmt.Sprintf("promoterE2eRegistry: %s\ngcRegistry: %s\ngcEtcdRegistry: %s\n", E2ERegistry, kok, kok)
}

// busyboxLayer is busybox with a link per applet where busybox itself would
// install it (bin/sh, usr/bin/env, sbin/ip, …) and, as in upstream's
// busybox image, in /bin too: specs run /bin/sysctl. /bin is last in the
// images' PATH, so those links shadow no other tool.
func busyboxLayer(busybox string) ([]image.File, error) {
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", busybox, err)
	}
	files := []image.File{{Dst: "/bin", Dir: true}, {Dst: "/sbin", Dir: true}, {Dst: "/usr", Dir: true},
		{Dst: "/usr/bin", Dir: true}, {Dst: "/usr/sbin", Dir: true}, {Dst: "/tmp", Dir: true}, {Dst: "/etc", Dir: true},
		{Src: busybox, Dst: "/bin/busybox", Mode: 0o755}}
	inBin := map[string]bool{}
	var elsewhere []string
	for _, applet := range strings.Fields(string(out)) {
		if applet != "bin/busybox" && strings.Count(applet, "/") > 0 && !strings.HasSuffix(applet, "/") {
			files = append(files, image.File{Dst: "/" + applet, Link: "/bin/busybox"})
			if dir, name := filepath.Split(applet); dir == "bin/" {
				inBin[name] = true
			} else {
				elsewhere = append(elsewhere, name)
			}
		}
	}
	for _, name := range elsewhere {
		if !inBin[name] {
			inBin[name] = true
			files = append(files, image.File{Dst: "/bin/" + name, Link: "/bin/busybox"})
		}
	}
	return files, nil
}

// ConformanceImages are the e2e suite's test images, named as e2e.test
// (version: the Kubernetes release it is built at) names them under
// E2ERepoList: agnhost (Kubernetes' own, built by kok) with busybox and
// Debian's curl, nc and dash beside it, busybox (upstream's, built by kok
// as upstream's image is), and stand-ins for the suite's web
// servers (httpd, nginx: busybox httpd on port 80, what the specs use them
// for), the sample-apiserver with an etcd, nonewprivs, plus pause.
func ConformanceImages(ctx context.Context, b *build.Builder, bins Binaries, version string) ([]image.Spec, error) {
	agnhost := filepath.Join(b.Dir("agnhost", version), "agnhost")
	if _, err := os.Stat(agnhost); err != nil {
		return nil, fmt.Errorf("agnhost %s: %w (kok build --all builds it)", version, err)
	}
	// porter (agnhost's TLS server) serves with the certificate upstream's
	// image carries, from the release's own module.
	kube, err := build.ModuleDir(ctx, b.Go, "k8s.io/kubernetes", version)
	if err != nil {
		return nil, err
	}
	porter := filepath.Join(kube, "test", "images", "agnhost", "porter")
	// One busybox in every image: upstream's release, built from source
	// (build.BusyboxVersion says why not Debian's).
	busybox, err := b.EnsureBusybox(ctx)
	if err != nil {
		return nil, err
	}
	bb, err := busyboxLayer(busybox)
	if err != nil {
		return nil, err
	}
	// The tools specs run in agnhost pods that busybox lacks or has
	// without the options they use (nc -v -t), and Debian's dash as
	// /bin/sh (agnhost's specs passed with it before busybox was
	// upstream's; upstream's agnhost has busybox's ash).
	// getent (the DNS specs' /etc/hosts lookups) with Debian's
	// nsswitch.conf: files, then DNS.
	tools, err := image.HostFiles("/usr/bin/curl", "/usr/bin/nc.openbsd", "/usr/bin/dash", "/usr/bin/dig", "/usr/bin/getent", "/etc/nsswitch.conf")
	if err != nil {
		return nil, fmt.Errorf("curl, nc, dash, dig and getent for the agnhost image: %w (install Debian's curl, netcat-openbsd and bind9-dnsutils)", err)
	}
	tools = append(tools, image.File{Dst: "/usr/bin/nc", Link: "/usr/bin/nc.openbsd"}, image.File{Dst: "/bin/sh", Link: "/usr/bin/dash"})
	path := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	e2e := func(repo, tag string) string { return E2ERegistry + "/" + repo + ":" + tag }
	agnhostLayers := [][]image.File{bb, tools, {{Src: agnhost, Dst: "/agnhost", Mode: 0o755},
		{Dst: "/agnhost-2", Link: "agnhost"}, {Dst: "/uploads", Dir: true},
		{Src: filepath.Join(porter, "localhost.crt"), Dst: "/localhost.crt", Mode: 0o644},
		{Src: filepath.Join(porter, "localhost.key"), Dst: "/localhost.key", Mode: 0o644}}}
	// The aggregator spec's sample-apiserver (built from the release's
	// staging module) and, in its pod, an etcd at /usr/local/bin (kok's
	// etcd build under the tag the suite names).
	sample := filepath.Join(b.Dir("sample-apiserver", version), "sample-apiserver")
	if _, err := os.Stat(sample); err != nil {
		return nil, fmt.Errorf("sample-apiserver %s: %w (make conformance builds it)", version, err)
	}
	etcd := filepath.Join(b.Dir("etcd", versions.DefaultEtcd()), "etcd")
	if _, err := os.Stat(etcd); err != nil {
		return nil, fmt.Errorf("etcd %s: %w (kok build builds it)", versions.DefaultEtcd(), err)
	}
	nnp := filepath.Join(b.Dir("nonewprivs", version), "nnp")
	if _, err := os.Stat(nnp); err != nil {
		return nil, fmt.Errorf("nnp %s: %w (make conformance builds it)", version, err)
	}
	tmp := []image.File{{Dst: "/tmp", Dir: true}}
	usrLocalBin := []image.File{{Dst: "/usr", Dir: true}, {Dst: "/usr/local", Dir: true}, {Dst: "/usr/local/bin", Dir: true}}
	specs := []image.Spec{
		{Ref: e2e("sample-apiserver", SampleAPIServerE2ETag), Layers: [][]image.File{tmp, {{Src: sample, Dst: "/sample-apiserver", Mode: 0o755}}},
			Entrypoint: []string{"/sample-apiserver"}},
		{Ref: image.Prefix + "etcd:" + EtcdE2ETag, Layers: [][]image.File{tmp, append(usrLocalBin, image.File{Src: etcd, Dst: "/usr/local/bin/etcd", Mode: 0o755})},
			Entrypoint: []string{"/usr/local/bin/etcd"}},
		// The AllowPrivilegeEscalation specs' setuid program (upstream:
		// alpine with nnp, setuid root).
		{Ref: e2e("nonewprivs", NonewprivsE2ETag), Layers: [][]image.File{bb, append(usrLocalBin, image.File{Src: nnp, Dst: "/usr/local/bin/nnp", Mode: 0o4755})},
			Cmd: []string{"nnp"}, Env: path},
		{Ref: e2e("agnhost", AgnhostE2ETag), Layers: agnhostLayers, Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}, Env: path},
		{Ref: e2e("busybox", BusyboxE2ETag), Layers: [][]image.File{bb}, Cmd: []string{"sh"}, Env: path},
		// The DNS specs' prober: a shell with dig (upstream: Debian with dnsutils).
		{Ref: e2e("jessie-dnsutils", "1.7"), Layers: [][]image.File{bb, tools}, Cmd: []string{"sh"}, Env: path},
		// A non-root user on a plain base (upstream: debian-base as 1234).
		{Ref: e2e("nonroot", "1.4"), Layers: [][]image.File{bb}, Cmd: []string{"sh"}, Env: path, User: "1234"},
		{Ref: image.Prefix + "pause:" + PauseE2ETag, Layers: [][]image.File{{{Src: bins.Pause, Dst: "/pause", Mode: 0o755}}},
			Entrypoint: []string{"/pause"}},
	}
	// kubectl's Update Demo: agnhost serving its picture and data.json
	// from / (upstream's kitten and nautilus, from the release's module).
	for _, pet := range []string{"kitten", "nautilus"} {
		html := filepath.Join(kube, "test", "images", pet, "html")
		specs = append(specs, image.Spec{Ref: e2e(pet, "1.7"), Env: path, Entrypoint: []string{"/agnhost"}, Cmd: []string{"test-webserver"},
			Layers: append(agnhostLayers[:len(agnhostLayers):len(agnhostLayers)], []image.File{
				{Src: filepath.Join(html, pet+".jpg"), Dst: "/" + pet + ".jpg", Mode: 0o644},
				{Src: filepath.Join(html, "data.json"), Dst: "/data.json", Mode: 0o644}})})
	}
	// The web servers' page, where upstream's images keep it: specs move
	// it away and back to fail and pass readiness probes on /index.html.
	page := filepath.Join(b.Dir("e2e-images", version), "index.html")
	if err := os.MkdirAll(filepath.Dir(page), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(page, []byte("<html><body><h1>It works!</h1></body></html>\n"), 0o644); err != nil {
		return nil, err
	}
	for _, web := range []struct{ repo, tag, root string }{{"httpd", "2.4.38-4", "/usr/local/apache2/htdocs"}, {"httpd", "2.4.39-4", "/usr/local/apache2/htdocs"},
		{"nginx", "1.14-4", "/usr/share/nginx/html"}, {"nginx", "1.15-4", "/usr/share/nginx/html"}} {
		docs := []image.File{{Dst: "/usr/local", Dir: true}, {Dst: "/usr/share", Dir: true}, {Dst: filepath.Dir(web.root), Dir: true},
			{Dst: web.root, Dir: true}, {Src: page, Dst: web.root + "/index.html", Mode: 0o644}}
		specs = append(specs, image.Spec{Ref: e2e(web.repo, web.tag), Layers: [][]image.File{bb, docs},
			Entrypoint: []string{"/bin/busybox", "httpd", "-f", "-p", "80", "-h", web.root}, Env: path})
	}
	return specs, nil
}

// The tags e2e.test of versions.DefaultKubernetes asks for
// (k8s.io/kubernetes/test/utils/image).
const (
	AgnhostE2ETag = "2.56"
	BusyboxE2ETag = "1.37.0-1"
	PauseE2ETag   = "3.10.1"
	// SampleAPIServerE2ETag and EtcdE2ETag: the aggregator spec's images.
	SampleAPIServerE2ETag = "1.29.2"
	EtcdE2ETag            = "3.6.4-0"
	NonewprivsE2ETag      = "1.3"
)

// PushImages builds specs and pushes them to the registry of c, skipping
// those it holds at the same digest.
func PushImages(ctx context.Context, c *Config, specs []image.Spec) error {
	reg := c.RegistryAddress()
	rc := newRegistryClient(ctx)
	builder := &image.Builder{}
	var todo []pushItem
	for _, spec := range specs {
		remote, err := RegistryRef(reg, spec.Ref)
		if err != nil {
			return err
		}
		tag, err := name.NewTag(remote, name.Insecure)
		if err != nil {
			return err
		}
		img, err := builder.Build(spec)
		if err != nil {
			return fmt.Errorf("image %s: %w", spec.Ref, err)
		}
		d, err := img.Digest()
		if err != nil {
			return err
		}
		if have, err := rc.head(tag); err != nil {
			return fmt.Errorf("registry %s: %w", reg, err)
		} else if have == d.String() {
			continue
		}
		todo = append(todo, pushItem{tag, img})
	}
	return rc.write(todo)
}
