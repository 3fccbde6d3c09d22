package etcd

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/conditions"
	"github.com/kubeonkube/kok/internal/kube"
)

// AnnRestoredBy marks an EtcdCluster an EtcdRestore created (its UID), so a
// restore never takes over a cluster that already held data.
const AnnRestoredBy = "etcd.kok.dev/restored-by"

// RestoreReconciler runs EtcdRestores: it creates the new EtcdCluster with
// spec.restore set (its first member restores the snapshot, the others
// join as learners), and for a drill compares HashKV with the backup's.
type RestoreReconciler struct {
	client.Client
	Recorder record.EventRecorder
}

// +kubebuilder:rbac:groups=etcd.kok.dev,resources=etcdrestores,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=etcd.kok.dev,resources=etcdrestores/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=etcd.kok.dev,resources=etcdclusters,verbs=create;delete

// SetupWithManager registers the controller.
func (r *RestoreReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorderFor("etcd-restore")
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&etcdv1.EtcdRestore{}).
		Owns(&etcdv1.EtcdCluster{}).
		Complete(r)
}

// Reconcile moves a restore one step on.
func (r *RestoreReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	rs := &etcdv1.EtcdRestore{}
	if err := r.Get(ctx, req.NamespacedName, rs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if rs.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	if rs.Status.Finished != nil {
		// A drill's cluster goes only once its outcome is recorded: were
		// it deleted first, a pass reading an older copy of the restore
		// would find it gone and record a failure over the result.
		if rs.Spec.Drill {
			return ctrl.Result{}, r.deleteDrillCluster(ctx, rs)
		}
		return ctrl.Result{}, nil
	}
	before := rs.DeepCopy()
	res, err := r.reconcile(ctx, rs)
	if perr := r.Status().Patch(ctx, rs, client.MergeFrom(before)); perr != nil && err == nil {
		err = perr
	}
	return res, err
}

func (r *RestoreReconciler) fail(rs *etcdv1.EtcdRestore, reason, msg string) {
	rs.Status.Phase = "Failed"
	rs.Status.Finished = &metav1.Time{Time: time.Now()}
	conditions.Set(&rs.Status.Conditions, rs.Generation, etcdv1.ConditionSucceeded, false, reason, msg)
	r.Recorder.Event(rs, corev1.EventTypeWarning, reason, msg)
}

func (r *RestoreReconciler) reconcile(ctx context.Context, rs *etcdv1.EtcdRestore) (ctrl.Result, error) {
	st := &rs.Status
	if st.Started == nil {
		st.Started = &metav1.Time{Time: time.Now()}
	}
	// 1. The snapshot, fixed at the start.
	var b etcdv1.EtcdBackup
	if err := r.Get(ctx, client.ObjectKey{Namespace: rs.Namespace, Name: rs.Spec.BackupName}, &b); err != nil {
		if apierrors.IsNotFound(err) {
			r.fail(rs, "BackupNotFound", fmt.Sprintf("EtcdBackup %s not found in %s", rs.Spec.BackupName, rs.Namespace))
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if st.Snapshot == nil {
		for i := range b.Status.Snapshots {
			s := b.Status.Snapshots[i]
			if rs.Spec.Snapshot == "" || s.Name == rs.Spec.Snapshot {
				st.Snapshot = &s // the newest matching one (oldest first)
			}
		}
		if st.Snapshot == nil {
			what := "no snapshot yet"
			if rs.Spec.Snapshot != "" {
				what = "no snapshot named " + rs.Spec.Snapshot
			}
			r.fail(rs, "SnapshotNotFound", fmt.Sprintf("EtcdBackup %s has %s", b.Name, what))
			return ctrl.Result{}, nil
		}
	}
	snap := st.Snapshot

	// 2. The new cluster: created here, never an existing one.
	spec := etcdv1.EtcdClusterSpec{}
	if rs.Spec.Cluster != nil {
		spec = *rs.Spec.Cluster.DeepCopy()
	}
	if spec.Replicas == 0 {
		spec.Replicas = 3
	}
	if spec.Version == "" {
		spec.Version = SupportedRestoreVersion
	}
	if kube.MinorVersion(spec.Version) < 6 {
		r.fail(rs, "UnsupportedVersion", fmt.Sprintf("restores run at etcd v3.6 (the snapshot is restored with v3.6 tools): set spec.cluster.version to %s", SupportedRestoreVersion))
		return ctrl.Result{}, nil
	}
	bump := rs.Spec.BumpRevision
	if rs.Spec.Drill {
		spec.Replicas, bump = 1, 0
	}
	spec.Restore = &etcdv1.SnapshotSource{Storage: b.Spec.Storage, Name: snap.Name, SHA256: snap.SHA256, BumpRevision: bump}
	e := &etcdv1.EtcdCluster{}
	err := r.Get(ctx, client.ObjectKey{Namespace: rs.Namespace, Name: rs.Spec.ClusterName}, e)
	switch {
	case apierrors.IsNotFound(err):
		if st.Phase != "" {
			r.fail(rs, "ClusterDeleted", fmt.Sprintf("EtcdCluster %s was deleted during the restore", rs.Spec.ClusterName))
			return ctrl.Result{}, nil
		}
		e = &etcdv1.EtcdCluster{
			ObjectMeta: metav1.ObjectMeta{Name: rs.Spec.ClusterName, Namespace: rs.Namespace,
				Annotations: map[string]string{AnnRestoredBy: string(rs.UID)}},
			Spec: spec,
		}
		// A drill's cluster goes with the drill; a real restore's cluster
		// outlives the EtcdRestore.
		if rs.Spec.Drill {
			if err := controllerutil.SetControllerReference(rs, e, r.Scheme()); err != nil {
				return ctrl.Result{}, err
			}
		}
		if err := r.Create(ctx, e); err != nil {
			return ctrl.Result{}, err
		}
		st.Phase = "Restoring"
		r.Recorder.Eventf(rs, corev1.EventTypeNormal, "Restoring", "EtcdCluster %s starts from %s (revision %d, bumped by %d)", e.Name, snap.Location, snap.Revision, bump)
		return ctrl.Result{RequeueAfter: 2 * time.Second}, nil
	case err != nil:
		return ctrl.Result{}, err
	case e.Annotations[AnnRestoredBy] != string(rs.UID):
		r.fail(rs, "ClusterExists", fmt.Sprintf("EtcdCluster %s already exists: a restore creates a new cluster, so pick another spec.clusterName (nothing was changed)", e.Name))
		return ctrl.Result{}, nil
	}
	st.Phase = "Restoring"

	// 3. Wait for every member; say so when the first member's restore
	// fails (a bad snapshot is final, a store that is down may recover).
	if !conditions.IsTrue(e.Status.Conditions, etcdv1.ConditionAvailable) || e.Status.Phase != etcdv1.PhaseRunning || e.Status.ReadyMembers != e.Spec.Replicas {
		var pod corev1.Pod
		if err := r.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: MemberName(e.Name, 0)}, &pod); err == nil {
			for _, cs := range pod.Status.InitContainerStatuses {
				if t := cs.LastTerminationState.Terminated; t != nil && t.ExitCode != 0 {
					if strings.Contains(t.Message, "refusing to restore") {
						r.fail(rs, "SnapshotCorrupt", t.Message)
						return ctrl.Result{}, nil
					}
					conditions.SetStatus(&rs.Status.Conditions, rs.Generation, etcdv1.ConditionSucceeded, metav1.ConditionUnknown,
						"RestoreRetrying", fmt.Sprintf("restore attempt %d failed: %s", cs.RestartCount, t.Message))
				}
			}
		}
		return ctrl.Result{RequeueAfter: 2 * time.Second}, nil
	}

	// 4. Check what came back.
	st.Phase = "Verifying"
	at := snap.Revision
	if !rs.Spec.Drill {
		at = 0 // bumped revisions mark the snapshot's ones compacted
	}
	hash, rev, err := r.inspect(ctx, e, at)
	if err != nil {
		r.Recorder.Eventf(rs, corev1.EventTypeWarning, "VerifyFailed", "%v", err)
		return ctrl.Result{RequeueAfter: 5 * time.Second}, nil
	}
	took := time.Since(st.Started.Time).Round(time.Second)
	switch {
	case rs.Spec.Drill && hash != snap.KVHash:
		st.KVHash = hash
		r.fail(rs, "HashMismatch", fmt.Sprintf("restored HashKV at revision %d is %d, the backup recorded %d: this backup does not restore what was written", snap.Revision, hash, snap.KVHash))
	case rs.Spec.Drill:
		st.KVHash = hash
		r.succeed(rs, "DrillPassed", fmt.Sprintf("%s restores: HashKV %d at revision %d matches (%s)", snap.Location, hash, snap.Revision, took))
	case rev < snap.Revision+bump:
		r.fail(rs, "RevisionNotBumped", fmt.Sprintf("restored cluster is at revision %d, want at least %d", rev, snap.Revision+bump))
	default:
		r.succeed(rs, "Restored", fmt.Sprintf("EtcdCluster %s restored from %s, revision %d → %d (%s)", e.Name, snap.Location, snap.Revision, rev, took))
	}
	return ctrl.Result{}, nil
}

// deleteDrillCluster removes the throw-away cluster a finished drill made
// (never a cluster it did not create).
func (r *RestoreReconciler) deleteDrillCluster(ctx context.Context, rs *etcdv1.EtcdRestore) error {
	e := &etcdv1.EtcdCluster{}
	err := r.Get(ctx, client.ObjectKey{Namespace: rs.Namespace, Name: rs.Spec.ClusterName}, e)
	if apierrors.IsNotFound(err) || (err == nil && (e.Annotations[AnnRestoredBy] != string(rs.UID) || e.DeletionTimestamp != nil)) {
		return nil
	}
	if err != nil {
		return err
	}
	return client.IgnoreNotFound(r.Delete(ctx, e))
}

// SupportedRestoreVersion is the etcd release restored clusters start at.
const SupportedRestoreVersion = "v3.6.16"

func (r *RestoreReconciler) succeed(rs *etcdv1.EtcdRestore, reason, msg string) {
	rs.Status.Phase = "Succeeded"
	rs.Status.Finished = &metav1.Time{Time: time.Now()}
	conditions.Set(&rs.Status.Conditions, rs.Generation, etcdv1.ConditionSucceeded, true, reason, msg)
	r.Recorder.Event(rs, corev1.EventTypeNormal, reason, msg)
}

// inspect returns the restored cluster's HashKV at rev and its current
// revision.
func (r *RestoreReconciler) inspect(ctx context.Context, e *etcdv1.EtcdCluster, rev int64) (uint32, int64, error) {
	n := Names{Cluster: e.Name, Namespace: e.Namespace}
	var s corev1.Secret
	if err := r.Get(ctx, client.ObjectKey{Namespace: n.Namespace, Name: n.ClientSecret()}, &s); err != nil {
		return 0, 0, err
	}
	tlsCfg, err := ClientTLS(s.Data)
	if err != nil {
		return 0, 0, err
	}
	ep := n.ClientURL(MemberName(e.Name, 0))
	cli, err := Dial([]string{ep}, tlsCfg)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = cli.Close() }()
	cctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	hk, err := cli.HashKV(cctx, ep, rev)
	if err != nil {
		return 0, 0, fmt.Errorf("HashKV at revision %d: %w", rev, err)
	}
	return hk.Hash, hk.Header.Revision, nil
}
