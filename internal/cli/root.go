// Package cli implements the kok command line.
package cli

import (
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/kubeonkube/kok/internal/local/build"
)

// DefaultCacheDir holds builds and images; CI reuses it between runs.
const DefaultCacheDir = "/var/cache/kok"

type globalOptions struct {
	cacheDir string
	verbose  bool
}

func (o *globalOptions) builder() *build.Builder {
	var log io.Writer
	if o.verbose {
		log = os.Stderr
	} else {
		_ = os.MkdirAll(o.cacheDir, 0o755)
		if f, err := os.OpenFile(filepath.Join(o.cacheDir, "build.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
			log = f
		}
	}
	return &build.Builder{CacheDir: o.cacheDir, Log: log, Progress: os.Stdout}
}

// NewRootCommand returns the kok command tree.
func NewRootCommand() *cobra.Command {
	o := &globalOptions{}
	root := &cobra.Command{
		Use:           "kok",
		Short:         "kok runs Kubernetes clusters on Kubernetes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cache := os.Getenv("KOK_CACHE_DIR")
	if cache == "" {
		cache = DefaultCacheDir
	}
	root.PersistentFlags().StringVar(&o.cacheDir, "cache-dir", cache, "directory for builds and images (env KOK_CACHE_DIR)")
	root.PersistentFlags().BoolVarP(&o.verbose, "verbose", "v", false, "show build and component output")
	root.AddCommand(newBuildCommand(o), newUpCommand(o), newDownCommand(o), newStatusCommand(o),
		newSuperviseCommand(o), newKubectlCommand(o), newEnvtestAssetsCommand(o), newLocalStorageCommand(o),
		newCreateCommand(o), newGetCommand(o), newDeleteCommand(o), newRegistryCommand(o), newMachineCommand(o),
		newAddonsCommand(o), newUpgradeCommand(o))
	return root
}
