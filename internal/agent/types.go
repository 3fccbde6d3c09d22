// Package agent is kok's node agent: it keeps a host's components at
// their final state. The machine operator renders a Desired document for
// the host (every template filled in, every artifact pinned by digest),
// writes it over SSH and runs `kok-agent apply` (day 0); the agent's
// daemon (`kok-agent run`) then supervises the components' services and
// re-runs their checks, repairing what drifted, on its own. Once the node
// joined, the daemon learns later desired states from its business cluster
// and reports there (Link): the host is not reached over SSH again while
// its heartbeat is fresh.
//
// Layout on the host (Paths): desired.json (what the operator wants),
// applied/<component>.json (what was last applied, to restart only what a
// change touches), status.json (the agent's report), artifacts/ (a cache
// by digest), logs of the services.
package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	nodev1 "github.com/kubeonkube/kok/api/node/v1alpha1"
)

// Desired is everything a host must run, in install order.
type Desired struct {
	// Machine is namespace/name of the Machine this host is.
	Machine    string      `json:"machine"`
	Components []Component `json:"components"`
	// Cluster is where the agent learns later desired states and reports
	// once the node joined (nil: only through kok-agent apply).
	Cluster *ClusterLink `json:"cluster,omitempty"`
}

// Hash identifies a Desired document: the hashes of its components.
func (d *Desired) Hash() string {
	h := sha256.New()
	for _, c := range d.Components {
		h.Write([]byte(c.Name + "\x00" + c.Hash + "\x00"))
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// Component is one component's variant with every template filled in and
// every artifact pinned: what goes on the host, and the hash that says
// whether it changed.
type Component struct {
	Name       string            `json:"name"`
	Version    string            `json:"version"`
	Variant    string            `json:"variant"`
	Disruption nodev1.Disruption `json:"disruption,omitempty"`
	Artifacts  []Artifact        `json:"artifacts,omitempty"`
	Files      []File            `json:"files,omitempty"`
	Scripts    nodev1.Scripts    `json:"scripts"`
	Services   []nodev1.Service  `json:"services,omitempty"`
	// Hash covers all of the above.
	Hash string `json:"hash"`
}

// Artifact is a file fetched by digest.
type Artifact struct {
	Path string `json:"path"`
	// URL serves the content; Digest (sha256:…) is what it must hash to.
	URL    string `json:"url"`
	Digest string `json:"digest"`
	Mode   string `json:"mode,omitempty"`
}

// File is a file's final content.
type File struct {
	Path    string `json:"path"`
	Content []byte `json:"content"`
	Mode    string `json:"mode,omitempty"`
}

// ComputeHash sets c.Hash from everything else in c.
func (c *Component) ComputeHash() {
	data, _ := json.Marshal(struct {
		Name, Version string
		Artifacts     []Artifact
		Files         []File
		Scripts       nodev1.Scripts
		Services      []nodev1.Service
	}{c.Name, c.Version, c.Artifacts, c.Files, c.Scripts, c.Services})
	sum := sha256.Sum256(data)
	c.Hash = "sha256:" + hex.EncodeToString(sum[:])
}

// Report is what the agent says about its host: per component whether it
// is at its final state, and when it last looked.
type Report struct {
	// Desired is the hash of the Desired document the report is about.
	Desired    string            `json:"desired"`
	Components []ComponentReport `json:"components"`
	// Services the agent supervises, running or not.
	Services []ServiceReport `json:"services,omitempty"`
	Time     time.Time       `json:"time"`
}

// ComponentReport is one component on the host.
type ComponentReport struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Variant string `json:"variant,omitempty"`
	// Hash of what is applied ("" before the first install succeeded).
	Hash  string `json:"hash,omitempty"`
	Ready bool   `json:"ready"`
	// Action is what the last pass did: installed, repaired, checked.
	Action    string    `json:"action,omitempty"`
	LastCheck time.Time `json:"lastCheck"`
	// Error says why the component is not ready, with the failing
	// script's stderr tail.
	Error string `json:"error,omitempty"`
	// LastRepair is the last action that was not a plain check or install
	// (a restored file, a repair), kept across passes, and when.
	LastRepair     string    `json:"lastRepair,omitempty"`
	LastRepairTime time.Time `json:"lastRepairTime,omitzero"`
}

// ServiceReport is one supervised service.
type ServiceReport struct {
	Name     string    `json:"name"`
	Running  bool      `json:"running"`
	PID      int       `json:"pid,omitempty"`
	Restarts int       `json:"restarts"`
	Since    time.Time `json:"since,omitzero"`
	// LastExit is how the previous run ended.
	LastExit string `json:"lastExit,omitempty"`
}

// Ready: every component of the report is ready.
func (r *Report) Ready() bool {
	for _, c := range r.Components {
		if !c.Ready {
			return false
		}
	}
	return len(r.Components) > 0
}
