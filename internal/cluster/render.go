package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"path"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/pki"
)

// Ports the components serve on inside their pods.
const (
	APIServerPort         = 6443
	ControllerManagerPort = 10257
	SchedulerPort         = 10259
)

const (
	pkiDir        = "/etc/kubernetes/pki"
	kubeconfigDir = "/etc/kubernetes/kubeconfig"
	// nonRoot runs every component; projected files are group-readable.
	nonRoot = 65532
)

// RenderInput is what one component's Deployment is made from.
type RenderInput struct {
	Names   Names
	Spec    *clusterv1.KubeClusterSpec
	Catalog *clusterv1.KubernetesVersionSpec
	// Registry prefixes catalog images that name no registry.
	Registry string
	// ConfigHash is the hash of the Secrets the component mounts.
	ConfigHash string
	// EtcdServers, EtcdPrefix and ServiceIP are the apiserver's.
	EtcdServers, EtcdPrefix, ServiceIP string
	// SharedEtcd: other clusters use the same etcd, so this apiserver
	// leaves compaction (which spans every prefix) to etcd.
	SharedEtcd bool
	// KonnectivityServer is the image of the proxy server beside each
	// apiserver; empty runs none.
	KonnectivityServer string
}

// renderEpoch is part of every inputs hash: raise it when a rendering change
// must reach running control planes (a security fix), not just new ones.
const renderEpoch = 1

// InputsHash hashes what a component's pod template is rendered from.
func (in RenderInput) InputsHash(component string) string {
	var cs clusterv1.ComponentSpec
	switch component {
	case APIServer:
		cs = in.Spec.ControlPlane.APIServer
	case ControllerManager:
		cs = in.Spec.ControlPlane.ControllerManager
	case Scheduler:
		cs = in.Spec.ControlPlane.Scheduler
	}
	data, _ := json.Marshal(struct {
		Epoch                              int
		Component                          string
		Names                              Names
		ComponentSpec                      clusterv1.ComponentSpec
		Network                            clusterv1.NetworkSpec
		Catalog                            *clusterv1.KubernetesVersionSpec
		Registry, ConfigHash               string
		EtcdServers, EtcdPrefix, ServiceIP string
		SharedEtcd                         bool
		KonnectivityServer                 string `json:",omitempty"`
		// The proxy servers tell agents how many of them to find.
		KonnectivityServers int32 `json:",omitempty"`
	}{renderEpoch, component, in.Names, cs, in.Spec.Network, in.Catalog, in.Registry, in.ConfigHash,
		in.EtcdServers, in.EtcdPrefix, in.ServiceIP, in.SharedEtcd, in.KonnectivityServer, in.konnectivityServers(component)})
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// konnectivityServers is how many proxy servers component's pods run with
// (one per apiserver), 0 when none.
func (in RenderInput) konnectivityServers(component string) int32 {
	if component != APIServer || in.KonnectivityServer == "" {
		return 0
	}
	return in.Spec.ControlPlane.Replicas
}

// KeepTemplate makes d, freshly rendered, carry the pod template prev was
// rendered with when both come from the same inputs (see AnnInputs). It
// returns whether it did.
func KeepTemplate(prev, d *appsv1.Deployment) bool {
	if prev == nil || prev.Annotations[AnnInputs] != d.Annotations[AnnInputs] {
		return false
	}
	var tmpl corev1.PodTemplateSpec
	if err := json.Unmarshal([]byte(prev.Annotations[AnnTemplate]), &tmpl); err != nil || len(tmpl.Spec.Containers) == 0 {
		return false
	}
	d.Spec.Template = tmpl
	d.Annotations[AnnTemplate] = prev.Annotations[AnnTemplate]
	return true
}

// Image resolves a catalog image against the registry: references that
// name a registry host are used as written.
func Image(registry, ref string) string {
	if registry == "" {
		registry = kube.DefaultRegistry
	}
	if first, _, found := strings.Cut(ref, "/"); found && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return ref
	}
	return strings.TrimSuffix(registry, "/") + "/" + ref
}

// Args renders flags: kok's, then the catalog's defaults, then the
// cluster's extraArgs, later ones winning; sorted so the rendering is stable.
func Args(layers ...map[string]string) []string {
	merged := map[string]string{}
	for _, l := range layers {
		maps.Copy(merged, l)
	}
	out := make([]string, 0, len(merged))
	for _, k := range slices.Sorted(maps.Keys(merged)) {
		out = append(out, "--"+k+"="+merged[k])
	}
	return out
}

// HashSecrets hashes the data of Secrets in a stable order.
func HashSecrets(secrets ...pki.SecretData) string {
	h := sha256.New()
	for _, s := range secrets {
		for _, k := range slices.Sorted(maps.Keys(s)) {
			fmt.Fprintf(h, "%s=%x;", k, sha256.Sum256(s[k]))
		}
		h.Write([]byte{'|'})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// APIServerDeployment renders the apiservers.
func APIServerDeployment(in RenderInput) *appsv1.Deployment {
	n, spec := in.Names, in.Spec
	p := func(f string) string { return pkiDir + "/" + f }
	_, svcNet, _ := net.ParseCIDR(spec.Network.ServiceCIDR)
	base := map[string]string{
		"advertise-address":           in.ServiceIP,
		"allow-privileged":            "true",
		"authorization-mode":          "Node,RBAC",
		"bind-address":                "0.0.0.0",
		"client-ca-file":              p("ca.crt"),
		"enable-admission-plugins":    "NodeRestriction",
		"enable-bootstrap-token-auth": "true",
		// Aggregated APIs (metrics-server) are reached at their endpoints,
		// not their ClusterIP, which the apiservers in the meta cluster
		// cannot route to.
		"enable-aggregator-routing":          "true",
		"endpoint-reconciler-type":           "none",
		"etcd-cafile":                        p("etcd/ca.crt"),
		"etcd-certfile":                      p("etcd/client.crt"),
		"etcd-keyfile":                       p("etcd/client.key"),
		"etcd-prefix":                        in.EtcdPrefix,
		"etcd-servers":                       in.EtcdServers,
		"kubelet-client-certificate":         p("apiserver-kubelet-client.crt"),
		"kubelet-client-key":                 p("apiserver-kubelet-client.key"),
		"kubelet-preferred-address-types":    "InternalIP,ExternalIP,Hostname",
		"proxy-client-cert-file":             p("front-proxy-client.crt"),
		"proxy-client-key-file":              p("front-proxy-client.key"),
		"requestheader-allowed-names":        "front-proxy-client",
		"requestheader-client-ca-file":       p("front-proxy-ca.crt"),
		"requestheader-extra-headers-prefix": "X-Remote-Extra-",
		"requestheader-group-headers":        "X-Remote-Group",
		"requestheader-username-headers":     "X-Remote-User",
		"secure-port":                        fmt.Sprint(APIServerPort),
		"service-account-issuer":             "https://kubernetes.default.svc." + spec.Network.DNSDomain,
		"service-account-key-file":           p("sa.pub"),
		"service-account-signing-key-file":   p("sa.key"),
		"service-cluster-ip-range":           spec.Network.ServiceCIDR,
		"tls-cert-file":                      p("apiserver.crt"),
		"tls-private-key-file":               p("apiserver.key"),
	}
	if svcNet == nil {
		delete(base, "service-cluster-ip-range")
	}
	if in.SharedEtcd {
		base["etcd-compaction-interval"] = "0"
	}
	if in.ServiceIP == "" {
		delete(base, "advertise-address")
	}
	if in.KonnectivityServer != "" {
		base["egress-selector-config-file"] = konnectivityDir + "/" + KeyEgressSelector
	}
	files := []projection{
		{n.CASecret(), pki.KeyCA, "ca.crt"},
		{n.FrontProxyCASecret(), pki.KeyCA, "front-proxy-ca.crt"},
		{n.ServiceAccountSecret(), KeySAPublic, "sa.pub"},
		{n.ServiceAccountSecret(), KeySAPrivate, "sa.key"},
		{n.APIServerSecret(), pki.KeyCert, "apiserver.crt"},
		{n.APIServerSecret(), pki.KeyKey, "apiserver.key"},
		{n.KubeletClientSecret(), pki.KeyCert, "apiserver-kubelet-client.crt"},
		{n.KubeletClientSecret(), pki.KeyKey, "apiserver-kubelet-client.key"},
		{n.FrontProxyClientSecret(), pki.KeyCert, "front-proxy-client.crt"},
		{n.FrontProxyClientSecret(), pki.KeyKey, "front-proxy-client.key"},
		{n.EtcdClientSecret(), pki.KeyCA, "etcd/ca.crt"},
		{n.EtcdClientSecret(), pki.KeyCert, "etcd/client.crt"},
		{n.EtcdClientSecret(), pki.KeyKey, "etcd/client.key"},
	}
	c := container(APIServer, Image(in.Registry, in.Catalog.Images.APIServer), spec.ControlPlane.APIServer,
		Args(base, in.Catalog.DefaultArgs.APIServer, spec.ControlPlane.APIServer.ExtraArgs),
		APIServerPort, resources("100m", "192Mi"))
	setProbes(&c, "/livez", "/readyz", APIServerPort)
	c.VolumeMounts = []corev1.VolumeMount{{Name: "pki", MountPath: pkiDir, ReadOnly: true}}
	d := deployment(in, APIServer, c, []corev1.Volume{projected("pki", files)})
	if in.KonnectivityServer != "" {
		withKonnectivity(in, d)
	}
	// Time for a terminating apiserver to leave the endpoints and drain.
	d.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](45)
	return recordTemplate(d)
}

// Where the apiserver and its proxy server meet.
const (
	konnectivityDir    = "/etc/kubernetes/konnectivity"
	konnectivitySocket = "/run/konnectivity/konnectivity-server.socket"
	// KonnectivityHealthPort serves the proxy server's /healthz and
	// /metrics (its agent count) in the pod.
	KonnectivityHealthPort = 8134
	// KeyEgressSelector is the egress selector configuration's key in
	// its ConfigMap.
	KeyEgressSelector = "egress-selector.yaml"
)

// EgressSelectorConfig sends the apiserver's traffic to nodes and pods
// ("cluster") through the proxy server's socket; etcd and the meta
// cluster's own addresses stay direct.
const EgressSelectorConfig = `apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: GRPC
    transport:
      uds:
        udsName: ` + konnectivitySocket + `
`

// withKonnectivity adds the proxy server beside the apiserver of d: the
// apiserver dials nodes and pods through it (a Unix socket in a shared
// emptyDir), and it serves the agents on KonnectivityPort with a
// certificate of the cluster CA, checking their service-account tokens
// against this apiserver.
func withKonnectivity(in RenderInput, d *appsv1.Deployment) {
	n, spec := in.Names, d.Spec.Template.Spec.DeepCopy()
	api := &spec.Containers[0]
	sock := corev1.VolumeMount{Name: "konnectivity-uds", MountPath: path.Dir(konnectivitySocket)}
	api.VolumeMounts = append(api.VolumeMounts, sock,
		corev1.VolumeMount{Name: "konnectivity", MountPath: konnectivityDir, ReadOnly: true})
	p := func(f string) string { return konnectivityDir + "/" + f }
	args := map[string]string{
		"mode":                     "grpc",
		"uds-name":                 konnectivitySocket,
		"delete-existing-uds-file": "true",
		"server-port":              "0",
		"agent-port":               fmt.Sprint(clusterv1.KonnectivityPort),
		"health-port":              fmt.Sprint(KonnectivityHealthPort),
		"admin-port":               "8133",
		"cluster-cert":             p("tls.crt"),
		"cluster-key":              p("tls.key"),
		// Each agent connects to this many servers (through the
		// Service); scaling the apiservers re-renders them.
		"server-count":            fmt.Sprint(in.konnectivityServers(APIServer)),
		"agent-namespace":         "kube-system",
		"agent-service-account":   "konnectivity-agent",
		"authentication-audience": KonnectivityUser,
		"kubeconfig":              p("kubeconfig"),
		// A node's connections go to the agent on that node.
		"proxy-strategies": "destHost,default",
	}
	server := corev1.Container{
		Name: "konnectivity-server", Image: in.KonnectivityServer, ImagePullPolicy: corev1.PullIfNotPresent,
		Args: Args(args),
		Ports: []corev1.ContainerPort{{Name: "konnectivity", ContainerPort: clusterv1.KonnectivityPort, Protocol: corev1.ProtocolTCP},
			{Name: "konn-health", ContainerPort: KonnectivityHealthPort, Protocol: corev1.ProtocolTCP}},
		Resources: resources("10m", "24Mi"),
		// Liveness only: a server without agents is no reason to take its
		// apiserver out of the Service.
		LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/healthz", Port: intstr.FromInt32(KonnectivityHealthPort)}}, PeriodSeconds: 10, FailureThreshold: 3, TimeoutSeconds: 15},
		VolumeMounts:             []corev1.VolumeMount{sock, {Name: "konnectivity", MountPath: konnectivityDir, ReadOnly: true}},
		SecurityContext:          api.SecurityContext.DeepCopy(),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	spec.Containers = append(spec.Containers, server)
	files := projected("konnectivity", []projection{
		{n.KonnectivityServerSecret(), pki.KeyCert, "tls.crt"},
		{n.KonnectivityServerSecret(), pki.KeyKey, "tls.key"},
		{n.KonnectivityKubeconfig(), KeyKubeconfig, "kubeconfig"},
	})
	files.Projected.Sources = append(files.Projected.Sources, corev1.VolumeProjection{ConfigMap: &corev1.ConfigMapProjection{
		LocalObjectReference: corev1.LocalObjectReference{Name: n.EgressSelectorConfigMap()},
		Items:                []corev1.KeyToPath{{Key: KeyEgressSelector, Path: KeyEgressSelector}}}})
	spec.Volumes = append(spec.Volumes, files,
		corev1.Volume{Name: "konnectivity-uds", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	d.Spec.Template.Spec = *spec
}

// EgressSelectorConfigMap renders the ConfigMap the apiservers read their
// egress selector configuration from.
func EgressSelectorConfigMap(n Names) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: n.EgressSelectorConfigMap(), Namespace: n.Namespace, Labels: n.Labels(APIServer)},
		Data:       map[string]string{KeyEgressSelector: EgressSelectorConfig},
	}
}

// ControllerManagerDeployment renders the controller-managers.
func ControllerManagerDeployment(in RenderInput) *appsv1.Deployment {
	n, spec := in.Names, in.Spec
	p := func(f string) string { return pkiDir + "/" + f }
	kc := kubeconfigDir + "/kubeconfig"
	base := map[string]string{
		"authentication-kubeconfig":        kc,
		"authorization-kubeconfig":         kc,
		"bind-address":                     "0.0.0.0",
		"client-ca-file":                   p("ca.crt"),
		"cluster-name":                     n.Cluster,
		"cluster-signing-cert-file":        p("signer.crt"),
		"cluster-signing-key-file":         p("signer.key"),
		"kubeconfig":                       kc,
		"requestheader-client-ca-file":     p("front-proxy-ca.crt"),
		"root-ca-file":                     p("ca.crt"),
		"secure-port":                      fmt.Sprint(ControllerManagerPort),
		"service-account-private-key-file": p("sa.key"),
		"service-cluster-ip-range":         spec.Network.ServiceCIDR,
		"use-service-account-credentials":  "true",
	}
	maps.Copy(base, leaderElection)
	if spec.Network.PodCIDR != "" {
		base["allocate-node-cidrs"] = "true"
		base["cluster-cidr"] = spec.Network.PodCIDR
	}
	files := []projection{
		{n.CASecret(), pki.KeyCA, "ca.crt"},
		{n.CASecret(), pki.KeyCert, "signer.crt"},
		{n.CASecret(), pki.KeyKey, "signer.key"},
		{n.FrontProxyCASecret(), pki.KeyCA, "front-proxy-ca.crt"},
		{n.ServiceAccountSecret(), KeySAPrivate, "sa.key"},
	}
	c := container(ControllerManager, Image(in.Registry, in.Catalog.Images.ControllerManager), spec.ControlPlane.ControllerManager,
		Args(base, in.Catalog.DefaultArgs.ControllerManager, spec.ControlPlane.ControllerManager.ExtraArgs),
		ControllerManagerPort, resources("50m", "96Mi"))
	setProbes(&c, "/healthz", "", ControllerManagerPort)
	c.VolumeMounts = []corev1.VolumeMount{
		{Name: "pki", MountPath: pkiDir, ReadOnly: true},
		{Name: "kubeconfig", MountPath: kubeconfigDir, ReadOnly: true},
	}
	return recordTemplate(deployment(in, ControllerManager, c, []corev1.Volume{projected("pki", files),
		projected("kubeconfig", []projection{{n.ControllerManagerKubeconfig(), KeyKubeconfig, "kubeconfig"}})}))
}

// SchedulerDeployment renders the schedulers.
func SchedulerDeployment(in RenderInput) *appsv1.Deployment {
	n, spec := in.Names, in.Spec
	p := func(f string) string { return pkiDir + "/" + f }
	kc := kubeconfigDir + "/kubeconfig"
	base := map[string]string{
		"authentication-kubeconfig": kc,
		"authorization-kubeconfig":  kc,
		"bind-address":              "0.0.0.0",
		// Given the client CAs, the scheduler does not look them up in
		// the business cluster as it starts: that lookup would hold its
		// start (and its health endpoint) until an apiserver answers, or
		// for a connect timeout while the Service has no endpoints yet.
		"client-ca-file":               p("ca.crt"),
		"requestheader-client-ca-file": p("front-proxy-ca.crt"),
		"kubeconfig":                   kc,
		"secure-port":                  fmt.Sprint(SchedulerPort),
	}
	maps.Copy(base, leaderElection)
	c := container(Scheduler, Image(in.Registry, in.Catalog.Images.Scheduler), spec.ControlPlane.Scheduler,
		Args(base, in.Catalog.DefaultArgs.Scheduler, spec.ControlPlane.Scheduler.ExtraArgs),
		SchedulerPort, resources("20m", "48Mi"))
	setProbes(&c, "/healthz", "", SchedulerPort)
	c.VolumeMounts = []corev1.VolumeMount{
		{Name: "pki", MountPath: pkiDir, ReadOnly: true},
		{Name: "kubeconfig", MountPath: kubeconfigDir, ReadOnly: true},
	}
	return recordTemplate(deployment(in, Scheduler, c, []corev1.Volume{
		projected("pki", []projection{{n.CASecret(), pki.KeyCA, "ca.crt"}, {n.FrontProxyCASecret(), pki.KeyCA, "front-proxy-ca.crt"}}),
		projected("kubeconfig", []projection{{n.SchedulerKubeconfig(), KeyKubeconfig, "kubeconfig"}})}))
}

// APIServerService renders the Service in front of the apiservers. ip, when
// known, keeps a re-created Service at its old address.
func APIServerService(n Names, spec *clusterv1.KubeClusterSpec, ip string) *corev1.Service {
	s := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: n.Service(), Namespace: n.Namespace, Labels: n.Labels(APIServer)},
		Spec: corev1.ServiceSpec{
			Type:     spec.Network.APIServer.Type,
			Selector: n.ServiceSelector(),
			Ports: []corev1.ServicePort{{Name: "https", Port: spec.Network.APIServer.Port, Protocol: corev1.ProtocolTCP,
				TargetPort: intstr.FromInt32(APIServerPort), NodePort: spec.Network.APIServer.NodePort}},
			ClusterIP: ip,
		},
	}
	if spec.KonnectivityEnabled() {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "konnectivity", Port: clusterv1.KonnectivityPort,
			Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(clusterv1.KonnectivityPort)})
	}
	if s.Spec.Type == "" {
		s.Spec.Type = corev1.ServiceTypeClusterIP
	}
	return s
}

type projection struct{ secret, key, path string }

func projected(name string, files []projection) corev1.Volume {
	var sources []corev1.VolumeProjection
	for _, f := range files {
		item := corev1.KeyToPath{Key: f.key, Path: f.path}
		if i := slices.IndexFunc(sources, func(s corev1.VolumeProjection) bool { return s.Secret.Name == f.secret }); i >= 0 {
			sources[i].Secret.Items = append(sources[i].Secret.Items, item)
			continue
		}
		sources = append(sources, corev1.VolumeProjection{Secret: &corev1.SecretProjection{
			LocalObjectReference: corev1.LocalObjectReference{Name: f.secret}, Items: []corev1.KeyToPath{item}}})
	}
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: sources, DefaultMode: ptr.To[int32](0o440)}}}
}

// leaderElection: the controller-manager and scheduler keep their lease
// through 40 s of a slow apiserver (Kubernetes' defaults give up after
// 10 s: both exit on a lost lease, and on a busy meta node the upgrade of
// their own apiserver made them restart, adding their start to the load)
// and renew it every 5 s instead of every 2 s (two writes fewer per
// second per cluster into a shared etcd). A leader that dies without
// releasing its lease is replaced after at most 60 s (15 s by default);
// the scheduler releases it when it stops, the controller-manager does
// not. extraArgs override them.
var leaderElection = map[string]string{
	"leader-elect":                "true",
	"leader-elect-lease-duration": "60s",
	"leader-elect-renew-deadline": "40s",
	"leader-elect-retry-period":   "5s",
}

// setProbes: a startup probe asks the liveness path every second for up
// to five minutes, so a control plane starting on a busy meta node (twenty
// apiservers created at once on two cores take minutes) is not killed by
// liveness in the middle of its start, which made them all start again and
// never finish. Once started, liveness allows 8 failed probes 10 s apart,
// each given 15 s (kubeadm's values), before the kubelet restarts the
// container: on a saturated node a 5 s answer is late, not dead, and a
// restart only adds a start to the load.
//
// Only the apiserver has a readiness probe (readyPath), every 5 s: it is
// the one behind a Service. The controller-manager and scheduler are Ready
// once started (no readiness probe): every probe is a TLS handshake for the
// kubelet and the component, and a readiness probe every second on each of
// them cost the meta node ≈10 mCPU per component, a third of two cores with
// twenty control planes (fleet benchmark).
func setProbes(c *corev1.Container, livePath, readyPath string, port int32) {
	c.StartupProbe = httpsProbe(livePath, port, 1, 300)
	c.LivenessProbe = httpsProbe(livePath, port, 10, 8)
	if readyPath != "" {
		c.ReadinessProbe = httpsProbe(readyPath, port, 5, 2)
	}
}

func httpsProbe(path string, port, period, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: intstr.FromInt32(port), Scheme: corev1.URISchemeHTTPS}},
		PeriodSeconds: period, FailureThreshold: failures, TimeoutSeconds: 15,
	}
}

func resources(cpu, memory string) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(memory)}}
}

func container(name, image string, cs clusterv1.ComponentSpec, args []string, port int32, res corev1.ResourceRequirements) corev1.Container {
	if cs.Image != "" {
		image = cs.Image
	}
	if cs.Resources != nil {
		res = *cs.Resources
	}
	return corev1.Container{
		Name:            name,
		Image:           image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args:            args,
		Ports:           []corev1.ContainerPort{{Name: "https", ContainerPort: port, Protocol: corev1.ProtocolTCP}},
		Resources:       res,
		Env:             withDefaultEnv(cs.Env),
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// DefaultGOGC is the Go GC target of every control-plane component unless
// its env sets GOGC: an idle control plane keeps ≈ 228 MiB of private
// memory instead of ≈ 271 with Go's 100, with no start time we could
// measure (bench/results/clusters.md).
const DefaultGOGC = "50"

func withDefaultEnv(env []corev1.EnvVar) []corev1.EnvVar {
	for _, e := range env {
		if e.Name == "GOGC" {
			return env
		}
	}
	return append([]corev1.EnvVar{{Name: "GOGC", Value: DefaultGOGC}}, env...)
}

func deployment(in RenderInput, component string, c corev1.Container, volumes []corev1.Volume) *appsv1.Deployment {
	n := in.Names
	labels := n.Labels(component)
	d := &appsv1.Deployment{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: n.Deployment(component), Namespace: n.Namespace, Labels: labels,
			Annotations: map[string]string{AnnVersion: in.Catalog.Version, AnnInputs: in.InputsHash(component)}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(Replicas(in.Spec)),
			Selector: &metav1.LabelSelector{MatchLabels: n.Selector(component)},
			// Blue/green: every new pod starts at once and old ones go only
			// as new ones become ready, so capacity never drops.
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromString("100%"))}},
			RevisionHistoryLimit: ptr.To[int32](3),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels,
					Annotations: map[string]string{AnnVersion: in.Catalog.Version, AnnConfigHash: in.ConfigHash}},
				Spec: corev1.PodSpec{
					Containers:                   []corev1.Container{c},
					Volumes:                      volumes,
					AutomountServiceAccountToken: ptr.To(false),
					EnableServiceLinks:           ptr.To(false),
					SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](nonRoot),
						RunAsGroup: ptr.To[int64](nonRoot), FSGroup: ptr.To[int64](nonRoot),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 100,
							PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: corev1.LabelHostname,
								LabelSelector: &metav1.LabelSelector{MatchLabels: n.Selector(component)}}}}}},
				},
			},
		},
	}
	return d
}

// Replicas is how many pods each control-plane component runs: none while
// the cluster is hibernated. Hibernation changes no pod template, so a
// cluster wakes without a rollout.
func Replicas(spec *clusterv1.KubeClusterSpec) int32 {
	if spec.Hibernated {
		return 0
	}
	return spec.ControlPlane.Replicas
}

// recordTemplate stores the finished pod template on the Deployment (see
// AnnInputs); every renderer ends with it.
func recordTemplate(d *appsv1.Deployment) *appsv1.Deployment {
	tmpl, _ := json.Marshal(d.Spec.Template)
	d.Annotations[AnnTemplate] = string(tmpl)
	return d
}
