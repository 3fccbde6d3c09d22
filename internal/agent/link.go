package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	certificatesv1client "k8s.io/client-go/kubernetes/typed/certificates/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/keyutil"
)

// The agent's place in its business cluster. Once the node joined, the
// agent asks for a client certificate of its own (user kok:agent:<node>,
// group kok:agents) with the kubelet's credentials; the machine operator
// approves it only for the Machine's node. With it the agent may read one
// Secret (its host's desired state) and write one Lease (its heartbeat and
// report) and its Node's status (a condition): nothing else, and no other
// host may read its Secret.
const (
	// AgentUserPrefix + node name is the agent's user; AgentGroup its group.
	AgentUserPrefix = "kok:agent:"
	AgentGroup      = "kok:agents"
	// DesiredKey is the key of the desired state in the host's Secret.
	DesiredKey = "desired.json"
	// ReportAnnotation on the heartbeat Lease holds the agent's last report.
	ReportAnnotation = "node.kok.dev/report"
	// NodeCondition is the condition the agent keeps on its Node.
	NodeCondition corev1.NodeConditionType = "KokComponentsReady"
	// LeaseDuration: a heartbeat older than this says the agent is gone.
	LeaseDuration = 60 * time.Second
	// certValidity is what the agent asks for; it renews past 70% of the
	// certificate's life.
	certValidity = 30 * 24 * time.Hour
)

// ClusterLink says where the agent learns its desired state and reports,
// once the node joined.
type ClusterLink struct {
	// Namespace holds the host's desired-state Secret and its heartbeat
	// Lease, both named Object.
	Namespace string `json:"namespace"`
	Object    string `json:"object"`
	// Node is the node's name.
	Node string `json:"node"`
	// Kubeconfig is the kubelet's: the agent requests its certificate with it.
	Kubeconfig string `json:"kubeconfig"`
}

// Link keeps the agent connected to its business cluster: it writes the
// desired state the cluster holds for the host to desired.json (waking the
// daemon) and pushes each report as a heartbeat.
type Link struct {
	Spec  ClusterLink
	Paths Paths
	Log   *log.Logger
	// Wake is signalled when a new desired state was written.
	Wake chan<- struct{}

	mu      sync.Mutex
	latest  *Report
	pending chan struct{}
	// lastCond is the Node condition last written, and when.
	lastCond     corev1.NodeCondition
	lastCondTime time.Time
}

// NewLink returns a link for spec.
func NewLink(spec ClusterLink, p Paths, logger *log.Logger, wake chan<- struct{}) *Link {
	return &Link{Spec: spec, Paths: p, Log: logger, Wake: wake, pending: make(chan struct{}, 1)}
}

// Report hands the link the daemon's latest report; it is pushed at once
// (or when the cluster answers).
func (l *Link) Report(r *Report) {
	l.mu.Lock()
	l.latest = r
	l.mu.Unlock()
	select {
	case l.pending <- struct{}{}:
	default:
	}
}

// Run waits for the kubelet's credentials, gets the agent's own, then
// watches the Secret and pushes reports until ctx ends. Every failure is
// retried with backoff; the host keeps its last desired state meanwhile.
func (l *Link) Run(ctx context.Context) {
	newBackoff := func() wait.Backoff {
		return wait.Backoff{Duration: 2 * time.Second, Factor: 2, Cap: time.Minute, Steps: 1 << 30}
	}
	backoff := newBackoff()
	for ctx.Err() == nil {
		start := time.Now()
		err := l.connected(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			backoff = newBackoff() // it was connected: start over
		}
		d := 2 * time.Second
		if !errors.Is(err, errNotJoined) {
			d = backoff.Step()
			l.Log.Printf("cluster link: %v (again in %s)", err, d)
		}
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
}

// errNotJoined: the kubelet has no credentials yet.
var errNotJoined = errors.New("the node has not joined yet")

// connected runs one connection: it returns when the credentials must be
// renewed or something failed.
func (l *Link) connected(ctx context.Context) error {
	cfg, renewAt, err := l.credentials(ctx)
	if err != nil {
		return err
	}
	cs, err := newClients(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithDeadline(ctx, renewAt)
	defer cancel()
	lw := cache.NewListWatchFromClient(cs.core.RESTClient(), "secrets", l.Spec.Namespace,
		fields.OneTermEqualSelector("metadata.name", l.Spec.Object))
	_, informer := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw, ObjectType: &corev1.Secret{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { l.desired(o.(*corev1.Secret)) },
			UpdateFunc: func(_, o any) { l.desired(o.(*corev1.Secret)) },
		},
	})
	go informer.RunWithContext(ctx)
	l.Log.Printf("cluster link: watching %s/%s as %s%s", l.Spec.Namespace, l.Spec.Object, AgentUserPrefix, l.Spec.Node)

	// Reports: each one the daemon hands over, and a heartbeat between.
	heartbeat := time.NewTicker(LeaseDuration / 4)
	defer heartbeat.Stop()
	for {
		l.mu.Lock()
		r := l.latest
		l.mu.Unlock()
		if r != nil {
			if err := l.push(ctx, cs, r); err != nil && ctx.Err() == nil {
				l.Log.Printf("cluster link: reporting: %v", err)
			}
		}
		select {
		case <-ctx.Done():
			if time.Now().Before(renewAt) {
				return ctx.Err()
			}
			return errors.New("the agent's certificate is due for renewal")
		case <-l.pending:
		case <-heartbeat.C:
		}
	}
}

// desired writes the Secret's desired state to desired.json when it
// differs, and wakes the daemon.
func (l *Link) desired(s *corev1.Secret) {
	data := s.Data[DesiredKey]
	if len(data) == 0 {
		return
	}
	var d Desired
	if err := json.Unmarshal(data, &d); err != nil {
		l.Log.Printf("cluster link: %s/%s: the desired state is not valid: %v", s.Namespace, s.Name, err)
		return
	}
	if cur, err := os.ReadFile(l.Paths.Desired()); err == nil && bytes.Equal(cur, data) {
		return
	}
	if err := writeAtomic(l.Paths.Desired(), data, 0o600); err != nil {
		l.Log.Printf("cluster link: %v", err)
		return
	}
	l.Log.Printf("cluster link: new desired state %s", d.Hash())
	select {
	case l.Wake <- struct{}{}:
	default:
	}
}

// push renews the heartbeat Lease with the report, and sets the Node's
// condition when it changed (or a minute passed).
func (l *Link) push(ctx context.Context, cs *clients, r *Report) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	leases := cs.coordination.Leases(l.Spec.Namespace)
	lease, err := leases.Get(ctx, l.Spec.Object, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.NewMicroTime(time.Now())
	holder, secs := AgentUserPrefix+l.Spec.Node, int32(LeaseDuration/time.Second)
	lease.Spec = coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, RenewTime: &now,
		AcquireTime: lease.Spec.AcquireTime}
	if lease.Spec.AcquireTime == nil {
		lease.Spec.AcquireTime = &now
	}
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	lease.Annotations[ReportAnnotation] = string(data)
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		return err
	}
	return l.nodeCondition(ctx, cs, r)
}

// clients are the typed clients the agent uses: only those, so the agent
// binary does not carry every API group's client.
type clients struct {
	core         corev1client.CoreV1Interface
	coordination coordinationv1client.CoordinationV1Interface
}

func newClients(cfg *rest.Config) (*clients, error) {
	core, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	coord, err := coordinationv1client.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &clients{core: core, coordination: coord}, nil
}

func (l *Link) nodeCondition(ctx context.Context, cs *clients, r *Report) error {
	c := corev1.NodeCondition{Type: NodeCondition, Status: corev1.ConditionTrue, Reason: "AtFinalState",
		Message: "every component is at its final state (kok-agent)"}
	if r.Desired == "" || len(r.Components) == 0 {
		c.Status, c.Reason, c.Message = corev1.ConditionUnknown, "NoDesiredState", "kok-agent has no desired state"
	}
	for _, comp := range r.Components {
		if !comp.Ready {
			c.Status, c.Reason, c.Message = corev1.ConditionFalse, "ComponentFailed", comp.Name+": "+comp.Error
			break
		}
	}
	now := time.Now()
	same := c.Status == l.lastCond.Status && c.Reason == l.lastCond.Reason && c.Message == l.lastCond.Message
	if same && now.Sub(l.lastCondTime) < time.Minute {
		return nil
	}
	c.LastHeartbeatTime = metav1.NewTime(now)
	c.LastTransitionTime = c.LastHeartbeatTime
	if c.Status == l.lastCond.Status && !l.lastCond.LastTransitionTime.IsZero() {
		c.LastTransitionTime = l.lastCond.LastTransitionTime
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{c}}})
	if err != nil {
		return err
	}
	if _, err := cs.core.Nodes().PatchStatus(ctx, l.Spec.Node, patch); err != nil {
		return fmt.Errorf("node %s: %w", l.Spec.Node, err)
	}
	l.lastCond, l.lastCondTime = c, now
	return nil
}

// Paths of the agent's own credentials.
func (p Paths) AgentCert() string { return filepath.Join(p.Dir, "pki", "agent.crt") }
func (p Paths) AgentKey() string  { return filepath.Join(p.Dir, "pki", "agent.key") }

// credentials returns a client config with the agent's own certificate,
// requesting one (with the kubelet's credentials) when there is none or it
// is due for renewal, and when to renew it.
func (l *Link) credentials(ctx context.Context) (*rest.Config, time.Time, error) {
	if _, err := os.Stat(l.Spec.Kubeconfig); err != nil {
		return nil, time.Time{}, errNotJoined
	}
	kubelet, err := clientcmd.BuildConfigFromFlags("", l.Spec.Kubeconfig)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("the kubelet's kubeconfig: %w", err)
	}
	renewAt, ok := l.currentCert()
	if !ok {
		if err := l.requestCert(ctx, kubelet); err != nil {
			return nil, time.Time{}, err
		}
		if renewAt, ok = l.currentCert(); !ok {
			return nil, time.Time{}, errors.New("the issued certificate does not verify")
		}
	}
	cfg := rest.AnonymousClientConfig(kubelet)
	cfg.CertFile, cfg.KeyFile = l.Paths.AgentCert(), l.Paths.AgentKey()
	cfg.UserAgent = "kok-agent"
	cfg.Timeout = 30 * time.Second
	return cfg, renewAt, nil
}

// currentCert says whether the agent holds a certificate for its node that
// is not due for renewal, and when it will be.
func (l *Link) currentCert() (time.Time, bool) {
	pair, err := tls.LoadX509KeyPair(l.Paths.AgentCert(), l.Paths.AgentKey())
	if err != nil || pair.Leaf == nil {
		return time.Time{}, false
	}
	c := pair.Leaf
	if c.Subject.CommonName != AgentUserPrefix+l.Spec.Node {
		return time.Time{}, false
	}
	renewAt := RenewalTime(c)
	return renewAt, time.Now().Before(renewAt)
}

// RenewalTime is when the agent renews cert: past 70% of its life.
func RenewalTime(cert *x509.Certificate) time.Time {
	return cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) / 10 * 7)
}

// requestCert creates a key, asks for a kube-apiserver-client certificate
// as the kubelet (the machine operator approves it), waits for it and
// stores both.
func (l *Link) requestCert(ctx context.Context, kubelet *rest.Config) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: AgentUserPrefix + l.Spec.Node, Organization: []string{AgentGroup}}}, key)
	if err != nil {
		return err
	}
	csrs, err := certificatesv1client.NewForConfig(kubelet)
	if err != nil {
		return err
	}
	secs := int32(certValidity / time.Second)
	req, err := csrs.CertificateSigningRequests().Create(ctx, &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "kok-agent-" + l.Spec.Node + "-"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName: certificatesv1.KubeAPIServerClientSignerName, ExpirationSeconds: &secs,
			Usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("requesting the agent's certificate: %w", err)
	}
	l.Log.Printf("cluster link: requested certificate %s, waiting for approval", req.Name)
	var certPEM []byte
	err = wait.PollUntilContextTimeout(ctx, time.Second, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := csrs.CertificateSigningRequests().Get(ctx, req.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil // the apiserver may be away a moment: ask again
		}
		if got.UID != req.UID {
			return false, fmt.Errorf("certificate request %s was replaced", req.Name)
		}
		for _, c := range got.Status.Conditions {
			if c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed {
				return false, fmt.Errorf("certificate request %s: %s: %s", req.Name, c.Reason, c.Message)
			}
		}
		certPEM = got.Status.Certificate
		return len(certPEM) > 0, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for certificate %s: %w", req.Name, err)
	}
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(l.Paths.AgentKey()), 0o700); err != nil {
		return err
	}
	if err := writeAtomic(l.Paths.AgentKey(), keyPEM, 0o600); err != nil {
		return err
	}
	return writeAtomic(l.Paths.AgentCert(), certPEM, 0o644)
}
