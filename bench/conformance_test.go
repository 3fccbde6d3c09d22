package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The JUnit report ginkgo writes for e2e.test: passed, failed and skipped
// specs, each with its SIG.
func TestReadJUnit(t *testing.T) {
	const report = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="3" failures="1">
  <testsuite name="Kubernetes e2e suite" tests="3">
    <testcase name="[It] [sig-node] Pods should get a host IP [NodeConformance] [Conformance]" classname="Kubernetes e2e suite" time="4.2"></testcase>
    <testcase name="[sig-network] DNS should provide DNS for services [Conformance]" classname="Kubernetes e2e suite" time="61">
      <failure message="timed out waiting for the condition" type="failed">
        [FAILED] timed out waiting for the condition
      </failure>
    </testcase>
    <testcase name="[sig-storage] CSI mock volume [Serial]" classname="Kubernetes e2e suite" time="0">
      <skipped message="skipped - Only supported for providers [gce]"></skipped>
    </testcase>
  </testsuite>
</testsuites>`
	path := filepath.Join(t.TempDir(), "junit_01.xml")
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	specs, err := readJUnit(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []SpecResult{
		{Name: "[sig-node] Pods should get a host IP [NodeConformance] [Conformance]", SIG: "sig-node", State: "passed", Seconds: 4.2},
		{SIG: "sig-network", State: "failed", Message: "timed out waiting for the condition", Seconds: 61},
		{SIG: "sig-storage", State: "skipped", Message: "skipped - Only supported for providers [gce]"},
	}
	if len(specs) != len(want) {
		t.Fatalf("%d specs, want %d", len(specs), len(want))
	}
	for i, w := range want {
		got := specs[i]
		if w.Name != "" && got.Name != w.Name || got.SIG != w.SIG || got.State != w.State || got.Message != w.Message || got.Seconds != w.Seconds {
			t.Errorf("spec %d: %+v, want %+v", i, got, w)
		}
	}
}

// One process runs e2e.test itself; more run it under ginkgo, whose own
// flags come before the suite and the suite's after "--".
func TestSuiteCommand(t *testing.T) {
	res := &ConformanceResult{Focus: `\[Conformance\]`, Skip: "Slow", Procs: 1}
	cmd, args := suiteCommand("/b", res, "--kubeconfig=k")
	if want := "/b/e2e.test --kubeconfig=k --ginkgo.focus=\\[Conformance\\] --ginkgo.timeout=6h --ginkgo.no-color --ginkgo.v --ginkgo.skip=Slow"; cmd+" "+strings.Join(args, " ") != want {
		t.Errorf("one process: %s %v", cmd, args)
	}
	res.Procs = 3
	cmd, args = suiteCommand("/b", res, "--kubeconfig=k")
	if want := "/b/ginkgo --procs=3 --focus=\\[Conformance\\] --timeout=6h --no-color -v --skip=Slow /b/e2e.test -- --kubeconfig=k"; cmd+" "+strings.Join(args, " ") != want {
		t.Errorf("three processes: %s %v", cmd, args)
	}
}
