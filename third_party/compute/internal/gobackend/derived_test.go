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
		return c.Float32(src, "double", [4]int{len(src)}, len(src), double(src))
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
	c.Float32(weights, "double", [4]int{99}, len(weights), double(weights))
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
		return c.Float32(weights, "copy", [4]int{len(weights)}, len(weights), func(dst []float32) {
			calls++
			copy(dst, weights)
		})
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
