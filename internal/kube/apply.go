// Package kube holds the client plumbing every kok operator and command
// shares: server-side apply, the labels kok puts on what it owns, image
// references and version ordering.
package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// FieldOwner is the server-side apply field manager of everything kok applies.
const FieldOwner = "kok"

// applyOpts: kok owns the fields it states and takes them back from
// whoever changed them (self-healing).
var applyOpts = []client.ApplyOption{client.FieldOwner(FieldOwner), client.ForceOwnership}

// Apply server-side applies obj, a typed object rendered whole by an
// operator, and reads the result back into it (assigned fields such as a
// Service's address included). With owner set, owner becomes obj's
// controller (garbage collection, Owns watches).
//
// This is kok's one way of writing objects it owns; objects of kok's own
// kinds are written from generated apply configurations with
// ApplyConfigurationInto instead, so only the fields kok states are sent.
func Apply(ctx context.Context, c client.Client, owner client.Object, obj client.Object) error {
	u, err := toApply(c, owner, obj)
	if err != nil {
		return err
	}
	return sendApply(ctx, c, u, obj)
}

// toApply is obj, with owner as its controller, in the form it is
// applied in.
func toApply(c client.Client, owner client.Object, obj client.Object) (*unstructured.Unstructured, error) {
	if owner != nil {
		if err := controllerutil.SetControllerReference(owner, obj, c.Scheme()); err != nil {
			return nil, err
		}
	}
	gvk, err := apiutil.GVKForObject(obj, c.Scheme())
	if err != nil {
		return nil, err
	}
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: content}
	u.SetGroupVersionKind(gvk)
	// Neither is the operator's to state: status has its own subresource,
	// and a zero creation timestamp would claim the field.
	delete(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "metadata", "resourceVersion")
	return u, nil
}

// sendApply applies u and decodes the API's answer into obj.
func sendApply(ctx context.Context, c client.Client, u *unstructured.Unstructured, obj client.Object) error {
	gvk := u.GroupVersionKind()
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), applyOpts...); err != nil {
		return fmt.Errorf("applying %s %s/%s: %w", gvk.Kind, u.GetNamespace(), u.GetName(), err)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
		return fmt.Errorf("reading back %s %s/%s: %w", gvk.Kind, u.GetNamespace(), u.GetName(), err)
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	return nil
}

// ApplyConfigurationInto applies ac and decodes the API's answer (the
// whole object, status included) into obj. ac is sent as the unstructured
// form of its JSON, which holds only the fields set in it (the typed apply
// call does not hand the answer back).
func ApplyConfigurationInto(ctx context.Context, c client.Client, ac runtime.ApplyConfiguration, obj client.Object) error {
	u, err := applyConfigurationToUnstructured(ac)
	if err != nil {
		return err
	}
	return sendApply(ctx, c, u, obj)
}

// ControllerReference is owner as the controlling owner reference of an
// apply configuration.
func ControllerReference(owner client.Object, scheme *runtime.Scheme) (*metav1ac.OwnerReferenceApplyConfiguration, error) {
	gvk, err := apiutil.GVKForObject(owner, scheme)
	if err != nil {
		return nil, err
	}
	return metav1ac.OwnerReference().WithAPIVersion(gvk.GroupVersion().String()).WithKind(gvk.Kind).
		WithName(owner.GetName()).WithUID(owner.GetUID()).WithController(true).WithBlockOwnerDeletion(true), nil
}

// CreateOnce creates obj with owner as its controller and leaves an
// existing one alone: for objects that are replaced, never updated (a
// member pod is deleted and made again; a claim's spec is immutable).
func CreateOnce(ctx context.Context, c client.Client, owner client.Object, obj client.Object) error {
	if err := controllerutil.SetControllerReference(owner, obj, c.Scheme()); err != nil {
		return err
	}
	if err := c.Create(ctx, obj); err != nil && !isAlreadyExists(err) {
		return fmt.Errorf("creating %T %s: %w", obj, client.ObjectKeyFromObject(obj), err)
	}
	return nil
}

// Decode splits a YAML or JSON stream into objects; empty documents are skipped.
func Decode(manifests []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifests), 4096)
	var objs []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("decoding manifests: %w", err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		objs = append(objs, obj)
	}
}

// ApplyManifests server-side applies every object of a YAML stream, in order.
func ApplyManifests(ctx context.Context, c client.Client, manifests []byte) error {
	objs, err := Decode(manifests)
	if err != nil {
		return err
	}
	for _, obj := range objs {
		if err := ApplyObject(ctx, c, obj); err != nil {
			return err
		}
	}
	return nil
}

// ApplyObject server-side applies obj, an object rendered from a
// manifest, and reads the API's answer (status included) back into it.
func ApplyObject(ctx context.Context, c client.Client, obj *unstructured.Unstructured) error {
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), applyOpts...); err != nil {
		return fmt.Errorf("applying %s %s/%s: %w", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}

// ApplyObjectUnlessHeld is ApplyObject, skipped when live — the object as
// just read, nil when there is none — still holds obj as kok applied it:
// it carries obj's digest (LabelApplied, which obj is stamped with either
// way) and kok's apply entry owns exactly obj's fields, so applying again
// would change nothing (managedMatch). It says whether it applied. Meant
// for steady passes over objects with no record of their own, such as a
// business cluster's addons: a read instead of a write each.
func ApplyObjectUnlessHeld(ctx context.Context, c client.Client, obj, live *unstructured.Unstructured) (bool, error) {
	_, digest, err := stamp(obj)
	if err != nil {
		return false, err
	}
	if live != nil && managedMatch(live, obj, digest) {
		return false, nil
	}
	return true, ApplyObject(ctx, c, obj)
}

// ApplyOptions are the options of a client-go apply call (for clients of
// business clusters, which are plain clientsets).
func ApplyOptions() metav1.ApplyOptions {
	return metav1.ApplyOptions{FieldManager: FieldOwner, Force: true}
}
