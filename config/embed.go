// Package config embeds kok's install manifests (CRDs, RBAC, manager) so the
// kok binary can install them without a source tree.
package config

import (
	"embed"
	"io/fs"
	"path"
	"sort"
	"strings"
)

//go:embed crd/bases rbac manager webhook catalog components addons
var files embed.FS

// ManagerImagePlaceholder is the image name the manager manifest uses; kok
// replaces it with the image it built (kustomize's images: does the same).
const ManagerImagePlaceholder = "kok-manager:latest"

// RegistryEndpointArg is the manager's registry endpoint argument, empty in
// the manifests; an installer appends the URL.
const RegistryEndpointArg = "- --registry-endpoint="

// Manifests returns the install manifests, CRDs first and the version
// catalog last, as one YAML stream.
// kustomization.yaml files are left out.
func Manifests() ([]byte, error) {
	var names []string
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".yaml") && path.Base(p) != "kustomization.yaml" {
			names = append(names, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	order := func(p string) int {
		switch {
		case strings.HasPrefix(p, "crd/"):
			return 0
		case strings.HasPrefix(p, "manager/"):
			return 1 // the namespace lives here
		case strings.HasPrefix(p, "catalog/"), strings.HasPrefix(p, "components/"), strings.HasPrefix(p, "addons/"):
			return 3 // custom resources, once their CRDs are served
		default:
			return 2
		}
	}
	sort.Slice(names, func(i, j int) bool {
		if order(names[i]) != order(names[j]) {
			return order(names[i]) < order(names[j])
		}
		return names[i] < names[j]
	})
	var out []byte
	for _, n := range names {
		data, err := files.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, "---\n"...)
		out = append(out, data...)
		out = append(out, '\n')
	}
	return out, nil
}
