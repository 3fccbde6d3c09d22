package kube

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// maxProblem bounds a container's error as carried into a condition.
const maxProblem = 400

// ContainerProblem describes, in one line, why a pod's containers do not
// run, in the container's own words where it left any (its termination
// message: with TerminationMessageFallbackToLogsOnError, its last log
// lines), or why the scheduler cannot place the pod; "" when every
// container runs or finished well.
func ContainerProblem(pod *corev1.Pod) string {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return Tail("unschedulable: "+c.Message, maxProblem)
		}
	}
	statuses := append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
	for _, cs := range statuses {
		var parts []string
		if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" && w.Reason != "PodInitializing" {
			parts = append(parts, fmt.Sprintf("container %s %s", cs.Name, w.Reason))
			if t := cs.LastTerminationState.Terminated; t != nil {
				parts = append(parts, terminated(t))
			} else if w.Message != "" {
				parts = append(parts, w.Message)
			}
		} else if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			parts = append(parts, fmt.Sprintf("container %s", cs.Name), terminated(t))
		}
		if len(parts) > 0 {
			return Tail(strings.Join(parts, ": "), maxProblem)
		}
	}
	return ""
}

func terminated(t *corev1.ContainerStateTerminated) string {
	msg := fmt.Sprintf("exited %d", t.ExitCode)
	if t.Reason != "" && t.Reason != "Error" {
		msg += " (" + t.Reason + ")"
	}
	if m := strings.Join(strings.Fields(t.Message), " "); m != "" {
		msg += ": " + m
	}
	return msg
}

// Tail keeps the last n bytes of s (the end of a log says why it stopped).
func Tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
