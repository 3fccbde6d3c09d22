// Package addon is the addon operator: it keeps each ClusterAddon's
// objects in its business cluster at their final state (rendered from the
// Addon catalog with the cluster's values, server-side applied, put back
// when deleted or edited) and makes a KubeCluster's ClusterAddons from its
// spec.addons.
package addon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/template"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	addonv1 "github.com/kubeonkube/kok/api/addon/v1alpha1"
	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/kube"
)

// Values are what an addon's templates see.
type Values struct {
	Cluster ClusterValues
	// Registry prefixes every image (the one registry setting).
	Registry string
	// Values: the Addon's defaults with the cluster's values over them.
	Values map[string]any
}

// ClusterValues describe the business cluster.
type ClusterValues struct {
	Name string
	// Version is the release the control plane runs; Minor its "v1.34".
	Version, Minor        string
	PodCIDR, ServiceCIDR  string
	DNSAddress, DNSDomain string
	// APIServerHost and APIServerPort: where nodes reach the apiserver
	// (pods too, before kube-proxy serves the kubernetes Service).
	APIServerHost string
	APIServerPort int
	// KonnectivityPort: where konnectivity agents reach the proxy servers
	// beside the apiservers (at APIServerHost).
	KonnectivityPort int
}

// Labels kok puts on every object of an addon.
const (
	LabelAddon   = "addon.kok.dev/addon"
	LabelCluster = "addon.kok.dev/cluster"
	// KeepAnnotation on an object in a business cluster lists the fields
	// (dot paths, comma-separated: "spec.replicas") kok leaves to users;
	// "*" leaves the whole object alone.
	KeepAnnotation = "addon.kok.dev/keep"
)

// ClusterValuesFor derives the template values of kc, reached at server.
func ClusterValuesFor(kc *clusterv1.KubeCluster, server string) (ClusterValues, error) {
	host, port, err := kube.ServerHostPort(server)
	if err != nil {
		return ClusterValues{}, err
	}
	n := kc.Spec.Network
	return ClusterValues{Name: kc.Name, Version: kc.Status.Version, Minor: minorOf(kc.Status.Version),
		PodCIDR: n.PodCIDR, ServiceCIDR: n.ServiceCIDR, DNSAddress: kube.NthIP(n.ServiceCIDR, 10), DNSDomain: n.DNSDomain,
		APIServerHost: host, APIServerPort: port, KonnectivityPort: clusterv1.KonnectivityPort}, nil
}

// minorOf is "v1.34" of "v1.34.4".
func minorOf(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

// SelectAddon picks the Addon a cluster running minor gets: the pinned
// version, which must support it, or else the newest that does.
func SelectAddon(catalog []addonv1.Addon, name, pinned, minor string) (*addonv1.Addon, error) {
	var best *addonv1.Addon
	var known []string
	for i := range catalog {
		a := &catalog[i]
		if a.Spec.Addon != name {
			continue
		}
		known = append(known, a.Spec.Version)
		supports := slices.Contains(a.Spec.KubernetesVersions, minor)
		if pinned != "" {
			if a.Spec.Version != pinned {
				continue
			}
			if !supports {
				return nil, fmt.Errorf("%s %s supports Kubernetes %s, not %s: pick another version or leave it empty",
					name, pinned, strings.Join(a.Spec.KubernetesVersions, ", "), minor)
			}
			return a, nil
		}
		if supports && (best == nil || CompareVersions(a.Spec.Version, best.Spec.Version) > 0) {
			best = a
		}
	}
	switch {
	case len(known) == 0:
		return nil, fmt.Errorf("the catalog has no addon %s: apply an Addon named %s-<version>", name, name)
	case pinned != "":
		return nil, fmt.Errorf("the catalog has no %s %s (it has %s)", name, pinned, strings.Join(known, ", "))
	case best == nil:
		return nil, fmt.Errorf("no version of %s supports Kubernetes %s (the catalog has %s)", name, minor, strings.Join(known, ", "))
	}
	return best, nil
}

// CompareVersions orders addon versions by their numeric dot-separated
// parts ("v0.28.10" > "v0.28.9"); a part that is not a number compares as
// text.
func CompareVersions(a, b string) int {
	pa, pb := strings.Split(strings.TrimPrefix(a, "v"), "."), strings.Split(strings.TrimPrefix(b, "v"), ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y string
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		nx, ex := strconv.Atoi(x)
		ny, ey := strconv.Atoi(y)
		switch {
		case ex == nil && ey == nil && nx != ny:
			return cmpInt(nx, ny)
		case (ex != nil || ey != nil) && x != y:
			return strings.Compare(x, y)
		}
	}
	return 0
}

func cmpInt(a, b int) int {
	if a < b {
		return -1
	}
	return 1
}

// MergeValues lays overrides over defaults key by key (maps merge
// recursively; anything else is replaced).
func MergeValues(defaults, overrides *apiextensionsv1.JSON) (map[string]any, error) {
	out := map[string]any{}
	for _, j := range []*apiextensionsv1.JSON{defaults, overrides} {
		if j == nil || len(j.Raw) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(j.Raw, &m); err != nil {
			return nil, fmt.Errorf("values must be an object: %w", err)
		}
		merge(out, m)
	}
	return out, nil
}

func merge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// Render fills a's templates with v and returns its objects, each
// labelled as the addon's.
func Render(a *addonv1.Addon, v Values) ([]*unstructured.Unstructured, error) {
	t, err := template.New(a.Name).Option("missingkey=error").Funcs(template.FuncMap{
		"image": func(repo, tag string) string { return kube.Image(v.Registry, repo, tag) },
		"quote": strconv.Quote,
		"json": func(x any) (string, error) {
			b, err := json.Marshal(x)
			return string(b), err
		},
	}).Parse(a.Spec.Manifests)
	if err != nil {
		return nil, fmt.Errorf("addon %s: the template does not parse: %w", a.Name, err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, v); err != nil {
		return nil, fmt.Errorf("addon %s: %w", a.Name, err)
	}
	objs, err := kube.Decode(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("addon %s: the rendered manifests: %w", a.Name, err)
	}
	seen := map[string]bool{}
	for _, o := range objs {
		if o.GetKind() == "" || o.GetName() == "" {
			return nil, fmt.Errorf("addon %s: a rendered object has no kind or name", a.Name)
		}
		key := Key(o)
		if seen[key] {
			return nil, fmt.Errorf("addon %s renders %s twice", a.Name, key)
		}
		seen[key] = true
		labels := o.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[LabelAddon] = a.Spec.Addon
		labels["app.kubernetes.io/managed-by"] = "kok"
		o.SetLabels(labels)
	}
	return objs, nil
}

// Key identifies an object: kind, namespace and name.
func Key(o *unstructured.Unstructured) string {
	return o.GetAPIVersion() + "/" + o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
}

// Keep removes from obj the fields its live copy's KeepAnnotation leaves
// to users; skip reports "*" (leave the object alone).
func Keep(obj *unstructured.Unstructured, annotation string) (skip bool) {
	for _, p := range strings.Split(annotation, ",") {
		p = strings.TrimSpace(p)
		switch p {
		case "":
		case "*":
			return true
		default:
			unstructured.RemoveNestedField(obj.Object, strings.Split(p, ".")...)
		}
	}
	return false
}
