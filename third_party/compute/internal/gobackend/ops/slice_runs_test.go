// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/ops"
	"github.com/gomlx/compute/shapes"
)

// TestSliceRuns checks slices copied as contiguous runs (a padded border
// cut off, whole trailing axes merged, a strided outer axis; small and
// large enough to be split across workers) and one with a strided inner
// axis (element by element) against the definition.
func TestSliceRuns(t *testing.T) {
	seq, par := sequentialAndParallel(t)
	r := rand.New(rand.NewPCG(11, 12))
	for _, tc := range []struct {
		dims, starts, limits, strides []int
	}{
		{[]int{8, 66, 66, 16}, []int{0, 1, 1, 0}, []int{8, 65, 65, 16}, []int{1, 1, 1, 1}},   // a padding's gradient
		{[]int{4, 10, 12}, []int{1, 0, 0}, []int{3, 10, 12}, []int{1, 1, 1}},                 // whole trailing axes
		{[]int{6, 9, 20}, []int{0, 2, 3}, []int{6, 9, 19}, []int{2, 3, 1}},                   // strided outer axes
		{[]int{5, 7, 9}, []int{0, 1, 0}, []int{5, 7, 9}, []int{1, 1, 2}},                     // strided inner axis
		{[]int{3, 200, 130, 4}, []int{1, 5, 3, 0}, []int{3, 195, 127, 4}, []int{1, 1, 1, 1}}, // large
	} {
		s := shapes.Make(dtypes.Float32, tc.dims...)
		in := randomFloats(r, s.Size())
		for beName, be := range map[string]compute.Backend{"sequential": seq, "parallel": par} {
			t.Run(fmt.Sprintf("%v-%v-%v-%v/%s", tc.dims, tc.starts, tc.limits, tc.strides, beName), func(t *testing.T) {
				got := runOnBackend(t, be, func(f *gobackend.Function, p []compute.Value) (compute.Value, error) {
					return ops.Slice(f, p[0], tc.starts, tc.limits, tc.strides)
				}, []any{in}, []shapes.Shape{s})
				// Definition: iterate the output's multi-index.
				rank := len(tc.dims)
				outDims := make([]int, rank)
				for a := range rank {
					outDims[a] = (tc.limits[a] - tc.starts[a] + tc.strides[a] - 1) / tc.strides[a]
				}
				inStrides := s.Strides()
				idx := make([]int, rank)
				for flat := range got {
					src := 0
					for a := range rank {
						src += (tc.starts[a] + idx[a]*tc.strides[a]) * inStrides[a]
					}
					if got[flat] != in[src] {
						t.Fatalf("out%v = %v, want %v", idx, got[flat], in[src])
					}
					for a := rank - 1; a >= 0; a-- {
						idx[a]++
						if idx[a] < outDims[a] {
							break
						}
						idx[a] = 0
					}
				}
			})
		}
	}
}

// TestPadParallel checks large zero pads, which run on the workers, against
// the definition: a "same" border, an asymmetric one with a crop
// (negative end), and a pad of the first axis.
func TestPadParallel(t *testing.T) {
	seq, par := sequentialAndParallel(t)
	r := rand.New(rand.NewPCG(13, 14))
	for _, tc := range []struct {
		dims []int
		pads []compute.PadAxis
	}{
		{[]int{8, 56, 56, 16}, []compute.PadAxis{{}, {Start: 1, End: 1}, {Start: 1, End: 1}, {}}},
		{[]int{4, 60, 50, 8}, []compute.PadAxis{{}, {Start: 2, End: -1}, {Start: 0, End: 3}, {}}},
		{[]int{6, 100, 120}, []compute.PadAxis{{Start: 1, End: 2}, {}, {Start: 1}}},
	} {
		s := shapes.Make(dtypes.Float32, tc.dims...)
		in := randomFloats(r, s.Size())
		for beName, be := range map[string]compute.Backend{"sequential": seq, "parallel": par} {
			t.Run(fmt.Sprintf("%v-%v/%s", tc.dims, tc.pads, beName), func(t *testing.T) {
				got := runOnBackend(t, be, func(f *gobackend.Function, p []compute.Value) (compute.Value, error) {
					zero, err := f.Constant([]float32{0})
					if err != nil {
						return nil, err
					}
					return ops.Pad(f, p[0], zero, tc.pads...)
				}, []any{in}, []shapes.Shape{s})
				rank := len(tc.dims)
				outDims := make([]int, rank)
				for a := range rank {
					outDims[a] = tc.dims[a] + tc.pads[a].Start + tc.pads[a].End
				}
				inStrides := s.Strides()
				idx := make([]int, rank)
				for flat := range got {
					src, inside := 0, true
					for a := range rank {
						i := idx[a] - tc.pads[a].Start
						if i < 0 || i >= tc.dims[a] {
							inside = false
							break
						}
						src += i * inStrides[a]
					}
					want := float32(0)
					if inside {
						want = in[src]
					}
					if got[flat] != want {
						t.Fatalf("out%v = %v, want %v", idx, got[flat], want)
					}
					for a := rank - 1; a >= 0; a-- {
						idx[a]++
						if idx[a] < outDims[a] {
							break
						}
						idx[a] = 0
					}
				}
			})
		}
	}
}
