package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MachineSpec is one host and what it must run to be a node of a business
// cluster.
type MachineSpec struct {
	// ClusterName is the KubeCluster, in the Machine's namespace, that the
	// host joins.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="clusterName is immutable: delete the Machine (its node is drained and the host cleaned) and create one for the other cluster"
	ClusterName string `json:"clusterName"`

	// Address the host is reached at (IP or DNS name); it is also the
	// node's InternalIP.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="address is immutable: a host at another address is another Machine"
	Address string `json:"address"`

	// SSH is how the operator reaches the host on day 0.
	SSH SSHAccess `json:"ssh"`

	// Components the host needs, installed in dependency order.
	// +kubebuilder:validation:MinItems=1
	// +listType=map
	// +listMapKey=name
	Components []ComponentRef `json:"components"`

	// NodeLabels are set on the node when it registers.
	// +optional
	NodeLabels map[string]string `json:"nodeLabels,omitempty"`

	// Taints are set on the node when it registers.
	// +optional
	Taints []corev1.Taint `json:"taints,omitempty"`

	// Paused stops the operator from changing anything on the host; status
	// is still observed.
	// +optional
	Paused bool `json:"paused,omitempty"`
}

// SSHAccess is a pinned SSH endpoint with its credentials.
type SSHAccess struct {
	// Port of the host's sshd.
	// +kubebuilder:default=22
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`
	// User to log in as; it must be root or have password-less sudo.
	// +kubebuilder:default=root
	// +optional
	User string `json:"user,omitempty"`
	// CredentialsSecret, in the Machine's namespace, holds the private key
	// under "ssh-privatekey" (the kubernetes.io/ssh-auth layout).
	// +kubebuilder:validation:MinLength=1
	CredentialsSecret string `json:"credentialsSecret"`
	// HostKey is the host's public key in authorized_keys form
	// ("ssh-ed25519 AAAA..."). The operator talks only to a host that
	// proves this key; it never trusts a key on first use.
	// +kubebuilder:validation:Pattern=`^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|rsa-sha2-256|rsa-sha2-512|ssh-rsa) [A-Za-z0-9+/]+=*( .*)?$`
	HostKey string `json:"hostKey"`
}

// ComponentRef asks for a component at a version.
type ComponentRef struct {
	// Name is the component's name (Component.spec.component).
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// Version of the component; empty means the Kubernetes release the
	// business cluster's control plane runs (its status.version, for
	// components released with Kubernetes, such as kubelet), so nodes
	// move only after the control plane finished an upgrade. The
	// Component <name>-<version> must exist.
	// +optional
	Version string `json:"version,omitempty"`
}

// Condition types of a Machine.
const (
	// MachineReachable: the operator (day 0) or the node agent (after)
	// reaches the host and it proved its pinned key.
	MachineReachable = "Reachable"
	// MachineComponentsReady: every component passed its check at the
	// asked version.
	MachineComponentsReady = "ComponentsReady"
	// MachineNodeJoined: the node registered with the business cluster.
	MachineNodeJoined = "NodeJoined"
	// MachineNodeReady: the node reports Ready.
	MachineNodeReady = "NodeReady"
	// MachineReady sums them up.
	MachineReady = "Ready"
	// MachineUpToDate: the components that pin no version run the
	// release of the cluster's control plane. While the cluster changes
	// release, Machines move one at a time in name order (reason
	// WaitingForTurn names the one that goes first); it does not count
	// towards Ready.
	MachineUpToDate = "UpToDate"
)

// Phases of a Machine (status.phase summarizes the conditions).
const (
	MachinePhasePending      = "Pending"
	MachinePhaseProvisioning = "Provisioning"
	MachinePhaseJoining      = "Joining"
	MachinePhaseReady        = "Ready"
	MachinePhaseDegraded     = "Degraded"
	MachinePhaseDeleting     = "Deleting"
)

// HostFacts are discovered on the host.
type HostFacts struct {
	// OS is the os-release ID, OSVersion its VERSION_ID.
	OS        string `json:"os,omitempty"`
	OSVersion string `json:"osVersion,omitempty"`
	// Arch as Go names it (amd64, arm64).
	Arch          string `json:"arch,omitempty"`
	KernelVersion string `json:"kernelVersion,omitempty"`
	CPUs          int32  `json:"cpus,omitempty"`
	// MemoryBytes is the host's total memory.
	MemoryBytes int64 `json:"memoryBytes,omitempty"`
	// Hostname the host reports.
	Hostname string `json:"hostname,omitempty"`
}

// ComponentStatus is one component as applied on the host.
type ComponentStatus struct {
	Name string `json:"name"`
	// Version applied, and Variant used for the host.
	Version string `json:"version,omitempty"`
	Variant string `json:"variant,omitempty"`
	// Hash of what was applied (artifacts, rendered files and scripts):
	// a different desired hash means a change to roll out.
	Hash string `json:"hash,omitempty"`
	// Ready: the last check passed at this version.
	Ready bool `json:"ready"`
	// LastCheck is when the check last ran.
	// +optional
	LastCheck *metav1.Time `json:"lastCheck,omitempty"`
	// LastError is the failing step and the tail of its script's stderr.
	// +optional
	LastError string `json:"lastError,omitempty"`
	// LastRepair is what the agent last did to bring the component back
	// to its final state ("restored /var/lib/kubelet/config.yaml",
	// "repaired (…)"), and LastRepairTime when.
	// +optional
	LastRepair string `json:"lastRepair,omitempty"`
	// +optional
	LastRepairTime *metav1.Time `json:"lastRepairTime,omitempty"`
}

// ServiceStatus is a service the agent supervises on the host.
type ServiceStatus struct {
	Name    string `json:"name"`
	Running bool   `json:"running"`
	// Restarts counts the times it stopped and the agent started it again.
	Restarts int32 `json:"restarts"`
	// LastExit is how it last stopped ("killed by SIGKILL", "exited 1").
	// +optional
	LastExit string `json:"lastExit,omitempty"`
}

// MachineStatus is the observed state of a host.
type MachineStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Phase summarizes the conditions for print columns.
	// +optional
	Phase string `json:"phase,omitempty"`
	// Facts discovered on the host.
	// +optional
	Facts *HostFacts `json:"facts,omitempty"`
	// Components as applied, in install order.
	// +listType=map
	// +listMapKey=name
	// +optional
	Components []ComponentStatus `json:"components,omitempty"`
	// NodeName of the host in the business cluster.
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// KubeletVersion the node reports.
	// +optional
	KubeletVersion string `json:"kubeletVersion,omitempty"`
	// Services the agent supervises, as it last reported them.
	// +optional
	Services []ServiceStatus `json:"services,omitempty"`
	// AgentReportTime is when the agent wrote the report status carries.
	// +optional
	AgentReportTime *metav1.Time `json:"agentReportTime,omitempty"`
}

// Machine is a host that kok keeps as a node of a business cluster: it
// reaches the host over SSH (host key pinned), installs the Components it
// needs in dependency order, joins it with a bootstrap token and keeps it
// at its final state through the node agent.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mach,categories=kok
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="metadata.name is the node's name and a DNS label: at most 63 characters"
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name is the node's name: lower-case letters, digits and '-' (a DNS label)"
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.clusterName`
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.address`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.nodeName`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.kubeletVersion`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Machine struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec MachineSpec `json:"spec"`
	// +optional
	Status MachineStatus `json:"status,omitempty"`
}

// MachineList is a list of Machines.
// +kubebuilder:object:root=true
type MachineList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Machine `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Machine{}, &MachineList{})
}
