// Package machine is the machine operator: it turns a Machine and the
// Components it asks for into what runs on the host (handed to kok-agent,
// package agent) and joins the host to its business cluster. Files:
// controller.go (Reconcile, watches), observe.go (the state: host over
// SSH, business cluster, plan), phases.go (act and teardown), status.go,
// workload.go (bootstrap tokens, node metadata, drain), csr.go (serving
// certificate approval), registry.go (artifact resolution). This file
// holds its pure planning — which variant of a component fits a
// host, the order components install in, and each component rendered
// with the cluster's and the host's values, hashed so that a change (and
// only a change) is rolled out.
package machine

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/template"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/agent"
	"github.com/kubeonkube/kok/internal/conditions"
)

// ComponentName is the name of the Component object of a component at a
// version.
func ComponentName(component, version string) string { return component + "-" + version }

// Version is the version a Machine asks for: its own, or the business
// cluster's Kubernetes version when it names none.
func Version(ref nodev1.ComponentRef, clusterVersion string) string {
	if ref.Version != "" {
		return ref.Version
	}
	return clusterVersion
}

// ErrNoVariant: a component has no variant for the host.
var ErrNoVariant = errors.New("no variant for this host")

// SelectVariant returns the first variant of c whose match fits the host.
func SelectVariant(c *nodev1.Component, f nodev1.HostFacts) (*nodev1.ComponentVariant, error) {
	var have []string
	for i := range c.Spec.Variants {
		v := &c.Spec.Variants[i]
		if matches(v.Match, f) {
			return v, nil
		}
		have = append(have, fmt.Sprintf("%s (%s)", v.Name, describeMatch(v.Match)))
	}
	return nil, fmt.Errorf("%w: Component %s has none for %s %s %s (it has %s); add a variant for it to a new version of the Component",
		ErrNoVariant, c.Name, f.OS, f.OSVersion, f.Arch, strings.Join(have, ", "))
}

func matches(m nodev1.HostMatch, f nodev1.HostFacts) bool {
	return m.OS == f.OS && (len(m.OSVersions) == 0 || slices.Contains(m.OSVersions, f.OSVersion)) &&
		(len(m.Architectures) == 0 || slices.Contains(m.Architectures, f.Arch))
}

func describeMatch(m nodev1.HostMatch) string {
	out := m.OS
	if len(m.OSVersions) > 0 {
		out += " " + strings.Join(m.OSVersions, "/")
	}
	if len(m.Architectures) > 0 {
		out += " " + strings.Join(m.Architectures, "/")
	}
	return out
}

// InstallOrder orders the components a Machine asks for so that each comes
// after the ones it depends on; among independent components the
// Machine's order holds. deps gives each component's DependsOn. A
// dependency the Machine does not ask for, or a cycle, is an error that
// names it.
func InstallOrder(wanted []string, deps map[string][]string) ([]string, error) {
	for _, c := range wanted {
		for _, d := range deps[c] {
			if !slices.Contains(wanted, d) {
				return nil, fmt.Errorf("component %s depends on %s, which the Machine does not ask for: add %s to spec.components", c, d, d)
			}
		}
	}
	const (
		unseen = iota
		visiting
		done
	)
	state := map[string]int{}
	var order []string
	var visit func(c string, path []string) error
	visit = func(c string, path []string) error {
		switch state[c] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("components depend on each other in a cycle: %s", strings.Join(append(path, c), " → "))
		}
		state[c] = visiting
		for _, d := range deps[c] {
			if err := visit(d, append(path, c)); err != nil {
				return err
			}
		}
		state[c] = done
		order = append(order, c)
		return nil
	}
	for _, c := range wanted {
		if err := visit(c, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// ClusterValues are the business cluster's values templates see as
// .Cluster.
type ClusterValues struct {
	Name, Version string
	// APIServer is the URL nodes reach the apiserver at.
	APIServer string
	// CA is the cluster CA certificate (PEM); CAHash pins it the way
	// kubeadm does (CAHash).
	CA, CAHash            string
	DNSAddress, DNSDomain string
	PodCIDR, ServiceCIDR  string
}

// NodeValues are the host's values templates see as .Node.
type NodeValues struct {
	Name, Address, OS, OSVersion, Arch string
}

// RegistryValues say where images and artifacts come from: image and
// artifact references name Name (kok.local), which nodes reach at
// Endpoint (a site's mirror, or kok's registry).
type RegistryValues struct {
	Name, Endpoint string
}

// Values is everything a component's templates see.
type Values struct {
	Cluster  ClusterValues
	Node     NodeValues
	Registry RegistryValues
}

// ResolveFunc pins an artifact: where a host fetches it and its digest.
type ResolveFunc func(nodev1.Artifact) (agent.Artifact, error)

// Render fills in a variant's templates with values and pins its
// artifacts with resolve. A template that uses a value that does not
// exist is an error naming the file (missingkey).
func Render(c *nodev1.Component, v *nodev1.ComponentVariant, values Values, resolve ResolveFunc) (*agent.Component, error) {
	out := &agent.Component{Name: c.Spec.Component, Version: c.Spec.Version, Variant: v.Name, Disruption: c.Spec.Disruption}
	for _, a := range v.Artifacts {
		pinned, err := resolve(a)
		if err != nil {
			return nil, fmt.Errorf("component %s, variant %s, artifact %s: %w", c.Name, v.Name, a.Path, err)
		}
		out.Artifacts = append(out.Artifacts, pinned)
	}
	render := func(what, text string) (string, error) {
		t, err := template.New(what).Option("missingkey=error").Parse(text)
		if err != nil {
			return "", fmt.Errorf("component %s, variant %s, %s: %w", c.Name, v.Name, what, err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, values); err != nil {
			return "", fmt.Errorf("component %s, variant %s, %s: %w", c.Name, v.Name, what, err)
		}
		return buf.String(), nil
	}
	for _, f := range v.Files {
		path, err := render("path of file "+f.Path, f.Path)
		if err != nil {
			return nil, err
		}
		content, err := render("file "+f.Path, f.Template)
		if err != nil {
			return nil, err
		}
		out.Files = append(out.Files, agent.File{Path: path, Content: []byte(content), Mode: f.Mode})
	}
	var err error
	scripts := []struct {
		name     string
		src      string
		dst      *string
		optional bool
	}{
		{"install script", v.Scripts.Install, &out.Scripts.Install, false},
		{"check script", v.Scripts.Check, &out.Scripts.Check, false},
		{"repair script", v.Scripts.Repair, &out.Scripts.Repair, true},
		{"uninstall script", v.Scripts.Uninstall, &out.Scripts.Uninstall, false},
	}
	for _, s := range scripts {
		if s.src == "" && s.optional {
			continue
		}
		if *s.dst, err = render(s.name, s.src); err != nil {
			return nil, err
		}
	}
	for _, svc := range v.Services {
		r := nodev1.Service{Name: svc.Name, RestartOn: slices.Clone(svc.RestartOn)}
		for i, arg := range svc.Command {
			a, err := render(fmt.Sprintf("service %s argument %d", svc.Name, i), arg)
			if err != nil {
				return nil, err
			}
			r.Command = append(r.Command, a)
		}
		out.Services = append(out.Services, r)
	}
	out.ComputeHash()
	return out, nil
}

// CAHash is the pin of a CA certificate as kubeadm writes it:
// sha256:<hex of the certificate's SubjectPublicKeyInfo>.
func CAHash(caPEM []byte) (string, error) {
	block, _ := pem.Decode(caPEM)
	if block == nil {
		return "", errors.New("CA: no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("CA: %w", err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// NodeRelease is what a Machine's components that pin no version run
// while its cluster changes release.
type NodeRelease struct {
	// Version is the release to render: the cluster's, or the one the
	// Machine runs while it waits for its turn.
	Version string
	// Current is the release the Machine's components ran at its last
	// report ("" before its first).
	Current string
	// WaitsFor names the Machine whose turn comes first ("" when none);
	// Settles, when set, is how long until it has run the release long
	// enough for the next to go.
	WaitsFor string
	Settles  time.Duration
}

// NodeSettle is how long a Machine has run a new release, Ready, before
// the next Machine of its cluster moves (a Deployment's minReadySeconds):
// the kubelet restart marked the node's pods unready, and they pass their
// readiness probes again before another node's pods go through it.
const NodeSettle = 10 * time.Second

// Moving reports whether the Machine is being moved to a new release.
func (n NodeRelease) Moving() bool { return n.Current != "" && n.Current != n.Version }

// PlanNodeRelease moves a cluster's Machines to the release its control
// plane runs one at a time, in name order: a Machine moves once every
// Machine of the same cluster named before it runs the release and is
// Ready. A kubelet restart marks the node's pods unready until their
// probes pass again; restarting every node at once would leave a Service
// without endpoints. A new Machine installs the release at once; paused,
// deleting and fully pinned Machines are not waited for.
func PlanNodeRelease(m *nodev1.Machine, siblings []nodev1.Machine, release string, now time.Time) NodeRelease {
	out := NodeRelease{Version: release, Current: machineRelease(m)}
	if out.Current == "" || out.Current == release {
		return out
	}
	others := slices.Clone(siblings)
	slices.SortFunc(others, func(a, b nodev1.Machine) int { return strings.Compare(a.Name, b.Name) })
	for i := range others {
		s := &others[i]
		if s.Name >= m.Name {
			break
		}
		if s.Spec.ClusterName != m.Spec.ClusterName || s.Namespace != m.Namespace || s.Spec.Paused ||
			s.DeletionTimestamp != nil || !followsCluster(s) {
			continue
		}
		if machineRelease(s) != release || !conditions.IsTrue(s.Status.Conditions, nodev1.MachineReady) {
			out.Version, out.WaitsFor = out.Current, s.Name
			return out
		}
		if c := meta.FindStatusCondition(s.Status.Conditions, nodev1.MachineUpToDate); c == nil || c.Status != metav1.ConditionTrue ||
			now.Sub(c.LastTransitionTime.Time) < NodeSettle {
			out.Version, out.WaitsFor, out.Settles = out.Current, s.Name, NodeSettle
			if c != nil && c.Status == metav1.ConditionTrue {
				out.Settles = NodeSettle - now.Sub(c.LastTransitionTime.Time)
			}
			return out
		}
	}
	return out
}

// machineRelease is the version the Machine's unpinned components ran at
// its last report.
func machineRelease(m *nodev1.Machine) string {
	for _, ref := range m.Spec.Components {
		if ref.Version != "" {
			continue
		}
		for _, c := range m.Status.Components {
			if c.Name == ref.Name {
				return c.Version
			}
		}
	}
	return ""
}

func followsCluster(m *nodev1.Machine) bool {
	return slices.ContainsFunc(m.Spec.Components, func(ref nodev1.ComponentRef) bool { return ref.Version == "" })
}
