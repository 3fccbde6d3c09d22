package cluster

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// refreshEvery is how long an unchanged write into a business cluster or
// a shared etcd is trusted before it is made again (an object deleted
// there comes back within it).
const refreshEvery = 10 * time.Minute

// memo remembers, per KubeCluster, from what inputs and when something
// outside the meta cluster was last written. Entries expire after
// refreshEvery and are forgotten with their cluster, so the memo holds at
// most one entry per existing cluster.
type memo struct {
	mu      sync.Mutex
	entries map[types.NamespacedName]memoEntry
}

type memoEntry struct {
	inputs string
	at     time.Time
}

// fresh reports whether key was recorded with these inputs less than
// refreshEvery ago.
func (m *memo) fresh(key types.NamespacedName, inputs string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	return ok && e.inputs == inputs && time.Since(e.at) < refreshEvery
}

// known reports whether key was ever recorded with these inputs (expired
// or not).
func (m *memo) known(key types.NamespacedName, inputs string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	return ok && e.inputs == inputs
}

func (m *memo) record(key types.NamespacedName, inputs string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries == nil {
		m.entries = map[types.NamespacedName]memoEntry{}
	}
	m.entries[key] = memoEntry{inputs: inputs, at: time.Now()}
}

func (m *memo) forget(key types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, key)
}

// versions remembers the resourceVersion of each object this kok-manager
// last wrote or read from the API, so a cached copy that differs is known
// to be behind (or changed by someone else) and is read again.
type versions struct {
	mu      sync.Mutex
	entries map[types.NamespacedName]string
}

// current reports whether a cached copy at resourceVersion rv can be
// used: nothing is on record for key, or the record is rv.
func (v *versions) current(key types.NamespacedName, rv string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	want, ok := v.entries[key]
	return !ok || want == rv
}

func (v *versions) record(key types.NamespacedName, rv string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.entries == nil {
		v.entries = map[types.NamespacedName]string{}
	}
	v.entries[key] = rv
}

func (v *versions) forget(keys ...types.NamespacedName) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, k := range keys {
		delete(v.entries, k)
	}
}
