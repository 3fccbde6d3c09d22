package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/local/build"
	"github.com/kubeonkube/kok/internal/local/versions"
)

func newBuildCommand(o *globalOptions) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build the Kubernetes, etcd, CoreDNS and registry binaries kok runs (cached)",
		Long: `Build compiles kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
kube-proxy, kubectl, etcd, CoreDNS, the CNCF Distribution registry, flanneld, metrics-server,
konnectivity's proxy server and agent, and agnhost (Kubernetes' test server) from the Go
module proxy at the versions kok pins,
into the cache directory. Finished builds are reused; 'kok up' calls this as needed.
With --all every pinned version is built (the tests need two Kubernetes minors), and agnhost.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := o.builder()
			start := time.Now()
			ctx := cmd.Context()
			// What kok up needs comes first; with --all, the test-only
			// builds and the older releases follow.
			products, err := local.UpProducts(ctx, b.Go, versions.DefaultKubernetes(), versions.DefaultEtcd())
			if err != nil {
				return err
			}
			if all {
				agnhost, err := build.Agnhost(ctx, b.Go, versions.DefaultKubernetes())
				if err != nil {
					return err
				}
				products = append(products, agnhost)
				for _, v := range versions.Kubernetes[1:] {
					kp, err := build.Kubernetes(ctx, b.Go, v)
					if err != nil {
						return err
					}
					products = append(products, kp)
				}
				for _, v := range versions.Etcd[1:] {
					products = append(products, build.Etcd(v))
				}
			}
			for _, p := range products {
				if _, err := b.Ensure(ctx, p); err != nil {
					return err
				}
			}
			fmt.Fprintf(os.Stdout, "all binaries ready under %s (%s)\n", b.CacheDir, time.Since(start).Round(time.Second))
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "build every pinned Kubernetes and etcd version, not only the defaults")
	return cmd
}

func newEnvtestAssetsCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "envtest-assets",
		Short: "Print a KUBEBUILDER_ASSETS directory (kube-apiserver, etcd, kubectl) built by kok",
		Long: `envtest-assets builds the default Kubernetes and etcd versions if needed and prints a
directory holding kube-apiserver, etcd and kubectl, for controller-runtime's envtest:
  KUBEBUILDER_ASSETS=$(kok envtest-assets) go test ./...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := o.builder()
			b.Progress = os.Stderr
			kv, ev := versions.DefaultKubernetes(), versions.DefaultEtcd()
			kp, err := build.Kubernetes(cmd.Context(), b.Go, kv)
			if err != nil {
				return err
			}
			kdir, err := b.Ensure(cmd.Context(), kp)
			if err != nil {
				return err
			}
			edir, err := b.Ensure(cmd.Context(), build.Etcd(ev))
			if err != nil {
				return err
			}
			dir := filepath.Join(b.CacheDir, "envtest", kv+"-"+ev)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			links := map[string]string{
				"kube-apiserver": filepath.Join(kdir, "kube-apiserver"),
				"kubectl":        filepath.Join(kdir, "kubectl"),
				"etcd":           filepath.Join(edir, "etcd"),
			}
			for name, target := range links {
				p := filepath.Join(dir, name)
				_ = os.Remove(p)
				if err := os.Symlink(target, p); err != nil {
					return err
				}
			}
			fmt.Fprintln(cmd.OutOrStdout(), dir)
			return nil
		},
	}
}
