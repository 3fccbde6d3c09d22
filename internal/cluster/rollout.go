package cluster

import (
	"fmt"
)

// RolloutInput is what decides the version each component renders.
type RolloutInput struct {
	// Desired is spec.version.
	Desired string
	// Current is the version each component's Deployment renders now;
	// missing components are absent.
	Current map[string]string
	// APIServerRolledOut: every apiserver replica runs the apiserver
	// Deployment's current template and is available.
	APIServerRolledOut bool
	// EtcdCompatible: etcd runs a version the desired release supports.
	EtcdCompatible bool
}

// Rollout is the version each component is to render, and why the
// control plane is not (yet) at the desired version.
type Rollout struct {
	Targets map[string]string
	// Waiting says what holds the upgrade back; empty when nothing does.
	Waiting string
}

// PlanRollout orders an upgrade: etcd compatibility first, then every
// apiserver, then controller-manager and scheduler (never newer than the
// apiservers). Components that do not exist yet are created at the
// apiservers' version.
func PlanRollout(in RolloutInput) Rollout {
	out := Rollout{Targets: map[string]string{}}
	api, hasAPI := in.Current[APIServer]
	switch {
	case !hasAPI:
		out.Targets[APIServer] = in.Desired
	case api != in.Desired && !in.EtcdCompatible:
		out.Targets[APIServer] = api
		out.Waiting = fmt.Sprintf("waiting for etcd to run a version %s supports", in.Desired)
	default:
		out.Targets[APIServer] = in.Desired
	}
	apiDone := hasAPI && api == in.Desired && in.APIServerRolledOut
	for _, c := range []string{ControllerManager, Scheduler} {
		cur, ok := in.Current[c]
		switch {
		case apiDone:
			out.Targets[c] = in.Desired
		case ok:
			out.Targets[c] = cur
		case hasAPI:
			out.Targets[c] = api
		default:
			out.Targets[c] = in.Desired
		}
		if out.Waiting == "" && out.Targets[c] != in.Desired {
			out.Waiting = fmt.Sprintf("%s waits for every %s to run %s", c, APIServer, in.Desired)
		}
	}
	return out
}
