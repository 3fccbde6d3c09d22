package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	etcdac "github.com/kubeonkube/kok/api/etcd/v1alpha1/applyconfiguration/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/conditions"
	"github.com/kubeonkube/kok/internal/etcd"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/pki"
)

// applyPhase is one step of a pass. It writes through kube.Apply and
// records what it wrote and learned in the state; it returns an error only
// when the pass cannot go on. A phase whose inputs are not there yet
// leaves them missing and the next phases wait (each checks its own).
type applyPhase struct {
	name string
	run  func(ctx context.Context, kc *clusterv1.KubeCluster, n Names, st *state) error
}

// phases are a pass's steps, in order.
func (r *Reconciler) phases() []applyPhase {
	return []applyPhase{
		{"etcd", r.applyEtcd},
		{"apiserver Service", r.applyService},
		{"certificates", r.applyPKI},
		{"control plane", r.applyControlPlane},
		{"bootstrap objects", r.applyBootstrap},
	}
}

// act runs the phases (a paused cluster never gets here).
func (r *Reconciler) act(ctx context.Context, kc *clusterv1.KubeCluster, n Names, st *state) error {
	if st.catalog == nil {
		return nil // nothing to render from: status says which versions exist
	}
	for _, p := range r.phases() {
		if err := p.run(ctx, kc, n, st); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
	}
	return nil
}

// applyEtcd keeps the managed EtcdCluster, or the tenant user of a shared
// one.
func (r *Reconciler) applyEtcd(ctx context.Context, kc *clusterv1.KubeCluster, n Names, st *state) error {
	if kc.Spec.Etcd.Ref != nil {
		if st.etcd == nil || !st.etcd.Spec.EnableAuth || !conditions.IsTrue(st.etcd.Status.Conditions, etcdv1.ConditionAvailable) {
			return nil
		}
		if kc.Spec.Hibernated && r.tenants.known(client.ObjectKeyFromObject(kc), string(st.etcd.UID)) {
			// Nothing uses the user while the cluster sleeps: it is
			// re-checked once the cluster wakes.
			st.tenantReady = true
			return nil
		}
		err := r.ensureTenant(ctx, kc, n, st.etcd)
		switch {
		case err == nil:
			st.tenantReady = true
		case r.tenants.known(client.ObjectKeyFromObject(kc), string(st.etcd.UID)):
			// A periodic re-check of a user that was made before: the
			// cluster keeps running on it, the check is retried.
			st.tenantReady = true
			log.FromContext(ctx).Info("re-checking the etcd user failed; retrying", "etcd", st.etcdKey, "error", err.Error())
		default:
			st.tenantErr = err
			return fmt.Errorf("etcd user of this cluster in %s: %w", st.etcdKey, err)
		}
		return nil
	}
	ac, err := r.managedEtcd(kc, st)
	if err != nil {
		return err
	}
	// The cache may not hold a just-created object yet: use what the API
	// answered.
	applied := &etcdv1.EtcdCluster{}
	if err := r.applied.ApplyConfigurationInto(ctx, r, ac, applied, st.etcd); err != nil {
		return err
	}
	st.etcd = applied
	return nil
}

// managedEtcd is the apply configuration of the cluster's own EtcdCluster:
// every field of spec.etcd.managed, nothing else (kok owns only those).
func (r *Reconciler) managedEtcd(kc *clusterv1.KubeCluster, st *state) (*etcdac.EtcdClusterApplyConfiguration, error) {
	owner, err := kube.ControllerReference(kc, r.Scheme())
	if err != nil {
		return nil, err
	}
	m := kc.Spec.Etcd.Managed
	if m == nil {
		m = &clusterv1.ManagedEtcd{}
	}
	ac := etcdac.EtcdCluster(st.etcdKey.Name, st.etcdKey.Namespace).
		WithLabels(map[string]string{kube.LabelInstance: kc.Name, kube.LabelManagedBy: kube.ManagedBy}).
		WithOwnerReferences(owner).
		WithSpec(ManagedEtcdSpec(m, managedEtcdVersion(m, st.etcd, st.catalog.Spec.EtcdVersions)))
	return ac, nil
}

// ManagedEtcdSpec maps spec.etcd.managed onto an EtcdCluster spec.
func ManagedEtcdSpec(m *clusterv1.ManagedEtcd, version string) *etcdac.EtcdClusterSpecApplyConfiguration {
	spec := etcdac.EtcdClusterSpec().WithReplicas(max(m.Replicas, 1))
	if version != "" {
		spec.WithVersion(version)
	}
	if s := m.Storage; s != nil {
		storage := etcdac.EtcdStorage().WithSize(s.Size)
		if s.StorageClassName != nil {
			storage.WithStorageClassName(*s.StorageClassName)
		}
		if s.EmptyDir {
			storage.WithEmptyDir(true)
		}
		spec.WithStorage(storage)
	}
	return spec
}

// managedEtcdVersion picks the version of a managed EtcdCluster: the
// template's, else the current one while the release supports it, else the
// newest the release supports. It never goes back.
func managedEtcdVersion(m *clusterv1.ManagedEtcd, ec *etcdv1.EtcdCluster, supported []string) string {
	if m.Version != "" {
		return m.Version
	}
	if ec != nil && (slices.Contains(supported, ec.Spec.Version) || len(supported) == 0 ||
		kube.CompareVersions(ec.Spec.Version, supported[len(supported)-1]) > 0) {
		return ec.Spec.Version
	}
	if len(supported) == 0 {
		return ""
	}
	return supported[len(supported)-1]
}

// ensureTenant gives the cluster's apiserver an etcd user (its client
// certificate's CN) confined to the cluster's prefix in a shared etcd.
func (r *Reconciler) ensureTenant(ctx context.Context, kc *clusterv1.KubeCluster, n Names, ec *etcdv1.EtcdCluster) error {
	key := client.ObjectKeyFromObject(kc)
	if r.tenants.fresh(key, string(ec.UID)) {
		return nil
	}
	tenant := r.EtcdTenant
	if tenant == nil {
		tenant = r.etcdTenant
	}
	if err := tenant(ctx, ec, EtcdUser(n), SharedEtcdPrefix(kc)+"/"); err != nil {
		return err
	}
	r.tenants.record(key, string(ec.UID))
	return nil
}

func (r *Reconciler) etcdTenant(ctx context.Context, ec *etcdv1.EtcdCluster, user, prefix string) error {
	cli, err := etcd.RootClient(ctx, r, ec, nil)
	if err != nil {
		return err
	}
	defer cli.Close()
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return etcd.EnsureTenant(tctx, cli, user, prefix)
}

// SharedEtcdPrefix is where a cluster on a shared etcd keeps its keys.
func SharedEtcdPrefix(kc *clusterv1.KubeCluster) string {
	return fmt.Sprintf("/kok/%s/%s", kc.Namespace, kc.Name)
}

// applyService keeps the apiserver Service at the address it had.
func (r *Reconciler) applyService(ctx context.Context, kc *clusterv1.KubeCluster, n Names, st *state) error {
	// The address is always stated: the Service read from the cache may
	// already be gone in the API (a deletion racing this pass), and a
	// re-created Service keeps the address clients and certificates know.
	found := st.service != nil
	ip := kc.Status.ServiceIP
	if cur := st.serviceIP(); cur != "" {
		ip = cur
	}
	if !found {
		r.Recorder.Eventf(kc, corev1.EventTypeNormal, "ServiceCreated", "apiserver Service %s created", n.Service())
	}
	svc := APIServerService(n, &kc.Spec, ip)
	err := r.applied.Apply(ctx, r, kc, svc, st.service)
	if err != nil && ip != "" && apierrors.IsInvalid(err) {
		if found {
			return fmt.Errorf("keeping the apiserver Service at %s: %w", ip, err)
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
		err = kube.Apply(ctx, r, kc, svc)
	}
	if err != nil {
		return err
	}
	st.service = svc
	return nil
}

// addressTaken reports whether a Service other than self holds ip.
func (r *Reconciler) addressTaken(ctx context.Context, ip string, self client.ObjectKey) (bool, error) {
	var list corev1.ServiceList
	if err := r.List(ctx, &list); err != nil {
		return false, fmt.Errorf("listing Services: %w", err)
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
		ServiceIP: st.serviceIP(), Port: kc.Spec.Network.APIServer.Port, ExtraSANs: sans, EtcdCA: st.etcdCA, Rotation: kc.Annotations[AnnRotate]}
}

func (n Names) secretNames() []string {
	return []string{n.CASecret(), n.FrontProxyCASecret(), n.ServiceAccountSecret(), n.APIServerSecret(), n.KubeletClientSecret(),
		n.EtcdClientSecret(), n.FrontProxyClientSecret(), n.ControllerManagerKubeconfig(), n.SchedulerKubeconfig(), n.AdminKubeconfig(),
		n.KonnectivityServerSecret(), n.KonnectivityKubeconfig()}
}

// applyPKI issues what is missing or due and writes it (waits for the
// etcd CA, which signs the apiserver's etcd client certificate).
func (r *Reconciler) applyPKI(ctx context.Context, kc *clusterv1.KubeCluster, n Names, st *state) error {
	if st.etcdCA == nil {
		return nil
	}
	want, changed, err := PlanPKI(r.pkiInput(kc, n, st), st.secrets, time.Now())
	if err != nil {
		st.pkiErr = err
		return err
	}
	if _, ok := st.secrets[n.CASecret()]; !ok && len(st.secrets) > 0 {
		r.Recorder.Event(kc, corev1.EventTypeWarning, "CAReplaced", "the cluster CA Secret was missing: a new CA was made and every certificate reissued; kubeconfigs issued before no longer work")
	}
	for _, name := range n.secretNames() {
		s := want[name]
		if !slices.Contains(changed, name) && st.owned[name] {
			continue
		}
		sec := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: n.Namespace,
				Labels:      map[string]string{kube.LabelInstance: n.Cluster, kube.LabelManagedBy: kube.ManagedBy},
				Annotations: map[string]string{AnnIssuedFor: s.Rotation}},
			Type: corev1.SecretTypeOpaque,
			Data: s.Data,
		}
		if err := kube.Apply(ctx, r, kc, sec); err != nil {
			st.pkiErr = err
			return err
		}
		r.secretVersions.record(client.ObjectKeyFromObject(sec), sec.ResourceVersion)
		st.owned[name] = true
	}
	if len(changed) > 0 {
		r.Recorder.Eventf(kc, corev1.EventTypeNormal, "CertificatesIssued", "issued %s", strings.Join(changed, ", "))
	}
	st.secrets = want
	return nil
}

// applyControlPlane applies the three Deployments at the versions the
// rollout plan gives them.
func (r *Reconciler) applyControlPlane(ctx context.Context, kc *clusterv1.KubeCluster, n Names, st *state) error {
	if st.etcdCA == nil {
		return nil
	}
	st.rollout = planRollout(kc, st)
	if kc.Spec.Etcd.Ref != nil && st.etcd.Spec.EnableAuth && !st.tenantReady {
		// An apiserver started before its etcd user exists is refused
		// ("permission denied") and restarts with a back-off.
		st.rollout.Waiting = fmt.Sprintf("the control plane waits for EtcdCluster %s to be available: this cluster's etcd user is made first",
			st.etcdKey)
		st.etcdHeld = true
		return nil
	}
	if kc.Spec.KonnectivityEnabled() {
		cm := EgressSelectorConfigMap(n)
		if err := r.applied.Apply(ctx, r, kc, cm, st.egress); err != nil {
			return err
		}
		st.egress = cm
	}
	// Every component starts at once, with etcd: the apiservers wait for
	// etcd, controller-manager and scheduler retry their leader election
	// until an apiserver answers, and each pod's start (sandbox, volumes,
	// process) overlaps the others'.
	for _, c := range components {
		catalog := st.catalog
		if v := st.rollout.Targets[c]; v != st.catalog.Spec.Version {
			catalog = &clusterv1.KubernetesVersion{}
			if err := r.Get(ctx, client.ObjectKey{Name: v}, catalog); err != nil {
				st.rollout.Waiting = fmt.Sprintf("%s stays as it is: KubernetesVersion %s: %v", c, v, err)
				continue
			}
		}
		d := r.render(c, kc, n, st, &catalog.Spec)
		// Same inputs, same template: a kok-manager that renders
		// differently does not roll a running control plane.
		KeepTemplate(st.deployments[c], d)
		if err := r.applied.Apply(ctx, r, kc, d, st.deployments[c]); err != nil {
			return err
		}
		if prev := st.deployments[c]; prev == nil {
			r.Recorder.Eventf(kc, corev1.EventTypeNormal, "Created", "%s %s created", c, catalog.Spec.Version)
		} else if prev.Annotations[AnnVersion] != catalog.Spec.Version {
			r.Recorder.Eventf(kc, corev1.EventTypeNormal, "Upgrading", "%s %s → %s", c, prev.Annotations[AnnVersion], catalog.Spec.Version)
		}
		st.deployments[c] = d
	}
	return nil
}

// planRollout is the rollout plan of the observed state.
func planRollout(kc *clusterv1.KubeCluster, st *state) Rollout {
	current := map[string]string{}
	for c, d := range st.deployments {
		current[c] = d.Annotations[AnnVersion]
	}
	return PlanRollout(RolloutInput{Desired: kc.Spec.Version, Current: current,
		APIServerRolledOut: rolledOut(st.deployments[APIServer]), EtcdCompatible: st.etcdCompatible()})
}

func (r *Reconciler) render(component string, kc *clusterv1.KubeCluster, n Names, st *state, catalog *clusterv1.KubernetesVersionSpec) *appsv1.Deployment {
	prefix := "/registry"
	if kc.Spec.Etcd.Ref != nil {
		// A shared etcd keeps each cluster under its own prefix.
		prefix = SharedEtcdPrefix(kc) + "/registry"
	}
	servers := st.etcd.Status.ClientEndpoint
	if servers == "" {
		servers = etcd.Names{Cluster: st.etcd.Name, Namespace: st.etcd.Namespace}.ClientEndpoint()
	}
	in := RenderInput{Names: n, Spec: &kc.Spec, Catalog: catalog, Registry: r.ImageRegistry,
		EtcdServers: servers, EtcdPrefix: prefix, ServiceIP: st.serviceIP(), SharedEtcd: kc.Spec.Etcd.Ref != nil}
	hash := func(names ...string) string {
		var data []pki.SecretData
		for _, s := range names {
			data = append(data, st.secrets[s].Data)
		}
		return HashSecrets(data...)
	}
	switch component {
	case APIServer:
		secrets := []string{n.CASecret(), n.FrontProxyCASecret(), n.ServiceAccountSecret(), n.APIServerSecret(),
			n.KubeletClientSecret(), n.FrontProxyClientSecret(), n.EtcdClientSecret()}
		if img := catalog.Images.KonnectivityServer; img != "" && kc.Spec.KonnectivityEnabled() {
			in.KonnectivityServer = Image(r.ImageRegistry, img)
			secrets = append(secrets, n.KonnectivityServerSecret(), n.KonnectivityKubeconfig())
		}
		in.ConfigHash = hash(secrets...)
		return APIServerDeployment(in)
	case ControllerManager:
		in.ConfigHash = hash(n.CASecret(), n.FrontProxyCASecret(), n.ServiceAccountSecret(), n.ControllerManagerKubeconfig())
		return ControllerManagerDeployment(in)
	default:
		in.ConfigHash = hash(n.CASecret(), n.FrontProxyCASecret(), n.SchedulerKubeconfig())
		return SchedulerDeployment(in)
	}
}

// applyBootstrap keeps the objects joining nodes need in the business
// cluster, once the control plane serves. A failure is reported in status
// (Ready False) and retried; it does not fail the pass.
func (r *Reconciler) applyBootstrap(ctx context.Context, kc *clusterv1.KubeCluster, n Names, st *state) error {
	if st.etcdCA == nil || !controlPlaneAvailable(st) || !st.etcdAvailable() || st.serviceIP() == "" {
		return nil
	}
	bootstrap := r.Bootstrap
	if bootstrap == nil {
		bootstrap = bootstrapThroughKubeconfig
	}
	kubeconfig, caPEM := st.secrets[n.AdminKubeconfig()].Data[KeyKubeconfig], st.secrets[n.CASecret()].Data[pki.KeyCA]
	endpoint := endpointOf(kc, st)
	// Applied again only when what they say changes, or every
	// refreshEvery (objects deleted inside the business cluster come back
	// then): not a connection to every business cluster each pass.
	inputs := HashSecrets(pki.SecretData{"kubeconfig": kubeconfig, "server": []byte(endpoint), "ca": caPEM})
	key := client.ObjectKeyFromObject(kc)
	if r.bootstrapped.fresh(key, inputs) {
		return nil
	}
	if err := bootstrap(ctx, kubeconfig, endpoint, caPEM); err != nil {
		st.bootstrapErr = err
		return nil
	}
	r.bootstrapped.record(key, inputs)
	return nil
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
