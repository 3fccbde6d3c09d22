package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/etcd"
	"github.com/kubeonkube/kok/internal/etcd/snapshot"
	"github.com/kubeonkube/kok/internal/pki"
)

// storageFlag parses --storage (the JSON of a BackupStorage) and opens it
// with credentials from the environment.
func openStorage(spec string) (snapshot.Store, error) {
	var st etcdv1.BackupStorage
	if err := json.Unmarshal([]byte(spec), &st); err != nil {
		return nil, fmt.Errorf("--storage: %w", err)
	}
	return snapshot.Open(st, map[string]string{
		snapshot.AccessKeyID:     os.Getenv(etcd.EnvAccessKeyID),
		snapshot.SecretAccessKey: os.Getenv(etcd.EnvSecretAccessKey),
	}, snapshot.VolumeMount)
}

// finish reports the outcome where the operator reads it: the container's
// termination message (a JSON snapshot record, or the error).
func finish(record any, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	} else {
		b, _ := json.Marshal(record)
		msg = string(b)
	}
	_ = os.WriteFile("/dev/termination-log", []byte(msg), 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", msg)
		os.Exit(1)
	}
	fmt.Println(msg)
	os.Exit(0)
}

// runSnapshot is `kok-manager etcd-snapshot`: one snapshot of a cluster into
// storage, then retention.
func runSnapshot(args []string) {
	fs := flag.NewFlagSet(etcd.SnapshotCommand, flag.ExitOnError)
	endpoint := fs.String("endpoint", "", "client URL of the cluster")
	tlsDir := fs.String("tls-dir", "", "directory with ca.crt, tls.crt and tls.key of a client certificate")
	name := fs.String("name", "", "name of the snapshot in storage")
	tmp := fs.String("tmp-dir", os.TempDir(), "where the snapshot is written before it is stored")
	storage := fs.String("storage", "", "JSON of the EtcdBackup's storage")
	prune := fs.String("prune", "", "comma-separated snapshots to delete after this one is stored")
	_ = fs.Parse(args)

	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	store, err := openStorage(*storage)
	if err != nil {
		finish(nil, err)
	}
	data := pki.SecretData{}
	for _, k := range []string{"ca.crt", "tls.crt", "tls.key"} {
		b, err := os.ReadFile(filepath.Join(*tlsDir, k))
		if err != nil {
			finish(nil, err)
		}
		data[k] = b
	}
	tlsCfg, err := etcd.ClientTLS(data)
	if err != nil {
		finish(nil, err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{*endpoint}, TLS: tlsCfg, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		finish(nil, err)
	}
	defer cli.Close()
	snap, err := snapshot.Take(ctx, cli, *endpoint, store, *name, *tmp)
	if err != nil {
		finish(nil, err)
	}
	for _, old := range strings.Split(*prune, ",") {
		if old = strings.TrimSpace(old); old != "" {
			if err := store.Delete(ctx, old); err != nil {
				finish(nil, fmt.Errorf("snapshot %s stored, but deleting the old %s failed: %w", snap.Name, old, err))
			}
		}
	}
	finish(snap, nil)
}

// runRestore is `kok-manager etcd-restore`: the init container of a restored
// cluster's first member.
func runRestore(args []string) {
	fs := flag.NewFlagSet(etcd.RestoreCommand, flag.ExitOnError)
	name := fs.String("name", "", "snapshot to restore")
	sha := fs.String("sha256", "", "SHA256 the snapshot must have")
	bump := fs.Int64("bump-revision", 0, "raise every revision by this much")
	dataDir := fs.String("data-dir", "", "the member's data directory")
	member := fs.String("member", "", "the member's name")
	peerURL := fs.String("peer-url", "", "the member's peer URL")
	token := fs.String("token", "", "the cluster's initial token")
	storage := fs.String("storage", "", "JSON of the snapshot's storage")
	_ = fs.Parse(args)

	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	store, err := openStorage(*storage)
	if err != nil {
		finish(nil, err)
	}
	start := time.Now()
	restored, err := snapshot.Restore(ctx, store, *name, *sha, *bump, *dataDir,
		snapshot.Member{Name: *member, PeerURL: *peerURL, Token: *token})
	if err != nil {
		finish(nil, err)
	}
	finish(map[string]any{"restored": restored, "snapshot": store.Location(*name), "seconds": time.Since(start).Seconds()}, nil)
}
