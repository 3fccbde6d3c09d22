package machine

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/agent"
	"github.com/kubeonkube/kok/internal/pki"
)

func kubelet() *nodev1.Component {
	return &nodev1.Component{ObjectMeta: metav1.ObjectMeta{Name: "kubelet-v1.34.4"},
		Spec: nodev1.ComponentSpec{Component: "kubelet", Version: "v1.34.4", DependsOn: []string{"containerd"}, Disruption: nodev1.DisruptionRestart,
			Variants: []nodev1.ComponentVariant{
				{Name: "debian-arm64", Match: nodev1.HostMatch{OS: "debian", Architectures: []string{"arm64"}}},
				{Name: "debian-amd64", Match: nodev1.HostMatch{OS: "debian", OSVersions: []string{"12"}, Architectures: []string{"amd64"}},
					Artifacts: []nodev1.Artifact{{Path: "/usr/local/bin/kubelet", Source: "kubelet:v1.34.4", Digest: "sha256:aa", Mode: "0755"}},
					Files: []nodev1.TemplatedFile{
						{Path: "/etc/kok/kubelet.yaml", Template: "clusterDNS: [{{ .Cluster.DNSAddress }}]\nclusterDomain: {{ .Cluster.DNSDomain }}\n"},
						{Path: "/etc/kok/bootstrap.conf", Template: "server: {{ .Cluster.APIServer }}\n"},
					},
					Scripts: nodev1.Scripts{Install: "install -d /var/lib/kubelet # {{ .Node.Name }}", Check: "pgrep kubelet", Uninstall: "rm -rf /var/lib/kubelet"},
					Services: []nodev1.Service{
						{Name: "kubelet", Command: []string{"/usr/local/bin/kubelet", "--config=/etc/kok/kubelet.yaml", "--node-ip={{ .Node.Address }}"},
							RestartOn: []string{"/usr/local/bin/kubelet", "/etc/kok/kubelet.yaml"}},
					}},
			}}}
}

func values() Values {
	return Values{Cluster: ClusterValues{Name: "team-a", Version: "v1.34.4", APIServer: "https://10.201.0.5:6443",
		DNSAddress: "10.96.0.10", DNSDomain: "cluster.local"},
		Node: NodeValues{Name: "w1", Address: "10.200.8.11", OS: "debian", OSVersion: "12", Arch: "amd64"}, Registry: RegistryValues{Name: "kok.local", Endpoint: "http://10.200.0.1:5000"}}
}

// pin resolves an artifact the way the operator does when the Component
// gives its digest.
func pin(a nodev1.Artifact) (agent.Artifact, error) {
	return agent.Artifact{Path: a.Path, URL: "http://10.200.0.1:5000/v2/" + a.Source + "/blobs/" + a.Digest, Digest: a.Digest, Mode: a.Mode}, nil
}

func TestSelectVariant(t *testing.T) {
	c := kubelet()
	v, err := SelectVariant(c, nodev1.HostFacts{OS: "debian", OSVersion: "12", Arch: "amd64"})
	if err != nil || v.Name != "debian-amd64" {
		t.Fatalf("got %v, %v", v, err)
	}
	if v, err := SelectVariant(c, nodev1.HostFacts{OS: "debian", OSVersion: "13", Arch: "arm64"}); err != nil || v.Name != "debian-arm64" {
		t.Fatalf("an empty OS version list matches any version: %v, %v", v, err)
	}
	_, err = SelectVariant(c, nodev1.HostFacts{OS: "debian", OSVersion: "13", Arch: "amd64"})
	if !errors.Is(err, ErrNoVariant) || !strings.Contains(err.Error(), "debian-amd64 (debian 12 amd64)") || !strings.Contains(err.Error(), "add a variant") {
		t.Fatalf("the error must list the variants and say what to do: %v", err)
	}
}

func TestInstallOrder(t *testing.T) {
	deps := map[string][]string{"kubelet": {"containerd"}, "containerd": {"runc"}, "kok-agent": {"kubelet"}}
	got, err := InstallOrder([]string{"kok-agent", "kubelet", "containerd", "runc", "gpu"}, deps)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"runc", "containerd", "kubelet", "kok-agent", "gpu"}; !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	if _, err := InstallOrder([]string{"kubelet"}, deps); err == nil || !strings.Contains(err.Error(), "add containerd to spec.components") {
		t.Fatalf("a missing dependency must be named: %v", err)
	}
	cyc := map[string][]string{"a": {"b"}, "b": {"a"}}
	if _, err := InstallOrder([]string{"a", "b"}, cyc); err == nil || !strings.Contains(err.Error(), "a → b → a") {
		t.Fatalf("a cycle must be named: %v", err)
	}
	if Version(nodev1.ComponentRef{Name: "kubelet"}, "v1.34.4") != "v1.34.4" || Version(nodev1.ComponentRef{Name: "c", Version: "1.6"}, "v1.34.4") != "1.6" {
		t.Fatal("Version")
	}
}

func TestRender(t *testing.T) {
	c := kubelet()
	v := &c.Spec.Variants[1]
	r, err := Render(c, v, values(), pin)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Files[0].Content) != "clusterDNS: [10.96.0.10]\nclusterDomain: cluster.local\n" ||
		r.Services[0].Command[2] != "--node-ip=10.200.8.11" || !strings.HasSuffix(r.Scripts.Install, "# w1") {
		t.Fatalf("rendered %+v", r)
	}
	again, _ := Render(c, v, values(), pin)
	if again.Hash != r.Hash || !strings.HasPrefix(r.Hash, "sha256:") {
		t.Fatal("the same inputs must hash the same")
	}
	other := values()
	other.Cluster.DNSAddress = "10.96.0.11"
	changed, _ := Render(c, v, other, pin)
	if changed.Hash == r.Hash {
		t.Fatal("a changed value must change the hash")
	}

	bad := kubelet()
	bad.Spec.Variants[1].Files[0].Template = "{{ .Cluster.NoSuchValue }}"
	if _, err := Render(bad, &bad.Spec.Variants[1], values(), pin); err == nil || !strings.Contains(err.Error(), "file /etc/kok/kubelet.yaml") {
		t.Fatalf("an unknown value must fail naming the file: %v", err)
	}
}

func TestCAHash(t *testing.T) {
	ca, err := pki.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	h, err := CAHash(ca.CertPEM())
	if err != nil || !strings.HasPrefix(h, "sha256:") || len(h) != len("sha256:")+64 {
		t.Fatalf("%q %v", h, err)
	}
	if _, err := CAHash([]byte("nope")); err == nil {
		t.Fatal("want an error for no PEM")
	}
}

// TestDefaultCatalogRenders: every Component of config/components has a
// variant for a Debian 12 amd64 host, and every template in it renders
// with the values the operator gives.
func TestDefaultCatalogRenders(t *testing.T) {
	files, _ := filepath.Glob("../../config/components/*-*.yaml")
	if len(files) == 0 {
		t.Fatal("no Components in config/components")
	}
	v := values()
	v.Cluster.CA = "-----BEGIN CERTIFICATE-----\n"
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c := &nodev1.Component{}
		if err := yaml.UnmarshalStrict(data, c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if c.Name != ComponentName(c.Spec.Component, c.Spec.Version) {
			t.Errorf("%s: named %s, want %s", f, c.Name, ComponentName(c.Spec.Component, c.Spec.Version))
		}
		variant, err := SelectVariant(c, nodev1.HostFacts{OS: "debian", OSVersion: "12", Arch: "amd64"})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		r, err := Render(c, variant, v, func(a nodev1.Artifact) (agent.Artifact, error) {
			return agent.Artifact{Path: a.Path, URL: "http://registry/" + a.Source, Digest: "sha256:00", Mode: a.Mode}, nil
		})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, file := range r.Files {
			if strings.Contains(file.Path, "{{") {
				t.Errorf("%s: path %s not rendered", f, file.Path)
			}
		}
	}
}

func TestServingCSRProblem(t *testing.T) {
	m := &nodev1.Machine{ObjectMeta: metav1.ObjectMeta{Name: "w1", Namespace: "team-a"},
		Spec: nodev1.MachineSpec{Address: "10.202.0.11"}, Status: nodev1.MachineStatus{Facts: &nodev1.HostFacts{Hostname: "w1.lab"}}}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr := func(user, cn string, ips []string, dns ...string) *certificatesv1.CertificateSigningRequest {
		tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: []string{"system:nodes"}}, DNSNames: dns}
		for _, ip := range ips {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		if err != nil {
			t.Fatal(err)
		}
		return &certificatesv1.CertificateSigningRequest{Spec: certificatesv1.CertificateSigningRequestSpec{
			SignerName: certificatesv1.KubeletServingSignerName, Username: user,
			Request: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			Usages:  []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}}}
	}
	for _, tc := range []struct {
		name string
		csr  *certificatesv1.CertificateSigningRequest
		want string
	}{
		{"matches", csr("system:node:w1", "system:node:w1", []string{"10.202.0.11"}, "w1", "w1.lab"), ""},
		{"another node asks", csr("system:node:w2", "system:node:w1", []string{"10.202.0.11"}), "requested by system:node:w2"},
		{"another subject", csr("system:node:w1", "system:node:w2", []string{"10.202.0.11"}), "is not CN=system:node:w1"},
		{"an address not the Machine's", csr("system:node:w1", "system:node:w1", []string{"10.202.0.11", "10.0.0.9"}), "address 10.0.0.9 is not the Machine's"},
		{"a foreign name", csr("system:node:w1", "system:node:w1", []string{"10.202.0.11"}, "api.example.com"), "name api.example.com is not the node's"},
		{"no address", csr("system:node:w1", "system:node:w1", nil), "names no address"},
	} {
		if got := ServingCSRProblem(tc.csr, m); (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestAgentCSRProblem(t *testing.T) {
	m := &nodev1.Machine{ObjectMeta: metav1.ObjectMeta{Name: "w1", Namespace: "team-a"}, Spec: nodev1.MachineSpec{Address: "10.202.0.11"}}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr := func(user, cn string, org []string, signer string, ips ...string) *certificatesv1.CertificateSigningRequest {
		tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: org}}
		for _, ip := range ips {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		if err != nil {
			t.Fatal(err)
		}
		return &certificatesv1.CertificateSigningRequest{Spec: certificatesv1.CertificateSigningRequestSpec{
			SignerName: signer, Username: user,
			Request: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			Usages:  []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}}}
	}
	client := certificatesv1.KubeAPIServerClientSignerName
	agents := []string{agent.AgentGroup}
	for _, tc := range []struct {
		name string
		csr  *certificatesv1.CertificateSigningRequest
		want string
	}{
		{"matches", csr("system:node:w1", "kok:agent:w1", agents, client), ""},
		{"another node asks", csr("system:node:w2", "kok:agent:w1", agents, client), "requested by system:node:w2"},
		{"another agent's name", csr("system:node:w1", "kok:agent:w2", agents, client), "is not CN=kok:agent:w1"},
		{"an admin group", csr("system:node:w1", "kok:agent:w1", []string{"system:masters"}, client), "is not CN=kok:agent:w1, O=kok:agents"},
		{"another signer", csr("system:node:w1", "kok:agent:w1", agents, certificatesv1.KubeletServingSignerName), "is not kubernetes.io/kube-apiserver-client"},
		{"an address", csr("system:node:w1", "kok:agent:w1", agents, client, "10.202.0.11"), "names no address"},
	} {
		if got := AgentCSRProblem(tc.csr, m); (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestNeedsHost(t *testing.T) {
	now := time.Now()
	joined := &nodev1.Machine{Status: nodev1.MachineStatus{Facts: &nodev1.HostFacts{OS: "debian"}}}
	node := &corev1.Node{}
	fresh := heartbeat{report: &agent.Report{}, renewed: now.Add(-20 * time.Second)}
	deleting := joined.DeepCopy()
	deleting.DeletionTimestamp = &metav1.Time{Time: now}
	for _, tc := range []struct {
		name string
		m    *nodev1.Machine
		st   *state
		want bool
	}{
		{"joined, heartbeat fresh", joined, &state{node: node, heartbeat: fresh}, false},
		{"not joined", joined, &state{heartbeat: fresh}, true},
		{"heartbeat stopped", joined, &state{node: node, heartbeat: heartbeat{report: &agent.Report{}, renewed: now.Add(-2 * time.Minute)}}, true},
		{"no heartbeat yet", joined, &state{node: node}, true},
		{"facts never read", &nodev1.Machine{}, &state{node: node, heartbeat: fresh}, true},
		{"deleting", deleting, &state{node: node, heartbeat: fresh}, true},
	} {
		if got := needsHost(tc.m, tc.st, now); got != tc.want {
			t.Errorf("%s: needsHost = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestNodeMetadataCurrent(t *testing.T) {
	m := &nodev1.Machine{ObjectMeta: metav1.ObjectMeta{Name: "w1"}, Spec: nodev1.MachineSpec{
		NodeLabels: map[string]string{"tier": "web"},
		Taints:     []corev1.Taint{{Key: "dedicated", Value: "web", Effect: corev1.TaintEffectNoSchedule}}}}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"node.kok.dev/machine": "w1", "tier": "web", "other": "x"}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "dedicated", Value: "web", Effect: corev1.TaintEffectNoSchedule}}}}
	if !nodeMetadataCurrent(n, m) {
		t.Error("a node with every label and taint is current")
	}
	n.Labels["tier"] = "db"
	if nodeMetadataCurrent(n, m) {
		t.Error("a changed label is not current")
	}
	n.Labels["tier"] = "web"
	n.Spec.Taints = nil
	if nodeMetadataCurrent(n, m) {
		t.Error("a missing taint is not current")
	}
}

// TestRunningVersion: unpinned components follow the release the control
// plane runs, not the one it is asked to run: kubelets never lead.
func TestRunningVersion(t *testing.T) {
	kc := &clusterv1.KubeCluster{Spec: clusterv1.KubeClusterSpec{Version: "v1.34.4"}}
	if got := runningVersion(kc); got != "v1.34.4" {
		t.Errorf("a cluster not up yet: %s", got)
	}
	kc.Status.Version = "v1.33.13" // upgrading
	if got := runningVersion(kc); got != "v1.33.13" {
		t.Errorf("an upgrading cluster: %s", got)
	}
}

// TestPlanNodeRelease: Machines move to the control plane's release one at
// a time, in name order, each after the ones before it have run it, Ready,
// for NodeSettle.
func TestPlanNodeRelease(t *testing.T) {
	now := time.Now()
	const old, cur = "v1.33.13", "v1.34.4"
	// machine: at release, Ready or not, UpToDate since (zero: not).
	machine := func(name, release string, ready bool, since time.Duration) nodev1.Machine {
		m := nodev1.Machine{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"},
			Spec: nodev1.MachineSpec{ClusterName: "c", Components: []nodev1.ComponentRef{
				{Name: "containerd", Version: "1.6.20"}, {Name: "kubelet"}}}}
		if release != "" {
			m.Status.Components = []nodev1.ComponentStatus{{Name: "containerd", Version: "1.6.20"}, {Name: "kubelet", Version: release}}
		}
		cond := func(t string, ok bool, since time.Duration) metav1.Condition {
			c := metav1.Condition{Type: t, Status: metav1.ConditionFalse, LastTransitionTime: metav1.NewTime(now.Add(-since))}
			if ok {
				c.Status = metav1.ConditionTrue
			}
			return c
		}
		m.Status.Conditions = []metav1.Condition{cond(nodev1.MachineReady, ready, time.Hour), cond(nodev1.MachineUpToDate, since > 0, since)}
		return m
	}
	a, b, c := machine("a", old, true, time.Hour), machine("b", old, true, time.Hour), machine("c", old, true, time.Hour)
	all := []nodev1.Machine{a, b, c}
	check := func(what string, got NodeRelease, version, waitsFor string) {
		t.Helper()
		if got.Version != version || got.WaitsFor != waitsFor {
			t.Errorf("%s: %+v, want version %s waiting for %q", what, got, version, waitsFor)
		}
	}
	plan := func(m *nodev1.Machine) NodeRelease { return PlanNodeRelease(m, all, cur, now) }
	check("the first goes at once", plan(&all[0]), cur, "")
	check("the second waits for the first", plan(&all[1]), old, "a")
	if r := plan(&all[1]); r.Moving() || r.Current != old || r.Settles != 0 {
		t.Errorf("a waiting Machine is not moving: %+v", r)
	}
	all[0] = machine("a", cur, false, 0)
	check("… while it is not Ready", plan(&all[1]), old, "a")
	all[0] = machine("a", cur, true, 3*time.Second)
	check("… and until it has settled", plan(&all[1]), old, "a")
	if r := plan(&all[1]); r.Settles != NodeSettle-3*time.Second {
		t.Errorf("settles in %s, want %s", r.Settles, NodeSettle-3*time.Second)
	}
	all[0] = machine("a", cur, true, NodeSettle)
	check("then the second goes", plan(&all[1]), cur, "")
	check("the third waits for the second", plan(&all[2]), old, "b")
	if r := plan(&all[0]); r.Moving() {
		t.Errorf("a Machine at the release is not moving: %+v", r)
	}

	// Not waited for: a paused Machine, one being deleted, one that pins
	// every component, another cluster's.
	paused, deleting, pinned, other := machine("a1", old, false, 0), machine("a2", old, false, 0), machine("a3", old, false, 0), machine("a4", old, false, 0)
	paused.Spec.Paused = true
	deleting.DeletionTimestamp = &metav1.Time{Time: now}
	pinned.Spec.Components[1].Version = old
	other.Spec.ClusterName = "d"
	check("others are not waited for", PlanNodeRelease(&all[1], []nodev1.Machine{all[0], paused, deleting, pinned, other, all[1]}, cur, now), cur, "")
	// A new Machine installs the release at once.
	fresh := machine("z", "", false, 0)
	check("a new Machine", PlanNodeRelease(&fresh, all, cur, now), cur, "")
}
