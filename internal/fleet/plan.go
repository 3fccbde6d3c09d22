// Package fleet is the fleet operator: ClusterUpgrade rolls one release
// out over many KubeClusters — canaries, then waves of maxParallel, each
// cluster gated on its health, halting when failures pass the budget.
//
// A pass observes the selected clusters and their health (observe.go),
// plans with Plan (pure, this file), journals the plan in the
// ClusterUpgrade's status and only then sets spec.version of the clusters
// it starts (controller.go). A restarted operator reads the journal: a
// cluster is started at most once, and never more than maxParallel at once.
package fleet

import (
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/kube"
)

// Cluster is one KubeCluster as a pass sees it.
type Cluster struct {
	Namespace, Name string
	// Selected: matches the selector (and the namespace selector).
	Selected bool
	// Canary: matches the canary selector.
	Canary bool
	// Version is spec.version.
	Version    string
	Hibernated bool
	// Deleting: the KubeCluster is being deleted.
	Deleting bool
	// Health is the health gate's verdict at the target (see Gate);
	// meaningful while the cluster upgrades or failed.
	Health Health
	// HealthyParts are the addons and machines healthy now
	// (HealthyParts); recorded in the journal when the cluster starts.
	HealthyParts []string
	// Window: the cluster may start now (no maintenance windows, or one is
	// open); NextWindow is when the next one opens otherwise.
	Window     bool
	NextWindow time.Time
}

func (c *Cluster) key() string { return c.Namespace + "/" + c.Name }

// Health is the gate's verdict on one cluster.
type Health struct {
	// Healthy: every check of the gate passed.
	Healthy bool
	// Failing is set when something is already broken for good enough to
	// stop waiting (a crash-looping control-plane pod, an image that
	// cannot be pulled), in that thing's own words.
	Failing string
	// Waiting says what the gate still waits for.
	Waiting string
}

// Plan is a pass's decision: the new list of clusters with their states
// (the journal, written before anything is started) and the clusters
// whose spec.version is to be set to the target.
type Plan struct {
	Targets []clusterv1.ClusterUpgradeTarget
	// Start are namespace/name of clusters whose spec.version is set to
	// the target this pass: the ones started now and the ones the journal
	// says were started but still show an older version (a pass that
	// stopped between the two writes).
	Start []string
	// Wave in progress, and the number of waves.
	Wave, Waves int32
	// SoakUntil: the next wave waits until then (nil: no soak pending).
	SoakUntil *metav1.Time
	// Failed counts the clusters that failed; Halted when they exceed the
	// budget.
	Failed int32
	Halted bool
	// Done: nothing is pending or upgrading.
	Done bool
	// Events are what changed, one line each, for events and logs.
	Events []string
}

// PlanInput is everything Plan decides from.
type PlanInput struct {
	Spec clusterv1.ClusterUpgradeSpec
	// Targets is the journal (status.clusters) from the last pass.
	Targets []clusterv1.ClusterUpgradeTarget
	// Clusters are every KubeCluster that matches the selector or is in
	// the journal.
	Clusters []Cluster
	Now      time.Time
}

// terminal states need nothing more from the rollout.
func terminal(state string) bool {
	switch state {
	case clusterv1.UpgradeSucceeded, clusterv1.UpgradeSkipped, clusterv1.UpgradeHibernated, clusterv1.UpgradeRemoved:
		return true
	}
	return false
}

// skipReason says why a cluster at version needs no upgrade to `to`, or
// cannot have it in one step; "" when it is to be upgraded.
func skipReason(version, to string) string {
	switch {
	case kube.CompareVersions(version, to) >= 0:
		return fmt.Sprintf("already at %s (target %s): never downgraded", version, to)
	case kube.MinorVersion(to) > kube.MinorVersion(version)+1:
		return fmt.Sprintf("at %s: Kubernetes upgrades one minor version at a time; upgrade it to v1.%d first", version, kube.MinorVersion(to)-1)
	}
	return ""
}

// PlanRollout decides a pass of the rollout. It is pure: the same input
// gives the same plan.
func PlanRollout(in PlanInput) Plan {
	now := metav1.NewTime(in.Now)
	to := in.Spec.To
	maxParallel := max(in.Spec.MaxParallel, 1)
	byKey := map[string]*Cluster{}
	for i := range in.Clusters {
		byKey[in.Clusters[i].key()] = &in.Clusters[i]
	}
	var p Plan
	p.Targets = make([]clusterv1.ClusterUpgradeTarget, len(in.Targets))
	copy(p.Targets, in.Targets)

	// Membership: new clusters join, left or deleted ones are removed.
	known := map[string]bool{}
	for _, t := range p.Targets {
		known[t.Namespace+"/"+t.Name] = true
	}
	var joining []*Cluster
	for i := range in.Clusters {
		c := &in.Clusters[i]
		if c.Selected && !c.Deleting && !known[c.key()] {
			joining = append(joining, c)
		}
	}
	slices.SortFunc(joining, func(a, b *Cluster) int {
		if a.Canary != b.Canary { // canaries first
			if a.Canary {
				return -1
			}
			return 1
		}
		return strings.Compare(a.key(), b.key())
	})
	isCanary := func(ns, name string) bool { c := byKey[ns+"/"+name]; return c != nil && c.Canary }
	p.Targets = append(p.Targets, assignWaves(p.Targets, joining, isCanary, maxParallel, to)...)
	for i := range p.Targets {
		t := &p.Targets[i]
		c := byKey[t.Namespace+"/"+t.Name]
		if c != nil && !known[c.key()] && t.State == clusterv1.UpgradeSkipped {
			p.event("%s/%s skipped: %s", t.Namespace, t.Name, t.Message)
		}
		if (c == nil || !c.Selected || c.Deleting) && !terminal(t.State) {
			why := "left the selection"
			if c == nil || c.Deleting {
				why = "was deleted"
			}
			t.State, t.Message, t.FinishTime = clusterv1.UpgradeRemoved, why+" while "+t.State, &now
			p.event("%s/%s removed from the rollout: it %s", t.Namespace, t.Name, why)
		}
	}

	// Gate the clusters on their way, and failed ones again (a fix
	// brings them back).
	timeout := 10 * time.Minute
	if in.Spec.HealthTimeout != nil {
		timeout = in.Spec.HealthTimeout.Duration
	}
	for i := range p.Targets {
		t := &p.Targets[i]
		c := byKey[t.Namespace+"/"+t.Name]
		if c == nil || (t.State != clusterv1.UpgradeUpgrading && t.State != clusterv1.UpgradeFailed) {
			continue
		}
		h := c.Health
		switch {
		case h.Healthy:
			if t.State == clusterv1.UpgradeFailed {
				p.event("%s/%s recovered: healthy at %s", t.Namespace, t.Name, to)
			} else {
				p.event("%s/%s upgraded to %s", t.Namespace, t.Name, to)
			}
			t.State, t.Message, t.FinishTime = clusterv1.UpgradeSucceeded, "healthy at "+to, &now
		case t.State == clusterv1.UpgradeFailed:
			if h.Failing != "" {
				t.Message = h.Failing
			}
		case h.Failing != "":
			t.State, t.Message, t.FinishTime = clusterv1.UpgradeFailed, h.Failing, &now
			p.event("%s/%s failed: %s", t.Namespace, t.Name, h.Failing)
		case t.StartTime != nil && in.Now.Sub(t.StartTime.Time) > timeout:
			t.State, t.FinishTime = clusterv1.UpgradeFailed, &now
			t.Message = fmt.Sprintf("not healthy %s after the upgrade started: %s", timeout, h.Waiting)
			p.event("%s/%s failed: %s", t.Namespace, t.Name, t.Message)
		default:
			t.Message = h.Waiting
		}
	}
	// A pending cluster someone upgraded by hand meanwhile is skipped.
	for i := range p.Targets {
		t := &p.Targets[i]
		if c := byKey[t.Namespace+"/"+t.Name]; c != nil && t.State == clusterv1.UpgradePending {
			if why := skipReason(c.Version, to); why != "" {
				t.State, t.Message, t.FinishTime = clusterv1.UpgradeSkipped, why, &now
				p.event("%s/%s skipped: %s", t.Namespace, t.Name, why)
			}
		}
	}

	// Where the rollout stands.
	inFlight := int32(0)
	p.Wave = -1
	for _, t := range p.Targets {
		p.Waves = max(p.Waves, t.Wave+1)
		switch t.State {
		case clusterv1.UpgradeFailed:
			p.Failed++
		case clusterv1.UpgradeUpgrading:
			inFlight++
		}
		if !terminal(t.State) && t.State != clusterv1.UpgradeFailed && (p.Wave < 0 || t.Wave < p.Wave) {
			p.Wave = t.Wave
		}
	}
	p.Halted = p.Failed > in.Spec.FailureBudget
	if p.Wave < 0 {
		p.Done = true
		p.Wave = max(p.Waves-1, 0)
	}

	// Start what the wave, maxParallel, the soak, the windows and the
	// budget allow.
	if !p.Done && !p.Halted && !in.Spec.Paused {
		if p.SoakUntil = soakUntil(p.Targets, p.Wave, in.Spec.Soak); p.SoakUntil != nil && !in.Now.Before(p.SoakUntil.Time) {
			p.SoakUntil = nil // soaked
		}
		if p.SoakUntil == nil {
			p.startWave(byKey, to, maxParallel-inFlight, now)
		}
	}
	// Every cluster the journal says is upgrading gets the target (again,
	// when a pass stopped between the journal and the cluster).
	for _, t := range p.Targets {
		c := byKey[t.Namespace+"/"+t.Name]
		if t.State == clusterv1.UpgradeUpgrading && c != nil && c.Version != to && !slices.Contains(p.Start, c.key()) {
			p.Start = append(p.Start, c.key())
		}
	}
	return p
}

func (p *Plan) event(format string, args ...any) {
	p.Events = append(p.Events, fmt.Sprintf(format, args...))
}

// startWave starts up to room Pending clusters of the wave in progress:
// a hibernated one gets the target and is done, one outside its
// maintenance window waits, the others upgrade.
func (p *Plan) startWave(byKey map[string]*Cluster, to string, room int32, now metav1.Time) {
	for i := range p.Targets {
		t := &p.Targets[i]
		c := byKey[t.Namespace+"/"+t.Name]
		if t.Wave != p.Wave || t.State != clusterv1.UpgradePending || c == nil || room <= 0 {
			continue
		}
		switch {
		case c.Hibernated:
			// Nothing runs to gate: the cluster wakes at the target,
			// gated by its own operator then.
			t.State, t.StartTime, t.FinishTime = clusterv1.UpgradeHibernated, &now, &now
			t.Message = "hibernated: spec.version set; it wakes at " + to
			p.Start = append(p.Start, c.key())
			p.event("%s/%s is hibernated: it wakes at %s", t.Namespace, t.Name, to)
		case !c.Window:
			t.Message = "waiting for its maintenance window (next opens " + c.NextWindow.UTC().Format(time.RFC3339) + ")"
		default:
			t.State, t.StartTime, t.Message = clusterv1.UpgradeUpgrading, &now, "spec.version set to "+to
			t.HealthyAtStart = c.HealthyParts
			room--
			p.event("%s/%s upgrading %s → %s (wave %d)", t.Namespace, t.Name, t.From, to, t.Wave)
		}
	}
}

// assignWaves places joining clusters (canaries first) after the journal's.
// While no wave exists or the canary wave has not started, canaries go to
// wave 0; every other cluster fills waves of maxParallel. A cluster that
// joins later goes to the last wave if it is not the canaries', has not
// started and has room, else to a new one: never into a wave under way.
func assignWaves(journal []clusterv1.ClusterUpgradeTarget, joining []*Cluster, isCanary func(ns, name string) bool, maxParallel int32, to string) []clusterv1.ClusterUpgradeTarget {
	last, size, started, canaryWave := int32(-1), int32(0), false, false
	for _, t := range journal {
		if t.Wave > last {
			last, size, started = t.Wave, 0, false
		}
		if t.State != clusterv1.UpgradeSkipped {
			size++
		}
		started = started || (t.State != clusterv1.UpgradePending && t.State != clusterv1.UpgradeSkipped)
		canaryWave = last == 0 && isCanary(t.Namespace, t.Name)
	}
	var out []clusterv1.ClusterUpgradeTarget
	for _, c := range joining {
		t := clusterv1.ClusterUpgradeTarget{Namespace: c.Namespace, Name: c.Name, From: c.Version, State: clusterv1.UpgradePending}
		if why := skipReason(c.Version, to); why != "" {
			// Listed (in the wave at hand) but taking no room.
			t.State, t.Message, t.Wave = clusterv1.UpgradeSkipped, why, max(last, 0)
			out = append(out, t)
			continue
		}
		switch {
		case c.Canary && (last < 0 || (canaryWave && !started)):
			last, canaryWave = 0, true
		case last < 0 || canaryWave || started || size >= maxParallel:
			last, size, started, canaryWave = last+1, 0, false, false
		}
		t.Wave = last
		size++
		out = append(out, t)
	}
	return out
}

// soakUntil is when the wave may start: the last finish of the wave before
// it plus the soak, nil without a soak or before the first wave.
func soakUntil(targets []clusterv1.ClusterUpgradeTarget, wave int32, soak *metav1.Duration) *metav1.Time {
	if soak == nil || soak.Duration <= 0 {
		return nil
	}
	var last *metav1.Time
	for _, t := range targets {
		if t.Wave < wave && t.FinishTime != nil && t.State != clusterv1.UpgradeSkipped && (last == nil || t.FinishTime.After(last.Time)) {
			last = t.FinishTime
		}
	}
	if last == nil {
		return nil
	}
	until := metav1.NewTime(last.Add(soak.Duration))
	return &until
}
