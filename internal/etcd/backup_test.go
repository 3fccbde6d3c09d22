package etcd

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
)

func TestBackupJob(t *testing.T) {
	n := Names{Cluster: "e", Namespace: "ns"}
	s3 := etcdv1.BackupStorage{S3: &etcdv1.S3Storage{Endpoint: "s3:9000", Bucket: "b", CredentialsSecret: "creds"}}
	b := &etcdv1.EtcdBackup{ObjectMeta: metav1.ObjectMeta{Name: "nightly", Namespace: "ns"},
		Spec: etcdv1.EtcdBackupSpec{ClusterName: "e", Storage: s3}}
	j := BackupJob(n, b, "nightly-1", "e-1.db", []string{"e-0.db"}, "kok.local/kok-manager:x")
	c := j.Spec.Template.Spec.Containers[0]
	for _, want := range []string{SnapshotCommand, "--name=e-1.db", "--prune=e-0.db", "--endpoint=" + n.ClientEndpoint()} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("args %v lack %s", c.Args, want)
		}
	}
	if c.Env[0].ValueFrom.SecretKeyRef.Name != "creds" || c.TerminationMessagePolicy != corev1.TerminationMessageReadFile {
		t.Errorf("credentials or termination message wrong: %+v", c)
	}
	if j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever || *j.Spec.Template.Spec.AutomountServiceAccountToken {
		t.Error("a backup pod runs once and needs no meta-cluster token")
	}

	vol := etcdv1.BackupStorage{Volume: &etcdv1.VolumeStorage{ClaimName: "backups", Path: "/x"}}
	b.Spec.Storage = vol
	j = BackupJob(n, b, "nightly-2", "e-2.db", nil, "img")
	if v := j.Spec.Template.Spec.Volumes; v[len(v)-1].PersistentVolumeClaim.ClaimName != "backups" {
		t.Errorf("volume target not mounted: %+v", v)
	}
	for _, a := range j.Spec.Template.Spec.Containers[0].Args {
		if strings.HasPrefix(a, "--prune") {
			t.Errorf("nothing to prune, got %s", a)
		}
	}
}

func TestPrune(t *testing.T) {
	b := &etcdv1.EtcdBackup{Spec: etcdv1.EtcdBackupSpec{Keep: 2}}
	r := &BackupReconciler{}
	if p := r.prune(b); len(p) != 0 {
		t.Fatalf("empty backup prunes %v", p)
	}
	b.Status.Snapshots = []etcdv1.Snapshot{{Name: "a"}, {Name: "b"}}
	if p := r.prune(b); !slices.Equal(p, []string{"a"}) {
		t.Fatalf("keep 2 with 2 stored: the next one pushes out a, got %v", p)
	}
	b.Spec.Keep = 5
	if p := r.prune(b); len(p) != 0 {
		t.Fatalf("keep 5 prunes %v", p)
	}
}

func TestSnapshotResult(t *testing.T) {
	rec, _ := json.Marshal(etcdv1.Snapshot{Name: "s.db", Size: 10, Revision: 7})
	ok := &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{State: corev1.ContainerState{
		Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Message: string(rec)}}}}}}
	if s, msg := SnapshotResult(ok); s == nil || s.Revision != 7 || msg != "" {
		t.Fatalf("got %+v %q", s, msg)
	}
	bad := &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{State: corev1.ContainerState{
		Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: "bucket missing\n"}}}}}}
	if s, msg := SnapshotResult(bad); s != nil || msg != "bucket missing" {
		t.Fatalf("got %+v %q", s, msg)
	}
}

func TestRestoreInitOnlyOnFirstMember(t *testing.T) {
	n := Names{Cluster: "r", Namespace: "ns"}
	e := &etcdv1.EtcdCluster{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "ns"},
		Spec: etcdv1.EtcdClusterSpec{Replicas: 3, Version: "v3.6.16", Restore: &etcdv1.SnapshotSource{
			Storage: etcdv1.BackupStorage{Volume: &etcdv1.VolumeStorage{ClaimName: "backups"}}, Name: "s.db", SHA256: "ab", BumpRevision: 5}}}
	first := MemberPod(n, e, "r-0", Join{New: true, Token: "t", Peers: map[string]string{"r-0": n.PeerURL("r-0")}}, PodOptions{Image: "etcd", ManagerImage: "mgr"})
	if len(first.Spec.InitContainers) != 1 {
		t.Fatalf("first member of a restored cluster needs the restore init container")
	}
	ic := first.Spec.InitContainers[0]
	for _, want := range []string{RestoreCommand, "--name=s.db", "--sha256=ab", "--bump-revision=5", "--member=r-0", "--token=t"} {
		if !slices.Contains(ic.Args, want) {
			t.Errorf("restore args %v lack %s", ic.Args, want)
		}
	}
	if ic.Image != "mgr" {
		t.Errorf("restore runs kok-manager, got %s", ic.Image)
	}
	joiner := MemberPod(n, e, "r-1", Join{Token: "t", Peers: map[string]string{"r-0": n.PeerURL("r-0"), "r-1": n.PeerURL("r-1")}}, PodOptions{Image: "etcd"})
	if len(joiner.Spec.InitContainers) != 0 {
		t.Fatal("members that join get their data from the leader, not the snapshot")
	}
}
