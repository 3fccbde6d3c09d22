package etcd

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
)

// healthGrace is how long a running cluster whose member pods all stay
// Ready is not reported unavailable for failed health checks. An etcd
// slowed by load misses a check now and then; each flip of Available would
// rewrite the status of every KubeCluster that uses it (a shared etcd
// holds a thousand), and change nothing the pods' readiness does not
// already say.
const healthGrace = 30 * time.Second

// healthMissed: etcd did not answer this pass, or a started member did not
// answer its health check.
func healthMissed(o Observed) bool {
	if !o.Reachable {
		return true
	}
	for _, m := range o.Members {
		if m.Started && !m.Healthy {
			return true
		}
	}
	return false
}

// missTolerated says whether a pass that missed etcd's answer (since is
// when the misses began) is set aside: the cluster was Running, every
// member pod exists, is Ready (kubelet's /readyz probe still passes) and is
// not going away, and the misses are younger than healthGrace. Nothing is
// planned from such a pass and status keeps what the last good one said;
// the cluster is looked at again soon.
func missTolerated(e *etcdv1.EtcdCluster, o Observed, since, now time.Time) bool {
	if !healthMissed(o) || since.IsZero() || now.Sub(since) >= healthGrace ||
		e.Spec.Paused || e.Status.Phase != etcdv1.PhaseRunning || len(o.Pods) != int(e.Spec.Replicas) || o.Journal != nil {
		return false
	}
	for _, p := range o.Pods {
		if !p.Ready || p.Terminating || p.DataLost {
			return false
		}
	}
	return true
}

// misses remembers, per EtcdCluster, when its health checks began to fail.
type misses struct {
	mu    sync.Mutex
	since map[types.NamespacedName]time.Time
}

// note records whether this pass missed and returns when the misses began
// (zero when it did not miss).
func (m *misses) note(key types.NamespacedName, missed bool, now time.Time) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !missed {
		delete(m.since, key)
		return time.Time{}
	}
	if m.since == nil {
		m.since = map[types.NamespacedName]time.Time{}
	}
	if _, ok := m.since[key]; !ok {
		m.since[key] = now
	}
	return m.since[key]
}
