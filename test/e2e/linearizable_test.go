//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/test/lincheck"
)

// recorder runs clients that read and write a few keys through the
// cluster's client Service, each with its own connection, and records
// every operation for a linearizability check.
type recorder struct {
	h    *lincheck.History
	stop chan struct{}
	wg   sync.WaitGroup
}

func startRecorder(t *testing.T, c client.Client, e *etcdv1.EtcdCluster, clients int) *recorder {
	t.Helper()
	r := &recorder{h: lincheck.NewHistory(), stop: make(chan struct{})}
	for id := range clients {
		cli := etcdClient(t, c, e)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer cli.Close()
			rng := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
			for i := 0; ; i++ {
				select {
				case <-r.stop:
					return
				default:
				}
				key := fmt.Sprintf("/lin/k%d", rng.IntN(4))
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				call := r.h.Now()
				if rng.IntN(2) == 0 {
					value := fmt.Sprintf("c%d-%d", id, i)
					_, err := cli.Put(ctx, key, value)
					r.h.Put(id, key, value, call, err)
				} else {
					resp, err := cli.Get(ctx, key)
					value := ""
					if err == nil && len(resp.Kvs) > 0 {
						value = string(resp.Kvs[0].Value)
					}
					r.h.Get(id, key, call, value, err)
				}
				cancel()
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	return r
}

// finish stops the clients and fails the test unless the history is
// linearizable.
func (r *recorder) finish(t *testing.T) {
	t.Helper()
	close(r.stop)
	r.wg.Wait()
	start := time.Now()
	res := r.h.Check(2 * time.Minute)
	t.Logf("linearizability: %d operations, %s (checked in %s)", r.h.Len(), res, time.Since(start).Round(time.Millisecond))
	if res == porcupine.Illegal {
		t.Fatal("the history of reads and writes is not linearizable")
	}
	if res == porcupine.Unknown {
		t.Log("the checker ran out of time; no violation found")
	}
}
