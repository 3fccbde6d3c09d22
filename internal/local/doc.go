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
//	addons.go     applying CoreDNS and kok itself to the cluster
//	wait.go       poll, the one polling helper, and the waits on the cluster
//	              (node Ready, Deployments ready)
//	demo.go       the demo business cluster
//	files.go      small file helpers
//
// Subpackages: build (building Kubernetes, etcd and CoreDNS from source),
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
