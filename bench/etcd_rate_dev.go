package main

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
)

// measureEtcdThroughput measures write rates on a running meta cluster, for
// development: a 3-member EtcdCluster in namespace etcd-rate (made if
// missing) through its Service and its members, and a hand-started cluster
// (each round is printed).
func measureEtcdThroughput(kubeconfig, cacheDir string, rounds int) error {
	c, err := metaClient(kubeconfig)
	if err != nil {
		return err
	}
	ctx := context.Background()
	_ = c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "etcd-rate"}})
	e := &etcdv1.EtcdCluster{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "etcd-rate"}, Spec: etcdv1.EtcdClusterSpec{Replicas: 3, Version: "v3.6.16"}}
	_ = c.Create(ctx, e)
	if err := waitVoters(ctx, c, e, 3, nil, 5*time.Minute); err != nil {
		return err
	}
	svc, err := benchEtcdClient(ctx, c, e)
	if err != nil {
		return err
	}
	defer svc.Close()
	return benchThroughput(ctx, &EtcdResult{}, c, cacheDir, e, svc, rounds)
}
