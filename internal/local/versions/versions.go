// Package versions pins the component versions the local meta cluster and the
// test harness build from the Go module proxy. It is data: adding a version is
// adding a line here (the business-cluster catalog lives in KubernetesVersion
// objects, not here).
package versions

import (
	"fmt"
	"strings"

	utilversion "k8s.io/apimachinery/pkg/util/version"
)

// Kubernetes lists the Kubernetes releases kok builds, newest first.
// Two minors are kept so that upgrades can be exercised.
var Kubernetes = []string{"v1.34.4", "v1.33.13"}

// Etcd lists the etcd releases kok builds, newest first.
var Etcd = []string{"v3.6.16", "v3.5.35"}

// CoreDNS is the CoreDNS release built for cluster DNS.
const CoreDNS = "v1.14.7"

// Flannel is the flannel release built for the default CNI addon.
const Flannel = "v0.28.10"

// MetricsServer is the metrics-server release built for the addon.
const MetricsServer = "v0.8.0"

// Konnectivity is the apiserver-network-proxy release built for the proxy
// server beside each apiserver and the konnectivity addon's agent.
const Konnectivity = "v0.34.0"

// Registry is the CNCF Distribution release built for kok's registry, which
// serves every kok-built image and binary to business-cluster nodes.
const Registry = "v3.1.2"

// DefaultKubernetes is the version the meta cluster runs.
func DefaultKubernetes() string { return Kubernetes[0] }

// DefaultEtcd is the etcd version the meta cluster runs.
func DefaultEtcd() string { return Etcd[0] }

// StagingVersion maps a Kubernetes release (v1.34.4) to the version of its
// staging modules (v0.34.4).
func StagingVersion(k8s string) (string, error) {
	if !strings.HasPrefix(k8s, "v1.") {
		return "", fmt.Errorf("kubernetes version %q: want v1.MINOR.PATCH", k8s)
	}
	return "v0." + strings.TrimPrefix(k8s, "v1."), nil
}

// MajorMinor splits v1.34.4 into "1" and "34".
func MajorMinor(v string) (major, minor string, err error) {
	pv, err := utilversion.ParseGeneric(v)
	if err != nil {
		return "", "", fmt.Errorf("version %q: want vMAJOR.MINOR.PATCH: %w", v, err)
	}
	return fmt.Sprint(pv.Major()), fmt.Sprint(pv.Minor()), nil
}

// Known reports whether v is one of the listed versions.
func Known(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
