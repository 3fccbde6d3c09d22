package cluster

import (
	"errors"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/kube"
)

func konnectivityInput() RenderInput {
	in := renderInput()
	in.Spec.Addons = []clusterv1.AddonRef{{Name: "coredns"}, {Name: clusterv1.Konnectivity}}
	in.KonnectivityServer = "kok.local/konnectivity-server:v0.34.0"
	return in
}

// With konnectivity the apiserver sends cluster traffic through a proxy
// server in its pod; without it, the pod is as before.
func TestAPIServerWithKonnectivity(t *testing.T) {
	d := APIServerDeployment(konnectivityInput())
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 2 || spec.Containers[1].Name != "konnectivity-server" {
		t.Fatalf("containers: %v", spec.Containers)
	}
	api, server := spec.Containers[0], spec.Containers[1]
	if !slices.Contains(api.Args, "--egress-selector-config-file="+konnectivityDir+"/"+KeyEgressSelector) {
		t.Errorf("apiserver args lack the egress selector: %v", api.Args)
	}
	for _, want := range []string{"--uds-name=" + konnectivitySocket, "--server-count=3", "--agent-port=8132",
		"--authentication-audience=system:konnectivity-server", "--agent-service-account=konnectivity-agent"} {
		if !slices.Contains(server.Args, want) {
			t.Errorf("proxy server args lack %s: %v", want, server.Args)
		}
	}
	if server.ReadinessProbe != nil {
		t.Error("a proxy server without agents must not make its apiserver unready")
	}
	mounts := func(c corev1.Container) (m []string) {
		for _, v := range c.VolumeMounts {
			m = append(m, v.Name)
		}
		return m
	}
	for _, c := range []corev1.Container{api, server} {
		if !slices.Contains(mounts(c), "konnectivity-uds") {
			t.Errorf("%s does not share the socket's directory", c.Name)
		}
	}
	if !strings.Contains(EgressSelectorConfig, "udsName: "+konnectivitySocket) {
		t.Error("the egress selector does not name the socket")
	}

	plain := APIServerDeployment(renderInput())
	if len(plain.Spec.Template.Spec.Containers) != 1 || slices.ContainsFunc(plain.Spec.Template.Spec.Containers[0].Args,
		func(a string) bool { return strings.HasPrefix(a, "--egress-selector") }) {
		t.Error("without konnectivity the apiserver must reach nodes directly")
	}
	if plain.Annotations[AnnInputs] == d.Annotations[AnnInputs] {
		t.Error("turning konnectivity on must change the inputs hash (roll the apiservers)")
	}
	// Scaling tells the proxy servers a new count: it re-renders them.
	scaled := konnectivityInput()
	scaled.Spec.ControlPlane.Replicas = 5
	if APIServerDeployment(scaled).Annotations[AnnInputs] == d.Annotations[AnnInputs] {
		t.Error("with konnectivity, replicas must be in the inputs hash")
	}

	svc := APIServerService(Names{Cluster: "c", Namespace: "ns"}, konnectivityInput().Spec, "")
	if len(svc.Spec.Ports) != 2 || svc.Spec.Ports[1].Port != clusterv1.KonnectivityPort {
		t.Errorf("the Service does not carry the agents' port: %v", svc.Spec.Ports)
	}
}

func TestKonnectivityCondition(t *testing.T) {
	for _, tc := range []struct {
		name     string
		hasImage bool
		servers  []serverAgents
		ok       bool
		reason   string
	}{
		{name: "no image", servers: []serverAgents{{pod: "a", agents: 2}}, reason: "NoServerImage"},
		{name: "no server yet", hasImage: true, reason: "NoServer"},
		{name: "unreachable", hasImage: true, servers: []serverAgents{{pod: "a", agents: 1}, {pod: "b", err: errors.New("refused")}}, reason: "ServerUnreachable"},
		{name: "one without agents", hasImage: true, servers: []serverAgents{{pod: "a", agents: 2}, {pod: "b"}}, reason: "NoAgent"},
		{name: "connected", hasImage: true, servers: []serverAgents{{pod: "a", agents: 2}, {pod: "b", agents: 2}}, ok: true, reason: "Connected"},
	} {
		ok, reason, msg := konnectivityCondition("v1.34.4", tc.hasImage, tc.servers)
		if ok != tc.ok || reason != tc.reason || msg == "" {
			t.Errorf("%s: got %v %s %q", tc.name, ok, reason, msg)
		}
	}
}

func TestProxyServerPods(t *testing.T) {
	pod := func(name, component, ip string, running bool) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{kube.LabelName: component}},
			Status: corev1.PodStatus{PodIP: ip, ContainerStatuses: []corev1.ContainerStatus{{Name: "konnectivity-server"}}}}
		if running {
			p.Status.ContainerStatuses[0].State.Running = &corev1.ContainerStateRunning{}
		}
		return p
	}
	got := proxyServerPods([]corev1.Pod{pod("a", APIServer, "10.0.0.1", true), pod("b", APIServer, "10.0.0.2", false),
		pod("c", APIServer, "", true), pod("d", Scheduler, "10.0.0.4", true)})
	if len(got) != 1 || got["a"] != "10.0.0.1" {
		t.Errorf("got %v, want only a", got)
	}
}
