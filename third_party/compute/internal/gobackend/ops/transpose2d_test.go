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
