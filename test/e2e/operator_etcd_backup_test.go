//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/etcd/snapshot"
	"github.com/kubeonkube/kok/internal/local"
)

// startS3 serves an S3-compatible object store (gofakes3, in memory) on the
// meta cluster's bridge address, where backup Jobs reach it, and returns
// the storage spec of a bucket in it.
func startS3(t *testing.T, cfg *local.Config, c client.Client, ns string) (etcdv1.BackupStorage, *s3mem.Backend) {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket("kok-backups"); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(cfg.NodeIP().String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: gofakes3.New(backend).Server(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s3-credentials", Namespace: ns},
		StringData: map[string]string{snapshot.AccessKeyID: "kok", snapshot.SecretAccessKey: "kok-secret-key"}}
	if err := c.Create(context.Background(), sec); err != nil {
		t.Fatal(err)
	}
	return etcdv1.BackupStorage{S3: &etcdv1.S3Storage{Endpoint: l.Addr().String(), Bucket: "kok-backups", Prefix: "e2e/",
		Region: "us-east-1", Insecure: true, CredentialsSecret: sec.Name}}, backend
}

func waitBackup(t *testing.T, c client.Client, b *etcdv1.EtcdBackup, snapshots int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("EtcdBackup %s with %d snapshots", b.Name, snapshots), func() error {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(b), b); err != nil {
			return err
		}
		if b.Status.Phase == "Failed" {
			t.Fatalf("backup failed: %+v", b.Status.Conditions)
		}
		if len(b.Status.Snapshots) < snapshots || b.Status.Active != "" {
			return fmt.Errorf("phase %s, %d snapshots, active %q", b.Status.Phase, len(b.Status.Snapshots), b.Status.Active)
		}
		return nil
	})
}

func waitRestore(t *testing.T, c client.Client, rs *etcdv1.EtcdRestore, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "EtcdRestore "+rs.Name+" finished", func() error {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(rs), rs); err != nil {
			return err
		}
		if rs.Status.Finished == nil {
			return fmt.Errorf("phase %s", rs.Status.Phase)
		}
		return nil
	})
}

// TestEtcdBackupRestore takes snapshots of a 3-member cluster to S3 and to
// a volume (once and on a schedule with retention), drills a restore by
// hash, restores into a new 3-member cluster with the revision raised and
// compares every key, and refuses to restore over an existing cluster.
func TestEtcdBackupRestore(t *testing.T) {
	cfg := sharedCluster(t)
	c := metaClient(t, cfg)
	ctx := context.Background()
	ns := "etcd-backup"
	e := newEtcd(t, c, ns, "src", 3, "v3.6.16")
	s3, backend := startS3(t, cfg, c, ns)

	cli := etcdClient(t, c, e)
	keys := putKeys(t, cli, "/registry/backup", 500)
	cli.Close()

	var s3Backup *etcdv1.EtcdBackup
	t.Run("one snapshot to S3", func(t *testing.T) {
		start := time.Now()
		s3Backup = &etcdv1.EtcdBackup{ObjectMeta: metav1.ObjectMeta{Name: "to-s3", Namespace: ns},
			Spec: etcdv1.EtcdBackupSpec{ClusterName: e.Name, Storage: s3}}
		if err := c.Create(ctx, s3Backup); err != nil {
			t.Fatal(err)
		}
		waitBackup(t, c, s3Backup, 1, 3*time.Minute)
		snap := s3Backup.Status.Snapshots[0]
		t.Logf("%s: %d bytes, revision %d, in %s", snap.Location, snap.Size, snap.Revision, time.Since(start).Round(time.Second))
		obj, err := backend.GetObject("kok-backups", "e2e/"+snap.Name, nil)
		if err != nil {
			t.Fatalf("the object store has no %s: %v", snap.Name, err)
		}
		h := sha256.New()
		n, _ := io.Copy(h, obj.Contents)
		_ = obj.Contents.Close() // read to the end already
		if got := hex.EncodeToString(h.Sum(nil)); got != snap.SHA256 || n != snap.Size {
			t.Fatalf("stored object: %d bytes sha256 %s; status says %d bytes sha256 %s", n, got, snap.Size, snap.SHA256)
		}
		if !meta.IsStatusConditionTrue(s3Backup.Status.Conditions, etcdv1.ConditionSucceeded) || s3Backup.Status.Phase != "Succeeded" {
			t.Fatalf("status %+v", s3Backup.Status)
		}
	})

	t.Run("scheduled snapshots to a volume keep the newest 2", func(t *testing.T) {
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "backups", Namespace: ns},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
		if err := c.Create(ctx, pvc); err != nil {
			t.Fatal(err)
		}
		b := &etcdv1.EtcdBackup{ObjectMeta: metav1.ObjectMeta{Name: "to-volume", Namespace: ns},
			Spec: etcdv1.EtcdBackupSpec{ClusterName: e.Name, Schedule: "@every 5s", Keep: 2,
				Storage: etcdv1.BackupStorage{Volume: &etcdv1.VolumeStorage{ClaimName: pvc.Name, Path: "/etcd"}}}}
		if err := c.Create(ctx, b); err != nil {
			t.Fatal(err)
		}
		// Three snapshots are taken; retention deletes the first.
		var first string
		eventually(t, 4*time.Minute, "a third scheduled snapshot", func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(b), b); err != nil {
				return err
			}
			if first == "" && len(b.Status.Snapshots) > 0 {
				first = b.Status.Snapshots[0].Name
			}
			if b.Status.Phase == "Failed" {
				t.Fatalf("backup failed: %+v", b.Status.Conditions)
			}
			if len(b.Status.Snapshots) != 2 || b.Status.Snapshots[0].Name == first {
				return fmt.Errorf("%d snapshots, oldest %v", len(b.Status.Snapshots), b.Status.Snapshots)
			}
			return nil
		})
		if err := c.Patch(ctx, b, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"suspend":true}}`))); err != nil {
			t.Fatal(err)
		}
		// The volume holds exactly the two kept snapshots.
		eventually(t, time.Minute, "suspended", func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(b), b); err != nil {
				return err
			}
			if b.Status.Phase != "Suspended" || b.Status.Active != "" {
				return fmt.Errorf("phase %s, active %q", b.Status.Phase, b.Status.Active)
			}
			return nil
		})
		var want []string
		for _, s := range b.Status.Snapshots {
			want = append(want, s.Name)
		}
		if got := listVolume(t, c, ns, pvc.Name, "/etcd"); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("volume holds %v, status keeps %v", got, want)
		}
	})

	t.Run("restore drill matches the recorded hash", func(t *testing.T) {
		rs := &etcdv1.EtcdRestore{ObjectMeta: metav1.ObjectMeta{Name: "drill", Namespace: ns},
			Spec: etcdv1.EtcdRestoreSpec{BackupName: s3Backup.Name, ClusterName: "drill", Drill: true}}
		if err := c.Create(ctx, rs); err != nil {
			t.Fatal(err)
		}
		waitRestore(t, c, rs, 4*time.Minute)
		if rs.Status.Phase != "Succeeded" || rs.Status.KVHash != s3Backup.Status.Snapshots[0].KVHash {
			t.Fatalf("drill: %+v", rs.Status)
		}
		t.Logf("drill: %s", meta.FindStatusCondition(rs.Status.Conditions, etcdv1.ConditionSucceeded).Message)
		eventually(t, 2*time.Minute, "drill cluster deleted", func() error {
			var d etcdv1.EtcdCluster
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "drill"}, &d); err == nil {
				return fmt.Errorf("still there")
			}
			return nil
		})
	})

	t.Run("restore into a new 3-member cluster with revisions raised", func(t *testing.T) {
		snap := s3Backup.Status.Snapshots[0]
		rs := &etcdv1.EtcdRestore{ObjectMeta: metav1.ObjectMeta{Name: "restore", Namespace: ns},
			Spec: etcdv1.EtcdRestoreSpec{BackupName: s3Backup.Name, ClusterName: "restored", BumpRevision: 1000000,
				Cluster: &etcdv1.EtcdClusterSpec{Replicas: 3, Version: "v3.6.16"}}}
		start := time.Now()
		if err := c.Create(ctx, rs); err != nil {
			t.Fatal(err)
		}
		waitRestore(t, c, rs, 5*time.Minute)
		if rs.Status.Phase != "Succeeded" {
			t.Fatalf("restore: %+v", rs.Status)
		}
		t.Logf("restored in %s: %s", time.Since(start).Round(time.Second), meta.FindStatusCondition(rs.Status.Conditions, etcdv1.ConditionSucceeded).Message)
		r := &etcdv1.EtcdCluster{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "restored"}, r); err != nil {
			t.Fatal(err)
		}
		rcli := etcdClient(t, c, r)
		defer rcli.Close()
		checkKeys(t, rcli, "/registry/backup", keys)
		resp, err := rcli.Get(ctx, "/registry/backup/0000")
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Revision < snap.Revision+1000000 {
			t.Fatalf("restored revision %d, want ≥ %d", resp.Header.Revision, snap.Revision+1000000)
		}
		checkHashKV(t, c, r)
		// The restored cluster outlives its EtcdRestore.
		if err := c.Delete(ctx, rs); err != nil {
			t.Fatal(err)
		}
		consistently(t, 3*time.Second, "the restored cluster outlives its EtcdRestore", func() error {
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "restored"}, r); err != nil || r.DeletionTimestamp != nil {
				return fmt.Errorf("deleting the EtcdRestore took the restored cluster along: %v", err)
			}
			return nil
		})
	})

	t.Run("a restore never touches an existing cluster", func(t *testing.T) {
		rs := &etcdv1.EtcdRestore{ObjectMeta: metav1.ObjectMeta{Name: "over-src", Namespace: ns},
			Spec: etcdv1.EtcdRestoreSpec{BackupName: s3Backup.Name, ClusterName: e.Name}}
		if err := c.Create(ctx, rs); err != nil {
			t.Fatal(err)
		}
		waitRestore(t, c, rs, time.Minute)
		cond := meta.FindStatusCondition(rs.Status.Conditions, etcdv1.ConditionSucceeded)
		if rs.Status.Phase != "Failed" || cond == nil || cond.Reason != "ClusterExists" {
			t.Fatalf("restore over an existing cluster: %+v", rs.Status)
		}
		t.Logf("refused: %s", cond.Message)
		cli := etcdClient(t, c, e)
		defer cli.Close()
		checkKeys(t, cli, "/registry/backup", keys)
	})
}

// listVolume lists a directory of a claim; kok's local provisioner keeps
// volumes in host directories, which the test reads directly.
func listVolume(t *testing.T, c client.Client, ns, claim, dir string) []string {
	t.Helper()
	var pvc corev1.PersistentVolumeClaim
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: claim}, &pvc); err != nil {
		t.Fatal(err)
	}
	var pv corev1.PersistentVolume
	if err := c.Get(context.Background(), client.ObjectKey{Name: pvc.Spec.VolumeName}, &pv); err != nil {
		t.Fatal(err)
	}
	if pv.Spec.HostPath == nil {
		t.Fatalf("volume %s is not a host directory", pv.Name)
	}
	entries, err := os.ReadDir(filepath.Join(pv.Spec.HostPath.Path, dir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names
}
