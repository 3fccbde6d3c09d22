// Package kubeconfig writes client configurations with embedded credentials.
package kubeconfig

import (
	clientcmd "k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Spec is one cluster + user + context.
type Spec struct {
	// ClusterName names the cluster and the context.
	ClusterName string
	// UserName names the credentials.
	UserName string
	// Server is the apiserver URL.
	Server string
	// CA, ClientCert and ClientKey are PEM encoded.
	CA, ClientCert, ClientKey []byte
	// TLSServerName, when set, is the name checked against the serving cert.
	TLSServerName string
}

// Build returns a kubeconfig holding one context for spec.
func Build(spec Spec) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[spec.ClusterName] = &clientcmdapi.Cluster{
		Server:                   spec.Server,
		CertificateAuthorityData: spec.CA,
		TLSServerName:            spec.TLSServerName,
	}
	cfg.AuthInfos[spec.UserName] = &clientcmdapi.AuthInfo{
		ClientCertificateData: spec.ClientCert,
		ClientKeyData:         spec.ClientKey,
	}
	cfg.Contexts[spec.ClusterName] = &clientcmdapi.Context{Cluster: spec.ClusterName, AuthInfo: spec.UserName}
	cfg.CurrentContext = spec.ClusterName
	return clientcmd.Write(*cfg)
}
