// Package lincheck records a key-value history from concurrent clients and
// checks it for linearizability with porcupine. Writes whose outcome is
// unknown (a timeout, a lost connection) may have taken effect at any time
// after they were sent; failed reads are left out.
package lincheck

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Input is one operation's request.
type Input struct {
	Put        bool
	Key, Value string
}

// Output is one operation's answer.
type Output struct {
	// Value read (Get) — empty for a missing key.
	Value string
	// Unknown: a Put whose outcome was not learned.
	Unknown bool
}

// History collects operations from many goroutines.
type History struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
}

// NewHistory starts an empty history.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is a timestamp for Call and Return.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Get records a read that returned value (found=false: no key).
func (h *History) Get(client int, key string, call int64, value string, err error) {
	if err != nil {
		return // a failed read has no effect
	}
	h.add(porcupine.Operation{ClientId: client, Input: Input{Key: key}, Call: call, Output: Output{Value: value}, Return: h.Now()})
}

// Put records a write; a failed one may still have been applied.
func (h *History) Put(client int, key, value string, call int64, err error) {
	ret := h.Now()
	out := Output{}
	if err != nil {
		out.Unknown = true
		ret = math.MaxInt64
	}
	h.add(porcupine.Operation{ClientId: client, Input: Input{Put: true, Key: key, Value: value}, Call: call, Output: out, Return: ret})
}

func (h *History) add(op porcupine.Operation) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Len is the number of recorded operations.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// Model is a register per key.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(Input).Key
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in, out := input.(Input), output.(Output)
		if in.Put {
			return true, in.Value
		}
		return out.Value == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(Input), output.(Output)
		if in.Put {
			return fmt.Sprintf("put(%s, %s) unknown=%v", in.Key, in.Value, out.Unknown)
		}
		return fmt.Sprintf("get(%s) → %q", in.Key, out.Value)
	},
}

// Check checks the history; Unknown means the checker ran out of time.
func (h *History) Check(timeout time.Duration) porcupine.CheckResult {
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	return porcupine.CheckOperationsTimeout(Model, ops, timeout)
}
