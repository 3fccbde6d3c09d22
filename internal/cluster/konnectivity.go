package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	corev1 "k8s.io/api/core/v1"

	"github.com/kubeonkube/kok/internal/kube"
)

// konnectivityMetric counts the agents connected to a proxy server.
const konnectivityMetric = "konnectivity_network_proxy_server_ready_backend_connections"

// serverAgents is one proxy server as observed: its pod and how many agents
// it has (err when it did not answer).
type serverAgents struct {
	pod    string
	agents int
	err    error
}

// KonnectivityAgents asks the proxy server at a pod address how many agents
// it has.
type KonnectivityAgents func(ctx context.Context, podIP string) (int, error)

// scrapeKonnectivityAgents reads the proxy server's agent count from its
// health port's /metrics.
func scrapeKonnectivityAgents(ctx context.Context, podIP string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	url := "http://" + net.JoinHostPort(podIP, fmt.Sprint(KonnectivityHealthPort)) + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", url, resp.Status)
	}
	var p expfmt.TextParser
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", url, err)
	}
	f := families[konnectivityMetric]
	if f == nil {
		return 0, fmt.Errorf("%s has no %s", url, konnectivityMetric)
	}
	n := 0.0
	for _, m := range f.GetMetric() {
		n += m.GetGauge().GetValue()
	}
	return int(n), nil
}

// proxyServerPods are the apiserver pods whose proxy server runs, by name
// and address.
func proxyServerPods(pods []corev1.Pod) map[string]string {
	out := map[string]string{}
	for i := range pods {
		p := &pods[i]
		if p.Labels[kube.LabelName] != APIServer || p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Name == "konnectivity-server" && cs.State.Running != nil {
				out[p.Name] = p.Status.PodIP
			}
		}
	}
	return out
}

// konnectivityCondition judges the tunnels from the proxy servers observed
// (servers) and whether the catalog has a proxy server to run (hasImage).
func konnectivityCondition(version string, hasImage bool, servers []serverAgents) (ok bool, reason, msg string) {
	if !hasImage {
		return false, "NoServerImage", fmt.Sprintf("KubernetesVersion %s names no konnectivityServer image: the apiservers run without proxy servers", version)
	}
	if len(servers) == 0 {
		return false, "NoServer", "no apiserver pod runs its proxy server yet"
	}
	var counts, missing []string
	for _, s := range servers {
		switch {
		case s.err != nil:
			return false, "ServerUnreachable", fmt.Sprintf("the proxy server of pod %s does not answer: %v", s.pod, s.err)
		case s.agents == 0:
			missing = append(missing, s.pod)
		}
		counts = append(counts, fmt.Sprint(s.agents))
	}
	if len(missing) > 0 {
		return false, "NoAgent", fmt.Sprintf("no konnectivity agent is connected to the proxy server of %s: agents run on the cluster's nodes (has it a Ready machine?); until one connects, kubectl logs, exec and port-forward and aggregated APIs fail",
			strings.Join(missing, ", "))
	}
	return true, "Connected", fmt.Sprintf("agents connected to each proxy server (one per apiserver): %s", strings.Join(counts, ", "))
}
