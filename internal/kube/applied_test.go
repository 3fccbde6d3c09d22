package kube

import (
	"crypto/sha256"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestAppliedUnchanged: a record holds while the rendering and the
// observed generation (or, without one, resourceVersion) stay; anything
// else, or its age, has the object applied again.
func TestAppliedUnchanged(t *testing.T) {
	var a Applied
	dep := appliedKey{gvk: schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, key: client.ObjectKey{Namespace: "ns", Name: "d"}}
	svc := appliedKey{gvk: schema.GroupVersionKind{Version: "v1", Kind: "Service"}, key: client.ObjectKey{Namespace: "ns", Name: "s"}}
	one, two := sha256.Sum256([]byte("one")), sha256.Sum256([]byte("two"))
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Generation: 3, ResourceVersion: "10"}}
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "20"}}
	if a.unchanged(dep, one, d) {
		t.Fatal("nothing on record")
	}
	a.record(dep, appliedEntry{sum: one, generation: 3, version: "10", at: time.Now()})
	a.record(svc, appliedEntry{sum: one, version: "20", at: time.Now()})
	if !a.unchanged(dep, one, d) || !a.unchanged(svc, one, s) {
		t.Fatal("same rendering, same object: unchanged")
	}
	if a.unchanged(dep, two, d) {
		t.Error("a new rendering is applied")
	}
	d.ResourceVersion = "11" // a status update
	if !a.unchanged(dep, one, d) {
		t.Error("a status update of an object with a generation is no change")
	}
	d.Generation = 4 // someone edited the spec
	if a.unchanged(dep, one, d) {
		t.Error("an edited spec is applied again")
	}
	s.ResourceVersion = "21"
	if a.unchanged(svc, one, s) {
		t.Error("a changed object without a generation is applied again")
	}
	a.record(dep, appliedEntry{sum: one, generation: 4, at: time.Now().Add(-DefaultRefresh)})
	if a.unchanged(dep, one, d) {
		t.Error("an old record is applied again")
	}
	// Old records are dropped when a new one is made.
	a.sweep = time.Time{}
	a.record(svc, appliedEntry{sum: one, version: "21", at: time.Now()})
	if a.Len() != 1 {
		t.Errorf("%d records after the sweep, want 1", a.Len())
	}
}
