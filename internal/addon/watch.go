package addon

import (
	"context"
	"maps"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/kubeonkube/kok/internal/workload"
)

// watcher puts back what is deleted or edited in a business cluster
// without waiting for the resync: per cluster, one informer per kind of
// addon object, limited to the objects kok labelled as that cluster's
// addons, wakes the ClusterAddon an object belongs to when it is deleted,
// loses its label, has its spec (generation), labels or annotations
// changed, or when a workload's health (WorkloadProblem) changes. Other
// status churn wakes nothing.
type watcher struct {
	// events carry a PartialObjectMetadata naming the KubeCluster
	// (namespace, name) with the addon in its LabelAddon label.
	events chan event.GenericEvent

	mu       sync.Mutex
	clusters map[types.NamespacedName]*clusterWatch
}

type clusterWatch struct {
	// via is the business cluster connection the informers use; a new one
	// (a rotated admin kubeconfig) starts them again.
	via     *workload.Cluster
	cancel  context.CancelFunc
	factory dynamicinformer.DynamicSharedInformerFactory
	ctx     context.Context
	kinds   map[schema.GroupVersionResource]bool
}

func newWatcher() *watcher {
	return &watcher{events: make(chan event.GenericEvent, 256), clusters: map[types.NamespacedName]*clusterWatch{}}
}

// ensure watches the kinds gvrs of cluster (a KubeCluster's key) in the
// business cluster wl.
func (w *watcher) ensure(cluster types.NamespacedName, wl *workload.Cluster, gvrs []schema.GroupVersionResource) {
	w.mu.Lock()
	defer w.mu.Unlock()
	cw := w.clusters[cluster]
	if cw != nil && cw.via != wl {
		cw.cancel()
		cw = nil
	}
	if cw == nil {
		ctx, cancel := context.WithCancel(context.Background())
		selector := LabelCluster + "=" + cluster.Name
		cw = &clusterWatch{via: wl, cancel: cancel, ctx: ctx, kinds: map[schema.GroupVersionResource]bool{},
			factory: dynamicinformer.NewFilteredDynamicSharedInformerFactory(wl.Dynamic, 0, metav1.NamespaceAll,
				func(o *metav1.ListOptions) { o.LabelSelector = selector })}
		w.clusters[cluster] = cw
	}
	added := false
	for _, gvr := range gvrs {
		if cw.kinds[gvr] {
			continue
		}
		cw.kinds[gvr] = true
		added = true
		_, _ = cw.factory.ForResource(gvr).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			UpdateFunc: func(old, obj any) {
				if changed(old, obj) {
					w.wake(cluster, obj)
				}
			},
			DeleteFunc: func(obj any) {
				if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = d.Obj
				}
				w.wake(cluster, obj)
			},
		})
	}
	if added {
		cw.factory.Start(cw.ctx.Done())
	}
}

// stop ends the watches of a cluster.
func (w *watcher) stop(cluster types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cw := w.clusters[cluster]; cw != nil {
		cw.cancel()
		delete(w.clusters, cluster)
	}
}

func (w *watcher) wake(cluster types.NamespacedName, obj any) {
	o, ok := obj.(client.Object)
	if !ok {
		return
	}
	ev := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: cluster.Namespace, Name: cluster.Name,
		Labels: map[string]string{LabelAddon: o.GetLabels()[LabelAddon]}}}
	select {
	case w.events <- event.GenericEvent{Object: ev}:
	default: // the queue is full of wake-ups already; the resync catches up
	}
}

// changed: what kok applies may differ — a new generation (kinds with a
// spec), or for kinds without one (0) any change; labels and annotations
// always count — or the addon's health may: a workload's problem is not
// the same.
func changed(old, obj any) bool {
	o, ok1 := old.(client.Object)
	n, ok2 := obj.(client.Object)
	if !ok1 || !ok2 {
		return false
	}
	if n.GetGeneration() == 0 || o.GetGeneration() != n.GetGeneration() {
		return o.GetResourceVersion() != n.GetResourceVersion()
	}
	if !maps.Equal(o.GetLabels(), n.GetLabels()) || !maps.Equal(o.GetAnnotations(), n.GetAnnotations()) {
		return true
	}
	ou, ok1 := old.(*unstructured.Unstructured)
	nu, ok2 := obj.(*unstructured.Unstructured)
	return ok1 && ok2 && WorkloadProblem(ou) != WorkloadProblem(nu)
}
