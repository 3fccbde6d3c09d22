package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ClusterAddonSpec is one addon in one business cluster. The addon
// operator makes one per entry of a KubeCluster's spec.addons (named
// <cluster>-<addon>, owned by the KubeCluster): change that list, not
// these.
type ClusterAddonSpec struct {
	// ClusterName is the KubeCluster (same namespace).
	// +kubebuilder:validation:MinLength=1
	ClusterName string `json:"clusterName"`

	// Addon is the addon's name.
	// +kubebuilder:validation:MinLength=1
	Addon string `json:"addon"`

	// Version pins the addon's version; empty takes the newest in the
	// catalog that supports the release the control plane runs.
	// +optional
	Version string `json:"version,omitempty"`

	// Values replace the Addon's default values key by key.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +optional
	Values *apiextensionsv1.JSON `json:"values,omitempty"`
}

// ClusterAddonStatus is what the addon operator last saw and did.
type ClusterAddonStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Version is the addon version last applied, KubernetesVersion the
	// control-plane release it was rendered for.
	// +optional
	Version string `json:"version,omitempty"`
	// +optional
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	// Objects are what the addon keeps in the business cluster (an object
	// left out of a new version's rendering is deleted).
	// +listType=atomic
	// +optional
	Objects []AddonObject `json:"objects,omitempty"`
	// LastAppliedTime is when kok last wrote any of the objects (a pass
	// that finds them all as kok applied them writes nothing).
	// +optional
	LastAppliedTime *metav1.Time `json:"lastAppliedTime,omitempty"`
	// Conditions: Applied (every object is in the business cluster as
	// rendered), Healthy (its workloads are available).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AddonObject is one object an addon put into a business cluster.
type AddonObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// Condition types of a ClusterAddon.
const (
	AddonApplied = "Applied"
	AddonHealthy = "Healthy"
)

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=kok,shortName=cad
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.clusterName`
// +kubebuilder:printcolumn:name="Addon",type=string,JSONPath=`.spec.addon`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.version`
// +kubebuilder:printcolumn:name="Applied",type=string,JSONPath=`.status.conditions[?(@.type=="Applied")].status`
// +kubebuilder:printcolumn:name="Healthy",type=string,JSONPath=`.status.conditions[?(@.type=="Healthy")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Healthy")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ClusterAddon is an addon installed in a business cluster and kept at its
// final state.
type ClusterAddon struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ClusterAddonSpec `json:"spec"`
	// +optional
	Status ClusterAddonStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ClusterAddonList is a list of ClusterAddons.
type ClusterAddonList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterAddon `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ClusterAddon{}, &ClusterAddonList{})
}
