// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package dot

import (
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
)

// TestRHSInOrderFor checks the test reshapeToSupportedLayout uses to keep
// an rhs already in LayoutNonTransposed order untransposed (the weight
// gradient x^T·dy: lhs dy [M, N] and rhs x [M, K], both contracting M).
func TestRHSInOrderFor(t *testing.T) {
	for _, tc := range []struct {
		dims                  []int
		contracting, batch    []int
		nonTransposed, transp bool
	}{
		{[]int{100, 9}, []int{0}, nil, true, false},          // x [M, K] contracting M: NonTransposed order
		{[]int{9, 100}, []int{1}, nil, false, true},          // [K', M] contracting last: Transposed order
		{[]int{2, 100, 9}, []int{1}, []int{0}, true, false},  // batched
		{[]int{2, 9, 100}, []int{2}, []int{0}, false, true},  // batched, contracting last
		{[]int{100, 2, 9}, []int{0}, []int{1}, false, false}, // batch axis not leading
		{[]int{5}, []int{0}, nil, true, true},                // a vector is both
	} {
		shape := shapes.Make(dtypes.Float32, tc.dims...)
		if got := rhsInOrderFor(shape, tc.contracting, tc.batch, LayoutNonTransposed); got != tc.nonTransposed {
			t.Errorf("%v contracting %v batch %v: NonTransposed order %v, want %v", tc.dims, tc.contracting, tc.batch, got, tc.nonTransposed)
		}
		if got := rhsInOrderFor(shape, tc.contracting, tc.batch, LayoutTransposed); got != tc.transp {
			t.Errorf("%v contracting %v batch %v: Transposed order %v, want %v", tc.dims, tc.contracting, tc.batch, got, tc.transp)
		}
	}
}
