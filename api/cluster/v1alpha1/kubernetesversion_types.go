package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KubernetesVersionSpec is one entry of the version catalog: what a
// Kubernetes release needs to run. Adding a release is applying one of
// these; no code changes.
type KubernetesVersionSpec struct {
	// Version is the release, e.g. v1.34.4. It equals the object's name.
	// +kubebuilder:validation:Pattern=`^v[0-9]+\.[0-9]+\.[0-9]+$`
	Version string `json:"version"`

	// Images of the control-plane components. A reference without a
	// registry host (no "." or ":" before the first "/") is prefixed with
	// the manager's --image-registry, so one setting serves air-gapped sites.
	Images ComponentImages `json:"images"`

	// EtcdVersions this release supports, oldest first. A managed
	// EtcdCluster outside the list is upgraded to the last one before the
	// control plane moves.
	// +kubebuilder:validation:MinItems=1
	EtcdVersions []string `json:"etcdVersions"`

	// DefaultArgs are flags every cluster of this release gets; a
	// KubeCluster's extraArgs override them.
	// +optional
	DefaultArgs ComponentArgs `json:"defaultArgs,omitempty"`

	// Deprecated releases still run but no new cluster should pick them.
	// +optional
	Deprecated bool `json:"deprecated,omitempty"`
}

// ComponentImages names one image per control-plane component.
type ComponentImages struct {
	APIServer         string `json:"apiServer"`
	ControllerManager string `json:"controllerManager"`
	Scheduler         string `json:"scheduler"`
	// +optional
	KubeProxy string `json:"kubeProxy,omitempty"`
	// KonnectivityServer is the proxy server that runs beside each
	// apiserver of a cluster whose addons list konnectivity.
	// +optional
	KonnectivityServer string `json:"konnectivityServer,omitempty"`
}

// ComponentArgs holds flags (without the leading "--") per component.
type ComponentArgs struct {
	// +optional
	APIServer map[string]string `json:"apiServer,omitempty"`
	// +optional
	ControllerManager map[string]string `json:"controllerManager,omitempty"`
	// +optional
	Scheduler map[string]string `json:"scheduler,omitempty"`
}

// KubernetesVersion is a catalog entry: a Kubernetes release kok can run.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=kv,categories=kok
// +kubebuilder:validation:XValidation:rule="self.metadata.name == self.spec.version",message="metadata.name must equal spec.version (e.g. name: v1.34.4)"
// +kubebuilder:printcolumn:name="Etcd",type=string,JSONPath=`.spec.etcdVersions`
// +kubebuilder:printcolumn:name="Deprecated",type=boolean,JSONPath=`.spec.deprecated`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type KubernetesVersion struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec KubernetesVersionSpec `json:"spec"`
}

// KubernetesVersionList is a list of KubernetesVersions.
// +kubebuilder:object:root=true
type KubernetesVersionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KubernetesVersion `json:"items"`
}

func init() {
	SchemeBuilder.Register(&KubernetesVersion{}, &KubernetesVersionList{})
}
