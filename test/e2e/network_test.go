//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/utils/ptr"

	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/local/versions"
)

// webApp is agnhost netexec (Kubernetes' own test server, built by kok
// and pulled from kok's registry) on every node: one pod per node, behind
// a ClusterIP and a NodePort Service.
type webApp struct {
	ns       string
	nodes    []string
	pods     map[string]corev1.Pod // by node
	nodePort int32
}

// deployWeb runs the web app on nodes and waits until a pod runs on each.
func deployWeb(t *testing.T, bc kubernetes.Interface, ns string, nodes []string) *webApp {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app": "web"}
	if _, err := bc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(len(nodes))),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					// One per node.
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
							LabelSelector: &metav1.LabelSelector{MatchLabels: labels}, TopologyKey: corev1.LabelHostname}}}},
					Containers: []corev1.Container{{
						Name: "netexec", Image: local.AgnhostImage(versions.DefaultKubernetes()),
						Args:           []string{"netexec", "--http-port=8080"},
						Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
					}},
				},
			},
		},
	}
	if _, err := bc.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	port := []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}
	for _, svc := range []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: corev1.ServiceSpec{Selector: labels, Ports: port}},
		{ObjectMeta: metav1.ObjectMeta{Name: "web-nodeport", Namespace: ns}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: labels, Ports: port}},
	} {
		if _, err := bc.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	w := &webApp{ns: ns, nodes: nodes}
	eventually(t, 3*time.Minute, "a ready web pod on each node", func() error {
		pods, err := bc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return err
		}
		w.pods = map[string]corev1.Pod{}
		for _, p := range pods.Items {
			if podReady(&p) && p.Status.PodIP != "" {
				w.pods[p.Spec.NodeName] = p
			}
		}
		if len(w.pods) != len(nodes) {
			return fmt.Errorf("ready on %d of %d nodes: %s", len(w.pods), len(nodes), describePods(pods.Items))
		}
		return nil
	})
	np, err := bc.CoreV1().Services(ns).Get(ctx, "web-nodeport", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.nodePort = np.Spec.Ports[0].NodePort
	return w
}

func describePods(pods []corev1.Pod) string {
	var s []string
	for _, p := range pods {
		why := string(p.Status.Phase)
		for _, c := range p.Status.ContainerStatuses {
			if c.State.Waiting != nil {
				why += " " + c.State.Waiting.Reason + ": " + c.State.Waiting.Message
			}
		}
		for _, c := range p.Status.Conditions {
			if c.Status != corev1.ConditionTrue && c.Message != "" {
				why += " " + c.Message
			}
		}
		s = append(s, p.Name+"@"+p.Spec.NodeName+" "+why)
	}
	return strings.Join(s, "; ")
}

// get asks a netexec server at addr (host:port) for path, on a new
// connection each time (a kept-alive one would always reach the same pod).
func get(addr, path string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s %s", path, resp.Status, body)
	}
	return strings.TrimSpace(string(body)), err
}

// dial has the netexec pod behind addr call host:port over HTTP (tries
// times) and returns the pod names that answered: the conformance tests'
// way of checking traffic between pods.
func dial(addr, host string, port, tries int) (map[string]bool, error) {
	q := url.Values{"request": {"hostname"}, "protocol": {"http"}, "host": {host}, "port": {fmt.Sprint(port)}, "tries": {fmt.Sprint(tries)}}
	body, err := get(addr, "/dial?"+q.Encode())
	if err != nil {
		return nil, err
	}
	var r struct {
		Responses []string `json:"responses"`
		Errors    []string `json:"errors"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return nil, fmt.Errorf("%s: %w", body, err)
	}
	got := map[string]bool{}
	for _, name := range r.Responses {
		got[name] = true
	}
	if len(got) == 0 {
		return nil, fmt.Errorf("no answer from %s:%d: %v", host, port, r.Errors)
	}
	return got, nil
}

// execIn runs cmd in pod's first container through the business
// apiserver and the pod's kubelet.
func execIn(cfg *rest.Config, bc kubernetes.Interface, pod corev1.Pod, cmd ...string) (string, error) {
	req := bc.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: pod.Spec.Containers[0].Name, Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(cfg, http.MethodPost, req.URL())
	if err != nil {
		return "", err
	}
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	if err != nil {
		return out.String(), fmt.Errorf("%v: %w: %s", cmd, err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// checkPodNetwork shows the pod network, Services and DNS of a business
// cluster whose nodes are at addresses (node name → host address).
func checkPodNetwork(t *testing.T, bc kubernetes.Interface, cfg *rest.Config, w *webApp, addresses map[string]string) {
	t.Helper()
	all := map[string]bool{}
	for _, p := range w.pods {
		all[p.Name] = true
	}
	var entry string
	for node, addr := range addresses {
		entry = net.JoinHostPort(addr, fmt.Sprint(w.nodePort))
		// The NodePort of every node reaches every pod, wherever it runs.
		seen := map[string]bool{}
		eventually(t, time.Minute, "the NodePort of "+node+" reaching every pod", func() error {
			name, err := get(entry, "/hostname")
			if err != nil {
				return err
			}
			seen[name] = true
			if len(seen) < len(all) {
				return fmt.Errorf("answered by %v of %v", seen, all)
			}
			return nil
		})
	}
	// Pod to pod across nodes, by address: each pod connects to every
	// other (agnhost connect, run with exec through the kubelet).
	for node, from := range w.pods {
		for other, to := range w.pods {
			if other == node {
				continue
			}
			target := net.JoinHostPort(to.Status.PodIP, "8080")
			eventually(t, 30*time.Second, fmt.Sprintf("the pod on %s connecting to the pod on %s", node, other), func() error {
				_, err := execIn(cfg, bc, from, "/agnhost", "connect", "--timeout=3s", target)
				return err
			})
		}
	}
	// The kubernetes Service, which kok points at the apiserver as nodes
	// reach it, by name from a pod.
	eventually(t, 30*time.Second, "the kubernetes Service from a pod", func() error {
		_, err := execIn(cfg, bc, w.pods[w.nodes[0]], "/agnhost", "connect", "--timeout=3s", "kubernetes.default.svc.cluster.local:443")
		return err
	})
	// A Service by its DNS name, from a pod: CoreDNS answers and
	// kube-proxy spreads the calls over the pods of every node.
	name := "web." + w.ns + ".svc.cluster.local"
	eventually(t, time.Minute, "the web Service by name from a pod", func() error {
		got, err := dial(entry, name, 80, 20)
		if err == nil && len(got) < len(all) {
			err = fmt.Errorf("answered by %v of %v", got, all)
		}
		return err
	})
}
