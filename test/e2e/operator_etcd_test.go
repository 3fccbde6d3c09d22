//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/etcd"
)

// writer writes keys one after another and remembers every write etcd
// acknowledged.
type writer struct {
	cli   *clientv3.Client
	mu    sync.Mutex
	acked map[string]string
	fails int
	stop  chan struct{}
	done  chan struct{}
}

func startWriter(cli *clientv3.Client) *writer {
	w := &writer{cli: cli, acked: map[string]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			k, v := fmt.Sprintf("/e2e/key-%06d", i), fmt.Sprintf("value-%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, err := cli.Put(ctx, k, v)
			cancel()
			w.mu.Lock()
			if err == nil {
				w.acked[k] = v
			} else {
				w.fails++
			}
			w.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return w
}

func (w *writer) count() (int, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked), w.fails
}

// finish stops writing and checks every acknowledged write reads back.
func (w *writer) finish(t *testing.T) {
	t.Helper()
	close(w.stop)
	<-w.done
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := w.cli.Get(ctx, "/e2e/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]string{}
	for _, kv := range resp.Kvs {
		have[string(kv.Key)] = string(kv.Value)
	}
	lost := 0
	for k, v := range w.acked {
		if have[k] != v {
			lost++
		}
	}
	t.Logf("writes: %d acknowledged, %d failed (unacknowledged, allowed), %d lost", len(w.acked), w.fails, lost)
	if lost > 0 {
		t.Fatalf("%d acknowledged writes lost", lost)
	}
	if len(w.acked) == 0 {
		t.Fatal("no write was acknowledged")
	}
}

// TestEtcdCluster runs an EtcdCluster through creation, a lost member pod
// and scale 3→5→3 while a client writes, and checks that no acknowledged
// write is lost and that every member holds the same data.
func TestEtcdCluster(t *testing.T) {
	cfg := sharedCluster(t)
	ctx := context.Background()
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = etcdv1.AddToScheme(scheme)
	c, err := client.New(rc, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	e := newEtcd(t, c, "etcd-e2e", "e", 3, "v3.6.16")
	ns := e.Namespace

	cli := etcdClient(t, c, e)
	defer cli.Close()
	w := startWriter(cli)
	lin := startRecorder(t, c, e, 3)

	t.Run("deleted member pod comes back as the same member", func(t *testing.T) {
		before := memberIDs(t, c, e)
		var old corev1.Pod
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "e-1"}, &old); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, &old); err != nil {
			t.Fatal(err)
		}
		eventually(t, 3*time.Minute, "e-1 recreated and ready", func() error {
			var p corev1.Pod
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "e-1"}, &p); err != nil {
				return err
			}
			if p.UID == old.UID || !podReady(&p) {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		waitEtcd(t, c, e, 3, 3*time.Minute)
		if after := memberIDs(t, c, e); after["e-1"] != before["e-1"] {
			t.Fatalf("e-1 came back as member %s, was %s: it must rejoin on its volume", after["e-1"], before["e-1"])
		}
	})

	t.Run("scale 3→5→3 keeps every write, with the operator restarted mid-scale", func(t *testing.T) {
		for _, n := range []int32{5, 3} {
			patch := client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)))
			if err := c.Patch(ctx, e, patch); err != nil {
				t.Fatal(err)
			}
			if n == 5 {
				// The operator restarts in the middle of a membership
				// change; the journal in status lets the next one finish it.
				eventually(t, time.Minute, "a membership change journaled", func() error {
					if err := c.Get(ctx, client.ObjectKeyFromObject(e), e); err != nil {
						return err
					}
					if e.Status.Operation == nil {
						return fmt.Errorf("no operation in flight")
					}
					return nil
				})
				t.Logf("restarting kok-manager during %s %s", e.Status.Operation.Type, e.Status.Operation.Member)
				var mgr corev1.PodList
				if err := c.List(ctx, &mgr, client.InNamespace("kok-system"), client.MatchingLabels{"app.kubernetes.io/component": "manager"}); err != nil {
					t.Fatal(err)
				}
				for i := range mgr.Items {
					if err := c.Delete(ctx, &mgr.Items[i], client.GracePeriodSeconds(0)); err != nil {
						t.Fatal(err)
					}
				}
			}
			time.Sleep(3 * time.Second)
			waitEtcd(t, c, e, int(n), 5*time.Minute)
			acked, fails := w.count()
			t.Logf("at %d members: %d writes acknowledged, %d failed", n, acked, fails)
		}
	})

	w.finish(t)
	lin.finish(t)
	checkHashKV(t, c, e)

	if err := c.Delete(ctx, e); err != nil {
		t.Fatal(err)
	}
}

// waitEtcd waits until the cluster reports n healthy voting members, is
// Available and not progressing.
func waitEtcd(t *testing.T, c client.Client, e *etcdv1.EtcdCluster, n int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("EtcdCluster %s with %d ready members", e.Name, n), func() error {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(e), e); err != nil {
			return err
		}
		st := e.Status
		voters := 0
		for _, m := range st.Members {
			if m.Role != etcdv1.RoleLearner {
				voters++
			}
		}
		if int(st.ReadyMembers) != n || voters != n || st.Phase != "Running" {
			return fmt.Errorf("ready %d, voters %d, phase %s", st.ReadyMembers, voters, st.Phase)
		}
		return nil
	})
}

func memberIDs(t *testing.T, c client.Client, e *etcdv1.EtcdCluster) map[string]string {
	t.Helper()
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(e), e); err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, m := range e.Status.Members {
		ids[m.Name] = m.ID
	}
	return ids
}

// etcdTLS is the client configuration of the cluster's root certificate.
func etcdTLS(t *testing.T, c client.Client, e *etcdv1.EtcdCluster) *tls.Config {
	t.Helper()
	n := etcd.Names{Cluster: e.Name, Namespace: e.Namespace}
	var s corev1.Secret
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: e.Namespace, Name: n.ClientSecret()}, &s); err != nil {
		t.Fatal(err)
	}
	cfg, err := etcd.ClientTLS(s.Data)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// dialEtcd connects to endpoints named by their cluster DNS names, as
// clients in the meta cluster do; the test runs on the host, which does not
// use cluster DNS, so addrs maps each name to its address. (clientv3
// verifies the server against the endpoint's host name.)
func dialEtcd(t *testing.T, c client.Client, e *etcdv1.EtcdCluster, endpoints []string, addrs map[string]string) *clientv3.Client {
	t.Helper()
	return dialEtcdAs(t, etcdTLS(t, c, e), endpoints, addrs)
}

// dialEtcdAs is dialEtcd with a given client certificate.
func dialEtcdAs(t *testing.T, tlsCfg *tls.Config, endpoints []string, addrs map[string]string) *clientv3.Client {
	t.Helper()
	dial := grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if ip, ok := addrs[host]; ok {
			host = ip
		}
		return (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(host, port))
	})
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{dial}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// etcdClient reaches the cluster through its client Service as root.
func etcdClient(t *testing.T, c client.Client, e *etcdv1.EtcdCluster) *clientv3.Client {
	t.Helper()
	return etcdClientAs(t, c, e, etcdTLS(t, c, e))
}

// etcdClientAs reaches the cluster through its client Service with a
// given client certificate.
func etcdClientAs(t *testing.T, c client.Client, e *etcdv1.EtcdCluster, tlsCfg *tls.Config) *clientv3.Client {
	t.Helper()
	n := etcd.Names{Cluster: e.Name, Namespace: e.Namespace}
	var svc corev1.Service
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: e.Namespace, Name: n.ClientService()}, &svc); err != nil {
		t.Fatal(err)
	}
	host := n.ClientService() + "." + e.Namespace + ".svc"
	return dialEtcdAs(t, tlsCfg, []string{n.ClientEndpoint()}, map[string]string{host: svc.Spec.ClusterIP})
}

// checkHashKV compares every member's key-value hash at one revision.
func checkHashKV(t *testing.T, c client.Client, e *etcdv1.EtcdCluster) {
	t.Helper()
	n := etcd.Names{Cluster: e.Name, Namespace: e.Namespace}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(e), e); err != nil {
		t.Fatal(err)
	}
	var endpoints []string
	addrs := map[string]string{}
	for _, m := range e.Status.Members {
		var p corev1.Pod
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: e.Namespace, Name: m.Name}, &p); err != nil {
			t.Fatal(err)
		}
		endpoints = append(endpoints, n.ClientURL(m.Name))
		addrs[n.MemberHost(m.Name)] = p.Status.PodIP
	}
	cli := dialEtcd(t, c, e, endpoints, addrs)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := cli.Status(ctx, endpoints[0])
	if err != nil {
		t.Fatal(err)
	}
	rev := st.Header.Revision
	hashes := map[uint32][]string{}
	eventually(t, 30*time.Second, "members caught up to the revision", func() error {
		for k := range hashes {
			delete(hashes, k)
		}
		for _, ep := range endpoints {
			hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
			h, err := cli.HashKV(hctx, ep, rev)
			hcancel()
			if err != nil {
				return err
			}
			hashes[h.Hash] = append(hashes[h.Hash], ep)
		}
		return nil
	})
	if len(hashes) != 1 {
		t.Fatalf("members disagree at revision %d: %v", rev, hashes)
	}
	t.Logf("HashKV equal on all %d members at revision %d", len(endpoints), rev)
}
