package conditions

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSet(t *testing.T) {
	var conds []metav1.Condition
	Set(&conds, 3, "Ready", false, "Waiting", "not yet")
	if len(conds) != 1 || conds[0].Status != metav1.ConditionFalse || conds[0].ObservedGeneration != 3 || conds[0].Reason != "Waiting" {
		t.Fatalf("got %+v", conds)
	}
	first := conds[0].LastTransitionTime
	Set(&conds, 4, "Ready", false, "Other", "still not")
	if conds[0].LastTransitionTime != first || conds[0].ObservedGeneration != 4 || conds[0].Message != "still not" {
		t.Fatalf("same status must keep the transition time and take the rest: %+v", conds[0])
	}
	Set(&conds, 4, "Ready", true, "Ready", "ok")
	if !IsTrue(conds, "Ready") {
		t.Fatal("want Ready True")
	}
	SetStatus(&conds, 4, "Succeeded", metav1.ConditionUnknown, "Running", "")
	if len(conds) != 2 || IsTrue(conds, "Succeeded") {
		t.Fatalf("got %+v", conds)
	}
	if Pick(true, "a", "b") != "a" || Pick(false, "a", "b") != "b" {
		t.Fatal("Pick")
	}
}
