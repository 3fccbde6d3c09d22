package clusterctl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
)

// UpgradeOptions are what `kok upgrade` asks for.
type UpgradeOptions struct {
	Name          string
	To            string
	Selector      string
	Canary        string
	MaxParallel   int32
	FailureBudget int32
	Soak          time.Duration
	HealthTimeout time.Duration
}

// StartUpgrade creates the ClusterUpgrade of o.
func StartUpgrade(ctx context.Context, c client.Client, o UpgradeOptions) (*clusterv1.ClusterUpgrade, error) {
	sel, err := metav1.ParseToLabelSelector(o.Selector)
	if err != nil {
		return nil, fmt.Errorf("--selector %q: %w", o.Selector, err)
	}
	cu := &clusterv1.ClusterUpgrade{ObjectMeta: metav1.ObjectMeta{Name: o.Name}, Spec: clusterv1.ClusterUpgradeSpec{To: o.To,
		Selector: *sel, MaxParallel: o.MaxParallel, FailureBudget: o.FailureBudget}}
	if o.Name == "" {
		cu.GenerateName = "upgrade-" + strings.ReplaceAll(o.To, ".", "-") + "-"
	}
	if o.Canary != "" {
		if cu.Spec.Canary, err = metav1.ParseToLabelSelector(o.Canary); err != nil {
			return nil, fmt.Errorf("--canary %q: %w", o.Canary, err)
		}
	}
	if o.Soak > 0 {
		cu.Spec.Soak = &metav1.Duration{Duration: o.Soak}
	}
	if o.HealthTimeout > 0 {
		cu.Spec.HealthTimeout = &metav1.Duration{Duration: o.HealthTimeout}
	}
	if err := c.Create(ctx, cu); err != nil {
		return nil, err
	}
	return cu, nil
}

// WatchUpgrade prints the rollout's progress whenever it changes until it
// finishes (nil) or halts (an error naming the failed clusters).
func WatchUpgrade(ctx context.Context, c client.Client, name string, out io.Writer) error {
	var w upgradeWatch
	for {
		cu := &clusterv1.ClusterUpgrade{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, cu); err != nil {
			return err
		}
		finished := cu.Status.ObservedGeneration == cu.Generation &&
			(cu.Status.Phase == clusterv1.RolloutSucceeded || cu.Status.Phase == clusterv1.RolloutHalted)
		_, _ = io.WriteString(out, w.next(cu, time.Now(), finished))
		if finished {
			if cu.Status.Phase == clusterv1.RolloutSucceeded {
				return nil
			}
			msg := ""
			if h := meta.FindStatusCondition(cu.Status.Conditions, clusterv1.ConditionHalted); h != nil {
				msg = h.Message
			}
			return fmt.Errorf("rollout %s halted: %s (fix the clusters and it resumes; kok upgrade status %s)", name, msg, name)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rollout %s: %w (it goes on in the meta cluster: kok upgrade status %s)", name, ctx.Err(), name)
		case <-time.After(time.Second):
		}
	}
}

// upgradeWatch turns successive looks at a rollout into a log: the whole
// view first and at the end, then a line when the rollout's summary
// changes and one per cluster whose state changed, with its message —
// not a redraw for each second that passed.
type upgradeWatch struct {
	started bool
	header  string
	states  map[string]string
}

func (w *upgradeWatch) next(cu *clusterv1.ClusterUpgrade, now time.Time, final bool) string {
	stamp := now.UTC().Format("15:04:05")
	view := RenderUpgrade(cu, now)
	s := &cu.Status
	header := fmt.Sprintf("%s %s %s %d/%d", s.Phase, s.Summary, s.SoakUntil, s.Wave, s.Waves)
	var b strings.Builder
	switch {
	case !w.started || final:
		fmt.Fprintf(&b, "--- %s\n%s", stamp, view)
	default:
		if header != w.header {
			fmt.Fprintf(&b, "%s %s\n", stamp, strings.SplitN(view, "\n", 2)[0])
		}
		for _, t := range s.Clusters {
			if prev, ok := w.states[t.Namespace+"/"+t.Name]; !ok || prev != t.State {
				fmt.Fprintf(&b, "%s   %s/%s wave %d %s → %s  %s\n", stamp, t.Namespace, t.Name, t.Wave, orDash(prev), t.State, t.Message)
			}
		}
	}
	w.started, w.header, w.states = true, header, map[string]string{}
	for _, t := range s.Clusters {
		w.states[t.Namespace+"/"+t.Name] = t.State
	}
	return b.String()
}

// PrintUpgrade prints the rollout once.
func PrintUpgrade(ctx context.Context, c client.Client, name string, out io.Writer) error {
	cu := &clusterv1.ClusterUpgrade{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, cu); err != nil {
		return err
	}
	_, err := io.WriteString(out, RenderUpgrade(cu, time.Now()))
	return err
}

// PauseUpgrade sets or clears spec.paused.
func PauseUpgrade(ctx context.Context, c client.Client, name string, paused bool) error {
	cu := &clusterv1.ClusterUpgrade{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, cu); err != nil {
		return err
	}
	patch := client.MergeFrom(cu.DeepCopy())
	cu.Spec.Paused = paused
	return c.Patch(ctx, cu, patch)
}

// RenderUpgrade is the rollout at a glance: a header with a bar, the
// waves and an ETA, then a line per cluster.
func RenderUpgrade(cu *clusterv1.ClusterUpgrade, now time.Time) string {
	s := &cu.Status
	var b strings.Builder
	const width = 30
	filled := 0
	if s.Total > 0 {
		filled = int(s.Done) * width / int(s.Total)
	}
	wave := "-"
	if s.Waves > 0 {
		wave = fmt.Sprintf("%d/%d", s.Wave+1, s.Waves)
	}
	fmt.Fprintf(&b, "%s → %s  %-9s [%s%s] %s  wave %s", cu.Name, cu.Spec.To, orDash(s.Phase),
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), orDash(s.Summary), wave)
	if eta := upgradeETA(cu, now); eta > 0 && s.Phase == clusterv1.RolloutRunning {
		fmt.Fprintf(&b, "  ETA %s", duration.HumanDuration(eta))
	}
	if s.SoakUntil != nil && s.SoakUntil.After(now) {
		fmt.Fprintf(&b, "  soaking %s", duration.HumanDuration(s.SoakUntil.Sub(now)))
	}
	b.WriteString("\n")
	if h := meta.FindStatusCondition(s.Conditions, clusterv1.ConditionHalted); h != nil && h.Status == metav1.ConditionTrue {
		fmt.Fprintf(&b, "  HALTED: %s\n", h.Message)
	} else if p := meta.FindStatusCondition(s.Conditions, clusterv1.ConditionProgressing); p != nil && p.Reason == "InvalidSpec" {
		fmt.Fprintf(&b, "  %s\n", p.Message)
	}
	for _, t := range s.Clusters {
		took := ""
		switch {
		case t.StartTime != nil && t.FinishTime != nil:
			took = duration.HumanDuration(t.FinishTime.Sub(t.StartTime.Time))
		case t.StartTime != nil:
			took = duration.HumanDuration(now.Sub(t.StartTime.Time))
		}
		fmt.Fprintf(&b, "  %-30s wave %-2d %-10s %-9s %-6s %s\n", t.Namespace+"/"+t.Name, t.Wave, t.State, t.From, took, t.Message)
	}
	return b.String()
}

// upgradeETA guesses the time left: the mean time of the clusters that
// finished, times the waves' worth of clusters still to go.
func upgradeETA(cu *clusterv1.ClusterUpgrade, now time.Time) time.Duration {
	var total time.Duration
	var n int
	left := 0
	for _, t := range cu.Status.Clusters {
		switch {
		case t.State == clusterv1.UpgradeSucceeded && t.StartTime != nil && t.FinishTime != nil:
			total += t.FinishTime.Sub(t.StartTime.Time)
			n++
		case t.State == clusterv1.UpgradePending || t.State == clusterv1.UpgradeUpgrading:
			left++
		}
	}
	if n == 0 || left == 0 {
		return 0
	}
	parallel := int(max(cu.Spec.MaxParallel, 1))
	soak := time.Duration(0)
	if cu.Spec.Soak != nil {
		soak = cu.Spec.Soak.Duration
	}
	waves := (left + parallel - 1) / parallel
	return time.Duration(waves) * (total/time.Duration(n) + soak)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
