package fleet

import (
	"slices"
	"time"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
)

// InWindow reports whether one of the windows is open at now, and when
// the next one opens otherwise. No windows means always open.
func InWindow(windows []clusterv1.MaintenanceWindow, now time.Time) (bool, time.Time) {
	if len(windows) == 0 {
		return true, now
	}
	now = now.UTC()
	var next time.Time
	for _, w := range windows {
		start, err := time.Parse("15:04", w.Start)
		if err != nil {
			continue // the CRD's pattern keeps this from happening
		}
		// A window that opened up to a week ago may still be open; the
		// next eight days hold its next opening.
		day := time.Date(now.Year(), now.Month(), now.Day(), start.Hour(), start.Minute(), 0, 0, time.UTC)
		for d := -7; d <= 8; d++ {
			open := day.AddDate(0, 0, d)
			if len(w.Days) > 0 && !slices.Contains(w.Days, open.Weekday().String()) {
				continue
			}
			if !now.Before(open) && now.Before(open.Add(w.Duration.Duration)) {
				return true, now
			}
			if open.After(now) && (next.IsZero() || open.Before(next)) {
				next = open
			}
		}
	}
	return false, next
}
