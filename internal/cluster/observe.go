package cluster

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/conditions"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/pki"
)

// state is everything one pass knows: what it observed, updated by what
// the apply phases wrote and learned. computeStatus reads only this.
type state struct {
	// observed: every read of observe succeeded.
	observed bool
	// catalog is the KubernetesVersion of spec.version; nil when it is not
	// in the catalog (catalogNames then lists what is).
	catalog      *clusterv1.KubernetesVersion
	catalogNames string

	etcdKey client.ObjectKey
	// etcd is the EtcdCluster in use (nil while it does not exist);
	// etcdCA signs the apiserver's etcd client certificate, read from the
	// Secret the EtcdCluster names in its status.
	etcd   *etcdv1.EtcdCluster
	etcdCA *pki.KeyPair
	// tenantErr: the etcd user of a cluster on a shared etcd could not be
	// ensured; tenantReady: it is there.
	tenantErr   error
	tenantReady bool
	// etcdHeld: the control plane was not applied because the cluster's
	// etcd user on a shared etcd is not there yet; such a pass has not
	// acted on the spec (observedGeneration stays).
	etcdHeld bool

	service *corev1.Service
	// egress is the apiserver's egress selector ConfigMap (konnectivity).
	egress *corev1.ConfigMap
	// secrets hold the certificate and kubeconfig Secrets' content (what
	// was read, then what was written); owned tells which of the ones read
	// the KubeCluster controls.
	secrets map[string]Secret
	owned   map[string]bool
	// pkiErr says why issuing failed.
	pkiErr error

	deployments map[string]*appsv1.Deployment
	// problems are the components' own last errors (a crash-looping
	// container's termination message), by component.
	problems map[string]string
	// rollout is the version each component renders and what holds it.
	rollout Rollout
	// bootstrapErr: the bootstrap objects could not be applied into the
	// business cluster.
	bootstrapErr error
	// konnectivity: the proxy servers beside the apiservers and their
	// agents, when the cluster lists the konnectivity addon.
	konnectivity []serverAgents
}

// serviceIP is the apiserver Service's cluster IP ("" while unassigned).
func (st *state) serviceIP() string {
	if st.service == nil || st.service.Spec.ClusterIP == corev1.ClusterIPNone {
		return ""
	}
	return st.service.Spec.ClusterIP
}

func (st *state) etcdAvailable() bool {
	return st.etcd != nil && conditions.IsTrue(st.etcd.Status.Conditions, etcdv1.ConditionAvailable) && st.tenantErr == nil
}

func (st *state) etcdCompatible() bool {
	return st.etcd != nil && st.catalog != nil && slices.Contains(st.catalog.Spec.EtcdVersions, st.etcd.Status.Version)
}

// etcdKey is the EtcdCluster a cluster uses: its own, or the shared one it
// references.
func etcdKey(kc *clusterv1.KubeCluster, n Names) client.ObjectKey {
	if ref := kc.Spec.Etcd.Ref; ref != nil {
		key := client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}
		if key.Namespace == "" {
			key.Namespace = kc.Namespace
		}
		return key
	}
	return client.ObjectKey{Namespace: kc.Namespace, Name: n.ManagedEtcd()}
}

// observe reads, once, everything a pass decides from.
func (r *Reconciler) observe(ctx context.Context, kc *clusterv1.KubeCluster, n Names) (*state, error) {
	st := &state{etcdKey: etcdKey(kc, n), secrets: map[string]Secret{}, owned: map[string]bool{},
		deployments: map[string]*appsv1.Deployment{}, problems: map[string]string{}}

	catalog := &clusterv1.KubernetesVersion{}
	if err := r.Get(ctx, client.ObjectKey{Name: kc.Spec.Version}, catalog); apierrors.IsNotFound(err) {
		st.catalogNames = r.catalogList(ctx)
	} else if err != nil {
		return st, fmt.Errorf("reading KubernetesVersion %s: %w", kc.Spec.Version, err)
	} else {
		st.catalog = catalog
	}

	ec := &etcdv1.EtcdCluster{}
	if err := r.Get(ctx, st.etcdKey, ec); err == nil {
		st.etcd = ec
		if err := r.observeEtcdCA(ctx, st); err != nil {
			return st, err
		}
	} else if !apierrors.IsNotFound(err) {
		return st, fmt.Errorf("reading EtcdCluster %s: %w", st.etcdKey, err)
	}

	svc := &corev1.Service{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: n.Namespace, Name: n.Service()}, svc); err == nil {
		st.service = svc
	} else if !apierrors.IsNotFound(err) {
		return st, fmt.Errorf("reading Service %s: %w", n.Service(), err)
	}

	for _, name := range n.secretNames() {
		s, err := r.readSecret(ctx, client.ObjectKey{Namespace: n.Namespace, Name: name})
		if apierrors.IsNotFound(err) {
			continue
		} else if err != nil {
			return st, fmt.Errorf("reading Secret %s: %w", name, err)
		}
		st.secrets[name] = Secret{Data: s.Data, Rotation: s.Annotations[AnnIssuedFor]}
		st.owned[name] = metav1.IsControlledBy(s, kc)
	}

	if kc.Spec.KonnectivityEnabled() {
		cm := &corev1.ConfigMap{}
		if err := r.Get(ctx, client.ObjectKey{Namespace: n.Namespace, Name: n.EgressSelectorConfigMap()}, cm); err == nil {
			st.egress = cm
		} else if !apierrors.IsNotFound(err) {
			return st, fmt.Errorf("reading ConfigMap %s: %w", n.EgressSelectorConfigMap(), err)
		}
	}

	for _, c := range components {
		d := &appsv1.Deployment{}
		if err := r.Get(ctx, client.ObjectKey{Namespace: n.Namespace, Name: n.Deployment(c)}, d); apierrors.IsNotFound(err) {
			continue
		} else if err != nil {
			return st, fmt.Errorf("reading Deployment %s: %w", n.Deployment(c), err)
		}
		st.deployments[c] = d
	}

	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(n.Namespace), client.MatchingLabels{kube.LabelInstance: n.Cluster}); err != nil {
		return st, fmt.Errorf("listing the control-plane pods: %w", err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		c := p.Labels[kube.LabelName]
		if !slices.Contains(components, c) || st.problems[c] != "" {
			continue
		}
		if msg := kube.ContainerProblem(p); msg != "" {
			st.problems[c] = fmt.Sprintf("pod %s: %s", p.Name, msg)
		}
	}
	if kc.Spec.KonnectivityEnabled() {
		agents := r.KonnectivityAgents
		if agents == nil {
			agents = scrapeKonnectivityAgents
		}
		servers := proxyServerPods(pods.Items)
		for _, name := range slices.Sorted(maps.Keys(servers)) {
			n, err := agents(ctx, servers[name])
			st.konnectivity = append(st.konnectivity, serverAgents{pod: name, agents: n, err: err})
		}
	}
	st.observed = true
	return st, nil
}

// readSecret reads a certificate Secret from the cache, unless the cache
// may be behind: a Secret it lacks, or one this kok-manager wrote and the
// cache does not show yet, is read from the API. A cache that had not seen
// a Secret just written would have the pass issue the material again (a
// new CA, every pod rolled twice); reading all of them from the API each
// pass costs a dozen requests per cluster and minute.
func (r *Reconciler) readSecret(ctx context.Context, key client.ObjectKey) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := r.Get(ctx, key, s)
	if err == nil && r.secretVersions.current(key, s.ResourceVersion) {
		return s, nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, err
	}
	s = &corev1.Secret{}
	if err := r.APIReader.Get(ctx, key, s); err != nil {
		return nil, err
	}
	r.secretVersions.record(key, s.ResourceVersion)
	return s, nil
}

// observeEtcdCA reads the CA the EtcdCluster publishes in its status
// (status.caSecretName): the contract between the two operators.
func (r *Reconciler) observeEtcdCA(ctx context.Context, st *state) error {
	name := st.etcd.Status.CASecretName
	if name == "" {
		return nil // the etcd operator has not published it yet
	}
	var s corev1.Secret
	if err := r.Get(ctx, client.ObjectKey{Namespace: st.etcd.Namespace, Name: name}, &s); apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading the etcd CA Secret %s/%s: %w", st.etcd.Namespace, name, err)
	}
	if kp, err := pki.ParseKeyPair(s.Data[pki.KeyCA], s.Data["ca.key"]); err == nil {
		st.etcdCA = kp
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
	slices.SortFunc(names, kube.CompareVersions)
	return strings.Join(names, ", ")
}
