package local

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/kubeonkube/kok/internal/local/build"
	"github.com/kubeonkube/kok/internal/local/supervisor"
	"github.com/kubeonkube/kok/internal/local/versions"
)

// Component names, in start order.
const (
	Containerd        = "containerd"
	Etcd              = "etcd"
	APIServer         = "kube-apiserver"
	ControllerManager = "kube-controller-manager"
	Scheduler         = "kube-scheduler"
	Kubelet           = "kubelet"
	KubeProxy         = "kube-proxy"
	// LocalStorage provisions hostPath volumes for the kok-local class.
	LocalStorage = "local-storage"
)

// ComponentNames lists every supervised component.
var ComponentNames = []string{Containerd, Etcd, APIServer, ControllerManager, Scheduler, Kubelet, KubeProxy, LocalStorage}

// kubeBin is the Kubernetes multi-call binary of a version.
func kubeBin(b *build.Builder, version string) string {
	return filepath.Join(b.Dir("kubernetes", version), build.KubeBinary)
}

// etcdBin is the etcd binary of a version.
func etcdBin(b *build.Builder, version string) string {
	return filepath.Join(b.Dir("etcd", version), "etcd")
}

// processes describes how the supervisor runs each component of c; self is
// the kok binary, which also runs the volume provisioner.
func processes(c *Config, b *build.Builder, self string) []*supervisor.Process {
	pki := func(f string) string { return filepath.Join(c.PKIDir(), f) }
	conf := func(f string) string { return filepath.Join(c.ConfDir(), f) }
	kube := kubeBin(b, c.KubernetesVersion)
	serviceCIDR := c.ServiceCIDR
	return []*supervisor.Process{
		{
			Name: Containerd, Path: "containerd",
			Args:  []string{"--config", conf("containerd.toml"), "--log-level", "warn"},
			Ready: socketReady(c.ContainerdSocket()),
			// Pods go first, through the CRI, so their networks and
			// mounts are released by the runtime that made them.
			BeforeStop: func(ctx context.Context) { _ = removeAllPods(ctx, c.ContainerdSocket()) },
			StopGrace:  20 * time.Second,
		},
		{
			Name: Etcd, Path: etcdBin(b, c.EtcdVersion),
			Args: flags(
				"name", c.NodeName,
				"data-dir", c.EtcdDataDir(),
				"listen-client-urls", "https://127.0.0.1:2379",
				"advertise-client-urls", "https://127.0.0.1:2379",
				"listen-peer-urls", "http://127.0.0.1:2380",
				"initial-advertise-peer-urls", "http://127.0.0.1:2380",
				"initial-cluster", c.NodeName+"=http://127.0.0.1:2380",
				"listen-metrics-urls", "http://127.0.0.1:2381",
				"cert-file", pki("etcd-server.crt"),
				"key-file", pki("etcd-server.key"),
				"trusted-ca-file", pki("etcd-ca.crt"),
				"client-cert-auth", "true",
				"quota-backend-bytes", fmt.Sprint(4<<30),
				"snapshot-count", "10000",
				"log-level", "warn",
			),
			Ready:     httpReady("http://127.0.0.1:2381/health"),
			StopGrace: 30 * time.Second,
		},
		{
			Name: APIServer, Path: kube, After: []string{Etcd},
			Args: append([]string{"kube-apiserver"}, flags(
				"advertise-address", c.NodeIP().String(),
				"bind-address", "0.0.0.0",
				"secure-port", fmt.Sprint(c.APIServerPort),
				"etcd-servers", "https://127.0.0.1:2379",
				"etcd-cafile", pki("etcd-ca.crt"),
				"etcd-certfile", pki("apiserver-etcd-client.crt"),
				"etcd-keyfile", pki("apiserver-etcd-client.key"),
				"client-ca-file", pki("ca.crt"),
				"tls-cert-file", pki("apiserver.crt"),
				"tls-private-key-file", pki("apiserver.key"),
				"kubelet-client-certificate", pki("apiserver-kubelet-client.crt"),
				"kubelet-client-key", pki("apiserver-kubelet-client.key"),
				"kubelet-preferred-address-types", "InternalIP",
				"proxy-client-cert-file", pki("front-proxy-client.crt"),
				"proxy-client-key-file", pki("front-proxy-client.key"),
				"requestheader-client-ca-file", pki("front-proxy-ca.crt"),
				"requestheader-allowed-names", "front-proxy-client",
				"requestheader-extra-headers-prefix", "X-Remote-Extra-",
				"requestheader-group-headers", "X-Remote-Group",
				"requestheader-username-headers", "X-Remote-User",
				"service-account-issuer", "https://kubernetes.default.svc."+c.DNSDomain,
				"service-account-key-file", pki("sa.pub"),
				"service-account-signing-key-file", pki("sa.key"),
				"service-cluster-ip-range", serviceCIDR,
				"authorization-mode", join("Node", "RBAC"),
				"enable-admission-plugins", "NodeRestriction",
				"enable-bootstrap-token-auth", "true",
				"allow-privileged", "true",
				"profiling", "false",
				"v", "1",
			)...),
			Ready: httpReady(fmt.Sprintf("https://127.0.0.1:%d/readyz", c.APIServerPort)),
			// Its state is in etcd; after draining requests it can linger
			// in shutdown, so it gets a short grace.
			StopGrace: 5 * time.Second,
		},
		{
			Name: ControllerManager, Path: kube, After: []string{APIServer},
			Args: append([]string{"kube-controller-manager"}, flags(
				"kubeconfig", conf("controller-manager.conf"),
				"authentication-kubeconfig", conf("controller-manager.conf"),
				"authorization-kubeconfig", conf("controller-manager.conf"),
				"bind-address", "127.0.0.1",
				"leader-elect", "false",
				"cluster-signing-cert-file", pki("ca.crt"),
				"cluster-signing-key-file", pki("ca.key"),
				"root-ca-file", pki("ca.crt"),
				"requestheader-client-ca-file", pki("front-proxy-ca.crt"),
				"service-account-private-key-file", pki("sa.key"),
				"use-service-account-credentials", "true",
				"controllers", join("*", "bootstrapsigner", "tokencleaner"),
				"service-cluster-ip-range", serviceCIDR,
				"cluster-cidr", c.PodCIDR,
				"allocate-node-cidrs", "false",
				"v", "1",
			)...),
			Ready: httpReady("https://127.0.0.1:10257/healthz"),
		},
		{
			Name: Scheduler, Path: kube, After: []string{APIServer},
			Args: append([]string{"kube-scheduler"}, flags(
				"kubeconfig", conf("scheduler.conf"),
				"authentication-kubeconfig", conf("scheduler.conf"),
				"authorization-kubeconfig", conf("scheduler.conf"),
				"bind-address", "127.0.0.1",
				"leader-elect", "false",
				"v", "1",
			)...),
			Ready: httpReady("https://127.0.0.1:10259/healthz"),
		},
		{
			Name: Kubelet, Path: kube, After: []string{APIServer, Containerd},
			Args: append([]string{"kubelet"}, flags(
				"config", conf("kubelet.yaml"),
				"kubeconfig", conf("kubelet.conf"),
				"root-dir", c.KubeletDir(),
				"cert-dir", filepath.Join(c.KubeletDir(), "pki"),
				"hostname-override", c.NodeName,
				"node-ip", c.NodeIP().String(),
				"v", "1",
			)...),
			Ready:     httpReady("http://127.0.0.1:10248/healthz"),
			StopGrace: 20 * time.Second,
		},
		{
			Name: KubeProxy, Path: kube, After: []string{APIServer},
			Args:  append([]string{"kube-proxy"}, flags("config", conf("kube-proxy.yaml"), "v", "1")...),
			Ready: httpReady("http://127.0.0.1:10256/healthz"),
		},
		{
			Name: LocalStorage, Path: self, After: []string{APIServer},
			Args: []string{"local-storage", "--state-dir", c.StateDir},
		},
	}
}

var probeClient = &http.Client{
	Timeout: 2 * time.Second,
	Transport: &http.Transport{
		// Probes only talk to loopback endpoints of processes kok started.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // readiness probe of a loopback process, not an identity check; controller-manager and scheduler serve self-signed certs
		Proxy:           nil,
	},
}

func httpReady(url string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := probeClient.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

func socketReady(path string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			return err
		}
		return conn.Close()
	}
}

// ensureBuilt builds the binaries the meta cluster of c runs.
func ensureBuilt(ctx context.Context, b *build.Builder, c *Config) error {
	products, err := UpProducts(ctx, b.Go, c.KubernetesVersion, c.EtcdVersion)
	if err != nil {
		return err
	}
	for _, p := range products {
		if _, err := b.Ensure(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// UpProducts are the builds kok up needs, for a meta cluster of the given
// Kubernetes and etcd releases: those, CoreDNS and the registry, and what
// the default addons run (flanneld, metrics-server, konnectivity).
func UpProducts(ctx context.Context, goCmd, kubernetes, etcd string) ([]*build.Product, error) {
	kp, err := build.Kubernetes(ctx, goCmd, kubernetes)
	if err != nil {
		return nil, err
	}
	fl, err := build.Flannel(ctx, goCmd, versions.Flannel)
	if err != nil {
		return nil, err
	}
	return []*build.Product{kp, build.Etcd(etcd), build.CoreDNS(versions.CoreDNS), build.Registry(versions.Registry), fl,
		build.MetricsServer(versions.MetricsServer), build.Konnectivity(versions.Konnectivity)}, nil
}
