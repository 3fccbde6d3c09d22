package etcd

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kubeonkube/kok/internal/pki"
)

// Client is the part of an etcd client the operators use; a
// *clientv3.Client is one, and tests put a fake in its place.
type Client interface {
	clientv3.Cluster
	clientv3.KV
	clientv3.Maintenance
	clientv3.Auth
	Close() error
}

// Dialer opens a Client to endpoints with mutual TLS.
type Dialer func(endpoints []string, tlsCfg *tls.Config) (Client, error)

// Dial is the Dialer of a real etcd.
func Dial(endpoints []string, tlsCfg *tls.Config) (Client, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, DialTimeout: etcdTimeout, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("connecting to %v: %w", endpoints, err)
	}
	return cli, nil
}

// ClientTLS builds an mTLS client config from a client certificate
// Secret's data (tls.crt, tls.key, ca.crt).
func ClientTLS(d pki.SecretData) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(d[pki.KeyCert], d[pki.KeyKey])
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(d[pki.KeyCA]) {
		return nil, fmt.Errorf("client certificate: no CA in %s", pki.KeyCA)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
