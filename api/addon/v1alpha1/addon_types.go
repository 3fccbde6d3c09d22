package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AddonSpec is one version of an addon: Go templates of the objects it
// puts into a business cluster, the Kubernetes releases it supports and the
// values its templates default to.
//
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="an Addon version is immutable: publish a new version (a new Addon named <addon>-<version>) and point clusters at it"
type AddonSpec struct {
	// Addon is the addon's name (coredns, kube-proxy, flannel, …).
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=40
	Addon string `json:"addon"`

	// Version of the addon.
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9][-a-zA-Z0-9.+_]*$`
	// +kubebuilder:validation:MaxLength=40
	Version string `json:"version"`

	// KubernetesVersions are the minor releases ("v1.34") whose clusters
	// it supports: an addon is upgraded only within them, and only after
	// the control plane runs the new release.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:items:Pattern=`^v[0-9]+\.[0-9]+$`
	// +listType=set
	KubernetesVersions []string `json:"kubernetesVersions"`

	// Values are the defaults the templates see under .Values; a
	// cluster's values replace them key by key.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +optional
	Values *apiextensionsv1.JSON `json:"values,omitempty"`

	// Manifests is a Go template (text/template) of YAML documents: every
	// object the addon puts into a business cluster. It sees .Cluster
	// (name, version, pod and service ranges, DNS address and domain,
	// apiserver host and port), .Registry (where images come from),
	// .Values, and the function image ("image \"coredns\" \"v1.14.7\"" is
	// the reference in the cluster's registry).
	// +kubebuilder:validation:MinLength=1
	Manifests string `json:"manifests"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=kok
// +kubebuilder:printcolumn:name="Addon",type=string,JSONPath=`.spec.addon`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.spec.version`
// +kubebuilder:printcolumn:name="Kubernetes",type=string,JSONPath=`.spec.kubernetesVersions`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name == self.spec.addon + '-' + self.spec.version",message="an Addon is named <spec.addon>-<spec.version>"

// Addon is one version of an addon in the catalog (config/addons): data,
// not code. Adding a version is applying a new Addon.
type Addon struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AddonSpec `json:"spec"`
}

// +kubebuilder:object:root=true

// AddonList is a list of Addons.
type AddonList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Addon `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Addon{}, &AddonList{})
}
