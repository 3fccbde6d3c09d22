package machine

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/agent"
)

// Registry is where hosts get artifacts: references name Name (the host
// part image and artifact references use, kok.local by default), which is
// served at Endpoint (http://host:port or https://…).
type Registry struct {
	Name     string
	Endpoint string

	mu    sync.Mutex
	cache map[string]resolved
}

type resolved struct {
	digest string
	at     time.Time
}

// resolveTTL is how long a tag's digest is trusted before it is asked
// again: a re-pushed tag reaches hosts within it.
const resolveTTL = 30 * time.Second

// Values are the registry's values for templates.
func (r *Registry) Values() RegistryValues {
	return RegistryValues{Name: r.Name, Endpoint: r.Endpoint}
}

// repository splits an artifact source into its repository within the
// registry and its tag: kok.local/artifacts/kube:v1.34.4 → artifacts/kube,
// v1.34.4.
func (r *Registry) repository(source string) (repo, tag string, err error) {
	rest, ok := strings.CutPrefix(source, r.Name+"/")
	if !ok {
		return "", "", fmt.Errorf("source %s is not in registry %s: artifacts come from the one registry (kok-manager --registry-name)", source, r.Name)
	}
	repo, tag, ok = strings.Cut(rest, ":")
	if !ok || repo == "" || tag == "" {
		return "", "", fmt.Errorf("source %s has no tag: write it as %s/<repository>:<tag>", source, r.Name)
	}
	return repo, tag, nil
}

// Resolve pins an artifact: the digest the Component gives, or the one
// its tag points at now (its manifest's single layer).
func (r *Registry) Resolve(ctx context.Context, a nodev1.Artifact) (agent.Artifact, error) {
	if r.Endpoint == "" {
		return agent.Artifact{}, fmt.Errorf("kok-manager has no registry endpoint (--registry-endpoint): artifacts cannot be fetched")
	}
	repo, tag, err := r.repository(a.Source)
	if err != nil {
		return agent.Artifact{}, err
	}
	digest := a.Digest
	if digest == "" {
		if digest, err = r.layerDigest(ctx, repo, tag); err != nil {
			return agent.Artifact{}, err
		}
	}
	return agent.Artifact{Path: a.Path, URL: r.BlobURL(repo, digest), Digest: digest, Mode: a.Mode}, nil
}

// BlobURL is where a blob of a repository is served.
func (r *Registry) BlobURL(repo, digest string) string {
	return strings.TrimSuffix(r.Endpoint, "/") + "/v2/" + repo + "/blobs/" + digest
}

func (r *Registry) layerDigest(ctx context.Context, repo, tag string) (string, error) {
	key := repo + ":" + tag
	r.mu.Lock()
	if c, ok := r.cache[key]; ok && time.Since(c.at) < resolveTTL {
		r.mu.Unlock()
		return c.digest, nil
	}
	r.mu.Unlock()
	host, insecure := strings.CutPrefix(r.Endpoint, "http://")
	host = strings.TrimPrefix(host, "https://")
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.NewTag(strings.TrimSuffix(host, "/")+"/"+key, opts...)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("resolving %s/%s at %s: %w", r.Name, key, r.Endpoint, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return "", fmt.Errorf("resolving %s/%s: %w", r.Name, key, err)
	}
	if len(layers) != 1 {
		return "", fmt.Errorf("%s/%s has %d layers: an artifact has exactly one, the file", r.Name, key, len(layers))
	}
	d, err := layers[0].Digest()
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	if r.cache == nil {
		r.cache = map[string]resolved{}
	}
	r.cache[key] = resolved{d.String(), time.Now()}
	r.mu.Unlock()
	return d.String(), nil
}

// Fetch reads a pinned artifact (the operator does, for the one binary it
// puts on a host itself: the agent).
func (r *Registry) Fetch(ctx context.Context, a agent.Artifact) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", a.URL, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching %s: %s", a.URL, resp.Status)
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", a.URL, err)
	}
	if got := sha256Digest(data); got != a.Digest {
		return nil, fmt.Errorf("%s has digest %s, want %s", a.URL, got, a.Digest)
	}
	return data, nil
}
