package snapshot

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
)

// startEtcd runs a one-member etcd on loopback in dir.
func startEtcd(t *testing.T, dir, name string) (*clientv3.Client, string) {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cu, _ := url.Parse("http://127.0.0.1:0")
	pu, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	// The advertised peer URL is only a name here; a restored member must
	// be told the same one.
	apu, _ := url.Parse("http://" + name + ".test:2380")
	cfg.AdvertisePeerUrls = []url.URL{*apu}
	cfg.InitialCluster = name + "=" + apu.String()
	cfg.InitialClusterToken = "t"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not start")
	}
	ep := e.Clients[0].Addr().String()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli, ep
}

func s3Storage(t *testing.T) (etcdv1.BackupStorage, map[string]string) {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket("backups"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	t.Cleanup(srv.Close)
	return etcdv1.BackupStorage{S3: &etcdv1.S3Storage{Endpoint: strings.TrimPrefix(srv.URL, "http://"), Bucket: "backups",
			Prefix: "prod/", Region: "us-east-1", Insecure: true, CredentialsSecret: "s3"}},
		map[string]string{AccessKeyID: "id", SecretAccessKey: "secret"}
}

// TestRoundTrip snapshots a real etcd into S3 and into a volume directory,
// restores each with the revision raised, and finds every key, a higher
// revision and, without a raise, the recorded HashKV.
func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	s3, creds := s3Storage(t)
	vol := t.TempDir()
	for _, tc := range []struct {
		name    string
		storage etcdv1.BackupStorage
	}{
		{"s3", s3},
		{"volume", etcdv1.BackupStorage{Volume: &etcdv1.VolumeStorage{ClaimName: "backups", Path: "/snaps"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, ep := startEtcd(t, t.TempDir(), "src")
			for i := range 100 {
				if _, err := cli.Put(ctx, fmt.Sprintf("/registry/k%03d", i), strings.Repeat("v", i)); err != nil {
					t.Fatal(err)
				}
			}
			store, err := Open(tc.storage, creds, vol)
			if err != nil {
				t.Fatal(err)
			}
			name := Name("src", time.Now())
			snap, err := Take(ctx, cli, ep, store, name, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if snap.Revision < 101 || snap.Size == 0 || len(snap.SHA256) != 64 || snap.KVHash == 0 {
				t.Fatalf("snapshot record incomplete: %+v", snap)
			}
			t.Logf("%s: %d bytes at revision %d", snap.Location, snap.Size, snap.Revision)
			if tc.storage.Volume != nil {
				if _, err := os.Stat(filepath.Join(vol, "snaps", name)); err != nil {
					t.Fatal(err)
				}
			}

			// A file that does not match the recorded hash is refused.
			if _, err := Restore(ctx, store, name, strings.Repeat("0", 64), 0, filepath.Join(t.TempDir(), "data"), Member{Name: "x", PeerURL: "http://x.test:2380", Token: "t"}); err == nil || !strings.Contains(err.Error(), "refusing") {
				t.Fatalf("a hash mismatch must stop the restore, got %v", err)
			}

			for _, bump := range []int64{0, 1000000} {
				dir := filepath.Join(t.TempDir(), "data")
				m := Member{Name: "dst", PeerURL: "http://dst.test:2380", Token: "t"}
				if ok, err := Restore(ctx, store, name, snap.SHA256, bump, dir, m); err != nil || !ok {
					t.Fatalf("restore (bump %d): %v %v", bump, ok, err)
				}
				// A second run (the member restarted) leaves the data alone.
				if ok, err := Restore(ctx, store, name, snap.SHA256, bump, dir, m); err != nil || ok {
					t.Fatalf("second restore must be a no-op: %v %v", ok, err)
				}
				rcli, rep := startEtcd(t, dir, "dst")
				resp, err := rcli.Get(ctx, "/registry/", clientv3.WithPrefix())
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.Kvs) != 100 {
					t.Fatalf("restored %d keys, want 100", len(resp.Kvs))
				}
				if resp.Header.Revision < snap.Revision+bump {
					t.Fatalf("revision %d after restore with bump %d, snapshot was at %d", resp.Header.Revision, bump, snap.Revision)
				}
				if bump == 0 {
					hk, err := rcli.HashKV(ctx, rep, snap.Revision)
					if err != nil {
						t.Fatal(err)
					}
					if hk.Hash != snap.KVHash {
						t.Fatalf("restored HashKV %d, snapshot recorded %d", hk.Hash, snap.KVHash)
					}
				}
			}
			if err := store.Delete(ctx, name); err != nil {
				t.Fatal(err)
			}
			if _, err := store.Get(ctx, name); err == nil {
				t.Fatal("deleted snapshot still readable")
			}
		})
	}
}

// TestS3LargeObject stores a file large enough for a multipart upload and
// reads back exactly the same bytes (an S3 server that kept the chunked
// upload's signatures in the object failed this).
func TestS3LargeObject(t *testing.T) {
	st, creds := s3Storage(t)
	store, err := Open(st, creds, "")
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "big")
	b := make([]byte, 40<<20)
	_, _ = rand.Read(b)
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := store.Put(context.Background(), "big", f); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(b)
	got, err := Fetch(context.Background(), store, "big", filepath.Join(t.TempDir(), "back"), hex.EncodeToString(want[:]))
	if err != nil {
		t.Fatalf("fetched %s: %v", got, err)
	}
}
