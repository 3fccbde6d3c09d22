package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSummaryKeepsLatestOfEachRun(t *testing.T) {
	dir := t.TempDir()
	writeResult := func(name string, at time.Time, runs ...Run) {
		data, _ := json.Marshal(Result{Time: at, Commit: name, Runs: runs})
		if err := os.WriteFile(filepath.Join(dir, "platform-"+name+".json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	writeResult("old", t0, Run{Name: "cold", Seconds: 900}, Run{Name: "warm-restart", Seconds: 20})
	writeResult("new", t0.Add(time.Hour), Run{Name: "warm-restart", Seconds: 15})
	s := summary(dir)
	if !strings.Contains(s, "| cold | 900.0s") {
		t.Errorf("cold run from the older file missing:\n%s", s)
	}
	if !strings.Contains(s, "| warm-restart | 15.0s") || strings.Contains(s, "| warm-restart | 20.0s") {
		t.Errorf("want only the newer warm-restart:\n%s", s)
	}
}
