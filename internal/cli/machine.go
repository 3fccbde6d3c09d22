package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/local/hosts"
)

// machineOptions are the flags of kok machine create/delete/list.
type machineOptions struct {
	localOptions
	output  string
	timeout time.Duration
	cluster string
	// applyMachine, when set, makes `kok machine create NAME --cluster C`
	// also apply the Machine that names the host in business cluster C.
	// Until it is, --cluster is refused before anything is created.
	applyMachine func(ctx context.Context, cmd *cobra.Command, cluster string, h *hosts.Host) error
}

func (o *machineOptions) bindOutput(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.output, "output", "o", "text", "output format: text or json")
}

func (o *machineOptions) checkOutput() error {
	if o.output != "text" && o.output != "json" {
		return fmt.Errorf("--output %q: use text or json", o.output)
	}
	return nil
}

// guardCIDR is the guarded range of the state directory's meta cluster, or
// the default one when there is none.
// metaConfig reaches the running meta cluster of the state directory.
func (o *machineOptions) metaConfig() (*rest.Config, error) {
	c, err := local.LoadConfig(o.stateDir)
	if err != nil {
		return nil, fmt.Errorf("no meta cluster in %s (kok up): %w", o.stateDir, err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 10 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := cs.Discovery().ServerVersion(); err != nil {
		return nil, fmt.Errorf("the meta cluster in %s does not answer: %w", o.stateDir, err)
	}
	return cfg, nil
}

func guardCIDR(stateDir string) (string, error) {
	c, err := local.LoadConfig(stateDir)
	if errors.Is(err, os.ErrNotExist) {
		return local.DefaultConfig().GuardCIDR, nil
	}
	if err != nil {
		return "", err
	}
	return c.GuardCIDR, nil
}

// machineView is what a Machine needs of a host (kok machine create/list
// -o json).
type machineView struct {
	Name           string `json:"name"`
	Address        string `json:"address"`
	Port           int    `json:"port"`
	User           string `json:"user"`
	HostKey        string `json:"hostKey"`
	PrivateKeyPath string `json:"privateKeyPath"`
	Running        bool   `json:"running"`
	InitPID        int    `json:"initPID,omitempty"`
	// Result of kok machine create: created, restarted or already running.
	Result string `json:"result,omitempty"`
}

func viewOf(h *hosts.Host) machineView {
	return machineView{Name: h.Name, Address: h.Address, Port: h.Port, User: h.User, HostKey: h.HostKey,
		PrivateKeyPath: h.PrivateKeyPath, Running: h.Running(), InitPID: h.InitPID}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newMachineCommand(g *globalOptions) *cobra.Command {
	m := &cobra.Command{
		Use:   "machine",
		Short: "Local hosts on this machine that Machines can name (reached over SSH, as VMs)",
		Long: `A local host is a Linux host made of namespaces on this machine: its own address on
the bridge ` + hosts.Bridge + ` (` + hosts.Subnet + `), hostname, process tree, /etc (an overlay of the
machine's), /var, /usr/local, /root, /opt, /tmp, cgroups (/kok-hosts/NAME) and an sshd
that lets in only root with the key pair made for it. The machine operator reaches
it only over SSH, as it would a VM.`,
	}
	m.AddCommand(newMachineCreateCommand(g), newMachineDeleteCommand(g), newMachineListCommand(g), newMachineInitCommand())
	return m
}

func newMachineCreateCommand(g *globalOptions) *cobra.Command {
	o := &machineOptions{localOptions: localOptions{globalOptions: g}}
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a local host and start it (again, if its init is gone); prints what a Machine needs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			cidr, err := guardCIDR(o.stateDir)
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			progress := out
			if o.output == "json" {
				progress = cmd.ErrOrStderr()
			}
			start := time.Now()
			h, res, err := hosts.Create(cmd.Context(), hosts.Options{
				StateDir: o.stateDir, Name: args[0], Self: self, GuardCIDR: cidr,
				Guard:   func(ctx context.Context) error { return local.EnsureGuard(ctx, cidr) },
				Timeout: o.timeout, Progress: progress,
			})
			if err != nil {
				return err
			}
			took := time.Since(start)
			if o.cluster != "" {
				if err := o.applyMachine(cmd.Context(), cmd, o.cluster, h); err != nil {
					return err
				}
			}
			if o.output == "json" {
				v := viewOf(h)
				v.Result = string(res)
				return writeJSON(out, v)
			}
			fmt.Fprintf(out, "host %s %s in %.2fs; sshd answers at %s\n", h.Name, res, took.Seconds(), h.SSHAddress())
			fmt.Fprintf(out, "  address      %s\n  port         %d\n  user         %s\n  host key     %s\n  private key  %s\n",
				h.Address, h.Port, h.User, h.HostKey, h.PrivateKeyPath)
			fmt.Fprintf(out, "log in with:\n  ssh -i %s -o UserKnownHostsFile=%s/known_hosts %s@%s\n", h.PrivateKeyPath, h.Dir, h.User, h.Address)
			return nil
		},
	}
	o.bind(cmd)
	o.bindOutput(cmd)
	cmd.Flags().DurationVar(&o.timeout, "timeout", 20*time.Second, "how long to wait for the host's sshd to answer")
	cmd.Flags().StringVar(&o.cluster, "cluster", "", "also apply a Machine for the host in this business cluster (its namespace is the cluster's name): the machine operator installs containerd, the kubelet and kok-agent on it over SSH and joins it as a node")
	o.applyMachine = func(ctx context.Context, cmd *cobra.Command, cluster string, h *hosts.Host) error {
		cfg, err := o.metaConfig()
		if err != nil {
			return err
		}
		m, err := local.ApplyMachine(ctx, cfg, h, cluster, cluster)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "Machine %s/%s applied: it joins %s as node %s (watch: kok kubectl get machines -n %s)\n",
			m.Namespace, m.Name, cluster, m.Name, m.Namespace)
		return nil
	}
	return cmd
}

func newMachineDeleteCommand(g *globalOptions) *cobra.Command {
	o := &machineOptions{localOptions: localOptions{globalOptions: g}}
	cmd := &cobra.Command{
		Use:   "delete NAME...",
		Short: "Stop local hosts and remove everything of them (a missing host is not an error)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range args {
				h, err := hosts.Load(o.stateDir, name)
				existed := err == nil
				start := time.Now()
				// A Machine that names the host goes first, so its node is
				// drained and deleted; without a running meta cluster
				// there is none to ask.
				if cfg, cerr := o.metaConfig(); existed && cerr == nil {
					if err := local.DeleteMachinesOf(cmd.Context(), cfg, h, cmd.ErrOrStderr()); err != nil {
						return err
					}
				}
				if err := hosts.Delete(cmd.Context(), o.stateDir, name); err != nil {
					return err
				}
				if existed {
					fmt.Fprintf(cmd.OutOrStdout(), "host %s deleted in %.2fs\n", name, time.Since(start).Seconds())
				}
			}
			return nil
		},
	}
	o.bind(cmd)
	return cmd
}

func newMachineListCommand(g *globalOptions) *cobra.Command {
	o := &machineOptions{localOptions: localOptions{globalOptions: g}}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the local hosts of the state directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			hs, err := hosts.List(o.stateDir)
			if err != nil {
				return err
			}
			if o.output == "json" {
				views := make([]machineView, 0, len(hs))
				for _, h := range hs {
					views = append(views, viewOf(h))
				}
				return writeJSON(cmd.OutOrStdout(), views)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tADDRESS\tSTATUS\tINIT PID\tAGE\tHOST KEY")
			for _, h := range hs {
				status, pid := "stopped", "-"
				if h.Running() {
					status, pid = "running", fmt.Sprint(h.InitPID)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.Address, status, pid, duration.HumanDuration(time.Since(h.Created)), h.HostKey)
			}
			return w.Flush()
		},
	}
	o.bind(cmd)
	o.bindOutput(cmd)
	return cmd
}

// newMachineInitCommand is the host's init (started by kok machine create).
func newMachineInitCommand() *cobra.Command {
	var o hosts.InitOptions
	cmd := &cobra.Command{
		Use:    "init",
		Short:  "The init of a local host (PID 1 of its namespaces; started by kok machine create)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return hosts.Init(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&o.Name, "name", "", "the host's name")
	cmd.Flags().StringVar(&o.Dir, "dir", "", "the host's state directory")
	cmd.Flags().BoolVar(&o.PID1, "pid1", false, "run as PID 1 of the host's namespaces")
	return cmd
}
