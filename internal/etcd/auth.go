package etcd

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
)

// rootUser is the user of the operator's own client certificate (its CN).
const rootUser = "root"

func ignoreExists(err error, exists error) error {
	if errors.Is(err, exists) {
		return nil
	}
	return err
}

// enableAuth turns authentication on; the operator's certificate names the
// root user, which keeps every right.
func enableAuth(ctx context.Context, cli Client) error {
	if _, err := cli.UserAddWithOptions(ctx, rootUser, "", &clientv3.UserAddOptions{NoPassword: true}); ignoreExists(err, rpctypes.ErrUserAlreadyExist) != nil {
		return fmt.Errorf("adding user root: %w", err)
	}
	if _, err := cli.UserGrantRole(ctx, rootUser, "root"); err != nil {
		return fmt.Errorf("granting root the root role: %w", err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("enabling authentication: %w", err)
	}
	return nil
}

// EnsureTenant gives user read and write access to prefix, and nothing else:
// a business cluster sharing an EtcdCluster is confined to its keys.
func EnsureTenant(ctx context.Context, cli Client, user, prefix string) error {
	role := "prefix:" + prefix
	if _, err := cli.RoleAdd(ctx, role); ignoreExists(err, rpctypes.ErrRoleAlreadyExist) != nil {
		return fmt.Errorf("adding role %s: %w", role, err)
	}
	if _, err := cli.RoleGrantPermission(ctx, role, prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		return fmt.Errorf("granting %s on %s: %w", role, prefix, err)
	}
	if _, err := cli.UserAddWithOptions(ctx, user, "", &clientv3.UserAddOptions{NoPassword: true}); ignoreExists(err, rpctypes.ErrUserAlreadyExist) != nil {
		return fmt.Errorf("adding user %s: %w", user, err)
	}
	if _, err := cli.UserGrantRole(ctx, user, role); err != nil {
		return fmt.Errorf("granting %s to %s: %w", role, user, err)
	}
	return nil
}

// RootClient connects to an EtcdCluster as the root user, through the
// endpoint and client Secret it publishes in its status (for operators
// running in the meta cluster).
func RootClient(ctx context.Context, c client.Reader, e *etcdv1.EtcdCluster, dial Dialer) (Client, error) {
	if e.Status.ClientEndpoint == "" || e.Status.ClientSecretName == "" {
		return nil, fmt.Errorf("EtcdCluster %s/%s has not published its endpoint and client Secret yet", e.Namespace, e.Name)
	}
	var s corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: e.Status.ClientSecretName}, &s); err != nil {
		return nil, fmt.Errorf("reading client Secret %s/%s: %w", e.Namespace, e.Status.ClientSecretName, err)
	}
	tlsCfg, err := ClientTLS(s.Data)
	if err != nil {
		return nil, err
	}
	if dial == nil {
		dial = Dial
	}
	return dial([]string{e.Status.ClientEndpoint}, tlsCfg)
}
