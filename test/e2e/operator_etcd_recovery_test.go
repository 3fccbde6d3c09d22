//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/etcd"
)

func newEtcd(t *testing.T, c client.Client, ns, name string, replicas int32, version string) *etcdv1.EtcdCluster {
	t.Helper()
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}) })
	e := &etcdv1.EtcdCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: etcdv1.EtcdClusterSpec{Replicas: replicas, Version: version}}
	start := time.Now()
	if err := c.Create(ctx, e); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpNamespace(t, c, ns)
		}
	})
	waitEtcd(t, c, e, int(replicas), 4*time.Minute)
	t.Logf("%d-member %s cluster ready in %s", replicas, version, time.Since(start).Round(time.Second))
	return e
}

// dumpNamespace logs what a failed test leaves: the EtcdClusters' status,
// pods and events, so a CI failure can be read without the cluster.
func dumpNamespace(t *testing.T, c client.Client, ns string) {
	ctx := context.Background()
	var es etcdv1.EtcdClusterList
	if err := c.List(ctx, &es, client.InNamespace(ns)); err == nil {
		for _, e := range es.Items {
			t.Logf("EtcdCluster %s: phase %s, operation %+v, members %+v, conditions %+v", e.Name, e.Status.Phase, e.Status.Operation, e.Status.Members, e.Status.Conditions)
		}
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(ns)); err == nil {
		for _, p := range pods.Items {
			t.Logf("pod %s: phase %s, ready %v, deleting %v", p.Name, p.Status.Phase, podReady(&p), p.DeletionTimestamp != nil)
		}
	}
	var events corev1.EventList
	if err := c.List(ctx, &events, client.InNamespace(ns)); err == nil {
		for _, ev := range events.Items {
			t.Logf("event %s %s/%s %s: %s", ev.LastTimestamp.Format("15:04:05"), ev.InvolvedObject.Kind, ev.InvolvedObject.Name, ev.Reason, ev.Message)
		}
	}
	// kok-manager's own account, from the kubelet's log files on this host.
	var logs []string
	if shared.cfg != nil {
		logs, _ = filepath.Glob(filepath.Join(shared.cfg.KubeletDir(), "pod-logs", "kok-system_kok-manager-*", "*", "*.log"))
	}
	var lines []string
	for _, f := range logs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, `"namespace":"`+ns+`"`) || strings.Contains(l, "error") {
				lines = append(lines, filepath.Base(filepath.Dir(filepath.Dir(f)))+": "+l)
			}
		}
	}
	if len(lines) > 80 {
		lines = lines[len(lines)-80:]
	}
	for _, l := range lines {
		t.Log(l)
	}
}

// loseMember deletes a member's volume claim and then its pod: the member's
// data is gone.
func loseMember(t *testing.T, c client.Client, e *etcdv1.EtcdCluster, member string) {
	t.Helper()
	ctx := context.Background()
	n := etcd.Names{Cluster: e.Name, Namespace: e.Namespace}
	if err := c.Delete(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: n.PVC(member)}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: member}}); err != nil {
		t.Fatal(err)
	}
}

// putKeys writes n keys under prefix and returns them.
func putKeys(t *testing.T, cli *clientv3.Client, prefix string, n int) map[string]string {
	t.Helper()
	keys := map[string]string{}
	for i := range n {
		k, v := fmt.Sprintf("%s/%04d", prefix, i), fmt.Sprintf("v%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := cli.Put(ctx, k, v)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		keys[k] = v
	}
	return keys
}

func checkKeys(t *testing.T, cli *clientv3.Client, prefix string, want map[string]string) {
	t.Helper()
	eventually(t, time.Minute, "every key readable", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix())
		if err != nil {
			return err
		}
		have := map[string]string{}
		for _, kv := range resp.Kvs {
			have[string(kv.Key)] = string(kv.Value)
		}
		for k, v := range want {
			if have[k] != v {
				return fmt.Errorf("%s = %q, want %q", k, have[k], v)
			}
		}
		return nil
	})
}

// TestEtcdRecoveryMatrix deletes 1, 2 and all member pods of 1- and
// 3-member clusters (volumes kept): every member comes back as itself, on
// its data, with no key lost — quorum loss that only lost pods heals.
func TestEtcdRecoveryMatrix(t *testing.T) {
	cfg := sharedCluster(t)
	c := metaClient(t, cfg)
	ctx := context.Background()
	for _, replicas := range []int32{1, 3} {
		e := newEtcd(t, c, fmt.Sprintf("etcd-matrix-%d", replicas), "m", replicas, "v3.6.16")
		cli := etcdClient(t, c, e)
		keys := putKeys(t, cli, "/matrix", 50)
		cli.Close()
		for lose := 1; lose <= int(replicas); lose++ {
			t.Run(fmt.Sprintf("%d of %d pods deleted", lose, replicas), func(t *testing.T) {
				defer func() {
					if t.Failed() {
						dumpNamespace(t, c, e.Namespace)
					}
				}()
				before := memberIDs(t, c, e)
				start := time.Now()
				old := map[string]types.UID{}
				for i := range lose {
					p := &corev1.Pod{}
					if err := c.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: etcd.MemberName("m", i)}, p); err != nil {
						t.Fatal(err)
					}
					old[p.Name] = p.UID
					if err := c.Delete(ctx, p); err != nil {
						t.Fatal(err)
					}
				}
				eventually(t, 4*time.Minute, "deleted pods back and ready", func() error {
					for name, uid := range old {
						var p corev1.Pod
						if err := c.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: name}, &p); err != nil {
							return err
						}
						if p.UID == uid || !podReady(&p) {
							return fmt.Errorf("%s not back yet", name)
						}
					}
					return nil
				})
				waitEtcd(t, c, e, int(replicas), 4*time.Minute)
				t.Logf("recovered in %s", time.Since(start).Round(time.Second))
				if after := memberIDs(t, c, e); fmt.Sprint(after) != fmt.Sprint(before) {
					t.Fatalf("members changed: %v → %v (pods must come back as the same members)", before, after)
				}
				cli := etcdClient(t, c, e)
				defer cli.Close()
				checkKeys(t, cli, "/matrix", keys)
				checkHashKV(t, c, e)
			})
		}
		if err := c.Delete(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEtcdUpgradeAndLostVolume upgrades 3.5 → 3.6 one member at a time,
// rolls changed resources (and holds when a restarted member stays
// unhealthy), then loses a member's volume, while a client keeps writing.
func TestEtcdUpgradeAndLostVolume(t *testing.T) {
	cfg := sharedCluster(t)
	c := metaClient(t, cfg)
	ctx := context.Background()
	e := newEtcd(t, c, "etcd-upgrade", "u", 3, "v3.5.35")
	cli := etcdClient(t, c, e)
	defer cli.Close()
	w := startWriter(cli)
	lin := startRecorder(t, c, e, 3)

	t.Run("rolling upgrade v3.5.35 → v3.6.16", func(t *testing.T) {
		before := memberIDs(t, c, e)
		start := time.Now()
		if err := c.Patch(ctx, e, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"version":"v3.6.16"}}`))); err != nil {
			t.Fatal(err)
		}
		eventually(t, 6*time.Minute, "every member at v3.6.16", func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(e), e); err != nil {
				return err
			}
			for _, m := range e.Status.Members {
				if m.Version != "v3.6.16" || !m.Healthy {
					return fmt.Errorf("member %s at %s healthy=%v", m.Name, m.Version, m.Healthy)
				}
			}
			if e.Status.Version != "v3.6.16" || e.Status.Phase != "Running" {
				return fmt.Errorf("status version %s phase %s", e.Status.Version, e.Status.Phase)
			}
			return nil
		})
		acked, fails := w.count()
		t.Logf("upgraded in %s; %d writes acknowledged, %d failed so far", time.Since(start).Round(time.Second), acked, fails)
		if after := memberIDs(t, c, e); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("an upgrade keeps members: %v → %v", before, after)
		}
		checkHashKV(t, c, e)
	})

	memberPods := func() map[string]corev1.Pod {
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.InNamespace(e.Namespace), client.MatchingLabels(etcd.Names{Cluster: e.Name, Namespace: e.Namespace}.Selector())); err != nil {
			t.Fatal(err)
		}
		out := map[string]corev1.Pod{}
		for _, p := range pods.Items {
			out[p.Name] = p
		}
		return out
	}
	setCPU := func(cpu string) {
		patch := fmt.Sprintf(`{"spec":{"resources":{"requests":{"cpu":%q}}}}`, cpu)
		if err := c.Patch(ctx, e, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Fatal(err)
		}
	}
	rolledTo := func(cpu string) error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(e), e); err != nil {
			return err
		}
		for name, p := range memberPods() {
			if got := p.Spec.Containers[0].Resources.Requests.Cpu().String(); got != cpu || !podReady(&p) || p.DeletionTimestamp != nil {
				return fmt.Errorf("%s requests cpu %s (want %s), ready %v", name, got, cpu, podReady(&p))
			}
		}
		if e.Status.Phase != "Running" || e.Status.ReadyMembers != 3 {
			return fmt.Errorf("phase %s, %d ready", e.Status.Phase, e.Status.ReadyMembers)
		}
		return nil
	}

	t.Run("changed resources restart every member once, one at a time", func(t *testing.T) {
		before, pods := memberIDs(t, c, e), memberPods()
		start := time.Now()
		setCPU("20m")
		eventually(t, 5*time.Minute, "every member restarted with the new resources", func() error { return rolledTo("20m") })
		for name, p := range memberPods() {
			if p.UID == pods[name].UID {
				t.Fatalf("%s was not restarted", name)
			}
		}
		if after := memberIDs(t, c, e); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("a settings rollout keeps members: %v → %v", before, after)
		}
		t.Logf("rolled in %s", time.Since(start).Round(time.Second))
		checkHashKV(t, c, e)
	})

	t.Run("a member that does not come back healthy holds the rollout", func(t *testing.T) {
		pods := memberPods()
		setCPU("30m")
		// The first member restarted with the new settings fails: its
		// image cannot be had (as a broken release would crash).
		var broken string
		eventually(t, 2*time.Minute, "a member restarted with the new settings", func() error {
			for name, p := range memberPods() {
				if p.UID != pods[name].UID && p.DeletionTimestamp == nil {
					broken = name
					return nil
				}
			}
			return fmt.Errorf("no member restarted yet")
		})
		patch := client.RawPatch(types.StrategicMergePatchType, []byte(`{"spec":{"containers":[{"name":"etcd","image":"kok.local/etcd:v0.0.0-broken"}]}}`))
		if err := c.Patch(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: broken}}, patch); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, "Degraded says the rollout waits", func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(e), e); err != nil {
				return err
			}
			for _, cond := range e.Status.Conditions {
				if cond.Type == etcdv1.ConditionDegraded && cond.Status == metav1.ConditionTrue && strings.Contains(cond.Message, "rollout waits") {
					t.Logf("Degraded: %s", cond.Message)
					return nil
				}
			}
			return fmt.Errorf("conditions %v", e.Status.Conditions)
		})
		// It stays that way: no other member is restarted, nothing removed.
		consistently(t, 15*time.Second, "no other member restarted", func() error {
			now := memberPods()
			for name, p := range pods {
				if name != broken && now[name].UID != p.UID {
					return fmt.Errorf("%s was restarted while %s was unhealthy", name, broken)
				}
			}
			return nil
		})
		if ids := memberIDs(t, c, e); len(ids) != 3 {
			t.Fatalf("members %v", ids)
		}
		// Fixed (the pod goes, the operator makes it again): the rollout
		// goes on.
		if err := c.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: broken}}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Minute, "the rollout finished", func() error { return rolledTo("30m") })
		checkHashKV(t, c, e)
	})

	t.Run("a member whose volume is lost is replaced through a learner", func(t *testing.T) {
		before := memberIDs(t, c, e)
		start := time.Now()
		loseMember(t, c, e, "u-1")
		eventually(t, 5*time.Minute, "u-1 replaced by a new member", func() error {
			after := memberIDs(t, c, e)
			if _, ok := after["u-1"]; ok || len(after) != 3 {
				return fmt.Errorf("members %v", after)
			}
			return nil
		})
		waitEtcd(t, c, e, 3, 3*time.Minute)
		after := memberIDs(t, c, e)
		t.Logf("replaced in %s: %v → %v", time.Since(start).Round(time.Second), before, after)
		for _, keep := range []string{"u-0", "u-2"} {
			if after[keep] != before[keep] {
				t.Fatalf("%s changed: %v → %v", keep, before, after)
			}
		}
		checkHashKV(t, c, e)
	})
	w.finish(t)
	lin.finish(t)
	if err := c.Delete(ctx, e); err != nil {
		t.Fatal(err)
	}
}

// TestEtcdQuorumLost loses two of three members' volumes: the operator says
// QuorumLost and keeps the survivor and its data — it never wipes or
// re-bootstraps (recovery is a restore).
func TestEtcdQuorumLost(t *testing.T) {
	cfg := sharedCluster(t)
	c := metaClient(t, cfg)
	ctx := context.Background()
	e := newEtcd(t, c, "etcd-quorum", "q", 3, "v3.6.16")
	before := memberIDs(t, c, e)
	n := etcd.Names{Cluster: e.Name, Namespace: e.Namespace}
	for _, m := range []string{"q-1", "q-2"} {
		loseMember(t, c, e, m)
	}
	eventually(t, 2*time.Minute, "QuorumLost reported", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(e), e); err != nil {
			return err
		}
		for _, cond := range e.Status.Conditions {
			if cond.Type == etcdv1.ConditionQuorumLost && cond.Status == metav1.ConditionTrue {
				t.Logf("QuorumLost: %s", cond.Message)
				return nil
			}
		}
		return fmt.Errorf("phase %s, conditions %v", e.Status.Phase, e.Status.Conditions)
	})
	// Nothing destructive follows: the survivor keeps its pod and volume,
	// nobody re-bootstraps, the membership on record is unchanged.
	consistently(t, 15*time.Second, "nothing destructive follows a lost quorum", func() error {
		var survivor corev1.Pod
		if err := c.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: "q-0"}, &survivor); err != nil || survivor.DeletionTimestamp != nil {
			return fmt.Errorf("the surviving member's pod: %v (deleting %v)", err, survivor.DeletionTimestamp)
		}
		if err := c.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: n.PVC("q-0")}, &corev1.PersistentVolumeClaim{}); err != nil {
			return fmt.Errorf("the surviving member's volume: %v", err)
		}
		if after := memberIDs(t, c, e); after["q-0"] != before["q-0"] {
			return fmt.Errorf("the survivor's membership changed: %v → %v", before, after)
		}
		return nil
	})
	if e.Status.Phase != "QuorumLost" {
		t.Fatalf("phase %s", e.Status.Phase)
	}
	if err := c.Delete(ctx, e); err != nil {
		t.Fatal(err)
	}
}
