package machine

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
	"github.com/kubeonkube/kok/internal/agent"
	"github.com/kubeonkube/kok/internal/conditions"
)

// act brings the host one step closer to what st.desired says: the
// desired state published in the business cluster (where the agent reads
// it once the node joined), and, on a pass that reached the host over SSH,
// the agent binary in place, the join credentials while the node has not
// joined and the desired state handed to the agent when it differs from
// what the agent last reported; then the node's labels and taints, its
// certificate requests, and the bootstrap token gone once it joined.
func (r *Reconciler) act(ctx context.Context, m *nodev1.Machine, st *state) error {
	if st.desired == nil || (st.host == nil && !st.viaCluster) {
		return nil
	}
	stale := st.report == nil || st.report.Desired != st.desired.Hash()
	// Joined but no fresh heartbeat: the agent may be getting its
	// certificate, or its Lease, Secret or RBAC may be gone; put them back.
	repair := st.node != nil && !st.viaCluster
	if stale || repair {
		published, err := publishDesired(ctx, st.workload.Client, m, st.desired, repair)
		if err != nil {
			return err
		}
		st.submitted = published && stale
	}
	if st.host != nil {
		if err := r.day0(ctx, m, st, stale); err != nil {
			return err
		}
	}
	if st.node != nil {
		if !nodeMetadataCurrent(st.node, m) {
			if err := applyNodeMetadata(ctx, st.workload.Client, m); err != nil {
				return err
			}
		}
		refused, err := approveCSRs(ctx, st.workload.Client, m)
		if err != nil {
			return err
		}
		st.refusedCSRs = refused
		if st.host != nil || !conditions.IsTrue(m.Status.Conditions, nodev1.MachineNodeJoined) {
			if err := deleteToken(ctx, st.workload.Client, m); err != nil {
				return err
			}
		}
	}
	return nil
}

// day0 is what only SSH can do: put the agent binary and the join
// credentials on the host and hand the agent its desired state.
func (r *Reconciler) day0(ctx context.Context, m *nodev1.Machine, st *state, stale bool) error {
	agentC := st.desired.Components[indexOf(st.desired, AgentComponent)]
	if len(agentC.Artifacts) == 0 {
		return fmt.Errorf("component %s has no artifact: its first artifact must be the agent binary", AgentComponent)
	}
	bin := agentC.Artifacts[0]
	if st.agentDigest != bin.Digest {
		data, err := r.Registry.Fetch(ctx, bin)
		if err != nil {
			return fmt.Errorf("fetching the agent: %w", err)
		}
		if err := st.host.WriteFile(ctx, bin.Path, data, 0o755); err != nil {
			return fmt.Errorf("installing the agent: %w", err)
		}
	}
	if !st.joined && st.node == nil {
		token, err := ensureToken(ctx, st.workload.Client, m, time.Now())
		if err != nil {
			return err
		}
		kubeconfig, err := bootstrapKubeconfig(st.workload.Server, st.workload.CA, token)
		if err != nil {
			return err
		}
		if sha256Digest(kubeconfig) != st.bootstrapDigest {
			if err := st.host.WriteFile(ctx, BootstrapKubeconfigPath, kubeconfig, 0o600); err != nil {
				return fmt.Errorf("writing the bootstrap kubeconfig: %w", err)
			}
		}
	}
	if !stale && st.agentRunning {
		return nil
	}
	// kok-agent apply also starts the daemon when it is not running.
	data, err := json.Marshal(st.desired)
	if err != nil {
		return err
	}
	if err := st.host.WriteFile(ctx, desiredUpload, data, 0o600); err != nil {
		return fmt.Errorf("handing the desired state to the agent: %w", err)
	}
	res, err := st.host.Run(ctx, shellQuote(bin.Path)+" apply -f "+desiredUpload+" && rm -f "+desiredUpload)
	if err != nil {
		return fmt.Errorf("handing the desired state to the agent: %w", err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("kok-agent apply: exit %d: %s", res.ExitCode, res.StderrTail(500))
	}
	st.submitted = true
	return nil
}

// teardown undoes a Machine: drain its node (PDBs respected), delete the
// Node, uninstall everything from the host, delete the bootstrap token.
// It returns done=false while something is still on its way.
func (r *Reconciler) teardown(ctx context.Context, m *nodev1.Machine, st *state) (bool, error) {
	if st.workload != nil && st.node != nil {
		blocking, err := drain(ctx, st.workload.Client, st.node.Name)
		if err != nil {
			return false, err
		}
		if len(blocking) > 0 {
			// PodDisruptionBudgets are never overridden: past
			// drainTimeout, status says which pods block.
			st.blocking = blocking
			return false, nil
		}
		if err := st.workload.Client.CoreV1().Nodes().Delete(ctx, st.node.Name, metav1.DeleteOptions{}); err != nil {
			return false, fmt.Errorf("deleting node %s: %w", st.node.Name, err)
		}
	}
	if st.host != nil {
		path := "/usr/local/bin/kok-agent"
		if st.desired != nil {
			if c := st.desired.Components[indexOf(st.desired, AgentComponent)]; len(c.Artifacts) > 0 {
				path = c.Artifacts[0].Path
			}
		}
		// A failing uninstall script fails the teardown (its stderr in
		// status) and is tried again; the agent goes last.
		script := "set -e\nif [ -x " + shellQuote(path) + " ]; then " + shellQuote(path) + " uninstall; fi\n" +
			"rm -f " + shellQuote(path) + " " + BootstrapKubeconfigPath + " " + KubeletKubeconfigPath + "\n" +
			"rmdir /etc/kubernetes 2>/dev/null || :\n"
		res, err := st.host.Run(ctx, script)
		if err != nil {
			return false, fmt.Errorf("uninstalling: %w", err)
		}
		if res.ExitCode != 0 {
			return false, fmt.Errorf("uninstalling: exit %d: %s", res.ExitCode, res.StderrTail(500))
		}
	} else if st.reachErr != nil || st.credsErr != nil {
		return false, fmt.Errorf("the host must be reached to uninstall: %v%v (remove the finalizer %s to leave the host as it is)",
			orEmpty(st.reachErr), orEmpty(st.credsErr), Finalizer)
	}
	if st.workload != nil {
		if err := unpublish(ctx, st.workload.Client, m); err != nil {
			return false, err
		}
		if err := deleteToken(ctx, st.workload.Client, m); err != nil {
			return false, err
		}
	}
	return true, nil
}

// drainTimeout: a drain that takes longer is reported as stuck, with the
// pods that block it.
const drainTimeout = 5 * time.Minute

func indexOf(d *agent.Desired, name string) int {
	for i, c := range d.Components {
		if c.Name == name {
			return i
		}
	}
	return -1
}

func orEmpty(err error) string {
	if err == nil {
		return ""
	}
	return strings.TrimSpace(err.Error())
}
