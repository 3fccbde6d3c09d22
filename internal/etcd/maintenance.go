package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// maintenanceTimeout bounds a compaction plus a defragmentation round.
const maintenanceTimeout = 2 * time.Minute

// defragment defragments members one after the other, in the order given
// (followers first, the leader last).
func defragment(ctx context.Context, cli Client, n Names, members []Member) error {
	for _, m := range members {
		if _, err := cli.Defragment(ctx, n.ClientURL(m.Name)); err != nil {
			return fmt.Errorf("defragmenting %s: %w", m.Name, err)
		}
	}
	return nil
}

// recoverSpace answers a NOSPACE alarm: history up to now is compacted,
// every member defragmented (followers first) and the alarms disarmed.
// Kubernetes' own compaction keeps a few minutes of history; a NOSPACE
// cluster refuses every write, so giving that up is the lesser harm.
func recoverSpace(ctx context.Context, cli Client, n Names, obs Observed) error {
	resp, err := cli.Get(ctx, "kok-compaction-revision", clientv3.WithSerializable(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("reading the current revision: %w", err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		return fmt.Errorf("compacting to revision %d: %w", resp.Header.Revision, err)
	}
	var started []Member
	for _, m := range obs.Members {
		if m.Started {
			started = append(started, m)
		}
	}
	if err := defragment(ctx, cli, n, defragOrder(started, obs.LeaderID)); err != nil {
		return err
	}
	al, err := cli.AlarmList(ctx)
	if err != nil {
		return fmt.Errorf("listing alarms: %w", err)
	}
	for _, a := range al.Alarms {
		if a.Alarm != etcdserverpb.AlarmType_NOSPACE {
			continue // CORRUPT and others need a human
		}
		if _, err := cli.AlarmDisarm(ctx, (*clientv3.AlarmMember)(a)); err != nil {
			return fmt.Errorf("disarming NOSPACE on %x: %w", a.MemberID, err)
		}
	}
	return nil
}

func memberNames(ms []Member) string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return strings.Join(out, ", ")
}
