// Package webhook holds kok's admission checks that CRD validation cannot
// express (they read other objects), and the serving certificate they need.
package webhook

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	certutil "k8s.io/client-go/util/cert"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/pki"
)

// Names of the installed webhook objects (config/webhook).
const (
	ServiceName = "kok-webhook"
	SecretName  = "kok-webhook-tls"
	ConfigName  = "kok-validating"
	// KubeClusterPath serves KubeCluster validation.
	KubeClusterPath = "/validate-cluster-kok-dev-v1alpha1-kubecluster"
)

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=get;list;watch;patch

// KubeClusterValidator refuses a KubeCluster whose version is not in the
// KubernetesVersion catalog (downgrades and skipped minors are refused by
// the CRD's own rules).
type KubeClusterValidator struct {
	// Reader reads the catalog uncached, so a version applied a moment ago
	// counts.
	Reader client.Reader
}

var _ admission.CustomValidator = &KubeClusterValidator{}

func (v *KubeClusterValidator) ValidateCreate(ctx context.Context, obj runtime.Object) (admission.Warnings, error) {
	return v.check(ctx, obj.(*clusterv1.KubeCluster))
}

func (v *KubeClusterValidator) ValidateUpdate(ctx context.Context, oldObj, newObj runtime.Object) (admission.Warnings, error) {
	o, n := oldObj.(*clusterv1.KubeCluster), newObj.(*clusterv1.KubeCluster)
	if o.Spec.Version == n.Spec.Version || n.DeletionTimestamp != nil {
		return nil, nil
	}
	return v.check(ctx, n)
}

func (v *KubeClusterValidator) ValidateDelete(context.Context, runtime.Object) (admission.Warnings, error) {
	return nil, nil
}

func (v *KubeClusterValidator) check(ctx context.Context, kc *clusterv1.KubeCluster) (admission.Warnings, error) {
	var list clusterv1.KubernetesVersionList
	if err := v.Reader.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("reading the KubernetesVersion catalog: %w", err)
	}
	var known []string
	for _, kv := range list.Items {
		if kv.Name == kc.Spec.Version {
			if kv.Spec.Deprecated {
				return admission.Warnings{fmt.Sprintf("Kubernetes %s is deprecated in the catalog", kv.Name)}, nil
			}
			return nil, nil
		}
		known = append(known, kv.Name)
	}
	slices.SortFunc(known, kube.CompareVersions)
	errs := field.ErrorList{field.NotSupported(field.NewPath("spec", "version"), kc.Spec.Version, known)}
	if len(known) == 0 {
		errs = field.ErrorList{field.Invalid(field.NewPath("spec", "version"), kc.Spec.Version,
			"the KubernetesVersion catalog is empty: apply config/catalog first")}
	}
	return nil, apierrors.NewInvalid(clusterv1.GroupVersion.WithKind("KubeCluster").GroupKind(), kc.Name, errs)
}

// ServingCertificate returns the webhook's certificate, shared by every
// manager replica through a Secret: a valid one is reused, otherwise a new
// CA and certificate are made (the first replica to write wins).
func ServingCertificate(ctx context.Context, c client.Client, namespace string) (*tls.Certificate, []byte, error) {
	host := fmt.Sprintf("%s.%s.svc", ServiceName, namespace)
	spec := pki.CertSpec{CommonName: host, Server: true,
		DNSNames: []string{ServiceName, ServiceName + "." + namespace, host, host + ".cluster.local"}}
	for range 3 {
		var s corev1.Secret
		err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: SecretName}, &s)
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, nil, err
		}
		exists := err == nil
		if exists {
			kp, kerr := pki.FromSecret(s.Data)
			ca, cerr := certutil.ParseCertsPEM(s.Data[pki.KeyCA])
			if kerr == nil && cerr == nil && len(ca) > 0 && pki.Keep(kp.Cert, ca[0], spec, time.Now()) {
				cert, err := tls.X509KeyPair(s.Data["tls.crt"], s.Data["tls.key"])
				return &cert, s.Data["ca.crt"], err
			}
		}
		ca, err := pki.NewCA("kok-webhook-ca")
		if err != nil {
			return nil, nil, err
		}
		kp, err := ca.Issue(spec)
		if err != nil {
			return nil, nil, err
		}
		if s.Data, err = kp.SecretData(ca.CertPEM()); err != nil {
			return nil, nil, err
		}
		if exists {
			err = c.Update(ctx, &s)
		} else {
			s.ObjectMeta = metav1.ObjectMeta{Name: SecretName, Namespace: namespace, Labels: map[string]string{"app.kubernetes.io/name": "kok"}}
			s.Type = corev1.SecretTypeTLS
			err = c.Create(ctx, &s)
		}
		if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
			continue // another replica wrote it: use theirs
		} else if err != nil {
			return nil, nil, err
		}
		cert, err := tls.X509KeyPair(s.Data["tls.crt"], s.Data["tls.key"])
		return &cert, s.Data["ca.crt"], err
	}
	return nil, nil, fmt.Errorf("secret %s/%s keeps changing", namespace, SecretName)
}

// CAInjector keeps caBundle of the webhook configuration at CA, checking
// every Interval (the configuration may be applied after the manager
// starts, or edited). It runs on every replica: they share the CA.
type CAInjector struct {
	Client   client.Client
	CA       []byte
	Interval time.Duration
	done     atomic.Bool
}

// NeedLeaderElection is false: every replica serves the webhook.
func (j *CAInjector) NeedLeaderElection() bool { return false }

// Ready is a readiness check: the API server trusts the webhook (or no
// webhook configuration is installed).
func (j *CAInjector) Ready(*http.Request) error {
	if !j.done.Load() {
		return fmt.Errorf("CA bundle of %s not injected yet", ConfigName)
	}
	return nil
}

// Start runs until ctx ends.
func (j *CAInjector) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("webhook")
	for {
		var cfg admissionregistrationv1.ValidatingWebhookConfiguration
		err := j.Client.Get(ctx, client.ObjectKey{Name: ConfigName}, &cfg)
		switch {
		case apierrors.IsNotFound(err):
			logger.V(1).Info("webhook configuration not installed", "name", ConfigName)
			j.done.Store(true)
		case err != nil:
			logger.Error(err, "reading webhook configuration")
		default:
			orig := cfg.DeepCopy()
			for i := range cfg.Webhooks {
				cfg.Webhooks[i].ClientConfig.CABundle = j.CA
			}
			if equality.Semantic.DeepEqual(orig, &cfg) {
				j.done.Store(true)
			} else if err := j.Client.Patch(ctx, &cfg, client.MergeFrom(orig)); err != nil {
				logger.Error(err, "injecting the CA bundle")
			} else {
				logger.Info("CA bundle injected", "name", ConfigName)
				j.done.Store(true)
			}
		}
		interval := j.Interval
		if !j.done.Load() {
			interval = time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}
