package etcd

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
)

// Prometheus metrics of the etcd operator, served on kok-manager's metrics
// endpoint. Cluster series carry namespace and cluster; member series add
// member (and role).
var (
	clusterLabels = []string{"namespace", "cluster"}
	memberLabels  = []string{"namespace", "cluster", "member"}

	metricDesired = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_etcd_cluster_desired_members",
		Help: "Voting members the EtcdCluster asks for."}, clusterLabels)
	metricReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_etcd_cluster_ready_members",
		Help: "Healthy voting members."}, clusterLabels)
	metricAvailable = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_etcd_cluster_available",
		Help: "1 when a quorum of members is healthy."}, clusterLabels)
	metricQuorumLost = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_etcd_cluster_quorum_lost",
		Help: "1 when the cluster lost quorum and waits for members or a restore."}, clusterLabels)
	metricSteps = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kok_etcd_cluster_steps_total",
		Help: "Steps the operator took, by action (AddLearner, Promote, Remove, Upgrade, Defragment …)."}, append(clusterLabels, "action"))
	metricStepErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kok_etcd_cluster_step_errors_total",
		Help: "Steps that failed, by action."}, append(clusterLabels, "action"))

	metricHealthy = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_etcd_member_healthy",
		Help: "1 when the member answers its status request."}, append(memberLabels, "role"))
	metricLeader = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_etcd_member_is_leader",
		Help: "1 on the raft leader."}, memberLabels)
	metricDBSize = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_etcd_member_db_size_bytes",
		Help: "Size of the member's backend database."}, memberLabels)
	metricDBInUse = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_etcd_member_db_size_in_use_bytes",
		Help: "Part of the backend database in use (the rest is reclaimed by defragmentation)."}, memberLabels)
	metricRaftIndex = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_etcd_member_raft_index",
		Help: "The member's raft index."}, memberLabels)
	metricAlarms = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_etcd_member_alarms",
		Help: "Active alarms (NOSPACE, CORRUPT) the member reports."}, memberLabels)

	metricBackupLast = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_etcd_backup_last_success_timestamp_seconds",
		Help: "When the newest stored snapshot was taken."}, []string{"namespace", "backup", "cluster"})
	metricBackupSize = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kok_etcd_backup_last_size_bytes",
		Help: "Size of the newest stored snapshot."}, []string{"namespace", "backup", "cluster"})
	metricBackupFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kok_etcd_backup_failures_total",
		Help: "Snapshots that failed."}, []string{"namespace", "backup", "cluster"})
)

func init() {
	metrics.Registry.MustRegister(metricDesired, metricReady, metricAvailable, metricQuorumLost, metricSteps, metricStepErrors,
		metricHealthy, metricLeader, metricDBSize, metricDBInUse, metricRaftIndex, metricAlarms,
		metricBackupLast, metricBackupSize, metricBackupFailures)
}

var memberGauges = []*prometheus.GaugeVec{metricHealthy, metricLeader, metricDBSize, metricDBInUse, metricRaftIndex, metricAlarms}

// recordClusterMetrics publishes what one pass observed. Member series are
// replaced as a whole, so a removed member's series go.
func recordClusterMetrics(e *etcdv1.EtcdCluster, step Step, stepErr error) {
	cl := prometheus.Labels{"namespace": e.Namespace, "cluster": e.Name}
	metricDesired.With(cl).Set(float64(e.Spec.Replicas))
	metricReady.With(cl).Set(float64(e.Status.ReadyMembers))
	metricAvailable.With(cl).Set(b2f(e.Status.Phase == etcdv1.PhaseRunning || e.Status.Phase == etcdv1.PhaseUpdating))
	metricQuorumLost.With(cl).Set(b2f(step.Action == ActQuorumLost))
	if step.Action != ActNone && step.Action != ActWaitHealthy && step.Action != ActQuorumLost {
		metricSteps.With(prometheus.Labels{"namespace": e.Namespace, "cluster": e.Name, "action": string(step.Action)}).Inc()
		if stepErr != nil {
			metricStepErrors.With(prometheus.Labels{"namespace": e.Namespace, "cluster": e.Name, "action": string(step.Action)}).Inc()
		}
	}
	for _, g := range memberGauges {
		g.DeletePartialMatch(cl)
	}
	for _, m := range e.Status.Members {
		ml := prometheus.Labels{"namespace": e.Namespace, "cluster": e.Name, "member": m.Name}
		metricHealthy.With(prometheus.Labels{"namespace": e.Namespace, "cluster": e.Name, "member": m.Name, "role": string(m.Role)}).Set(b2f(m.Healthy))
		metricLeader.With(ml).Set(b2f(m.Role == etcdv1.RoleLeader))
		metricDBSize.With(ml).Set(float64(m.DBSize))
		metricDBInUse.With(ml).Set(float64(m.DBSizeInUse))
		metricRaftIndex.With(ml).Set(float64(m.RaftIndex))
		metricAlarms.With(ml).Set(float64(len(m.Alarms)))
	}
}

// forgetClusterMetrics drops every series of a deleted cluster.
func forgetClusterMetrics(namespace, name string) {
	cl := prometheus.Labels{"namespace": namespace, "cluster": name}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{metricDesired, metricReady, metricAvailable,
		metricQuorumLost, metricSteps, metricStepErrors, metricHealthy, metricLeader, metricDBSize, metricDBInUse, metricRaftIndex, metricAlarms} {
		v.DeletePartialMatch(cl)
	}
}

// recordBackupMetrics publishes a backup's newest snapshot.
func recordBackupMetrics(b *etcdv1.EtcdBackup, failed bool) {
	l := prometheus.Labels{"namespace": b.Namespace, "backup": b.Name, "cluster": b.Spec.ClusterName}
	if failed {
		metricBackupFailures.With(l).Inc()
	}
	if n := len(b.Status.Snapshots); n > 0 {
		s := b.Status.Snapshots[n-1]
		metricBackupLast.With(l).Set(float64(s.Taken.Unix()))
		metricBackupSize.With(l).Set(float64(s.Size))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
