package lincheck

import (
	"errors"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func TestLinearizableHistory(t *testing.T) {
	h := NewHistory()
	h.ops = []porcupine.Operation{
		{ClientId: 0, Input: Input{Put: true, Key: "k", Value: "1"}, Call: 0, Output: Output{}, Return: 10},
		{ClientId: 1, Input: Input{Key: "k"}, Call: 5, Output: Output{Value: ""}, Return: 8}, // overlaps the put
		{ClientId: 1, Input: Input{Key: "k"}, Call: 11, Output: Output{Value: "1"}, Return: 12},
	}
	if r := h.Check(time.Second); r != porcupine.Ok {
		t.Fatalf("got %s", r)
	}
}

func TestStaleReadIsCaught(t *testing.T) {
	h := NewHistory()
	h.ops = []porcupine.Operation{
		{ClientId: 0, Input: Input{Put: true, Key: "k", Value: "1"}, Call: 0, Output: Output{}, Return: 10},
		{ClientId: 1, Input: Input{Key: "k"}, Call: 20, Output: Output{Value: ""}, Return: 21}, // after the put finished
	}
	if r := h.Check(time.Second); r != porcupine.Illegal {
		t.Fatalf("a read of an older value after an acknowledged write must be illegal, got %s", r)
	}
}

func TestUnknownPutMayLandLater(t *testing.T) {
	h := NewHistory()
	h.Put(0, "k", "1", 0, errors.New("timeout"))
	h.ops = append(h.ops,
		porcupine.Operation{ClientId: 1, Input: Input{Key: "k"}, Call: 5, Output: Output{Value: ""}, Return: 6},
		porcupine.Operation{ClientId: 1, Input: Input{Key: "k"}, Call: 7, Output: Output{Value: "1"}, Return: 8})
	h.Get(1, "k", 9, "", errors.New("failed reads are not recorded"))
	if r := h.Check(time.Second); r != porcupine.Ok {
		t.Fatalf("got %s", r)
	}
}
