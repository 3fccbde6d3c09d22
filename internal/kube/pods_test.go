package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestContainerProblem(t *testing.T) {
	pending := &corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
		Reason: corev1.PodReasonUnschedulable, Message: "0/1 nodes are available: 1 Insufficient cpu."}}}}
	crash := &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "kube-apiserver",
		State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: "unknown flag: --bogus"}}}}}}
	for _, tc := range []struct {
		pod  *corev1.Pod
		want string
	}{
		{pending, "unschedulable: 0/1 nodes are available: 1 Insufficient cpu."},
		{crash, "container kube-apiserver CrashLoopBackOff: exited 1: unknown flag: --bogus"},
		{&corev1.Pod{}, ""},
	} {
		if got := ContainerProblem(tc.pod); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}
