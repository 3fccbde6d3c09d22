package local

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kubeonkube/kok/internal/local/build"
	"github.com/kubeonkube/kok/internal/local/image"
	"github.com/kubeonkube/kok/internal/local/versions"
)

// What kok's registry holds besides images: binaries as OCI artifacts, each a
// single-layer OCI image manifest whose layer is the file itself.
const (
	// ArtifactType is the artifactType of kok's binary artifacts.
	ArtifactType = "application/vnd.kok.artifact.v1"
	// ArtifactLayerType is the media type of an artifact's one layer: the
	// raw file (a binary, or a .tar.gz of several).
	ArtifactLayerType types.MediaType = "application/octet-stream"
	// EmptyConfigType is the OCI empty descriptor's media type: an artifact
	// has no image config, only "{}".
	EmptyConfigType types.MediaType = "application/vnd.oci.empty.v1+json"
	// TitleAnnotation names the file a layer holds.
	TitleAnnotation = "org.opencontainers.image.title"
	// ArtifactRepoPrefix is the repository prefix of artifacts:
	// <registry>/artifacts/<name>:<tag>.
	ArtifactRepoPrefix = "artifacts/"
)

// pushTimeout bounds one push of the registry's content.
const pushTimeout = 10 * time.Minute

// Artifact is a binary kok's registry holds. A node fetches it by digest
// with plain HTTP: GET http://<registry>/v2/artifacts/<name>/blobs/<digest>.
type Artifact struct {
	// Name is the repository below artifacts/: kube, kok-agent,
	// containerd, runc, cni-plugins.
	Name string `json:"name"`
	Tag  string `json:"tag"`
	// Ref is the artifact's manifest: <registry>/artifacts/<name>:<tag>.
	Ref string `json:"ref"`
	// File is the file's name (the layer's org.opencontainers.image.title).
	File string `json:"file"`
	// Digest and Size are the layer blob's: the file itself.
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// BlobURL is where a node fetches the artifact's file with plain HTTP.
func (a Artifact) BlobURL(registry string) string {
	return "http://" + registry + "/v2/" + ArtifactRepoPrefix + a.Name + "/blobs/" + a.Digest
}

// PushedImage is an image kok's registry holds.
type PushedImage struct {
	// Ref is the local name (kok.local/pause:3.10); Remote the registry's
	// (10.200.0.1:5000/pause:3.10).
	Ref    string `json:"ref"`
	Remote string `json:"remote"`
	// Digest is the image manifest's.
	Digest string `json:"digest"`
	// Key identifies what the image was built from (specKey), so a warm
	// push skips images without building them.
	Key string `json:"key"`
}

// RegistryContent is what a push left in the registry, and what it did.
type RegistryContent struct {
	Registry  string
	Images    []PushedImage
	Artifacts []Artifact
	// PushedImages and PushedArtifacts count the tags written by this push,
	// Already those found in place; Bytes is what was sent.
	PushedImages, PushedArtifacts, Already int
	Bytes                                  int64
}

// Files in RegistryDir beside the registry's own storage (docker/).
const (
	artifactsFile = "artifacts.json"
	imagesFile    = "images.json"
)

// RegistryArtifacts returns the artifacts the last push of a state
// directory's cluster left in its registry (<stateDir>/registry/artifacts.json).
func RegistryArtifacts(stateDir string) ([]Artifact, error) {
	var out []Artifact
	err := readJSON(filepath.Join(stateDir, "registry", artifactsFile), &out)
	return out, err
}

// RegistryImages returns the images the last push left in the registry.
func RegistryImages(stateDir string) ([]PushedImage, error) {
	var out []PushedImage
	err := readJSON(filepath.Join(stateDir, "registry", imagesFile), &out)
	return out, err
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// PushRegistry pushes every image kok builds and every binary artifact to
// the registry of c, skipping what it holds already, and records the result
// in c.RegistryDir(). kok up does this once the registry is Ready.
func PushRegistry(ctx context.Context, c *Config, b *build.Builder, bins Binaries, progress io.Writer) (*RegistryContent, error) {
	return newImporter(c, b, bins, progress).push(ctx, c)
}

// RegistryRef maps a local image name (kok.local/<repo>:<tag>) to its name in
// the registry (<registry>/<repo>:<tag>): a node whose containerd mirrors the
// registry host kok.local to the registry pulls kok.local/<repo>:<tag>.
func RegistryRef(registry, localRef string) (string, error) {
	rest, ok := strings.CutPrefix(localRef, image.Prefix)
	if !ok || rest == "" {
		return "", fmt.Errorf("image %q is not one of kok's (%s…)", localRef, image.Prefix)
	}
	return registry + "/" + rest, nil
}

var notTagChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// UpstreamVersion is a Debian package version without its epoch and
// Debian revision: 1.6.20 of 1:1.6.20~ds1-1+deb12u3.
func UpstreamVersion(v string) string {
	if _, rest, ok := strings.Cut(v, ":"); ok {
		v = rest
	}
	if i := strings.IndexAny(v, "~+-"); i > 0 {
		v = v[:i]
	}
	return SanitizeTag(v)
}

// SanitizeTag turns a version into a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}):
// every run of other characters becomes "-", so Debian's 1.6.20~ds1-1+b1 is
// 1.6.20-ds1-1-b1.
func SanitizeTag(v string) string {
	t := notTagChars.ReplaceAllString(v, "-")
	t = strings.TrimLeft(t, ".-")
	if t == "" {
		return "unknown"
	}
	if len(t) > 128 {
		t = t[:128]
	}
	return t
}

// artifactSource is one binary to push under artifacts/<name>:<tags>.
type artifactSource struct {
	name string
	tags []string
	// file is the file pushed; title its name in the artifact.
	file, title string
}

// artifactSources lists the binaries the registry serves: the Kubernetes
// multi-call binary of every built version, kok-agent, and Debian's container
// runtime installed on this machine (containerd, runc, the CNI plugins).
// Tarballs of several files are written into cacheDir. Runtime pieces this
// machine lacks are reported to progress and left out.
func artifactSources(ctx context.Context, b *build.Builder, bins Binaries, cacheDir string, progress io.Writer) ([]artifactSource, error) {
	var out []artifactSource
	for _, v := range versions.Kubernetes {
		f := filepath.Join(b.Dir("kubernetes", v), build.KubeBinary)
		if _, err := os.Stat(f); err == nil {
			out = append(out, artifactSource{name: "kube", tags: []string{v}, file: f, title: build.KubeBinary})
		}
	}
	sum, err := fileHash(bins.Agent)
	if err != nil {
		return nil, fmt.Errorf("kok-agent binary: %w (build it with 'make build')", err)
	}
	// Like kok-manager's image: the tag carries the binary's hash; "dev"
	// follows the newest push.
	out = append(out, artifactSource{name: "kok-agent", tags: []string{"dev-" + sum[:12], "dev"}, file: bins.Agent, title: "kok-agent"})

	dir := filepath.Join(cacheDir, "artifacts")
	for _, r := range hostRuntime {
		version, err := packageVersion(ctx, r.pkg)
		if err != nil {
			fmt.Fprintf(progress, "    registry: %s left out: %v\n", r.name, err)
			continue
		}
		tag := SanitizeTag(version)
		// Also the upstream version alone (1.6.20 of 1.6.20~ds1-1+deb12u3):
		// the tag the default Component catalog names, stable across
		// Debian's rebuilds and security updates of one release.
		tags := []string{tag}
		if up := UpstreamVersion(version); up != tag {
			tags = append(tags, up)
		}
		if r.single != nil {
			f := firstExisting(r.single)
			if f == "" {
				fmt.Fprintf(progress, "    registry: %s left out: none of %v exists\n", r.name, r.single)
				continue
			}
			out = append(out, artifactSource{name: r.name, tags: tags, file: f, title: r.name})
			continue
		}
		files, err := r.files()
		if err != nil {
			fmt.Fprintf(progress, "    registry: %s left out: %v\n", r.name, err)
			continue
		}
		title := r.name + ".tar.gz"
		f := filepath.Join(dir, r.name+"-"+tag+".tar.gz")
		if err := writeTarGz(f, files); err != nil {
			return nil, fmt.Errorf("artifact %s: %w", r.name, err)
		}
		out = append(out, artifactSource{name: r.name, tags: tags, file: f, title: title})
	}
	return out, nil
}

// runtimePiece is a part of the container runtime taken from this
// machine's Debian packages.
type runtimePiece struct {
	name, pkg string
	// files lists a tarball's files; single, for a file pushed as it is,
	// the paths to try.
	files  func() ([]tarFile, error)
	single []string
}

// hostRuntime is Debian's container runtime, as installed here: the
// containerd, runc and CNI plugins nodes run.
var hostRuntime = []runtimePiece{
	{name: "containerd", pkg: "containerd", files: func() ([]tarFile, error) {
		return tarFiles("bin", "/usr/bin/containerd", "/usr/bin/containerd-shim-runc-v2", "/usr/bin/ctr")
	}},
	{name: "runc", pkg: "runc", single: []string{"/usr/sbin/runc", "/usr/bin/runc"}},
	{name: "cni-plugins", pkg: "containernetworking-plugins", files: func() ([]tarFile, error) {
		return dirFiles("/usr/lib/cni")
	}},
}

// packageVersion is an installed package's version (a seam for tests).
var packageVersion = debianVersion

// debianVersion is an installed Debian package's version.
func debianVersion(ctx context.Context, pkg string) (string, error) {
	out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Version}", pkg).Output()
	v := strings.TrimSpace(string(out))
	if err != nil || v == "" {
		return "", fmt.Errorf("package %s is not installed (dpkg-query: %v)", pkg, err)
	}
	return v, nil
}

func firstExisting(paths []string) string {
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// tarFile is a file placed in an artifact tarball.
type tarFile struct{ src, name string }

// tarFiles places srcs under dir in a tarball.
func tarFiles(dir string, srcs ...string) ([]tarFile, error) {
	var out []tarFile
	for _, s := range srcs {
		if _, err := os.Stat(s); err != nil {
			return nil, err
		}
		out = append(out, tarFile{src: s, name: dir + "/" + filepath.Base(s)})
	}
	return out, nil
}

// dirFiles places every regular file of dir at the tarball's top, as the
// upstream CNI plugins release does.
func dirFiles(dir string) ([]tarFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []tarFile
	for _, e := range entries {
		if e.Type().IsRegular() {
			out = append(out, tarFile{src: filepath.Join(dir, e.Name()), name: e.Name()})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no files in %s", dir)
	}
	return out, nil
}

// writeTarGz writes files into a reproducible .tar.gz (sorted, owned by
// root, modification time 0), unless dst already holds the tarball of the
// same sources (same sizes and modification times: a stamp beside it).
func writeTarGz(dst string, files []tarFile) error {
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	h := sha256.New()
	for _, f := range files {
		st, err := os.Stat(f.src)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %s %d %d %o\n", f.src, f.name, st.Size(), st.ModTime().UnixNano(), st.Mode().Perm())
	}
	key := hex.EncodeToString(h.Sum(nil))
	stamp := dst + ".key"
	if old, err := os.ReadFile(stamp); err == nil && string(old) == key {
		if _, err := os.Stat(dst); err == nil {
			return nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp) }()
	gz, _ := gzip.NewWriterLevel(out, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	dirs := map[string]bool{}
	for _, f := range files {
		if d := filepath.Dir(f.name); d != "." && !dirs[d] {
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
				return err
			}
		}
		if err := addTarFile(tw, f); err != nil {
			_ = out.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	return os.WriteFile(stamp, []byte(key), 0o644)
}

func addTarFile(tw *tar.Writer, f tarFile) error {
	src, err := os.Open(f.src)
	if err != nil {
		return err
	}
	defer func() { _ = src.Close() }()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Size: st.Size(),
		Mode: int64(st.Mode().Perm()), ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	_, err = io.Copy(tw, src)
	return err
}

// fileBlob is a file on this machine as a registry blob, read from disk when
// pushed.
type fileBlob struct {
	path   string
	digest v1.Hash
	size   int64
}

func newFileBlob(path string) (*fileBlob, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	d, n, err := v1.SHA256(f)
	if err != nil {
		return nil, err
	}
	return &fileBlob{path: path, digest: d, size: n}, nil
}

func (b *fileBlob) Digest() (v1.Hash, error)             { return b.digest, nil }
func (b *fileBlob) DiffID() (v1.Hash, error)             { return b.digest, nil }
func (b *fileBlob) Size() (int64, error)                 { return b.size, nil }
func (b *fileBlob) MediaType() (types.MediaType, error)  { return ArtifactLayerType, nil }
func (b *fileBlob) Compressed() (io.ReadCloser, error)   { return os.Open(b.path) }
func (b *fileBlob) Uncompressed() (io.ReadCloser, error) { return os.Open(b.path) }

// artifactManifest is an OCI image manifest with an artifactType (OCI
// image-spec 1.1), which go-containerregistry's v1.Manifest lacks.
type artifactManifest struct {
	SchemaVersion int64           `json:"schemaVersion"`
	MediaType     types.MediaType `json:"mediaType"`
	ArtifactType  string          `json:"artifactType"`
	Config        v1.Descriptor   `json:"config"`
	Layers        []v1.Descriptor `json:"layers"`
}

// emptyConfig is the OCI empty descriptor's content.
var emptyConfig = []byte("{}")

// artifactImage is a single-layer artifact as a v1.Image, so it is pushed
// like any image (blobs first, skipping those the registry holds).
type artifactImage struct {
	manifest []byte
	layer    partial.CompressedLayer
}

// NewArtifact returns the OCI artifact (artifactType ArtifactType, empty
// config) whose one layer is the blob, titled title.
func NewArtifact(blob partial.CompressedLayer, title string) (v1.Image, error) {
	d, err := blob.Digest()
	if err != nil {
		return nil, err
	}
	size, err := blob.Size()
	if err != nil {
		return nil, err
	}
	cd, cn, err := v1.SHA256(bytes.NewReader(emptyConfig))
	if err != nil {
		return nil, err
	}
	m := artifactManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  ArtifactType,
		Config:        v1.Descriptor{MediaType: EmptyConfigType, Digest: cd, Size: cn},
		Layers: []v1.Descriptor{{MediaType: ArtifactLayerType, Digest: d, Size: size,
			Annotations: map[string]string{TitleAnnotation: title}}},
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return partial.CompressedToImage(&artifactImage{manifest: raw, layer: blob})
}

func (a *artifactImage) RawConfigFile() ([]byte, error)      { return emptyConfig, nil }
func (a *artifactImage) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (a *artifactImage) RawManifest() ([]byte, error)        { return a.manifest, nil }
func (a *artifactImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if d, _ := a.layer.Digest(); d == h {
		return a.layer, nil
	}
	return nil, fmt.Errorf("artifact has no blob %s", h)
}

// registryClient talks plain HTTP to kok's registry and counts the bytes it
// sends.
type registryClient struct {
	sent atomic.Int64
	opts []remote.Option
}

func newRegistryClient(ctx context.Context) *registryClient {
	rc := &registryClient{}
	tr := &http.Transport{
		// Never through a proxy: the registry is on this machine's bridge.
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   8,
		ResponseHeaderTimeout: time.Minute,
	}
	rc.opts = []remote.Option{remote.WithContext(ctx), remote.WithTransport(&countingTransport{next: tr, sent: &rc.sent}), remote.WithJobs(4)}
	return rc
}

// head returns the digest the registry holds for ref, "" if none.
func (rc *registryClient) head(ref name.Reference) (string, error) {
	d, err := remote.Head(ref, rc.opts...)
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return d.Digest.String(), nil
}

// pushItem is an image or artifact to write under a tag.
type pushItem struct {
	tag name.Tag
	img v1.Image
}

// write pushes items, each blob's bytes once: an image all of whose blobs an
// earlier item sends (every Kubernetes component image of a version shares
// one layer, in a repository of its own) is written afterwards, mounting
// them from that item's repository instead of uploading them again.
func (rc *registryClient) write(items []pushItem) error {
	first, later, err := planWrites(items)
	if err != nil {
		return err
	}
	for _, batch := range []map[name.Reference]remote.Taggable{first, later} {
		if len(batch) == 0 {
			continue
		}
		if err := remote.MultiWrite(batch, rc.opts...); err != nil {
			return err
		}
	}
	return nil
}

// planWrites splits items into those written first and those written after
// them, whose every blob a first one sends and which mount them.
func planWrites(items []pushItem) (first, later map[name.Reference]remote.Taggable, err error) {
	owner := map[v1.Hash]name.Reference{}
	first, later = map[name.Reference]remote.Taggable{}, map[name.Reference]remote.Taggable{}
	for _, it := range items {
		layers, err := it.img.Layers()
		if err != nil {
			return nil, nil, err
		}
		shared := len(layers) > 0
		for _, l := range layers {
			d, err := l.Digest()
			if err != nil {
				return nil, nil, err
			}
			if _, ok := owner[d]; !ok {
				owner[d] = it.tag
				shared = false
			}
		}
		if shared {
			later[it.tag] = &mountingImage{Image: it.img, owner: owner}
		} else {
			first[it.tag] = it.img
		}
	}
	return first, later, nil
}

// mountingImage is an image whose layers are mounted from the repository
// that received them first (a registry falls back to an upload when it
// cannot mount).
type mountingImage struct {
	v1.Image
	owner map[v1.Hash]name.Reference
}

func (m *mountingImage) Layers() ([]v1.Layer, error) {
	layers, err := m.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(layers))
	for i, l := range layers {
		out[i] = l
		if d, err := l.Digest(); err == nil {
			if from, ok := m.owner[d]; ok {
				out[i] = &remote.MountableLayer{Layer: l, Reference: from}
			}
		}
	}
	return out, nil
}

type countingTransport struct {
	next http.RoundTripper
	sent *atomic.Int64
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && (req.Method == http.MethodPut || req.Method == http.MethodPatch || req.Method == http.MethodPost) {
		req.Body = &countingBody{ReadCloser: req.Body, n: t.sent}
	}
	return t.next.RoundTrip(req)
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// push makes the registry of c hold every image kok builds and every
// artifact, level-based: a tag whose digest the registry already holds is
// left alone, and an image recorded as pushed from the same sources is not
// even built. Images built by this run's import are reused.
func (im *importer) push(ctx context.Context, c *Config) (*RegistryContent, error) {
	ctx, cancel := context.WithTimeout(ctx, pushTimeout)
	defer cancel()
	reg := c.RegistryAddress()
	rc := newRegistryClient(ctx)
	out := &RegistryContent{Registry: reg}
	var todo []pushItem

	sets, err := imageSets(im.builder, im.bins)
	if err != nil {
		return nil, err
	}
	var recorded []PushedImage
	_ = readJSON(filepath.Join(c.RegistryDir(), imagesFile), &recorded)
	was := map[string]PushedImage{}
	for _, p := range recorded {
		was[p.Ref] = p
	}
	for _, set := range sets {
		for _, spec := range set.Images {
			key, err := specKey(spec)
			if err != nil {
				return nil, err
			}
			remoteRef, err := RegistryRef(reg, spec.Ref)
			if err != nil {
				return nil, err
			}
			tag, err := name.NewTag(remoteRef, name.Insecure)
			if err != nil {
				return nil, err
			}
			have, err := rc.head(tag)
			if err != nil {
				return nil, fmt.Errorf("registry %s: %w", reg, err)
			}
			if p, ok := was[spec.Ref]; ok && p.Key == key && p.Digest == have {
				out.Images = append(out.Images, p)
				out.Already++
				continue
			}
			img, err := im.image(spec, key)
			if err != nil {
				return nil, err
			}
			d, err := img.Digest()
			if err != nil {
				return nil, err
			}
			out.Images = append(out.Images, PushedImage{Ref: spec.Ref, Remote: remoteRef, Digest: d.String(), Key: key})
			if d.String() == have {
				out.Already++
				continue
			}
			todo = append(todo, pushItem{tag, img})
			out.PushedImages++
		}
	}

	sources, err := artifactSources(ctx, im.builder, im.bins, im.cacheDir, im.progress)
	if err != nil {
		return nil, err
	}
	for _, s := range sources {
		blob, err := newFileBlob(s.file)
		if err != nil {
			return nil, fmt.Errorf("artifact %s: %w", s.name, err)
		}
		art, err := NewArtifact(blob, s.title)
		if err != nil {
			return nil, err
		}
		d, err := art.Digest()
		if err != nil {
			return nil, err
		}
		for _, t := range s.tags {
			ref := reg + "/" + ArtifactRepoPrefix + s.name + ":" + t
			tag, err := name.NewTag(ref, name.Insecure)
			if err != nil {
				return nil, err
			}
			out.Artifacts = append(out.Artifacts, Artifact{Name: s.name, Tag: t, Ref: ref, File: s.title,
				Digest: blob.digest.String(), Size: blob.size})
			have, err := rc.head(tag)
			if err != nil {
				return nil, fmt.Errorf("registry %s: %w", reg, err)
			}
			if have == d.String() {
				out.Already++
				continue
			}
			todo = append(todo, pushItem{tag, art})
			out.PushedArtifacts++
		}
	}

	if err := rc.write(todo); err != nil {
		return nil, fmt.Errorf("pushing to the registry %s: %w", reg, err)
	}
	out.Bytes = rc.sent.Load()
	for file, v := range map[string]any{imagesFile: out.Images, artifactsFile: out.Artifacts} {
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return nil, err
		}
		if err := writeFile(filepath.Join(c.RegistryDir(), file), append(data, '\n'), 0o644); err != nil {
			return nil, err
		}
	}
	return out, nil
}
