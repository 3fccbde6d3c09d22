//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/cluster"
	"github.com/kubeonkube/kok/internal/pki"
)

// TestKubeClusterExposureRotationPause: an apiserver Service of type
// NodePort answers at a node address, certificates are rotated on request
// with every component rolled, a paused cluster is left alone until it is
// resumed, and a LoadBalancer's address joins the serving certificate.
func TestKubeClusterExposureRotationPause(t *testing.T) {
	cfg := sharedCluster(t)
	ctx := context.Background()
	c := metaClient(t, cfg)
	const name, nodePort = "edge", 30643
	n := cluster.Names{Cluster: name, Namespace: name}

	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil || len(nodes.Items) == 0 {
		t.Fatalf("meta nodes: %v", err)
	}
	nodeIP := ""
	for _, a := range nodes.Items[0].Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			nodeIP = a.Address
		}
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	})
	kc := &clusterv1.KubeCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: name}, Spec: clusterv1.KubeClusterSpec{
		Version: "v1.34.4",
		Network: clusterv1.NetworkSpec{APIServer: clusterv1.APIServerService{Type: corev1.ServiceTypeNodePort, NodePort: nodePort,
			CertSANs: []string{nodeIP}}},
	}}
	if err := c.Create(ctx, kc); err != nil {
		t.Fatal(err)
	}
	waitClusterReady(t, c, kc, 4*time.Minute)

	t.Run("NodePort: the apiserver answers at a node address", func(t *testing.T) {
		var svc corev1.Service
		if err := c.Get(ctx, client.ObjectKey{Namespace: name, Name: n.Service()}, &svc); err != nil {
			t.Fatal(err)
		}
		if svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Spec.Ports[0].NodePort != nodePort {
			t.Fatalf("Service %s type %s node port %d", svc.Name, svc.Spec.Type, svc.Spec.Ports[0].NodePort)
		}
		// As a user outside the meta cluster gets it.
		path := filepath.Join(t.TempDir(), "edge.kubeconfig")
		mustKok(t, shared.stateDir, "get", "kubeconfig", name, "-n", name, "-o", path,
			"--server", "https://"+net.JoinHostPort(nodeIP, fmt.Sprint(nodePort)))
		bc := clientset(t, path)
		eventually(t, time.Minute, "namespaces through the node port", func() error {
			_, err := bc.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
			return err
		})
	})

	leafSecrets := []string{n.APIServerSecret(), n.KubeletClientSecret(), n.FrontProxyClientSecret(), n.EtcdClientSecret()}
	certOf := func(secret, key string) *x509.Certificate {
		t.Helper()
		var s corev1.Secret
		if err := c.Get(ctx, client.ObjectKey{Namespace: name, Name: secret}, &s); err != nil {
			t.Fatal(err)
		}
		data := s.Data[key]
		if key == cluster.KeyKubeconfig {
			cfg, err := clientcmd.Load(data)
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range cfg.AuthInfos {
				data = u.ClientCertificateData
			}
		}
		block, _ := pem.Decode(data)
		if block == nil {
			t.Fatalf("%s/%s holds no certificate", secret, key)
		}
		crt, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return crt
	}

	t.Run("certificates are rotated on request, every component rolled", func(t *testing.T) {
		settled(t, c, name, name)
		ca := certOf(n.CASecret(), pki.KeyCert)
		before := map[string]string{}
		for _, s := range leafSecrets {
			before[s] = certOf(s, pki.KeyCert).SerialNumber.String()
		}
		for _, s := range []string{n.AdminKubeconfig(), n.ControllerManagerKubeconfig(), n.SchedulerKubeconfig()} {
			before[s] = certOf(s, cluster.KeyKubeconfig).SerialNumber.String()
		}
		pods := controlPlanePods(t, c, name, name)
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"e2e-1"}}}`, cluster.AnnRotate)
		if err := c.Patch(ctx, kc, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, "every leaf Secret reissued for e2e-1", func() error {
			for s := range before {
				var sec corev1.Secret
				if err := c.Get(ctx, client.ObjectKey{Namespace: name, Name: s}, &sec); err != nil {
					return err
				}
				if sec.Annotations[cluster.AnnIssuedFor] != "e2e-1" {
					return fmt.Errorf("%s issued for %q", s, sec.Annotations[cluster.AnnIssuedFor])
				}
			}
			return nil
		})
		for s, serial := range before {
			key := pki.KeyCert
			if !slices.Contains(leafSecrets, s) {
				key = cluster.KeyKubeconfig
			}
			if certOf(s, key).SerialNumber.String() == serial {
				t.Errorf("%s was not reissued", s)
			}
		}
		if certOf(n.CASecret(), pki.KeyCert).SerialNumber.Cmp(ca.SerialNumber) != 0 {
			t.Fatal("the cluster CA changed: rotation reissues leaves only")
		}
		waitClusterReady(t, c, kc, 3*time.Minute)
		settled(t, c, name, name)
		for pod, uid := range controlPlanePods(t, c, name, name) {
			if pods[pod] == uid {
				t.Errorf("pod %s kept running through the rotation", pod)
			}
		}
		// The apiserver serves the new certificate.
		served := certOf(n.APIServerSecret(), pki.KeyCert)
		eventually(t, time.Minute, "the new serving certificate is served", func() error {
			conn, err := tlsDial(fmt.Sprintf("%s:%d", nodeIP, nodePort))
			if err != nil {
				return err
			}
			if got := conn.SerialNumber.String(); got != served.SerialNumber.String() {
				return fmt.Errorf("served serial %s, want %s", got, served.SerialNumber)
			}
			return nil
		})
		if _, err := businessClient(t, shared.stateDir, name).CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
			t.Fatalf("the new admin kubeconfig: %v", err)
		}
	})

	t.Run("a paused cluster is left alone until it is resumed", func(t *testing.T) {
		if err := c.Patch(ctx, kc, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"paused":true}}`))); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, "phase Paused", func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(kc), kc); err != nil {
				return err
			}
			if kc.Status.Phase != clusterv1.PhasePaused {
				return fmt.Errorf("phase %s", kc.Status.Phase)
			}
			return nil
		})
		sched := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: n.Deployment(cluster.Scheduler)}}
		if err := c.Delete(ctx, sched); err != nil {
			t.Fatal(err)
		}
		consistently(t, 10*time.Second, "a paused cluster is left alone", func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(sched), sched); !apierrors.IsNotFound(err) {
				return fmt.Errorf("the scheduler Deployment of a paused cluster was put back (%v)", err)
			}
			return nil
		})
		if err := c.Patch(ctx, kc, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"paused":false}}`))); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, "scheduler put back once resumed", func() error { return c.Get(ctx, client.ObjectKeyFromObject(sched), sched) })
		waitClusterReady(t, c, kc, 3*time.Minute)
	})

	t.Run("LoadBalancer: the balancer's address joins the serving certificate", func(t *testing.T) {
		patch := `{"spec":{"network":{"apiServer":{"type":"LoadBalancer","nodePort":null}}}}`
		if err := c.Patch(ctx, kc, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Fatal(err)
		}
		var svc corev1.Service
		eventually(t, time.Minute, "Service of type LoadBalancer", func() error {
			if err := c.Get(ctx, client.ObjectKey{Namespace: name, Name: n.Service()}, &svc); err != nil {
				return err
			}
			if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
				return fmt.Errorf("type %s", svc.Spec.Type)
			}
			return nil
		})
		// The local meta cluster has no load-balancer controller: play one
		// and publish an address (inside the guarded range).
		const lbIP = "10.200.0.250"
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: lbIP}}
		if err := c.Status().Update(ctx, &svc); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, "serving certificate covers "+lbIP, func() error {
			crt := certOf(n.APIServerSecret(), pki.KeyCert)
			for _, ip := range crt.IPAddresses {
				if ip.String() == lbIP {
					return nil
				}
			}
			return fmt.Errorf("SANs %v", crt.IPAddresses)
		})
		waitClusterReady(t, c, kc, 3*time.Minute)
	})

	mustKok(t, shared.stateDir, "delete", "cluster", name, "-n", name)
}

// tlsDial returns the certificate a TLS server at addr presents.
func tlsDial(addr string) (*x509.Certificate, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only reads the served certificate
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}
