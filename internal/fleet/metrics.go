package fleet

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
)

// Prometheus metrics of the fleet operator: each ClusterUpgrade's progress.
var (
	metricClusters = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_cluster_upgrade_clusters",
		Help: "Clusters of a ClusterUpgrade per state (Pending, Upgrading, Succeeded, Failed, Skipped, Hibernated, Removed)."}, []string{"upgrade", "to", "state"})
	metricHalted = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_cluster_upgrade_halted",
		Help: "1 while a ClusterUpgrade is halted: failures exceed its budget."}, []string{"upgrade", "to"})
	metricWave = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_cluster_upgrade_wave",
		Help: "The wave in progress (0 is the canaries'), of kok_cluster_upgrade_waves."}, []string{"upgrade", "to"})
	metricWaves = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_cluster_upgrade_waves",
		Help: "Number of waves of a ClusterUpgrade."}, []string{"upgrade", "to"})
)

func init() {
	metrics.Registry.MustRegister(metricClusters, metricHalted, metricWave, metricWaves)
}

var upgradeStates = []string{clusterv1.UpgradePending, clusterv1.UpgradeUpgrading, clusterv1.UpgradeSucceeded, clusterv1.UpgradeFailed,
	clusterv1.UpgradeSkipped, clusterv1.UpgradeHibernated, clusterv1.UpgradeRemoved}

// recordMetrics publishes a rollout's status.
func recordMetrics(cu *clusterv1.ClusterUpgrade) {
	l := prometheus.Labels{"upgrade": cu.Name, "to": cu.Spec.To}
	counts := map[string]int{}
	for _, t := range cu.Status.Clusters {
		counts[t.State]++
	}
	for _, s := range upgradeStates {
		metricClusters.With(prometheus.Labels{"upgrade": cu.Name, "to": cu.Spec.To, "state": s}).Set(float64(counts[s]))
	}
	halted := 0.0
	if cu.Status.Phase == clusterv1.RolloutHalted {
		halted = 1
	}
	metricHalted.With(l).Set(halted)
	metricWave.With(l).Set(float64(cu.Status.Wave))
	metricWaves.With(l).Set(float64(cu.Status.Waves))
}

// forgetMetrics drops a deleted rollout's series.
func forgetMetrics(name string) {
	for _, v := range []*prometheus.GaugeVec{metricClusters, metricHalted, metricWave, metricWaves} {
		v.DeletePartialMatch(prometheus.Labels{"upgrade": name})
	}
}
