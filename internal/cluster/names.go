// Package cluster is the cluster operator: it runs a business cluster's
// control plane (kube-apiserver, kube-controller-manager, kube-scheduler)
// as Deployments in the meta cluster, with its PKI and kubeconfigs in
// Secrets and its state in an EtcdCluster.
package cluster

import (
	"fmt"

	"github.com/kubeonkube/kok/internal/kube"
)

// Components of a control plane, in upgrade order.
const (
	APIServer         = "kube-apiserver"
	ControllerManager = "kube-controller-manager"
	Scheduler         = "kube-scheduler"
)

// Labels and annotations on what the operator owns.
const (
	// AnnVersion is the Kubernetes version a Deployment renders.
	AnnVersion = "cluster.kok.dev/version"
	// AnnConfigHash, on a pod template, is the hash of the Secrets the
	// component mounts: new certificates roll the pods, nothing else does.
	AnnConfigHash = "cluster.kok.dev/config-hash"
	// AnnRotate on a KubeCluster asks for every leaf certificate and
	// kubeconfig to be reissued when its value changes.
	AnnRotate = "cluster.kok.dev/rotate-certificates"
	// AnnIssuedFor records, on each leaf Secret, the rotation request it
	// was issued for.
	AnnIssuedFor = "cluster.kok.dev/issued-for-rotation"
	// AnnInputs, on a Deployment, is the hash of what its pod template was
	// rendered from (spec, catalog entry, Secrets, addresses) and AnnTemplate
	// the template as rendered then. While the inputs stay the same the
	// reconciler applies that template again, so a kok-manager whose
	// rendering changed does not roll running control planes; its rendering
	// reaches a cluster with the cluster's next real change.
	AnnInputs   = "cluster.kok.dev/inputs"
	AnnTemplate = "cluster.kok.dev/pod-template"
	// Finalizer tears the control plane down in order.
	Finalizer = "cluster.kok.dev/teardown"
)

// Names of the objects that make up a cluster.
type Names struct{ Cluster, Namespace string }

// Deployment of a component.
func (n Names) Deployment(component string) string { return n.Cluster + "-" + component }

// Service exposes the apiserver.
func (n Names) Service() string { return n.Cluster + "-apiserver" }

// ManagedEtcd names the dedicated EtcdCluster.
func (n Names) ManagedEtcd() string { return n.Cluster + "-etcd" }

// Secret names.
func (n Names) CASecret() string               { return n.Cluster + "-ca" }
func (n Names) FrontProxyCASecret() string     { return n.Cluster + "-front-proxy-ca" }
func (n Names) ServiceAccountSecret() string   { return n.Cluster + "-sa" }
func (n Names) APIServerSecret() string        { return n.Cluster + "-apiserver-tls" }
func (n Names) KubeletClientSecret() string    { return n.Cluster + "-apiserver-kubelet-client" }
func (n Names) EtcdClientSecret() string       { return n.Cluster + "-apiserver-etcd-client" }
func (n Names) FrontProxyClientSecret() string { return n.Cluster + "-front-proxy-client" }
func (n Names) ControllerManagerKubeconfig() string {
	return n.Cluster + "-controller-manager-kubeconfig"
}
func (n Names) SchedulerKubeconfig() string { return n.Cluster + "-scheduler-kubeconfig" }
func (n Names) AdminKubeconfig() string     { return n.Cluster + "-admin-kubeconfig" }

// KonnectivityServerSecret is the certificate the proxy servers show the
// agents; KonnectivityKubeconfig what they review the agents' tokens with.
func (n Names) KonnectivityServerSecret() string { return n.Cluster + "-konnectivity-server-tls" }
func (n Names) KonnectivityKubeconfig() string {
	return n.Cluster + "-konnectivity-server-kubeconfig"
}

// EgressSelectorConfigMap holds the apiservers' egress selector
// configuration (cluster traffic through konnectivity).
func (n Names) EgressSelectorConfigMap() string { return n.Cluster + "-egress-selector" }

// ServiceHost is the apiserver Service's DNS name inside the meta cluster.
func (n Names) ServiceHost() string { return fmt.Sprintf("%s.%s.svc", n.Service(), n.Namespace) }

// Labels of a component's objects.
func (n Names) Labels(component string) map[string]string {
	l := n.Selector(component)
	l[kube.LabelManagedBy] = kube.ManagedBy
	return l
}

// Selector selects a component's pods.
func (n Names) Selector(component string) map[string]string {
	return map[string]string{kube.LabelName: component, kube.LabelInstance: n.Cluster}
}

// ServiceSelector selects the apiserver pods behind the Service.
func (n Names) ServiceSelector() map[string]string { return n.Selector(APIServer) }

// components of a control plane, in upgrade order.
var components = []string{APIServer, ControllerManager, Scheduler}
