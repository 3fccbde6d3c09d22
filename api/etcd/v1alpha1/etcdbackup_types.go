package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BackupStorage is where snapshots are kept: an S3-compatible bucket or a
// volume in the cluster's namespace.
// +kubebuilder:validation:XValidation:rule="has(self.s3) != has(self.volume)",message="set exactly one of storage.s3 or storage.volume"
type BackupStorage struct {
	// S3 is an S3-compatible object store.
	// +optional
	S3 *S3Storage `json:"s3,omitempty"`
	// Volume is a PersistentVolumeClaim in the backup's namespace.
	// +optional
	Volume *VolumeStorage `json:"volume,omitempty"`
}

// S3Storage is a bucket in an S3-compatible object store.
type S3Storage struct {
	// Endpoint is host:port of the object store.
	// +kubebuilder:validation:MinLength=1
	Endpoint string `json:"endpoint"`
	// Bucket holds the snapshots; it must exist.
	// +kubebuilder:validation:MinLength=3
	Bucket string `json:"bucket"`
	// Prefix is prepended to every object name, e.g. "prod/".
	// +optional
	Prefix string `json:"prefix,omitempty"`
	// Region of the bucket.
	// +kubebuilder:default="us-east-1"
	Region string `json:"region,omitempty"`
	// Insecure talks plain HTTP (for a store on a trusted local network).
	// +optional
	Insecure bool `json:"insecure,omitempty"`
	// CredentialsSecret names a Secret with keys accessKeyID and
	// secretAccessKey.
	// +kubebuilder:validation:MinLength=1
	CredentialsSecret string `json:"credentialsSecret"`
}

// VolumeStorage is a directory on a PersistentVolumeClaim.
type VolumeStorage struct {
	// ClaimName is the PersistentVolumeClaim, in the backup's namespace.
	// +kubebuilder:validation:MinLength=1
	ClaimName string `json:"claimName"`
	// Path is the directory on the volume.
	// +kubebuilder:default="/"
	Path string `json:"path,omitempty"`
}

// EtcdBackupSpec asks for snapshots of an EtcdCluster: once, or on a
// schedule with retention.
type EtcdBackupSpec struct {
	// ClusterName is the EtcdCluster, in the same namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="clusterName is immutable: create another EtcdBackup for another cluster"
	ClusterName string `json:"clusterName"`
	// Storage is where snapshots go.
	Storage BackupStorage `json:"storage"`
	// Schedule is a cron expression ("0 * * * *", "@every 30m"); empty
	// takes one snapshot now.
	// +optional
	Schedule string `json:"schedule,omitempty"`
	// Keep is how many snapshots a scheduled backup keeps; older ones are
	// deleted from storage.
	// +kubebuilder:default=7
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	Keep int32 `json:"keep,omitempty"`
	// Suspend stops scheduling new snapshots.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// Snapshot is one snapshot taken and stored.
type Snapshot struct {
	// Name is the object (or file) name in storage.
	Name string `json:"name"`
	// Location is where it is, e.g. s3://bucket/prefix/name or
	// pvc://claim/path/name.
	Location string `json:"location"`
	// Taken is when the snapshot was taken.
	Taken metav1.Time `json:"taken"`
	// Size in bytes.
	Size int64 `json:"size"`
	// SHA256 of the stored file.
	SHA256 string `json:"sha256"`
	// Revision of the store the snapshot holds.
	Revision int64 `json:"revision"`
	// KVHash is etcd's HashKV at Revision: a restore that yields the same
	// hash holds the same keys and values.
	KVHash uint32 `json:"kvHash"`
	// EtcdVersion of the cluster that was snapshotted.
	// +optional
	EtcdVersion string `json:"etcdVersion,omitempty"`
}

// Condition types of an EtcdBackup.
const (
	// ConditionSucceeded: the last snapshot was taken and stored.
	ConditionSucceeded = "Succeeded"
)

// EtcdBackupStatus is what the backup has done.
type EtcdBackupStatus struct {
	// Conditions: Succeeded (the last attempt), Progressing.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the spec generation acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Phase: Pending, Running, Succeeded, Failed, Scheduled.
	// +optional
	Phase string `json:"phase,omitempty"`
	// Snapshots kept, oldest first.
	// +optional
	Snapshots []Snapshot `json:"snapshots,omitempty"`
	// Active is the Job taking a snapshot now.
	// +optional
	Active string `json:"active,omitempty"`
	// LastScheduleTime is when the last snapshot was started.
	// +optional
	LastScheduleTime *metav1.Time `json:"lastScheduleTime,omitempty"`
	// NextScheduleTime is when the next one starts.
	// +optional
	NextScheduleTime *metav1.Time `json:"nextScheduleTime,omitempty"`
}

// EtcdBackup takes snapshots of an EtcdCluster.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=kok
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.clusterName`
// +kubebuilder:printcolumn:name="Schedule",type=string,JSONPath=`.spec.schedule`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Last",type=date,JSONPath=`.status.lastScheduleTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type EtcdBackup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   EtcdBackupSpec   `json:"spec,omitempty"`
	Status EtcdBackupStatus `json:"status,omitempty"`
}

// EtcdBackupList is a list of EtcdBackups.
// +kubebuilder:object:root=true
type EtcdBackupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EtcdBackup `json:"items"`
}

// SnapshotSource names one stored snapshot a cluster starts from.
type SnapshotSource struct {
	// Storage holds the snapshot.
	Storage BackupStorage `json:"storage"`
	// Name of the snapshot in storage.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// SHA256 the file must have; a mismatch stops the restore.
	// +optional
	SHA256 string `json:"sha256,omitempty"`
	// BumpRevision raises every revision by this much (and marks the old
	// ones compacted), so watchers of the restored data never see time go
	// back. 0 restores revisions as they were (a drill).
	// +kubebuilder:validation:Minimum=0
	// +optional
	BumpRevision int64 `json:"bumpRevision,omitempty"`
}

// EtcdRestoreSpec creates a new EtcdCluster from a snapshot.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="an EtcdRestore is immutable: create a new one"
type EtcdRestoreSpec struct {
	// BackupName is the EtcdBackup holding the snapshot, same namespace.
	// +kubebuilder:validation:MinLength=1
	BackupName string `json:"backupName"`
	// Snapshot is the snapshot's name; the newest one when empty.
	// +optional
	Snapshot string `json:"snapshot,omitempty"`
	// ClusterName is the EtcdCluster to create; it must not exist.
	// +kubebuilder:validation:MinLength=1
	ClusterName string `json:"clusterName"`
	// Cluster is the new cluster's spec (replicas, version, storage …);
	// three members at the newest version when unset.
	// +optional
	Cluster *EtcdClusterSpec `json:"cluster,omitempty"`
	// BumpRevision raises every revision of the restored data so Kubernetes
	// watchers never go back in time.
	// +kubebuilder:default=1000000
	// +kubebuilder:validation:Minimum=0
	BumpRevision int64 `json:"bumpRevision,omitempty"`
	// Drill restores into a throw-away cluster without bumping revisions,
	// checks that its HashKV equals the one recorded with the snapshot, and
	// deletes the cluster again.
	// +optional
	Drill bool `json:"drill,omitempty"`
}

// EtcdRestoreStatus is how the restore went.
type EtcdRestoreStatus struct {
	// Conditions: Succeeded.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Phase: Restoring, Verifying, Succeeded, Failed.
	// +optional
	Phase string `json:"phase,omitempty"`
	// Snapshot restored.
	// +optional
	Snapshot *Snapshot `json:"snapshot,omitempty"`
	// KVHash of the restored cluster at the snapshot's revision (drills).
	// +optional
	KVHash uint32 `json:"kvHash,omitempty"`
	// Started and Finished bound the restore.
	// +optional
	Started *metav1.Time `json:"started,omitempty"`
	// +optional
	Finished *metav1.Time `json:"finished,omitempty"`
}

// EtcdRestore creates an EtcdCluster from a snapshot, or drills a restore.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=kok
// +kubebuilder:printcolumn:name="Backup",type=string,JSONPath=`.spec.backupName`
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.clusterName`
// +kubebuilder:printcolumn:name="Drill",type=boolean,JSONPath=`.spec.drill`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type EtcdRestore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   EtcdRestoreSpec   `json:"spec,omitempty"`
	Status EtcdRestoreStatus `json:"status,omitempty"`
}

// EtcdRestoreList is a list of EtcdRestores.
// +kubebuilder:object:root=true
type EtcdRestoreList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EtcdRestore `json:"items"`
}

func init() {
	SchemeBuilder.Register(&EtcdBackup{}, &EtcdBackupList{}, &EtcdRestore{}, &EtcdRestoreList{})
}
