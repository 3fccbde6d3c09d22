package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kubeonkube/kok/internal/local"
)

func newRegistryCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "kok's registry in the local meta cluster: what it holds",
		Long: `kok up runs kok's registry (CNCF Distribution) in the meta cluster, on the node
address, and pushes into it every image kok builds and the binaries business-cluster
nodes install (OCI artifacts under artifacts/<name>:<tag>).`,
	}
	var asJSON bool
	list := stateDirCommand(g, "list", "List the images and artifacts kok pushed to its registry", false, func(cmd *cobra.Command, o *localOptions) error {
		c, err := local.LoadConfig(o.stateDir)
		if err != nil {
			return fmt.Errorf("no kok meta cluster in %s (kok up creates one): %w", o.stateDir, err)
		}
		arts, err := local.RegistryArtifacts(o.stateDir)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("nothing pushed to the registry of %s yet (kok up pushes)", o.stateDir)
		}
		if err != nil {
			return err
		}
		imgs, err := local.RegistryImages(o.stateDir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		w := cmd.OutOrStdout()
		if asJSON {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(map[string]any{"registry": c.RegistryAddress(), "images": imgs, "artifacts": arts})
		}
		fmt.Fprintf(w, "registry http://%s (storage %s)\n\n", c.RegistryAddress(), c.RegistryDir())
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "IMAGE\tDIGEST")
		for _, i := range imgs {
			fmt.Fprintf(tw, "%s\t%s\n", i.Remote, i.Digest)
		}
		tw.Flush()
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ARTIFACT\tFILE\tSIZE\tBLOB DIGEST")
		for _, a := range arts {
			fmt.Fprintf(tw, "%s\t%s\t%.1fMi\t%s\n", a.Ref, a.File, float64(a.Size)/(1<<20), a.Digest)
		}
		tw.Flush()
		if len(arts) > 0 {
			fmt.Fprintf(w, "\na node fetches a file by digest:\n  curl -fsSL -o %s %s\n", arts[0].File, arts[0].BlobURL(c.RegistryAddress()))
		}
		return nil
	})
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(list)
	return cmd
}
