package kube

import (
	"fmt"
	"net"
	"net/url"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilversion "k8s.io/apimachinery/pkg/util/version"
)

// Recommended labels on everything kok owns.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedBy is LabelManagedBy's value.
	ManagedBy = "kok"
)

// DefaultRegistry holds the images kok builds; every image reference kok
// makes goes through Image, so a site overrides the registry in one place.
const DefaultRegistry = "kok.local"

// Image is repository:tag in registry (DefaultRegistry when empty).
func Image(registry, repository, tag string) string {
	if registry == "" {
		registry = DefaultRegistry
	}
	return fmt.Sprintf("%s/%s:%s", registry, repository, tag)
}

// CompareVersions orders two versions such as v1.34.4 or 3.6.16 (-1, 0,
// 1). An unparsable version sorts first.
func CompareVersions(a, b string) int {
	va, erra := utilversion.ParseGeneric(a)
	vb, errb := utilversion.ParseGeneric(b)
	switch {
	case erra != nil && errb != nil:
		return 0
	case erra != nil:
		return -1
	case errb != nil:
		return 1
	}
	switch {
	case va.LessThan(vb):
		return -1
	case va.GreaterThan(vb):
		return 1
	}
	return 0
}

// MinorVersion is the minor of a version (0 when unparsable).
func MinorVersion(v string) int {
	pv, err := utilversion.ParseGeneric(v)
	if err != nil {
		return 0
	}
	return int(pv.Minor())
}

// OldestVersion is the lowest of the versions given ("" when none).
func OldestVersion(versions ...string) string {
	oldest := ""
	for _, v := range versions {
		if oldest == "" || CompareVersions(v, oldest) < 0 {
			oldest = v
		}
	}
	return oldest
}

func isAlreadyExists(err error) bool { return apierrors.IsAlreadyExists(err) }

// NthIP is the n-th address of an IPv4 CIDR ("" when cidr is not one):
// the cluster DNS Service is the 10th of the Service range, as kubeadm
// places it; a node's first address is the 1st of its subnet.
func NthIP(cidr string, n int) string {
	_, ipnet, err := net.ParseCIDR(cidr)
	if err != nil || ipnet.IP.To4() == nil {
		return ""
	}
	ip := ipnet.IP.To4()
	v := uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3]) + uint32(n)
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).String()
}

// ServerHostPort splits an apiserver URL (https://10.0.0.1:6443) into its
// host and port; the port is 443 when the URL names none.
func ServerHostPort(server string) (string, int, error) {
	u, err := url.Parse(server)
	if err != nil || u.Hostname() == "" {
		return "", 0, fmt.Errorf("the apiserver URL %q does not parse", server)
	}
	if u.Port() == "" {
		return u.Hostname(), 443, nil
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return "", 0, fmt.Errorf("the apiserver URL %q: %w", server, err)
	}
	return u.Hostname(), port, nil
}
