package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// lease is what flanneld's subnet file says of this node.
type lease struct {
	// Network is the cluster's pod range, Subnet this node's slice of it.
	Network, Subnet *net.IPNet
	MTU             int
	// IPMasq: flanneld masquerades traffic leaving the pod range, so the
	// bridge must not.
	IPMasq bool
}

// parseLease reads FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU and
// FLANNEL_IPMASQ from KEY=VALUE lines.
func parseLease(data []byte) (*lease, error) {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok {
			kv[k] = v
		}
	}
	var l lease
	var err error
	if _, l.Network, err = net.ParseCIDR(kv["FLANNEL_NETWORK"]); err != nil {
		return nil, fmt.Errorf("FLANNEL_NETWORK %q is not a CIDR", kv["FLANNEL_NETWORK"])
	}
	if _, l.Subnet, err = net.ParseCIDR(kv["FLANNEL_SUBNET"]); err != nil {
		return nil, fmt.Errorf("FLANNEL_SUBNET %q is not a CIDR", kv["FLANNEL_SUBNET"])
	}
	if l.MTU, err = strconv.Atoi(kv["FLANNEL_MTU"]); err != nil || l.MTU < 576 {
		return nil, fmt.Errorf("FLANNEL_MTU %q is not an MTU", kv["FLANNEL_MTU"])
	}
	l.IPMasq = kv["FLANNEL_IPMASQ"] == "true"
	return &l, nil
}

// conflist is the node's CNI configuration for l: pods on the bridge cni0
// with addresses from the node's subnet, a route to the rest of the pod
// range through the bridge (flanneld routes it on), and host ports.
func conflist(l *lease) ([]byte, error) {
	type obj = map[string]any
	c := obj{
		"cniVersion": "0.4.0",
		"name":       "flannel",
		"plugins": []obj{
			{
				"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
				"hairpinMode": true, "ipMasq": !l.IPMasq, "mtu": l.MTU,
				"ipam": obj{
					"type":   "host-local",
					"ranges": [][]obj{{{"subnet": l.Subnet.String()}}},
					"routes": []obj{{"dst": l.Network.String()}},
				},
			},
			{"type": "portmap", "capabilities": obj{"portMappings": true}, "snat": true},
		},
	}
	b, err := json.MarshalIndent(c, "", "  ")
	return append(b, '\n'), err
}
