package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeonkube/kok/internal/clusterctl"
	"github.com/kubeonkube/kok/internal/local"
	"github.com/kubeonkube/kok/internal/local/hosts"
	"github.com/kubeonkube/kok/internal/local/versions"
)

// AddonResult is what the addon benchmark writes.
type AddonResult struct {
	Benchmark string    `json:"benchmark"`
	Time      time.Time `json:"time"`
	Commit    string    `json:"commit"`
	Machine   Machine   `json:"machine"`
	Nodes     int       `json:"nodes"`
	// From nothing (hosts up, nothing installed on them): the KubeCluster
	// and its Machines applied at once → control plane Ready → every
	// Machine Ready (needs the CNI addon) → the default addons Healthy →
	// a web app answers through a NodePort Service. Each mark is seconds
	// since the KubeCluster was applied.
	ControlPlaneS   float64 `json:"controlPlaneSeconds"`
	MachinesReadyS  float64 `json:"machinesReadySeconds"`
	AddonsHealthyS  float64 `json:"addonsHealthySeconds"`
	ServiceAnswersS float64 `json:"serviceAnswersSeconds"`
	// PutBackSeconds: CoreDNS's Deployment deleted in the business
	// cluster → a new one exists; EditRevertSeconds: kube-proxy's
	// DaemonSet edited → the edit reverted.
	PutBackSeconds    []float64 `json:"putBackSeconds"`
	EditRevertSeconds []float64 `json:"editRevertSeconds"`
	// Cost, from the kubelets' summary API (what metrics-server reads),
	// idle: per node (flannel + kube-proxy pods) and per cluster (CoreDNS,
	// metrics-server).
	PerNodeMemMiB       float64 `json:"perNodeMemMiB"`
	PerNodeCPUMillis    float64 `json:"perNodeCPUMillicores"`
	PerClusterMemMiB    float64 `json:"perClusterMemMiB"`
	PerClusterCPUMillis float64 `json:"perClusterCPUMillicores"`
	// The konnectivity proxy server beside the (one) apiserver, in the
	// meta cluster: resident memory and idle CPU of its process.
	ProxyServerMemMiB    float64 `json:"proxyServerMemMiB"`
	ProxyServerCPUMillis float64 `json:"proxyServerCPUMillicores"`
	// LogsSeconds: kubectl logs of a pod on each node, 30 times, through
	// the apiserver, the proxy server and the node's agent;
	// DirectLogsSeconds the same once konnectivity is removed from the
	// cluster (the apiserver dials the kubelets itself, which this
	// machine's meta cluster can).
	LogsSeconds       []float64 `json:"logsSeconds"`
	DirectLogsSeconds []float64 `json:"directLogsSeconds"`
	Err               string    `json:"error,omitempty"`
}

func benchAddons(out, kokBin, cacheDir string) {
	res := &AddonResult{Benchmark: "addons", Time: time.Now().UTC(), Commit: gitCommit(), Machine: machine(), Nodes: 3}
	res.Err = onMetaCluster("addons", kokBin, cacheDir, func(ctx context.Context, c client.Client, cfg *local.Config) error {
		defer func() { _, _ = hosts.DeleteAll(context.Background(), cfg.StateDir) }()
		return runAddonBench(ctx, res, c, cfg, kokBin)
	})
	writeAddons(out, res)
}

func runAddonBench(ctx context.Context, res *AddonResult, c client.Client, cfg *local.Config, kokBin string) error {
	const cluster = "addons"
	hs, err := newHosts(ctx, cfg, kokBin, "addons", res.Nodes)
	if err != nil {
		return err
	}
	start := time.Now()
	since := func() float64 { return time.Since(start).Seconds() }
	kc, err := createWithMachines(ctx, c, cfg, cluster, hs)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := clusterctl.Wait(wctx, c, kc, io.Discard); err != nil {
		return err
	}
	res.ControlPlaneS = since()
	fmt.Printf("control plane Ready at %.1fs\n", res.ControlPlaneS)
	if err := poll(wctx, func() error { return machinesReady(ctx, c, cluster, hs) }); err != nil {
		return err
	}
	res.MachinesReadyS = since()
	fmt.Printf("machines Ready at %.1fs\n", res.MachinesReadyS)
	if err := poll(wctx, func() error {
		return addonsHealthy(ctx, c, cluster, []string{"kube-proxy", "flannel", "coredns", "metrics-server", "konnectivity"})
	}); err != nil {
		return err
	}
	res.AddonsHealthyS = since()
	fmt.Printf("addons Healthy at %.1fs\n", res.AddonsHealthyS)
	if err := c.Get(ctx, client.ObjectKeyFromObject(kc), kc); err != nil {
		return err
	}
	bc, err := businessClient(ctx, c, kc)
	if err != nil {
		return err
	}
	nodePort, err := deployWebApp(ctx, bc)
	if err != nil {
		return err
	}
	entry := net.JoinHostPort(hs[0].Address, fmt.Sprint(nodePort))
	hc := &http.Client{Timeout: 2 * time.Second}
	if err := poll(wctx, func() error {
		resp, err := hc.Get("http://" + entry + "/hostname")
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		return nil
	}); err != nil {
		return err
	}
	res.ServiceAnswersS = since()
	fmt.Printf("a pod answered through the NodePort at %.1fs\n", res.ServiceAnswersS)

	// Idle cost, once the workloads settled (before the edits below roll
	// kube-proxy).
	// Three samples 10 s apart after 30 s, averaged.
	time.Sleep(20 * time.Second)
	const samples = 3
	var nodeMem, nodeCPU, clusterMem, clusterCPU float64
	for range samples {
		time.Sleep(10 * time.Second)
		for _, h := range hs {
			pods, err := podStats(ctx, bc, h.Name)
			if err != nil {
				return err
			}
			for _, p := range pods {
				if p.PodRef.Namespace != "kube-system" {
					continue
				}
				mem, cpu := float64(p.Memory.WorkingSetBytes)/(1<<20), float64(p.CPU.UsageNanoCores)/1e6
				switch {
				case strings.HasPrefix(p.PodRef.Name, "kube-flannel-"), strings.HasPrefix(p.PodRef.Name, "kube-proxy-"),
					strings.HasPrefix(p.PodRef.Name, "konnectivity-agent-"):
					nodeMem, nodeCPU = nodeMem+mem, nodeCPU+cpu
				case strings.HasPrefix(p.PodRef.Name, "coredns-"), strings.HasPrefix(p.PodRef.Name, "metrics-server-"):
					clusterMem, clusterCPU = clusterMem+mem, clusterCPU+cpu
				}
			}
		}
	}
	n := float64(len(hs) * samples)
	res.PerNodeMemMiB, res.PerNodeCPUMillis = nodeMem/n, nodeCPU/n
	res.PerClusterMemMiB, res.PerClusterCPUMillis = clusterMem/samples, clusterCPU/samples
	if res.ProxyServerMemMiB, res.ProxyServerCPUMillis, err = proxyServerUsage(20 * time.Second); err != nil {
		return err
	}

	// kubectl logs through the tunnels, a pod on each node in turn.
	pods, err := bc.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(pods.Items) == 0 {
		return fmt.Errorf("the web pods: %d (%v)", len(pods.Items), err)
	}
	if res.LogsSeconds, err = timeLogs(ctx, bc, pods.Items); err != nil {
		return err
	}

	// Put back and revert, five times each.
	deps, dss := bc.AppsV1().Deployments("kube-system"), bc.AppsV1().DaemonSets("kube-system")
	for i := range 5 {
		old, err := deps.Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			return err
		}
		t0 := time.Now()
		if err := deps.Delete(ctx, "coredns", metav1.DeleteOptions{}); err != nil {
			return err
		}
		if err := poll(wctx, func() error {
			d, err := deps.Get(ctx, "coredns", metav1.GetOptions{})
			if err != nil || d.UID == old.UID {
				return fmt.Errorf("not back")
			}
			return nil
		}); err != nil {
			return err
		}
		res.PutBackSeconds = append(res.PutBackSeconds, time.Since(t0).Seconds())
		t0 = time.Now()
		cpu := fmt.Sprintf("%dm", 50+i)
		edit := []byte(`[{"op":"replace","path":"/spec/template/spec/containers/0/resources/requests/cpu","value":"` + cpu + `"}]`)
		if _, err := dss.Patch(ctx, "kube-proxy", types.JSONPatchType, edit, metav1.PatchOptions{}); err != nil {
			return err
		}
		if err := poll(wctx, func() error {
			ds, err := dss.Get(ctx, "kube-proxy", metav1.GetOptions{})
			if err != nil || ds.Spec.Template.Spec.Containers[0].Resources.Requests.Cpu().String() == cpu {
				return fmt.Errorf("not reverted")
			}
			return nil
		}); err != nil {
			return err
		}
		res.EditRevertSeconds = append(res.EditRevertSeconds, time.Since(t0).Seconds())
		time.Sleep(3 * time.Second) // let the rollouts the edits started settle
	}
	fmt.Printf("put back %v, reverted %v\n", res.PutBackSeconds, res.EditRevertSeconds)

	// The same logs without konnectivity: taken out of spec.addons, the
	// apiservers roll without their proxy servers and dial the kubelets.
	var addons []map[string]string
	for _, a := range kc.Spec.Addons {
		if a.Name != "konnectivity" {
			addons = append(addons, map[string]string{"name": a.Name})
		}
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"addons": addons}})
	if err := c.Patch(ctx, kc, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return err
	}
	if err := poll(wctx, func() error {
		d := &appsv1.Deployment{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: cluster, Name: cluster + "-kube-apiserver"}, d); err != nil {
			return err
		}
		if len(d.Spec.Template.Spec.Containers) != 1 || d.Status.ObservedGeneration < d.Generation ||
			d.Status.UpdatedReplicas != *d.Spec.Replicas || d.Status.Replicas != *d.Spec.Replicas || d.Status.AvailableReplicas != *d.Spec.Replicas {
			return fmt.Errorf("the apiservers have not rolled without konnectivity")
		}
		return nil
	}); err != nil {
		return err
	}
	if err := poll(wctx, func() error {
		_, err := bc.CoreV1().Pods("default").GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{TailLines: ptr.To[int64](1)}).DoRaw(ctx)
		return err
	}); err != nil {
		return err
	}
	if res.DirectLogsSeconds, err = timeLogs(ctx, bc, pods.Items); err != nil {
		return err
	}

	return nil
}

// deployWebApp runs agnhost netexec, one pod per node, behind a NodePort
// Service, and returns the port.
func deployWebApp(ctx context.Context, bc kubernetes.Interface) (int32, error) {
	labels := map[string]string{"app": "web"}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To(int32(3)), Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "netexec", Image: local.AgnhostImage(versions.DefaultKubernetes()), Args: []string{"netexec", "--http-port=8080"}}}}}}}
	if _, err := bc.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeNodePort, Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	got, err := bc.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return 0, err
	}
	return got.Spec.Ports[0].NodePort, nil
}

// timeLogs times 30 kubectl logs calls, a pod in turn.
func timeLogs(ctx context.Context, bc kubernetes.Interface, pods []corev1.Pod) ([]float64, error) {
	var out []float64
	for i := range 30 {
		p := pods[i%len(pods)]
		t0 := time.Now()
		if _, err := bc.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{TailLines: ptr.To[int64](1)}).DoRaw(ctx); err != nil {
			return out, fmt.Errorf("logs of %s: %w", p.Name, err)
		}
		out = append(out, time.Since(t0).Seconds())
	}
	return out, nil
}

// proxyServerUsage is the resident memory (MiB) and the CPU (millicores,
// over window) of the konnectivity proxy server processes on this machine:
// the bench's one cluster has one.
func proxyServerUsage(window time.Duration) (float64, float64, error) {
	pids := processes("proxy-server")
	if len(pids) == 0 {
		return 0, 0, fmt.Errorf("no konnectivity proxy server runs")
	}
	ticks := func() (t float64) {
		for _, pid := range pids {
			t += procCPUTicks(pid)
		}
		return t
	}
	before := ticks()
	time.Sleep(window)
	var kb int
	for _, pid := range pids {
		kb += procStatusKB(pid, "VmRSS:")
	}
	// USER_HZ is 100 on Linux.
	return float64(kb) / 1024, (ticks() - before) / 100 / window.Seconds() * 1000, nil
}

// podStat is the part of a kubelet's stats/summary this bench reads.
type podStat struct {
	PodRef struct{ Name, Namespace string } `json:"podRef"`
	CPU    struct {
		UsageNanoCores uint64 `json:"usageNanoCores"`
	} `json:"cpu"`
	Memory struct {
		WorkingSetBytes uint64 `json:"workingSetBytes"`
	} `json:"memory"`
}

// podStats reads a node's pod statistics through the apiserver.
func podStats(ctx context.Context, bc kubernetes.Interface, node string) ([]podStat, error) {
	raw, err := bc.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", node, "proxy", "stats", "summary").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("stats of node %s: %w", node, err)
	}
	var s struct {
		Pods []podStat `json:"pods"`
	}
	return s.Pods, json.Unmarshal(raw, &s)
}

// poll retries f every 100 ms until it succeeds or ctx ends.
func poll(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func writeAddons(dir string, res *AddonResult) {
	saveJSON(dir, "addons", res.Time, res.Commit, res)
	var b strings.Builder
	fmt.Fprintf(&b, "# Addons benchmark\n\n%s, commit %s, %s (%d CPUs).\n\n", res.Time.Format(time.RFC3339), res.Commit, res.Machine.CPUModel, res.Machine.CPUs)
	if res.Err != "" {
		fmt.Fprintf(&b, "**Failed:** %s\n\n", res.Err)
	}
	fmt.Fprintf(&b, "From nothing (%d hosts up, nothing installed on them), the KubeCluster and its Machines applied at once:\n\n", res.Nodes)
	fmt.Fprintf(&b, "| mark | seconds since the KubeCluster was applied |\n|---|---|\n")
	fmt.Fprintf(&b, "| control plane Ready | %.1f |\n| every Machine Ready (a node is Ready once flannel wrote its CNI configuration) | %.1f |\n", res.ControlPlaneS, res.MachinesReadyS)
	fmt.Fprintf(&b, "| kube-proxy, flannel, CoreDNS, metrics-server and konnectivity Healthy | %.1f |\n| a pod answers through a NodePort Service | %.1f |\n\n", res.AddonsHealthyS, res.ServiceAnswersS)
	fmt.Fprintf(&b, "| kept at final state (5 times each) | time |\n|---|---|\n")
	fmt.Fprintf(&b, "| CoreDNS Deployment deleted → back | %s |\n| kube-proxy DaemonSet edited → reverted | %s |\n\n", fmtSeconds(res.PutBackSeconds), fmtSeconds(res.EditRevertSeconds))
	fmt.Fprintf(&b, "| idle cost (kubelet summary API: working set, CPU) | memory | CPU |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| per node: flannel (flanneld + kok-cni), kube-proxy and the konnectivity agent | %.1f MiB | %.1f mcores |\n", res.PerNodeMemMiB, res.PerNodeCPUMillis)
	fmt.Fprintf(&b, "| per cluster: CoreDNS and metrics-server (1 replica each) | %.1f MiB | %.1f mcores |\n", res.PerClusterMemMiB, res.PerClusterCPUMillis)
	fmt.Fprintf(&b, "| per apiserver, in the meta cluster: the konnectivity proxy server (resident, /proc) | %.1f MiB | %.1f mcores |\n\n", res.ProxyServerMemMiB, res.ProxyServerCPUMillis)
	fmt.Fprintf(&b, "| through konnectivity (30 calls, a pod on each node in turn) | time |\n|---|---|\n")
	if len(res.LogsSeconds) > 0 {
		fmt.Fprintf(&b, "| kubectl logs: apiserver → proxy server → the node's agent → kubelet | median %.0f ms, max %.0f ms |\n",
			median(res.LogsSeconds)*1000, slices.Max(res.LogsSeconds)*1000)
	}
	if len(res.DirectLogsSeconds) > 0 {
		fmt.Fprintf(&b, "| the same with konnectivity removed (apiserver → kubelet) | median %.0f ms, max %.0f ms |\n",
			median(res.DirectLogsSeconds)*1000, slices.Max(res.DirectLogsSeconds)*1000)
	}
	b.WriteString(addonNotes)
	if err := os.WriteFile(filepath.Join(dir, "addons.md"), []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
}

const addonNotes = `
Notes: "Machine Ready" covers day 0 on three fresh hosts at once (SSH, kok-agent, containerd, runc, CNI plugins and
the kubelet fetched from kok's registry, the node joined) and the flannel pod pulled and running, after the
control plane is up. Put-back and revert are event-driven (watches on the business cluster), not the 30 s resync.
The cost is sampled three times 10 s apart, 30 s after the web app answered, before the edits roll kube-proxy,
on a 2-CPU machine that also runs the meta cluster and the control plane. The proxy server's numbers are its
process's resident memory and CPU over 20 s, read from /proc on the meta cluster's machine.
`
