// Package local runs a real single-node meta cluster on this machine: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, containerd,
// kubelet and kube-proxy as supervised processes, CoreDNS and kok-manager as
// pods from locally built images. Everything it starts is recorded under one
// state directory and stopped by pid.
//
// The commands:
//
//	up.go         kok up: Up as a list of timed steps, and the refresh of a running cluster
//	down.go       kok down: stop everything and clean the host
//	supervise.go  kok supervise and kok local-storage (run detached), and how
//	              kok up and kok down start, wait on and stop supervised components
//	status.go     kok status
//
// What the commands work with, by concern:
//
//	config.go     Config: the address plan and paths, saved in the state directory
//	preflight.go  checks before starting: root, cgroups, ports, packages, state directory
//	hostnet.go    host network: the network guard (iptables), the pod bridge and
//	              its route, the iptables chains the node's programs leave
//	cgroups.go    the pods' cgroup root
//	cleanup.go    host cleanup after the processes are gone: leftover
//	              containers and shims, mounts, then network and cgroups
//	cri.go        removing pods through the CRI on the way down
//	pki.go        the meta cluster's CAs, certificates and kubeconfigs
//	render.go     configuration files of containerd, CNI, kubelet and kube-proxy
//	components.go the supervised components: names, command lines, readiness probes
//	images.go     image names, and building and importing images into containerd
//	registry.go   pushing every image and binary artifact to kok's registry
//	addons.go     applying CoreDNS, kok itself and kok's registry to the cluster
//	wait.go       poll, the one polling helper, and the waits on the cluster
//	              (node Ready, Deployments ready)
//	demo.go       the demo business cluster
//	files.go      small file helpers
//
// kok's registry is the CNCF Distribution registry (built from the Go module
// proxy like CoreDNS) running as the Deployment kok-system/kok-registry on the
// node's network, at Config.RegistryAddress() (10.200.0.1:5000, plain HTTP
// until a kok CA issues it a certificate), storing into Config.RegistryDir().
// Business-cluster nodes pull everything from it: once it is Ready, kok up
// (and kok up on a running cluster) pushes every image of imageSets under
// <registry>/<repo>:<tag> for kok.local/<repo>:<tag>, reusing the images the
// containerd import built, and each binary as a single-layer OCI artifact
// (artifacts/<name>:<tag>, the layer the raw file): the kube multi-call binary
// per built Kubernetes version, kok-agent, and Debian's containerd, runc and
// CNI plugins from this machine. The push is level-based (a tag whose digest
// the registry holds is skipped; an image recorded as pushed from the same
// sources is not even built) and records the artifacts, with their blob
// digests, in RegistryDir()/artifacts.json (RegistryArtifacts).
//
// Subpackages: build (building Kubernetes, etcd, CoreDNS and the registry from source),
// image (image tarballs, containerd import), proc (pid files), supervisor
// (the process supervisor), storage (the kok-local volume provisioner) and
// versions (the versions kok builds).
//
// Subpackage hosts makes local hosts (kok machine create, delete, list):
// Linux hosts on this machine, each with its own network namespace and
// address on the bridge kokm0 (10.202.0.0/24, inside the guarded range), its
// own mount namespace (/etc an overlay of the machine's; /var, /usr/local,
// /root, /opt, /tmp its own; the rest read-only), hostname, process tree
// (kok's init as PID 1) and cgroup namespace rooted at /kok-hosts/NAME, and
// sshd as the only way in: the machine operator reaches them over SSH as it
// would VMs. kok down deletes the hosts of its state directory first, with or
// without a meta cluster.
package local
