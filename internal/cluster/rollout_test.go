package cluster

import "testing"

func TestPlanRollout(t *testing.T) {
	const old, new = "v1.33.13", "v1.34.4"
	all := func(v string) map[string]string {
		return map[string]string{APIServer: v, ControllerManager: v, Scheduler: v}
	}
	cases := []struct {
		name    string
		in      RolloutInput
		want    map[string]string
		waiting bool
	}{
		{"create", RolloutInput{Desired: new, Current: map[string]string{}, EtcdCompatible: true}, all(new), false},
		{"steady", RolloutInput{Desired: new, Current: all(new), APIServerRolledOut: true, EtcdCompatible: true}, all(new), false},
		{"apiserver first", RolloutInput{Desired: new, Current: all(old), APIServerRolledOut: true, EtcdCompatible: true},
			map[string]string{APIServer: new, ControllerManager: old, Scheduler: old}, true},
		{"others wait for every apiserver", RolloutInput{Desired: new, Current: map[string]string{APIServer: new, ControllerManager: old, Scheduler: old},
			APIServerRolledOut: false, EtcdCompatible: true}, map[string]string{APIServer: new, ControllerManager: old, Scheduler: old}, true},
		{"then the others", RolloutInput{Desired: new, Current: map[string]string{APIServer: new, ControllerManager: old, Scheduler: old},
			APIServerRolledOut: true, EtcdCompatible: true}, all(new), false},
		{"etcd first", RolloutInput{Desired: new, Current: all(old), APIServerRolledOut: true, EtcdCompatible: false}, all(old), true},
		{"deleted scheduler mid-upgrade comes back at the apiservers' version",
			RolloutInput{Desired: new, Current: map[string]string{APIServer: new, ControllerManager: old}, EtcdCompatible: true},
			map[string]string{APIServer: new, ControllerManager: old, Scheduler: new}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := PlanRollout(c.in)
			for comp, v := range c.want {
				if got.Targets[comp] != v {
					t.Errorf("%s: got %s, want %s", comp, got.Targets[comp], v)
				}
			}
			if (got.Waiting != "") != c.waiting {
				t.Errorf("waiting = %q", got.Waiting)
			}
		})
	}
}

func TestImage(t *testing.T) {
	for ref, want := range map[string]string{
		"kube-apiserver:v1.34.4":                 "registry.example/kok/kube-apiserver:v1.34.4",
		"registry.k8s.io/kube-apiserver:v1.34.4": "registry.k8s.io/kube-apiserver:v1.34.4",
		"localhost:5000/kube-apiserver:v1.34.4":  "localhost:5000/kube-apiserver:v1.34.4",
		"team/kube-apiserver:v1.34.4":            "registry.example/kok/team/kube-apiserver:v1.34.4",
	} {
		if got := Image("registry.example/kok/", ref); got != want {
			t.Errorf("Image(%s) = %s, want %s", ref, got, want)
		}
	}
}
