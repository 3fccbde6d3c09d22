package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultRefresh is how long Applied trusts a record before it checks the
// object again (by its managed fields, else by applying it).
const DefaultRefresh = 10 * time.Minute

// Applied makes an operator's steady passes free: it remembers, per
// object, a digest of what was last applied and the generation (or, for
// kinds without one, the resourceVersion) the API answered with. A pass
// that renders the same object again, while the observed copy still
// carries that generation, sends nothing. Whatever changes the object's
// spec (a user's edit, a deletion) changes its generation and the next
// pass applies again; so does any change of the rendering. Metadata-only
// edits of an object with a generation are taken back within Refresh.
//
// Where no record proves an object current (the operator just started,
// the record expired, the object changed), the object itself may: every
// object applied here carries the rendering's digest (LabelApplied), and if
// that digest is the new rendering's and kok's apply entry still owns
// exactly the rendered fields, the apply is skipped too (managedMatch). A
// restarted operator thus sends nothing for a fleet that is as it left it.
//
// Without it, every pass of every cluster re-applies the same objects:
// with a thousand clusters that is more writes per second than a client's
// rate limit allows, and reconciles queue behind each other.
type Applied struct {
	// Refresh bounds how long a record is trusted; zero means
	// DefaultRefresh.
	Refresh time.Duration

	mu      sync.Mutex
	entries map[appliedKey]appliedEntry
	sweep   time.Time
}

type appliedKey struct {
	gvk schema.GroupVersionKind
	key client.ObjectKey
}

type appliedEntry struct {
	sum        [sha256.Size]byte
	generation int64
	version    string
	at         time.Time
}

// Apply is kube.Apply, skipped when current — obj as last observed,
// usually from the informer cache; nil if it was not found — is still
// what the last apply of the same rendering returned. On a skip, obj is
// set to a copy of current, so callers read the same answer either way.
func (a *Applied) Apply(ctx context.Context, c client.Client, owner client.Object, obj client.Object, current client.Object) error {
	u, err := toApply(c, owner, obj)
	if err != nil {
		return err
	}
	return a.apply(ctx, c, u, obj, current)
}

// ApplyConfigurationInto is kube.ApplyConfigurationInto with the same
// skip as Apply.
func (a *Applied) ApplyConfigurationInto(ctx context.Context, c client.Client, ac runtime.ApplyConfiguration, obj client.Object, current client.Object) error {
	u, err := applyConfigurationToUnstructured(ac)
	if err != nil {
		return err
	}
	return a.apply(ctx, c, u, obj, current)
}

func (a *Applied) apply(ctx context.Context, c client.Client, u *unstructured.Unstructured, obj, current client.Object) error {
	sum, digest, err := stamp(u)
	if err != nil {
		return err
	}
	key := appliedKey{gvk: u.GroupVersionKind(), key: client.ObjectKey{Namespace: u.GetNamespace(), Name: u.GetName()}}
	if current != nil && !reflect.ValueOf(current).IsNil() && reflect.TypeOf(current) == reflect.TypeOf(obj) {
		proven := a.unchanged(key, sum, current)
		if !proven && managedMatch(current, u, digest) {
			// Nothing (or something old) on record, e.g. the operator just
			// started: the object's own managed fields show it holds this
			// rendering.
			a.record(key, appliedEntry{sum: sum, generation: current.GetGeneration(), version: current.GetResourceVersion(), at: time.Now()})
			proven = true
		}
		if proven {
			reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(current.DeepCopyObject()).Elem())
			obj.GetObjectKind().SetGroupVersionKind(key.gvk)
			return nil
		}
	}
	if err := sendApply(ctx, c, u, obj); err != nil {
		a.forget(key)
		return err
	}
	a.record(key, appliedEntry{sum: sum, generation: obj.GetGeneration(), version: obj.GetResourceVersion(), at: time.Now()})
	return nil
}

// stamp sets u's LabelApplied label to the digest of u without it.
func stamp(u *unstructured.Unstructured) (sum [sha256.Size]byte, digest string, err error) {
	unstructured.RemoveNestedField(u.Object, "metadata", "labels", LabelApplied)
	data, err := json.Marshal(u.Object) // map keys sorted: a stable digest
	if err != nil {
		return sum, "", err
	}
	sum = sha256.Sum256(data)
	digest = hex.EncodeToString(sum[:12])
	return sum, digest, unstructured.SetNestedField(u.Object, digest, "metadata", "labels", LabelApplied)
}

func (a *Applied) refresh() time.Duration {
	if a.Refresh > 0 {
		return a.Refresh
	}
	return DefaultRefresh
}

func (a *Applied) unchanged(key appliedKey, sum [sha256.Size]byte, current client.Object) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.entries[key]
	if !ok || e.sum != sum || time.Since(e.at) >= a.refresh() {
		return false
	}
	if e.generation > 0 {
		return current.GetGeneration() == e.generation
	}
	return current.GetResourceVersion() == e.version
}

func (a *Applied) record(key appliedKey, e appliedEntry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.entries == nil {
		a.entries = map[appliedKey]appliedEntry{}
	}
	a.entries[key] = e
	// Records of deleted objects expire; drop them now and then so the
	// map holds about what was written within one refresh period.
	if now := time.Now(); now.Sub(a.sweep) >= a.refresh() {
		for k, old := range a.entries {
			if now.Sub(old.at) >= a.refresh() {
				delete(a.entries, k)
			}
		}
		a.sweep = now
	}
}

func (a *Applied) forget(key appliedKey) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.entries, key)
}

// Len is the number of objects on record (for tests and metrics).
func (a *Applied) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.entries)
}

func applyConfigurationToUnstructured(ac runtime.ApplyConfiguration) (*unstructured.Unstructured, error) {
	data, err := json.Marshal(ac)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("apply configuration: %w", err)
	}
	return u, nil
}
