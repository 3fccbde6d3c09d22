package etcd

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/etcd/snapshot"
	"github.com/kubeonkube/kok/internal/kube"
)

// Environment variables that carry S3 credentials into kok-manager's
// snapshot and restore commands.
const (
	EnvAccessKeyID     = "KOK_S3_ACCESS_KEY_ID"
	EnvSecretAccessKey = "KOK_S3_SECRET_ACCESS_KEY"
	// LabelBackup marks the Jobs of an EtcdBackup.
	LabelBackup = "etcd.kok.dev/backup"
	// clientTLSMount is where a backup Job finds the root client certificate.
	clientTLSMount = "/etc/etcd/client"
	// SnapshotCommand and RestoreCommand are kok-manager's subcommands.
	SnapshotCommand = "etcd-snapshot"
	RestoreCommand  = "etcd-restore"
)

// storagePod is what a pod needs to reach a backup storage: the flag that
// describes it, credentials and the volume.
type storagePod struct {
	args   []string
	env    []corev1.EnvVar
	vols   []corev1.Volume
	mounts []corev1.VolumeMount
}

func storageFor(st etcdv1.BackupStorage) storagePod {
	spec, _ := json.Marshal(st)
	p := storagePod{args: []string{"--storage=" + string(spec)}}
	if st.S3 != nil {
		ref := func(key string) *corev1.EnvVarSource {
			return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: st.S3.CredentialsSecret}, Key: key}}
		}
		p.env = []corev1.EnvVar{
			{Name: EnvAccessKeyID, ValueFrom: ref(snapshot.AccessKeyID)},
			{Name: EnvSecretAccessKey, ValueFrom: ref(snapshot.SecretAccessKey)},
		}
	}
	if st.Volume != nil {
		p.vols = []corev1.Volume{{Name: "backup", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: st.Volume.ClaimName}}}}
		p.mounts = []corev1.VolumeMount{{Name: "backup", MountPath: snapshot.VolumeMount}}
	}
	return p
}

// BackupJob renders the Job that takes one snapshot named name, then
// deletes the snapshots in prune (retention).
func BackupJob(n Names, b *etcdv1.EtcdBackup, job, name string, prune []string, image string) *batchv1.Job {
	st := storageFor(b.Spec.Storage)
	args := append([]string{SnapshotCommand,
		"--endpoint=" + n.ClientEndpoint(),
		"--tls-dir=" + clientTLSMount,
		"--name=" + name,
		"--tmp-dir=/tmp",
	}, st.args...)
	if len(prune) > 0 {
		args = append(args, "--prune="+strings.Join(prune, ","))
	}
	labels := map[string]string{LabelBackup: b.Name, kube.LabelInstance: n.Cluster}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: job, Namespace: b.Namespace, Labels: labels},
		Spec: batchv1.JobSpec{
			BackoffLimit:          ptr.To[int32](2),
			ActiveDeadlineSeconds: ptr.To[int64](1800),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					AutomountServiceAccountToken: ptr.To(false),
					EnableServiceLinks:           ptr.To(false),
					Containers: []corev1.Container{{
						Name:                     "snapshot",
						Image:                    image,
						ImagePullPolicy:          corev1.PullIfNotPresent,
						Args:                     args,
						Env:                      st.env,
						TerminationMessagePolicy: corev1.TerminationMessageReadFile,
						VolumeMounts: append([]corev1.VolumeMount{
							{Name: "client-tls", MountPath: clientTLSMount, ReadOnly: true},
							{Name: "tmp", MountPath: "/tmp"},
						}, st.mounts...),
					}},
					Volumes: append([]corev1.Volume{
						{Name: "client-tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: n.ClientSecret()}}},
						{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					}, st.vols...),
				},
			},
		},
	}
}

// restoreInit renders the init container that fills the first member's
// empty volume from a snapshot; on a volume that holds data it does
// nothing.
func restoreInit(n Names, e *etcdv1.EtcdCluster, member, token, image string) (corev1.Container, []corev1.Volume) {
	src := e.Spec.Restore
	st := storageFor(src.Storage)
	args := append([]string{RestoreCommand,
		"--name=" + src.Name,
		"--sha256=" + src.SHA256,
		"--bump-revision=" + strconv.FormatInt(src.BumpRevision, 10),
		"--data-dir=" + dataMount + "/data",
		"--member=" + member,
		"--peer-url=" + n.PeerURL(member),
		"--token=" + token,
	}, st.args...)
	return corev1.Container{
		Name:                     "restore",
		Image:                    image,
		ImagePullPolicy:          corev1.PullIfNotPresent,
		Args:                     args,
		Env:                      st.env,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		VolumeMounts:             append([]corev1.VolumeMount{{Name: "data", MountPath: dataMount}}, st.mounts...),
	}, st.vols
}

// SnapshotResult reads the snapshot record a finished backup container
// left as its termination message.
func SnapshotResult(pod *corev1.Pod) (*etcdv1.Snapshot, string) {
	for _, cs := range pod.Status.ContainerStatuses {
		t := cs.State.Terminated
		if t == nil {
			continue
		}
		if t.ExitCode != 0 {
			return nil, strings.TrimSpace(t.Message)
		}
		var s etcdv1.Snapshot
		if err := json.Unmarshal([]byte(t.Message), &s); err != nil {
			return nil, fmt.Sprintf("unreadable snapshot record %q: %v", t.Message, err)
		}
		return &s, ""
	}
	return nil, ""
}
