package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/etcd"
	"github.com/kubeonkube/kok/internal/etcd/snapshot"
	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/pki"
)

// fillEtcd writes about mb MiB of 100 KiB values with a few writers.
func fillEtcd(ctx context.Context, cli *clientv3.Client, mb int) error {
	value := strings.Repeat("k", 100<<10)
	keys := mb * 1024 / 100
	var next atomic.Int64
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(keys); i = next.Add(1) {
				wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				_, err := cli.Put(wctx, fmt.Sprintf("/registry/fill/%06d", i), value)
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// benchBackupRestore fills a cluster with 100 MiB, backs it up to an S3
// server (gofakes3, in this process, on the bridge address) and restores
// it into a new 3-member cluster.
func benchBackupRestore(ctx context.Context, res *EtcdResult, c client.Client, cfg *local.Config, e *etcdv1.EtcdCluster, cli *clientv3.Client) error {
	start := time.Now()
	if err := fillEtcd(ctx, cli, 100); err != nil {
		return fmt.Errorf("filling 100 MiB: %w", err)
	}
	fmt.Printf("100 MiB written in %.1fs\n", time.Since(start).Seconds())

	backend := s3mem.New()
	if err := backend.CreateBucket("bench"); err != nil {
		return err
	}
	l, err := net.Listen("tcp", net.JoinHostPort(cfg.NodeIP().String(), "0"))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: gofakes3.New(backend).Server(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s3", Namespace: e.Namespace},
		StringData: map[string]string{snapshot.AccessKeyID: "bench", snapshot.SecretAccessKey: "bench-secret"}}); err != nil {
		return err
	}
	b := &etcdv1.EtcdBackup{ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: e.Namespace},
		Spec: etcdv1.EtcdBackupSpec{ClusterName: e.Name, Storage: etcdv1.BackupStorage{S3: &etcdv1.S3Storage{
			Endpoint: l.Addr().String(), Bucket: "bench", Region: "us-east-1", Insecure: true, CredentialsSecret: "s3"}}}}
	start = time.Now()
	if err := c.Create(ctx, b); err != nil {
		return err
	}
	for b.Status.Phase != "Succeeded" {
		if time.Since(start) > 10*time.Minute || b.Status.Phase == "Failed" {
			return fmt.Errorf("backup: phase %s %+v", b.Status.Phase, b.Status.Conditions)
		}
		time.Sleep(200 * time.Millisecond)
		if err := c.Get(ctx, client.ObjectKeyFromObject(b), b); err != nil {
			return err
		}
	}
	res.BackupSeconds = time.Since(start).Seconds()
	res.BackupBytes = b.Status.Snapshots[0].Size
	fmt.Printf("backup of %d MiB to S3 in %.1fs\n", res.BackupBytes>>20, res.BackupSeconds)

	rs := &etcdv1.EtcdRestore{ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: e.Namespace},
		Spec: etcdv1.EtcdRestoreSpec{BackupName: b.Name, ClusterName: "restored", BumpRevision: 1000000,
			Cluster: &etcdv1.EtcdClusterSpec{Replicas: 3, Version: "v3.6.16", Storage: etcdv1.EtcdStorage{Size: e.Spec.Storage.Size}}}}
	start = time.Now()
	if err := c.Create(ctx, rs); err != nil {
		return err
	}
	for rs.Status.Finished == nil {
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("restore: phase %s", rs.Status.Phase)
		}
		time.Sleep(200 * time.Millisecond)
		if err := c.Get(ctx, client.ObjectKeyFromObject(rs), rs); err != nil {
			return err
		}
	}
	if rs.Status.Phase != "Succeeded" {
		return fmt.Errorf("restore: %+v", rs.Status.Conditions)
	}
	res.RestoreSeconds = time.Since(start).Seconds()
	fmt.Printf("restore into a new 3-member cluster in %.1fs\n", res.RestoreSeconds)
	return nil
}

// benchThroughput compares the write throughput of the operator's cluster
// with a 3-member cluster started by hand on this host (same etcd binary,
// the same TLS certificates, loopback, in a CPU cgroup weighted like the
// pods), each as its clients reach it — the operator's through its client
// Service (status.clientEndpoint), the hand-started one with every member
// listed — and the operator's also with every member listed: alternating
// rounds, medians compared (one round swings by ±10 %).
func benchThroughput(ctx context.Context, res *EtcdResult, c client.Client, cacheDir string, e *etcdv1.EtcdCluster, cli *clientv3.Client, rounds int) error {
	hand, stop, err := handStartedEtcd(ctx, c, cacheDir, e)
	if err != nil {
		return fmt.Errorf("hand-started cluster: %w", err)
	}
	defer stop()
	members, err := benchMemberClient(ctx, c, e)
	if err != nil {
		return err
	}
	defer members.Close()
	var svcs, ops, hands []float64
	for range rounds {
		svc := writeRate(ctx, cli, 10*time.Second)
		op := writeRate(ctx, members, 10*time.Second)
		hs := writeRate(ctx, hand, 10*time.Second)
		svcs, ops, hands = append(svcs, svc), append(ops, op), append(hands, hs)
		fmt.Printf("writes/s: operator's through its Service %.0f, through every member %.0f; hand-started %.0f\n", svc, op, hs)
	}
	res.OperatorWritesPerSec, res.HandWritesPerSec = median(svcs), median(hands)
	res.OperatorRounds, res.HandRounds, res.MemberRounds = svcs, hands, ops
	return nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// writeRate runs 16 writers of 256-byte values for d and returns writes/s.
func writeRate(ctx context.Context, cli *clientv3.Client, d time.Duration) float64 {
	var n atomic.Int64
	value := strings.Repeat("w", 256)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := cli.Put(wctx, fmt.Sprintf("/rate/%02d/%06d", w, i%1000), value)
				cancel()
				if err == nil {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds()
}

// cpuPeerOfPods makes a CPU cgroup beside the local meta cluster's pods
// (/kok) with their weight, so processes put in it compete for CPU on the
// same footing as the pods; host processes outside any cgroup each weigh as
// much as all pods together. It returns the function that adds a process
// and the one that removes the cgroup; both do nothing without cgroup v1's
// cpu hierarchy.
func cpuPeerOfPods() (add func(pid int), remove func()) {
	root := "/sys/fs/cgroup/cpu"
	dir := filepath.Join(root, "kok-bench-hand")
	shares, err := os.ReadFile(filepath.Join(root, "kok", "cpu.shares"))
	if err != nil || os.MkdirAll(dir, 0o755) != nil {
		return func(int) {}, func() {}
	}
	_ = os.WriteFile(filepath.Join(dir, "cpu.shares"), shares, 0o644)
	return func(pid int) {
			_ = os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(fmt.Sprint(pid)), 0o644)
		}, func() {
			_ = os.Remove(dir)
		}
}

// handStartedEtcd runs three etcd processes on loopback with the operator
// cluster's certificates (they name localhost), in a CPU cgroup weighted
// like the meta cluster's pods, and returns a client.
func handStartedEtcd(ctx context.Context, c client.Client, cacheDir string, e *etcdv1.EtcdCluster) (*clientv3.Client, func(), error) {
	n := etcd.Names{Cluster: e.Name, Namespace: e.Namespace}
	dir, err := os.MkdirTemp("", "kok-bench-hand-etcd-")
	if err != nil {
		return nil, nil, err
	}
	files := map[string][]byte{}
	for secret, keys := range map[string][2]string{
		n.ServerSecret(): {"tls.crt", "tls.key"},
		n.ClientSecret(): {"tls.crt", "tls.key"},
	} {
		var s corev1.Secret
		if err := c.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: secret}, &s); err != nil {
			return nil, nil, err
		}
		for _, k := range keys {
			files[secret+"-"+k] = s.Data[k]
		}
		files["ca.crt"] = s.Data["ca.crt"]
	}
	var ca corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: n.CASecret()}, &ca); err != nil {
		return nil, nil, err
	}
	files["ca.crt"] = ca.Data["ca.crt"]
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, nil, err
		}
	}
	bin := filepath.Join(builder(cacheDir).Dir("etcd", "v3.6.16"), "etcd")
	var initial []string
	for i := range 3 {
		initial = append(initial, fmt.Sprintf("h%d=https://localhost:%d", i, 32380+i))
	}
	var procs []*exec.Cmd
	group, leave := cpuPeerOfPods()
	stop := func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
		leave()
		_ = os.RemoveAll(dir)
	}
	crt, key := filepath.Join(dir, n.ServerSecret()+"-tls.crt"), filepath.Join(dir, n.ServerSecret()+"-tls.key")
	var endpoints []string
	for i := range 3 {
		client := fmt.Sprintf("https://localhost:%d", 32379-10*i)
		endpoints = append(endpoints, client)
		cmd := exec.Command(bin,
			fmt.Sprintf("--name=h%d", i), "--data-dir="+filepath.Join(dir, fmt.Sprintf("h%d", i)),
			"--listen-client-urls="+strings.Replace(client, "localhost", "127.0.0.1", 1), "--advertise-client-urls="+client,
			fmt.Sprintf("--listen-peer-urls=https://127.0.0.1:%d", 32380+i), fmt.Sprintf("--initial-advertise-peer-urls=https://localhost:%d", 32380+i),
			"--initial-cluster="+strings.Join(initial, ","), "--initial-cluster-state=new", "--initial-cluster-token=hand",
			"--cert-file="+crt, "--key-file="+key, "--trusted-ca-file="+filepath.Join(dir, "ca.crt"), "--client-cert-auth",
			"--peer-cert-file="+crt, "--peer-key-file="+key, "--peer-trusted-ca-file="+filepath.Join(dir, "ca.crt"), "--peer-client-cert-auth",
			"--peer-cert-allowed-cn="+etcd.MemberCN(n), "--peer-skip-client-san-verification=true",
			"--snapshot-count=10000", "--log-level=error")
		if err := cmd.Start(); err != nil {
			stop()
			return nil, nil, err
		}
		procs = append(procs, cmd)
		group(cmd.Process.Pid)
	}
	tlsCfg, err := etcd.ClientTLS(pki.SecretData{"tls.crt": files[n.ClientSecret()+"-tls.crt"], "tls.key": files[n.ClientSecret()+"-tls.key"], "ca.crt": files["ca.crt"]})
	if err != nil {
		stop()
		return nil, nil, err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		stop()
		return nil, nil, err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Put(pctx, "/ready", "1")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			cli.Close()
			stop()
			return nil, nil, fmt.Errorf("not ready: %w", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return cli, func() { cli.Close(); stop() }, nil
}
