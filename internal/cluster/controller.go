package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/etcd"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/pki"
)

// Reconciler runs KubeClusters.
type Reconciler struct {
	client.Client
	Recorder record.EventRecorder
	// APIReader reads certificate Secrets past the cache: a cache that has
	// not seen a Secret this operator just wrote would have it issue the
	// material again (a new CA, every pod rolled twice).
	APIReader client.Reader
	// ImageRegistry prefixes catalog images (one override for air-gapped
	// sites).
	ImageRegistry string
	// MetaDomain is the meta cluster's DNS domain.
	MetaDomain string
	// Bootstrap keeps the business cluster's bootstrap objects; nil uses
	// EnsureBootstrapObjects through the admin kubeconfig.
	Bootstrap func(ctx context.Context, kubeconfig []byte, server string, caPEM []byte) error
	// bootstrapped remembers, per cluster, when and from what the
	// bootstrap objects were last applied.
	bootstrapped sync.Map
	// tenants remembers the etcd users already ensured (cluster UID,
	// EtcdCluster UID), so a shared etcd is not asked again each pass.
	tenants sync.Map
}

// +kubebuilder:rbac:groups=cluster.kok.dev,resources=kubeclusters,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=cluster.kok.dev,resources=kubeclusters/status;kubeclusters/finalizers,verbs=get;update;patch
// +kubebuilder:rbac:groups=cluster.kok.dev,resources=kubernetesversions,verbs=get;list;watch
// +kubebuilder:rbac:groups=etcd.kok.dev,resources=etcdclusters,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorderFor("cluster-operator")
	}
	if r.MetaDomain == "" {
		r.MetaDomain = "cluster.local"
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&clusterv1.KubeCluster{}).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.Secret{}).
		Owns(&etcdv1.EtcdCluster{}, builder.WithPredicates(etcdSummaryChanged)).
		Watches(&clusterv1.KubernetesVersion{}, handler.EnqueueRequestsFromMapFunc(r.clustersOfVersion)).
		Watches(&etcdv1.EtcdCluster{}, handler.EnqueueRequestsFromMapFunc(r.clustersOfSharedEtcd), builder.WithPredicates(etcdSummaryChanged)).
		Complete(r)
}

// etcdSummaryChanged passes the EtcdCluster updates a KubeCluster acts on.
// Raft indexes and database sizes change with every write; reacting to
// them would reconcile every business cluster after each of its own writes.
var etcdSummaryChanged = predicate.Funcs{UpdateFunc: func(ev event.UpdateEvent) bool {
	o, ok1 := ev.ObjectOld.(*etcdv1.EtcdCluster)
	n, ok2 := ev.ObjectNew.(*etcdv1.EtcdCluster)
	if !ok1 || !ok2 {
		return true
	}
	available := func(e *etcdv1.EtcdCluster) bool {
		return meta.IsStatusConditionTrue(e.Status.Conditions, etcdv1.ConditionAvailable)
	}
	return o.Generation != n.Generation || !o.DeletionTimestamp.Equal(n.DeletionTimestamp) ||
		o.Status.Phase != n.Status.Phase || o.Status.ReadyMembers != n.Status.ReadyMembers ||
		o.Status.Version != n.Status.Version || o.Status.ClientEndpoint != n.Status.ClientEndpoint ||
		o.Status.AuthEnabled != n.Status.AuthEnabled || available(o) != available(n)
}}

const (
	requeueBusy   = 2 * time.Second
	requeueSteady = time.Minute
)

// Reconcile drives one KubeCluster towards its spec and records status.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	kc := &clusterv1.KubeCluster{}
	if err := r.Get(ctx, req.NamespacedName, kc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	n := Names{Cluster: kc.Name, Namespace: kc.Namespace}
	if kc.DeletionTimestamp != nil {
		return r.teardown(ctx, kc, n)
	}
	if !kc.Spec.Paused && controllerutil.AddFinalizer(kc, Finalizer) {
		if err := r.Update(ctx, kc); err != nil {
			return ctrl.Result{}, err
		}
	}
	orig := kc.DeepCopy()
	res, err := r.reconcile(ctx, kc, n)
	if err != nil {
		r.Recorder.Event(kc, corev1.EventTypeWarning, "ReconcileFailed", err.Error())
		setCondition(kc, clusterv1.ConditionReady, false, "ReconcileFailed", err.Error())
	}
	kc.Status.ObservedGeneration = kc.Generation
	kc.Status.Phase = phase(kc)
	if serr := r.Status().Patch(ctx, kc, client.MergeFrom(orig)); serr != nil {
		return ctrl.Result{}, errors.Join(err, serr)
	}
	return res, err
}

// state is what one pass learned.
type state struct {
	desired     *clusterv1.KubernetesVersion
	etcdReady   bool
	etcdCompat  bool
	etcdServers string
	etcdPrefix  string
	etcdCA      *pki.KeyPair
	serviceIP   string
	service     *corev1.Service
	secrets     map[string]Secret
	deployments map[string]*appsv1.Deployment
}

func (r *Reconciler) reconcile(ctx context.Context, kc *clusterv1.KubeCluster, n Names) (ctrl.Result, error) {
	apply := !kc.Spec.Paused
	st := &state{deployments: map[string]*appsv1.Deployment{}}

	st.desired = &clusterv1.KubernetesVersion{}
	if err := r.Get(ctx, client.ObjectKey{Name: kc.Spec.Version}, st.desired); apierrors.IsNotFound(err) {
		msg := fmt.Sprintf("KubernetesVersion %q is not in the catalog: pick one of %s, or apply a KubernetesVersion for it",
			kc.Spec.Version, r.catalogList(ctx))
		setCondition(kc, clusterv1.ConditionReady, false, "UnknownVersion", msg)
		setCondition(kc, clusterv1.ConditionProgressing, false, "UnknownVersion", msg)
		return ctrl.Result{RequeueAfter: requeueSteady}, nil
	} else if err != nil {
		return ctrl.Result{}, err
	}

	if err := r.ensureEtcd(ctx, kc, n, st, apply); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.ensureService(ctx, kc, n, st, apply); err != nil {
		return ctrl.Result{}, err
	}
	if st.etcdCA == nil {
		setCondition(kc, clusterv1.ConditionCertificatesReady, false, "WaitingForEtcd", "the etcd CA is not there yet")
		setCondition(kc, clusterv1.ConditionReady, false, "WaitingForEtcd", "etcd is being created")
		setCondition(kc, clusterv1.ConditionProgressing, true, "WaitingForEtcd", "etcd is being created")
		return ctrl.Result{RequeueAfter: requeueBusy}, nil
	}
	if err := r.ensurePKI(ctx, kc, n, st, apply); err != nil {
		setCondition(kc, clusterv1.ConditionCertificatesReady, false, "IssueFailed", err.Error())
		return ctrl.Result{}, err
	}
	setCondition(kc, clusterv1.ConditionCertificatesReady, true, "Issued", "certificates and kubeconfigs are valid")

	busy, err := r.ensureControlPlane(ctx, kc, n, st, apply)
	if err != nil {
		return ctrl.Result{}, err
	}
	r.observe(kc, n, st)
	if meta.IsStatusConditionTrue(kc.Status.Conditions, clusterv1.ConditionControlPlaneAvailable) && st.etcdReady {
		if err := r.ensureBootstrap(ctx, kc, n, st); err != nil {
			setCondition(kc, clusterv1.ConditionReady, false, "BootstrapObjectsFailed", err.Error())
			return ctrl.Result{RequeueAfter: requeueBusy}, nil
		}
		setCondition(kc, clusterv1.ConditionReady, true, "Ready", "the control plane serves at "+kc.Status.Endpoint)
	} else {
		reason, msg := "ControlPlaneUnavailable", "the control plane is not available yet"
		if !st.etcdReady {
			reason, msg = "EtcdNotReady", "etcd is not available"
		}
		setCondition(kc, clusterv1.ConditionReady, false, reason, msg)
	}
	if busy || !meta.IsStatusConditionTrue(kc.Status.Conditions, clusterv1.ConditionReady) {
		return ctrl.Result{RequeueAfter: requeueBusy}, nil
	}
	return ctrl.Result{RequeueAfter: requeueSteady}, nil
}

// ensureEtcd creates (or finds) the cluster's etcd and learns how to reach it.
func (r *Reconciler) ensureEtcd(ctx context.Context, kc *clusterv1.KubeCluster, n Names, st *state, apply bool) error {
	var key client.ObjectKey
	if ref := kc.Spec.Etcd.Ref; ref != nil {
		key = client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}
		if key.Namespace == "" {
			key.Namespace = kc.Namespace
		}
		// A shared etcd keeps each cluster under its own prefix.
		st.etcdPrefix = SharedEtcdPrefix(kc) + "/registry"
	} else {
		key = client.ObjectKey{Namespace: kc.Namespace, Name: n.ManagedEtcd()}
		st.etcdPrefix = "/registry"
	}
	kc.Status.EtcdCluster = key.String()
	ec := &etcdv1.EtcdCluster{}
	err := r.Get(ctx, key, ec)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	exists := err == nil
	if kc.Spec.Etcd.Ref != nil && !exists {
		setCondition(kc, clusterv1.ConditionEtcdReady, false, "NotFound", fmt.Sprintf("EtcdCluster %s does not exist", key))
		return nil
	}
	if kc.Spec.Etcd.Ref == nil && apply {
		m := kc.Spec.Etcd.Managed
		if m == nil {
			m = &clusterv1.ManagedEtcd{}
		}
		version := managedEtcdVersion(m, ec, exists, st.desired.Spec.EtcdVersions)
		applied, err := r.applyManagedEtcd(ctx, kc, key, m, version)
		if err != nil {
			return err
		}
		// The cache may not hold a just-created object yet: use what the
		// apply returned.
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(applied.Object, ec); err != nil {
			return err
		}
		exists = true
	}
	if !exists {
		setCondition(kc, clusterv1.ConditionEtcdReady, false, "NotFound", fmt.Sprintf("EtcdCluster %s does not exist", key))
		return nil
	}
	en := etcd.Names{Cluster: ec.Name, Namespace: ec.Namespace}
	st.etcdServers = ec.Status.ClientEndpoint
	if st.etcdServers == "" {
		st.etcdServers = en.ClientEndpoint()
	}
	var caSecret corev1.Secret
	if err := r.Get(ctx, client.ObjectKey{Namespace: ec.Namespace, Name: en.CASecret()}, &caSecret); err == nil {
		if kp, err := pki.ParseKeyPair(caSecret.Data["ca.crt"], caSecret.Data["ca.key"]); err == nil {
			st.etcdCA = kp
		}
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	st.etcdReady = meta.IsStatusConditionTrue(ec.Status.Conditions, etcdv1.ConditionAvailable)
	st.etcdCompat = slices.Contains(st.desired.Spec.EtcdVersions, ec.Status.Version)
	switch {
	case !st.etcdReady:
		setCondition(kc, clusterv1.ConditionEtcdReady, false, "NotAvailable", fmt.Sprintf("EtcdCluster %s is not available (%s)", key, ec.Status.Phase))
	case !st.etcdCompat:
		setCondition(kc, clusterv1.ConditionEtcdReady, true, "Incompatible", fmt.Sprintf("EtcdCluster %s runs %s; %s supports %s",
			key, ec.Status.Version, kc.Spec.Version, strings.Join(st.desired.Spec.EtcdVersions, ", ")))
	default:
		setCondition(kc, clusterv1.ConditionEtcdReady, true, "Available", fmt.Sprintf("EtcdCluster %s %s serves %d members", key, ec.Status.Version, ec.Status.ReadyMembers))
	}
	if kc.Spec.Etcd.Ref != nil && ec.Spec.EnableAuth && st.etcdReady && apply {
		if err := r.ensureTenant(ctx, kc, n, ec); err != nil {
			st.etcdReady = false
			setCondition(kc, clusterv1.ConditionEtcdReady, false, "TenantUser", fmt.Sprintf("etcd user of this cluster in %s: %v", key, err))
			return err
		}
	}
	return nil
}

// ensureTenant gives the cluster's apiserver an etcd user (its client
// certificate's CN) confined to the cluster's prefix in a shared etcd.
func (r *Reconciler) ensureTenant(ctx context.Context, kc *clusterv1.KubeCluster, n Names, ec *etcdv1.EtcdCluster) error {
	key := string(kc.UID) + "/" + string(ec.UID)
	if _, done := r.tenants.Load(key); done {
		return nil
	}
	cli, err := etcd.RootClient(ctx, r, ec)
	if err != nil {
		return err
	}
	defer cli.Close()
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := etcd.EnsureTenant(tctx, cli, EtcdUser(n), SharedEtcdPrefix(kc)+"/"); err != nil {
		return err
	}
	r.tenants.Store(key, true)
	return nil
}

// SharedEtcdPrefix is where a cluster on a shared etcd keeps its keys.
func SharedEtcdPrefix(kc *clusterv1.KubeCluster) string {
	return fmt.Sprintf("/kok/%s/%s", kc.Namespace, kc.Name)
}

// managedEtcdVersion picks the version of a managed EtcdCluster: the
// template's, else the current one while the release supports it, else the
// newest the release supports. It never goes back.
func managedEtcdVersion(m *clusterv1.ManagedEtcd, ec *etcdv1.EtcdCluster, exists bool, supported []string) string {
	if m.Version != "" {
		return m.Version
	}
	if exists && (slices.Contains(supported, ec.Spec.Version) || len(supported) == 0 ||
		CompareVersions(ec.Spec.Version, supported[len(supported)-1]) > 0) {
		return ec.Spec.Version
	}
	if len(supported) == 0 {
		return ""
	}
	return supported[len(supported)-1]
}

func (r *Reconciler) applyManagedEtcd(ctx context.Context, kc *clusterv1.KubeCluster, key client.ObjectKey, m *clusterv1.ManagedEtcd, version string) (*unstructured.Unstructured, error) {
	spec := map[string]any{"replicas": int64(max(m.Replicas, 1))}
	if version != "" {
		spec["version"] = version
	}
	if m.Storage != nil {
		s := map[string]any{"size": m.Storage.Size.String()}
		if m.Storage.StorageClassName != nil {
			s["storageClassName"] = *m.Storage.StorageClassName
		}
		if m.Storage.EmptyDir {
			s["emptyDir"] = true
		}
		spec["storage"] = s
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": etcdv1.GroupVersion.String(), "kind": "EtcdCluster",
		"metadata": map[string]any{"name": key.Name, "namespace": key.Namespace,
			"labels": map[string]any{LabelInstance: kc.Name, LabelManagedBy: "kok"}},
		"spec": spec,
	}}
	if err := controllerutil.SetControllerReference(kc, u, r.Scheme()); err != nil {
		return nil, err
	}
	return u, r.Patch(ctx, u, client.Apply, client.FieldOwner(kube.FieldOwner), client.ForceOwnership) //nolint:staticcheck
}

func (r *Reconciler) ensureService(ctx context.Context, kc *clusterv1.KubeCluster, n Names, st *state, apply bool) error {
	var cur corev1.Service
	err := r.Get(ctx, client.ObjectKey{Namespace: n.Namespace, Name: n.Service()}, &cur)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if apply {
		// The address is always stated: the Service read from the cache may
		// already be gone in the API (a deletion racing this pass), and a
		// re-created Service keeps the address clients and certificates know.
		found := err == nil
		ip := kc.Status.ServiceIP
		if found && cur.Spec.ClusterIP != "" && cur.Spec.ClusterIP != corev1.ClusterIPNone {
			ip = cur.Spec.ClusterIP
		}
		if !found {
			r.Recorder.Eventf(kc, corev1.EventTypeNormal, "ServiceCreated", "apiserver Service %s created", n.Service())
		}
		svc := APIServerService(n, &kc.Spec, ip)
		if err := r.applyOwned(ctx, kc, svc); err != nil && ip != "" && apierrors.IsInvalid(err) {
			if found {
				return fmt.Errorf("applying the apiserver Service at %s: %w", ip, err)
			}
			taken, lerr := r.addressTaken(ctx, ip, client.ObjectKeyFromObject(svc))
			if lerr != nil {
				return lerr
			}
			if !taken {
				// The deleted Service's address is not released yet.
				return fmt.Errorf("waiting for address %s of the deleted Service to be released: %w", ip, err)
			}
			// Another Service took the old address: take a new one (the
			// serving certificate and kubeconfigs follow).
			r.Recorder.Eventf(kc, corev1.EventTypeWarning, "AddressChanged", "address %s is taken by another Service; the apiserver gets a new one", ip)
			svc = APIServerService(n, &kc.Spec, "")
			if err := r.applyOwned(ctx, kc, svc); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		cur = *svc
	} else if err != nil {
		return nil
	}
	st.service = &cur
	st.serviceIP = cur.Spec.ClusterIP
	if st.serviceIP == corev1.ClusterIPNone {
		st.serviceIP = ""
	}
	kc.Status.ServiceIP = st.serviceIP
	if st.serviceIP != "" {
		kc.Status.Endpoint = fmt.Sprintf("https://%s:%d", st.serviceIP, kc.Spec.Network.APIServer.Port)
	}
	return nil
}

// addressTaken reports whether a Service other than self holds ip.
func (r *Reconciler) addressTaken(ctx context.Context, ip string, self client.ObjectKey) (bool, error) {
	var list corev1.ServiceList
	if err := r.List(ctx, &list); err != nil {
		return false, err
	}
	for _, s := range list.Items {
		if client.ObjectKeyFromObject(&s) == self {
			continue // a stale copy of the deleted Service
		}
		if slices.Contains(s.Spec.ClusterIPs, ip) || s.Spec.ClusterIP == ip {
			return true, nil
		}
	}
	return false, nil
}

// pkiInput gathers what the certificates must say.
func (r *Reconciler) pkiInput(kc *clusterv1.KubeCluster, n Names, st *state) PKIInput {
	sans := slices.Clone(kc.Spec.Network.APIServer.CertSANs)
	if st.service != nil {
		for _, in := range st.service.Status.LoadBalancer.Ingress {
			sans = append(sans, in.IP, in.Hostname)
		}
	}
	return PKIInput{Names: n, MetaDomain: r.MetaDomain, DNSDomain: kc.Spec.Network.DNSDomain, ServiceCIDR: kc.Spec.Network.ServiceCIDR,
		ServiceIP: st.serviceIP, Port: kc.Spec.Network.APIServer.Port, ExtraSANs: sans, EtcdCA: st.etcdCA, Rotation: kc.Annotations[AnnRotate]}
}

func (n Names) secretNames() []string {
	return []string{n.CASecret(), n.FrontProxyCASecret(), n.ServiceAccountSecret(), n.APIServerSecret(), n.KubeletClientSecret(),
		n.EtcdClientSecret(), n.FrontProxyClientSecret(), n.ControllerManagerKubeconfig(), n.SchedulerKubeconfig(), n.AdminKubeconfig()}
}

func (r *Reconciler) ensurePKI(ctx context.Context, kc *clusterv1.KubeCluster, n Names, st *state, apply bool) error {
	have := map[string]Secret{}
	owned := map[string]bool{}
	for _, name := range n.secretNames() {
		var s corev1.Secret
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: n.Namespace, Name: name}, &s); apierrors.IsNotFound(err) {
			continue
		} else if err != nil {
			return err
		}
		have[name] = Secret{Data: s.Data, Rotation: s.Annotations[AnnIssuedFor]}
		owned[name] = metav1.IsControlledBy(&s, kc)
	}
	want, changed, err := PlanPKI(r.pkiInput(kc, n, st), have, time.Now())
	if err != nil {
		return err
	}
	if !apply {
		st.secrets = have
		return nil
	}
	if _, ok := have[n.CASecret()]; !ok && len(have) > 0 {
		r.Recorder.Event(kc, corev1.EventTypeWarning, "CAReplaced", "the cluster CA Secret was missing: a new CA was made and every certificate reissued; kubeconfigs issued before no longer work")
	}
	for _, name := range n.secretNames() {
		s := want[name]
		if !slices.Contains(changed, name) && owned[name] {
			continue
		}
		sec := &corev1.Secret{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: n.Namespace,
				Labels:      map[string]string{LabelInstance: n.Cluster, LabelManagedBy: "kok"},
				Annotations: map[string]string{AnnIssuedFor: s.Rotation}},
			Type: corev1.SecretTypeOpaque,
			Data: s.Data,
		}
		if err := r.applyOwned(ctx, kc, sec); err != nil {
			return err
		}
	}
	if len(changed) > 0 {
		r.Recorder.Eventf(kc, corev1.EventTypeNormal, "CertificatesIssued", "issued %s", strings.Join(changed, ", "))
	}
	st.secrets = want
	kc.Status.AdminKubeconfigSecret = n.AdminKubeconfig()
	return nil
}

// ensureControlPlane applies the three Deployments in upgrade order. busy
// reports that something is still rolling.
func (r *Reconciler) ensureControlPlane(ctx context.Context, kc *clusterv1.KubeCluster, n Names, st *state, apply bool) (bool, error) {
	current := map[string]string{}
	for _, c := range []string{APIServer, ControllerManager, Scheduler} {
		d := &appsv1.Deployment{}
		if err := r.Get(ctx, client.ObjectKey{Namespace: n.Namespace, Name: n.Deployment(c)}, d); apierrors.IsNotFound(err) {
			continue
		} else if err != nil {
			return false, err
		}
		st.deployments[c] = d
		current[c] = d.Annotations[AnnVersion]
	}
	plan := PlanRollout(RolloutInput{Desired: kc.Spec.Version, Current: current,
		APIServerRolledOut: rolledOut(st.deployments[APIServer]), EtcdCompatible: st.etcdCompat})
	if kc.Spec.Paused {
		plan.Waiting = "paused"
	}
	// Every component starts at once, with etcd: the apiservers wait for
	// etcd, controller-manager and scheduler retry their leader election
	// until an apiserver answers, and each pod's start (sandbox, volumes,
	// process) overlaps the others'.
	if apply {
		for _, c := range []string{APIServer, ControllerManager, Scheduler} {
			catalog := st.desired
			if v := plan.Targets[c]; v != st.desired.Spec.Version {
				catalog = &clusterv1.KubernetesVersion{}
				if err := r.Get(ctx, client.ObjectKey{Name: v}, catalog); err != nil {
					plan.Waiting = fmt.Sprintf("%s stays as it is: KubernetesVersion %s: %v", c, v, err)
					continue
				}
			}
			d := r.render(c, kc, n, st, &catalog.Spec)
			// Same inputs, same template: a kok-manager that renders
			// differently does not roll a running control plane.
			KeepTemplate(st.deployments[c], d)
			if err := r.applyOwned(ctx, kc, d); err != nil {
				return false, err
			}
			if prev := st.deployments[c]; prev == nil {
				r.Recorder.Eventf(kc, corev1.EventTypeNormal, "Created", "%s %s created", c, catalog.Spec.Version)
			} else if prev.Annotations[AnnVersion] != catalog.Spec.Version {
				r.Recorder.Eventf(kc, corev1.EventTypeNormal, "Upgrading", "%s %s → %s", c, prev.Annotations[AnnVersion], catalog.Spec.Version)
			}
			st.deployments[c] = d
		}
	}
	busy := false
	var progress []string
	for _, c := range []string{APIServer, ControllerManager, Scheduler} {
		d := st.deployments[c]
		if d == nil {
			busy = true
			progress = append(progress, c+" not created yet")
			continue
		}
		switch {
		case d.Status.ObservedGeneration < d.Generation:
			busy = true
			progress = append(progress, fmt.Sprintf("%s %s: rollout starting", c, d.Annotations[AnnVersion]))
		case !rolledOut(d) || d.Annotations[AnnVersion] != kc.Spec.Version:
			busy = true
			progress = append(progress, fmt.Sprintf("%s %s: %d/%d updated, %d ready", c, d.Annotations[AnnVersion],
				d.Status.UpdatedReplicas, ptrValue(d.Spec.Replicas), d.Status.ReadyReplicas))
		}
	}
	switch {
	case !busy:
		setCondition(kc, clusterv1.ConditionProgressing, false, "Complete", "every component runs "+kc.Spec.Version)
	case plan.Waiting != "":
		setCondition(kc, clusterv1.ConditionProgressing, true, "RollingOut", plan.Waiting+"; "+strings.Join(progress, "; "))
	default:
		setCondition(kc, clusterv1.ConditionProgressing, true, "RollingOut", strings.Join(progress, "; "))
	}
	return busy, nil
}

func (r *Reconciler) render(component string, kc *clusterv1.KubeCluster, n Names, st *state, catalog *clusterv1.KubernetesVersionSpec) *appsv1.Deployment {
	in := RenderInput{Names: n, Spec: &kc.Spec, Catalog: catalog, Registry: r.ImageRegistry,
		EtcdServers: st.etcdServers, EtcdPrefix: st.etcdPrefix, ServiceIP: st.serviceIP, SharedEtcd: kc.Spec.Etcd.Ref != nil}
	hash := func(names ...string) string {
		var data []SecretData
		for _, s := range names {
			data = append(data, st.secrets[s].Data)
		}
		return HashSecrets(data...)
	}
	switch component {
	case APIServer:
		in.ConfigHash = hash(n.CASecret(), n.FrontProxyCASecret(), n.ServiceAccountSecret(), n.APIServerSecret(),
			n.KubeletClientSecret(), n.FrontProxyClientSecret(), n.EtcdClientSecret())
		return APIServerDeployment(in)
	case ControllerManager:
		in.ConfigHash = hash(n.CASecret(), n.FrontProxyCASecret(), n.ServiceAccountSecret(), n.ControllerManagerKubeconfig())
		return ControllerManagerDeployment(in)
	default:
		in.ConfigHash = hash(n.CASecret(), n.FrontProxyCASecret(), n.SchedulerKubeconfig())
		return SchedulerDeployment(in)
	}
}

// observe records the components and the installed version.
func (r *Reconciler) observe(kc *clusterv1.KubeCluster, n Names, st *state) {
	kc.Status.Components = nil
	versions := map[string]string{}
	allDone := true
	available := true
	for _, c := range []string{APIServer, ControllerManager, Scheduler} {
		d := st.deployments[c]
		if d == nil {
			allDone, available = false, false
			continue
		}
		kc.Status.Components = append(kc.Status.Components, clusterv1.ComponentStatus{Name: c, Version: d.Annotations[AnnVersion],
			Replicas: d.Status.Replicas, UpdatedReplicas: d.Status.UpdatedReplicas, ReadyReplicas: d.Status.ReadyReplicas})
		versions[c] = d.Annotations[AnnVersion]
		if !rolledOut(d) {
			allDone = false
		}
		if d.Status.AvailableReplicas == 0 {
			available = false
		}
	}
	if allDone {
		kc.Status.Version = OldestVersion(versions)
	}
	if available {
		setCondition(kc, clusterv1.ConditionControlPlaneAvailable, true, "Available", "apiserver, controller-manager and scheduler are available")
	} else {
		setCondition(kc, clusterv1.ConditionControlPlaneAvailable, false, "Unavailable", "a component has no available replica")
	}
}

// ensureBootstrap keeps the objects joining nodes need in the business
// cluster.
func (r *Reconciler) ensureBootstrap(ctx context.Context, kc *clusterv1.KubeCluster, n Names, st *state) error {
	if kc.Spec.Paused {
		return nil
	}
	bootstrap := r.Bootstrap
	if bootstrap == nil {
		bootstrap = bootstrapThroughKubeconfig
	}
	kubeconfig, caPEM := st.secrets[n.AdminKubeconfig()].Data[KeyKubeconfig], st.secrets[n.CASecret()].Data[KeyCA]
	// Applied again only when what they say changes, or every
	// bootstrapRefresh (objects deleted inside the business cluster come
	// back then): not a connection to every business cluster each pass.
	inputs := HashSecrets(SecretData{"kubeconfig": kubeconfig, "server": []byte(kc.Status.Endpoint), "ca": caPEM})
	if v, ok := r.bootstrapped.Load(kc.UID); ok {
		if b := v.(bootstrapRecord); b.inputs == inputs && time.Since(b.at) < bootstrapRefresh {
			return nil
		}
	}
	if err := bootstrap(ctx, kubeconfig, kc.Status.Endpoint, caPEM); err != nil {
		return err
	}
	r.bootstrapped.Store(kc.UID, bootstrapRecord{inputs: inputs, at: time.Now()})
	return nil
}

// bootstrapRefresh is how often the bootstrap objects of an unchanged
// cluster are applied again.
const bootstrapRefresh = 10 * time.Minute

type bootstrapRecord struct {
	inputs string
	at     time.Time
}

func bootstrapThroughKubeconfig(ctx context.Context, kubeconfig []byte, server string, caPEM []byte) error {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return err
	}
	cfg.Timeout = 10 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return EnsureBootstrapObjects(ctx, cs, server, caPEM)
}

// teardown removes the control plane in order: controller-manager and
// scheduler, then the apiservers, then the Service and etcd (kept with
// deletionPolicy Retain). Secrets go with the KubeCluster.
func (r *Reconciler) teardown(ctx context.Context, kc *clusterv1.KubeCluster, n Names) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(kc, Finalizer) {
		return ctrl.Result{}, nil
	}
	if kc.Status.Phase != clusterv1.PhaseDeleting {
		orig := kc.DeepCopy()
		kc.Status.Phase = clusterv1.PhaseDeleting
		if err := r.Status().Patch(ctx, kc, client.MergeFrom(orig)); err != nil {
			return ctrl.Result{}, err
		}
	}
	for _, stage := range [][]string{{ControllerManager, Scheduler}, {APIServer}} {
		gone := true
		for _, c := range stage {
			d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: n.Namespace, Name: n.Deployment(c)}}
			if err := r.Delete(ctx, d, client.PropagationPolicy(metav1.DeletePropagationBackground)); err == nil {
				gone = false
			} else if !apierrors.IsNotFound(err) {
				return ctrl.Result{}, err
			}
			var pods corev1.PodList
			if err := r.List(ctx, &pods, client.InNamespace(n.Namespace), client.MatchingLabels(n.Selector(c))); err != nil {
				return ctrl.Result{}, err
			}
			if len(pods.Items) > 0 {
				gone = false
			}
		}
		if !gone {
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: n.Namespace, Name: n.Service()}}
	if err := r.Delete(ctx, svc); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	if kc.Spec.Etcd.Ref == nil {
		ec := &etcdv1.EtcdCluster{}
		err := r.Get(ctx, client.ObjectKey{Namespace: n.Namespace, Name: n.ManagedEtcd()}, ec)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return ctrl.Result{}, err
		case kc.Spec.DeletionPolicy == "Retain":
			if metav1.IsControlledBy(ec, kc) {
				orig := ec.DeepCopy()
				ec.OwnerReferences = slices.DeleteFunc(ec.OwnerReferences, func(o metav1.OwnerReference) bool { return o.UID == kc.UID })
				if err := r.Patch(ctx, ec, client.MergeFrom(orig)); err != nil {
					return ctrl.Result{}, err
				}
				r.Recorder.Eventf(kc, corev1.EventTypeNormal, "EtcdRetained", "EtcdCluster %s and its volumes are kept (deletionPolicy Retain)", ec.Name)
			}
		default:
			if err := r.Delete(ctx, ec); err != nil && !apierrors.IsNotFound(err) {
				return ctrl.Result{}, err
			}
		}
	}
	controllerutil.RemoveFinalizer(kc, Finalizer)
	return ctrl.Result{}, r.Update(ctx, kc)
}

// applyOwned server-side applies obj with kc as its controller.
func (r *Reconciler) applyOwned(ctx context.Context, kc *clusterv1.KubeCluster, obj client.Object) error {
	if err := controllerutil.SetControllerReference(kc, obj, r.Scheme()); err != nil {
		return err
	}
	if err := r.Patch(ctx, obj, client.Apply, client.FieldOwner(kube.FieldOwner), client.ForceOwnership); err != nil { //nolint:staticcheck
		return fmt.Errorf("applying %T %s: %w", obj, obj.GetName(), err)
	}
	return nil
}

func (r *Reconciler) catalogList(ctx context.Context) string {
	var list clusterv1.KubernetesVersionList
	if err := r.List(ctx, &list); err != nil || len(list.Items) == 0 {
		return "(the catalog is empty)"
	}
	var names []string
	for _, v := range list.Items {
		names = append(names, v.Name)
	}
	slices.SortFunc(names, CompareVersions)
	return strings.Join(names, ", ")
}

func (r *Reconciler) clustersOfVersion(ctx context.Context, obj client.Object) []reconcile.Request {
	return r.clustersWhere(ctx, func(kc *clusterv1.KubeCluster) bool { return kc.Spec.Version == obj.GetName() })
}

func (r *Reconciler) clustersOfSharedEtcd(ctx context.Context, obj client.Object) []reconcile.Request {
	return r.clustersWhere(ctx, func(kc *clusterv1.KubeCluster) bool {
		ref := kc.Spec.Etcd.Ref
		if ref == nil || ref.Name != obj.GetName() {
			return false
		}
		ns := ref.Namespace
		if ns == "" {
			ns = kc.Namespace
		}
		return ns == obj.GetNamespace()
	})
}

func (r *Reconciler) clustersWhere(ctx context.Context, match func(*clusterv1.KubeCluster) bool) []reconcile.Request {
	var list clusterv1.KubeClusterList
	if err := r.List(ctx, &list); err != nil {
		log.FromContext(ctx).Error(err, "listing KubeClusters")
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		if match(&list.Items[i]) {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name}})
		}
	}
	return out
}

// rolledOut: every replica runs the Deployment's current template and is
// available.
func rolledOut(d *appsv1.Deployment) bool {
	if d == nil {
		return false
	}
	want := ptrValue(d.Spec.Replicas)
	return d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == want &&
		d.Status.Replicas == want && d.Status.AvailableReplicas == want
}

func ptrValue(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

func setCondition(kc *clusterv1.KubeCluster, t string, ok bool, reason, msg string) {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&kc.Status.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg,
		ObservedGeneration: kc.Generation})
}

// phase summarizes the conditions.
func phase(kc *clusterv1.KubeCluster) string {
	ready := meta.IsStatusConditionTrue(kc.Status.Conditions, clusterv1.ConditionReady)
	switch {
	case kc.DeletionTimestamp != nil:
		return clusterv1.PhaseDeleting
	case kc.Spec.Paused:
		return clusterv1.PhasePaused
	case kc.Status.Version != "" && kc.Status.Version != kc.Spec.Version:
		return clusterv1.PhaseUpgrading
	case ready:
		return clusterv1.PhaseReady
	case kc.Status.Version == "":
		return clusterv1.PhaseProvisioning
	default:
		return clusterv1.PhaseDegraded
	}
}
