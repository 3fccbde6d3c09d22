package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	etcdutl "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
)

// Name is the file name of a snapshot of cluster taken at t: sortable by
// time, unique per second.
func Name(cluster string, t time.Time) string {
	return fmt.Sprintf("%s-%s.db", cluster, t.UTC().Format("20060102-150405"))
}

// Take streams a snapshot from endpoint into a file under tmpDir, records
// its revision and HashKV there, and puts it into store as name.
func Take(ctx context.Context, cli *clientv3.Client, endpoint string, store Store, name, tmpDir string) (etcdv1.Snapshot, error) {
	out := etcdv1.Snapshot{Name: name, Location: store.Location(name), Taken: metav1.Now()}
	f, err := os.CreateTemp(tmpDir, "snapshot-*.db")
	if err != nil {
		return out, err
	}
	defer func() { _ = os.Remove(f.Name()) }()
	// Closed, checked, once written; this one only covers the early returns.
	defer func() { _ = f.Close() }()

	resp, err := cli.SnapshotWithVersion(ctx)
	if err != nil {
		return out, fmt.Errorf("opening the snapshot stream: %w", err)
	}
	defer func() { _ = resp.Snapshot.Close() }()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), resp.Snapshot)
	if err != nil {
		return out, fmt.Errorf("reading the snapshot: %w", err)
	}
	if err := f.Sync(); err != nil {
		return out, err
	}
	if err := f.Close(); err != nil {
		return out, err
	}
	out.Size, out.SHA256, out.EtcdVersion = n, hex.EncodeToString(h.Sum(nil)), "v"+resp.Version
	// etcd checks the file it wrote (and says which revision it holds)
	// before anything leaves this machine.
	st, err := etcdutl.NewV3(zap.NewNop()).Status(f.Name())
	if err != nil {
		return out, fmt.Errorf("snapshot file is not valid: %w", err)
	}
	out.Revision = st.Revision

	// The hash of every key and value up to the snapshot's revision; a
	// restore drill compares it with the restored cluster's.
	hk, err := cli.HashKV(ctx, endpoint, out.Revision)
	if err != nil {
		return out, fmt.Errorf("HashKV at revision %d: %w", out.Revision, err)
	}
	out.KVHash = hk.Hash

	if err := store.Put(ctx, name, f.Name()); err != nil {
		return out, fmt.Errorf("storing %s: %w", out.Location, err)
	}
	return out, nil
}

// Fetch copies name from store into dst and checks its SHA256 (when want
// is set). It returns the file's SHA256.
func Fetch(ctx context.Context, store Store, name, dst, want string) (string, error) {
	in, err := store.Get(ctx, name)
	if err != nil {
		return "", fmt.Errorf("opening %s: %w", store.Location(name), err)
	}
	defer func() { _ = in.Close() }()
	f, err := os.Create(dst)
	if err != nil {
		return "", err
	}
	// Closed, checked, at the end; this one only covers the early returns.
	defer func() { _ = f.Close() }()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), in); err != nil {
		return "", fmt.Errorf("reading %s: %w", store.Location(name), err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if want != "" && got != want {
		return got, fmt.Errorf("%s has SHA256 %s, the backup recorded %s: refusing to restore it", store.Location(name), got, want)
	}
	if err := f.Sync(); err != nil {
		return got, err
	}
	return got, f.Close()
}

// Member says who the restored member is.
type Member struct {
	Name, PeerURL, Token string
}

// Restore fills dataDir with the snapshot name from store, as the first
// member of a new cluster, revisions raised by bump. A dataDir that already
// holds data is left alone (the member restarted after its restore).
func Restore(ctx context.Context, store Store, name, sha string, bump int64, dataDir string, m Member) (restored bool, err error) {
	if _, err := os.Stat(filepath.Join(dataDir, "member")); err == nil {
		return false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if err := os.RemoveAll(dataDir); err != nil { // a restore cut short
		return false, err
	}
	file := dataDir + ".snapshot"
	defer func() { _ = os.Remove(file) }()
	if _, err := Fetch(ctx, store, name, file, sha); err != nil {
		return false, err
	}
	// Restored into a side directory and renamed: a crash mid-restore
	// leaves no half-written data directory for etcd to start on.
	tmp := dataDir + ".restoring"
	if err := os.RemoveAll(tmp); err != nil {
		return false, err
	}
	cfg := etcdutl.RestoreConfig{
		SnapshotPath:        file,
		Name:                m.Name,
		OutputDataDir:       tmp,
		PeerURLs:            []string{m.PeerURL},
		InitialCluster:      m.Name + "=" + m.PeerURL,
		InitialClusterToken: m.Token,
	}
	if bump > 0 {
		cfg.RevisionBump, cfg.MarkCompacted = uint64(bump), true
	}
	if err := etcdutl.NewV3(zap.NewNop()).Restore(cfg); err != nil {
		return false, fmt.Errorf("restoring %s: %w", name, err)
	}
	return true, os.Rename(tmp, dataDir)
}
