package etcd

import (
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
	"github.com/kubeonkube/kok/internal/conditions"
	"github.com/kubeonkube/kok/internal/kube"
	"github.com/kubeonkube/kok/internal/pki"
)

// observation is everything one pass knows: what Plan looks at
// (Observed) and what status and the apply steps need besides.
type observation struct {
	Observed
	// certs are the certificate Secrets as they must be (certChanged
	// names the ones to write); certErr says why they cannot be.
	certs       Certs
	certChanged []string
	certErr     error
	tlsCfg      *tls.Config
	// members is each member's status as etcd reported it; clusterID is
	// etcd's cluster ID ("" when no member answered).
	members   map[string]etcdv1.MemberStatus
	clusterID string
	// etcdErr says why no member answered the member list.
	etcdErr error
}

// observe reads the pods, volumes and certificates, asks etcd about its
// members and plans nothing: it writes nothing either.
func (r *Reconciler) observe(ctx context.Context, e *etcdv1.EtcdCluster, n Names) (*observation, error) {
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(n.Namespace), client.MatchingLabels(n.Selector())); err != nil {
		return nil, fmt.Errorf("listing member pods: %w", err)
	}
	pods := list.Items
	// A cluster is bootstrapped once a member answered (a first member that
	// takes long to start, e.g. restoring a snapshot, is still "Creating").
	bootstrapped := e.Status.ClusterID != "" || conditions.IsTrue(e.Status.Conditions, etcdv1.ConditionAvailable)
	obs := &observation{Observed: Observed{Cluster: e.Name, Replicas: int(e.Spec.Replicas), Version: e.Spec.Version,
		Pods: map[string]Pod{}, LostVolumes: map[string]bool{}, Config: ConfigHash(e, r.Image(e.Spec.Version)),
		Bootstrapped: bootstrapped, DefragThreshold: 50, AuthWanted: e.Spec.EnableAuth},
		members: map[string]etcdv1.MemberStatus{}}

	if err := r.observeCerts(ctx, e, n, obs, !bootstrapped && len(pods) == 0); err != nil {
		return nil, err
	}
	if d := e.Spec.Defrag; d != nil {
		obs.DefragThreshold = int(d.FragmentationThresholdPercent)
		if d.Schedule != "" {
			if sched, err := cronParser.Parse(d.Schedule); err == nil {
				last := e.CreationTimestamp.Time
				if e.Status.LastDefragTime != nil {
					last = e.Status.LastDefragTime.Time
				}
				obs.DefragDue = !time.Now().Before(sched.Next(last))
			} else {
				r.Recorder.Eventf(e, corev1.EventTypeWarning, "InvalidSchedule", "spec.defrag.schedule %q: %v", d.Schedule, err)
			}
		}
	}
	for i := range pods {
		obs.Pods[pods[i].Name] = observePod(&pods[i])
	}
	if err := r.observeVolumes(ctx, e, n, &obs.Observed); err != nil {
		return nil, err
	}
	if obs.tlsCfg != nil {
		r.observeEtcd(ctx, n, pods, obs)
	}
	if op := e.Status.Operation; op != nil {
		id, _ := strconv.ParseUint(op.ID, 16, 64)
		obs.Journal = &Journal{Type: Action(op.Type), Member: op.Member, ID: id}
	}
	return obs, nil
}

// observeCerts reads the certificate Secrets and plans them (a missing CA
// is made only for a cluster that has no member yet).
func (r *Reconciler) observeCerts(ctx context.Context, e *etcdv1.EtcdCluster, n Names, obs *observation, newCluster bool) error {
	have := Certs{}
	for name, dst := range map[string]*pki.SecretData{n.CASecret(): &have.CA, n.ServerSecret(): &have.Server, n.ClientSecret(): &have.Client} {
		var s corev1.Secret
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: n.Namespace, Name: name}, &s); err == nil {
			*dst = s.Data
		} else if !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading Secret %s: %w", name, err)
		}
	}
	obs.certs, obs.certChanged, obs.certErr = PlanCerts(n, r.domain(), have, newCluster, time.Now())
	// With a damaged CA Secret the client certificate as it is may still
	// reach etcd, so status can say how the members are.
	tlsCfg, err := ClientTLS(obs.certs.Client)
	if err != nil && obs.certErr == nil {
		obs.certErr = fmt.Errorf("the client certificate in %s: %w", n.ClientSecret(), err)
	}
	obs.tlsCfg = tlsCfg
	return nil
}

// observePod reads what Plan needs from a pod.
func observePod(p *corev1.Pod) Pod {
	op := Pod{Name: p.Name, Version: p.Annotations[AnnVersion], Config: p.Annotations[AnnConfig], Terminating: p.DeletionTimestamp != nil}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			op.Ready = true
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		// etcd refuses to start a member whose data directory was lost
		// while the cluster still knows it.
		if t := cs.LastTerminationState.Terminated; t != nil && strings.Contains(t.Message, "has already been bootstrapped") {
			op.DataLost = true
		}
	}
	return op
}

// observeVolumes reads the claim of every member with a pod or in status
// once: a claim gone, being deleted or lost took the member's data with it
// (obs.LostVolumes); a voter status recorded whose claim is still there can
// come back on it (obs.KnownMembers).
func (r *Reconciler) observeVolumes(ctx context.Context, e *etcdv1.EtcdCluster, n Names, obs *Observed) error {
	if e.Spec.Storage.EmptyDir {
		return nil
	}
	voters := map[string]bool{}
	for _, m := range e.Status.Members {
		voters[m.Name] = m.Role != etcdv1.RoleLearner
	}
	names := slices.Collect(maps.Keys(voters))
	for name := range obs.Pods {
		if _, ok := voters[name]; !ok {
			names = append(names, name)
		}
	}
	for _, name := range names {
		var pvc corev1.PersistentVolumeClaim
		err := r.Get(ctx, client.ObjectKey{Namespace: n.Namespace, Name: n.PVC(name)}, &pvc)
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading claim %s: %w", n.PVC(name), err)
		}
		present := err == nil && pvc.DeletionTimestamp == nil
		if !present || pvc.Status.Phase == corev1.ClaimLost {
			obs.LostVolumes[name] = true
		}
		if present && voters[name] {
			obs.KnownMembers = append(obs.KnownMembers, name)
		}
	}
	return nil
}

// observeEtcd asks the members about membership and each one's state. When
// none answers, obs.etcdErr says why (a TLS fault, a refused dial, a
// timeout) and status carries it.
func (r *Reconciler) observeEtcd(ctx context.Context, n Names, pods []corev1.Pod, obs *observation) {
	var endpoints []string
	for _, p := range pods {
		if p.Status.PodIP != "" && p.DeletionTimestamp == nil {
			endpoints = append(endpoints, n.ClientURL(p.Name))
		}
	}
	if len(endpoints) == 0 {
		return
	}
	cli, err := r.dial(endpoints, obs.tlsCfg)
	if err != nil {
		obs.etcdErr = err
		return
	}
	defer func() { _ = cli.Close() }()
	lctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	list, err := cli.MemberList(lctx)
	cancel()
	if err != nil {
		obs.etcdErr = fmt.Errorf("listing members: %w", err)
		return
	}
	obs.Reachable = true
	obs.clusterID = fmt.Sprintf("%x", list.Header.ClusterId)
	alarms := map[uint64][]string{}
	actx, cancel := context.WithTimeout(ctx, etcdTimeout)
	if al, err := cli.AlarmList(actx); err == nil {
		for _, a := range al.Alarms {
			alarms[a.MemberID] = append(alarms[a.MemberID], a.Alarm.String())
		}
	}
	if as, err := cli.AuthStatus(actx); err == nil {
		obs.AuthEnabled = as.Enabled
	} else {
		obs.AuthEnabled = obs.AuthWanted // unknown: change nothing
	}
	cancel()
	for _, m := range list.Members {
		name := m.Name
		if name == "" && len(m.PeerURLs) > 0 {
			name, _ = n.MemberFromPeerURL(m.PeerURLs[0])
		}
		mem := Member{Name: name, ID: m.ID, Learner: m.IsLearner, Started: m.Name != "", Version: obs.Pods[name].Version}
		ms := etcdv1.MemberStatus{Name: name, ID: fmt.Sprintf("%x", m.ID), Role: etcdv1.RoleFollower, Version: obs.Pods[name].Version}
		if m.IsLearner {
			ms.Role = etcdv1.RoleLearner
		}
		if mem.Started {
			sctx, cancel := context.WithTimeout(ctx, etcdTimeout)
			st, err := cli.Status(sctx, n.ClientURL(name))
			cancel()
			if err == nil {
				mem.Healthy, mem.RaftIndex, mem.DBSize, mem.DBInUse = true, st.RaftIndex, st.DbSize, st.DbSizeInUse
				ms.Healthy, ms.RaftIndex, ms.DBSize, ms.DBSizeInUse, ms.Version = true, st.RaftIndex, st.DbSize, st.DbSizeInUse, "v"+st.Version
				if st.Leader == m.ID {
					ms.Role = etcdv1.RoleLeader
				}
				if st.Leader != 0 {
					obs.LeaderID = st.Leader
				}
			}
		}
		mem.Alarms, ms.Alarms = alarms[m.ID], alarms[m.ID]
		obs.Members = append(obs.Members, mem)
		obs.members[name] = ms
	}
}

// Image is the etcd image of a version.
func (r *Reconciler) Image(version string) string {
	return kube.Image(r.ImageRegistry, "etcd", version)
}
