package cluster

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/pki"
)

func TestRecordMetrics(t *testing.T) {
	ca, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}, Spec: clusterv1.KubeClusterSpec{Version: "v1.34.4"},
		Status: clusterv1.KubeClusterStatus{Phase: clusterv1.PhaseUpgrading, Version: "v1.33.13"}}
	st := &state{secrets: map[string]Secret{"a-ca": {Data: pki.SecretData{pki.KeyCA: ca.CertPEM()}}, "a-admin-kubeconfig": {}}}
	recordMetrics(kc, st)
	kc.Status.Phase = clusterv1.PhaseHibernated
	recordMetrics(kc, st)
	l := prometheus.Labels{"namespace": "ns", "cluster": "a"}
	if n := testutil.CollectAndCount(metricPhase); n != 1 {
		t.Fatalf("%d phase series, want the current phase only", n)
	}
	if v := testutil.ToFloat64(metricPhase.With(prometheus.Labels{"namespace": "ns", "cluster": "a", "phase": "Hibernated"})); v != 1 {
		t.Fatalf("phase Hibernated = %v", v)
	}
	if v := testutil.ToFloat64(metricUpgrading.With(l)); v != 1 {
		t.Fatalf("upgrading = %v", v)
	}
	expiry := testutil.ToFloat64(metricCertExpiry.With(prometheus.Labels{"namespace": "ns", "cluster": "a", "secret": "a-ca"}))
	if expiry < float64(time.Now().Add(365*24*time.Hour).Unix()) {
		t.Fatalf("CA expiry %v", expiry)
	}
	forgetMetrics("ns", "a")
	if n := testutil.CollectAndCount(metricCertExpiry) + testutil.CollectAndCount(metricPhase); n != 0 {
		t.Fatalf("%d series left after the cluster went", n)
	}
}
