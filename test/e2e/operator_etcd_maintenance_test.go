//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
)

// TestEtcdNoSpace fills a cluster with a small quota until etcd raises
// NOSPACE and refuses writes; the operator compacts, defragments and
// disarms, and writes go through again. kok-manager's metrics show the
// cluster and its members.
func TestEtcdNoSpace(t *testing.T) {
	cfg := sharedCluster(t)
	c := metaClient(t, cfg)
	ctx := context.Background()
	ns := "etcd-nospace"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}) })
	t.Cleanup(func() {
		if t.Failed() {
			dumpNamespace(t, c, ns)
		}
	})
	quota := resource.MustParse("24Mi")
	e := &etcdv1.EtcdCluster{ObjectMeta: metav1.ObjectMeta{Name: "q", Namespace: ns},
		Spec: etcdv1.EtcdClusterSpec{Replicas: 3, Version: "v3.6.16", QuotaBackendBytes: &quota}}
	if err := c.Create(ctx, e); err != nil {
		t.Fatal(err)
	}
	waitEtcd(t, c, e, 3, 4*time.Minute)
	cli := etcdClient(t, c, e)
	defer cli.Close()

	// One key rewritten with 1 MiB values: history fills the quota.
	value := strings.Repeat("x", 1<<20)
	full := false
	for i := 0; i < 100 && !full; i++ {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cli.Put(pctx, "/big", value)
		cancel()
		if err != nil {
			if !strings.Contains(err.Error(), "database space exceeded") {
				t.Fatalf("put %d: %v", i, err)
			}
			t.Logf("NOSPACE after %d writes of 1 MiB: %v", i, err)
			full = true
		}
	}
	if !full {
		t.Fatal("100 MiB written into a 24 MiB quota without NOSPACE")
	}
	start := time.Now()
	eventually(t, 3*time.Minute, "writes accepted again", func() error {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := cli.Put(pctx, "/after", "ok")
		return err
	})
	t.Logf("writes accepted %s after NOSPACE", time.Since(start).Round(time.Second))
	waitEtcd(t, c, e, 3, 2*time.Minute)
	if e.Status.LastDefragTime == nil {
		t.Fatal("status.lastDefragTime not recorded")
	}
	for _, m := range e.Status.Members {
		if len(m.Alarms) > 0 {
			t.Fatalf("member %s still reports %v", m.Name, m.Alarms)
		}
		if m.DBSize > quota.Value()/2 {
			t.Errorf("member %s backend %d bytes after defragmentation", m.Name, m.DBSize)
		}
	}
	// Events are best effort (rate-limited per object); status and the
	// metrics below are the record.
	deadline := time.Now().Add(30 * time.Second)
	for seen := false; !seen; time.Sleep(time.Second) {
		var events corev1.EventList
		if err := c.List(ctx, &events, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for _, ev := range events.Items {
			if ev.Reason == "NoSpace" {
				t.Logf("event: %s", ev.Message)
				seen = true
			}
		}
		if !seen && time.Now().After(deadline) {
			t.Logf("no NoSpace event among %d events (dropped?)", len(events.Items))
			break
		}
	}

	t.Run("metrics", func(t *testing.T) {
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.InNamespace("kok-system"), client.MatchingLabels{"app.kubernetes.io/component": "manager"}); err != nil || len(pods.Items) == 0 {
			t.Fatalf("kok-manager pod: %v", err)
		}
		want := []string{
			`kok_etcd_cluster_ready_members{cluster="q",namespace="etcd-nospace"} 3`,
			`kok_etcd_member_healthy{cluster="q",member="q-0",namespace="etcd-nospace",role=`,
			`kok_etcd_member_db_size_bytes{cluster="q",member="q-1",namespace="etcd-nospace"}`,
			`kok_etcd_cluster_steps_total{action="RecoverSpace",cluster="q",namespace="etcd-nospace"}`,
		}
		eventually(t, time.Minute, "etcd metrics published", func() error {
			for _, p := range pods.Items {
				if p.Status.PodIP == "" || p.DeletionTimestamp != nil {
					continue
				}
				resp, err := http.Get(fmt.Sprintf("http://%s:8080/metrics", p.Status.PodIP))
				if err != nil {
					return err
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close() // read to the end already
				for _, w := range want {
					if !strings.Contains(string(body), w) {
						return fmt.Errorf("no %s", w)
					}
				}
				return nil
			}
			return fmt.Errorf("no running kok-manager pod")
		})
	})

	t.Run("scheduled defragmentation", func(t *testing.T) {
		last := e.Status.LastDefragTime.Time
		patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"defrag":{"schedule":"@every 10s"}}}`))
		if err := c.Patch(ctx, e, patch); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, "a scheduled round after the last one", func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(e), e); err != nil {
				return err
			}
			if !e.Status.LastDefragTime.After(last) {
				return fmt.Errorf("last round %s", e.Status.LastDefragTime)
			}
			return nil
		})
		t.Logf("scheduled defragmentation round at %s", e.Status.LastDefragTime.Format(time.TimeOnly))
		// Writes keep working across it.
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := cli.Put(pctx, "/after-defrag", "ok"); err != nil {
			t.Fatal(err)
		}
	})
}
