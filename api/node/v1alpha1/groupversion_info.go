// Package v1alpha1 holds the machine operator's API: Component (on-host
// software as data) and Machine (a host and the components it needs).
// +kubebuilder:object:generate=true
// +kubebuilder:ac:generate=true
// +groupName=node.kok.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of the machine operator.
	GroupVersion = schema.GroupVersion{Group: "node.kok.dev", Version: "v1alpha1"}

	// SchemeGroupVersion is GroupVersion under the name generated apply
	// configurations use.
	SchemeGroupVersion = GroupVersion

	// SchemeBuilder registers the types of this group.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
