package agent

import (
	"crypto/x509"
	"io"
	"log"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestLinkDesired: a Secret's desired state is written to desired.json and
// wakes the daemon only when it is new and valid.
func TestLinkDesired(t *testing.T) {
	p := Paths{Dir: t.TempDir()}
	wake := make(chan struct{}, 1)
	l := NewLink(ClusterLink{Namespace: "kok-system", Object: "node-w1", Node: "w1"}, p, log.New(io.Discard, "", 0), wake)
	secret := func(data string) *corev1.Secret {
		return &corev1.Secret{Data: map[string][]byte{DesiredKey: []byte(data)}}
	}
	woken := func() bool {
		select {
		case <-wake:
			return true
		default:
			return false
		}
	}
	d1 := `{"machine":"a/w1","components":[{"name":"x","version":"1","variant":"v","scripts":{},"hash":"sha256:1"}]}`
	l.desired(secret(d1))
	if got, _ := os.ReadFile(p.Desired()); string(got) != d1 || !woken() {
		t.Fatalf("a new desired state: file %q, woken false", got)
	}
	l.desired(secret(d1))
	if woken() {
		t.Error("the same desired state woke the daemon")
	}
	l.desired(secret(`{"components": 7}`))
	if got, _ := os.ReadFile(p.Desired()); string(got) != d1 || woken() {
		t.Errorf("an invalid desired state replaced the valid one: %q", got)
	}
	l.desired(secret(""))
	if got, _ := os.ReadFile(p.Desired()); string(got) != d1 {
		t.Errorf("an empty Secret replaced the desired state: %q", got)
	}
}

func TestRenewalTime(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &x509.Certificate{NotBefore: start, NotAfter: start.Add(100 * time.Hour)}
	if got := RenewalTime(c); !got.Equal(start.Add(70 * time.Hour)) {
		t.Errorf("renewal at %s, want 70%% of the certificate's life", got)
	}
}
