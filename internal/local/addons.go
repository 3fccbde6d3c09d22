package local

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"net"
	"text/template"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kokconfig "github.com/kubeonkube/kok/config"
	"github.com/kubeonkube/kok/internal/kube"
)

//go:embed addons/coredns.yaml
var corednsManifest string

//go:embed addons/registry.yaml
var registryManifest string

// installAddons applies cluster DNS, kok itself, with the kok-manager image
// of the binary bins.Manager, and kok's registry.
func installAddons(ctx context.Context, cfg *rest.Config, c *Config, bins Binaries) error {
	cl, err := client.New(cfg, client.Options{})
	if err != nil {
		return err
	}
	if err := applyCoreDNS(ctx, cl, c.DNSDomain, c.DNSServiceIP()); err != nil {
		return err
	}
	if err := applyKok(ctx, cl, bins.Manager, "http://"+c.RegistryAddress()); err != nil {
		return err
	}
	return applyRegistry(ctx, cl, c)
}

// applyRegistry applies kok's registry (kok-system/kok-registry), listening
// on c.RegistryAddress() and storing into c.RegistryDir().
func applyRegistry(ctx context.Context, cl client.Client, c *Config) error {
	manifests, err := renderRegistry(c)
	if err != nil {
		return err
	}
	if err := retryApply(ctx, cl, manifests); err != nil {
		return fmt.Errorf("installing kok-registry: %w", err)
	}
	return nil
}

// renderRegistry renders the registry's manifests. The pod template carries
// a hash of everything rendered, so a changed configuration restarts it.
func renderRegistry(c *Config) ([]byte, error) {
	tmpl, err := template.New("registry").Parse(registryManifest)
	if err != nil {
		return nil, err
	}
	values := map[string]any{"Addr": c.RegistryAddress(), "Port": c.RegistryPort, "Dir": c.RegistryDir(),
		"Image": RegistryImage(), "ConfigHash": ""}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, values); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(out.Bytes())
	values["ConfigHash"] = hex.EncodeToString(sum[:8])
	out.Reset()
	if err := tmpl.Execute(&out, values); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// applyCoreDNS applies CoreDNS serving domain at the Service address ip.
func applyCoreDNS(ctx context.Context, cl client.Client, domain string, ip net.IP) error {
	var dns bytes.Buffer
	tmpl := template.Must(template.New("coredns").Parse(corednsManifest))
	if err := tmpl.Execute(&dns, map[string]string{"Domain": domain, "Image": CoreDNSImage(), "ClusterIP": ip.String()}); err != nil {
		return err
	}
	if err := retryApply(ctx, cl, dns.Bytes()); err != nil {
		return fmt.Errorf("installing CoreDNS: %w", err)
	}
	return nil
}

// applyKok applies kok's manifests, running kok-manager from the image of
// managerBin that only this node's containerd holds.
func applyKok(ctx context.Context, cl client.Client, managerBin, registryEndpoint string) error {
	manifests, err := kokconfig.Manifests()
	if err != nil {
		return err
	}
	ref, err := ManagerImage(managerBin)
	if err != nil {
		return err
	}
	manifests = bytes.ReplaceAll(manifests, []byte(kokconfig.ManagerImagePlaceholder), []byte(ref))
	// Hosts reach kok's registry at the node address (plain HTTP inside the
	// guarded range).
	manifests = bytes.ReplaceAll(manifests, []byte(kokconfig.RegistryEndpointArg), []byte(kokconfig.RegistryEndpointArg+registryEndpoint))
	// The image exists only in this node's containerd.
	manifests = bytes.ReplaceAll(manifests, []byte("imagePullPolicy: IfNotPresent"), []byte("imagePullPolicy: Never"))
	if err := retryApply(ctx, cl, manifests); err != nil {
		return fmt.Errorf("installing kok: %w", err)
	}
	return nil
}

// retryApply applies manifests, retrying every 500 ms while the apiserver is
// still settling (default RBAC, new CRDs not yet served), for as long as ctx
// lasts; then it returns the last error.
func retryApply(ctx context.Context, cl client.Client, manifests []byte) error {
	var last error
	return poll(ctx, 500*time.Millisecond, 0, func(ctx context.Context) (bool, error) {
		last = kube.ApplyManifests(ctx, cl, manifests)
		return last == nil, nil
	}, func() error { return last })
}
