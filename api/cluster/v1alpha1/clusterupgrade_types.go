package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ClusterUpgradeSpec is a fleet rollout: which KubeClusters move to which
// release, in what order, and when to stop.
type ClusterUpgradeSpec struct {
	// To is the Kubernetes release every selected cluster moves to; a
	// KubernetesVersion of that name must exist in the catalog. Clusters
	// already at or past it are skipped, never downgraded.
	// +kubebuilder:validation:Pattern=`^v[0-9]+\.[0-9]+\.[0-9]+$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.to is immutable: create another ClusterUpgrade for another release"
	To string `json:"to"`

	// Selector picks KubeClusters by label, in every namespace the
	// namespace selector allows; {} selects every cluster.
	Selector metav1.LabelSelector `json:"selector"`

	// NamespaceSelector limits the namespaces clusters are taken from;
	// empty means every namespace.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// Canary picks the clusters of the first wave, which must all pass the
	// health gate before any other cluster starts. Empty: no canary wave.
	// +optional
	Canary *metav1.LabelSelector `json:"canary,omitempty"`

	// MaxParallel is how many clusters upgrade at once: after the canaries,
	// clusters go in waves of this size, ordered by namespace and name.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MaxParallel int32 `json:"maxParallel,omitempty"`

	// Soak is how long to wait after a wave passed its health gate before
	// the next wave starts.
	// +optional
	Soak *metav1.Duration `json:"soak,omitempty"`

	// HealthTimeout is how long a cluster may take from the start of its
	// upgrade to a passed health gate (control plane and addons at the
	// target, Ready, apiserver /readyz, no crash-looping control-plane
	// pod) before it counts as failed.
	// +kubebuilder:default="10m"
	// +optional
	HealthTimeout *metav1.Duration `json:"healthTimeout,omitempty"`

	// FailureBudget is how many clusters may fail before the rollout
	// halts: with the default 0 the first failure halts it. A halted
	// rollout starts no cluster until failed clusters pass the gate (after
	// a fix) or leave the selection.
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +optional
	FailureBudget int32 `json:"failureBudget,omitempty"`

	// Paused stops the rollout from starting clusters; clusters already
	// upgrading go on and are still gated.
	// +optional
	Paused bool `json:"paused,omitempty"`
}

// States of one cluster in a rollout.
const (
	// UpgradePending: selected, not started.
	UpgradePending = "Pending"
	// UpgradeUpgrading: spec.version set to the target, gate not passed yet.
	UpgradeUpgrading = "Upgrading"
	// UpgradeSucceeded: passed the health gate at the target.
	UpgradeSucceeded = "Succeeded"
	// UpgradeFailed: did not pass the gate (timeout or a failing pod).
	UpgradeFailed = "Failed"
	// UpgradeSkipped: already at or past the target.
	UpgradeSkipped = "Skipped"
	// UpgradeHibernated: hibernated; spec.version was set and the cluster
	// wakes at the target (nothing runs to gate).
	UpgradeHibernated = "Hibernated"
	// UpgradeRemoved: left the selection or was deleted before it
	// finished.
	UpgradeRemoved = "Removed"
)

// Phases of a ClusterUpgrade.
const (
	RolloutPending   = "Pending"
	RolloutRunning   = "Running"
	RolloutPaused    = "Paused"
	RolloutHalted    = "Halted"
	RolloutSucceeded = "Succeeded"
)

// Condition types of a ClusterUpgrade.
const (
	// ConditionHalted: failures exceed the budget; nothing new starts.
	ConditionHalted = "Halted"
	// ConditionComplete: every selected cluster finished.
	ConditionComplete = "Complete"
)

// ClusterUpgradeTarget is one cluster of a rollout.
type ClusterUpgradeTarget struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Wave the cluster belongs to: 0 is the canaries (when any), then
	// waves of maxParallel.
	Wave int32 `json:"wave"`
	// State: Pending, Upgrading, Succeeded, Failed, Skipped, Hibernated or
	// Removed.
	State string `json:"state"`
	// From is the release the cluster ran when it was selected.
	// +optional
	From string `json:"from,omitempty"`
	// Message says why the cluster is in its state, in the words of what
	// failed (a condition, a pod's termination message).
	// +optional
	Message string `json:"message,omitempty"`
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// +optional
	FinishTime *metav1.Time `json:"finishTime,omitempty"`
	// HealthyAtStart are the cluster's parts that were healthy when its
	// upgrade started ("addon/<name>", "machine/<name>"): the gate waits
	// for these to be healthy again at the target, and does not hold the
	// upgrade responsible for what was broken before it.
	// +optional
	HealthyAtStart []string `json:"healthyAtStart,omitempty"`
}

// ClusterUpgradeStatus is the rollout's progress; it is also the journal a
// restarted operator goes on from.
type ClusterUpgradeStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Phase: Pending, Running, Paused, Halted or Succeeded.
	// +optional
	Phase string `json:"phase,omitempty"`
	// Wave is the wave in progress.
	// +optional
	Wave int32 `json:"wave,omitempty"`
	// Waves is the number of waves.
	// +optional
	Waves int32 `json:"waves,omitempty"`
	// Counts of the clusters per state.
	// +optional
	Total int32 `json:"total,omitempty"`
	// +optional
	Done int32 `json:"done,omitempty"`
	// +optional
	Upgrading int32 `json:"upgrading,omitempty"`
	// +optional
	Failed int32 `json:"failed,omitempty"`
	// Summary is the counts in one line for print columns.
	// +optional
	Summary string `json:"summary,omitempty"`
	// SoakUntil: the next wave waits until then.
	// +optional
	SoakUntil *metav1.Time `json:"soakUntil,omitempty"`
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Clusters of the rollout, in the order they go.
	// +optional
	Clusters []ClusterUpgradeTarget `json:"clusters,omitempty"`
}

// ClusterUpgrade upgrades many KubeClusters to one release: canaries
// first, then waves, each cluster gated on its health, halting on
// failures.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cu,categories=kok
// +kubebuilder:printcolumn:name="To",type=string,JSONPath=`.spec.to`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Wave",type=string,JSONPath=`.status.wave`
// +kubebuilder:printcolumn:name="Waves",type=string,JSONPath=`.status.waves`
// +kubebuilder:printcolumn:name="Progress",type=string,JSONPath=`.status.summary`
// +kubebuilder:printcolumn:name="Halted",type=string,JSONPath=`.status.conditions[?(@.type=="Halted")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterUpgrade struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterUpgradeSpec   `json:"spec"`
	Status ClusterUpgradeStatus `json:"status,omitempty"`
}

// ClusterUpgradeList is a list of ClusterUpgrades.
// +kubebuilder:object:root=true
type ClusterUpgradeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterUpgrade `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ClusterUpgrade{}, &ClusterUpgradeList{})
}
