package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/etcd"
	"github.com/kubeonkube/kok/internal/local"
)

// EtcdResult is what the etcd-operator benchmark writes.
type EtcdResult struct {
	Benchmark string    `json:"benchmark"`
	Time      time.Time `json:"time"`
	Commit    string    `json:"commit"`
	Machine   Machine   `json:"machine"`
	// ReadySeconds: EtcdCluster with 3 members applied → 3 healthy voters.
	ReadySeconds []float64 `json:"readySeconds"`
	// ReplaceSeconds: a member's pod and volume deleted → a new member
	// healthy and 3 voters again, while a client writes.
	ReplaceSeconds float64 `json:"replaceSeconds"`
	WritesOK       int64   `json:"writesOK"`
	WritesFailed   int64   `json:"writesFailed"`
	// BackupSeconds: EtcdBackup of a cluster holding BackupBytes applied →
	// snapshot stored in S3; RestoreSeconds: EtcdRestore applied → new
	// 3-member cluster ready and checked.
	BackupSeconds  float64 `json:"backupSeconds"`
	BackupBytes    int64   `json:"backupBytes"`
	RestoreSeconds float64 `json:"restoreSeconds"`
	// Write throughput (16 writers, 256-byte values) of the operator's
	// 3-member cluster and of one started by hand on the same host.
	// (medians of alternating rounds, each round's rate beside; the
	// operator's through its client Service).
	OperatorWritesPerSec float64   `json:"operatorWritesPerSec"`
	HandWritesPerSec     float64   `json:"handWritesPerSec"`
	OperatorRounds       []float64 `json:"operatorRounds,omitempty"`
	HandRounds           []float64 `json:"handRounds,omitempty"`
	// MemberRounds: the operator's cluster with every member listed.
	MemberRounds []float64 `json:"memberRounds,omitempty"`
	Err          string    `json:"error,omitempty"`
}

func benchEtcd(out, kokBin, cacheDir string) {
	res := &EtcdResult{Benchmark: "etcd operator", Time: time.Now().UTC(), Commit: gitCommit(), Machine: machine()}
	res.Err = onMetaCluster("etcd", kokBin, cacheDir, func(ctx context.Context, c client.Client, cfg *local.Config) error {
		return runEtcdBench(ctx, res, c, cfg, cacheDir)
	})
	writeEtcd(out, res)
}

func runEtcdBench(ctx context.Context, res *EtcdResult, c client.Client, cfg *local.Config, cacheDir string) error {
	var last *etcdv1.EtcdCluster
	for i := range 2 {
		ns := fmt.Sprintf("etcd-bench-%d", i)
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
		e := &etcdv1.EtcdCluster{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: ns}, Spec: etcdv1.EtcdClusterSpec{Replicas: 3, Version: "v3.6.16"}}
		start := time.Now()
		if err := c.Create(ctx, e); err != nil {
			return err
		}
		if err := waitVoters(ctx, c, e, 3, nil, 5*time.Minute); err != nil {
			return err
		}
		took := time.Since(start).Seconds()
		res.ReadySeconds = append(res.ReadySeconds, took)
		fmt.Printf("3-member EtcdCluster ready in %.1fs\n", took)
		last = e
	}

	// Replacement under writes.
	e := last
	cli, err := benchEtcdClient(ctx, c, e)
	if err != nil {
		return err
	}
	defer cli.Close()
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err := cli.Put(wctx, fmt.Sprintf("/bench/%08d", i), "v")
			cancel()
			if err != nil {
				failed.Add(1)
			} else {
				ok.Add(1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	time.Sleep(2 * time.Second)
	victim := "b-1"
	before := map[string]bool{}
	for _, m := range e.Status.Members {
		before[m.ID] = true
	}
	n := etcd.Names{Cluster: e.Name, Namespace: e.Namespace}
	start := time.Now()
	if err := c.Delete(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: n.PVC(victim)}}); err != nil {
		return err
	}
	if err := c.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: victim}}); err != nil {
		return err
	}
	err = waitVoters(ctx, c, e, 3, func(st etcdv1.EtcdClusterStatus) bool {
		for _, m := range st.Members {
			if m.Name == victim {
				return false
			}
		}
		for _, m := range st.Members {
			if !before[m.ID] {
				return true // a new member is among the healthy voters
			}
		}
		return false
	}, 5*time.Minute)
	res.ReplaceSeconds = time.Since(start).Seconds()
	close(stop)
	<-done
	res.WritesOK, res.WritesFailed = ok.Load(), failed.Load()
	fmt.Printf("member replaced (pod + volume lost) in %.1fs; writes %d ok, %d failed\n", res.ReplaceSeconds, res.WritesOK, res.WritesFailed)
	if err != nil {
		return err
	}
	if err := benchThroughput(ctx, res, c, cacheDir, e, cli, 5); err != nil {
		return err
	}
	return benchBackupRestore(ctx, res, c, cfg, e, cli)
}

// waitVoters waits for n healthy voting members, Available, and extra.
func waitVoters(ctx context.Context, c client.Client, e *etcdv1.EtcdCluster, n int, extra func(etcdv1.EtcdClusterStatus) bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(e), e); err != nil {
			return err
		}
		voters := 0
		for _, m := range e.Status.Members {
			if m.Role != etcdv1.RoleLearner && m.Healthy {
				voters++
			}
		}
		if voters == n && len(e.Status.Members) == n && meta.IsStatusConditionTrue(e.Status.Conditions, etcdv1.ConditionAvailable) &&
			(extra == nil || extra(e.Status)) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("EtcdCluster %s/%s: not %d healthy voters within %s", e.Namespace, e.Name, n, timeout)
}

// benchEtcdClient reaches the client Service from the host (which does not
// use cluster DNS: the Service name is mapped to its address).
func benchEtcdClient(ctx context.Context, c client.Client, e *etcdv1.EtcdCluster) (*clientv3.Client, error) {
	n := etcd.Names{Cluster: e.Name, Namespace: e.Namespace}
	var svc corev1.Service
	if err := c.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: n.ClientService()}, &svc); err != nil {
		return nil, err
	}
	host := n.ClientService() + "." + n.Namespace + ".svc"
	return dialMapped(ctx, c, e, []string{n.ClientEndpoint()}, map[string]string{host: svc.Spec.ClusterIP})
}

// benchMemberClient talks to every member at its own address, as a client
// of a hand-started cluster does (member names mapped to pod addresses).
func benchMemberClient(ctx context.Context, c client.Client, e *etcdv1.EtcdCluster) (*clientv3.Client, error) {
	n := etcd.Names{Cluster: e.Name, Namespace: e.Namespace}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(e.Namespace), client.MatchingLabels(n.Selector())); err != nil {
		return nil, err
	}
	addr := map[string]string{}
	var endpoints []string
	for _, p := range pods.Items {
		addr[n.MemberHost(p.Name)] = p.Status.PodIP
		endpoints = append(endpoints, n.ClientURL(p.Name))
	}
	return dialMapped(ctx, c, e, endpoints, addr)
}

// dialMapped connects with the cluster's root client certificate to
// endpoints whose host names addr maps to addresses (TLS still checks the
// names).
func dialMapped(ctx context.Context, c client.Client, e *etcdv1.EtcdCluster, endpoints []string, addr map[string]string) (*clientv3.Client, error) {
	var s corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: etcd.Names{Cluster: e.Name, Namespace: e.Namespace}.ClientSecret()}, &s); err != nil {
		return nil, err
	}
	tlsCfg, err := etcd.ClientTLS(s.Data)
	if err != nil {
		return nil, err
	}
	dial := grpc.WithContextDialer(func(ctx context.Context, hostport string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(hostport)
		if err != nil {
			return nil, err
		}
		return (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(addr[host], port))
	})
	return clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{dial}, Logger: zap.NewNop()})
}

func writeEtcd(dir string, res *EtcdResult) {
	name := saveJSON(dir, "etcd", res.Time, res.Commit, res)
	var b strings.Builder
	m := res.Machine
	fmt.Fprintf(&b, "# etcd operator benchmark\n\nLatest run: %s, commit %s, %d CPUs %s, %d GiB (JSON beside this file).\n\n",
		res.Time.Format("2006-01-02 15:04"), res.Commit, m.CPUs, m.CPUModel, m.MemoryGiB)
	if res.Err != "" {
		fmt.Fprintf(&b, "**The run failed:** %s\n\n", res.Err)
	}
	fmt.Fprintf(&b, "| | result | goal |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| EtcdCluster (3 members, PVCs) applied → 3 healthy voters | %s | |\n", fmtSeconds(res.ReadySeconds))
	fmt.Fprintf(&b, "| member replacement after pod + volume loss, writes continuing | %.1fs (writes: %d ok, %d failed while a member was gone) | ≤ 15 s |\n",
		res.ReplaceSeconds, res.WritesOK, res.WritesFailed)
	fmt.Fprintf(&b, "| backup of %d MiB to S3 (EtcdBackup applied → snapshot stored) | %.1fs | |\n", res.BackupBytes>>20, res.BackupSeconds)
	fmt.Fprintf(&b, "| restore of it into a new 3-member cluster (EtcdRestore applied → cluster ready, revision checked) | %.1fs | |\n", res.RestoreSeconds)
	ratio := 0.0
	if res.HandWritesPerSec > 0 {
		ratio = res.OperatorWritesPerSec / res.HandWritesPerSec
	}
	fmt.Fprintf(&b, "| write throughput, operator-made (through its client Service) vs hand-started (every member listed) 3-member cluster (16 writers, 256 B; median of %d alternating 10 s rounds: %s vs %s) | %.0f vs %.0f writes/s: ratio %.2f | ratio ≥ 0.9 |\n",
		len(res.OperatorRounds), fmtRates(res.OperatorRounds), fmtRates(res.HandRounds), res.OperatorWritesPerSec, res.HandWritesPerSec, ratio)
	if len(res.MemberRounds) > 0 && res.HandWritesPerSec > 0 {
		fmt.Fprintf(&b, "| the operator's cluster with every member listed, like the hand-started one (followers forward writes to the leader) | %.0f writes/s (%s): ratio %.2f | |\n",
			median(res.MemberRounds), fmtRates(res.MemberRounds), median(res.MemberRounds)/res.HandWritesPerSec)
	}
	fmt.Fprintf(&b, "\nThe hand-started cluster runs the same etcd binary with the same TLS certificates and flags as three processes on loopback; it runs in a CPU cgroup beside the meta cluster's pods with the same weight (host processes outside any cgroup would each weigh as much as all pods together).\n")
	if err := os.WriteFile(filepath.Join(dir, "etcd.md"), []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("results: %s and %s\n", name, filepath.Join(dir, "etcd.md"))
}

func fmtRates(v []float64) string {
	var parts []string
	for _, r := range v {
		parts = append(parts, fmt.Sprintf("%.0f", r))
	}
	return strings.Join(parts, "/")
}
