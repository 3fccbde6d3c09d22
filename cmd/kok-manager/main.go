// Command kok-manager runs kok's operators in the meta cluster.
package main

import (
	"flag"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/kubeonkube/kok/internal/etcd"
	"github.com/kubeonkube/kok/internal/manager"
)

func main() {
	// Backup Jobs and restoring members run the same binary.
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case etcd.SnapshotCommand:
			runSnapshot(os.Args[2:])
		case etcd.RestoreCommand:
			runRestore(os.Args[2:])
		}
	}
	var opts manager.Options
	opts.BindFlags(flag.CommandLine)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("kok-manager")

	mgr, err := manager.New(ctrl.GetConfigOrDie(), opts)
	if err != nil {
		log.Error(err, "creating manager")
		os.Exit(1)
	}
	log.Info("starting", "controllers", opts.Controllers)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "manager stopped")
		os.Exit(1)
	}
}
