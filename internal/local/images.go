package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kubeonkube/kok/internal/local/build"
	"github.com/kubeonkube/kok/internal/local/image"
	"github.com/kubeonkube/kok/internal/local/versions"
)

// Binaries locates kok's own programs that go into images.
type Binaries struct {
	Manager string // kok-manager
	Pause   string // kok-pause
	Agent   string // kok-agent, the node agent (an artifact in the registry)
	CNI     string // kok-cni, beside flanneld in the flannel image
}

// ImageSet is a group of images written to one tarball and imported at once.
type ImageSet struct {
	Name   string
	Images []image.Spec
}

// KubeImage names the image of a Kubernetes component at a version.
func KubeImage(component, version string) string {
	return image.Prefix + component + ":" + version
}

// EtcdImage names the etcd image of a version.
func EtcdImage(version string) string { return image.Prefix + "etcd:" + version }

// CoreDNSImage names the CoreDNS image.
func CoreDNSImage() string { return image.Prefix + "coredns:" + versions.CoreDNS }

// FlannelImage names the image of the flannel addon: flanneld and kok-cni.
func FlannelImage() string { return image.Prefix + "flannel:" + versions.Flannel }

// MetricsServerImage names the image of the metrics-server addon.
func MetricsServerImage() string { return image.Prefix + "metrics-server:" + versions.MetricsServer }

// KonnectivityImage names the image of konnectivity's proxy server (part
// "server", beside each apiserver) or agent ("agent", the addon).
func KonnectivityImage(part string) string {
	return image.Prefix + "konnectivity-" + part + ":" + versions.Konnectivity
}

// AgnhostImage names the image of agnhost, Kubernetes' test server, built
// at a Kubernetes release.
func AgnhostImage(version string) string { return image.Prefix + "agnhost:" + version }

// RegistryImage names the image of kok's registry (CNCF Distribution).
func RegistryImage() string { return image.Prefix + "registry:" + versions.Registry }

// ManagerImage names the kok-manager image of a binary: the tag carries the
// binary's hash, so a rebuilt manager rolls out.
func ManagerImage(bin string) (string, error) {
	sum, err := fileHash(bin)
	if err != nil {
		return "", fmt.Errorf("kok-manager binary: %w (build it with 'make build')", err)
	}
	return image.Prefix + "kok-manager:dev-" + sum[:12], nil
}

// imageSets lists the images kok up provides: its own, and those of every
// Kubernetes and etcd version that is built.
func imageSets(b *build.Builder, bins Binaries) ([]ImageSet, error) {
	managerRef, err := ManagerImage(bins.Manager)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bins.Pause); err != nil {
		return nil, fmt.Errorf("kok-pause binary: %w (build it with 'make build')", err)
	}
	sets := []ImageSet{{Name: "kok", Images: []image.Spec{
		{Ref: PauseImage, Layers: [][]image.File{{{Src: bins.Pause, Dst: "/pause", Mode: 0o755}}}, Entrypoint: []string{"/pause"}},
		{Ref: managerRef, Layers: [][]image.File{{{Src: bins.Manager, Dst: "/kok-manager", Mode: 0o755}, {Dst: "/tmp", Dir: true}}},
			Entrypoint: []string{"/kok-manager"}},
	}}}
	corednsDir := b.Dir("coredns", versions.CoreDNS)
	sets = append(sets, ImageSet{Name: "coredns-" + versions.CoreDNS, Images: []image.Spec{{
		Ref: CoreDNSImage(), Layers: [][]image.File{{{Src: filepath.Join(corednsDir, "coredns"), Dst: "/coredns", Mode: 0o755}}},
		Entrypoint: []string{"/coredns"},
	}}})
	registryDir := b.Dir("registry", versions.Registry)
	sets = append(sets, ImageSet{Name: "registry-" + versions.Registry, Images: []image.Spec{{
		Ref: RegistryImage(), Layers: [][]image.File{{{Src: filepath.Join(registryDir, "registry"), Dst: "/bin/registry", Mode: 0o755},
			{Dst: "/tmp", Dir: true}, {Dst: "/var/lib/registry", Dir: true}}},
		Entrypoint: []string{"/bin/registry"}, Cmd: []string{"serve", "/etc/distribution/config.yml"},
	}}})
	iptables, err := iptablesLayer()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bins.CNI); err != nil {
		return nil, fmt.Errorf("kok-cni binary: %w (build it with 'make build')", err)
	}
	if flanneld := filepath.Join(b.Dir("flannel", versions.Flannel), "flanneld"); fileExists(flanneld) {
		sets = append(sets, ImageSet{Name: "flannel-" + versions.Flannel, Images: []image.Spec{{
			Ref: FlannelImage(), Layers: [][]image.File{iptables, {{Src: flanneld, Dst: "/usr/local/bin/flanneld", Mode: 0o755},
				{Src: bins.CNI, Dst: "/usr/local/bin/kok-cni", Mode: 0o755}}},
			Entrypoint: []string{"/usr/local/bin/flanneld"},
		}}})
	}
	if ms := filepath.Join(b.Dir("metrics-server", versions.MetricsServer), "metrics-server"); fileExists(ms) {
		sets = append(sets, binaryImage("metrics-server-"+versions.MetricsServer, MetricsServerImage(), ms))
	}
	if dir := b.Dir("konnectivity", versions.Konnectivity); fileExists(filepath.Join(dir, "proxy-server")) {
		sets = append(sets, binaryImage("konnectivity-server-"+versions.Konnectivity, KonnectivityImage("server"), filepath.Join(dir, "proxy-server")),
			binaryImage("konnectivity-agent-"+versions.Konnectivity, KonnectivityImage("agent"), filepath.Join(dir, "proxy-agent")))
	}
	for _, v := range versions.Kubernetes {
		if agnhost := filepath.Join(b.Dir("agnhost", v), "agnhost"); fileExists(agnhost) {
			sets = append(sets, binaryImage("agnhost-"+v, AgnhostImage(v), agnhost))
		}
	}
	for _, v := range versions.Kubernetes {
		dir := b.Dir("kubernetes", v)
		if _, err := os.Stat(filepath.Join(dir, build.KubeBinary)); err != nil {
			continue
		}
		// One layer holds the multi-call binary and its links; every
		// component image shares it.
		layer := []image.File{{Src: filepath.Join(dir, build.KubeBinary), Dst: "/usr/local/bin/kube", Mode: 0o755}, {Dst: "/tmp", Dir: true}}
		for _, comp := range build.KubeComponents {
			layer = append(layer, image.File{Dst: "/usr/local/bin/" + comp, Link: "kube"})
		}
		set := ImageSet{Name: "kubernetes-" + v}
		for _, comp := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl"} {
			layers := [][]image.File{layer}
			if comp == "kube-proxy" {
				layers = [][]image.File{iptables, layer}
			}
			set.Images = append(set.Images, image.Spec{Ref: KubeImage(comp, v), Layers: layers,
				Entrypoint: []string{"/usr/local/bin/" + comp}})
		}
		sets = append(sets, set)
	}
	for _, v := range versions.Etcd {
		dir := b.Dir("etcd", v)
		if _, err := os.Stat(filepath.Join(dir, "etcd")); err != nil {
			continue
		}
		var layer []image.File
		for _, bin := range []string{"etcd", "etcdctl", "etcdutl"} {
			layer = append(layer, image.File{Src: filepath.Join(dir, bin), Dst: "/usr/local/bin/" + bin, Mode: 0o755})
		}
		layer = append(layer, image.File{Dst: "/tmp", Dir: true}, image.File{Dst: "/var/lib/etcd", Dir: true})
		sets = append(sets, ImageSet{Name: "etcd-" + v, Images: []image.Spec{{Ref: EtcdImage(v), Layers: [][]image.File{layer},
			Entrypoint: []string{"/usr/local/bin/etcd"}}}})
	}
	return sets, nil
}

// binaryImage is an image set of one image: the static program src at
// /<its name>, its entrypoint, and a /tmp.
func binaryImage(set, ref, src string) ImageSet {
	dst := "/" + filepath.Base(src)
	return ImageSet{Name: set, Images: []image.Spec{{Ref: ref, Layers: [][]image.File{{{Src: src, Dst: dst, Mode: 0o755}, {Dst: "/tmp", Dir: true}}},
		Entrypoint: []string{dst}}}}
}

// iptablesLayer is this machine's iptables (Debian's, the nf_tables
// variant) with the libraries and extensions it loads: kube-proxy and
// flanneld program a node's packet filter with it. The commands are links
// in /usr/bin, on the images' PATH.
func iptablesLayer() ([]image.File, error) {
	const multi = "/usr/sbin/xtables-nft-multi"
	exts, _ := filepath.Glob("/usr/lib/*-linux-gnu/xtables/*.so")
	files, err := image.HostFiles(append([]string{multi}, exts...)...)
	if err != nil || len(exts) == 0 {
		return nil, fmt.Errorf("iptables for the kube-proxy and flannel images: %v, %d extensions (install Debian's iptables)", err, len(exts))
	}
	for _, cmd := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		files = append(files, image.File{Dst: "/usr/bin/" + cmd, Link: multi})
	}
	return append(files, image.File{Dst: "/run", Dir: true}, image.File{Dst: "/tmp", Dir: true}), nil
}

// metaImages are the sets the meta cluster itself runs (pause, kok-manager,
// CoreDNS, the registry); the rest serve business clusters.
func metaImages(s ImageSet) bool {
	return s.Name == "kok" || strings.HasPrefix(s.Name, "coredns-") || strings.HasPrefix(s.Name, "registry-")
}

func businessImages(s ImageSet) bool { return !metaImages(s) }

// importer builds kok's images and imports them into the node's containerd;
// the same images are pushed to kok's registry (push in registry.go).
type importer struct {
	builder *build.Builder
	bins    Binaries
	// images builds each image and layer once per kok up: what the import
	// built is what the push sends. Dropped by release.
	images *image.Builder
	mu     sync.Mutex
	built  map[string]builtImage
	// socket is kok's containerd.
	socket string
	// record keeps what was imported, beside containerd's root.
	record string
	// cacheDir holds the tarballs on their way into containerd.
	cacheDir string
	progress io.Writer
}

func newImporter(c *Config, b *build.Builder, bins Binaries, progress io.Writer) *importer {
	return &importer{builder: b, bins: bins, socket: c.ContainerdSocket(), images: &image.Builder{},
		record: filepath.Join(c.ContainerdDir(), "kok-images.json"), cacheDir: c.CacheDir, progress: progress}
}

// builtImage is an image built in this run, with the specKey it was built from.
type builtImage struct {
	key string
	img v1.Image
}

// image returns the image of spec (whose specKey is key), built once.
func (im *importer) image(spec image.Spec, key string) (v1.Image, error) {
	im.mu.Lock()
	b, ok := im.built[spec.Ref]
	im.mu.Unlock()
	if ok && b.key == key {
		return b.img, nil
	}
	img, err := im.images.Build(spec)
	if err != nil {
		return nil, err
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.built == nil {
		im.built = map[string]builtImage{}
	}
	im.built[spec.Ref] = builtImage{key, img}
	return img, nil
}

// release drops the images built so far (their layers are held in memory).
func (im *importer) release() {
	im.mu.Lock()
	defer im.mu.Unlock()
	im.built = nil
	im.images = &image.Builder{}
}

// ensure builds the wanted image sets and imports into containerd those it
// does not hold yet, and returns how many images it imported. The record of
// what was imported makes a warm start skip the work.
func (im *importer) ensure(ctx context.Context, want func(ImageSet) bool) (int, error) {
	all, err := imageSets(im.builder, im.bins)
	if err != nil {
		return 0, err
	}
	var sets []ImageSet
	for _, s := range all {
		if want(s) {
			sets = append(sets, s)
		}
	}
	ctr := &image.Containerd{Address: im.socket, Namespace: "k8s.io"}
	have, err := ctr.Images(ctx)
	if err != nil {
		return 0, err
	}
	record := map[string]string{}
	if data, err := os.ReadFile(im.record); err == nil {
		_ = json.Unmarshal(data, &record)
	}
	imported := 0
	for _, set := range sets {
		imgs := map[string]v1.Image{}
		keys := map[string]string{}
		need := false
		for _, spec := range set.Images {
			key, err := specKey(spec)
			if err != nil {
				return imported, err
			}
			if _, ok := have[spec.Ref]; !ok || record[spec.Ref] != key {
				need = true
			}
			record[spec.Ref] = key
			keys[spec.Ref] = key
		}
		if !need {
			continue
		}
		for _, spec := range set.Images {
			img, err := im.image(spec, keys[spec.Ref])
			if err != nil {
				return imported, err
			}
			imgs[spec.Ref] = img
		}
		tarball := filepath.Join(im.cacheDir, "images", set.Name+".tar")
		if err := os.MkdirAll(filepath.Dir(tarball), 0o755); err != nil {
			return imported, err
		}
		if err := image.WriteTarball(tarball, imgs); err != nil {
			return imported, fmt.Errorf("writing images %s: %w", set.Name, err)
		}
		if err := ctr.Import(ctx, tarball); err != nil {
			return imported, err
		}
		_ = os.Remove(tarball)
		refs := make([]string, 0, len(imgs))
		for r := range imgs {
			refs = append(refs, r)
		}
		sort.Strings(refs)
		fmt.Fprintf(im.progress, "    imported %v\n", refs)
		imported += len(imgs)
		data, _ := json.MarshalIndent(record, "", "  ")
		if err := writeFile(im.record, data, 0o644); err != nil {
			return imported, err
		}
	}
	return imported, nil
}

// specKey identifies what an image is made of: its spec and the identity
// (size, modification time) of each source file. Equal keys mean an equal
// image, without reading the files.
func specKey(spec image.Spec) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%q %q %q\n", spec.Entrypoint, spec.Cmd, spec.Env)
	for _, layer := range spec.Layers {
		for _, f := range layer {
			fmt.Fprintf(h, "%s %s %o %s %v", f.Src, f.Dst, f.Mode, f.Link, f.Dir)
			if f.Src != "" {
				st, err := os.Stat(f.Src)
				if err != nil {
					return "", err
				}
				fmt.Fprintf(h, " %d %d", st.Size(), st.ModTime().UnixNano())
			}
			fmt.Fprintln(h)
		}
		fmt.Fprintln(h, "--")
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fileHash(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
