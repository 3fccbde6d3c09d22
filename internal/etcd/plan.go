// Package etcd is the etcd operator. Its core is Plan: a pure function from
// the spec and what was observed (etcd's member list, the pods, the journal
// of the membership change in flight) to the single next step. The
// reconciler observes, calls Plan, journals the step in status, performs it
// and observes again. Membership changes happen one at a time, new members
// join as learners, and nothing is ever removed while it would cost quorum.
package etcd

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Member is an etcd member as etcd reports it, joined with its pod.
type Member struct {
	// Name is the member's name. etcd reports no name for a member that
	// has not started yet; the reconciler then derives it from the
	// member's peer URL, which names the member's stable DNS name.
	Name    string
	ID      uint64
	Learner bool
	// Started: the member has joined (etcd knows its name).
	Started bool
	// Healthy: it answered a linearizable health check.
	Healthy bool
	// RaftIndex is the member's applied raft index.
	RaftIndex uint64
	// Version is the etcd version the member's pod runs.
	Version string
	// DBSize and DBInUse are the backend's size and the part in use.
	DBSize, DBInUse int64
	// Alarms the member reports (NOSPACE, CORRUPT).
	Alarms []string
}

// Pod is a member pod as the API reports it.
type Pod struct {
	Name    string
	Ready   bool
	Version string
	// Config is the hash of the settings the pod was made with (empty for
	// pods made before the operator recorded it: taken as current).
	Config string
	// Terminating: the pod is being deleted.
	Terminating bool
	// DataLost: etcd refused the member as already bootstrapped (its data
	// directory is gone).
	DataLost bool
}

// Journal is the membership change in flight, written to status before the
// etcd call so that a crash between the call and the pod change converges.
type Journal struct {
	Type   Action // ActAddLearner, ActPromote, ActRemove
	Member string
	ID     uint64
}

// Observed is everything Plan looks at.
type Observed struct {
	Cluster  string
	Replicas int
	Version  string
	// Config is the hash of the member settings the spec asks for
	// (resources, quota, compaction, image); members made with other
	// settings restart one at a time, like an upgrade.
	Config string
	// Members is etcd's member list; nil when etcd could not be reached.
	Members []Member
	// Reachable: a member answered the member list.
	Reachable bool
	// LeaderID is the current leader's member ID (0 if unknown).
	LeaderID uint64
	Pods     map[string]Pod
	Journal  *Journal
	// KnownMembers are the members status last recorded whose volume still
	// exists: when no member answers, their pods can still come back.
	KnownMembers []string
	// LostVolumes names members whose claim is gone, being deleted or
	// lost, and with it their data.
	LostVolumes map[string]bool
	// Bootstrapped: the cluster has been created before (status says so).
	// A cluster that was bootstrapped and is unreachable is never
	// bootstrapped again: that would split it.
	Bootstrapped bool
	// DefragThreshold is the unused share of a backend (percent) that
	// calls for defragmenting it; 0 turns that off.
	DefragThreshold int
	// DefragDue: the defragmentation schedule says a round is due.
	DefragDue bool
	// AuthWanted is spec.enableAuth; AuthEnabled is what etcd says.
	AuthWanted, AuthEnabled bool
}

// Action is the next step.
type Action string

const (
	ActNone        Action = "None"
	ActBootstrap   Action = "Bootstrap"   // create the first member's pod, initial state new
	ActAddLearner  Action = "AddLearner"  // MemberAddAsLearner, then create its pod
	ActCreatePod   Action = "CreatePod"   // a known member's pod is missing: recreate it on its volume
	ActPromote     Action = "Promote"     // promote a caught-up learner
	ActRemove      Action = "Remove"      // MemberRemove, then delete its pod and volume
	ActDeletePod   Action = "DeletePod"   // delete a pod that belongs to no member
	ActUpgrade     Action = "Upgrade"     // recreate one member's pod at the desired version and settings
	ActMoveLeader  Action = "MoveLeader"  // hand leadership away before the leader restarts
	ActQuorumLost  Action = "QuorumLost"  // too few members; wait for a restore, never wipe
	ActWaitHealthy Action = "WaitHealthy" // a change is settling
	// ActRecoverSpace answers a NOSPACE alarm: compact, defragment every
	// member (followers first), disarm.
	ActRecoverSpace Action = "RecoverSpace"
	// ActDefrag defragments one member (Member set) or, for a scheduled
	// round, every member followers first (Member empty).
	ActDefrag Action = "Defragment"
	// ActEnableAuth and ActDisableAuth switch etcd authentication.
	ActEnableAuth  Action = "EnableAuth"
	ActDisableAuth Action = "DisableAuth"
)

// AlarmNoSpace is etcd's alarm for a backend that reached its quota.
const AlarmNoSpace = "NOSPACE"

// defragMinBytes: smaller backends are not worth defragmenting for
// fragmentation alone.
const defragMinBytes = 64 << 20

// Step is Plan's answer.
type Step struct {
	Action Action
	Member string
	ID     uint64
	// Target is the member leadership moves to (MoveLeader).
	Target uint64
	Reason string
}

func (s Step) String() string {
	out := string(s.Action)
	if s.Member != "" {
		out += " " + s.Member
	}
	if s.Reason != "" {
		out += ": " + s.Reason
	}
	return out
}

// MemberName is the name of the member with ordinal i.
func MemberName(cluster string, i int) string { return fmt.Sprintf("%s-%d", cluster, i) }

// ordinal parses the ordinal off a member name (-1 if it has none).
func ordinal(cluster, name string) int {
	if !strings.HasPrefix(name, cluster+"-") {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimPrefix(name, cluster+"-"))
	if err != nil {
		return -1
	}
	return n
}

// learnerCaughtUp: a learner within this many raft entries of the leader
// is promoted.
const learnerCaughtUp = 1000

// Plan returns the next step for the cluster.
func Plan(o Observed) Step {
	// 1. Nothing reachable. A journaled change waits for quorum to return;
	// what can come back without etcd (pods of members with volumes) does.
	if !o.Reachable {
		if !o.Bootstrapped {
			first := MemberName(o.Cluster, 0)
			if _, ok := o.Pods[first]; ok {
				return Step{Action: ActWaitHealthy, Member: first, Reason: "first member starting"}
			}
			return Step{Action: ActBootstrap, Member: first, Reason: "new cluster"}
		}
		// Pods that are merely missing come back on their volumes; if they
		// exist and still nothing answers, quorum is lost.
		for _, name := range slices.Sorted(maps.Keys(o.Pods)) {
			if o.Pods[name].Terminating {
				return Step{Action: ActWaitHealthy, Member: name, Reason: "pod terminating"}
			}
		}
		for _, name := range slices.Sorted(slices.Values(o.KnownMembers)) {
			if _, ok := o.Pods[name]; !ok {
				return Step{Action: ActCreatePod, Member: name, Reason: "member pod missing and no member answers; recreating it on its volume"}
			}
		}
		pending := ""
		if o.Journal != nil {
			pending = fmt.Sprintf("; %s %s resumes when quorum returns", o.Journal.Type, o.Journal.Member)
		}
		if len(o.Pods) == 0 {
			return Step{Action: ActQuorumLost, Reason: "no member pods and no member reachable; recover with an EtcdRestore" + pending}
		}
		return Step{Action: ActQuorumLost, Reason: "no member answers; waiting for members to return (no automatic wipe)" + pending}
	}

	// 2. A journaled change is finished before anything else.
	if o.Journal != nil {
		if s, done := finishJournal(o); !done {
			return s
		}
	}

	voters, learners := split(o.Members)
	healthyVoters := 0
	for _, m := range voters {
		if m.Healthy {
			healthyVoters++
		}
	}
	quorum := len(voters)/2 + 1

	// 3. Every member needs its pod. A member whose data is lost is
	// replaced: removed (if that keeps quorum), then re-added as a learner.
	for _, m := range o.Members {
		p, ok := o.Pods[m.Name]
		// Without its claim a member's pod would start empty; a learner
		// that never ran and has no pod yet just gets its first claim.
		if ok && p.DataLost || o.LostVolumes[m.Name] && (ok || m.Started) {
			if !m.Learner && healthyVoters-boolInt(m.Healthy) < quorumAfterRemove(len(voters)) {
				return Step{Action: ActQuorumLost, Member: m.Name, Reason: "replacing this member now would lose quorum"}
			}
			return Step{Action: ActRemove, Member: m.Name, ID: m.ID, Reason: "member data lost; replacing it"}
		}
		if !ok {
			return Step{Action: ActCreatePod, Member: m.Name, ID: m.ID, Reason: "member pod missing; recreating it on its volume"}
		}
	}

	// 4. Pods that belong to no member (a removal finished, or an add that
	// never reached etcd) go.
	known := map[string]bool{}
	for _, m := range o.Members {
		known[m.Name] = true
	}
	for _, name := range slices.Sorted(maps.Keys(o.Pods)) {
		if !known[name] && !o.Pods[name].Terminating {
			return Step{Action: ActDeletePod, Member: name, Reason: "pod belongs to no member"}
		}
	}

	// 5. Wait for the cluster to be healthy before the next change.
	if healthyVoters < quorum {
		return Step{Action: ActQuorumLost, Reason: fmt.Sprintf("%d of %d voting members healthy", healthyVoters, len(voters))}
	}
	// A backend at its quota refuses writes (and fails readiness) until
	// space is reclaimed and the alarm disarmed.
	for _, m := range o.Members {
		if slices.Contains(m.Alarms, AlarmNoSpace) {
			return Step{Action: ActRecoverSpace, Member: m.Name, Reason: "NOSPACE alarm: compacting, defragmenting and disarming"}
		}
	}
	// A learner's pod is never Ready (etcd's /readyz wants linearizable
	// reads, which learners cannot serve), which keeps it out of the client
	// Service; its health comes from etcd itself.
	for _, m := range o.Members {
		if !m.Healthy || (!m.Learner && !o.Pods[m.Name].Ready) {
			if m.Learner && !m.Started {
				return Step{Action: ActWaitHealthy, Member: m.Name, Reason: "learner joining"}
			}
			if !m.Learner && !stalePod(o, o.Pods[m.Name]) && len(staleVoters(o, voters)) > 0 {
				return Step{Action: ActWaitHealthy, Member: m.Name, Reason: fmt.Sprintf(
					"%s restarted at %s is not healthy yet: the rollout waits for it and changes no other member", m.Name, o.Version)}
			}
			return Step{Action: ActWaitHealthy, Member: m.Name, Reason: "member not healthy yet"}
		}
	}

	// 6. Promote caught-up learners.
	// (one at a time: there is at most one learner)
	if len(learners) > 0 {
		l := learners[0]
		if caughtUp(l, o) {
			return Step{Action: ActPromote, Member: l.Name, ID: l.ID, Reason: "learner caught up"}
		}
		return Step{Action: ActWaitHealthy, Member: l.Name, Reason: "learner catching up"}
	}

	// 7. Scale.
	if len(voters) < o.Replicas {
		return Step{Action: ActAddLearner, Member: MemberName(o.Cluster, nextOrdinal(o)), Reason: fmt.Sprintf("scaling out to %d", o.Replicas)}
	}
	if len(voters) > o.Replicas {
		victim := removalCandidate(voters, o.LeaderID)
		return Step{Action: ActRemove, Member: victim.Name, ID: victim.ID, Reason: fmt.Sprintf("scaling in to %d", o.Replicas)}
	}

	// 8. Upgrade (a new version or changed settings), followers first; the
	// leader last, after handing off.
	if stale := staleVoters(o, voters); len(stale) > 0 {
		sort.Slice(stale, func(i, j int) bool {
			li, lj := stale[i].ID == o.LeaderID, stale[j].ID == o.LeaderID
			if li != lj {
				return !li
			}
			return stale[i].Name < stale[j].Name
		})
		m := stale[0]
		if m.ID == o.LeaderID && len(voters) > 1 {
			for _, t := range voters {
				if t.ID != m.ID && t.Healthy {
					return Step{Action: ActMoveLeader, Member: m.Name, ID: m.ID, Target: t.ID, Reason: "moving leadership before the leader restarts"}
				}
			}
		}
		reason := fmt.Sprintf("upgrading %s → %s", o.Pods[m.Name].Version, o.Version)
		if o.Pods[m.Name].Version == o.Version {
			reason = "restarting with changed settings"
		}
		return Step{Action: ActUpgrade, Member: m.Name, ID: m.ID, Reason: reason}
	}

	// 9. Authentication, once the cluster is whole.
	if o.AuthWanted != o.AuthEnabled {
		if o.AuthWanted {
			return Step{Action: ActEnableAuth, Reason: "spec.enableAuth"}
		}
		return Step{Action: ActDisableAuth, Reason: "spec.enableAuth is off"}
	}

	// 10. Maintenance, when nothing else is going on: a scheduled round, or
	// a member whose backend is mostly unused space; followers first.
	if o.DefragDue {
		return Step{Action: ActDefrag, Reason: "scheduled defragmentation"}
	}
	if o.DefragThreshold > 0 {
		for _, m := range defragOrder(voters, o.LeaderID) {
			if m.DBSize >= defragMinBytes && (m.DBSize-m.DBInUse)*100 >= int64(o.DefragThreshold)*m.DBSize {
				return Step{Action: ActDefrag, Member: m.Name, ID: m.ID,
					Reason: fmt.Sprintf("%d%% of %d MiB unused", (m.DBSize-m.DBInUse)*100/m.DBSize, m.DBSize>>20)}
			}
		}
	}
	return Step{Action: ActNone}
}

// staleVoters are the voters whose pods run another version or other
// settings than the spec's.
func staleVoters(o Observed, voters []Member) []Member {
	var stale []Member
	for _, m := range voters {
		if stalePod(o, o.Pods[m.Name]) {
			stale = append(stale, m)
		}
	}
	return stale
}

// stalePod: the pod runs another version, or settings other than the
// spec's (pods that recorded none are taken as current).
func stalePod(o Observed, p Pod) bool {
	return p.Version != o.Version || p.Config != "" && o.Config != "" && p.Config != o.Config
}

// defragOrder lists members followers first, the leader last: defragmenting
// blocks a member's reads and writes for a while.
func defragOrder(ms []Member, leader uint64) []Member {
	out := slices.Clone(ms)
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID != leader && out[j].ID == leader })
	return out
}

// finishJournal decides what a journaled change still needs. done means the
// journal can be cleared and planning continues.
func finishJournal(o Observed) (Step, bool) {
	j := o.Journal
	if !o.Reachable {
		return Step{Action: ActWaitHealthy, Member: j.Member, Reason: "waiting for etcd to finish " + string(j.Type)}, false
	}
	var mem *Member
	for i := range o.Members {
		if o.Members[i].Name == j.Member || (j.ID != 0 && o.Members[i].ID == j.ID) {
			mem = &o.Members[i]
		}
	}
	_, hasPod := o.Pods[j.Member]
	switch j.Type {
	case ActAddLearner:
		if mem == nil {
			// The add never reached etcd (crash before the call): do it.
			return Step{Action: ActAddLearner, Member: j.Member, Reason: "resuming journaled add"}, false
		}
		if !hasPod {
			return Step{Action: ActCreatePod, Member: j.Member, ID: mem.ID, Reason: "resuming journaled add: creating the pod"}, false
		}
		return Step{}, true
	case ActRemove:
		if mem != nil {
			return Step{Action: ActRemove, Member: j.Member, ID: mem.ID, Reason: "resuming journaled removal"}, false
		}
		if hasPod {
			return Step{Action: ActDeletePod, Member: j.Member, Reason: "resuming journaled removal: deleting the pod"}, false
		}
		return Step{}, true
	case ActPromote:
		if mem != nil && mem.Learner {
			return Step{Action: ActPromote, Member: j.Member, ID: mem.ID, Reason: "resuming journaled promotion"}, false
		}
		return Step{}, true
	}
	return Step{}, true
}

func split(ms []Member) (voters, learners []Member) {
	for _, m := range ms {
		if m.Learner {
			learners = append(learners, m)
		} else {
			voters = append(voters, m)
		}
	}
	byOrdinal := func(ms []Member) func(i, j int) bool {
		return func(i, j int) bool {
			if len(ms[i].Name) != len(ms[j].Name) {
				return len(ms[i].Name) < len(ms[j].Name)
			}
			return ms[i].Name < ms[j].Name
		}
	}
	sort.Slice(voters, byOrdinal(voters))
	sort.Slice(learners, byOrdinal(learners))
	return voters, learners
}

func quorumAfterRemove(voters int) int { return (voters-1)/2 + 1 }

func caughtUp(l Member, o Observed) bool {
	var leaderIndex uint64
	for _, m := range o.Members {
		if m.ID == o.LeaderID {
			leaderIndex = m.RaftIndex
		}
	}
	return l.Started && l.Healthy && leaderIndex > 0 && l.RaftIndex+learnerCaughtUp >= leaderIndex
}

// removalCandidate picks the member a scale-in removes: never the leader
// while another choice exists; the highest ordinal otherwise.
func removalCandidate(voters []Member, leader uint64) Member {
	c := voters[len(voters)-1]
	for i := len(voters) - 1; i >= 0; i-- {
		if voters[i].ID != leader {
			return voters[i]
		}
	}
	return c
}

func nextOrdinal(o Observed) int {
	next := 0
	for _, m := range o.Members {
		if n := ordinal(o.Cluster, m.Name); n >= next {
			next = n + 1
		}
	}
	for name := range o.Pods {
		if n := ordinal(o.Cluster, name); n >= next {
			next = n + 1
		}
	}
	return next
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
