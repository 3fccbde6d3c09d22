package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Disruption is what applying a change of a component does to the node's
// workloads, from least to most.
// +kubebuilder:validation:Enum=None;Restart;Drain;Reboot
type Disruption string

const (
	// DisruptionNone: files change, nothing restarts (e.g. a CLI tool).
	DisruptionNone Disruption = "None"
	// DisruptionRestart: the component's services restart; pods keep
	// running (containerd, kubelet).
	DisruptionRestart Disruption = "Restart"
	// DisruptionDrain: the node is drained first (PodDisruptionBudgets
	// respected) and uncordoned after.
	DisruptionDrain Disruption = "Drain"
	// DisruptionReboot: the node is drained and the host rebooted.
	DisruptionReboot Disruption = "Reboot"
)

// ComponentSpec is one version of one piece of on-host software, for every
// OS and architecture it supports. It is data: supporting another OS or
// architecture is another variant, never operator code.
type ComponentSpec struct {
	// Component names the software (containerd, kubelet, kok-agent, a GPU
	// driver...). Machines ask for components by this name.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Component string `json:"component"`

	// Version of the software, e.g. v1.34.4 or 1.6.20.
	// +kubebuilder:validation:Pattern=`^v?[0-9]+(\.[0-9]+)*([-+][0-9A-Za-z.-]+)?$`
	// +kubebuilder:validation:MaxLength=63
	Version string `json:"version"`

	// DependsOn names components that must be installed and at their final
	// state first (by component name, at the versions the Machine asks for).
	// +listType=set
	// +optional
	DependsOn []string `json:"dependsOn,omitempty"`

	// Disruption a change of this component causes on a node that runs it.
	// +kubebuilder:default=Restart
	// +optional
	Disruption Disruption `json:"disruption,omitempty"`

	// Variants per OS, OS version and architecture; the first whose match
	// fits a host's facts is used.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +listType=map
	// +listMapKey=name
	Variants []ComponentVariant `json:"variants"`
}

// ComponentVariant is how the component is installed on one kind of host.
type ComponentVariant struct {
	// Name of the variant (unique in the component), e.g. debian-amd64.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// Match selects the hosts this variant is for.
	Match HostMatch `json:"match"`

	// Artifacts are files fetched by digest (binaries, archives).
	// +listType=map
	// +listMapKey=path
	// +optional
	Artifacts []Artifact `json:"artifacts,omitempty"`

	// Files are written from Go templates that see the cluster's and the
	// host's values (see TemplatedFile).
	// +listType=map
	// +listMapKey=path
	// +optional
	Files []TemplatedFile `json:"files,omitempty"`

	// Scripts are the component's idempotent O&M actions, run as root by
	// /bin/sh on the host, templated like Files.
	Scripts Scripts `json:"scripts"`

	// Services the component runs; the node agent keeps them running and
	// restarts only those whose files changed.
	// +listType=map
	// +listMapKey=name
	// +optional
	Services []Service `json:"services,omitempty"`
}

// HostMatch selects hosts by the facts discovered on them. An empty list
// matches any value.
type HostMatch struct {
	// OS is the os-release ID, e.g. debian, ubuntu, rhel.
	// +kubebuilder:validation:MinLength=1
	OS string `json:"os"`
	// OSVersions are os-release VERSION_IDs, e.g. ["12"].
	// +optional
	OSVersions []string `json:"osVersions,omitempty"`
	// Architectures as Go names them, e.g. amd64, arm64.
	// +optional
	Architectures []string `json:"architectures,omitempty"`
}

// Artifact is a file fetched by digest into place.
type Artifact struct {
	// Path on the host, absolute.
	// +kubebuilder:validation:Pattern=`^/`
	Path string `json:"path"`
	// Source is an OCI artifact reference, registry/repository:tag (e.g.
	// kok.local/artifacts/kube:v1.34.4): a single-layer artifact whose
	// layer is the file. Hosts fetch it from the registry's endpoint
	// (kok-manager --registry-endpoint), by digest.
	// +kubebuilder:validation:MinLength=1
	Source string `json:"source"`
	// Digest of the file's content, sha256:<64 hex>; a file with another
	// digest is never installed. When empty, the tag is resolved to a
	// digest when the Machine's desired state is rendered, and hosts fetch
	// that digest.
	// +kubebuilder:validation:Pattern=`^sha256:[a-f0-9]{64}$`
	// +optional
	Digest string `json:"digest,omitempty"`
	// Mode of the file, octal, e.g. "0755".
	// +kubebuilder:validation:Pattern=`^0?[0-7]{3,4}$`
	// +kubebuilder:default="0644"
	// +optional
	Mode string `json:"mode,omitempty"`
}

// TemplatedFile is a file written from a template.
type TemplatedFile struct {
	// Path on the host, absolute; a template too (e.g.
	// /etc/containerd/certs.d/{{ .Registry.Name }}/hosts.toml).
	// +kubebuilder:validation:Pattern=`^/`
	Path string `json:"path"`
	// Template is a Go text/template. It sees .Cluster (.Name, .Version,
	// .APIServer URL, .CAHash — sha256:<hex> of the CA's public key, as
	// kubeadm pins it —, .DNSAddress, .DNSDomain, .PodCIDR, .ServiceCIDR),
	// .CA — the CA certificate, PEM), .Node (.Name, .Address, .OS,
	// .OSVersion, .Arch) and
	// .Registry (.Name — the registry host image references use, e.g.
	// kok.local —, .Endpoint — the URL nodes pull it from).
	Template string `json:"template"`
	// Mode of the file, octal.
	// +kubebuilder:validation:Pattern=`^0?[0-7]{3,4}$`
	// +kubebuilder:default="0644"
	// +optional
	Mode string `json:"mode,omitempty"`
}

// Scripts are shell scripts (Go templates) for each O&M action. Each must
// be idempotent: it may run again after a crash at any point.
type Scripts struct {
	// Install installs or upgrades the component to this version (its
	// artifacts and files are in place when it runs).
	// +kubebuilder:validation:MinLength=1
	Install string `json:"install"`
	// Check exits 0 when the component is at its final state; its output
	// says what differs otherwise.
	// +kubebuilder:validation:MinLength=1
	Check string `json:"check"`
	// Repair brings a component that fails Check back; Install runs when
	// it is empty.
	// +optional
	Repair string `json:"repair,omitempty"`
	// Uninstall removes the component and leaves the host as it was.
	// +kubebuilder:validation:MinLength=1
	Uninstall string `json:"uninstall"`
}

// Service is a long-running process of the component.
type Service struct {
	// Name of the service (unique in the component).
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// Command and its arguments (templated).
	// +kubebuilder:validation:MinItems=1
	Command []string `json:"command"`
	// RestartOn lists the paths (artifacts, files) whose change restarts
	// this service; empty means every path of the variant.
	// +optional
	RestartOn []string `json:"restartOn,omitempty"`
}

// Component is one version of on-host software (containerd, kubelet, the
// node agent, a driver) as data: variants per OS and architecture, each
// with artifacts by digest, templated files, O&M scripts and services.
// A Component is immutable: a change is a new version.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=comp,categories=kok
// +kubebuilder:validation:XValidation:rule="self.metadata.name == self.spec.component + '-' + self.spec.version",message="metadata.name must be <spec.component>-<spec.version> (e.g. kubelet-v1.34.4)"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.spec) || self.spec == oldSelf.spec",message="a Component is immutable: publish the change as a new version (a new Component) and move Machines to it"
// +kubebuilder:printcolumn:name="Component",type=string,JSONPath=`.spec.component`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.spec.version`
// +kubebuilder:printcolumn:name="Disruption",type=string,JSONPath=`.spec.disruption`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Component struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ComponentSpec `json:"spec"`
}

// ComponentList is a list of Components.
// +kubebuilder:object:root=true
type ComponentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Component `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Component{}, &ComponentList{})
}
