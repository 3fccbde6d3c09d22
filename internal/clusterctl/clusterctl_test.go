package clusterctl

import (
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeonkube/kok/internal/kubeconfig"
)

func TestWithServer(t *testing.T) {
	data, err := kubeconfig.Build(kubeconfig.Spec{ClusterName: "c", UserName: "u", Server: "https://10.201.0.5:6443", CA: []byte("ca")})
	if err != nil {
		t.Fatal(err)
	}
	out, err := WithServer(data, "https://10.200.0.1:30643")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range cfg.Clusters {
		if cl.Server != "https://10.200.0.1:30643" || string(cl.CertificateAuthorityData) != "ca" {
			t.Fatalf("cluster %+v", cl)
		}
	}
	if _, err := WithServer(data, "10.200.0.1:30643"); err == nil || !strings.Contains(err.Error(), "https URL") {
		t.Fatalf("a server without https:// must be refused, got %v", err)
	}
}
