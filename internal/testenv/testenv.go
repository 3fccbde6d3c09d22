// Package testenv runs a package's envtest tests (build tag envtest)
// against one real kube-apiserver and etcd, started once per package by
// controller-runtime's envtest with kok's CRDs installed, and holds the
// polling helpers those tests share.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// Config reaches the package's apiserver once Main has started it.
var Config *rest.Config

// Main starts the apiserver, calls setup (which may start controllers
// until ctx ends; nil for none), runs the package's tests, stops
// everything and exits with the tests' code.
func Main(m *testing.M, setup func(ctx context.Context, cfg *rest.Config) error) {
	os.Exit(run(m, setup))
}

func run(m *testing.M, setup func(ctx context.Context, cfg *rest.Config) error) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is unset: run KUBEBUILDER_ASSETS=$(bin/kok envtest-assets) go test -tags envtest ./...")
		return 1
	}
	crds, err := crdDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{crds}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	Config = cfg
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if setup != nil {
		if err := setup(ctx, cfg); err != nil {
			fmt.Fprintln(os.Stderr, "setting up the tests:", err)
			return 1
		}
	}
	return m.Run()
}

// crdDir is config/crd/bases of the module the tests run in.
func crdDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "config", "crd", "bases"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// WaitFor polls f every 100 ms until it succeeds, and fails the test with
// f's last error after timeout.
func WaitFor(t testing.TB, what string, timeout time.Duration, f func() error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		last = f()
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%s: %v", what, last)
	}
}

// Consistently polls f for d and fails the test as soon as f fails: a
// bounded check that something does not happen.
func Consistently(t testing.TB, what string, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ManagerOptions are the options of a test's controller manager: no
// metrics listener, and controller names that may repeat (each test may
// start its own manager in the same process).
func ManagerOptions(scheme *runtime.Scheme) ctrl.Options {
	return ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)}}
}

// NewClient is a client of cfg that knows Kubernetes' types and those the
// adders register.
func NewClient(cfg *rest.Config, adders ...func(*runtime.Scheme) error) (client.Client, error) {
	s := runtime.NewScheme()
	for _, add := range append([]func(*runtime.Scheme) error{clientgoscheme.AddToScheme}, adders...) {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return client.New(cfg, client.Options{Scheme: s})
}
