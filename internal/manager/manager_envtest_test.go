//go:build envtest

package manager

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/kubeonkube/kok/internal/testenv"
)

// TestManagerServesProbes starts kok-manager against a real kube-apiserver
// (envtest, with binaries from `kok envtest-assets`) and checks its health
// and readiness endpoints.
func TestManagerServesProbes(t *testing.T) {
	cfg := testenv.Config
	probe := freeAddr(t)
	mgr, err := New(cfg, Options{MetricsAddr: "0", ProbeAddr: probe, LeaderElect: true, LeaderElectionNS: "default"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		// Start returns nil once its context is cancelled and it shut down
		// cleanly; anything else is a failed shutdown.
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	for _, path := range []string{"/healthz", "/readyz"} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get(fmt.Sprintf("http://%s%s", probe, path))
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ok: %v", path, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	select {
	case <-mgr.Elected():
	case <-time.After(30 * time.Second):
		t.Fatal("manager did not win leader election against a real apiserver")
	}
}

func TestUnknownControllerIsRefused(t *testing.T) {
	cfg := testenv.Config
	if _, err := New(cfg, Options{MetricsAddr: "0", ProbeAddr: "0", Controllers: []string{"nope"}}); err == nil {
		t.Fatal("want an error for an unknown controller")
	}
}

// TestMain runs the package's tests against one real kube-apiserver + etcd.
func TestMain(m *testing.M) { testenv.Main(m, nil) }

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
