package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
)

// KubeClusterSpec is the desired state of a business cluster's control plane.
//
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.version) || self.version.split('.')[0] == oldSelf.version.split('.')[0]",message="the major version cannot change"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.version) || int(self.version.split('.')[1]) >= int(oldSelf.version.split('.')[1])",message="Kubernetes cannot be downgraded to an older minor version: keep spec.version at the current minor or newer"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.version) || int(self.version.split('.')[1]) <= int(oldSelf.version.split('.')[1]) + 1",message="Kubernetes upgrades go one minor version at a time: upgrade to the next minor first"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.version) || int(self.version.split('.')[1]) != int(oldSelf.version.split('.')[1]) || int(self.version.split('.')[2]) >= int(oldSelf.version.split('.')[2])",message="Kubernetes cannot be downgraded to an older patch release: keep spec.version at the current patch or newer"
// +kubebuilder:validation:XValidation:rule="has(oldSelf.etcd.ref) == has(self.etcd.ref)",message="spec.etcd cannot switch between managed and ref: the data lives in the first one (restore a backup into a new cluster instead)"
type KubeClusterSpec struct {
	// Version is the Kubernetes release; a KubernetesVersion of that name
	// must exist in the catalog.
	// +kubebuilder:validation:Pattern=`^v[0-9]+\.[0-9]+\.[0-9]+$`
	Version string `json:"version"`

	// ControlPlane shapes the apiserver, controller-manager and scheduler.
	// +kubebuilder:default={}
	// +optional
	ControlPlane ControlPlaneSpec `json:"controlPlane,omitempty"`

	// Etcd is where the cluster keeps its state: a managed EtcdCluster
	// (the default) or a reference to a shared one.
	// +kubebuilder:default={managed: {}}
	// +optional
	Etcd EtcdSpec `json:"etcd,omitempty"`

	// Network of the business cluster.
	// +kubebuilder:default={}
	// +optional
	Network NetworkSpec `json:"network,omitempty"`

	// DeletionPolicy says what happens to the etcd data when the
	// KubeCluster is deleted: Delete removes the managed EtcdCluster,
	// Retain keeps it (and its volumes) for a later cluster.
	// +kubebuilder:validation:Enum=Delete;Retain
	// +kubebuilder:default=Delete
	// +optional
	DeletionPolicy string `json:"deletionPolicy,omitempty"`

	// Addons installed into the business cluster and kept at their final
	// state, a ClusterAddon each (named <cluster>-<addon>). Left out, a
	// cluster gets a working network, resource metrics and a way from the
	// apiservers to its nodes: kube-proxy, flannel, CoreDNS, metrics-server
	// and konnectivity; an empty list installs none. Listing konnectivity
	// also runs its proxy server beside each apiserver.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:default={{name: kube-proxy},{name: flannel},{name: coredns},{name: metrics-server},{name: konnectivity}}
	// +optional
	Addons []AddonRef `json:"addons"`

	// Paused stops the operator from changing anything; status is still
	// observed.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// Hibernated scales the control plane to zero replicas: nothing of the
	// cluster runs but its etcd, whose data, the certificates and the
	// Service address stay. Setting it back to false wakes the cluster at
	// spec.version.
	// +optional
	Hibernated bool `json:"hibernated,omitempty"`

	// MaintenanceWindows are the times a fleet rollout (ClusterUpgrade)
	// may start upgrading this cluster; empty means any time. Upgrades
	// applied to spec.version directly do not wait for them.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	MaintenanceWindows []MaintenanceWindow `json:"maintenanceWindows,omitempty"`
}

// MaintenanceWindow is a weekly time range in UTC.
type MaintenanceWindow struct {
	// Days of the week it opens on; empty means every day.
	// +kubebuilder:validation:items:Enum=Monday;Tuesday;Wednesday;Thursday;Friday;Saturday;Sunday
	// +kubebuilder:validation:MaxItems=7
	// +optional
	Days []string `json:"days,omitempty"`
	// Start is the time of day it opens, "HH:MM" in UTC.
	// +kubebuilder:validation:Pattern=`^([01][0-9]|2[0-3]):[0-5][0-9]$`
	Start string `json:"start"`
	// Duration it stays open, such as "4h".
	Duration metav1.Duration `json:"duration"`
}

// AddonRef names an addon of the catalog (an Addon <name>-<version>).
type AddonRef struct {
	// Name of the addon.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=40
	Name string `json:"name"`
	// Version pins the addon's version; empty follows the newest one that
	// supports the release the control plane runs (so addons upgrade
	// after the control plane did).
	// +optional
	Version string `json:"version,omitempty"`
	// Values replace the addon's default values key by key.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +optional
	Values *apiextensionsv1.JSON `json:"values,omitempty"`
}

// ControlPlaneSpec shapes the control-plane Deployments.
type ControlPlaneSpec struct {
	// Replicas of each component (apiservers serve, the others elect a
	// leader). Three make an upgrade invisible to clients.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=7
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// +optional
	APIServer ComponentSpec `json:"apiServer,omitempty"`
	// +optional
	ControllerManager ComponentSpec `json:"controllerManager,omitempty"`
	// +optional
	Scheduler ComponentSpec `json:"scheduler,omitempty"`
}

// ComponentSpec customizes one control-plane component.
type ComponentSpec struct {
	// Image replaces the catalog's image (used as written).
	// +optional
	Image string `json:"image,omitempty"`
	// ExtraArgs are flags (without "--") that override the catalog's
	// defaults and kok's own.
	// +optional
	ExtraArgs map[string]string `json:"extraArgs,omitempty"`
	// Resources of the component's container.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	// Env of the component's container. kok sets GOGC=50 unless this sets
	// GOGC; GOGC=25 trades more CPU spent collecting garbage for about a
	// tenth less memory in a dense meta cluster.
	// +listType=map
	// +listMapKey=name
	// +optional
	Env []corev1.EnvVar `json:"env,omitempty"`
}

// EtcdSpec selects the cluster's etcd: managed (also when neither is set)
// or ref.
// +kubebuilder:validation:XValidation:rule="!(has(self.managed) && has(self.ref))",message="set only one of spec.etcd.managed and spec.etcd.ref"
type EtcdSpec struct {
	// Managed: kok runs a dedicated EtcdCluster named <cluster>-etcd (the
	// default).
	// +optional
	Managed *ManagedEtcd `json:"managed,omitempty"`
	// Ref points at a shared EtcdCluster; the cluster keeps its keys under
	// its own prefix.
	// +optional
	Ref *EtcdRef `json:"ref,omitempty"`
}

// ManagedEtcd is the template of a dedicated EtcdCluster.
type ManagedEtcd struct {
	// Replicas of the EtcdCluster (1, 3, 5 or 7).
	// +kubebuilder:default=1
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// Version of etcd; the catalog's newest compatible version when empty.
	// +optional
	Version string `json:"version,omitempty"`
	// Storage of each member.
	// +optional
	Storage *etcdv1.EtcdStorage `json:"storage,omitempty"`
}

// EtcdRef names a shared EtcdCluster.
type EtcdRef struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Namespace of the EtcdCluster; the KubeCluster's when empty.
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// NetworkSpec is the business cluster's addressing and how its apiserver is
// exposed.
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.serviceCIDR) || self.serviceCIDR == oldSelf.serviceCIDR",message="network.serviceCIDR is immutable"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.podCIDR) || self.podCIDR == oldSelf.podCIDR",message="network.podCIDR is immutable"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.dnsDomain) || self.dnsDomain == oldSelf.dnsDomain",message="network.dnsDomain is immutable"
type NetworkSpec struct {
	// ServiceCIDR of the business cluster.
	// +kubebuilder:default="10.96.0.0/12"
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="serviceCIDR must be a CIDR such as 10.96.0.0/12"
	// +optional
	ServiceCIDR string `json:"serviceCIDR,omitempty"`
	// PodCIDR of the business cluster.
	// +kubebuilder:default="10.244.0.0/16"
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="podCIDR must be a CIDR such as 10.244.0.0/16"
	// +optional
	PodCIDR string `json:"podCIDR,omitempty"`
	// DNSDomain of the business cluster.
	// +kubebuilder:default="cluster.local"
	// +optional
	DNSDomain string `json:"dnsDomain,omitempty"`
	// APIServer is how the apiserver is exposed.
	// +kubebuilder:default={}
	// +optional
	APIServer APIServerService `json:"apiServer,omitempty"`
}

// APIServerService exposes the apiserver.
// +kubebuilder:validation:XValidation:rule="!has(self.nodePort) || self.type == 'NodePort'",message="nodePort needs type: NodePort"
type APIServerService struct {
	// Type of the apiserver Service.
	// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
	// +kubebuilder:default=ClusterIP
	// +optional
	Type corev1.ServiceType `json:"type,omitempty"`
	// Port of the Service (and the apiserver's secure port).
	// +kubebuilder:default=6443
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`
	// NodePort to use with type NodePort; allocated when empty.
	// +optional
	NodePort int32 `json:"nodePort,omitempty"`
	// CertSANs are extra names and addresses in the serving certificate.
	// +optional
	CertSANs []string `json:"certSANs,omitempty"`
}

// Condition types of a KubeCluster.
const (
	ConditionEtcdReady             = "EtcdReady"
	ConditionCertificatesReady     = "CertificatesReady"
	ConditionControlPlaneAvailable = "ControlPlaneAvailable"
	ConditionProgressing           = "Progressing"
	ConditionReady                 = "Ready"
	// ConditionKonnectivityReady: every apiserver's proxy server has an
	// agent, so the apiservers reach nodes and pods (logs, exec,
	// port-forward, aggregated APIs, webhooks). Set only while the
	// konnectivity addon is listed.
	ConditionKonnectivityReady = "KonnectivityReady"
)

// Konnectivity is the addon whose listing in spec.addons runs a proxy
// server beside each apiserver; KonnectivityPort is where its agents reach
// those servers, on the apiserver Service.
const (
	Konnectivity     = "konnectivity"
	KonnectivityPort = 8132
)

// KonnectivityEnabled reports whether spec lists the konnectivity addon.
func (s *KubeClusterSpec) KonnectivityEnabled() bool {
	for _, a := range s.Addons {
		if a.Name == Konnectivity {
			return true
		}
	}
	return false
}

// Phases summarize the conditions.
const (
	PhaseProvisioning = "Provisioning"
	PhaseReady        = "Ready"
	PhaseUpgrading    = "Upgrading"
	PhaseDegraded     = "Degraded"
	PhasePaused       = "Paused"
	PhaseHibernated   = "Hibernated"
	PhaseDeleting     = "Deleting"
)

// ComponentStatus is one control-plane Deployment as observed.
type ComponentStatus struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	// Replicas, UpdatedReplicas and ReadyReplicas come from the Deployment.
	Replicas        int32 `json:"replicas"`
	UpdatedReplicas int32 `json:"updatedReplicas"`
	ReadyReplicas   int32 `json:"readyReplicas"`
	// LastError is why the component does not run, in its own words: a
	// failing container's reason and termination message (its last log
	// lines).
	// +optional
	LastError string `json:"lastError,omitempty"`
}

// KubeClusterStatus is the observed state of a business cluster.
type KubeClusterStatus struct {
	// ObservedGeneration is the generation the last successful pass acted
	// on; a pass that failed leaves it and says why in the Ready condition.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Phase summarizes the conditions for print columns.
	// +optional
	Phase string `json:"phase,omitempty"`
	// Version is the oldest version any component runs.
	// +optional
	Version string `json:"version,omitempty"`
	// Components as observed.
	// +optional
	Components []ComponentStatus `json:"components,omitempty"`
	// Endpoint is the apiserver URL reachable in the meta cluster.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`
	// ServiceIP is the apiserver Service's cluster IP; kept so a deleted
	// Service comes back at the same address.
	// +optional
	ServiceIP string `json:"serviceIP,omitempty"`
	// AdminKubeconfigSecret holds the admin kubeconfig under key "value".
	// +optional
	AdminKubeconfigSecret string `json:"adminKubeconfigSecret,omitempty"`
	// EtcdCluster is the namespace/name of the EtcdCluster in use.
	// +optional
	EtcdCluster string `json:"etcdCluster,omitempty"`
}

// KubeCluster is a business cluster whose control plane kok runs in the
// meta cluster.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=kc,categories=kok
// +kubebuilder:validation:XValidation:rule="oldSelf.hasValue() || size(self.metadata.name) <= 51",message="metadata.name is too long: the longest name that works is 51 characters (the cluster's etcd is <name>-etcd, whose Service <name>-etcd-client must fit in 63)",optionalOldSelf=true
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.spec.version`
// +kubebuilder:printcolumn:name="Installed",type=string,JSONPath=`.status.version`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.spec.controlPlane.replicas`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`
// +kubebuilder:printcolumn:name="Konnectivity",type=string,JSONPath=`.status.conditions[?(@.type=="KonnectivityReady")].status`,priority=1
// +kubebuilder:printcolumn:name="Etcd",type=string,JSONPath=`.status.etcdCluster`,priority=1
// +kubebuilder:printcolumn:name="Kubeconfig",type=string,JSONPath=`.status.adminKubeconfigSecret`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type KubeCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   KubeClusterSpec   `json:"spec,omitempty"`
	Status KubeClusterStatus `json:"status,omitempty"`
}

// KubeClusterList is a list of KubeClusters.
// +kubebuilder:object:root=true
type KubeClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KubeCluster `json:"items"`
}

func init() {
	SchemeBuilder.Register(&KubeCluster{}, &KubeClusterList{})
}
