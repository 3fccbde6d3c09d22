// Package manager assembles kok-manager: one controller-runtime manager that
// hosts kok's operators, each switchable by flag.
package manager

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	addonv1 "github.com/kubeonkube/kok/api/addon/v1alpha1"
	clusterv1 "github.com/kubeonkube/kok/api/cluster/v1alpha1"
	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/addon"
	"github.com/kubeonkube/kok/internal/cluster"
	"github.com/kubeonkube/kok/internal/etcd"
	"github.com/kubeonkube/kok/internal/fleet"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/machine"
	kokwebhook "github.com/kubeonkube/kok/internal/webhook"
)

// Setup registers one operator's controllers with the manager.
type Setup func(mgr ctrl.Manager, o Options) error

// Options configure the manager.
type Options struct {
	MetricsAddr      string
	ProbeAddr        string
	LeaderElect      bool
	LeaderElectionNS string
	// Controllers names the operators to run; empty runs all.
	Controllers []string
	// ImageRegistry prefixes every image kok runs (one setting for
	// air-gapped sites).
	ImageRegistry string
	// RegistryEndpoint is where hosts reach the registry that
	// ImageRegistry names (http://host:port or https://host), for
	// images and the artifacts of Components.
	RegistryEndpoint string
	// ClusterDomain is the meta cluster's DNS domain.
	ClusterDomain string
	// WebhookPort serves admission webhooks; 0 turns them off.
	WebhookPort int
	// Namespace is where the manager runs (its webhook Secret lives there).
	Namespace string
	// SelfImage is kok-manager's own image, which backup Jobs and restoring
	// etcd members run; found from the manager's pod when unset.
	SelfImage string
	// KubeAPIQPS and KubeAPIBurst limit kok-manager's requests to the
	// meta cluster's apiserver.
	KubeAPIQPS   float64
	KubeAPIBurst int
	// ClusterWorkers is how many KubeClusters are reconciled at once.
	ClusterWorkers int
	// AddonWorkers is how many ClusterAddons are reconciled at once.
	AddonWorkers int
	// LeaseDuration, RenewDeadline and RetryPeriod tune leader election;
	// CacheSyncTimeout bounds the first list of each watched kind. A meta
	// cluster busy starting many control planes answers slowly: with
	// controller-runtime's defaults (15 s, 10 s, 2 s, 2 min) kok-manager
	// lost its lease or its start under load and restarted, and each
	// restart listed the whole fleet again.
	LeaseDuration, RenewDeadline, RetryPeriod, CacheSyncTimeout time.Duration
}

// BindFlags registers the manager's flags.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8080", "address the Prometheus metrics endpoint binds to (0 disables it)")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "address the /healthz and /readyz probes bind to")
	fs.BoolVar(&o.LeaderElect, "leader-elect", true, "elect one active manager among replicas")
	fs.StringVar(&o.LeaderElectionNS, "leader-election-namespace", "", "namespace of the leader election lease (default: the pod's)")
	fs.StringVar(&o.ImageRegistry, "image-registry", kube.DefaultRegistry, "registry (and path) prefixed to every image kok runs")
	fs.StringVar(&o.RegistryEndpoint, "registry-endpoint", "", "URL at which hosts reach the registry --image-registry names (e.g. http://10.200.0.1:5000); Machines need it for their artifacts")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", "cluster.local", "DNS domain of the meta cluster")
	fs.IntVar(&o.WebhookPort, "webhook-port", 9443, "port of the admission webhooks (0 turns them off)")
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "kok-system"
	}
	fs.StringVar(&o.Namespace, "namespace", ns, "namespace the manager runs in (env POD_NAMESPACE)")
	fs.Float64Var(&o.KubeAPIQPS, "kube-api-qps", 50, "requests per second kok-manager sends to the meta cluster's apiserver")
	fs.IntVar(&o.KubeAPIBurst, "kube-api-burst", 100, "requests kok-manager may send at once above --kube-api-qps")
	fs.IntVar(&o.ClusterWorkers, "cluster-workers", 10, "KubeClusters reconciled at once (passes mostly wait on the API and etcd)")
	fs.IntVar(&o.AddonWorkers, "addon-workers", 10, "ClusterAddons reconciled at once (passes mostly wait on business clusters' apiservers)")
	fs.DurationVar(&o.LeaseDuration, "leader-elect-lease-duration", time.Minute, "how long a lost leader's lease holds off a new leader")
	fs.DurationVar(&o.RenewDeadline, "leader-elect-renew-deadline", 40*time.Second, "how long the leader tries to renew its lease before it gives up and exits")
	fs.DurationVar(&o.RetryPeriod, "leader-elect-retry-period", 5*time.Second, "how often leader election acts")
	fs.DurationVar(&o.CacheSyncTimeout, "cache-sync-timeout", 10*time.Minute, "how long a controller waits for its first list of the meta cluster before kok-manager exits")
	fs.StringVar(&o.SelfImage, "self-image", "", "kok-manager's own image, for backup Jobs and restores (default: read from the manager's pod, env POD_NAME)")
	fs.Func("controllers", "comma-separated operators to run (default: all)", func(s string) error {
		for _, c := range strings.Split(s, ",") {
			if c = strings.TrimSpace(c); c != "" {
				o.Controllers = append(o.Controllers, c)
			}
		}
		return nil
	})
}

// Registry lists the operators kok-manager can run, by name. Operators add
// themselves here as they are built.
var Registry = map[string]Setup{
	"cluster": func(mgr ctrl.Manager, o Options) error {
		return (&cluster.Reconciler{Client: mgr.GetClient(), ImageRegistry: o.ImageRegistry, MetaDomain: o.ClusterDomain,
			Workers: o.ClusterWorkers}).SetupWithManager(mgr)
	},
	"machine": func(mgr ctrl.Manager, o Options) error {
		return (&machine.Reconciler{Client: mgr.GetClient(),
			Registry: &machine.Registry{Name: o.ImageRegistry, Endpoint: o.RegistryEndpoint}}).SetupWithManager(mgr)
	},
	"fleet": func(mgr ctrl.Manager, o Options) error {
		return (&fleet.Reconciler{Client: mgr.GetClient()}).SetupWithManager(mgr)
	},
	"addon": func(mgr ctrl.Manager, o Options) error {
		return (&addon.Reconciler{Client: mgr.GetClient(), ImageRegistry: o.ImageRegistry, Workers: o.AddonWorkers}).SetupWithManager(mgr)
	},
	"etcd": func(mgr ctrl.Manager, o Options) error {
		if err := (&etcd.Reconciler{Client: mgr.GetClient(), ImageRegistry: o.ImageRegistry, Domain: o.ClusterDomain,
			ManagerImage: o.SelfImage}).SetupWithManager(mgr); err != nil {
			return err
		}
		if err := (&etcd.BackupReconciler{Client: mgr.GetClient(), ManagerImage: o.SelfImage}).SetupWithManager(mgr); err != nil {
			return err
		}
		return (&etcd.RestoreReconciler{Client: mgr.GetClient()}).SetupWithManager(mgr)
	},
}

// Scheme holds every API type kok-manager uses.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(etcdv1.AddToScheme(s))
	utilruntime.Must(clusterv1.AddToScheme(s))
	utilruntime.Must(nodev1.AddToScheme(s))
	utilruntime.Must(addonv1.AddToScheme(s))
	return s
}

// New builds a manager with the chosen operators registered.
func New(cfg *rest.Config, o Options) (ctrl.Manager, error) {
	var injector *kokwebhook.CAInjector
	var whServer webhook.Server
	cfg = rest.CopyConfig(cfg)
	if o.KubeAPIQPS > 0 {
		cfg.QPS, cfg.Burst = float32(o.KubeAPIQPS), max(o.KubeAPIBurst, 1)
	}
	direct, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, err
	}
	if o.SelfImage == "" {
		o.SelfImage = selfImage(direct, o.Namespace)
	}
	if o.WebhookPort > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cert, ca, err := kokwebhook.ServingCertificate(ctx, direct, o.Namespace)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("webhook certificate: %w", err)
		}
		injector = &kokwebhook.CAInjector{Client: direct, CA: ca, Interval: 30 * time.Second}
		whServer = webhook.NewServer(webhook.Options{Port: o.WebhookPort, TLSOpts: []func(*tls.Config){func(c *tls.Config) {
			c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil }
		}}})
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		WebhookServer:           whServer,
		Scheme:                  Scheme(),
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:  o.ProbeAddr,
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        "kok-manager.kok.dev",
		LeaderElectionNamespace: o.LeaderElectionNS,
		// A manager that loses its lease exits at once, so a new leader
		// never overlaps with an old one still writing.
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 positive(o.LeaseDuration),
		RenewDeadline:                 positive(o.RenewDeadline),
		RetryPeriod:                   positive(o.RetryPeriod),
		Controller:                    config.Controller{CacheSyncTimeout: o.CacheSyncTimeout},
	})
	if err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, err
	}
	if injector != nil {
		mgr.GetWebhookServer().Register(kokwebhook.KubeClusterPath, admission.WithCustomValidator(mgr.GetScheme(),
			&clusterv1.KubeCluster{}, &kokwebhook.KubeClusterValidator{Reader: mgr.GetAPIReader()}))
		if err := mgr.Add(injector); err != nil {
			return nil, err
		}
		if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
			return nil, err
		}
		if err := mgr.AddReadyzCheck("webhook-ca", injector.Ready); err != nil {
			return nil, err
		}
	}
	names := o.Controllers
	if len(names) == 0 {
		for n := range Registry {
			names = append(names, n)
		}
		sort.Strings(names)
	}
	for _, n := range names {
		setup, ok := Registry[n]
		if !ok {
			return nil, fmt.Errorf("unknown controller %q (known: %s)", n, strings.Join(known(), ", "))
		}
		if err := setup(mgr, o); err != nil {
			return nil, fmt.Errorf("setting up %s: %w", n, err)
		}
	}
	return mgr, nil
}

// positive is d, or nil (controller-runtime's default) when d is not set.
func positive(d time.Duration) *time.Duration {
	if d <= 0 {
		return nil
	}
	return &d
}

// selfImage reads the manager's image from its own pod ("" outside one).
func selfImage(c client.Client, ns string) string {
	name := os.Getenv("POD_NAME")
	if name == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var pod corev1.Pod
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &pod); err != nil || len(pod.Spec.Containers) == 0 {
		return ""
	}
	return pod.Spec.Containers[0].Image
}

func known() []string {
	var k []string
	for n := range Registry {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}
