//go:build envtest

package cluster_test

import (
	"testing"
	"time"

	"github.com/kubeonkube/kok/internal/testenv"
)

// TestMain runs the package's tests against one real kube-apiserver + etcd.
func TestMain(m *testing.M) { testenv.Main(m, nil) }

// waitFor polls f until it succeeds (30 s at most).
func waitFor(t *testing.T, what string, f func() error) {
	t.Helper()
	testenv.WaitFor(t, what, 30*time.Second, f)
}

// consistently checks for a second that f keeps succeeding.
func consistently(t *testing.T, what string, f func() error) {
	t.Helper()
	testenv.Consistently(t, what, time.Second, f)
}
