package kube

import (
	"bytes"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/client-go/applyconfigurations"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// LabelApplied carries, on every object kok applies through Applied, a
// digest of the rendering applied (computed without this label). A label,
// not an annotation: a Deployment's generation moves with its annotations
// (they are copied to its ReplicaSets), not with its labels.
const LabelApplied = "kok.dev/applied"

// builtinTypes converts Kubernetes' own kinds to their structured-merge
// types (client-go's schema, parsed once on first use); deducedTypes
// converts any other kind (an APIService, a custom resource) by a schema
// read off the object itself: maps field by field, lists whole.
var (
	builtinTypes = sync.OnceValue(func() managedfields.TypeConverter {
		return applyconfigurations.NewTypeConverter(clientgoscheme.Scheme)
	})
	deducedTypes = sync.OnceValue(managedfields.NewDeducedTypeConverter)
)

// fieldSet is the set of fields u sets, as the apiserver records them.
// A kind whose real schema differs from the deduced one (a list merged by
// key) yields a set the apiserver's does not equal: the object is applied,
// never wrongly held.
func fieldSet(u *unstructured.Unstructured) (*fieldpath.Set, error) {
	t, err := builtinTypes().ObjectToTyped(u)
	if err != nil {
		if t, err = deducedTypes().ObjectToTyped(u); err != nil {
			return nil, err
		}
	}
	return t.ToFieldSet()
}

// unmanaged are fields of every applied object that the apiserver keeps
// out of managed fields.
var unmanaged = fieldpath.NewSet(fieldpath.MakePathOrDie("apiVersion"), fieldpath.MakePathOrDie("kind"),
	fieldpath.MakePathOrDie("metadata", "name"), fieldpath.MakePathOrDie("metadata", "namespace"))

// managedMatch says whether current still holds u, a rendering whose
// digest is digest, as kok applied it: current carries that digest (kok
// applied this very rendering), and kok's apply entry in its managed
// fields still owns exactly the fields u sets. Any other writer's change
// of a field kok applied takes the field's ownership away from kok (an
// update moves it, a forced apply too), so a match proves that applying u
// again would change nothing. It lets an operator that just started, with
// nothing on record, skip re-applying a fleet's worth of unchanged
// objects.
func managedMatch(current client.Object, u *unstructured.Unstructured, digest string) bool {
	if current.GetLabels()[LabelApplied] != digest {
		return false
	}
	var entry *metav1.ManagedFieldsEntry
	for i, mf := range current.GetManagedFields() {
		if mf.Manager == FieldOwner && mf.Operation == metav1.ManagedFieldsOperationApply && mf.Subresource == "" {
			entry = &current.GetManagedFields()[i]
			break
		}
	}
	if entry == nil || entry.FieldsV1 == nil {
		return false
	}
	owned := &fieldpath.Set{}
	if err := owned.FromJSON(bytes.NewReader(entry.FieldsV1.Raw)); err != nil {
		return false
	}
	want, err := fieldSet(u)
	return err == nil && want.Leaves().Difference(unmanaged).Equals(owned.Leaves())
}
