package cli

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	addonv1 "github.com/kubeonkube/kok/api/addon/v1alpha1"
	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/clusterctl"
)

// newAddonsCommand is `kok addons`: list a cluster's addons and the
// catalog, install and remove addons (entries of KubeCluster.spec.addons).
func newAddonsCommand(g *globalOptions) *cobra.Command {
	addons := &cobra.Command{Use: "addons", Short: "List, install and remove the addons of business clusters"}

	lo := &metaOptions{localOptions: localOptions{globalOptions: g}}
	var cluster string
	list := &cobra.Command{
		Use: "list", Short: "List ClusterAddons (all clusters unless --cluster) and their health", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lo.client()
			if err != nil {
				return err
			}
			var l addonv1.ClusterAddonList
			if err := c.List(cmd.Context(), &l, client.InNamespace(lo.namespace)); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAMESPACE\tCLUSTER\tADDON\tVERSION\tAPPLIED\tHEALTHY\tAGE\tMESSAGE")
			for _, ca := range l.Items {
				if cluster != "" && ca.Spec.ClusterName != cluster {
					continue
				}
				applied, healthy := meta.FindStatusCondition(ca.Status.Conditions, addonv1.AddonApplied), meta.FindStatusCondition(ca.Status.Conditions, addonv1.AddonHealthy)
				msg := ""
				for _, cond := range []*metav1.Condition{applied, healthy} {
					if cond != nil && cond.Status != "True" && msg == "" {
						msg = cond.Reason + ": " + cond.Message
					}
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ca.Namespace, ca.Spec.ClusterName, ca.Spec.Addon, ca.Status.Version,
					status(applied), status(healthy), duration.HumanDuration(time.Since(ca.CreationTimestamp.Time)), msg)
			}
			return w.Flush()
		},
	}
	lo.bind(list)
	list.Flags().StringVar(&cluster, "cluster", "", "only this cluster's addons")

	co := &metaOptions{localOptions: localOptions{globalOptions: g}}
	catalog := &cobra.Command{
		Use: "catalog", Short: "List the addon versions in the catalog", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := co.client()
			if err != nil {
				return err
			}
			var l addonv1.AddonList
			if err := c.List(cmd.Context(), &l); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ADDON\tVERSION\tKUBERNETES")
			for _, a := range l.Items {
				fmt.Fprintf(w, "%s\t%s\t%s\n", a.Spec.Addon, a.Spec.Version, strings.Join(a.Spec.KubernetesVersions, ", "))
			}
			return w.Flush()
		},
	}
	co.bind(catalog)

	io := &metaOptions{localOptions: localOptions{globalOptions: g}}
	var version string
	var set []string
	install := &cobra.Command{
		Use: "install ADDON --cluster C [--version V] [--set key=value]...", Short: "Add an addon to a cluster's spec.addons (or change its version and values)",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			values, err := parseSet(set)
			if err != nil {
				return err
			}
			return editAddons(cmd, io, cluster, func(refs []clusterv1.AddonRef) ([]clusterv1.AddonRef, error) {
				ref := clusterv1.AddonRef{Name: args[0], Version: version, Values: values}
				if i := slices.IndexFunc(refs, func(r clusterv1.AddonRef) bool { return r.Name == args[0] }); i >= 0 {
					refs[i] = ref
					return refs, nil
				}
				return append(refs, ref), nil
			}, fmt.Sprintf("addon %s set on cluster %s: kok addons list --cluster %s shows its health\n", args[0], cluster, cluster))
		},
	}
	io.bind(install)
	install.Flags().StringVar(&cluster, "cluster", "", "the KubeCluster (required)")
	install.Flags().StringVar(&version, "version", "", "addon version (default: the newest that supports the cluster's release)")
	install.Flags().StringArrayVar(&set, "set", nil, "a value (key=value; the value is read as JSON when it parses, else as a string)")

	ro := &metaOptions{localOptions: localOptions{globalOptions: g}}
	remove := &cobra.Command{
		Use: "remove ADDON --cluster C", Short: "Take an addon out of a cluster's spec.addons: its objects are deleted from the cluster",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return editAddons(cmd, ro, cluster, func(refs []clusterv1.AddonRef) ([]clusterv1.AddonRef, error) {
				i := slices.IndexFunc(refs, func(r clusterv1.AddonRef) bool { return r.Name == args[0] })
				if i < 0 {
					return nil, fmt.Errorf("cluster %s has no addon %s", cluster, args[0])
				}
				return slices.Delete(refs, i, i+1), nil
			}, fmt.Sprintf("addon %s removed from cluster %s\n", args[0], cluster))
		},
	}
	ro.bind(remove)
	remove.Flags().StringVar(&cluster, "cluster", "", "the KubeCluster (required)")

	addons.AddCommand(list, catalog, install, remove)
	return addons
}

// editAddons changes a cluster's spec.addons (optimistic concurrency: a
// conflicting write fails instead of being lost).
func editAddons(cmd *cobra.Command, o *metaOptions, cluster string, edit func([]clusterv1.AddonRef) ([]clusterv1.AddonRef, error), done string) error {
	if cluster == "" {
		return fmt.Errorf("--cluster is required")
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	kc, err := clusterctl.Find(cmd.Context(), c, cluster, o.namespace)
	if err != nil {
		return err
	}
	refs, err := edit(slices.Clone(kc.Spec.Addons))
	if err != nil {
		return err
	}
	kc.Spec.Addons = refs
	if err := c.Update(cmd.Context(), kc); err != nil {
		return err
	}
	_, err = fmt.Fprint(cmd.OutOrStdout(), done)
	return err
}

// parseSet turns key=value flags into addon values.
func parseSet(set []string) (*apiextensionsv1.JSON, error) {
	if len(set) == 0 {
		return nil, nil
	}
	values := map[string]any{}
	for _, kv := range set {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--set %q: use key=value", kv)
		}
		var parsed any
		if err := json.Unmarshal([]byte(v), &parsed); err != nil {
			parsed = v
		}
		values[k] = parsed
	}
	raw, err := json.Marshal(values)
	if err != nil {
		return nil, err
	}
	return &apiextensionsv1.JSON{Raw: raw}, nil
}

func status(c *metav1.Condition) string {
	if c == nil {
		return "-"
	}
	return string(c.Status)
}
