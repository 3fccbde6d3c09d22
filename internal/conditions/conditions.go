// Package conditions is kok's one way of writing status conditions: every
// operator records Kubernetes-style conditions (type, status, reason,
// message, observedGeneration) through it.
package conditions

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Set records condition t as True (ok) or False with reason and message,
// observed at generation. The transition time moves only when the status
// does (meta.SetStatusCondition).
func Set(conds *[]metav1.Condition, generation int64, t string, ok bool, reason, message string) {
	SetStatus(conds, generation, t, Status(ok), reason, message)
}

// SetStatus records condition t with an explicit status (Unknown
// included).
func SetStatus(conds *[]metav1.Condition, generation int64, t string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(conds, metav1.Condition{Type: t, Status: status, Reason: reason, Message: message,
		ObservedGeneration: generation})
}

// Status is True for ok, False otherwise.
func Status(ok bool) metav1.ConditionStatus {
	if ok {
		return metav1.ConditionTrue
	}
	return metav1.ConditionFalse
}

// Pick returns yes when b holds, no otherwise (a reason or a message that
// follows a condition's status).
func Pick(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}

// IsTrue reports whether condition t is True.
func IsTrue(conds []metav1.Condition, t string) bool { return meta.IsStatusConditionTrue(conds, t) }
