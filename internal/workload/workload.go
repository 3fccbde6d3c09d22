// Package workload reaches business clusters from the meta cluster: one
// client per KubeCluster, built from the admin kubeconfig the cluster
// operator publishes (status.adminKubeconfigSecret) and rebuilt when that
// Secret changes. The machine and addon operators share it.
package workload

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
)

// Cluster is a business cluster as an operator sees it.
type Cluster struct {
	// Client is a typed clientset; Objects a controller-runtime client
	// (any kind, typed or unstructured; used for server-side apply).
	Client  kubernetes.Interface
	Objects client.Client
	// Dynamic watches any kind (the addon operator's informers).
	Dynamic dynamic.Interface
	// Server is the apiserver URL and CA its certificate authority (PEM),
	// from the cluster's admin kubeconfig.
	Server string
	CA     []byte
}

// Func reaches a KubeCluster's business cluster.
type Func func(ctx context.Context, kc *clusterv1.KubeCluster) (*Cluster, error)

// Cache holds one Cluster per KubeCluster (by UID), rebuilt when the admin
// kubeconfig Secret changes. Reader reads that Secret from the meta cluster.
// An entry not asked for within idleAfter is dropped (a deleted cluster's,
// or one whose rollout ended), so the cache holds the clusters in use.
type Cache struct {
	Reader client.Reader

	mu    sync.Mutex
	cache map[string]cached
	swept time.Time
}

type cached struct {
	version string
	c       *Cluster
	used    time.Time
}

// idleAfter: an entry unused this long is dropped.
const idleAfter = 15 * time.Minute

// sweep drops idle entries, at most once per idleAfter (ws.mu held).
func (ws *Cache) sweep(now time.Time) {
	if now.Sub(ws.swept) < idleAfter {
		return
	}
	for k, c := range ws.cache {
		if now.Sub(c.used) >= idleAfter {
			delete(ws.cache, k)
		}
	}
	ws.swept = now
}

// Len is how many clusters the cache holds.
func (ws *Cache) Len() int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return len(ws.cache)
}

// Get returns kc's business cluster.
func (ws *Cache) Get(ctx context.Context, kc *clusterv1.KubeCluster) (*Cluster, error) {
	name := kc.Status.AdminKubeconfigSecret
	if name == "" {
		return nil, fmt.Errorf("KubeCluster %s has no admin kubeconfig yet", kc.Name)
	}
	var s corev1.Secret
	if err := ws.Reader.Get(ctx, client.ObjectKey{Namespace: kc.Namespace, Name: name}, &s); err != nil {
		return nil, fmt.Errorf("reading Secret %s: %w", name, err)
	}
	key := string(kc.UID)
	ws.mu.Lock()
	defer ws.mu.Unlock()
	now := time.Now()
	ws.sweep(now)
	if c, ok := ws.cache[key]; ok && c.version == s.ResourceVersion {
		c.used = now
		ws.cache[key] = c
		return c.c, nil
	}
	raw, err := clientcmd.Load(s.Data["value"])
	if err != nil {
		return nil, fmt.Errorf("the admin kubeconfig in Secret %s: %w", name, err)
	}
	cfg, err := clientcmd.NewDefaultClientConfig(*raw, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("the admin kubeconfig in Secret %s: %w", name, err)
	}
	cfg.Timeout = 15 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	objs, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	w := &Cluster{Client: cs, Objects: objs, Dynamic: dyn, Server: cfg.Host, CA: cfg.CAData}
	if ws.cache == nil {
		ws.cache = map[string]cached{}
	}
	ws.cache[key] = cached{version: s.ResourceVersion, c: w, used: now}
	return w, nil
}
