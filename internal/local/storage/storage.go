// Package storage is the local meta cluster's volume provisioner: claims of
// the "kok-local" StorageClass get a hostPath PersistentVolume in a
// directory under the state directory; released volumes are wiped and
// deleted. It runs on the host as a supervised process, so it creates and
// removes the directories itself. It is level-based: every pass lists
// claims and volumes and makes them right.
package storage

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// ClassName is the default StorageClass of the local meta cluster.
const ClassName = "kok-local"

// ProvisionerName is written on the class and on every volume made here.
const ProvisionerName = "kok.dev/local-storage"

const annProvisionedBy = "pv.kubernetes.io/provisioned-by"

// Provisioner makes hostPath volumes for claims.
type Provisioner struct {
	Client kubernetes.Interface
	// Dir holds one directory per volume.
	Dir string
	// Node is the only node; volumes are pinned to it.
	Node string
	Log  *log.Logger
}

// StorageClass is the default class the provisioner serves.
func StorageClass() *storagev1.StorageClass {
	return &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: ClassName,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
		Provisioner:       ProvisionerName,
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimDelete),
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}
}

// Run reconciles at once when a claim or volume changes, and every interval
// in any case, until ctx ends.
func (p *Provisioner) Run(ctx context.Context, interval time.Duration) error {
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return err
	}
	kick := make(chan struct{}, 1)
	go p.watch(ctx, kick, func(ctx context.Context) (watch.Interface, error) {
		return p.Client.CoreV1().PersistentVolumeClaims("").Watch(ctx, metav1.ListOptions{})
	})
	go p.watch(ctx, kick, func(ctx context.Context) (watch.Interface, error) {
		return p.Client.CoreV1().PersistentVolumes().Watch(ctx, metav1.ListOptions{})
	})
	for {
		if err := p.Sync(ctx); err != nil && ctx.Err() == nil {
			p.Log.Printf("sync: %v", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-time.After(interval):
		}
	}
}

// watch signals kick on every change it sees, reopening the watch when it
// ends; the periodic pass covers whatever a broken watch missed.
func (p *Provisioner) watch(ctx context.Context, kick chan<- struct{}, open func(context.Context) (watch.Interface, error)) {
	for ctx.Err() == nil {
		w, err := open(ctx)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		for range w.ResultChan() {
			select {
			case kick <- struct{}{}:
			default:
			}
		}
		w.Stop()
	}
}

// Sync makes one pass: the class exists, pending claims get volumes,
// released volumes are removed.
func (p *Provisioner) Sync(ctx context.Context) error {
	if _, err := p.Client.StorageV1().StorageClasses().Create(ctx, StorageClass(), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	classes, err := p.Client.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	ours := map[string]bool{}
	defaultClass := ""
	for _, c := range classes.Items {
		if c.Provisioner == ProvisionerName {
			ours[c.Name] = true
		}
		if c.Annotations["storageclass.kubernetes.io/is-default-class"] == "true" {
			defaultClass = c.Name
		}
	}
	claims, err := p.Client.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range claims.Items {
		c := &claims.Items[i]
		class := defaultClass
		if c.Spec.StorageClassName != nil {
			class = *c.Spec.StorageClassName
		}
		if !ours[class] || c.Spec.VolumeName != "" || c.Status.Phase != corev1.ClaimPending || c.DeletionTimestamp != nil {
			continue
		}
		if err := p.provision(ctx, c, class); err != nil {
			p.Log.Printf("provisioning %s/%s: %v", c.Namespace, c.Name, err)
		}
	}
	pvs, err := p.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range pvs.Items {
		pv := &pvs.Items[i]
		if pv.Annotations[annProvisionedBy] != ProvisionerName || pv.Status.Phase != corev1.VolumeReleased ||
			pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			continue
		}
		if err := p.remove(ctx, pv); err != nil {
			p.Log.Printf("removing %s: %v", pv.Name, err)
		}
	}
	return nil
}

func (p *Provisioner) provision(ctx context.Context, c *corev1.PersistentVolumeClaim, class string) error {
	name := "pvc-" + string(c.UID)
	dir := filepath.Join(p.Dir, name)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	// Any user in a pod may write its volume, as with an emptyDir.
	if err := os.Chmod(dir, 0o777); err != nil {
		return err
	}
	size := c.Spec.Resources.Requests[corev1.ResourceStorage]
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{annProvisionedBy: ProvisionerName}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   c.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              class,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: c.Namespace, Name: c.Name, UID: c.UID},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: dir, Type: ptr.To(corev1.HostPathDirectory)}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{p.Node}}},
			}}}},
		},
	}
	_, err := p.Client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err == nil {
		p.Log.Printf("provisioned %s for %s/%s", name, c.Namespace, c.Name)
	}
	return err
}

func (p *Provisioner) remove(ctx context.Context, pv *corev1.PersistentVolume) error {
	if pv.Spec.HostPath == nil {
		return nil
	}
	dir := pv.Spec.HostPath.Path
	// Only directories this provisioner made are ever deleted.
	if filepath.Dir(dir) != filepath.Clean(p.Dir) {
		return fmt.Errorf("volume path %s is outside %s; leaving it", dir, p.Dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	err := p.Client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
	if err == nil {
		p.Log.Printf("removed %s", pv.Name)
	}
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
