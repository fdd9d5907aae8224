// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package gobackend

import (
	"slices"
	"testing"
)

// TestDerivedCache: derived values are reused only for an operand seen
// before with the same bytes at the same address, and every call returns
// what deriving from the operand's current bytes gives.
func TestDerivedCache(t *testing.T) {
	var c DerivedCache
	calls := 0
	double := func(src []float32) func([]float32) {
		return func(dst []float32) {
			calls++
			for i, v := range src {
				dst[i] = 2 * v
			}
		}
	}
	get := func(src []float32) []float32 {
		v, _ := c.Float32(src, 0, "double", [4]int{len(src)}, len(src), nil, double(src))
		return v
	}
	want := func(src []float32) []float32 {
		out := make([]float32, len(src))
		for i, v := range src {
			out[i] = 2 * v
		}
		return out
	}

	// Large enough to be on the heap: a stack may move, and the cache
	// knows an operand by its address.
	weights := make([]float32, 1<<15)
	for i := range weights {
		weights[i] = float32(i)
	}
	for i := range 4 {
		if got := get(weights); !slices.Equal(got, want(weights)) {
			t.Fatalf("call %d: %v", i, got)
		}
	}
	if calls != 2 {
		t.Errorf("an operand seen four times unchanged was derived %d times, want 2 (kept on the second)", calls)
	}

	// Changed in place: derived again from the new bytes, and no longer kept.
	weights[2] = 30
	calls = 0
	for i := range 3 {
		if got := get(weights); !slices.Equal(got, want(weights)) {
			t.Fatalf("after the change, call %d: %v", i, got)
		}
	}
	if calls != 2 {
		t.Errorf("changed operand derived %d times in 3 calls, want 2 (kept again once seen twice unchanged)", calls)
	}

	// Trained: new bytes every call, never kept.
	calls = 0
	for step := range 5 {
		weights[0] = float32(step + 10)
		if got := get(weights); !slices.Equal(got, want(weights)) {
			t.Fatalf("step %d: %v", step, got)
		}
	}
	if calls != 5 {
		t.Errorf("an operand changing every call was derived %d times in 5, want 5", calls)
	}
	c.mu.Lock()
	kept := len(c.entries)
	c.mu.Unlock()
	if kept != 0 {
		t.Errorf("%d entries kept for an operand that changes every call", kept)
	}

	// Full: everything is dropped for the new entry.
	c.mu.Lock()
	c.bytes = DerivedCacheMaxBytes
	c.mu.Unlock()
	weights[0] = -1
	get(weights)
	get(weights)
	c.mu.Lock()
	kept, held := len(c.entries), c.bytes
	c.mu.Unlock()
	if kept != 1 || held != 8*len(weights) {
		t.Errorf("a full cache keeps %d entries of %d bytes after a new one, want 1 of %d", kept, held, 8*len(weights))
	}

	// The same bytes elsewhere, or with other dims, are other operands.
	other := make([]float32, len(weights))
	copy(other, weights)
	calls = 0
	get(other)
	c.Float32(weights, 0, "double", [4]int{99}, len(weights), nil, double(weights))
	if calls != 2 {
		t.Errorf("another address and other dims derived %d times, want 2", calls)
	}
}

// TestDerivedCacheParallelCompare: with workers, a large operand changed
// in any one byte (each of the ranges compared apart) is derived again.
func TestDerivedCacheParallelCompare(t *testing.T) {
	b := newDefaultBackend()
	b.Workers.SetMaxParallelism(4)
	c := &b.Derived
	calls := 0
	weights := make([]float32, 3*derivedEqualMinRange) // 12 MB: 4 ranges of 3 MB
	get := func() []float32 {
		v, _ := c.Float32(weights, 0, "copy", [4]int{len(weights)}, len(weights), nil, func(dst []float32) {
			calls++
			copy(dst, weights)
		})
		return v
	}
	get()
	get() // kept
	for _, i := range []int{0, len(weights)/4 + 1, len(weights) / 2, len(weights) - 1} {
		calls = 0
		if got := get(); !slices.Equal(got, weights) || calls != 0 {
			t.Fatalf("unchanged operand: derived %d times, or a wrong value", calls)
		}
		weights[i]++
		if got := get(); !slices.Equal(got, weights) || calls != 1 {
			t.Fatalf("operand changed at %d of %d: derived %d times, want 1, or a wrong value", i, len(weights), calls)
		}
		get() // kept again
	}
}

// TestDerivedCacheAlloc: values not kept are derived into the caller's
// slice from alloc (reported not kept), a hit allocates nothing, and
// values the cache keeps are reported kept.
func TestDerivedCacheAlloc(t *testing.T) {
	var c DerivedCache
	weights := make([]float32, 1<<12)
	var allocated [][]float32
	alloc := func(n int) []float32 {
		s := make([]float32, n+8) // longer than asked: only n are used
		allocated = append(allocated, s)
		return s
	}
	get := func() ([]float32, bool) {
		return c.Float32(weights, 0, "copy", [4]int{len(weights)}, len(weights), alloc, func(dst []float32) { copy(dst, weights) })
	}
	for step := range 3 { // a kernel being trained: other bytes every step
		weights[0] = float32(step)
		v, kept := get()
		if kept || len(allocated) != step+1 || &v[0] != &allocated[step][0] || len(v) != len(weights) || v[0] != float32(step) {
			t.Fatalf("step %d: kept %v, %d allocations, want the values in the caller's slice, not kept", step, kept, len(allocated))
		}
	}
	v, kept := get() // the same bytes as the time before: kept now
	if !kept || len(allocated) != 4 || &v[0] != &allocated[3][0] {
		t.Fatalf("second sight: kept %v, %d allocations, want the new slice kept", kept, len(allocated))
	}
	if v, kept = get(); !kept || len(allocated) != 4 || !slices.Equal(v, weights) {
		t.Fatalf("hit: kept %v, %d allocations, want the kept values and no allocation", kept, len(allocated))
	}
}

// TestDerivedCacheFrozen: an operand in a frozen buffer is kept at first
// sight without a copy of its bytes, and its kept values are used while
// the freeze number is the same, without reading the operand (shown here
// by breaking the freeze's promise: the values stay those of the bytes at
// the freeze); another freeze number, or none, derives again.
func TestDerivedCacheFrozen(t *testing.T) {
	var c DerivedCache
	weights := make([]float32, 1<<12)
	for i := range weights {
		weights[i] = float32(i)
	}
	calls := 0
	get := func(frozen uint64) ([]float32, bool) {
		return c.Float32(weights, frozen, "copy", [4]int{len(weights)}, len(weights), nil, func(dst []float32) {
			calls++
			copy(dst, weights)
		})
	}
	if v, kept := get(7); !kept || calls != 1 || !slices.Equal(v, weights) {
		t.Fatalf("first sight in a frozen buffer: kept %v, derived %d times, want kept at once", kept, calls)
	}
	c.mu.Lock()
	held := c.bytes
	c.mu.Unlock()
	if held != 4*len(weights) {
		t.Errorf("a frozen operand's entry holds %d bytes, want %d (the derived values, no copy of the operand)", held, 4*len(weights))
	}
	want := slices.Clone(weights)
	weights[5] = -5 // a write the freeze forbids: not seen while the freeze lasts
	for range 3 {
		if v, kept := get(7); !kept || calls != 1 || !slices.Equal(v, want) {
			t.Fatalf("same freeze: kept %v, derived %d times, want the kept values", kept, calls)
		}
	}
	for _, tc := range []struct {
		name   string
		frozen uint64
		kept   bool
	}{
		{"refrozen", 8, true}, // derived again, kept under the new number
		{"not frozen", 0, false},
		{"not frozen again", 0, true}, // seen twice with the same bytes
	} {
		weights[5]--
		calls = 0
		v, kept := get(tc.frozen)
		if calls != 1 || kept != tc.kept || !slices.Equal(v, weights) {
			t.Errorf("%s: derived %d times, kept %v, want derived again from the current bytes, kept %v", tc.name, calls, kept, tc.kept)
		}
		if tc.name == "not frozen" {
			weights[5]++ // the next call sees the bytes of this one
		}
	}

	// Kept by its bytes, then frozen: trusted from the first frozen
	// call on, and its copy of the operand dropped.
	calls = 0
	want = slices.Clone(weights)
	if v, kept := get(9); !kept || calls != 0 || !slices.Equal(v, want) {
		t.Fatalf("an entry kept by its bytes, first frozen call: kept %v, derived %d times, want the kept values", kept, calls)
	}
	weights[5] += 3 // breaks the freeze's promise: not seen
	if v, kept := get(9); !kept || calls != 0 || !slices.Equal(v, want) {
		t.Fatalf("an entry kept by its bytes, then frozen: kept %v, derived %d times, want it trusted", kept, calls)
	}
	c.mu.Lock()
	held = c.bytes
	c.mu.Unlock()
	if held != 4*len(weights) {
		t.Errorf("the trusted entry holds %d bytes, want %d (its copy of the operand dropped)", held, 4*len(weights))
	}
}
