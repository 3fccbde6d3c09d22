// Package pki issues the certificate authorities, serving and client
// certificates kok's clusters need. Keys are ECDSA P-256. CAs come from
// k8s.io/client-go/util/cert; leaf certificates are signed here with
// crypto/x509 because client-go offers no CA-signing helper.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"slices"
	"time"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

// DefaultLeafValidity is how long issued leaf certificates are valid.
const DefaultLeafValidity = 365 * 24 * time.Hour

// KeyPair is a certificate with its private key.
type KeyPair struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// CertSpec describes a leaf certificate.
type CertSpec struct {
	CommonName   string
	Organization []string
	DNSNames     []string
	IPs          []net.IP
	// Server and Client select the extended key usages.
	Server, Client bool
	// Validity defaults to DefaultLeafValidity.
	Validity time.Duration
}

// NewKey makes a fresh ECDSA P-256 key.
func NewKey() (crypto.Signer, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// NewCA makes a self-signed certificate authority (valid ten years).
func NewCA(commonName string) (*KeyPair, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	cert, err := certutil.NewSelfSignedCACert(certutil.Config{CommonName: commonName}, key)
	if err != nil {
		return nil, fmt.Errorf("creating CA %q: %w", commonName, err)
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

// Issue signs a new leaf certificate with ca.
func (ca *KeyPair) Issue(spec CertSpec) (*KeyPair, error) {
	if spec.CommonName == "" {
		return nil, errors.New("certificate needs a common name")
	}
	if !spec.Server && !spec.Client {
		return nil, fmt.Errorf("certificate %q needs server or client usage", spec.CommonName)
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).SetInt64(math.MaxInt64))
	if err != nil {
		return nil, err
	}
	validity := spec.Validity
	if validity == 0 {
		validity = DefaultLeafValidity
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: spec.CommonName, Organization: spec.Organization},
		DNSNames:     spec.DNSNames,
		IPAddresses:  spec.IPs,
		NotBefore:    now.Add(-5 * time.Minute).UTC(),
		NotAfter:     now.Add(validity).UTC(),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	if spec.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if spec.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signing %q: %w", spec.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

// CertPEM encodes the certificate.
func (kp *KeyPair) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: certutil.CertificateBlockType, Bytes: kp.Cert.Raw})
}

// KeyPEM encodes the private key.
func (kp *KeyPair) KeyPEM() ([]byte, error) {
	return keyutil.MarshalPrivateKeyToPEM(kp.Key)
}

// ParseKeyPair decodes a PEM certificate and key.
func ParseKeyPair(certPEM, keyPEM []byte) (*KeyPair, error) {
	certs, err := certutil.ParseCertsPEM(certPEM)
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	signer, err := ParseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Cert: certs[0], Key: signer}, nil
}

// ParseKey decodes a PEM private key.
func ParseKey(keyPEM []byte) (crypto.Signer, error) {
	key, err := keyutil.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("private key cannot sign")
	}
	return signer, nil
}

// RenewFraction is kok's one renewal rule: a leaf certificate with less
// than this share of its life left is reissued.
const RenewFraction = 0.2

// NeedsRenewal reports whether cert has less than fraction of its lifetime
// left at now, or is not yet valid.
func NeedsRenewal(cert *x509.Certificate, fraction float64, now time.Time) bool {
	if now.Before(cert.NotBefore) {
		return true
	}
	life := cert.NotAfter.Sub(cert.NotBefore)
	left := cert.NotAfter.Sub(now)
	return float64(left) < fraction*float64(life)
}

// Keep is kok's one leaf policy: an existing certificate is kept when ca
// signed it, it is far from expiry (RenewFraction), it covers every name
// and address of spec and says what spec says (subject and usages).
// Anything else is reissued: a renamed identity, a new SAN, a new CA.
func Keep(cert *x509.Certificate, ca *x509.Certificate, spec CertSpec, now time.Time) bool {
	return cert != nil && ca != nil && cert.CheckSignatureFrom(ca) == nil &&
		!NeedsRenewal(cert, RenewFraction, now) &&
		Covers(cert, spec.DNSNames, spec.IPs) && SameIdentity(cert, spec)
}

// SameIdentity reports whether cert has spec's subject and key usages.
func SameIdentity(cert *x509.Certificate, spec CertSpec) bool {
	if cert.Subject.CommonName != spec.CommonName || !slices.Equal(cert.Subject.Organization, spec.Organization) {
		return false
	}
	return slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) == spec.Server &&
		slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) == spec.Client
}

// Keys of a certificate Secret (the kubernetes.io/tls layout plus the CA).
const (
	KeyCert = "tls.crt"
	KeyKey  = "tls.key"
	KeyCA   = "ca.crt"
)

// SecretData is the content of one Secret, by key.
type SecretData map[string][]byte

// SecretData encodes kp as tls.crt/tls.key with caPEM as ca.crt.
func (kp *KeyPair) SecretData(caPEM []byte) (SecretData, error) {
	key, err := kp.KeyPEM()
	if err != nil {
		return nil, err
	}
	return SecretData{KeyCert: kp.CertPEM(), KeyKey: key, KeyCA: caPEM}, nil
}

// LeafSecret returns cur when it holds a certificate Keep allows for spec
// and caPEM as its trust bundle; otherwise a new certificate ca signs for
// spec, with caPEM as ca.crt. issued reports a new one.
func (ca *KeyPair) LeafSecret(cur SecretData, caPEM []byte, spec CertSpec, now time.Time) (data SecretData, issued bool, err error) {
	if bytes.Equal(cur[KeyCA], caPEM) {
		if kp, err := FromSecret(cur); err == nil && Keep(kp.Cert, ca.Cert, spec, now) {
			return cur, false, nil
		}
	}
	kp, err := ca.Issue(spec)
	if err != nil {
		return nil, false, err
	}
	data, err = kp.SecretData(caPEM)
	return data, err == nil, err
}

// FromSecret decodes tls.crt/tls.key of a certificate Secret.
func FromSecret(d SecretData) (*KeyPair, error) { return ParseKeyPair(d[KeyCert], d[KeyKey]) }

// Covers reports whether cert is valid for every DNS name and IP given.
func Covers(cert *x509.Certificate, dnsNames []string, ips []net.IP) bool {
	for _, n := range dnsNames {
		if cert.VerifyHostname(n) != nil {
			return false
		}
	}
	for _, ip := range ips {
		if cert.VerifyHostname(ip.String()) != nil {
			return false
		}
	}
	return true
}

// PublicKeyPEM encodes the public half of key (for service-account keys).
func PublicKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
