package workload

import (
	"testing"
	"time"
)

// TestCacheSweep: entries not asked for within idleAfter are dropped, at
// most once per idleAfter.
func TestCacheSweep(t *testing.T) {
	now := time.Now()
	ws := &Cache{cache: map[string]cached{
		"used": {used: now.Add(-time.Minute)},
		"idle": {used: now.Add(-idleAfter)},
	}}
	ws.sweep(now)
	if _, ok := ws.cache["idle"]; ok || ws.Len() != 1 {
		t.Fatalf("after a sweep: %v", ws.cache)
	}
	ws.cache["idle"] = cached{used: now.Add(-2 * idleAfter)}
	ws.sweep(now.Add(time.Minute))
	if ws.Len() != 2 {
		t.Fatal("a second sweep within idleAfter must not run")
	}
	ws.sweep(now.Add(idleAfter))
	if ws.Len() != 0 {
		t.Fatalf("after idleAfter: %v", ws.cache)
	}
}
