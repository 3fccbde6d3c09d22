package local

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kokconfig "github.com/kubeonkube/kok/config"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/local/build"
	"github.com/kubeonkube/kok/internal/local/proc"
	"github.com/kubeonkube/kok/internal/local/supervisor"
	"github.com/kubeonkube/kok/internal/local/versions"
)

//go:embed addons/coredns.yaml
var corednsManifest string

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

// SupervisorPidFile is the pid file of the supervisor of a state directory.
func SupervisorPidFile(stateDir string) string {
	return filepath.Join(stateDir, "run", "supervisor.pid")
}

// Up brings the local meta cluster up, or reports that it already runs.
func Up(ctx context.Context, o UpOptions) (*UpResult, error) {
	p := &progress{out: o.Out, start: time.Now(), last: time.Now()}
	if err := checkRoot(); err != nil {
		return nil, err
	}
	c := o.Config
	if saved, err := LoadConfig(c.StateDir); err == nil {
		// The saved address plan wins: it is what the PKI and data match.
		saved.CacheDir, saved.RunDir = c.CacheDir, c.RunDir
		c = *saved
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}

	if _, alive := proc.Alive(SupervisorPidFile(c.StateDir)); alive {
		if err := httpReady(c.APIServerURL() + "/readyz")(ctx); err == nil {
			// Still level-based: a rebuilt kok-manager or changed
			// manifests are rolled out.
			if err := c.refresh(ctx, o); err != nil {
				return nil, err
			}
			fmt.Fprintf(o.Out, "kok meta cluster is already running (state %s)\n  export KUBECONFIG=%s\n", c.StateDir, c.Kubeconfig())
			if o.Demo {
				printDemo(o.Out, &c)
			}
			return &UpResult{AlreadyRunning: true}, nil
		}
		fmt.Fprintln(o.Out, "kok meta cluster is starting; waiting for it")
	} else {
		// Nothing supervises this state: clear leftovers of a crash or a
		// reboot before starting afresh. Data on disk is kept.
		if stopped := stopRecorded(c); stopped > 0 {
			p.info("stopped %d processes left by an earlier run", stopped)
		}
		if err := checkStateDir(c.StateDir); err != nil {
			return nil, err
		}
		if err := checkCgroups(); err != nil {
			return nil, err
		}
		if err := c.checkPorts(); err != nil {
			return nil, err
		}
	}
	if err := ensurePackages(ctx, o.Out); err != nil {
		return nil, err
	}
	p.done("prerequisites")

	if err := ensureBuilt(ctx, o.Builder, &c); err != nil {
		return nil, err
	}
	p.done(fmt.Sprintf("binaries (kubernetes %s, etcd %s, coredns %s)", c.KubernetesVersion, c.EtcdVersion, versions.CoreDNS))

	if err := c.Save(); err != nil {
		return nil, err
	}
	if err := c.ensurePKI(); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	if err := c.renderConfigs(); err != nil {
		return nil, err
	}
	p.done("certificates and configuration")

	// From here on processes run: a failure stops them again, unless asked
	// to keep them for inspection.
	fail := func(err error) (*UpResult, error) {
		if o.KeepOnFailure {
			return nil, fmt.Errorf("%w\n  (left running for inspection: logs in %s; 'kok down' stops it)", err, c.LogDir())
		}
		fmt.Fprintf(o.Out, "kok up failed; stopping what it started (logs stay in %s)\n", c.LogDir())
		_ = Down(context.Background(), DownOptions{StateDir: c.StateDir, Builder: o.Builder, Out: io.Discard})
		return nil, err
	}
	// The guard goes in before anything can send a packet.
	if err := c.EnsureGuard(ctx); err != nil {
		return fail(fmt.Errorf("network guard: %w", err))
	}
	if err := c.ensureHostNetwork(ctx); err != nil {
		return fail(fmt.Errorf("host network: %w", err))
	}
	if err := c.ensureCgroupRoot(); err != nil {
		return fail(err)
	}
	p.done("network guard, bridge " + c.Bridge + " and cgroups")

	if _, alive := proc.Alive(SupervisorPidFile(c.StateDir)); !alive {
		if err := startSupervisor(o.Self, c); err != nil {
			return fail(err)
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if err := waitComponents(waitCtx, c, []string{Containerd}); err != nil {
		return fail(err)
	}
	n, err := c.ensureImages(waitCtx, o.Builder, o.Bins, o.Out, metaImages)
	if err != nil {
		return fail(fmt.Errorf("images: %w", err))
	}
	p.done(fmt.Sprintf("containerd and meta cluster images (%d imported)", n))
	// Business-cluster images (every built Kubernetes and etcd version) are
	// imported while the cluster starts.
	type importResult struct {
		n   int
		err error
	}
	bulk := make(chan importResult, 1)
	go func() {
		n, err := c.ensureImages(waitCtx, o.Builder, o.Bins, o.Out, businessImages)
		bulk <- importResult{n, err}
	}()

	if err := waitComponents(waitCtx, c, []string{Etcd, APIServer}); err != nil {
		return fail(err)
	}
	p.done("etcd and kube-apiserver")

	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return fail(err)
	}
	if err := c.installAddons(waitCtx, cfg, o.Bins); err != nil {
		return fail(err)
	}
	p.done("CoreDNS and kok-manager applied")

	if err := waitComponents(waitCtx, c, ComponentNames); err != nil {
		return fail(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fail(err)
	}
	if err := waitNodeReady(waitCtx, cs, c.NodeName, p.start); err != nil {
		return fail(err)
	}
	p.done("node " + c.NodeName + " Ready")

	for _, d := range []struct{ ns, name string }{{"kube-system", "coredns"}, {"kok-system", "kok-manager"}} {
		if err := waitDeployment(waitCtx, cs, d.ns, d.name, p.start); err != nil {
			return fail(err)
		}
	}
	p.done("CoreDNS and kok-manager Ready")

	r := <-bulk
	if r.err != nil {
		return fail(fmt.Errorf("images: %w", r.err))
	}
	p.done(fmt.Sprintf("business cluster images (%d imported)", r.n))

	total := time.Since(p.start)
	if o.Demo {
		if err := c.ensureDemo(waitCtx, cfg, o.Out); err != nil {
			return fail(fmt.Errorf("demo business cluster: %w", err))
		}
		p.done("demo business cluster " + DemoCluster + " Ready")
	}
	fmt.Fprintf(o.Out, "\nkok meta cluster is up in %.1fs (Kubernetes %s).\n  export KUBECONFIG=%s\n  kubectl get nodes\n",
		total.Seconds(), c.KubernetesVersion, c.Kubeconfig())
	if o.Demo {
		printDemo(o.Out, &c)
	}
	return &UpResult{Total: total, Steps: p.steps}, nil
}

// refresh re-imports changed images and re-applies kok's manifests on a
// running cluster.
func (c *Config) refresh(ctx context.Context, o UpOptions) error {
	if _, err := c.ensureImages(ctx, o.Builder, o.Bins, o.Out, metaImages); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return err
	}
	if err := c.installAddons(ctx, cfg, o.Bins); err != nil {
		return err
	}
	if !o.Demo {
		return nil
	}
	if _, err := c.ensureImages(ctx, o.Builder, o.Bins, o.Out, businessImages); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	return c.ensureDemo(ctx, cfg, o.Out)
}

// printDemo prints the one line that uses the demo business cluster.
func printDemo(out io.Writer, c *Config) {
	fmt.Fprintf(out, "\nDemo business cluster %q (its control plane runs as pods in namespace %s):\n  kok kubectl --kubeconfig %s get ns\n",
		DemoCluster, DemoCluster, c.DemoKubeconfig())
}

// ensureBuilt builds the binaries the meta cluster runs.
func ensureBuilt(ctx context.Context, b *build.Builder, c *Config) error {
	kp, err := build.Kubernetes(ctx, b.Go, c.KubernetesVersion)
	if err != nil {
		return err
	}
	for _, p := range []*build.Product{kp, build.Etcd(c.EtcdVersion), build.CoreDNS(versions.CoreDNS)} {
		if _, err := b.Ensure(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// startSupervisor runs "kok supervise" detached from this terminal.
func startSupervisor(self string, c Config) error {
	if err := os.MkdirAll(c.LogDir(), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(c.LogDir(), "supervisor.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	// A status file left by a supervisor that died describes processes
	// that are gone; waiting on it would see them "ready".
	if err := os.Remove(supervisor.StatusFile(c.PidDir())); err != nil && !os.IsNotExist(err) {
		return err
	}
	cmd := exec.Command(self, "supervise", "--state-dir", c.StateDir, "--cache-dir", c.CacheDir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the supervisor: %w", err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	// The supervisor writes its own pid file; wait for it so the next
	// command sees it.
	for i := 0; i < 50; i++ {
		if id, alive := proc.Alive(SupervisorPidFile(c.StateDir)); alive && id.PID == pid {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the supervisor (pid %d) did not start; see %s", pid, filepath.Join(c.LogDir(), "supervisor.log"))
}

// maxStartRestarts: a component restarting this often while kok up waits is
// failing, not starting.
const maxStartRestarts = 3

// waitComponents waits until the named components are ready, and fails fast
// with the end of a component's log when it keeps crashing.
func waitComponents(ctx context.Context, c Config, names []string) error {
	for {
		st, _ := supervisor.ReadStatus(c.PidDir())
		ready := true
		for _, n := range names {
			s, ok := st[n]
			if !ok || !s.Ready {
				ready = false
			}
			if ok && s.Restarts >= maxStartRestarts {
				return fmt.Errorf("%s keeps exiting (%d restarts, last: %s); end of %s:\n%s",
					n, s.Restarts, s.LastExit, filepath.Join(c.LogDir(), n+".log"), logTail(filepath.Join(c.LogDir(), n+".log"), 15))
			}
		}
		if ready {
			return nil
		}
		if _, alive := proc.Alive(SupervisorPidFile(c.StateDir)); !alive {
			return fmt.Errorf("the supervisor exited; end of %s:\n%s", filepath.Join(c.LogDir(), "supervisor.log"),
				logTail(filepath.Join(c.LogDir(), "supervisor.log"), 15))
		}
		select {
		case <-ctx.Done():
			var waiting []string
			for _, n := range names {
				if !st[n].Ready {
					waiting = append(waiting, n)
				}
			}
			return fmt.Errorf("timed out waiting for %s; see the logs in %s", strings.Join(waiting, ", "), c.LogDir())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func logTail(file string, lines int) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return "  (no log)"
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return "  " + strings.Join(all, "\n  ")
}

// installAddons applies cluster DNS and kok itself.
func (c *Config) installAddons(ctx context.Context, cfg *rest.Config, bins Binaries) error {
	cl, err := client.New(cfg, client.Options{})
	if err != nil {
		return err
	}
	var dns bytes.Buffer
	tmpl := template.Must(template.New("coredns").Parse(corednsManifest))
	if err := tmpl.Execute(&dns, map[string]string{"Domain": c.DNSDomain, "Image": CoreDNSImage(), "ClusterIP": c.DNSServiceIP().String()}); err != nil {
		return err
	}
	if err := retryApply(ctx, cl, dns.Bytes()); err != nil {
		return fmt.Errorf("installing CoreDNS: %w", err)
	}
	manifests, err := kokconfig.Manifests()
	if err != nil {
		return err
	}
	ref, err := ManagerImage(bins.Manager)
	if err != nil {
		return err
	}
	manifests = bytes.ReplaceAll(manifests, []byte(kokconfig.ManagerImagePlaceholder), []byte(ref))
	// The image exists only in this node's containerd.
	manifests = bytes.ReplaceAll(manifests, []byte("imagePullPolicy: IfNotPresent"), []byte("imagePullPolicy: Never"))
	if err := retryApply(ctx, cl, manifests); err != nil {
		return fmt.Errorf("installing kok: %w", err)
	}
	return nil
}

// retryApply applies manifests, retrying while the apiserver is still
// settling (default RBAC, new CRDs not yet served).
func retryApply(ctx context.Context, cl client.Client, manifests []byte) error {
	var err error
	for {
		if err = kube.Apply(ctx, cl, manifests); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// waitNodeReady waits for the node to be Ready with a kubelet that renewed
// its node lease after since, so a status left from before a restart does
// not count.
func waitNodeReady(ctx context.Context, cs kubernetes.Interface, name string, since time.Time) error {
	var last string
	for {
		node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					if cond.Status == corev1.ConditionTrue {
						lease, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, name, metav1.GetOptions{})
						if err == nil && lease.Spec.RenewTime != nil && !lease.Spec.RenewTime.Time.Before(since.Truncate(time.Second)) {
							return nil
						}
						last = "kubelet has not renewed its lease yet"
						continue
					}
					last = cond.Reason + ": " + cond.Message
				}
			}
		case apierrors.IsNotFound(err):
			last = "not registered yet"
		default:
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s not Ready: %s", name, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// waitDeployment waits until every replica of a Deployment is a pod that
// became Ready after since: a Deployment status left from before a restart
// does not count.
func waitDeployment(ctx context.Context, cs kubernetes.Interface, ns, name string, since time.Time) error {
	var last string
	for {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			want := int32(1)
			if d.Spec.Replicas != nil {
				want = *d.Spec.Replicas
			}
			ready, err := freshReadyPods(ctx, cs, ns, d.Spec.Selector, since)
			if err == nil && ready >= want && d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == want {
				return nil
			}
			last = fmt.Sprintf("%d/%d pods ready", ready, want)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("deployment %s/%s not ready (%s); kubectl -n %s describe pods", ns, name, last, ns)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func freshReadyPods(ctx context.Context, cs kubernetes.Interface, ns string, sel *metav1.LabelSelector, since time.Time) (int32, error) {
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(sel)})
	if err != nil {
		return 0, err
	}
	var n int32
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue &&
				!cond.LastTransitionTime.Time.Before(since.Truncate(time.Second)) {
				n++
			}
		}
	}
	return n, nil
}
