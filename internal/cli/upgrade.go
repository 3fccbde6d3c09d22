package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubeonkube/kok/internal/clusterctl"
)

func newUpgradeCommand(g *globalOptions) *cobra.Command {
	o := &metaOptions{localOptions: localOptions{globalOptions: g}}
	var uo clusterctl.UpgradeOptions
	var detach bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "upgrade --selector LABELS --to VERSION",
		Short: "Upgrade many business clusters: canaries, then waves, each gated on its health; halts on failures",
		Long: `Creates a ClusterUpgrade and shows its progress until it finishes (exit 0) or halts (exit 1).
Clusters at or past the target are skipped. The rollout goes on in the meta cluster if this command stops:
'kok upgrade status NAME' shows it again, 'kok upgrade pause|resume NAME' holds it.`,
		Example: `  kok upgrade --selector env=prod --to v1.34.4 --canary tier=canary --max-parallel 3`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if uo.To == "" {
				return fmt.Errorf("--to is required: a version of the catalog (kok get versions)")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			cu, err := clusterctl.StartUpgrade(cmd.Context(), c, uo)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created ClusterUpgrade %s\n", cu.Name)
			if detach {
				return nil
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return clusterctl.WatchUpgrade(ctx, c, cu.Name, cmd.OutOrStdout())
		},
	}
	o.bindClusterScoped(cmd)
	f := cmd.Flags()
	f.StringVarP(&uo.Selector, "selector", "l", "", "label selector of the KubeClusters, e.g. env=prod (empty: every cluster)")
	f.StringVar(&uo.To, "to", "", "the Kubernetes version to upgrade to")
	f.StringVar(&uo.Canary, "canary", "", "label selector of the canary clusters, upgraded alone first")
	f.Int32Var(&uo.MaxParallel, "max-parallel", 1, "clusters upgrading at once (the size of each wave)")
	f.Int32Var(&uo.FailureBudget, "failure-budget", 0, "failed clusters tolerated before the rollout halts")
	f.DurationVar(&uo.Soak, "soak", 0, "wait between waves")
	f.DurationVar(&uo.HealthTimeout, "health-timeout", 0, "time a cluster has to pass the health gate (default 10m)")
	f.StringVar(&uo.Name, "name", "", "name of the ClusterUpgrade (default: generated)")
	f.BoolVar(&detach, "detach", false, "create the rollout and return")
	f.DurationVar(&timeout, "timeout", 2*time.Hour, "how long to watch")

	so := &metaOptions{localOptions: localOptions{globalOptions: g}}
	var watch bool
	status := &cobra.Command{
		Use: "status NAME", Short: "Show a rollout (and with --watch follow it)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := so.client()
			if err != nil {
				return err
			}
			if watch {
				return clusterctl.WatchUpgrade(cmd.Context(), c, args[0], cmd.OutOrStdout())
			}
			return clusterctl.PrintUpgrade(cmd.Context(), c, args[0], cmd.OutOrStdout())
		},
	}
	so.bindClusterScoped(status)
	status.Flags().BoolVarP(&watch, "watch", "w", false, "follow until it finishes or halts")
	cmd.AddCommand(status, pauseCommand(g, "pause", true), pauseCommand(g, "resume", false))
	return cmd
}

func pauseCommand(g *globalOptions, verb string, paused bool) *cobra.Command {
	o := &metaOptions{localOptions: localOptions{globalOptions: g}}
	cmd := &cobra.Command{
		Use: verb + " NAME", Short: "Set spec.paused of a rollout to " + fmt.Sprint(paused) + " (clusters already upgrading go on)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			if err := clusterctl.PauseUpgrade(cmd.Context(), c, args[0], paused); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ClusterUpgrade %s: paused=%t\n", args[0], paused)
			return nil
		},
	}
	o.bindClusterScoped(cmd)
	return cmd
}
