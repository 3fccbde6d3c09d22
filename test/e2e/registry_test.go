//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/local/build"
)

// TestRegistry checks kok's registry on the shared meta cluster: the
// Deployment is Ready, it lists every repository kok pushes, a client pulls
// a business image with the digest kok pushed, a node's plain-HTTP fetch of
// an artifact by digest gets the file, and a second kok up pushes nothing.
func TestRegistry(t *testing.T) {
	cfg := sharedCluster(t)
	ctx := context.Background()
	cs := clientset(t, cfg.Kubeconfig())
	reg := cfg.RegistryAddress()
	// Plain HTTP to the meta node's own bridge address, never a proxy.
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{Proxy: nil}}

	t.Run("the Deployment is Ready on the node's network", func(t *testing.T) {
		d, err := cs.AppsV1().Deployments("kok-system").Get(ctx, "kok-registry", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Status.ReadyReplicas != 1 || !d.Spec.Template.Spec.HostNetwork {
			t.Fatalf("kok-registry: %d ready replicas, hostNetwork %v", d.Status.ReadyReplicas, d.Spec.Template.Spec.HostNetwork)
		}
	})

	t.Run("the catalog lists kok's images and artifacts", func(t *testing.T) {
		var cat struct {
			Repositories []string `json:"repositories"`
		}
		getJSON(t, hc, "http://"+reg+"/v2/_catalog", &cat)
		want := []string{"pause", "kok-manager", "coredns", "registry", "kube-apiserver", "kube-controller-manager",
			"kube-scheduler", "kube-proxy", "etcd", "artifacts/kube", "artifacts/kok-agent", "artifacts/containerd",
			"artifacts/runc", "artifacts/cni-plugins"}
		for _, r := range want {
			if !slices.Contains(cat.Repositories, r) {
				t.Errorf("catalog %v lacks %s", cat.Repositories, r)
			}
		}
	})

	t.Run("a client pulls a business image with the pushed digest", func(t *testing.T) {
		imgs, err := local.RegistryImages(cfg.StateDir)
		if err != nil {
			t.Fatal(err)
		}
		var pause *local.PushedImage
		for i := range imgs {
			if imgs[i].Ref == local.PauseImage {
				pause = &imgs[i]
			}
		}
		if pause == nil {
			t.Fatalf("%s not among the pushed images %v", local.PauseImage, imgs)
		}
		want, _ := local.RegistryRef(reg, local.PauseImage)
		if pause.Remote != want {
			t.Errorf("pushed as %s, want %s", pause.Remote, want)
		}
		ref, err := name.NewTag(pause.Remote, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(ref, remote.WithContext(ctx), remote.WithTransport(hc.Transport))
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if d.String() != pause.Digest {
			t.Fatalf("pulled %s has digest %s, pushed %s", ref, d, pause.Digest)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/pause" {
			t.Fatalf("pause image config entrypoint %v", cf.Config.Entrypoint)
		}
	})

	t.Run("a node fetches an artifact by digest over plain HTTP", func(t *testing.T) {
		arts, err := local.RegistryArtifacts(cfg.StateDir)
		if err != nil {
			t.Fatal(err)
		}
		var kube *local.Artifact
		for i := range arts {
			if arts[i].Name == "kube" && arts[i].Tag == cfg.KubernetesVersion {
				kube = &arts[i]
			}
		}
		if kube == nil {
			t.Fatalf("no kube:%s artifact in %v", cfg.KubernetesVersion, arts)
		}
		url := kube.BlobURL(reg)
		if want := fmt.Sprintf("http://%s/v2/artifacts/kube/blobs/%s", reg, kube.Digest); url != want {
			t.Errorf("blob URL %s, want %s", url, want)
		}
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", url, resp.Status)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		got := "sha256:" + hex.EncodeToString(h.Sum(nil))
		if got != kube.Digest || n != kube.Size {
			t.Fatalf("fetched %d bytes with %s; artifact says %d bytes, %s", n, got, kube.Size, kube.Digest)
		}
		built := filepath.Join(cfg.CacheDir, "bin", "kubernetes", cfg.KubernetesVersion, build.KubeBinary)
		f, err := os.Open(built)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = f.Close() }()
		lh := sha256.New()
		if _, err := io.Copy(lh, f); err != nil {
			t.Fatal(err)
		}
		if want := "sha256:" + hex.EncodeToString(lh.Sum(nil)); got != want {
			t.Fatalf("the registry's kube is %s, the built one %s", got, want)
		}
	})

	t.Run("kok up again finds everything in place", func(t *testing.T) {
		out := mustKok(t, cfg.StateDir, "up", "--demo=false")
		if !strings.Contains(out, "registry: 0 images, 0 artifacts pushed") {
			t.Fatalf("a second kok up pushed again:\n%s", out)
		}
		list := mustKok(t, cfg.StateDir, "registry", "list")
		if !strings.Contains(list, reg+"/artifacts/kube:"+cfg.KubernetesVersion) {
			t.Fatalf("kok registry list lacks the kube artifact:\n%s", list)
		}
	})
}

func getJSON(t *testing.T, hc *http.Client, url string, v any) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
