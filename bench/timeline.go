package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/kube"
)

// timeline records, with this process's clock, when each milestone of a
// cluster's start is first seen through watches on its namespace: pods
// created, scheduled, running and ready per component, etcd available,
// the KubeCluster Ready. The API's own timestamps have whole seconds only.
type timeline struct {
	start time.Time
	mu    sync.Mutex
	seen  map[string]time.Duration
	stop  context.CancelFunc
	wg    sync.WaitGroup
	old   map[types.UID]bool
	// ready and readyCount track pods seen ready, per component.
	ready      map[types.UID]bool
	readyCount map[string]int
}

func startTimeline(ctx context.Context, c client.WithWatch, ns string) (*timeline, error) {
	// Pods that are already there (a rollout's old ones) are not milestones.
	var existing corev1.PodList
	if err := c.List(ctx, &existing, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	tl := &timeline{start: time.Now(), seen: map[string]time.Duration{}, stop: cancel, old: map[types.UID]bool{},
		ready: map[types.UID]bool{}, readyCount: map[string]int{}}
	for _, p := range existing.Items {
		tl.old[p.UID] = true
	}
	lists := []client.ObjectList{&corev1.PodList{}, &etcdv1.EtcdClusterList{}, &clusterv1.KubeClusterList{}}
	for _, l := range lists {
		w, err := c.Watch(ctx, l, client.InNamespace(ns))
		if err != nil {
			cancel()
			return nil, err
		}
		tl.wg.Add(1)
		go func() {
			defer tl.wg.Done()
			defer w.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case ev, ok := <-w.ResultChan():
					if !ok {
						return
					}
					if ev.Type == watch.Added || ev.Type == watch.Modified {
						tl.observe(ev.Object)
					}
				}
			}
		}()
	}
	return tl, nil
}

func (tl *timeline) mark(what string) { tl.markAt(what, time.Since(tl.start)) }

// markAt records a milestone found by other means than the watches.
func (tl *timeline) markAt(what string, at time.Duration) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if _, ok := tl.seen[what]; !ok {
		tl.seen[what] = at
	}
}

// markReady moves "<comp> all ready" to now each time another pod of the
// component becomes ready (with several replicas: when the last one did).
func (tl *timeline) markReady(comp string, uid types.UID) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.ready[uid] {
		return
	}
	tl.ready[uid] = true
	tl.readyCount[comp]++
	if tl.readyCount[comp] > 1 {
		tl.seen[fmt.Sprintf("%s pods ready", comp)] = time.Since(tl.start)
	}
}

func (tl *timeline) observe(obj runtime.Object) {
	switch o := obj.(type) {
	case *corev1.Pod:
		comp := o.Labels[kube.LabelName]
		if comp == "" || tl.old[o.UID] {
			return
		}
		tl.mark(comp + " pod created")
		for _, c := range o.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				continue
			}
			switch c.Type {
			case corev1.PodScheduled:
				tl.mark(comp + " pod scheduled")
			case corev1.PodReady:
				tl.mark(comp + " pod ready")
				tl.markReady(comp, o.UID)
			}
		}
		for _, cs := range o.Status.ContainerStatuses {
			if cs.State.Running != nil {
				tl.mark(comp + " container running")
			}
		}
	case *etcdv1.EtcdCluster:
		tl.mark("EtcdCluster created")
		if meta.IsStatusConditionTrue(o.Status.Conditions, etcdv1.ConditionAvailable) {
			tl.mark("EtcdCluster Available")
		}
	case *clusterv1.KubeCluster:
		tl.mark("KubeCluster created")
		for _, t := range []string{clusterv1.ConditionCertificatesReady, clusterv1.ConditionEtcdReady, clusterv1.ConditionControlPlaneAvailable, clusterv1.ConditionReady} {
			if meta.IsStatusConditionTrue(o.Status.Conditions, t) {
				tl.mark("KubeCluster " + t)
			}
		}
	}
}

// finish stops the watches and returns the milestones in order, e.g.
// "etcd pod ready 3.2s".
func (tl *timeline) finish() []string {
	tl.stop()
	tl.wg.Wait()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	names := make([]string, 0, len(tl.seen))
	for k := range tl.seen {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int { return int(tl.seen[a] - tl.seen[b]) })
	out := make([]string, 0, len(names))
	for _, k := range names {
		if tl.seen[k] < 50*time.Millisecond {
			continue // true before the change (a rollout of a Ready cluster)
		}
		out = append(out, fmt.Sprintf("%s %.1fs", k, tl.seen[k].Seconds()))
	}
	return out
}

func fmtTimeline(steps []string) string { return strings.Join(steps, " → ") }
