package etcd

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
)

func TestMissTolerated(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	running := func() *etcdv1.EtcdCluster {
		e := &etcdv1.EtcdCluster{}
		e.Spec.Replicas, e.Status.Phase = 3, etcdv1.PhaseRunning
		return e
	}
	readyPods := func() map[string]Pod {
		return map[string]Pod{"e-0": {Name: "e-0", Ready: true}, "e-1": {Name: "e-1", Ready: true}, "e-2": {Name: "e-2", Ready: true}}
	}
	members := func(unhealthy string) []Member {
		var out []Member
		for _, n := range []string{"e-0", "e-1", "e-2"} {
			out = append(out, Member{Name: n, Started: true, Healthy: n != unhealthy})
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		e     func(*etcdv1.EtcdCluster)
		o     func(*Observed)
		since time.Duration // ago; 0: no miss recorded
		want  bool
	}{
		{name: "all answered: nothing to tolerate", since: time.Second},
		{name: "a member missed its check just now", o: func(o *Observed) { o.Members = members("e-1") }, since: time.Second, want: true},
		{name: "no member answered just now", o: func(o *Observed) { o.Reachable, o.Members = false, nil }, since: 5 * time.Second, want: true},
		{name: "misses older than the grace", o: func(o *Observed) { o.Members = members("e-1") }, since: healthGrace},
		{name: "its pod is not Ready", o: func(o *Observed) {
			o.Members = members("e-1")
			o.Pods["e-1"] = Pod{Name: "e-1"}
		}, since: time.Second},
		{name: "a pod is missing", o: func(o *Observed) { o.Members = members("e-1"); delete(o.Pods, "e-2") }, since: time.Second},
		{name: "a pod is terminating", o: func(o *Observed) {
			o.Members = members("e-1")
			o.Pods["e-0"] = Pod{Name: "e-0", Ready: true, Terminating: true}
		}, since: time.Second},
		{name: "a membership change is in flight", o: func(o *Observed) {
			o.Members, o.Journal = members("e-1"), &Journal{Type: ActRemove, Member: "e-2"}
		}, since: time.Second},
		{name: "the cluster was not Running", e: func(e *etcdv1.EtcdCluster) { e.Status.Phase = etcdv1.PhaseUpdating },
			o: func(o *Observed) { o.Members = members("e-1") }, since: time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := running()
			if tc.e != nil {
				tc.e(e)
			}
			o := Observed{Reachable: true, Members: members(""), Pods: readyPods()}
			if tc.o != nil {
				tc.o(&o)
			}
			var since time.Time
			if tc.since > 0 {
				since = now.Add(-tc.since)
			}
			if got := missTolerated(e, o, since, now); got != tc.want {
				t.Errorf("missTolerated = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMissesNote(t *testing.T) {
	var m misses
	key := types.NamespacedName{Namespace: "ns", Name: "e"}
	t0 := time.Unix(1000, 0)
	if got := m.note(key, true, t0); !got.Equal(t0) {
		t.Fatalf("first miss at %v, want %v", got, t0)
	}
	if got := m.note(key, true, t0.Add(10*time.Second)); !got.Equal(t0) {
		t.Fatalf("second miss says the misses began at %v, want %v", got, t0)
	}
	if got := m.note(key, false, t0.Add(20*time.Second)); !got.IsZero() {
		t.Fatalf("an answer leaves misses since %v", got)
	}
	if got := m.note(key, true, t0.Add(30*time.Second)); !got.Equal(t0.Add(30 * time.Second)) {
		t.Fatalf("a new miss after an answer starts at %v", got)
	}
}
