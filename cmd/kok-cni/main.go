// Command kok-cni keeps a node's CNI configuration in step with flanneld.
// It runs beside flanneld in the flannel addon's DaemonSet: it reads the
// subnet lease flanneld writes (/run/flannel/subnet.env) and writes the
// conflist containerd loads — bridge, host-local with the node's subnet,
// portmap — from Debian's CNI plugins, so kok needs no CNI plugin binary
// of its own. Until the file exists the node has no pod network and stays
// NotReady; a deleted or edited file is written again.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	subnetFile := flag.String("subnet-file", "/run/flannel/subnet.env", "the subnet lease flanneld writes")
	conf := flag.String("conf", "/etc/cni/net.d/10-flannel.conflist", "the CNI configuration to keep")
	interval := flag.Duration("interval", 2*time.Second, "how often to check both files")
	once := flag.Bool("once", false, "write the configuration once (waiting for the lease) and exit")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.LUTC)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	waiting := false
	for {
		written, err := sync(*subnetFile, *conf)
		switch {
		case err != nil && !waiting:
			log.Printf("waiting: %v", err)
			waiting = true
		case err == nil:
			waiting = false
			if written {
				log.Printf("wrote %s", *conf)
			}
			if *once {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// sync writes conf from the lease in subnetFile when it differs, and
// reports whether it wrote.
func sync(subnetFile, conf string) (bool, error) {
	env, err := os.ReadFile(subnetFile)
	if err != nil {
		return false, fmt.Errorf("no subnet lease yet: %w", err)
	}
	lease, err := parseLease(env)
	if err != nil {
		return false, fmt.Errorf("%s: %w", subnetFile, err)
	}
	want, err := conflist(lease)
	if err != nil {
		return false, err
	}
	if have, err := os.ReadFile(conf); err == nil && string(have) == string(want) {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
		return false, err
	}
	// Written aside and renamed: containerd never loads half a file.
	tmp := filepath.Join(filepath.Dir(conf), "."+filepath.Base(conf)+".tmp")
	if err := os.WriteFile(tmp, want, 0o644); err != nil {
		return false, err
	}
	return true, os.Rename(tmp, conf)
}
