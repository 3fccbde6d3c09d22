package local

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeonkube/kok/internal/local/proc"
	"github.com/kubeonkube/kok/internal/local/supervisor"
)

// ComponentStatus is one supervised component as seen now.
type ComponentStatus struct {
	Name     string
	PID      int
	Running  bool
	Ready    bool
	Restarts int
	Since    time.Time
	RSS      int64
}

// Components reports each supervised component of a state directory.
func Components(stateDir string) ([]ComponentStatus, bool, error) {
	c, err := LoadConfig(stateDir)
	if err != nil {
		return nil, false, err
	}
	_, supAlive := proc.Alive(SupervisorPidFile(stateDir))
	st, _ := supervisor.ReadStatus(c.PidDir())
	var out []ComponentStatus
	for _, n := range ComponentNames {
		cs := ComponentStatus{Name: n}
		if id, alive := proc.Alive(supervisor.PidFile(c.PidDir(), n)); alive {
			cs.PID, cs.Running = id.PID, true
			cs.RSS, _ = proc.RSS(id.PID)
		}
		if s, ok := st[n]; ok && supAlive {
			cs.Ready = s.Ready && cs.Running
			cs.Restarts = s.Restarts
			cs.Since = s.Started
		}
		out = append(out, cs)
	}
	return out, supAlive, nil
}

// PrintStatus writes what runs: supervised processes, then the node and the
// pods kok put in the cluster.
func PrintStatus(ctx context.Context, stateDir string, w io.Writer) error {
	comps, supAlive, err := Components(stateDir)
	if err != nil {
		return fmt.Errorf("no kok meta cluster in %s (kok up creates one): %w", stateDir, err)
	}
	c, _ := LoadConfig(stateDir)
	if supAlive {
		fmt.Fprintf(w, "kok meta cluster (state %s): supervisor running\n\n", stateDir)
	} else {
		fmt.Fprintf(w, "kok meta cluster (state %s): supervisor NOT running (kok up restarts it)\n\n", stateDir)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tPID\tREADY\tRESTARTS\tUP\tRSS")
	for _, s := range comps {
		pid, up, rss := "-", "-", "-"
		if s.Running {
			pid = fmt.Sprint(s.PID)
			rss = fmt.Sprintf("%dMi", s.RSS>>20)
			if !s.Since.IsZero() {
				up = time.Since(s.Since).Round(time.Second).String()
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%s\t%s\n", s.Name, pid, s.Ready, s.Restarts, up, rss)
	}
	tw.Flush()
	if !supAlive {
		return nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return err
	}
	cfg.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(w, "\napiserver: %v\n", err)
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tREADY\tVERSION")
	for _, n := range nodes.Items {
		ready := "Unknown"
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				ready = string(cond.Status)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", n.Name, ready, n.Status.NodeInfo.KubeletVersion)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tPOD\tPHASE\tREADY")
	for _, ns := range []string{"kube-system", "kok-system"} {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			continue
		}
		for _, p := range pods.Items {
			ready := false
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					ready = true
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", ns, p.Name, p.Status.Phase, ready)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nexport KUBECONFIG=%s\n", c.Kubeconfig())
	return nil
}
