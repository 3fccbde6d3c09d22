package cluster

import (
	"context"
	"fmt"
	"net"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	discoveryv1ac "k8s.io/client-go/applyconfigurations/discovery/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubeonkube/kok/internal/kube"
)

// bootstrapBindings let nodes join with bootstrap tokens: bootstrappers may
// request client certificates, which are approved automatically, and nodes
// may renew theirs.
var bootstrapBindings = []struct{ name, role, group string }{
	{"kok:kubelet-bootstrap", "system:node-bootstrapper", "system:bootstrappers"},
	{"kok:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", "system:bootstrappers"},
	{"kok:node-autoapprove-certificate-rotation", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "system:nodes"},
}

// EnsureBootstrapObjects keeps, inside the business cluster, what joining
// nodes need: the bindings above, the public cluster-info ConfigMap
// (server and CA) that the bootstrap signer signs for token holders, and
// the endpoints of the kubernetes Service.
func EnsureBootstrapObjects(ctx context.Context, cs kubernetes.Interface, server string, caPEM []byte) error {
	opts := kube.ApplyOptions()
	if err := applyKubernetesEndpoints(ctx, cs, server); err != nil {
		return err
	}
	for _, b := range bootstrapBindings {
		crb := rbacv1ac.ClusterRoleBinding(b.name).
			WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("ClusterRole").WithName(b.role)).
			WithSubjects(rbacv1ac.Subject().WithAPIGroup("rbac.authorization.k8s.io").WithKind("Group").WithName(b.group))
		if _, err := cs.RbacV1().ClusterRoleBindings().Apply(ctx, crb, opts); err != nil {
			return fmt.Errorf("binding %s: %w", b.name, err)
		}
	}
	info := clientcmdapi.NewConfig()
	info.Clusters[""] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	data, err := clientcmd.Write(*info)
	if err != nil {
		return err
	}
	cm := corev1ac.ConfigMap("cluster-info", metav1.NamespacePublic).WithData(map[string]string{"kubeconfig": string(data)})
	if _, err := cs.CoreV1().ConfigMaps(metav1.NamespacePublic).Apply(ctx, cm, opts); err != nil {
		return fmt.Errorf("cluster-info: %w", err)
	}
	role := rbacv1ac.Role("kok:bootstrap-signer-clusterinfo", metav1.NamespacePublic).WithRules(
		rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("configmaps").WithResourceNames("cluster-info").WithVerbs("get"))
	if _, err := cs.RbacV1().Roles(metav1.NamespacePublic).Apply(ctx, role, opts); err != nil {
		return fmt.Errorf("cluster-info role: %w", err)
	}
	rb := rbacv1ac.RoleBinding("kok:bootstrap-signer-clusterinfo", metav1.NamespacePublic).
		WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("Role").WithName("kok:bootstrap-signer-clusterinfo")).
		WithSubjects(rbacv1ac.Subject().WithAPIGroup("rbac.authorization.k8s.io").WithKind("User").WithName("system:anonymous"))
	if _, err := cs.RbacV1().RoleBindings(metav1.NamespacePublic).Apply(ctx, rb, opts); err != nil {
		return fmt.Errorf("cluster-info binding: %w", err)
	}
	return nil
}

// applyKubernetesEndpoints points the default/kubernetes Service at server,
// the apiserver as nodes reach it. The apiservers run in the meta cluster
// with --endpoint-reconciler-type=none (their pod addresses mean nothing to
// nodes), so kok writes what they would: the Endpoints (not mirrored) and
// the EndpointSlice kube-proxy and CoreDNS read.
func applyKubernetesEndpoints(ctx context.Context, cs kubernetes.Interface, server string) error {
	host, port, err := kube.ServerHostPort(server)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return fmt.Errorf("the apiserver endpoint %q is not an IP address: the kubernetes Service's endpoints need one", server)
	}
	const name, portName = "kubernetes", "https"
	opts := kube.ApplyOptions()
	ep := corev1ac.Endpoints(name, metav1.NamespaceDefault).
		WithLabels(map[string]string{discoveryv1.LabelSkipMirror: "true"}).
		WithSubsets(corev1ac.EndpointSubset().
			WithAddresses(corev1ac.EndpointAddress().WithIP(ip.String())).
			WithPorts(corev1ac.EndpointPort().WithName(portName).WithPort(int32(port)).WithProtocol(corev1.ProtocolTCP)))
	if _, err := cs.CoreV1().Endpoints(metav1.NamespaceDefault).Apply(ctx, ep, opts); err != nil {
		return fmt.Errorf("the kubernetes Service's Endpoints: %w", err)
	}
	family := discoveryv1.AddressTypeIPv4
	if ip.To4() == nil {
		family = discoveryv1.AddressTypeIPv6
	}
	slice := discoveryv1ac.EndpointSlice(name, metav1.NamespaceDefault).
		WithLabels(map[string]string{discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "cluster.kok.dev"}).
		WithAddressType(family).
		WithEndpoints(discoveryv1ac.Endpoint().WithAddresses(ip.String()).
			WithConditions(discoveryv1ac.EndpointConditions().WithReady(true))).
		WithPorts(discoveryv1ac.EndpointPort().WithName(portName).WithPort(int32(port)).WithProtocol(corev1.ProtocolTCP))
	if _, err := cs.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).Apply(ctx, slice, opts); err != nil {
		return fmt.Errorf("the kubernetes Service's EndpointSlice: %w", err)
	}
	return nil
}
