package etcd

import (
	"context"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/conditions"
	"github.com/kubeonkube/kok/internal/etcd/snapshot"
)

// BackupReconciler runs EtcdBackups: each snapshot is a Job running
// kok-manager's snapshot command, which also deletes what retention drops.
type BackupReconciler struct {
	client.Client
	// APIReader reads past the cache (a Job just created is not in it yet).
	APIReader client.Reader
	Recorder  record.EventRecorder
	// ManagerImage is kok-manager's own image, which backup Jobs run.
	ManagerImage string
	// Now is the clock (tests set it).
	Now func() time.Time
}

// +kubebuilder:rbac:groups=etcd.kok.dev,resources=etcdbackups,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=etcd.kok.dev,resources=etcdbackups/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;patch;delete

// SetupWithManager registers the controller.
func (r *BackupReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorderFor("etcd-backup")
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&etcdv1.EtcdBackup{}).
		Owns(&batchv1.Job{}).
		Complete(r)
}

// cronParser accepts the five standard fields and descriptors (@hourly,
// @every 30m), as Kubernetes CronJobs do.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Reconcile starts a snapshot when one is due and records finished ones.
func (r *BackupReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	b := &etcdv1.EtcdBackup{}
	if err := r.Get(ctx, req.NamespacedName, b); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if b.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	before := b.DeepCopy()
	res, err := r.reconcile(ctx, b)
	b.Status.ObservedGeneration = b.Generation
	if perr := r.Status().Patch(ctx, b, client.MergeFrom(before)); perr != nil && err == nil {
		err = perr
	}
	return res, err
}

func (r *BackupReconciler) reconcile(ctx context.Context, b *etcdv1.EtcdBackup) (ctrl.Result, error) {
	now := r.Now()
	st := &b.Status
	var sched cron.Schedule
	if b.Spec.Schedule != "" {
		var err error
		if sched, err = cronParser.Parse(b.Spec.Schedule); err != nil {
			r.setCondition(b, metav1.ConditionFalse, "InvalidSchedule", fmt.Sprintf("schedule %q: %v (use five cron fields or @every 1h)", b.Spec.Schedule, err))
			st.Phase = "Failed"
			return ctrl.Result{}, nil
		}
	}

	// 1. A snapshot in flight: record it when its Job is done. A Job whose
	// start was not recorded (a crash right after creating it) is adopted.
	if st.Active == "" {
		var jobs batchv1.JobList
		if err := r.List(ctx, &jobs, client.InNamespace(b.Namespace), client.MatchingLabels{LabelBackup: b.Name}); err != nil {
			return ctrl.Result{}, err
		}
		for _, j := range jobs.Items {
			if !metav1.IsControlledBy(&j, b) || j.DeletionTimestamp != nil {
				continue
			}
			if j.Annotations[annRecorded] != "" {
				// Its result is in status: the Job can go.
				if err := r.Delete(ctx, &j, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
					return ctrl.Result{}, err
				}
				continue
			}
			if j.Name > st.Active {
				st.Active = j.Name
			}
		}
	}
	if st.Active != "" {
		done, err := r.collect(ctx, b)
		if err != nil || !done {
			return ctrl.Result{RequeueAfter: 5 * time.Second}, err
		}
	}

	// 2. Is one due?
	due := false
	var next time.Time
	switch {
	case sched == nil:
		// Once: a snapshot, or a failure, ends it.
		due = len(st.Snapshots) == 0 && st.Phase != "Failed"
	case b.Spec.Suspend:
		st.Phase, st.NextScheduleTime = "Suspended", nil
		return ctrl.Result{}, nil
	default:
		last := b.CreationTimestamp.Time
		if st.LastScheduleTime != nil {
			last = st.LastScheduleTime.Time
		}
		next = sched.Next(last)
		due = !now.Before(next)
		st.NextScheduleTime = &metav1.Time{Time: next}
	}
	if !due {
		if sched != nil {
			if st.Phase != "Failed" {
				st.Phase = "Scheduled"
			}
			return ctrl.Result{RequeueAfter: next.Sub(now)}, nil
		}
		return ctrl.Result{}, nil
	}

	// 3. Start one, on a cluster that answers.
	e := &etcdv1.EtcdCluster{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: b.Spec.ClusterName}, e); err != nil {
		if apierrors.IsNotFound(err) {
			r.setCondition(b, metav1.ConditionFalse, "ClusterNotFound", fmt.Sprintf("EtcdCluster %s not found in %s", b.Spec.ClusterName, b.Namespace))
			st.Phase = "Pending"
			return ctrl.Result{RequeueAfter: 10 * time.Second}, nil
		}
		return ctrl.Result{}, err
	}
	if !meta.IsStatusConditionTrue(e.Status.Conditions, etcdv1.ConditionAvailable) {
		st.Phase = "Pending"
		return ctrl.Result{RequeueAfter: 5 * time.Second}, nil
	}
	if r.ManagerImage == "" {
		r.setCondition(b, metav1.ConditionFalse, "NoImage", "kok-manager does not know its own image (run it in a pod, or pass --self-image)")
		st.Phase = "Failed"
		return ctrl.Result{}, nil
	}
	name := snapshot.Name(e.Name, now)
	job := fmt.Sprintf("%s-%d", b.Name, now.Unix())
	n := Names{Cluster: e.Name, Namespace: e.Namespace}
	j := BackupJob(n, b, job, name, r.prune(b), r.ManagerImage)
	if err := controllerutil.SetControllerReference(b, j, r.Scheme()); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.Create(ctx, j); err != nil && !apierrors.IsAlreadyExists(err) {
		return ctrl.Result{}, err
	}
	st.Active, st.Phase = job, "Running"
	st.LastScheduleTime = &metav1.Time{Time: now}
	r.Recorder.Eventf(b, corev1.EventTypeNormal, "SnapshotStarted", "Job %s takes snapshot %s of %s", job, name, e.Name)
	return ctrl.Result{RequeueAfter: 5 * time.Second}, nil
}

// prune lists the snapshots the next one pushes out of retention.
func (r *BackupReconciler) prune(b *etcdv1.EtcdBackup) []string {
	keep := int(b.Spec.Keep)
	if keep < 1 {
		keep = 1
	}
	var out []string
	for i := 0; i < len(b.Status.Snapshots)+1-keep; i++ {
		out = append(out, b.Status.Snapshots[i].Name)
	}
	return out
}

// collect records the outcome of the active Job; done is false while it
// runs.
func (r *BackupReconciler) collect(ctx context.Context, b *etcdv1.EtcdBackup) (bool, error) {
	st := &b.Status
	var j batchv1.Job
	err := r.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: st.Active}, &j)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: st.Active}, &j)
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			// Only Jobs whose result was recorded are deleted: this one's
			// is in status already (a stale read of it named it active).
			st.Active = ""
			return true, nil
		}
		return false, err
	}
	if j.Annotations[annRecorded] != "" {
		st.Active = ""
		return true, nil
	}
	finished := ""
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			finished = string(c.Type)
		}
	}
	if finished == "" {
		return false, nil
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(b.Namespace), client.MatchingLabels{"job-name": j.Name}); err != nil {
		return false, err
	}
	var snap *etcdv1.Snapshot
	msg := ""
	for i := range pods.Items {
		s, m := SnapshotResult(&pods.Items[i])
		if s != nil {
			snap = s
		} else if m != "" {
			msg = m
		}
	}
	if finished == string(batchv1.JobComplete) && snap != nil {
		// What retention pruned is gone from storage; the record goes too.
		pruned := map[string]bool{}
		for _, p := range r.prune(b) {
			pruned[p] = true
		}
		kept := st.Snapshots[:0]
		for _, s := range st.Snapshots {
			if !pruned[s.Name] {
				kept = append(kept, s)
			}
		}
		kept = append(kept, *snap)
		st.Snapshots = kept
		st.Phase = "Succeeded"
		if b.Spec.Schedule != "" {
			st.Phase = "Scheduled"
		}
		r.setCondition(b, metav1.ConditionTrue, "SnapshotStored", fmt.Sprintf("%s: %d bytes at revision %d", snap.Location, snap.Size, snap.Revision))
		recordBackupMetrics(b, false)
		r.Recorder.Eventf(b, corev1.EventTypeNormal, "SnapshotStored", "%s (%d bytes, revision %d, sha256 %.12s)", snap.Location, snap.Size, snap.Revision, snap.SHA256)
	} else {
		if msg == "" {
			msg = "the snapshot Job failed; see its pods' logs"
		}
		st.Phase = "Failed"
		r.setCondition(b, metav1.ConditionFalse, "SnapshotFailed", msg)
		recordBackupMetrics(b, true)
		r.Recorder.Eventf(b, corev1.EventTypeWarning, "SnapshotFailed", "Job %s: %s", j.Name, msg)
	}
	st.Active = ""
	// The Job is marked once its result is in status (it is deleted on a
	// later pass): a pass that reads an older status finds the mark and
	// records nothing twice.
	patch := client.MergeFrom(j.DeepCopy())
	if j.Annotations == nil {
		j.Annotations = map[string]string{}
	}
	j.Annotations[annRecorded] = "true"
	if err := r.Patch(ctx, &j, patch); err != nil && !apierrors.IsNotFound(err) {
		return true, err
	}
	return true, nil
}

// annRecorded marks a backup Job whose outcome is in the EtcdBackup's status.
const annRecorded = "etcd.kok.dev/recorded"

func (r *BackupReconciler) setCondition(b *etcdv1.EtcdBackup, s metav1.ConditionStatus, reason, msg string) {
	conditions.SetStatus(&b.Status.Conditions, b.Generation, etcdv1.ConditionSucceeded, s, reason, msg)
}
