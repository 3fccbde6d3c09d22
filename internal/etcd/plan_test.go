package etcd

import (
	"strings"
	"testing"
)

const v36, v35 = "v3.6.16", "v3.5.35"

func healthy(name string, id uint64) Member {
	return Member{Name: name, ID: id, Started: true, Healthy: true, RaftIndex: 5000, Version: v36}
}

func readyPods(version string, names ...string) map[string]Pod {
	p := map[string]Pod{}
	for _, n := range names {
		p[n] = Pod{Name: n, Ready: true, Version: version}
	}
	return p
}

func TestPlanTable(t *testing.T) {
	three := []Member{healthy("c-0", 1), healthy("c-1", 2), healthy("c-2", 3)}
	cases := []struct {
		name string
		o    Observed
		want Step
	}{
		{"new cluster bootstraps its first member",
			Observed{Cluster: "c", Replicas: 3, Version: v36},
			Step{Action: ActBootstrap, Member: "c-0"}},
		{"first member starting",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Pods: readyPods(v36, "c-0")},
			Step{Action: ActWaitHealthy, Member: "c-0"}},
		{"a bootstrapped cluster that does not answer is never bootstrapped again",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Bootstrapped: true, Pods: readyPods(v36, "c-0", "c-1")},
			Step{Action: ActQuorumLost}},
		{"all pods and volumes gone after bootstrap: quorum lost, restore needed",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Bootstrapped: true},
			Step{Action: ActQuorumLost}},
		{"all pods gone, volumes kept: members come back on their volumes",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Bootstrapped: true, KnownMembers: []string{"c-2", "c-0", "c-1"}},
			Step{Action: ActCreatePod, Member: "c-0"}},
		{"two of three pods gone (no quorum to answer): the missing ones come back",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Bootstrapped: true, KnownMembers: []string{"c-0", "c-1", "c-2"},
				Pods: readyPods(v36, "c-0")},
			Step{Action: ActCreatePod, Member: "c-1"}},
		{"a journaled removal that lost quorum midway reports QuorumLost (and resumes later)",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Bootstrapped: true, KnownMembers: []string{"c-0"},
				Pods: readyPods(v36, "c-0"), Journal: &Journal{Type: "Remove", Member: "c-1", ID: 2}},
			Step{Action: ActQuorumLost}},
		{"a single member's pod gone: it comes back on its volume",
			Observed{Cluster: "c", Replicas: 1, Version: v36, Bootstrapped: true, KnownMembers: []string{"c-0"}},
			Step{Action: ActCreatePod, Member: "c-0"}},
		{"a NOSPACE alarm is answered before anything else (pods fail readiness meanwhile)",
			Observed{Cluster: "c", Replicas: 5, Version: v36, Reachable: true, LeaderID: 1,
				Members: []Member{healthy("c-0", 1), {Name: "c-1", ID: 2, Started: true, Healthy: true, Alarms: []string{AlarmNoSpace}}, healthy("c-2", 3)},
				Pods:    map[string]Pod{"c-0": {Name: "c-0", Version: v36}, "c-1": {Name: "c-1", Version: v36}, "c-2": {Name: "c-2", Version: v36}}},
			Step{Action: ActRecoverSpace, Member: "c-1"}},
		{"a mostly unused backend is defragmented, a follower before the leader",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1, DefragThreshold: 50,
				Members: []Member{
					{Name: "c-0", ID: 1, Started: true, Healthy: true, DBSize: 200 << 20, DBInUse: 20 << 20},
					healthy("c-1", 2),
					{Name: "c-2", ID: 3, Started: true, Healthy: true, DBSize: 200 << 20, DBInUse: 30 << 20}},
				Pods: readyPods(v36, "c-0", "c-1", "c-2")},
			Step{Action: ActDefrag, Member: "c-2", ID: 3}},
		{"a small backend is left alone whatever its fragmentation",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1, DefragThreshold: 50,
				Members: []Member{{Name: "c-0", ID: 1, Started: true, Healthy: true, DBSize: 10 << 20, DBInUse: 1 << 20}, healthy("c-1", 2), healthy("c-2", 3)},
				Pods:    readyPods(v36, "c-0", "c-1", "c-2")},
			Step{Action: ActNone}},
		{"a scheduled defragmentation round runs only when nothing else does",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1, DefragDue: true,
				Members: three, Pods: readyPods(v36, "c-0", "c-1", "c-2")},
			Step{Action: ActDefrag}},
		{"scaling goes before a scheduled defragmentation",
			Observed{Cluster: "c", Replicas: 5, Version: v36, Reachable: true, LeaderID: 1, DefragDue: true,
				Members: three, Pods: readyPods(v36, "c-0", "c-1", "c-2")},
			Step{Action: ActAddLearner, Member: "c-3"}},
		{"authentication is turned on once the cluster is whole",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1, AuthWanted: true,
				Members: three, Pods: readyPods(v36, "c-0", "c-1", "c-2")},
			Step{Action: ActEnableAuth}},
		{"authentication waits for scaling",
			Observed{Cluster: "c", Replicas: 5, Version: v36, Reachable: true, LeaderID: 1, AuthWanted: true,
				Members: three, Pods: readyPods(v36, "c-0", "c-1", "c-2")},
			Step{Action: ActAddLearner, Member: "c-3"}},
		{"grow through a learner",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1,
				Members: []Member{healthy("c-0", 1)}, Pods: readyPods(v36, "c-0")},
			Step{Action: ActAddLearner, Member: "c-1"}},
		{"promote a caught-up learner",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1,
				Members: []Member{healthy("c-0", 1), {Name: "c-1", ID: 2, Learner: true, Started: true, Healthy: true, RaftIndex: 4990}},
				Pods:    readyPods(v36, "c-0", "c-1")},
			Step{Action: ActPromote, Member: "c-1", ID: 2}},
		{"a learner is promoted although its pod is not Ready (learners fail /readyz)",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1,
				Members: []Member{healthy("c-0", 1), {Name: "c-1", ID: 2, Learner: true, Started: true, Healthy: true, RaftIndex: 5000}},
				Pods:    map[string]Pod{"c-0": {Ready: true, Version: v36}, "c-1": {Ready: false, Version: v36}}},
			Step{Action: ActPromote, Member: "c-1", ID: 2}},
		{"a learner far behind is not promoted",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1,
				Members: []Member{healthy("c-0", 1), {Name: "c-1", ID: 2, Learner: true, Started: true, Healthy: true, RaftIndex: 10}},
				Pods:    readyPods(v36, "c-0", "c-1")},
			Step{Action: ActWaitHealthy, Member: "c-1"}},
		{"steady state",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1, Members: three, Pods: readyPods(v36, "c-0", "c-1", "c-2")},
			Step{Action: ActNone}},
		{"deleted pod comes back as the same member",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1, Members: three, Pods: readyPods(v36, "c-0", "c-2")},
			Step{Action: ActCreatePod, Member: "c-1", ID: 2}},
		{"lost volume: the member is removed to be replaced",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1, Members: three,
				Pods: map[string]Pod{"c-0": {Ready: true, Version: v36}, "c-1": {DataLost: true, Version: v36}, "c-2": {Ready: true, Version: v36}}},
			Step{Action: ActRemove, Member: "c-1", ID: 2}},
		{"a replacement that would cost quorum is refused",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1,
				Members: []Member{healthy("c-0", 1), healthy("c-1", 2), {Name: "c-2", ID: 3, Started: true}},
				Pods:    map[string]Pod{"c-0": {Ready: true, Version: v36}, "c-1": {DataLost: true, Version: v36}, "c-2": {Version: v36}}},
			Step{Action: ActQuorumLost, Member: "c-1"}},
		{"orphan pod is deleted",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1, Members: three, Pods: readyPods(v36, "c-0", "c-1", "c-2", "c-7")},
			Step{Action: ActDeletePod, Member: "c-7"}},
		{"scale in removes the highest ordinal that is not the leader",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 5,
				Members: append(three, healthy("c-3", 4), healthy("c-10", 5)), Pods: readyPods(v36, "c-0", "c-1", "c-2", "c-3", "c-10")},
			Step{Action: ActRemove, Member: "c-3", ID: 4}},
		{"journaled add that never reached etcd is resumed",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1, Journal: &Journal{Type: "AddLearner", Member: "c-1"},
				Members: []Member{healthy("c-0", 1)}, Pods: readyPods(v36, "c-0")},
			Step{Action: ActAddLearner, Member: "c-1"}},
		{"journaled add that reached etcd gets its pod",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1, Journal: &Journal{Type: "AddLearner", Member: "c-1"},
				Members: []Member{healthy("c-0", 1), {Name: "c-1", ID: 2, Learner: true}}, Pods: readyPods(v36, "c-0")},
			Step{Action: ActCreatePod, Member: "c-1", ID: 2}},
		{"journaled removal that reached etcd deletes the pod",
			Observed{Cluster: "c", Replicas: 1, Version: v36, Reachable: true, LeaderID: 1, Journal: &Journal{Type: "Remove", Member: "c-1", ID: 2},
				Members: []Member{healthy("c-0", 1)}, Pods: readyPods(v36, "c-0", "c-1")},
			Step{Action: ActDeletePod, Member: "c-1"}},
		{"upgrade starts with a follower",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1, Members: three, Pods: readyPods(v35, "c-0", "c-1", "c-2")},
			Step{Action: ActUpgrade, Member: "c-1", ID: 2}},
		{"the leader hands off before it is upgraded",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1, Members: three,
				Pods: map[string]Pod{"c-0": {Ready: true, Version: v35}, "c-1": {Ready: true, Version: v36}, "c-2": {Ready: true, Version: v36}}},
			Step{Action: ActMoveLeader, Member: "c-0", ID: 1, Target: 2}},
		{"a member whose pod and claim are both gone is replaced, not started again empty",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1, Members: three,
				Pods: readyPods(v36, "c-0", "c-2"), LostVolumes: map[string]bool{"c-1": true}},
			Step{Action: ActRemove, Member: "c-1", ID: 2}},
		{"a learner that never started gets its first pod and claim",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1, Journal: &Journal{Type: "AddLearner", Member: "c-1"},
				Members: []Member{healthy("c-0", 1), {Name: "c-1", ID: 2, Learner: true}}, Pods: readyPods(v36, "c-0"), LostVolumes: map[string]bool{"c-1": true}},
			Step{Action: ActCreatePod, Member: "c-1", ID: 2}},
		{"changed settings restart a follower first",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Config: "new", Reachable: true, LeaderID: 1, Members: three,
				Pods: map[string]Pod{"c-0": {Ready: true, Version: v36, Config: "old"}, "c-1": {Ready: true, Version: v36, Config: "old"},
					"c-2": {Ready: true, Version: v36, Config: "new"}}},
			Step{Action: ActUpgrade, Member: "c-1", ID: 2}},
		{"the leader with changed settings hands off first",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Config: "new", Reachable: true, LeaderID: 1, Members: three,
				Pods: map[string]Pod{"c-0": {Ready: true, Version: v36, Config: "old"}, "c-1": {Ready: true, Version: v36, Config: "new"},
					"c-2": {Ready: true, Version: v36, Config: "new"}}},
			Step{Action: ActMoveLeader, Member: "c-0", ID: 1, Target: 2}},
		{"pods from before settings were recorded are left alone",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Config: "new", Reachable: true, LeaderID: 1, Members: three, Pods: readyPods(v36, "c-0", "c-1", "c-2")},
			Step{Action: ActNone}},
		{"a restarted member that does not come back healthy stops the rollout",
			Observed{Cluster: "c", Replicas: 3, Version: v36, Reachable: true, LeaderID: 1,
				Members: []Member{healthy("c-0", 1), {Name: "c-1", ID: 2, Started: true}, healthy("c-2", 3)},
				Pods:    map[string]Pod{"c-0": {Ready: true, Version: v35}, "c-1": {Version: v36}, "c-2": {Ready: true, Version: v35}}},
			Step{Action: ActWaitHealthy, Member: "c-1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Plan(tc.o)
			if got.Action != tc.want.Action || got.Member != tc.want.Member || (tc.want.ID != 0 && got.ID != tc.want.ID) ||
				(tc.want.Target != 0 && got.Target != tc.want.Target) {
				t.Fatalf("Plan = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// sim is a model etcd cluster that applies Plan's steps the way the
// reconciler would, with every member healthy once its pod exists.
type sim struct {
	cluster  string
	members  []Member
	pods     map[string]Pod
	leader   uint64
	nextID   uint64
	boot     bool
	changes  int
	minVoter int
	// config is the settings hash the spec asks for; restarts counts
	// member restarts.
	config   string
	restarts int
}

func (s *sim) observe(replicas int, version string) Observed {
	return Observed{Cluster: s.cluster, Replicas: replicas, Version: version, Config: s.config, Members: append([]Member(nil), s.members...),
		Reachable: len(s.members) > 0, LeaderID: s.leader, Pods: s.pods, Bootstrapped: s.boot}
}

func (s *sim) apply(t *testing.T, st Step, version string) {
	t.Helper()
	switch st.Action {
	case ActBootstrap:
		s.nextID++
		s.members = []Member{{Name: st.Member, ID: s.nextID, Started: true, Healthy: true, RaftIndex: 100}}
		s.pods = map[string]Pod{st.Member: {Name: st.Member, Ready: true, Version: version, Config: s.config}}
		s.leader, s.boot = s.nextID, true
	case ActAddLearner:
		s.nextID++
		s.members = append(s.members, Member{Name: st.Member, ID: s.nextID, Learner: true, Started: true, Healthy: true, RaftIndex: 100})
		s.pods[st.Member] = Pod{Name: st.Member, Ready: true, Version: version, Config: s.config}
		s.changes++
	case ActPromote:
		for i := range s.members {
			if s.members[i].ID == st.ID {
				s.members[i].Learner = false
			}
		}
		s.changes++
	case ActRemove:
		var keep []Member
		for _, m := range s.members {
			if m.ID != st.ID {
				keep = append(keep, m)
			}
		}
		s.members = keep
		delete(s.pods, st.Member)
		s.changes++
	case ActUpgrade:
		p := s.pods[st.Member]
		p.Version, p.Config = version, s.config
		s.pods[st.Member] = p
		s.restarts++
		if st.ID == s.leader {
			t.Fatalf("upgraded the leader %s without moving leadership", st.Member)
		}
	case ActMoveLeader:
		s.leader = st.Target
	default:
		t.Fatalf("unexpected step %v", st)
	}
	voters, _ := split(s.members)
	if s.boot && (s.minVoter == 0 || len(voters) < s.minVoter) {
		s.minVoter = len(voters)
	}
}

func (s *sim) run(t *testing.T, replicas int, version string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		st := Plan(s.observe(replicas, version))
		if st.Action == ActNone {
			voters, learners := split(s.members)
			if len(voters) != replicas || len(learners) != 0 {
				t.Fatalf("converged to %d voters, %d learners; want %d voters", len(voters), len(learners), replicas)
			}
			for _, p := range s.pods {
				if p.Version != version || p.Config != s.config {
					t.Fatalf("pod %s runs %s (settings %q), want %s (%q)", p.Name, p.Version, p.Config, version, s.config)
				}
			}
			return
		}
		s.apply(t, st, version)
	}
	t.Fatalf("no convergence to %d replicas in 100 steps", replicas)
}

func TestPlanConvergesThroughScaleAndUpgrade(t *testing.T) {
	s := &sim{cluster: "c", config: "resources-1"}
	s.run(t, 3, v35)
	s.run(t, 5, v35)
	s.run(t, 3, v35)
	s.run(t, 3, v36)
	s.run(t, 1, v36)
	s.run(t, 7, v36)
	// 1→3→5→3→1→7: each added member is one add plus one promote, each
	// removed member one remove.
	want := (2+2)*2 + (2 + 2) + (6 * 2)
	if s.changes != want {
		t.Errorf("membership changes = %d, want %d (one member at a time)", s.changes, want)
	}
	if s.minVoter < 1 {
		t.Errorf("voters dropped to %d", s.minVoter)
	}
	// Changed settings restart each of the 7 members once, no membership
	// change.
	s.restarts, s.config = 0, "resources-2"
	s.run(t, 7, v36)
	if s.restarts != 7 || s.changes != want {
		t.Errorf("settings rollout: %d restarts (want 7), %d membership changes (want %d)", s.restarts, s.changes, want)
	}
}

func TestMemberNames(t *testing.T) {
	if got := MemberName("etcd-a", 3); got != "etcd-a-3" {
		t.Fatal(got)
	}
	if n := ordinal("etcd-a", "etcd-a-12"); n != 12 {
		t.Fatal(n)
	}
	if n := ordinal("etcd-a", "etcd-b-1"); n != -1 {
		t.Fatal(n)
	}
}

// While a rollout holds, Degraded names a member restarted with the new
// version and settings, not one still waiting for its turn.
func TestPlanSaysWhichMemberHoldsARollout(t *testing.T) {
	three := []Member{healthy("c-0", 1), {Name: "c-1", ID: 2, Started: true}, healthy("c-2", 3)}
	pods := func(c1 string) map[string]Pod {
		return map[string]Pod{"c-0": {Ready: true, Version: v36, Config: "old"}, "c-1": {Version: v36, Config: c1},
			"c-2": {Ready: true, Version: v36, Config: "old"}}
	}
	o := Observed{Cluster: "c", Replicas: 3, Version: v36, Config: "new", Reachable: true, LeaderID: 1, Members: three}
	o.Pods = pods("new")
	if st := Plan(o); st.Action != ActWaitHealthy || !strings.Contains(st.Reason, "rollout waits") {
		t.Fatalf("restarted member unhealthy: %+v", st)
	}
	o.Pods = pods("old")
	if st := Plan(o); st.Action != ActWaitHealthy || strings.Contains(st.Reason, "rollout waits") {
		t.Fatalf("a member not restarted yet is not the one holding the rollout: %+v", st)
	}
}
