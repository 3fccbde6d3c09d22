package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeonkube/kok/internal/local/build"
	"github.com/kubeonkube/kok/internal/local/proc"
	"github.com/kubeonkube/kok/internal/local/versions"
	"github.com/kubeonkube/kok/internal/manager"
)

// UpOptions configure kok up.
type UpOptions struct {
	Config  Config
	Bins    Binaries
	Builder *build.Builder
	// Self is the kok executable, run as the supervisor.
	Self string
	Out  io.Writer
	// KeepOnFailure leaves a failed cluster running for inspection.
	KeepOnFailure bool
	// Timeout bounds the wait for the cluster to become ready.
	Timeout time.Duration
	// Demo creates the demo business cluster at the end.
	Demo bool
}

// UpResult reports what kok up did and how long each part took.
type UpResult struct {
	AlreadyRunning bool
	Total          time.Duration
	Steps          []Step
}

// Step is one timed phase of kok up.
type Step struct {
	Name     string
	Duration time.Duration
}

type progress struct {
	out   io.Writer
	start time.Time
	last  time.Time
	steps []Step
}

func (p *progress) done(name string) {
	now := time.Now()
	d := now.Sub(p.last)
	p.steps = append(p.steps, Step{name, d})
	fmt.Fprintf(p.out, "[%6.1fs] ✓ %s (%.1fs)\n", now.Sub(p.start).Seconds(), name, d.Seconds())
	p.last = now
}

func (p *progress) info(format string, args ...any) {
	fmt.Fprintf(p.out, "    "+format+"\n", args...)
}

// Up brings the local meta cluster up, or reports that it already runs.
//
// It runs the steps below in order; each prints a line with its time when
// it is done (UpResult.Steps). Once processes run, a failure stops them
// again unless KeepOnFailure.
func Up(ctx context.Context, o UpOptions) (*UpResult, error) {
	p := &progress{out: o.Out, start: time.Now(), last: time.Now()}
	if err := checkRoot(); err != nil {
		return nil, err
	}
	c, err := upConfig(o.Config)
	if err != nil {
		return nil, err
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	u := &upRun{o: o, c: c, p: p, images: newImporter(c, o.Builder, o.Bins, o.Out)}
	if _, u.supervised = proc.Alive(SupervisorPidFile(c.StateDir)); u.supervised {
		if err := httpReady(c.APIServerURL() + "/readyz")(ctx); err == nil {
			return u.alreadyRunning(ctx)
		}
		fmt.Fprintln(o.Out, "kok meta cluster is starting; waiting for it")
	}

	// Nothing runs yet: a failure just returns.
	if err := u.do(ctx,
		u.prerequisites, // clear an earlier run's leftovers, check the host, install packages
		u.binaries,      // build Kubernetes, etcd and CoreDNS
		u.configuration, // save the configuration; certificates, kubeconfigs, config files
	); err != nil {
		return nil, err
	}
	if err := u.do(ctx,
		u.hostSetup,     // network guard, bridge, cgroups
		u.runSupervisor, // (no line: counted in the next step)
	); err != nil {
		return u.fail(err)
	}
	// One deadline, counted from when the supervisor runs, bounds the rest.
	waitCtx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if err := u.do(waitCtx,
		u.containerd,          // containerd ready, meta cluster images imported
		u.startBusinessImport, // (no line) business cluster images, in the background
		u.controlPlane,        // etcd and kube-apiserver ready
		u.applyAddons,         // CoreDNS and kok applied
		u.nodeReady,           // every component ready, the node Ready
		u.addonsReady,         // CoreDNS, kok-manager and kok-registry Deployments ready
		u.businessImport,      // the background import done
	); err != nil {
		return u.fail(err)
	}
	// The push has its own bound (pushTimeout), so a slow first push does
	// not eat into the wait for the cluster.
	if err := u.do(ctx, u.registryContent); err != nil {
		return u.fail(err)
	}
	total := time.Since(p.start)
	if o.Demo {
		if err := u.do(waitCtx, u.demo); err != nil {
			return u.fail(err)
		}
	}
	fmt.Fprintf(o.Out, "\nkok meta cluster is up in %.1fs (Kubernetes %s).\n  export KUBECONFIG=%s\n  kubectl get nodes\n",
		total.Seconds(), c.KubernetesVersion, c.Kubeconfig())
	if o.Demo {
		printDemo(o.Out, c.DemoKubeconfig())
	}
	return &UpResult{Total: total, Steps: p.steps}, nil
}

// upConfig is the configuration kok up works with: the one saved in the
// state directory if there is one (its address plan is what the PKI and data
// match), with the asked-for cache and run directories; else want.
func upConfig(want Config) (*Config, error) {
	c := want
	if saved, err := LoadConfig(c.StateDir); err == nil {
		saved.CacheDir, saved.RunDir = c.CacheDir, c.RunDir
		c = *saved
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// upRun is one run of kok up: its options and configuration, and what its
// steps hand on to later ones.
type upRun struct {
	o      UpOptions
	c      *Config
	p      *progress
	images *importer
	// supervised: a supervisor ran for this state when kok up began.
	supervised bool

	rest *rest.Config         // set by applyAddons
	cs   kubernetes.Interface // set by nodeReady
	bulk <-chan importResult  // set by startBusinessImport
}

type importResult struct {
	n   int
	err error
}

// An upStep does one phase of kok up and returns the line that reports it
// done. A step without a line ("") has its time counted in the next step's.
type upStep func(ctx context.Context) (string, error)

// do runs steps in order, reporting each one done with its time, until one
// fails.
func (u *upRun) do(ctx context.Context, steps ...upStep) error {
	for _, step := range steps {
		done, err := step(ctx)
		if err != nil {
			return err
		}
		if done != "" {
			u.p.done(done)
		}
	}
	return nil
}

// fail ends a run that started processes: they are stopped again, unless
// asked to keep them for inspection.
func (u *upRun) fail(err error) (*UpResult, error) {
	if u.o.KeepOnFailure {
		return nil, fmt.Errorf("%w\n  (left running for inspection: logs in %s; 'kok down' stops it)", err, u.c.LogDir())
	}
	fmt.Fprintf(u.o.Out, "kok up failed; stopping what it started (logs stay in %s)\n", u.c.LogDir())
	_ = Down(context.Background(), DownOptions{StateDir: u.c.StateDir, Builder: u.o.Builder, Out: io.Discard})
	return nil, err
}

// alreadyRunning keeps kok up level-based on a running cluster (a rebuilt
// kok-manager or changed manifests are rolled out) and says it runs.
func (u *upRun) alreadyRunning(ctx context.Context) (*UpResult, error) {
	if err := u.refresh(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(u.o.Out, "kok meta cluster is already running (state %s)\n  export KUBECONFIG=%s\n", u.c.StateDir, u.c.Kubeconfig())
	if u.o.Demo {
		printDemo(u.o.Out, u.c.DemoKubeconfig())
	}
	return &UpResult{AlreadyRunning: true}, nil
}

// refresh re-imports changed images, re-applies kok's manifests and brings
// the registry's content up to date on a running cluster.
func (u *upRun) refresh(ctx context.Context) error {
	// A cluster started by a kok from before the registry lacks its build.
	if _, err := u.o.Builder.Ensure(ctx, build.Registry(versions.Registry)); err != nil {
		return err
	}
	if _, err := u.images.ensure(ctx, metaImages); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", u.c.Kubeconfig())
	if err != nil {
		return err
	}
	if err := installAddons(ctx, cfg, u.c, u.o.Bins); err != nil {
		return err
	}
	if u.o.Demo {
		if _, err := u.images.ensure(ctx, businessImages); err != nil {
			return fmt.Errorf("images: %w", err)
		}
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	// A registry applied just now (a cluster from before it existed) or
	// restarted by a changed configuration has to be Ready first.
	readyCtx, cancel := context.WithTimeout(ctx, u.o.Timeout)
	defer cancel()
	if err := waitDeployment(readyCtx, cs, "kok-system", "kok-registry", time.Time{}); err != nil {
		return err
	}
	line, err := u.registryContent(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(u.o.Out, line)
	if !u.o.Demo {
		return nil
	}
	if err := ensureDemo(ctx, cfg, u.c.KubernetesVersion, u.c.DemoKubeconfig(), u.o.Out); err != nil {
		return err
	}
	return ensureDemoMachines(ctx, cfg, u.c, u.o.Self, u.o.Out)
}

// The steps, in the order Up runs them.

// prerequisites clears what a crash or a reboot left and checks the host,
// unless a supervisor runs this state already; then it installs missing
// packages.
func (u *upRun) prerequisites(ctx context.Context) (string, error) {
	if !u.supervised {
		if err := checkHostFree(u.c); err != nil {
			return "", err
		}
		// Nothing supervises this state: clear leftovers of a crash or a
		// reboot before starting afresh. Data on disk is kept.
		if stopped := stopRecorded(u.c); stopped > 0 {
			u.p.info("stopped %d processes left by an earlier run", stopped)
		}
		if err := checkStateDir(u.c.StateDir); err != nil {
			return "", err
		}
		if err := checkCgroups(); err != nil {
			return "", err
		}
		if err := checkPorts(u.c); err != nil {
			return "", err
		}
	}
	if err := ensurePackages(ctx, u.o.Out); err != nil {
		return "", err
	}
	return "prerequisites", nil
}

// binaries builds the binaries the meta cluster runs.
func (u *upRun) binaries(ctx context.Context) (string, error) {
	if err := ensureBuilt(ctx, u.o.Builder, u.c); err != nil {
		return "", err
	}
	return fmt.Sprintf("binaries (kubernetes %s, etcd %s, coredns %s, registry %s)", u.c.KubernetesVersion, u.c.EtcdVersion,
		versions.CoreDNS, versions.Registry), nil
}

// configuration saves the configuration and writes the certificates,
// kubeconfigs and the components' configuration files.
func (u *upRun) configuration(context.Context) (string, error) {
	if err := u.c.Save(); err != nil {
		return "", err
	}
	if err := ensurePKI(u.c); err != nil {
		return "", fmt.Errorf("certificates: %w", err)
	}
	if err := renderConfigs(u.c); err != nil {
		return "", err
	}
	return "certificates and configuration", nil
}

// hostSetup prepares the host: the network guard goes in before anything can
// send a packet, then the bridge and the pods' cgroup root.
func (u *upRun) hostSetup(ctx context.Context) (string, error) {
	if err := claimHost(u.c); err != nil {
		return "", err
	}
	if err := EnsureGuard(ctx, u.c.GuardCIDR); err != nil {
		return "", fmt.Errorf("network guard: %w", err)
	}
	if err := ensureHostNetwork(ctx, u.c); err != nil {
		return "", fmt.Errorf("host network: %w", err)
	}
	if err := ensureCgroupRoot(u.c.CgroupRoot()); err != nil {
		return "", err
	}
	return "network guard, bridge " + u.c.Bridge + " and cgroups", nil
}

// runSupervisor starts the supervisor unless one runs.
func (u *upRun) runSupervisor(context.Context) (string, error) {
	if _, alive := proc.Alive(SupervisorPidFile(u.c.StateDir)); !alive {
		if err := startSupervisor(u.o.Self, u.c); err != nil {
			return "", err
		}
	}
	return "", nil
}

// containerd waits for containerd and imports the images the meta cluster
// runs.
func (u *upRun) containerd(ctx context.Context) (string, error) {
	if err := waitComponents(ctx, u.c, []string{Containerd}); err != nil {
		return "", err
	}
	n, err := u.images.ensure(ctx, metaImages)
	if err != nil {
		return "", fmt.Errorf("images: %w", err)
	}
	return fmt.Sprintf("containerd and meta cluster images (%d imported)", n), nil
}

// startBusinessImport imports business-cluster images (every built
// Kubernetes and etcd version) while the cluster starts; businessImport
// collects the result.
func (u *upRun) startBusinessImport(ctx context.Context) (string, error) {
	bulk := make(chan importResult, 1)
	go func() {
		n, err := u.images.ensure(ctx, businessImages)
		bulk <- importResult{n, err}
	}()
	u.bulk = bulk
	return "", nil
}

// controlPlane waits for etcd and the apiserver.
func (u *upRun) controlPlane(ctx context.Context) (string, error) {
	if err := waitComponents(ctx, u.c, []string{Etcd, APIServer}); err != nil {
		return "", err
	}
	return "etcd and kube-apiserver", nil
}

// applyAddons applies CoreDNS and kok.
func (u *upRun) applyAddons(ctx context.Context) (string, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", u.c.Kubeconfig())
	if err != nil {
		return "", err
	}
	u.rest = cfg
	if err := installAddons(ctx, cfg, u.c, u.o.Bins); err != nil {
		return "", err
	}
	return "CoreDNS, kok-manager and kok-registry applied", nil
}

// nodeReady waits for every component, then for the node to be Ready.
func (u *upRun) nodeReady(ctx context.Context) (string, error) {
	if err := waitComponents(ctx, u.c, ComponentNames); err != nil {
		return "", err
	}
	cs, err := kubernetes.NewForConfig(u.rest)
	if err != nil {
		return "", err
	}
	u.cs = cs
	if err := waitNodeReady(ctx, cs, u.c.NodeName, u.p.start); err != nil {
		return "", err
	}
	return "node " + u.c.NodeName + " Ready", nil
}

// addonsReady waits for the CoreDNS, kok-manager and kok-registry
// Deployments.
func (u *upRun) addonsReady(ctx context.Context) (string, error) {
	for _, d := range []struct{ ns, name string }{{"kube-system", "coredns"}, {"kok-system", "kok-manager"}, {"kok-system", "kok-registry"}} {
		if err := waitDeployment(ctx, u.cs, d.ns, d.name, u.p.start); err != nil {
			return "", err
		}
	}
	cl, err := client.New(u.rest, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return "", err
	}
	if err := waitWebhook(ctx, cl, u.c.KubernetesVersion); err != nil {
		return "", err
	}
	return "CoreDNS, kok-manager and kok-registry Ready", nil
}

// businessImport waits for the import startBusinessImport began.
func (u *upRun) businessImport(context.Context) (string, error) {
	r := <-u.bulk
	if r.err != nil {
		return "", fmt.Errorf("images: %w", r.err)
	}
	return fmt.Sprintf("business cluster images (%d imported)", r.n), nil
}

// registryContent pushes every kok-built image and binary to the registry,
// skipping what it holds, then lets go of the images built for the import
// and the push.
func (u *upRun) registryContent(ctx context.Context) (string, error) {
	defer u.images.release()
	start := time.Now()
	rc, err := u.images.push(ctx, u.c)
	if err != nil {
		return "", fmt.Errorf("registry: %w", err)
	}
	return fmt.Sprintf("registry: %d images, %d artifacts pushed (%d already there; %.1f MiB sent in %.1fs; http://%s)",
		rc.PushedImages, rc.PushedArtifacts, rc.Already, float64(rc.Bytes)/(1<<20), time.Since(start).Seconds(), u.c.RegistryAddress()), nil
}

// demo creates the demo business cluster and waits for it.
func (u *upRun) demo(ctx context.Context) (string, error) {
	if err := ensureDemo(ctx, u.rest, u.c.KubernetesVersion, u.c.DemoKubeconfig(), u.o.Out); err != nil {
		return "", fmt.Errorf("demo business cluster: %w", err)
	}
	u.p.done("demo business cluster " + DemoCluster + " Ready")
	if err := ensureDemoMachines(ctx, u.rest, u.c, u.o.Self, u.o.Out); err != nil {
		return "", fmt.Errorf("demo machines: %w", err)
	}
	return fmt.Sprintf("%d demo machines joined %s and Ready", len(DemoMachines), DemoCluster), nil
}
