package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/local/build"
)

type localOptions struct {
	*globalOptions
	stateDir string
	binDir   string
}

func (o *localOptions) bind(cmd *cobra.Command) {
	def := os.Getenv("KOK_STATE_DIR")
	if def == "" {
		def = local.DefaultConfig().StateDir
	}
	cmd.Flags().StringVar(&o.stateDir, "state-dir", def, "state directory of the local meta cluster (env KOK_STATE_DIR)")
}

func (o *localOptions) binaries() local.Binaries {
	dir := o.binDir
	if dir == "" {
		if exe, err := os.Executable(); err == nil {
			dir = filepath.Dir(exe)
		}
	}
	return local.Binaries{Manager: filepath.Join(dir, "kok-manager"), Pause: filepath.Join(dir, "kok-pause"), Agent: filepath.Join(dir, "kok-agent"),
		CNI: filepath.Join(dir, "kok-cni")}
}

func newUpCommand(g *globalOptions) *cobra.Command {
	o := &localOptions{globalOptions: g}
	var keep, demo bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Bring up the local meta cluster (builds what is missing)",
		Long: `up runs a real single-node Kubernetes meta cluster on this machine: etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet and
kube-proxy as supervised processes, CoreDNS, kok-manager and kok's registry as
pods. The registry (http://10.200.0.1:5000) receives every image kok builds and
the binaries nodes install ('kok registry list'). Binaries are
built from the Go module proxy on first use and cached; images are assembled
locally. Running it again on a running cluster only reports it; after a crash or
a reboot it recovers the cluster from its state directory. It ends by creating
a demo business cluster (a KubeCluster) and printing the kubectl line that uses it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			cfg := local.DefaultConfig()
			cfg.StateDir, cfg.CacheDir = o.stateDir, o.cacheDir
			_, err = local.Up(cmd.Context(), local.UpOptions{
				Config: cfg, Bins: o.binaries(), Builder: o.builder(), Self: self,
				Out: cmd.OutOrStdout(), KeepOnFailure: keep, Timeout: timeout, Demo: demo,
			})
			return err
		},
	}
	o.bind(cmd)
	cmd.Flags().StringVar(&o.binDir, "bin-dir", "", "directory holding kok-manager and kok-pause (default: beside kok)")
	cmd.Flags().BoolVar(&demo, "demo", true, "end by creating the demo business cluster "+local.DemoCluster)
	cmd.Flags().BoolVar(&keep, "keep-on-failure", false, "leave a cluster that failed to come up running, for inspection")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for the cluster to become ready")
	return cmd
}

func newDownCommand(g *globalOptions) *cobra.Command {
	o := &localOptions{globalOptions: g}
	var purge bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop the local meta cluster (and with --purge delete its state)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return local.Down(cmd.Context(), local.DownOptions{StateDir: o.stateDir, Purge: purge, Builder: o.builder(), Out: cmd.OutOrStdout()})
		},
	}
	o.bind(cmd)
	cmd.Flags().BoolVar(&purge, "purge", false, "also delete the state directory: etcd data, certificates, logs")
	return cmd
}

func newKubectlCommand(g *globalOptions) *cobra.Command {
	o := &localOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:                "kubectl [args...]",
		Short:              "Run the kubectl that matches the meta cluster, against it",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.stateDir = os.Getenv("KOK_STATE_DIR")
			if o.stateDir == "" {
				o.stateDir = local.DefaultConfig().StateDir
			}
			c, err := local.LoadConfig(o.stateDir)
			if err != nil {
				return fmt.Errorf("no kok meta cluster in %s: %w", o.stateDir, err)
			}
			kube := filepath.Join(o.builder().Dir("kubernetes", c.KubernetesVersion), build.KubeBinary)
			env := os.Environ()
			if os.Getenv("KUBECONFIG") == "" {
				env = append(env, "KUBECONFIG="+c.Kubeconfig())
			}
			return syscall.Exec(kube, append([]string{"kubectl"}, args...), env)
		},
	}
	return cmd
}

// stateDirCommand is a command that acts on one state directory.
func stateDirCommand(g *globalOptions, use, short string, hidden bool, run func(cmd *cobra.Command, o *localOptions) error) *cobra.Command {
	o := &localOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use: use, Short: short, Hidden: hidden, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return run(cmd, o) },
	}
	o.bind(cmd)
	return cmd
}

func newStatusCommand(g *globalOptions) *cobra.Command {
	return stateDirCommand(g, "status", "Show what of the local meta cluster runs", false, func(cmd *cobra.Command, o *localOptions) error {
		return local.PrintStatus(cmd.Context(), o.stateDir, cmd.OutOrStdout())
	})
}

func newSuperviseCommand(g *globalOptions) *cobra.Command {
	return stateDirCommand(g, "supervise", "Run and watch the meta cluster's processes (started by kok up)", true, func(cmd *cobra.Command, o *localOptions) error {
		return local.Supervise(cmd.Context(), o.stateDir, o.builder())
	})
}

func newLocalStorageCommand(g *globalOptions) *cobra.Command {
	return stateDirCommand(g, "local-storage", "Provision hostPath volumes for the kok-local StorageClass (run by the supervisor)", true,
		func(cmd *cobra.Command, o *localOptions) error {
			return local.RunLocalStorage(cmd.Context(), o.stateDir)
		})
}
