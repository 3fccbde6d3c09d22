package fleet

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/conditions"
)

// computeStatus writes the rollout's status from the plan (or the problem
// that kept it from planning). It is the only place that sets
// ClusterUpgrade status.
func computeStatus(cu *clusterv1.ClusterUpgrade, plan *Plan, problem string, now time.Time) {
	s := &cu.Status
	set := func(t string, ok bool, reason, msg string) {
		conditions.Set(&s.Conditions, cu.Generation, t, ok, reason, msg)
	}
	s.ObservedGeneration = cu.Generation
	if problem != "" {
		set(clusterv1.ConditionProgressing, false, "InvalidSpec", problem)
		if s.Phase == "" {
			s.Phase = clusterv1.RolloutPending
		}
		return
	}
	s.Clusters = plan.Targets
	s.Wave, s.Waves, s.SoakUntil = plan.Wave, plan.Waves, plan.SoakUntil
	counts := map[string]int32{}
	s.StartTime = nil
	for _, t := range plan.Targets {
		counts[t.State]++
		if t.StartTime != nil && (s.StartTime == nil || t.StartTime.Before(s.StartTime)) {
			s.StartTime = t.StartTime // the first cluster's start
		}
	}
	s.Total = int32(len(plan.Targets))
	s.Upgrading, s.Failed = counts[clusterv1.UpgradeUpgrading], counts[clusterv1.UpgradeFailed]
	s.Done = counts[clusterv1.UpgradeSucceeded] + counts[clusterv1.UpgradeSkipped] + counts[clusterv1.UpgradeHibernated] + counts[clusterv1.UpgradeRemoved]
	s.Summary = summary(counts, s.Total)

	var failed []string
	for _, t := range plan.Targets {
		if t.State == clusterv1.UpgradeFailed {
			failed = append(failed, fmt.Sprintf("%s/%s: %s", t.Namespace, t.Name, t.Message))
		}
	}
	if plan.Halted {
		set(clusterv1.ConditionHalted, true, "FailureBudgetExceeded", fmt.Sprintf("%d failed, budget %d; no cluster starts until they pass the gate or leave the selection: %s",
			plan.Failed, cu.Spec.FailureBudget, strings.Join(failed, "; ")))
	} else {
		set(clusterv1.ConditionHalted, false, "WithinBudget", fmt.Sprintf("%d failed, budget %d", plan.Failed, cu.Spec.FailureBudget))
	}
	switch {
	case plan.Done && !plan.Halted:
		if s.CompletionTime == nil {
			done := metav1.NewTime(now)
			s.CompletionTime = &done
		}
		msg := fmt.Sprintf("every selected cluster is at %s or past it (%s)", cu.Spec.To, s.Summary)
		if len(failed) > 0 {
			msg = fmt.Sprintf("finished with failures within the budget: %s", strings.Join(failed, "; "))
		}
		set(clusterv1.ConditionComplete, true, "Finished", msg)
		set(clusterv1.ConditionProgressing, false, "Finished", msg)
		s.Phase = clusterv1.RolloutSucceeded
	case plan.Halted:
		set(clusterv1.ConditionComplete, false, "Halted", "halted: see the Halted condition")
		set(clusterv1.ConditionProgressing, false, "Halted", "halted: see the Halted condition")
		s.Phase = clusterv1.RolloutHalted
	case cu.Spec.Paused:
		set(clusterv1.ConditionComplete, false, "Paused", "spec.paused: no cluster starts; those upgrading are still gated")
		set(clusterv1.ConditionProgressing, false, "Paused", "spec.paused: no cluster starts; those upgrading are still gated")
		s.Phase = clusterv1.RolloutPaused
	default:
		msg := fmt.Sprintf("wave %d of %d: %s", plan.Wave+1, plan.Waves, s.Summary)
		if plan.SoakUntil != nil && plan.SoakUntil.After(now) {
			msg += "; soaking until " + plan.SoakUntil.UTC().Format(time.RFC3339)
		}
		set(clusterv1.ConditionComplete, false, "Running", msg)
		set(clusterv1.ConditionProgressing, true, "Running", msg)
		s.Phase = clusterv1.RolloutRunning
		if s.StartTime == nil {
			s.Phase = clusterv1.RolloutPending
		}
	}
	if s.Phase != clusterv1.RolloutSucceeded {
		s.CompletionTime = nil
	}
}

// summary is the counts in one line: "3/10 done, 2 upgrading, 1 failed".
func summary(counts map[string]int32, total int32) string {
	done := counts[clusterv1.UpgradeSucceeded] + counts[clusterv1.UpgradeSkipped] + counts[clusterv1.UpgradeHibernated] + counts[clusterv1.UpgradeRemoved]
	out := fmt.Sprintf("%d/%d done", done, total)
	for _, st := range []string{clusterv1.UpgradeUpgrading, clusterv1.UpgradeFailed, clusterv1.UpgradePending, clusterv1.UpgradeSkipped, clusterv1.UpgradeHibernated} {
		if n := counts[st]; n > 0 {
			out += fmt.Sprintf(", %d %s", n, strings.ToLower(st))
		}
	}
	return out
}
