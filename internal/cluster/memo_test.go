package cluster

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

func TestMemo(t *testing.T) {
	var m memo
	a := types.NamespacedName{Namespace: "ns", Name: "a"}
	if m.fresh(a, "x") {
		t.Fatal("fresh before anything was recorded")
	}
	m.record(a, "x")
	if !m.fresh(a, "x") || m.fresh(a, "y") {
		t.Fatal("fresh must hold for the recorded inputs only")
	}
	// An old record is done again (a role deleted in etcd, an object
	// deleted in the business cluster, comes back).
	m.entries[a] = memoEntry{inputs: "x", at: time.Now().Add(-refreshEvery - time.Second)}
	if m.fresh(a, "x") {
		t.Fatal("an expired record must not count")
	}
	if !m.known(a, "x") || m.known(a, "y") {
		t.Fatal("known must hold for recorded inputs, expired or not")
	}
	m.forget(a)
	if len(m.entries) != 0 {
		t.Fatal("forget must drop the entry")
	}
}
