package local

import (
	"fmt"
	"path/filepath"
	"strings"
)

// PauseImage is the sandbox image containerd is told to use; kok builds it,
// so nothing is ever pulled.
const PauseImage = "kok.local/pause:kok"

// renderConfigs writes the configuration files of containerd, the CNI, the
// kubelet and kube-proxy.
func renderConfigs(c *Config) error {
	files := map[string]string{
		filepath.Join(c.ConfDir(), "containerd.toml"):    containerdConfig(c),
		filepath.Join(c.CNIConfDir(), "10-kok.conflist"): cniConfig(c),
		filepath.Join(c.ConfDir(), "kubelet.yaml"):       kubeletConfig(c),
		filepath.Join(c.ConfDir(), "kube-proxy.yaml"):    kubeProxyConfig(c),
	}
	for path, content := range files {
		if err := writeFile(path, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func containerdConfig(c *Config) string {
	return fmt.Sprintf(`# Written by kok up. kok's own containerd: its socket, root and state are kok's.
version = 2
root = %[1]q
state = %[2]q
oom_score = -999

[grpc]
  address = %[3]q

[ttrpc]
  address = "%[3]s.ttrpc"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  # The VM lacks CAP_SYS_RESOURCE: without this every sandbox fails.
  restrict_oom_score_adj = true
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[6]q
    max_conf_num = 1
`, filepath.Join(c.ContainerdDir(), "root"), filepath.Join(c.RunDir, "containerd", "state"),
		c.ContainerdSocket(), filepath.Join(c.ContainerdDir(), "opt"), PauseImage, c.CNIConfDir())
}

func cniConfig(c *Config) string {
	return fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "kok",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, c.Bridge, c.NodeSubnet, c.NodeIP().String(), filepath.Join(c.CNIDataDir(), "ipam"))
}

func kubeletConfig(c *Config) string {
	pki := c.PKIDir()
	return fmt.Sprintf(`# Written by kok up.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[1]q
authorization:
  mode: Webhook
address: %[2]q
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: %[3]q
tlsPrivateKeyFile: %[4]q
containerRuntimeEndpoint: unix://%[5]s
cgroupDriver: cgroupfs
cgroupRoot: %[6]q
failCgroupV1: false
failSwapOn: false
resolvConf: ""
clusterDNS:
- %[7]q
clusterDomain: %[8]q
podLogsDir: %[9]q
evictionHard:
  memory.available: 100Mi
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  nodefs.inodesFree: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 250
serializeImagePulls: false
rotateCertificates: false
`, filepath.Join(pki, "ca.crt"), c.NodeIP().String(), filepath.Join(pki, "kubelet.crt"), filepath.Join(pki, "kubelet.key"),
		c.ContainerdSocket(), c.CgroupRoot(), c.DNSServiceIP().String(), c.DNSDomain,
		filepath.Join(c.KubeletDir(), "pod-logs"))
}

func kubeProxyConfig(c *Config) string {
	return fmt.Sprintf(`# Written by kok up.
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %q
hostnameOverride: %q
mode: iptables
clusterCIDR: %q
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# No conntrack sysctls: the sandbox may not allow them.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, filepath.Join(c.ConfDir(), "kube-proxy.conf"), c.NodeName, c.PodCIDR)
}

// flags renders --name=value pairs in a stable order.
func flags(kv ...string) []string {
	out := make([]string, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, "--"+kv[i]+"="+kv[i+1])
	}
	return out
}

func join(items ...string) string { return strings.Join(items, ",") }
