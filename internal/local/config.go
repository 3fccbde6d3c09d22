package local

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/local/versions"
)

// Config describes the local meta cluster. It is saved in the state
// directory by kok up, so later commands act on the same cluster.
type Config struct {
	StateDir string `json:"stateDir"`
	// RunDir holds sockets and containerd's runtime state (a tmpfs, emptied
	// by a reboot).
	RunDir   string `json:"runDir"`
	CacheDir string `json:"cacheDir"`

	NodeName          string `json:"nodeName"`
	KubernetesVersion string `json:"kubernetesVersion"`
	EtcdVersion       string `json:"etcdVersion"`

	// Bridge is the pod bridge; its address (first of NodeSubnet) is the
	// node address and the apiserver's advertised address.
	Bridge      string `json:"bridge"`
	NodeSubnet  string `json:"nodeSubnet"`
	PodCIDR     string `json:"podCIDR"`
	ServiceCIDR string `json:"serviceCIDR"`
	// GuardCIDR covers every address range kok uses for pods, services and
	// machines; nothing from it may leave the machine.
	GuardCIDR     string `json:"guardCIDR"`
	DNSDomain     string `json:"dnsDomain"`
	APIServerPort int    `json:"apiServerPort"`
	// RegistryPort is where kok's registry listens on the node address.
	RegistryPort int `json:"registryPort"`
}

// DefaultConfig returns the configuration kok up uses unless told otherwise.
func DefaultConfig() Config {
	return Config{
		StateDir:          "/var/lib/kok",
		RunDir:            "/run/kok",
		CacheDir:          "/var/cache/kok",
		NodeName:          "kok-meta",
		KubernetesVersion: versions.DefaultKubernetes(),
		EtcdVersion:       versions.DefaultEtcd(),
		Bridge:            "kok0",
		NodeSubnet:        "10.200.0.0/24",
		PodCIDR:           "10.200.0.0/16",
		ServiceCIDR:       "10.201.0.0/16",
		GuardCIDR:         "10.200.0.0/13",
		DNSDomain:         "cluster.local",
		APIServerPort:     6443,
		RegistryPort:      5000,
	}
}

// Validate checks the address plan.
func (c *Config) Validate() error {
	for name, cidr := range map[string]string{"node subnet": c.NodeSubnet, "pod CIDR": c.PodCIDR,
		"service CIDR": c.ServiceCIDR, "guard CIDR": c.GuardCIDR} {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			return fmt.Errorf("%s %q: %w", name, cidr, err)
		}
	}
	_, guard, _ := net.ParseCIDR(c.GuardCIDR)
	for _, cidr := range []string{c.NodeSubnet, c.PodCIDR, c.ServiceCIDR} {
		ip, _, _ := net.ParseCIDR(cidr)
		if !guard.Contains(ip) {
			return fmt.Errorf("%s lies outside the guarded range %s: traffic from it could leave the machine", cidr, c.GuardCIDR)
		}
	}
	if !versions.Known(versions.Kubernetes, c.KubernetesVersion) {
		return fmt.Errorf("kubernetes version %s is not one kok builds (%v)", c.KubernetesVersion, versions.Kubernetes)
	}
	if !versions.Known(versions.Etcd, c.EtcdVersion) {
		return fmt.Errorf("etcd version %s is not one kok builds (%v)", c.EtcdVersion, versions.Etcd)
	}
	return nil
}

// NodeIP is the bridge address: first host of the node subnet.
func (c *Config) NodeIP() net.IP { return net.ParseIP(kube.NthIP(c.NodeSubnet, 1)) }

// APIServiceIP is the first address of the service range (the kubernetes
// Service).
func (c *Config) APIServiceIP() net.IP { return net.ParseIP(kube.NthIP(c.ServiceCIDR, 1)) }

// DNSServiceIP is the cluster DNS Service address.
func (c *Config) DNSServiceIP() net.IP { return net.ParseIP(kube.NthIP(c.ServiceCIDR, 10)) }

// APIServerURL is where clients on this machine reach the apiserver.
func (c *Config) APIServerURL() string {
	return fmt.Sprintf("https://%s:%d", c.NodeIP(), c.APIServerPort)
}

// RegistryAddress is host:port of kok's registry on the node address
// (10.200.0.1:5000), which business-cluster nodes reach over their route to
// the meta node. Plain HTTP for now.
func (c *Config) RegistryAddress() string {
	return net.JoinHostPort(c.NodeIP().String(), strconv.Itoa(c.RegistryPort))
}

// Paths under the state directory.
func (c *Config) path(elem ...string) string {
	return filepath.Join(append([]string{c.StateDir}, elem...)...)
}

func (c *Config) PKIDir() string        { return c.path("pki") }
func (c *Config) EtcdDataDir() string   { return c.path("etcd") }
func (c *Config) ConfDir() string       { return c.path("config") }
func (c *Config) LogDir() string        { return c.path("logs") }
func (c *Config) PidDir() string        { return c.path("run") }
func (c *Config) KubeletDir() string    { return c.path("kubelet") }
func (c *Config) ContainerdDir() string { return c.path("containerd") }
func (c *Config) CNIConfDir() string    { return c.path("config", "cni") }
func (c *Config) CNIDataDir() string    { return c.path("cni") }

// VolumeDir holds the local volumes of the kok-local StorageClass.
func (c *Config) VolumeDir() string { return c.path("volumes") }

// RegistryDir is the registry's storage (a hostPath, so content survives
// restarts), and beside it the record of what kok pushed (artifacts.json).
func (c *Config) RegistryDir() string { return c.path("registry") }

// Kubeconfig is the admin kubeconfig kok up writes for the user.
func (c *Config) Kubeconfig() string { return c.path("kubeconfig") }

// DemoKubeconfig is where kok up writes the demo cluster's admin kubeconfig.
func (c *Config) DemoKubeconfig() string { return filepath.Join(c.StateDir, DemoCluster+".kubeconfig") }

// ContainerdSocket is the socket of kok's own containerd.
func (c *Config) ContainerdSocket() string {
	return filepath.Join(c.RunDir, "containerd", "containerd.sock")
}

// CgroupRoot is the cgroup under which all pods of the node run.
func (c *Config) CgroupRoot() string { return "/kok" }

func configFile(stateDir string) string { return filepath.Join(stateDir, "config.json") }

// Save records the configuration in its state directory.
func (c *Config) Save() error {
	if err := os.MkdirAll(c.StateDir, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp := configFile(c.StateDir) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, configFile(c.StateDir))
}

// LoadConfig reads the configuration saved in stateDir.
func LoadConfig(stateDir string) (*Config, error) {
	data, err := os.ReadFile(configFile(stateDir))
	if err != nil {
		return nil, err
	}
	c := DefaultConfig()
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("state directory %s holds a damaged config.json (%v): run 'kok down --purge --state-dir %s' and 'kok up' again", stateDir, err, stateDir)
	}
	return &c, nil
}
