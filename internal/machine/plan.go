// Package machine is the machine operator (in progress): it turns a
// Machine and the Components it asks for into what runs on the host. This
// file holds its pure planning — which variant of a component fits a
// host, the order components install in, and each component rendered
// with the cluster's and the host's values, hashed so that a change (and
// only a change) is rolled out.
package machine

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/template"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
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
	// CAHash pins the cluster CA the way kubeadm does (CAHash).
	CAHash                string
	DNSAddress, DNSDomain string
	PodCIDR, ServiceCIDR  string
}

// NodeValues are the host's values templates see as .Node.
type NodeValues struct {
	Name, Address, OS, OSVersion, Arch string
}

// Values is everything a component's templates see.
type Values struct {
	Cluster ClusterValues
	Node    NodeValues
	// Registry is the one registry every image and artifact comes from.
	Registry string
}

// Rendered is a component's variant with every template filled in: what
// goes on the host, and the hash that says whether it changed.
type Rendered struct {
	Component, Version, Variant string
	Disruption                  nodev1.Disruption
	Artifacts                   []nodev1.Artifact
	// Files by path, rendered.
	Files   []RenderedFile
	Scripts nodev1.Scripts
	// Services with their commands rendered.
	Services []nodev1.Service
	// Hash covers all of the above.
	Hash string
}

// RenderedFile is a file's final content.
type RenderedFile struct {
	Path    string
	Content []byte
	Mode    string
}

// Render fills in a variant's templates with values. A template that uses
// a value that does not exist is an error naming the file (missingkey).
func Render(c *nodev1.Component, v *nodev1.ComponentVariant, values Values) (*Rendered, error) {
	out := &Rendered{Component: c.Spec.Component, Version: c.Spec.Version, Variant: v.Name, Disruption: c.Spec.Disruption,
		Artifacts: slices.Clone(v.Artifacts)}
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
		content, err := render("file "+f.Path, f.Template)
		if err != nil {
			return nil, err
		}
		out.Files = append(out.Files, RenderedFile{Path: f.Path, Content: []byte(content), Mode: f.Mode})
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
	out.Hash = hashOf(out)
	return out, nil
}

func hashOf(r *Rendered) string {
	data, _ := json.Marshal(struct {
		Component, Version string
		Artifacts          []nodev1.Artifact
		Files              []RenderedFile
		Scripts            nodev1.Scripts
		Services           []nodev1.Service
	}{r.Component, r.Version, r.Artifacts, r.Files, r.Scripts, r.Services})
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ServicesToRestart names the services of next whose inputs differ from
// prev: a service restarts when a path in its RestartOn (every artifact
// and file of the variant when empty) changed, or its command did. A
// component seen for the first time restarts every service.
func ServicesToRestart(prev, next *Rendered) []string {
	if prev == nil {
		var all []string
		for _, s := range next.Services {
			all = append(all, s.Name)
		}
		return all
	}
	changed := map[string]bool{}
	old := map[string]string{}
	for _, a := range prev.Artifacts {
		old[a.Path] = a.Digest + a.Mode
	}
	for _, f := range prev.Files {
		old[f.Path] = string(f.Content) + f.Mode
	}
	seen := map[string]bool{}
	for _, a := range next.Artifacts {
		seen[a.Path] = true
		changed[a.Path] = old[a.Path] != a.Digest+a.Mode
	}
	for _, f := range next.Files {
		seen[f.Path] = true
		changed[f.Path] = old[f.Path] != string(f.Content)+f.Mode
	}
	for p := range old {
		if !seen[p] {
			changed[p] = true // removed
		}
	}
	prevCmd := map[string][]string{}
	for _, s := range prev.Services {
		prevCmd[s.Name] = s.Command
	}
	var out []string
	for _, s := range next.Services {
		restart := !slices.Equal(prevCmd[s.Name], s.Command)
		paths := s.RestartOn
		if len(paths) == 0 {
			for p := range changed {
				paths = append(paths, p)
			}
		}
		for _, p := range paths {
			restart = restart || changed[p]
		}
		if restart {
			out = append(out, s.Name)
		}
	}
	return out
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
