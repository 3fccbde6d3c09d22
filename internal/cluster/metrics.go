package cluster

import (
	"github.com/prometheus/client_golang/prometheus"
	certutil "k8s.io/client-go/util/cert"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/conditions"
	"github.com/kubeonkube/kok/internal/pki"
)

// Prometheus metrics of the cluster operator, served on kok-manager's
// metrics endpoint. Every series carries namespace and cluster.
var (
	clusterLabels = []string{"namespace", "cluster"}

	metricPhase = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_cluster_phase",
		Help: "1 for the KubeCluster's current phase (sum by (phase) counts clusters per phase)."}, []string{"namespace", "cluster", "phase"})
	metricReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_cluster_ready",
		Help: "1 when the KubeCluster's Ready condition is True."}, clusterLabels)
	metricUpgrading = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_cluster_upgrading",
		Help: "1 while spec.version differs from the version the control plane runs."}, clusterLabels)
	metricCertExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_cluster_certificate_expiry_timestamp_seconds",
		Help: "When each certificate of the cluster's PKI expires (tls.crt of its leaf Secrets, ca.crt of its CAs)."}, []string{"namespace", "cluster", "secret"})
)

func init() {
	metrics.Registry.MustRegister(metricPhase, metricReady, metricUpgrading, metricCertExpiry)
}

// recordMetrics publishes a pass's outcome; the phase and certificate
// series of the cluster are replaced as a whole.
func recordMetrics(kc *clusterv1.KubeCluster, st *state) {
	cl := prometheus.Labels{"namespace": kc.Namespace, "cluster": kc.Name}
	metricPhase.DeletePartialMatch(cl)
	metricPhase.With(prometheus.Labels{"namespace": kc.Namespace, "cluster": kc.Name, "phase": kc.Status.Phase}).Set(1)
	metricReady.With(cl).Set(b2f(conditions.IsTrue(kc.Status.Conditions, clusterv1.ConditionReady)))
	metricUpgrading.With(cl).Set(b2f(kc.Status.Version != "" && kc.Status.Version != kc.Spec.Version))
	if st == nil || st.secrets == nil {
		return
	}
	metricCertExpiry.DeletePartialMatch(cl)
	for name, s := range st.secrets {
		// A leaf's tls.crt; a CA Secret holds only ca.crt (and its key).
		data := s.Data[pki.KeyCert]
		if len(data) == 0 {
			data = s.Data[pki.KeyCA]
		}
		if certs, err := certutil.ParseCertsPEM(data); err == nil && len(certs) > 0 {
			cert := certs[0]
			metricCertExpiry.With(prometheus.Labels{"namespace": kc.Namespace, "cluster": kc.Name, "secret": name}).Set(float64(cert.NotAfter.Unix()))
		}
	}
}

// forgetMetrics drops every series of a deleted cluster.
func forgetMetrics(namespace, name string) {
	cl := prometheus.Labels{"namespace": namespace, "cluster": name}
	for _, v := range []*prometheus.GaugeVec{metricPhase, metricReady, metricUpgrading, metricCertExpiry} {
		v.DeletePartialMatch(cl)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
