//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/local/hosts"
	"github.com/kubeonkube/kok/internal/local/versions"
)

// blockMetaToNodes makes the meta cluster unable to open connections to the
// hosts, as at a site where the meta cluster has no route to the nodes:
// TCP connections from meta pods (the apiservers among them) to the hosts'
// subnet are dropped before routing, all but SSH (port 22), which the
// machine operator (a meta pod) uses on day 0. Replies to connections the
// hosts open (the konnectivity agents') still pass. The rule goes when the
// test ends.
func blockMetaToNodes(t *testing.T, cfg *local.Config) {
	t.Helper()
	rule := []string{"PREROUTING", "-s", cfg.NodeSubnet, "-d", hosts.Subnet, "-p", "tcp", "--syn", "!", "--dport", "22",
		"-m", "comment", "--comment", "kok-e2e: meta cannot reach nodes", "-j", "DROP"}
	run := func(op string) error {
		out, err := exec.Command("iptables", append([]string{"-w", "-t", "raw", op}, rule...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("iptables %s: %w: %s", op, err, out)
		}
		return nil
	}
	if err := run("-I"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := run("-D"); err != nil {
			t.Error(err)
		}
	})
}

// metaConnect runs agnhost connect in a pod of the meta cluster (where the
// apiservers run) to target and reports whether it connected.
func metaConnect(t *testing.T, mc kubernetes.Interface, name, target string) error {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "connect",
			Image: local.AgnhostImage(versions.DefaultKubernetes()), Args: []string{"connect", "--timeout=3s", target}}}}}
	if _, err := mc.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = mc.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{}) }()
	var phase corev1.PodPhase
	eventually(t, time.Minute, "meta pod "+name+" done", func() error {
		p, err := mc.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if phase = p.Status.Phase; phase != corev1.PodSucceeded && phase != corev1.PodFailed {
			return fmt.Errorf("phase %s", phase)
		}
		return nil
	})
	if phase == corev1.PodSucceeded {
		return nil
	}
	logs, _ := mc.CoreV1().Pods("default").GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
	return fmt.Errorf("%s from the meta cluster: %s", target, strings.TrimSpace(string(logs)))
}

// portForwardGet forwards a local port to port of pod through the business
// apiserver (kubectl port-forward) and GETs path over it.
func portForwardGet(cfg *rest.Config, bc kubernetes.Interface, pod corev1.Pod, port int, path string) (string, error) {
	rt, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return "", err
	}
	req := bc.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward")
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, req.URL())
	stop, ready := make(chan struct{}), make(chan struct{})
	defer close(stop)
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return "", err
	}
	errc := make(chan error, 1)
	go func() { errc <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errc:
		return "", fmt.Errorf("port-forward: %w", err)
	case <-time.After(30 * time.Second):
		return "", fmt.Errorf("port-forward not ready after 30s")
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		return "", fmt.Errorf("port-forward ports %v: %v", ports, err)
	}
	return get(fmt.Sprintf("127.0.0.1:%d", ports[0].Local), path)
}

// checkKonnectivity shows kubectl logs, exec and port-forward and the
// metrics API working through konnectivity while the meta cluster cannot
// reach the nodes, on the web app's pods.
func checkKonnectivity(t *testing.T, cfg *local.Config, c client.Client, cluster string, bc kubernetes.Interface, rc *rest.Config, w *webApp, addresses map[string]string) {
	t.Helper()
	ctx := context.Background()
	mc := clientset(t, cfg.Kubeconfig())
	eventually(t, 2*time.Minute, "KonnectivityReady", func() error {
		kc := &clusterv1.KubeCluster{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: cluster, Name: cluster}, kc); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(kc.Status.Conditions, clusterv1.ConditionKonnectivityReady)
		if cond == nil || cond.Status != metav1.ConditionTrue {
			return fmt.Errorf("%+v", cond)
		}
		t.Logf("KonnectivityReady: %s", cond.Message)
		return nil
	})
	// The kubelet of a node answers a meta pod before the block, and not
	// after it: without konnectivity the apiservers could not reach it.
	kubelet := addresses[w.nodes[0]] + ":10250"
	if err := metaConnect(t, mc, "reach-kubelet-before", kubelet); err != nil {
		t.Fatalf("before the block: %v", err)
	}
	blockMetaToNodes(t, cfg)
	if err := metaConnect(t, mc, "reach-kubelet-blocked", kubelet); err == nil {
		t.Fatalf("the meta cluster still reaches %s", kubelet)
	} else {
		t.Logf("blocked: %v", err)
	}

	for _, node := range w.nodes {
		pod := w.pods[node]
		eventually(t, 30*time.Second, "kubectl logs of the pod on "+node, func() error {
			_, err := bc.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
			return err
		})
		eventually(t, 30*time.Second, "kubectl exec in the pod on "+node, func() error {
			_, err := execIn(rc, bc, pod, "/agnhost", "connect", "--timeout=3s", "kubernetes.default.svc.cluster.local:443")
			return err
		})
		eventually(t, 30*time.Second, "kubectl port-forward to the pod on "+node, func() error {
			name, err := portForwardGet(rc, bc, pod, 8080, "/hostname")
			if err == nil && name != pod.Name {
				err = fmt.Errorf("answered by %s, want %s", name, pod.Name)
			}
			return err
		})
	}
	// Aggregated APIs ride the tunnels too: metrics-server runs in the pod
	// network, which the meta cluster never routes to.
	eventually(t, time.Minute, "node metrics through konnectivity", func() error {
		_, err := bc.CoreV1().RESTClient().Get().AbsPath("/apis/metrics.k8s.io/v1beta1/nodes").DoRaw(ctx)
		return err
	})
}
