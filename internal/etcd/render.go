package etcd

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/kube"
)

// Ports of every member.
const (
	ClientPort  = 2379
	PeerPort    = 2380
	MetricsPort = 2381
)

// Labels and annotations the operator puts on what it owns.
const (
	LabelMember = "etcd.kok.dev/member"
	AnnVersion  = "etcd.kok.dev/version"
	// AnnConfig is the hash of the settings a member pod was made with.
	AnnConfig = "etcd.kok.dev/config"
	dataMount = "/var/lib/etcd"
	tlsMount  = "/etc/etcd/tls"
)

// Names of the objects that make up a cluster.
type Names struct{ Cluster, Namespace string }

func (n Names) ClientService() string { return n.Cluster + "-client" }
func (n Names) PeerService() string   { return n.Cluster + "-peer" }
func (n Names) CASecret() string      { return n.Cluster + "-ca" }

// ServerSecret holds the serving and peer certificate all members share
// (it names every member through a wildcard on the peer Service).
func (n Names) ServerSecret() string { return n.Cluster + "-server-tls" }

// ClientSecret holds the root client certificate.
func (n Names) ClientSecret() string     { return n.Cluster + "-client-tls" }
func (n Names) PVC(member string) string { return member + "-data" }

// MemberHost is a member's stable DNS name.
func (n Names) MemberHost(member string) string {
	return fmt.Sprintf("%s.%s.%s.svc", member, n.PeerService(), n.Namespace)
}

// PeerURL is the URL a member advertises to its peers.
func (n Names) PeerURL(member string) string {
	return fmt.Sprintf("https://%s:%d", n.MemberHost(member), PeerPort)
}

// ClientURL is the URL a member advertises to clients.
func (n Names) ClientURL(member string) string {
	return fmt.Sprintf("https://%s:%d", n.MemberHost(member), ClientPort)
}

// ClientEndpoint is the client Service's URL.
func (n Names) ClientEndpoint() string {
	return fmt.Sprintf("https://%s.%s.svc:%d", n.ClientService(), n.Namespace, ClientPort)
}

// MemberFromPeerURL recovers the member name from a peer URL this operator
// wrote (etcd reports no name for a member that has not started).
func (n Names) MemberFromPeerURL(url string) (string, bool) {
	host := strings.TrimPrefix(url, "https://")
	suffix := fmt.Sprintf(".%s.%s.svc:%d", n.PeerService(), n.Namespace, PeerPort)
	if !strings.HasSuffix(host, suffix) {
		return "", false
	}
	return strings.TrimSuffix(host, suffix), true
}

// ServerSANs are the names the shared server certificate covers.
func (n Names) ServerSANs(domain string) []string {
	return []string{
		"*." + n.PeerService() + "." + n.Namespace + ".svc",
		"*." + n.PeerService() + "." + n.Namespace + ".svc." + domain,
		n.ClientService(),
		n.ClientService() + "." + n.Namespace,
		n.ClientService() + "." + n.Namespace + ".svc",
		n.ClientService() + "." + n.Namespace + ".svc." + domain,
		"localhost",
	}
}

// Selector labels every pod of the cluster.
func (n Names) Selector() map[string]string {
	return map[string]string{kube.LabelName: "etcd", kube.LabelInstance: n.Cluster}
}

// MemberCN is the common name of the member certificate.
func MemberCN(n Names) string { return n.Cluster + "-member" }

// skipPeerSANFlag names the flag that turns off client SAN checks on the
// peer port; etcd 3.5 still calls it experimental.
func skipPeerSANFlag(version string) string {
	if kube.MinorVersion(version) <= 5 {
		return "--experimental-peer-skip-client-san-verification"
	}
	return "--peer-skip-client-san-verification"
}

// ClientService renders the Service clients use.
func ClientService(n Names) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: n.ClientService(), Namespace: n.Namespace, Labels: n.Selector()},
		Spec: corev1.ServiceSpec{
			Selector: n.Selector(),
			Ports:    []corev1.ServicePort{{Name: "client", Port: ClientPort, TargetPort: intstr.FromInt32(ClientPort)}},
		},
	}
}

// PeerService renders the headless Service that gives each member a
// stable DNS name, published before the member is ready (peers must reach
// a member to let it join).
func PeerService(n Names) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: n.PeerService(), Namespace: n.Namespace, Labels: n.Selector()},
		Spec: corev1.ServiceSpec{
			ClusterIP:                corev1.ClusterIPNone,
			PublishNotReadyAddresses: true,
			Selector:                 n.Selector(),
			Ports: []corev1.ServicePort{
				{Name: "peer", Port: PeerPort, TargetPort: intstr.FromInt32(PeerPort)},
				{Name: "client", Port: ClientPort, TargetPort: intstr.FromInt32(ClientPort)},
			},
		},
	}
}

// PVC renders a member's data volume claim.
func PVC(n Names, member string, st etcdv1.EtcdStorage) *corev1.PersistentVolumeClaim {
	labels := n.Selector()
	labels[LabelMember] = member
	size := st.Size
	if size.IsZero() {
		size = resource.MustParse("1Gi")
	}
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: n.PVC(member), Namespace: n.Namespace, Labels: labels},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: st.StorageClassName,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
}

// Join tells a new member whom it joins.
type Join struct {
	// Peers maps every member name (including this one) to its peer URL.
	Peers map[string]string
	// New: the first member of a new cluster; otherwise it joins an
	// existing one.
	New bool
	// Token distinguishes this cluster from any other at bootstrap.
	Token string
}

// PodOptions are the cluster-wide settings a member pod needs.
type PodOptions struct {
	Image string
	// ManagerImage runs the restore of a cluster's first member.
	ManagerImage string
}

// ConfigHash hashes the member settings a running member only picks up by
// restarting: image, quota, compaction and resources. (The version has its
// own annotation; join flags only matter at a member's first start.)
func ConfigHash(e *etcdv1.EtcdCluster, image string) string {
	data, _ := json.Marshal(struct {
		Image          string
		Quota          string
		AutoCompaction *etcdv1.AutoCompaction
		Resources      corev1.ResourceRequirements
	}{image, quotaString(e.Spec.QuotaBackendBytes), e.Spec.AutoCompaction, e.Spec.Resources})
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

func quotaString(q *resource.Quantity) string {
	if q == nil {
		return ""
	}
	return fmt.Sprint(q.Value())
}

// defaultRequests are what a member asks for when the spec asks for
// nothing: a member is never BestEffort, the first to be starved of CPU
// (and evicted) when the node is busy.
var defaultRequests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}

func memberResources(r corev1.ResourceRequirements) corev1.ResourceRequirements {
	if len(r.Requests) == 0 && len(r.Limits) == 0 {
		r.Requests = defaultRequests.DeepCopy()
	}
	return r
}

// MemberPod renders one member's pod.
func MemberPod(n Names, e *etcdv1.EtcdCluster, member string, join Join, o PodOptions) *corev1.Pod {
	labels := n.Selector()
	labels[LabelMember] = member
	var initial []string
	for _, name := range slices.Sorted(maps.Keys(join.Peers)) {
		initial = append(initial, name+"="+join.Peers[name])
	}
	state := "existing"
	if join.New {
		state = "new"
	}
	tls := func(f string) string { return tlsMount + "/" + f }
	args := []string{
		"--name=" + member,
		"--data-dir=" + dataMount + "/data",
		fmt.Sprintf("--listen-peer-urls=https://0.0.0.0:%d", PeerPort),
		fmt.Sprintf("--listen-client-urls=https://0.0.0.0:%d", ClientPort),
		fmt.Sprintf("--listen-metrics-urls=http://0.0.0.0:%d", MetricsPort),
		"--advertise-client-urls=" + n.ClientURL(member),
		"--initial-advertise-peer-urls=" + n.PeerURL(member),
		"--initial-cluster=" + strings.Join(initial, ","),
		"--initial-cluster-state=" + state,
		"--initial-cluster-token=" + join.Token,
		"--cert-file=" + tls("server.crt"), "--key-file=" + tls("server.key"),
		"--trusted-ca-file=" + tls("ca.crt"), "--client-cert-auth=true",
		"--peer-cert-file=" + tls("server.crt"), "--peer-key-file=" + tls("server.key"),
		"--peer-trusted-ca-file=" + tls("ca.crt"), "--peer-client-cert-auth=true",
		// Peers prove themselves with the member certificate (by CN). Its
		// SANs are not matched against the caller's address: that needs a
		// reverse DNS answer a pod that just started does not have yet,
		// and would turn every join's first attempt away.
		"--peer-cert-allowed-cn=" + MemberCN(n),
		skipPeerSANFlag(e.Spec.Version) + "=true",
		"--snapshot-count=10000",
		"--logger=zap", "--log-level=warn",
	}
	if q := e.Spec.QuotaBackendBytes; q != nil {
		args = append(args, fmt.Sprintf("--quota-backend-bytes=%d", q.Value()))
	}
	// Kubernetes compacts its own etcd every 5 minutes, but business
	// clusters that share one (or whose users may not compact) rely on
	// etcd doing it.
	ac := etcdv1.AutoCompaction{Mode: "periodic", Retention: "5m"}
	if e.Spec.AutoCompaction != nil {
		ac = *e.Spec.AutoCompaction
	}
	args = append(args, "--auto-compaction-mode="+ac.Mode, "--auto-compaction-retention="+ac.Retention)
	data := corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: n.PVC(member)}}
	if e.Spec.Storage.EmptyDir {
		data = corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	}
	probe := func(path string, period int32) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: intstr.FromInt32(MetricsPort)}}, PeriodSeconds: period, FailureThreshold: 3}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: member, Namespace: n.Namespace, Labels: labels,
			Annotations: map[string]string{AnnVersion: e.Spec.Version, AnnConfig: ConfigHash(e, o.Image)},
		},
		Spec: corev1.PodSpec{
			Hostname:  member,
			Subdomain: n.PeerService(),
			// A member must come back as itself on its own volume; the
			// operator, not the kubelet, decides on replacement.
			RestartPolicy:                 corev1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			EnableServiceLinks:            ptr.To(false),
			Containers: []corev1.Container{{
				Name:            "etcd",
				Image:           o.Image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         []string{"/usr/local/bin/etcd"},
				Args:            args,
				Ports: []corev1.ContainerPort{
					{Name: "client", ContainerPort: ClientPort},
					{Name: "peer", ContainerPort: PeerPort},
					{Name: "metrics", ContainerPort: MetricsPort},
				},
				ReadinessProbe: probe("/readyz", 1),
				LivenessProbe: func() *corev1.Probe {
					p := probe("/livez", 10)
					p.InitialDelaySeconds = 15
					p.FailureThreshold = 6
					return p
				}(),
				Resources: memberResources(e.Spec.Resources),
				// etcd's last words (e.g. "has already been bootstrapped":
				// its data is gone) become the termination message the
				// operator reads.
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				VolumeMounts: []corev1.VolumeMount{
					{Name: "data", MountPath: dataMount},
					{Name: "tls", MountPath: tlsMount, ReadOnly: true},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "data", VolumeSource: data},
				{Name: "tls", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: n.ServerSecret()},
						Items: []corev1.KeyToPath{{Key: "tls.crt", Path: "server.crt"}, {Key: "tls.key", Path: "server.key"}}}},
					{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: n.CASecret()},
						Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				}}}},
			},
		},
	}
	if join.New && e.Spec.Restore != nil {
		init, vols := restoreInit(n, e, member, join.Token, o.ManagerImage)
		pod.Spec.InitContainers = append(pod.Spec.InitContainers, init)
		pod.Spec.Volumes = append(pod.Spec.Volumes, vols...)
	}
	return pod
}
