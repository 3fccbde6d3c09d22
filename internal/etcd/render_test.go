package etcd

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/kube"
)

func TestNamesRoundTrip(t *testing.T) {
	n := Names{Cluster: "etcd-a", Namespace: "tenant-a"}
	url := n.PeerURL("etcd-a-2")
	if url != "https://etcd-a-2.etcd-a-peer.tenant-a.svc:2380" {
		t.Fatalf("PeerURL = %s", url)
	}
	if m, ok := n.MemberFromPeerURL(url); !ok || m != "etcd-a-2" {
		t.Fatalf("MemberFromPeerURL = %q, %v", m, ok)
	}
	if _, ok := n.MemberFromPeerURL("https://x.other-peer.tenant-a.svc:2380"); ok {
		t.Fatal("a foreign peer URL must not map to a member")
	}
}

func arg(args []string, flag string) (string, bool) {
	for _, a := range args {
		if strings.HasPrefix(a, "--"+flag+"=") {
			return strings.TrimPrefix(a, "--"+flag+"="), true
		}
	}
	return "", false
}

func TestMemberPod(t *testing.T) {
	n := Names{Cluster: "e", Namespace: "ns"}
	q := resource.MustParse("2Gi")
	e := &etcdv1.EtcdCluster{ObjectMeta: metav1.ObjectMeta{Name: "e", Namespace: "ns"},
		Spec: etcdv1.EtcdClusterSpec{Replicas: 3, Version: "v3.6.16", QuotaBackendBytes: &q,
			AutoCompaction: &etcdv1.AutoCompaction{Mode: "periodic", Retention: "1h"}}}
	join := Join{Peers: map[string]string{"e-1": n.PeerURL("e-1"), "e-0": n.PeerURL("e-0")}, Token: "ns-e"}
	pod := MemberPod(n, e, "e-1", join, PodOptions{Image: "kok.local/etcd:v3.6.16"})

	if pod.Spec.Hostname != "e-1" || pod.Spec.Subdomain != "e-peer" {
		t.Fatalf("stable DNS needs hostname/subdomain, got %q/%q", pod.Spec.Hostname, pod.Spec.Subdomain)
	}
	args := pod.Spec.Containers[0].Args
	want := map[string]string{
		"name":                              "e-1",
		"initial-cluster":                   "e-0=https://e-0.e-peer.ns.svc:2380,e-1=https://e-1.e-peer.ns.svc:2380",
		"initial-cluster-state":             "existing",
		"quota-backend-bytes":               "2147483648",
		"auto-compaction-mode":              "periodic",
		"client-cert-auth":                  "true",
		"peer-client-cert-auth":             "true",
		"peer-cert-allowed-cn":              "e-member",
		"peer-skip-client-san-verification": "true",
	}
	for flag, v := range want {
		if got, ok := arg(args, flag); !ok || got != v {
			t.Errorf("--%s = %q, want %q", flag, got, v)
		}
	}
	if pod.Annotations[AnnVersion] != "v3.6.16" {
		t.Error("the pod must record the version it runs")
	}
	if pod.Spec.Volumes[0].PersistentVolumeClaim == nil || pod.Spec.Volumes[0].PersistentVolumeClaim.ClaimName != "e-1-data" {
		t.Errorf("data volume should be the member's claim: %+v", pod.Spec.Volumes[0])
	}

	e.Spec.Version = "v3.5.35"
	pod35 := MemberPod(n, e, "e-1", join, PodOptions{Image: "x"})
	if got, ok := arg(pod35.Spec.Containers[0].Args, "experimental-peer-skip-client-san-verification"); !ok || got != "true" {
		t.Error("etcd 3.5 needs the experimental spelling of the SAN flag")
	}

	join.New = true
	e.Spec.Storage.EmptyDir = true
	pod = MemberPod(n, e, "e-0", join, PodOptions{Image: "x"})
	if got, _ := arg(pod.Spec.Containers[0].Args, "initial-cluster-state"); got != "new" {
		t.Errorf("bootstrap member state = %q, want new", got)
	}
	if pod.Spec.Volumes[0].EmptyDir == nil {
		t.Error("emptyDir storage should give an emptyDir volume")
	}
}

func TestServices(t *testing.T) {
	n := Names{Cluster: "e", Namespace: "ns"}
	peer := PeerService(n)
	if peer.Spec.ClusterIP != "None" || !peer.Spec.PublishNotReadyAddresses {
		t.Fatal("peer Service must be headless and publish members before they are ready")
	}
	if ClientService(n).Spec.Selector[kube.LabelInstance] != "e" {
		t.Fatal("client Service must select the cluster's pods")
	}
	sans := strings.Join(n.ServerSANs("cluster.local"), " ")
	for _, want := range []string{"*.e-peer.ns.svc", "e-client.ns.svc.cluster.local"} {
		if !strings.Contains(sans, want) {
			t.Errorf("server SANs lack %s: %s", want, sans)
		}
	}
}
