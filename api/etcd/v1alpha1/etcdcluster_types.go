package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SupportedVersions are the etcd versions the operator runs, oldest first.
// The CRD's admission rules list the same set (see the Version marker).
var SupportedVersions = []string{"v3.5.35", "v3.6.16"}

// EtcdClusterSpec is the desired state of an etcd cluster.
//
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.version) || int(self.version.split('.')[1]) >= int(oldSelf.version.split('.')[1])",message="etcd cannot be downgraded to an older minor version: keep spec.version at the current minor or newer (restore a backup into a new EtcdCluster to go back)"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.version) || int(self.version.split('.')[1]) <= int(oldSelf.version.split('.')[1]) + 1",message="etcd upgrades go one minor version at a time: upgrade to the next minor first"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.version) || int(self.version.split('.')[1]) != int(oldSelf.version.split('.')[1]) || int(self.version.split('.')[2]) >= int(oldSelf.version.split('.')[2])",message="etcd cannot be downgraded to an older patch release: keep spec.version at the current patch or newer"
// +kubebuilder:validation:XValidation:rule="oldSelf.storage == self.storage",message="spec.storage is immutable: create a new EtcdCluster (and restore a backup into it) to change storage"
// +kubebuilder:validation:XValidation:rule="has(oldSelf.restore) == has(self.restore) && (!has(self.restore) || oldSelf.restore == self.restore)",message="spec.restore is immutable: it only says what a new cluster starts from"
type EtcdClusterSpec struct {
	// Replicas is the number of voting members: 1, 3, 5 or 7. Scaling adds
	// members one at a time as learners and never goes below quorum.
	// +kubebuilder:default=3
	// +kubebuilder:validation:XValidation:rule="self in [1, 3, 5, 7]",message="replicas must be 1, 3, 5 or 7 (an odd size up to 7 keeps a majority quorum efficient)"
	Replicas int32 `json:"replicas"`

	// Version is the etcd release to run.
	// +kubebuilder:default="v3.6.16"
	// +kubebuilder:validation:XValidation:rule="self in ['v3.5.35', 'v3.6.16']",message="unsupported etcd version: use one of v3.5.35, v3.6.16"
	Version string `json:"version"`

	// Storage is where each member keeps its data.
	// +kubebuilder:default={size: "1Gi"}
	Storage EtcdStorage `json:"storage,omitempty"`

	// QuotaBackendBytes is the backend size at which etcd raises the NOSPACE
	// alarm and refuses writes.
	// +kubebuilder:default="2Gi"
	// +optional
	QuotaBackendBytes *resource.Quantity `json:"quotaBackendBytes,omitempty"`

	// AutoCompaction keeps history bounded; periodic, 5m (Kubernetes'
	// own compaction interval) when unset.
	// +optional
	AutoCompaction *AutoCompaction `json:"autoCompaction,omitempty"`

	// Defrag reclaims space left by compaction.
	// +optional
	Defrag *DefragPolicy `json:"defrag,omitempty"`

	// Resources of each member's etcd container. When it sets neither
	// requests nor limits, members request 100m CPU and 128Mi memory (never
	// BestEffort).
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// Paused stops the operator from changing anything for this cluster;
	// status is still observed.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// EnableAuth turns on etcd authentication: every client is the user its
	// certificate's common name names. The operator keeps a root user for
	// itself; each business cluster sharing this EtcdCluster gets a user
	// whose role reaches only its own key prefix.
	// +optional
	EnableAuth bool `json:"enableAuth,omitempty"`

	// Restore makes a new cluster start from a snapshot: the first member
	// restores it into its empty volume, the others join as learners. An
	// EtcdRestore sets it; it has no effect once the cluster exists.
	// +optional
	Restore *SnapshotSource `json:"restore,omitempty"`
}

// EtcdStorage describes a member's data volume.
// +kubebuilder:validation:XValidation:rule="!(has(self.emptyDir) && self.emptyDir) || !has(self.storageClassName)",message="storageClassName has no meaning with emptyDir: true"
type EtcdStorage struct {
	// Size of each member's PersistentVolumeClaim.
	// +kubebuilder:default="1Gi"
	Size resource.Quantity `json:"size,omitempty"`
	// StorageClassName of the claims; the cluster default when unset.
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`
	// EmptyDir keeps data in the pod only: a lost pod loses its member's
	// data, which the operator then replaces from the others. For
	// development only.
	// +optional
	EmptyDir bool `json:"emptyDir,omitempty"`
}

// AutoCompaction configures etcd's own compaction.
type AutoCompaction struct {
	// Mode is periodic (retention is a duration) or revision (a count).
	// +kubebuilder:validation:Enum=periodic;revision
	// +kubebuilder:default=periodic
	Mode string `json:"mode,omitempty"`
	// Retention, e.g. "1h" for periodic or "10000" for revision.
	// +kubebuilder:default="1h"
	Retention string `json:"retention,omitempty"`
}

// DefragPolicy configures defragmentation, followers first then the leader.
// Without one, a member is defragmented when half of a backend of 64 MiB or
// more is unused.
type DefragPolicy struct {
	// Schedule is a cron expression for routine defragmentation.
	// +optional
	Schedule string `json:"schedule,omitempty"`
	// FragmentationThresholdPercent triggers a defragmentation when the
	// unused share of the backend passes it.
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=90
	// +kubebuilder:default=50
	FragmentationThresholdPercent int32 `json:"fragmentationThresholdPercent,omitempty"`
}

// Condition types of an EtcdCluster.
const (
	// ConditionAvailable: a quorum serves linearizable reads.
	ConditionAvailable = "Available"
	// ConditionProgressing: membership, version or pods are changing.
	ConditionProgressing = "Progressing"
	// ConditionDegraded: a member is unhealthy or an operation is stuck.
	ConditionDegraded = "Degraded"
	// ConditionQuorumLost: too few members to serve; no automatic wipe,
	// recovery is through an EtcdRestore.
	ConditionQuorumLost = "QuorumLost"
)

// Phases of an EtcdCluster (status.phase summarizes the conditions).
const (
	PhaseCreating    = "Creating"
	PhaseRunning     = "Running"
	PhaseUpdating    = "Updating"
	PhasePaused      = "Paused"
	PhaseUnavailable = "Unavailable"
	PhaseQuorumLost  = "QuorumLost"
)

// MemberRole is a member's raft role.
type MemberRole string

const (
	RoleLeader   MemberRole = "Leader"
	RoleFollower MemberRole = "Follower"
	RoleLearner  MemberRole = "Learner"
)

// MemberStatus is one member as observed.
type MemberStatus struct {
	// Name is the member's (and its pod's) name.
	Name string `json:"name"`
	// ID is the etcd member ID, hexadecimal.
	// +optional
	ID string `json:"id,omitempty"`
	// +optional
	Role MemberRole `json:"role,omitempty"`
	// +optional
	Version string `json:"version,omitempty"`
	Healthy bool   `json:"healthy"`
	// +optional
	DBSize int64 `json:"dbSize,omitempty"`
	// +optional
	DBSizeInUse int64 `json:"dbSizeInUse,omitempty"`
	// +optional
	RaftIndex uint64 `json:"raftIndex,omitempty"`
	// +optional
	Alarms []string `json:"alarms,omitempty"`
}

// MembershipOperation is a membership change in flight. It is written to
// status before the etcd call is made, so an operator that crashes between
// the call and the pod change finds it and converges.
type MembershipOperation struct {
	// Type is AddLearner, Promote or Remove.
	// +kubebuilder:validation:Enum=AddLearner;Promote;Remove
	Type string `json:"type"`
	// Member is the member's name.
	Member string `json:"member"`
	// ID is the etcd member ID once known.
	// +optional
	ID string `json:"id,omitempty"`
	// Started is when the operation was journaled.
	Started metav1.Time `json:"started"`
}

// EtcdClusterStatus is the observed state of an etcd cluster.
type EtcdClusterStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Phase summarizes the conditions for print columns.
	// +optional
	Phase string `json:"phase,omitempty"`
	// Members as observed from etcd and the pods.
	// +optional
	Members []MemberStatus `json:"members,omitempty"`
	// ReadyMembers counts healthy voting members.
	// +optional
	ReadyMembers int32 `json:"readyMembers,omitempty"`
	// Version is the lowest version any member runs.
	// +optional
	Version string `json:"version,omitempty"`
	// ClusterID is etcd's cluster ID, hexadecimal.
	// +optional
	ClusterID string `json:"clusterID,omitempty"`
	// Operation is the membership change in flight, if any.
	// +optional
	Operation *MembershipOperation `json:"operation,omitempty"`
	// AuthEnabled: etcd authentication is on.
	// +optional
	AuthEnabled bool `json:"authEnabled,omitempty"`
	// LastDefragTime is when the last full defragmentation round (scheduled
	// or after a NOSPACE alarm) finished.
	// +optional
	LastDefragTime *metav1.Time `json:"lastDefragTime,omitempty"`
	// ClientEndpoint is the URL clients use (the client Service).
	// +optional
	ClientEndpoint string `json:"clientEndpoint,omitempty"`
	// CASecretName holds ca.crt to verify the members' serving certificates.
	// +optional
	CASecretName string `json:"caSecretName,omitempty"`
	// ClientSecretName holds tls.crt/tls.key of a root client certificate.
	// +optional
	ClientSecretName string `json:"clientSecretName,omitempty"`
}

// EtcdCluster is an etcd cluster run by kok in the meta cluster.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=etcd,categories=kok
// +kubebuilder:validation:XValidation:rule="oldSelf.hasValue() || size(self.metadata.name) <= 56",message="metadata.name is too long: the longest name that works is 56 characters (the Service <name>-client must fit in 63)",optionalOldSelf=true
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyMembers`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.version`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.clientEndpoint`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type EtcdCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   EtcdClusterSpec   `json:"spec,omitempty"`
	Status EtcdClusterStatus `json:"status,omitempty"`
}

// EtcdClusterList is a list of EtcdClusters.
// +kubebuilder:object:root=true
type EtcdClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EtcdCluster `json:"items"`
}

func init() {
	SchemeBuilder.Register(&EtcdCluster{}, &EtcdClusterList{})
}
