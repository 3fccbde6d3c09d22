// Package snapshot takes etcd snapshots into storage (an S3-compatible
// bucket or a directory on a volume), fetches them back and restores them
// into a member's data directory. kok-manager runs it in backup Jobs and in
// the init container of a restored cluster's first member.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	etcdv1 "github.com/kubeonkube/kok/api/etcd/v1alpha1"
)

// Store keeps snapshot files by name.
type Store interface {
	// Put stores the local file src under name.
	Put(ctx context.Context, name, src string) error
	// Get opens the snapshot name.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// Delete removes name; a missing name is not an error.
	Delete(ctx context.Context, name string) error
	// Location says where name is, for status and humans.
	Location(name string) string
}

// Credential keys of an S3 credentials Secret.
const (
	AccessKeyID     = "accessKeyID"
	SecretAccessKey = "secretAccessKey"
)

// VolumeMount is where a backup Job mounts a volume target.
const VolumeMount = "/backup"

// Open returns the Store the spec names. creds holds the S3 Secret's data;
// root is where a volume target is mounted.
func Open(st etcdv1.BackupStorage, creds map[string]string, root string) (Store, error) {
	switch {
	case st.S3 != nil:
		s := st.S3
		if creds[AccessKeyID] == "" || creds[SecretAccessKey] == "" {
			return nil, fmt.Errorf("S3 credentials need %s and %s", AccessKeyID, SecretAccessKey)
		}
		c, err := minio.New(s.Endpoint, &minio.Options{
			Creds:  credentials.NewStaticV4(creds[AccessKeyID], creds[SecretAccessKey], ""),
			Secure: !s.Insecure,
			Region: s.Region,
		})
		if err != nil {
			return nil, fmt.Errorf("S3 endpoint %s: %w", s.Endpoint, err)
		}
		return &s3Store{c: c, bucket: s.Bucket, prefix: s.Prefix}, nil
	case st.Volume != nil:
		return &dirStore{dir: filepath.Join(root, filepath.Clean("/"+st.Volume.Path)), claim: st.Volume.ClaimName, path: st.Volume.Path}, nil
	}
	return nil, errors.New("storage names neither s3 nor volume")
}

type s3Store struct {
	c              *minio.Client
	bucket, prefix string
}

func (s *s3Store) key(name string) string { return s.prefix + name }

func (s *s3Store) Put(ctx context.Context, name, src string) error {
	_, err := s.c.FPutObject(ctx, s.bucket, s.key(name), src, minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: true, SendContentMd5: true})
	return err
}

func (s *s3Store) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	o, err := s.c.GetObject(ctx, s.bucket, s.key(name), minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	// GetObject is lazy: ask for the object's metadata so a missing one
	// fails here, not at the first read.
	if _, err := o.Stat(); err != nil {
		_ = o.Close()
		return nil, err
	}
	return o, nil
}

func (s *s3Store) Delete(ctx context.Context, name string) error {
	return s.c.RemoveObject(ctx, s.bucket, s.key(name), minio.RemoveObjectOptions{})
}

func (s *s3Store) Location(name string) string {
	return (&url.URL{Scheme: "s3", Host: s.bucket, Path: "/" + s.key(name)}).String()
}

type dirStore struct{ dir, claim, path string }

func (d *dirStore) Put(_ context.Context, name, src string) error {
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	// Written beside the target and renamed: a crash never leaves a
	// truncated snapshot under the final name.
	tmp, err := os.CreateTemp(d.dir, "."+name+".*")
	if err != nil {
		return err
	}
	// Best effort: after the rename there is nothing left to remove.
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := io.Copy(tmp, in); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(d.dir, name))
}

func (d *dirStore) Get(_ context.Context, name string) (io.ReadCloser, error) {
	return os.Open(filepath.Join(d.dir, name))
}

func (d *dirStore) Delete(_ context.Context, name string) error {
	err := os.Remove(filepath.Join(d.dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func (d *dirStore) Location(name string) string {
	return "pvc://" + d.claim + path.Join("/", d.path, name)
}
