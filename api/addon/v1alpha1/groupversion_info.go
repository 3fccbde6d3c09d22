// Package v1alpha1 holds the addon operator's API: Addon (one version of an
// addon, as templates: the catalog) and ClusterAddon (an addon in one
// business cluster, kept at its final state).
// +kubebuilder:object:generate=true
// +kubebuilder:ac:generate=true
// +groupName=addon.kok.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of the addon operator.
	GroupVersion = schema.GroupVersion{Group: "addon.kok.dev", Version: "v1alpha1"}

	// SchemeGroupVersion is GroupVersion under the name generated apply
	// configurations use.
	SchemeGroupVersion = GroupVersion

	// SchemeBuilder registers the types of this group.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
