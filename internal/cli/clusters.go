package cli

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	addonv1 "github.com/kubeonkube/kok/api/addon/v1alpha1"
	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/clusterctl"
	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/manager"
)

// metaOptions reach the meta cluster: --kubeconfig, else $KUBECONFIG, else
// the local meta cluster of --state-dir.
type metaOptions struct {
	localOptions
	kubeconfig string
	namespace  string
}

func (o *metaOptions) bind(cmd *cobra.Command) {
	o.bindClusterScoped(cmd)
	cmd.Flags().StringVarP(&o.namespace, "namespace", "n", "", "namespace of the cluster")
}

// bindClusterScoped binds the flags of a command about cluster-scoped
// objects (no --namespace).
func (o *metaOptions) bindClusterScoped(cmd *cobra.Command) {
	o.localOptions.bind(cmd)
	cmd.Flags().StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the meta cluster (default: $KUBECONFIG, else the local meta cluster's)")
}

func (o *metaOptions) client() (client.Client, error) {
	path := o.kubeconfig
	if path == "" {
		c, err := local.LoadConfig(o.stateDir)
		if err != nil {
			return nil, fmt.Errorf("no meta cluster: pass --kubeconfig, set KUBECONFIG, or run 'kok up' (%w)", err)
		}
		path = c.Kubeconfig()
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: manager.Scheme()})
}

func newCreateCommand(g *globalOptions) *cobra.Command {
	create := &cobra.Command{Use: "create", Short: "Create a business cluster"}
	o := &metaOptions{localOptions: localOptions{globalOptions: g}}
	var co clusterctl.CreateOptions
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "cluster NAME",
		Short: "Create a KubeCluster (in a namespace of its own name unless -n says otherwise) and wait until it serves",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			co.Name, co.Namespace = args[0], o.namespace
			kc, err := clusterctl.Create(ctx, c, co)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "created KubeCluster %s/%s (Kubernetes %s)\n", kc.Namespace, kc.Name, kc.Spec.Version)
			if !wait {
				return nil
			}
			if err := clusterctl.Wait(ctx, c, kc, out); err != nil {
				return err
			}
			fmt.Fprintf(out, "use it:\n  kok get kubeconfig %s -n %s > %s.kubeconfig\n  kubectl --kubeconfig %s.kubeconfig get ns\n",
				kc.Name, kc.Namespace, kc.Name, kc.Name)
			return nil
		},
	}
	o.bind(cmd)
	cmd.Flags().StringVar(&co.Version, "version", "", "Kubernetes version from the catalog (default: the newest; kok get versions lists them)")
	cmd.Flags().Int32Var(&co.Replicas, "replicas", 1, "replicas of each control-plane component")
	cmd.Flags().Int32Var(&co.EtcdReplicas, "etcd-replicas", 1, "members of the cluster's etcd (1, 3, 5 or 7)")
	cmd.Flags().BoolVar(&wait, "wait", true, "wait until the cluster is Ready")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait")
	create.AddCommand(cmd)
	return create
}

func newGetCommand(g *globalOptions) *cobra.Command {
	get := &cobra.Command{Use: "get", Short: "Show business clusters, their kubeconfigs and the version catalog"}

	lo := &metaOptions{localOptions: localOptions{globalOptions: g}}
	var output, selector string
	list := &cobra.Command{
		Use: "clusters", Aliases: []string{"cluster"}, Short: "List KubeClusters (all namespaces unless -n)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lo.client()
			if err != nil {
				return err
			}
			sel, err := labels.Parse(selector)
			if err != nil {
				return fmt.Errorf("--selector: %w", err)
			}
			var l clusterv1.KubeClusterList
			if err := c.List(cmd.Context(), &l, client.InNamespace(lo.namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			if output == "wide" {
				return printClustersWide(cmd.Context(), c, w, l.Items, lo.namespace)
			}
			fmt.Fprintln(w, "NAMESPACE\tNAME\tVERSION\tINSTALLED\tPHASE\tREPLICAS\tENDPOINT\tAGE\tMESSAGE")
			for _, kc := range l.Items {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", kc.Namespace, kc.Name, kc.Spec.Version, kc.Status.Version, kc.Status.Phase,
					kc.Spec.ControlPlane.Replicas, kc.Status.Endpoint, duration.HumanDuration(time.Since(kc.CreationTimestamp.Time)), notReadyMessage(&kc))
			}
			return w.Flush()
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "", "wide: health at a glance (etcd, konnectivity, addons, machines)")
	list.Flags().StringVarP(&selector, "selector", "l", "", "only clusters with these labels, e.g. env=prod")
	lo.bind(list)

	ko := &metaOptions{localOptions: localOptions{globalOptions: g}}
	var outFile, server string
	kubeconfig := &cobra.Command{
		Use: "kubeconfig NAME", Short: "Print a cluster's admin kubeconfig", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := ko.client()
			if err != nil {
				return err
			}
			kc, err := clusterctl.Find(cmd.Context(), c, args[0], ko.namespace)
			if err != nil {
				return err
			}
			data, err := clusterctl.Kubeconfig(cmd.Context(), c, kc)
			if err != nil {
				return err
			}
			if server != "" {
				if data, err = clusterctl.WithServer(data, server); err != nil {
					return err
				}
			}
			if outFile != "" {
				return os.WriteFile(outFile, data, 0o600)
			}
			_, err = cmd.OutOrStdout().Write(data)
			return err
		},
	}
	ko.bind(kubeconfig)
	kubeconfig.Flags().StringVarP(&outFile, "output-file", "o", "", "write to this file (mode 0600) instead of stdout")
	kubeconfig.Flags().StringVar(&server, "server", "", "apiserver URL to put in the kubeconfig, e.g. a node address and node port or a load balancer (it must be in the serving certificate: spec.network.apiServer.certSANs)")

	vo := &metaOptions{localOptions: localOptions{globalOptions: g}}
	versions := &cobra.Command{
		Use: "versions", Short: "List the Kubernetes versions in the catalog", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := vo.client()
			if err != nil {
				return err
			}
			var l clusterv1.KubernetesVersionList
			if err := c.List(cmd.Context(), &l); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "VERSION\tETCD\tDEPRECATED")
			for _, v := range l.Items {
				fmt.Fprintf(w, "%s\t%v\t%v\n", v.Name, v.Spec.EtcdVersions, v.Spec.Deprecated)
			}
			return w.Flush()
		},
	}
	vo.bind(versions)
	get.AddCommand(list, kubeconfig, versions)
	return get
}

func newDeleteCommand(g *globalOptions) *cobra.Command {
	del := &cobra.Command{Use: "delete", Short: "Delete a business cluster"}
	o := &metaOptions{localOptions: localOptions{globalOptions: g}}
	var timeout time.Duration
	cmd := &cobra.Command{
		Use: "cluster NAME", Short: "Delete a KubeCluster and wait for its ordered teardown", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			kc, err := clusterctl.Find(ctx, c, args[0], o.namespace)
			if err != nil {
				return err
			}
			return clusterctl.Delete(ctx, c, kc, cmd.OutOrStdout())
		},
	}
	o.bind(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait")
	del.AddCommand(cmd)
	return del
}

func notReadyMessage(kc *clusterv1.KubeCluster) string {
	if r := meta.FindStatusCondition(kc.Status.Conditions, clusterv1.ConditionReady); r != nil && r.Status != metav1.ConditionTrue {
		return r.Message
	}
	return ""
}

// printClustersWide is every cluster's health in one line: its control
// plane, etcd, tunnels, addons Healthy of listed, and Machines Ready.
func printClustersWide(ctx context.Context, c client.Client, w *tabwriter.Writer, clusters []clusterv1.KubeCluster, namespace string) error {
	var addons addonv1.ClusterAddonList
	if err := c.List(ctx, &addons, client.InNamespace(namespace)); err != nil {
		return err
	}
	var machines nodev1.MachineList
	if err := c.List(ctx, &machines, client.InNamespace(namespace)); err != nil {
		return err
	}
	type count struct{ ok, all int }
	addonCount, machineCount := map[string]*count{}, map[string]*count{}
	tally := func(m map[string]*count, key string, ok bool) {
		if m[key] == nil {
			m[key] = &count{}
		}
		m[key].all++
		if ok {
			m[key].ok++
		}
	}
	for _, a := range addons.Items {
		tally(addonCount, a.Namespace+"/"+a.Spec.ClusterName, meta.IsStatusConditionTrue(a.Status.Conditions, addonv1.AddonHealthy))
	}
	for _, m := range machines.Items {
		tally(machineCount, m.Namespace+"/"+m.Spec.ClusterName, meta.IsStatusConditionTrue(m.Status.Conditions, nodev1.MachineReady))
	}
	frac := func(c *count) string {
		if c == nil {
			return "-"
		}
		return fmt.Sprintf("%d/%d", c.ok, c.all)
	}
	cond := func(kc *clusterv1.KubeCluster, t string) string {
		if cd := meta.FindStatusCondition(kc.Status.Conditions, t); cd != nil {
			return string(cd.Status)
		}
		return "-"
	}
	fmt.Fprintln(w, "NAMESPACE\tNAME\tVERSION\tINSTALLED\tPHASE\tREADY\tETCD\tKONNECTIVITY\tADDONS\tMACHINES\tAGE\tMESSAGE")
	for i := range clusters {
		kc := &clusters[i]
		key := kc.Namespace + "/" + kc.Name
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", kc.Namespace, kc.Name, kc.Spec.Version, kc.Status.Version, kc.Status.Phase,
			cond(kc, clusterv1.ConditionReady), cond(kc, clusterv1.ConditionEtcdReady), cond(kc, clusterv1.ConditionKonnectivityReady),
			frac(addonCount[key]), frac(machineCount[key]), duration.HumanDuration(time.Since(kc.CreationTimestamp.Time)), notReadyMessage(kc))
	}
	return w.Flush()
}
