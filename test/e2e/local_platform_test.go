//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/local/image"
	"github.com/kubeonkube/kok/internal/local/proc"
	"github.com/kubeonkube/kok/internal/local/supervisor"
)

const testImage = image.Prefix + "kok-e2e-testapp:v1"

// TestPlatform brings a meta cluster up from an empty state directory, runs
// a locally built image behind a ClusterIP Service, reaches it from another
// pod, survives a component crash and a whole-node crash, and checks that
// kok down leaves nothing of its own behind.
func TestPlatform(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the e2e tests need root (they run containerd and a kubelet)")
	}
	if _, alive := proc.Alive(local.SupervisorPidFile(local.DefaultConfig().StateDir)); alive {
		t.Fatal("a kok meta cluster already runs from /var/lib/kok; stop it with `kok down` before the e2e tests")
	}
	stateDir, err := os.MkdirTemp("/var/lib", "kok-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	downDone := false
	t.Cleanup(func() {
		if !downDone {
			_, _ = kok(t, stateDir, "down")
		}
		if !t.Failed() {
			_, _ = kok(t, stateDir, "down", "--purge")
		} else {
			t.Logf("state kept for inspection in %s (kok down --purge --state-dir %s removes it)", stateDir, stateDir)
		}
	})

	out := mustKok(t, stateDir, "up")
	if !strings.Contains(out, "kok meta cluster is up") {
		t.Fatalf("kok up did not report success:\n%s", out)
	}
	cfg, err := local.LoadConfig(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	cs := clientset(t, cfg.Kubeconfig())
	ctx := context.Background()

	t.Run("up ends with a demo business cluster that answers", func(t *testing.T) {
		if !strings.Contains(out, "kok kubectl --kubeconfig "+cfg.DemoKubeconfig()+" get nodes") {
			t.Fatalf("kok up did not print the line that uses the demo cluster:\n%s", out)
		}
		demo := clientset(t, cfg.DemoKubeconfig())
		nss, err := demo.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(nss.Items) < 4 {
			t.Fatalf("demo cluster namespaces: %v", nss.Items)
		}
		if v, err := demo.Discovery().ServerVersion(); err != nil || v.GitVersion != cfg.KubernetesVersion {
			t.Fatalf("demo cluster version %v, %v", v, err)
		}
		// Its nodes are two local hosts the machine operator joined.
		nodes, err := demo.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ready := 0
		for _, n := range nodes.Items {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && n.Status.NodeInfo.KubeletVersion == cfg.KubernetesVersion {
					ready++
				}
			}
		}
		if ready != len(local.DemoMachines) {
			t.Fatalf("demo cluster: %d Ready nodes at %s, want %d (%v)", ready, cfg.KubernetesVersion, len(local.DemoMachines), nodes.Items)
		}
	})

	t.Run("up again reports the running cluster", func(t *testing.T) {
		out := mustKok(t, stateDir, "up")
		if !strings.Contains(out, "already running") {
			t.Fatalf("second kok up: want 'already running', got:\n%s", out)
		}
	})

	t.Run("node reports the pinned version", func(t *testing.T) {
		node, err := cs.CoreV1().Nodes().Get(ctx, cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := node.Status.NodeInfo.KubeletVersion; got != cfg.KubernetesVersion {
			t.Fatalf("kubelet version %q, want %q", got, cfg.KubernetesVersion)
		}
		v, err := cs.Discovery().ServerVersion()
		if err != nil {
			t.Fatal(err)
		}
		if v.GitVersion != cfg.KubernetesVersion {
			t.Fatalf("apiserver version %q, want %q", v.GitVersion, cfg.KubernetesVersion)
		}
	})

	importTestImage(t, cfg)

	t.Run("workload reachable through a ClusterIP Service", func(t *testing.T) {
		svcIP := deployEcho(t, cfg)
		for _, url := range []string{
			"http://" + svcIP + "/",
			"http://echo.default.svc." + cfg.DNSDomain + "/",
		} {
			name := "client-" + strconv.FormatInt(time.Now().UnixNano()%100000, 10)
			log := runPodToCompletion(t, cs, clientPod(name, url), 2*time.Minute)
			if !strings.Contains(log, "kok-e2e echo-") {
				t.Fatalf("client got %q from %s, want an echo pod's answer", log, url)
			}
		}
	})

	t.Run("a claim gets a local volume, wiped when released", func(t *testing.T) {
		pvc := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "default"},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}},
			},
		}
		if _, err := cs.CoreV1().PersistentVolumeClaims("default").Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		writer := clientPod("writer", "")
		writer.Spec.Containers[0].Args = []string{"write", "/data/hello", "kept"}
		writer.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		writer.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}}
		runPodToCompletion(t, cs, writer, 2*time.Minute)
		bound, err := cs.CoreV1().PersistentVolumeClaims("default").Get(ctx, "data", metav1.GetOptions{})
		if err != nil || bound.Status.Phase != corev1.ClaimBound {
			t.Fatalf("claim not bound: %v %v", bound.Status.Phase, err)
		}
		pv, err := cs.CoreV1().PersistentVolumes().Get(ctx, bound.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dir := pv.Spec.HostPath.Path
		if got, err := os.ReadFile(filepath.Join(dir, "hello")); err != nil || string(got) != "kept" {
			t.Fatalf("volume content %q, %v", got, err)
		}
		_ = cs.CoreV1().Pods("default").Delete(ctx, "writer", metav1.DeleteOptions{})
		if err := cs.CoreV1().PersistentVolumeClaims("default").Delete(ctx, "data", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, "released volume removed", func() error {
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				return fmt.Errorf("%s still exists", dir)
			}
			if _, err := cs.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{}); err == nil {
				return fmt.Errorf("PV %s still exists", pv.Name)
			}
			return nil
		})
	})

	t.Run("status shows every component", func(t *testing.T) {
		out := mustKok(t, stateDir, "status")
		for _, c := range local.ComponentNames {
			if !strings.Contains(out, c) {
				t.Errorf("kok status lacks %s:\n%s", c, out)
			}
		}
		if strings.Contains(out, "NOT running") {
			t.Errorf("kok status says the supervisor is not running:\n%s", out)
		}
	})

	t.Run("a crashed component is restarted", func(t *testing.T) {
		file := supervisor.PidFile(cfg.PidDir(), local.Scheduler)
		id, alive := proc.Alive(file)
		if !alive {
			t.Fatal("kube-scheduler not running")
		}
		if err := syscall.Kill(id.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, "kube-scheduler restarted and ready", func() error {
			st, err := supervisor.ReadStatus(cfg.PidDir())
			if err != nil {
				return err
			}
			s := st[local.Scheduler]
			if s.PID == id.PID || !s.Ready || s.Restarts < 1 {
				return fmt.Errorf("state %+v", s)
			}
			return nil
		})
	})

	t.Run("kok up recovers after everything crashed", func(t *testing.T) {
		// Simulate a crash: SIGKILL the supervisor first (so nothing
		// restarts), then every component.
		sup, alive := proc.Alive(local.SupervisorPidFile(stateDir))
		if !alive {
			t.Fatal("supervisor not running")
		}
		_ = syscall.Kill(sup.PID, syscall.SIGKILL)
		for _, n := range local.ComponentNames {
			if id, alive := proc.Alive(supervisor.PidFile(cfg.PidDir(), n)); alive {
				_ = syscall.Kill(id.PID, syscall.SIGKILL)
			}
		}
		out := mustKok(t, stateDir, "up")
		if !strings.Contains(out, "kok meta cluster is up") {
			t.Fatalf("kok up after a crash:\n%s", out)
		}
		// State survived: the workload is still declared and runs again.
		waitPodsReady(t, cs, "default", "app=echo", 2, 3*time.Minute)
		log := runPodToCompletion(t, cs, clientPod("client-after-crash", "http://echo.default.svc."+cfg.DNSDomain+"/"), 2*time.Minute)
		if !strings.Contains(log, "kok-e2e echo-") {
			t.Fatalf("client after recovery got %q", log)
		}
	})

	t.Run("down leaves nothing behind", func(t *testing.T) {
		ours := ourProcesses(cfg)
		if len(ours) == 0 {
			t.Fatal("found no processes of the cluster before kok down")
		}
		mustKok(t, stateDir, "down")
		downDone = true
		var left []string
		for pid, what := range ours {
			if id, err := proc.Self(pid); err == nil && id.Running() {
				left = append(left, fmt.Sprintf("%d (%s)", pid, what))
			}
		}
		for pid, what := range ourProcesses(cfg) {
			left = append(left, fmt.Sprintf("%d (%s)", pid, what))
		}
		if len(left) > 0 {
			t.Fatalf("processes left after kok down: %v", left)
		}
		if err := exec.Command("ip", "link", "show", cfg.Bridge).Run(); err == nil {
			t.Errorf("bridge %s still exists", cfg.Bridge)
		}
		rules, _ := exec.Command("iptables-save").Output()
		for _, chain := range []string{local.GuardChain, "KUBE-", "CNI-"} {
			if strings.Contains(string(rules), chain) {
				t.Errorf("iptables still holds %s rules", chain)
			}
		}
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		if strings.Contains(string(mounts), stateDir) {
			t.Errorf("mounts remain under %s", stateDir)
		}
	})
}

// ourProcesses finds processes that belong to the cluster: recorded in its
// pid files, running a binary from kok's cache or bin dirs, or naming its
// state or run directory on their command line (containerd shims).
func ourProcesses(cfg *local.Config) map[int]string {
	found := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		args := strings.ReplaceAll(string(cmdline), "\x00", " ")
		exe, _ := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if strings.Contains(args, cfg.StateDir) || strings.Contains(args, cfg.RunDir+"/") ||
			strings.HasPrefix(exe, cfg.CacheDir) {
			if strings.HasPrefix(args, kokPrefix()) && strings.Contains(args, " down") {
				continue
			}
			found[pid] = strings.TrimSpace(args)
		}
	}
	return found
}

func kokPrefix() string { return filepath.Join(repoRoot(), "bin", "kok") }

// importTestImage builds testapp statically and imports it as testImage.
func importTestImage(t *testing.T, cfg *local.Config) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "testapp")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./test/e2e/testapp")
	build.Dir = repoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building testapp: %v\n%s", err, out)
	}
	img, err := image.Build(image.Spec{Ref: testImage,
		Layers:     [][]image.File{{{Src: bin, Dst: "/testapp", Mode: 0o755}}},
		Entrypoint: []string{"/testapp"}})
	if err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(t.TempDir(), "testapp.tar")
	if err := image.WriteTarball(tarball, map[string]v1.Image{testImage: img}); err != nil {
		t.Fatal(err)
	}
	ctr := &image.Containerd{Address: cfg.ContainerdSocket(), Namespace: "k8s.io"}
	if err := ctr.Import(context.Background(), tarball); err != nil {
		t.Fatal(err)
	}
}

// deployEcho runs two testapp servers behind a ClusterIP Service and
// returns the Service address.
func deployEcho(t *testing.T, cfg *local.Config) string {
	t.Helper()
	cs := clientset(t, cfg.Kubeconfig())
	ctx := context.Background()
	labels := map[string]string{"app": "echo"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "echo", Image: testImage, ImagePullPolicy: corev1.PullNever, Args: []string{"serve"},
					Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
						HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
				}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	created, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitPodsReady(t, cs, "default", "app=echo", 2, 2*time.Minute)
	return created.Spec.ClusterIP
}

func clientPod(name, url string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "client", Image: testImage, ImagePullPolicy: corev1.PullNever,
				Args: []string{"get", url, "kok-e2e echo-"}}},
		},
	}
}
