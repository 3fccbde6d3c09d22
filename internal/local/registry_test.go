package local

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kubeonkube/kok/internal/local/build"
	"github.com/kubeonkube/kok/internal/local/image"
	"github.com/kubeonkube/kok/internal/local/versions"
)

func TestSanitizeTag(t *testing.T) {
	for in, want := range map[string]string{
		"1.6.20~ds1-1+b1":        "1.6.20-ds1-1-b1",
		"1.6.20~ds1-1+deb12u3":   "1.6.20-ds1-1-deb12u3",
		"1.1.1+ds1-3+b5":         "1.1.1-ds1-3-b5",
		"1:2.3-4":                "1-2.3-4",
		"v1.34.4":                "v1.34.4",
		"~rc1":                   "rc1",
		"":                       "unknown",
		strings.Repeat("a", 200): strings.Repeat("a", 128),
	} {
		got := SanitizeTag(in)
		if got != want {
			t.Errorf("SanitizeTag(%q) = %q, want %q", in, got, want)
		}
		if _, err := name.NewTag("r.example/artifacts/x:"+got, name.StrictValidation); err != nil {
			t.Errorf("SanitizeTag(%q) = %q is not a valid tag: %v", in, got, err)
		}
	}
}

func TestRegistryRef(t *testing.T) {
	got, err := RegistryRef("10.200.0.1:5000", image.Prefix+"pause:3.10")
	if err != nil || got != "10.200.0.1:5000/pause:3.10" {
		t.Fatalf("RegistryRef = %q, %v", got, err)
	}
	if _, err := RegistryRef("10.200.0.1:5000", "docker.io/library/busybox:1"); err == nil {
		t.Fatal("an image that is not kok's must be refused")
	}
}

// TestArtifactManifest checks the artifact is a single-layer OCI image
// manifest with kok's artifactType, the OCI empty config and the raw file as
// its layer, titled with the file's name.
func TestArtifactManifest(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kube")
	content := []byte("\x7fELF not really a binary")
	if err := os.WriteFile(file, content, 0o755); err != nil {
		t.Fatal(err)
	}
	blob, err := newFileBlob(file)
	if err != nil {
		t.Fatal(err)
	}
	img, err := NewArtifact(blob, "kube")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if m.SchemaVersion != 2 || m.MediaType != types.OCIManifestSchema1 {
		t.Errorf("manifest %d %s, want an OCI image manifest", m.SchemaVersion, m.MediaType)
	}
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("image media type %s", mt)
	}
	var top struct {
		ArtifactType string `json:"artifactType"`
	}
	if err := json.Unmarshal(raw, &top); err != nil || top.ArtifactType != ArtifactType {
		t.Errorf("artifactType %q, want %q (%v)", top.ArtifactType, ArtifactType, err)
	}
	// The OCI empty descriptor: "{}", whose digest every registry knows.
	if m.Config.MediaType != "application/vnd.oci.empty.v1+json" || m.Config.Size != 2 ||
		m.Config.Digest.String() != "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a" {
		t.Errorf("config %+v is not the OCI empty descriptor", m.Config)
	}
	if cn, _ := img.ConfigName(); cn != m.Config.Digest {
		t.Errorf("config blob %s, manifest names %s", cn, m.Config.Digest)
	}
	if len(m.Layers) != 1 {
		t.Fatalf("%d layers, want 1", len(m.Layers))
	}
	l := m.Layers[0]
	sum := sha256.Sum256(content)
	if l.MediaType != "application/octet-stream" || l.Digest.String() != "sha256:"+hex.EncodeToString(sum[:]) ||
		l.Size != int64(len(content)) || l.Annotations["org.opencontainers.image.title"] != "kube" {
		t.Errorf("layer %+v is not the raw file titled kube", l)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %v, %v", layers, err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	_ = rc.Close()
	if !bytes.Equal(got, content) {
		t.Error("the layer's blob is not the file")
	}
}

// TestPushIsLevelBased pushes kok's images and artifacts (from small
// stand-in binaries) to an in-process registry: the first push sends
// everything and records it, a second finds everything in place and sends
// nothing, and a node can fetch an artifact's file by digest with plain HTTP.
func TestPushIsLevelBased(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	c := DefaultConfig()
	c.StateDir, c.CacheDir = t.TempDir(), t.TempDir()
	c.NodeSubnet = host + "/24" // NodeIP: the next address, so the test server must be on .1
	if c.NodeIP().String() != "127.0.0.1" {
		t.Skipf("test server on %s", host)
	}
	c.RegistryPort, _ = strconv.Atoi(port)

	b := &build.Builder{CacheDir: c.CacheDir}
	write := func(path, content string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	bin := t.TempDir()
	bins := Binaries{Manager: write(filepath.Join(bin, "kok-manager"), "manager"),
		Pause: write(filepath.Join(bin, "kok-pause"), "pause"), Agent: write(filepath.Join(bin, "kok-agent"), "agent"),
		CNI: write(filepath.Join(bin, "kok-cni"), "cni")}
	write(filepath.Join(b.Dir("coredns", versions.CoreDNS), "coredns"), "coredns")
	write(filepath.Join(b.Dir("registry", versions.Registry), "registry"), "registry")
	kube := write(filepath.Join(b.Dir("kubernetes", versions.Kubernetes[0]), build.KubeBinary), "kube multi-call")
	runcBin := write(filepath.Join(bin, "runc"), "runc")
	cni := filepath.Join(bin, "cni")
	write(filepath.Join(cni, "bridge"), "bridge")
	write(filepath.Join(cni, "loopback"), "loopback")
	saved, savedVersion := hostRuntime, packageVersion
	defer func() { hostRuntime, packageVersion = saved, savedVersion }()
	hostRuntime = []runtimePiece{
		{name: "runc", pkg: "runc", single: []string{runcBin}},
		{name: "cni-plugins", pkg: "containernetworking-plugins", files: func() ([]tarFile, error) { return dirFiles(cni) }},
	}
	packageVersion = func(_ context.Context, pkg string) (string, error) { return "1.1.5+ds1-1+deb12u1", nil }

	ctx := context.Background()
	first, err := PushRegistry(ctx, &c, b, bins, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// pause, kok-manager, coredns, registry and five Kubernetes images.
	if first.PushedImages != 9 || first.Already != 0 {
		t.Errorf("first push: %d images pushed, %d already there; want 9, 0", first.PushedImages, first.Already)
	}
	// kube, kok-agent (two tags), runc and cni-plugins (each tagged with
	// its Debian and its upstream version).
	if first.PushedArtifacts != 7 || first.Bytes == 0 {
		t.Errorf("first push: %d artifacts, %d bytes; want 7 and some bytes", first.PushedArtifacts, first.Bytes)
	}
	arts, err := RegistryArtifacts(c.StateDir)
	if err != nil || len(arts) != 7 {
		t.Fatalf("artifacts.json: %v, %v", arts, err)
	}
	byName := map[string]Artifact{}
	for _, a := range arts {
		byName[a.Name+":"+a.Tag] = a
	}
	ka, ok := byName["kube:"+versions.Kubernetes[0]]
	if !ok || ka.Ref != c.RegistryAddress()+"/artifacts/kube:"+versions.Kubernetes[0] || ka.File != "kube" {
		t.Fatalf("kube artifact %+v", ka)
	}
	if _, ok := byName["runc:1.1.5-ds1-1-deb12u1"]; !ok {
		t.Errorf("runc artifact missing or mis-tagged: %v", arts)
	}
	if _, ok := byName["kok-agent:dev"]; !ok {
		t.Errorf("kok-agent:dev missing: %v", arts)
	}

	// A node's fetch: the blob by digest, over plain HTTP.
	resp, err := http.Get(ka.BlobURL(c.RegistryAddress()))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	want, _ := os.ReadFile(kube)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(data, want) {
		t.Fatalf("GET %s: %s, %q", ka.BlobURL(c.RegistryAddress()), resp.Status, data)
	}

	// An image under its registry name is the one recorded.
	imgs, err := RegistryImages(c.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range imgs {
		if p.Ref != PauseImage {
			continue
		}
		ref, err := name.ParseReference(p.Remote, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		d, err := remote.Head(ref)
		if err != nil || d.Digest.String() != p.Digest {
			t.Fatalf("pause in the registry: %v, %v; recorded %s", d, err, p.Digest)
		}
	}

	second, err := PushRegistry(ctx, &c, b, bins, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if second.PushedImages != 0 || second.PushedArtifacts != 0 || second.Already != 16 || second.Bytes != 0 {
		t.Errorf("second push: %d images, %d artifacts pushed, %d already there, %d bytes; want 0, 0, 16, 0",
			second.PushedImages, second.PushedArtifacts, second.Already, second.Bytes)
	}

	// A changed binary is pushed again, and only it.
	write(kube, "kube multi-call, rebuilt")
	third, err := PushRegistry(ctx, &c, b, bins, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if third.PushedImages != 5 || third.PushedArtifacts != 1 {
		t.Errorf("after a rebuilt kube: %d images, %d artifacts pushed; want the 5 Kubernetes images and the kube artifact",
			third.PushedImages, third.PushedArtifacts)
	}
}

// TestPlanWritesMountsSharedLayers: images whose one layer an earlier image
// sends (the Kubernetes component images of a version) are written after it,
// mounting the layer from its repository instead of uploading it again.
func TestPlanWritesMountsSharedLayers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kube")
	if err := os.WriteFile(file, []byte("kube"), 0o755); err != nil {
		t.Fatal(err)
	}
	layer := [][]image.File{{{Src: file, Dst: "/usr/local/bin/kube", Mode: 0o755}}}
	b := &image.Builder{}
	var items []pushItem
	for _, repo := range []string{"kube-apiserver", "kube-scheduler", "kube-proxy"} {
		img, err := b.Build(image.Spec{Ref: image.Prefix + repo + ":v1", Layers: layer, Entrypoint: []string{repo}})
		if err != nil {
			t.Fatal(err)
		}
		tag, err := name.NewTag("r.example/" + repo + ":v1")
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, pushItem{tag, img})
	}
	first, later, err := planWrites(items)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 1 || first[items[0].tag] == nil || len(later) != 2 {
		t.Fatalf("first %v, later %v: want kube-apiserver first, the two others later", first, later)
	}
	for ref, tg := range later {
		layers, err := tg.(v1.Image).Layers()
		if err != nil {
			t.Fatal(err)
		}
		ml, ok := layers[0].(*remote.MountableLayer)
		if !ok || ml.Reference.Context().RepositoryStr() != "kube-apiserver" {
			t.Errorf("%s: layer %T does not mount from kube-apiserver", ref, layers[0])
		}
	}
}

func TestRenderRegistry(t *testing.T) {
	c := DefaultConfig()
	out, err := renderRegistry(&c)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{"addr: 10.200.0.1:5000", "path: /var/lib/kok/registry", "hostNetwork: true",
		"image: " + RegistryImage(), "path: /v2/", "enabled: false", "type: Recreate"} {
		if !strings.Contains(s, want) {
			t.Errorf("registry manifests lack %q", want)
		}
	}
	c.RegistryPort = 5001
	again, _ := renderRegistry(&c)
	hash := func(b []byte) string {
		_, after, _ := strings.Cut(string(b), "kok.dev/config-hash: ")
		return strings.SplitN(after, "\n", 2)[0]
	}
	if hash(out) == hash(again) || hash(out) == `""` {
		t.Errorf("a changed configuration must change the pod template's hash (%s, %s)", hash(out), hash(again))
	}
}

func TestUpstreamVersion(t *testing.T) {
	for in, want := range map[string]string{
		"1.6.20~ds1-1+deb12u3": "1.6.20", "1.1.5+ds1-1+deb12u1": "1.1.5", "1.1.1+ds1-3+b5": "1.1.1", "1:2.3-1": "2.3", "4.0": "4.0",
	} {
		if got := UpstreamVersion(in); got != want {
			t.Errorf("UpstreamVersion(%q) = %q, want %q", in, got, want)
		}
	}
}
