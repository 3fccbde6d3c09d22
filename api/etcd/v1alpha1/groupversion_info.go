// Package v1alpha1 holds the etcd operator's API: EtcdCluster.
// +kubebuilder:object:generate=true
// +kubebuilder:ac:generate=true
// +groupName=etcd.kok.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of the etcd operator.
	GroupVersion = schema.GroupVersion{Group: "etcd.kok.dev", Version: "v1alpha1"}

	// SchemeGroupVersion is GroupVersion under the name generated apply
	// configurations use.
	SchemeGroupVersion = GroupVersion

	// SchemeBuilder registers the types of this group.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
