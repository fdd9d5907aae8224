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

// transpose2DShapes are tall, wide, square and ragged (not multiples of the
// 32 tile) matrices.
var transpose2DShapes = [][2]int{{8192, 32}, {32, 8192}, {2048, 96}, {1000, 37}, {37, 1000}, {300, 300}, {5, 3}}

// TestTranspose2D checks the 2D transpose (both loop orders, with and
// without workers) against the definition.
func TestTranspose2D(t *testing.T) {
	seq, par := sequentialAndParallel(t)
	r := rand.New(rand.NewPCG(5, 6))
	for _, hw := range transpose2DShapes {
		h, w := hw[0], hw[1]
		in := randomFloats(r, h*w)
		for name, be := range map[string]compute.Backend{"sequential": seq, "parallel": par} {
			t.Run(fmt.Sprintf("%dx%d/%s", h, w, name), func(t *testing.T) {
				got := runOnBackend(t, be, func(f *gobackend.Function, p []compute.Value) (compute.Value, error) {
					return ops.Transpose(f, p[0], 1, 0)
				}, []any{in}, []shapes.Shape{shapes.Make(dtypes.Float32, h, w)})
				for i := range h {
					for j := range w {
						if got[j*h+i] != in[i*w+j] {
							t.Fatalf("out[%d,%d] = %v, want in[%d,%d] = %v", j, i, got[j*h+i], i, j, in[i*w+j])
						}
					}
				}
			})
		}
	}
}

// BenchmarkTranspose2D reports the transpose's bandwidth (bytes read and
// written) on the default backend.
func BenchmarkTranspose2D(b *testing.B) {
	for _, hw := range transpose2DShapes[:4] {
		h, w := hw[0], hw[1]
		b.Run(fmt.Sprintf("%dx%d", h, w), func(b *testing.B) {
			s := shapes.Make(dtypes.Float32, h, w)
			builder := backend.Builder("transpose").(*gobackend.Builder)
			main := builder.Main().(*gobackend.Function)
			p, _ := main.Parameter("x", s, nil)
			out, err := ops.Transpose(main, p, 1, 0)
			if err != nil {
				b.Fatal(err)
			}
			if err := main.Return([]compute.Value{out}, nil); err != nil {
				b.Fatal(err)
			}
			exec, err := builder.Compile()
			if err != nil {
				b.Fatal(err)
			}
			buf, _ := backend.BufferFromFlatData(0, make([]float32, h*w), s)
			for b.Loop() {
				outs, err := exec.Execute([]compute.Buffer{buf}, nil, 0)
				if err != nil {
					b.Fatal(err)
				}
				backend.PutBuffer(outs[0].(*gobackend.Buffer))
			}
			b.ReportMetric(float64(8*h*w)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
	}
}

// TestTransposeKeepingOrder checks transposes that only change the shape
// (identity permutations, moves of axes of size 1), which run as reshapes,
// and one that does not keep the order, against the definition.
func TestTransposeKeepingOrder(t *testing.T) {
	seq, _ := sequentialAndParallel(t)
	r := rand.New(rand.NewPCG(9, 10))
	for _, tc := range []struct {
		dims, perm []int
	}{
		{[]int{6, 5}, []int{0, 1}},
		{[]int{4, 1, 3}, []int{1, 0, 2}},
		{[]int{2, 3, 1, 4}, []int{0, 2, 1, 3}},
		{[]int{2, 3, 4}, []int{0, 2, 1}}, // a real transpose
	} {
		t.Run(fmt.Sprintf("%v-%v", tc.dims, tc.perm), func(t *testing.T) {
			s := shapes.Make(dtypes.Float32, tc.dims...)
			in := randomFloats(r, s.Size())
			got := runOnBackend(t, seq, func(f *gobackend.Function, p []compute.Value) (compute.Value, error) {
				// Add first, so that the transpose owns its input and may reuse it.
				sum, err := ops.Add(f, p[0], p[0])
				if err != nil {
					return nil, err
				}
				return ops.Transpose(f, sum, tc.perm...)
			}, []any{in}, []shapes.Shape{s})
			// Expected: out[idx] = 2*in[source index] with out dims = dims permuted.
			outDims := make([]int, len(tc.perm))
			for i, a := range tc.perm {
				outDims[i] = tc.dims[a]
			}
			inStrides := make([]int, len(tc.dims))
			stride := 1
			for a := len(tc.dims) - 1; a >= 0; a-- {
				inStrides[a] = stride
				stride *= tc.dims[a]
			}
			idx := make([]int, len(outDims))
			for flat := range got {
				src := 0
				for i, a := range tc.perm {
					src += idx[i] * inStrides[a]
				}
				if got[flat] != 2*in[src] {
					t.Fatalf("out[%v] = %v, want %v", idx, got[flat], 2*in[src])
				}
				for i := len(idx) - 1; i >= 0; i-- {
					idx[i]++
					if idx[i] < outDims[i] {
						break
					}
					idx[i] = 0
				}
			}
		})
	}
}
