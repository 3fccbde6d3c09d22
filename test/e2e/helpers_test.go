//go:build e2e

// Package e2e holds kok's end-to-end tests. They run on a real local meta
// cluster (kok up) and need root; run them with `make e2e` or `make test`.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// repoRoot is the module root, two levels above this file.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// kokBin is the kok binary `make build` wrote.
func kokBin(t *testing.T) string {
	t.Helper()
	p := filepath.Join(repoRoot(), "bin", "kok")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s missing: run `make build` first (make e2e does)", p)
	}
	return p
}

// kok runs the kok CLI with a state directory and returns its output.
func kok(t *testing.T, stateDir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	full := append(slices.Clone(args), "--state-dir", stateDir)
	cmd := exec.CommandContext(ctx, kokBin(t), full...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("kok %s (%.1fs):\n%s", strings.Join(full, " "), time.Since(start).Seconds(), out.String())
	return out.String(), err
}

func mustKok(t *testing.T, stateDir string, args ...string) string {
	t.Helper()
	out, err := kok(t, stateDir, args...)
	if err != nil {
		t.Fatalf("kok %v: %v", args, err)
	}
	return out
}

func clientset(t *testing.T, kubeconfig string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// consistently polls f for d and fails as soon as f fails: a bounded
// check that something does not happen (instead of a sleep and one look).
func consistently(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// eventually polls f until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// waitPodsReady waits until n pods matching selector are Ready.
func waitPodsReady(t *testing.T, cs kubernetes.Interface, ns, selector string, n int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%d ready pods %s in %s", n, selector, ns), func() error {
		pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		ready := 0
		for i := range pods.Items {
			if pods.Items[i].DeletionTimestamp == nil && podReady(&pods.Items[i]) {
				ready++
			}
		}
		if ready < n {
			return fmt.Errorf("%d/%d ready", ready, n)
		}
		return nil
	})
}

// runPodToCompletion runs a one-shot pod and returns its log; it fails the
// test unless the pod succeeds.
func runPodToCompletion(t *testing.T, cs kubernetes.Interface, pod *corev1.Pod, timeout time.Duration) string {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var phase corev1.PodPhase
	eventually(t, timeout, "pod "+pod.Name+" completes", func() error {
		p, err := cs.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		phase = p.Status.Phase
		if phase == corev1.PodSucceeded || phase == corev1.PodFailed {
			return nil
		}
		return fmt.Errorf("phase %s", phase)
	})
	logs, _ := cs.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
	if phase != corev1.PodSucceeded {
		t.Fatalf("pod %s %s; log:\n%s", pod.Name, phase, logs)
	}
	return string(logs)
}

// tally counts calls that succeeded and failed, keeping each failure with
// its time; safe for concurrent use.
type tally struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	failures   []string
}

func (t *tally) record(err error) {
	if err == nil {
		t.ok.Add(1)
		return
	}
	t.failed.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failures = append(t.failures, fmt.Sprintf("%s %v", time.Now().Format("15:04:05.000"), err))
}

func (t *tally) list() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.failures, "\n")
}
