// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute/internal/gobackend"
)

// TestTransposeFloat32 transposes float32 matrices of sizes that are and
// are not multiples of the 16 x 16 blocks (with and without workers) and
// compares every value with the definition; where the blocks run (AVX-512),
// also ranges of rows and columns of matrices with rows longer than their
// width (strides), leaving the rest of out untouched.
func TestTransposeFloat32(t *testing.T) {
	be, err := gobackend.New("parallelism=4")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Finalize()
	backend := be.(*gobackend.Backend)
	for _, hw := range [][2]int{{1, 1}, {16, 16}, {17, 15}, {64, 128}, {1000, 64}, {64, 1000}, {300, 33}, {4096, 48}} {
		h, w := hw[0], hw[1]
		in := make([]float32, h*w)
		for i := range in {
			in[i] = float32(i) + 0.5
		}
		for _, b := range []*gobackend.Backend{nil, backend} {
			out := make([]float32, h*w)
			transpose2D(b, in, out, h, w)
			for r := range h {
				for c := range w {
					if got, want := out[c*h+r], in[r*w+c]; got != want {
						t.Fatalf("[%d, %d] (workers: %v): out[%d, %d] = %g, want %g", h, w, b != nil, c, r, got, want)
					}
				}
			}
		}
	}

	for _, tc := range []struct{ inStride, outStride, r0, r1, c0, c1 int }{
		{40, 50, 0, 32, 0, 32},
		{40, 50, 3, 35, 5, 37},
		{100, 70, 1, 50, 2, 99},
		{16, 16, 0, 16, 0, 16},
	} {
		name := fmt.Sprintf("%+v", tc)
		rows, cols := tc.r1, tc.c1
		in := make([]float32, rows*tc.inStride)
		for i := range in {
			in[i] = rand.Float32()
		}
		out := make([]float32, cols*tc.outStride)
		for i := range out {
			out[i] = -1
		}
		if !transposeFloat32Tile(in, tc.inStride, out, tc.outStride, tc.r0, tc.r1, tc.c0, tc.c1) {
			t.Skip("no AVX-512 blocks here: transpose2D's scalar tiles were checked above")
		}
		for c := range cols {
			for r := range tc.outStride {
				got := out[c*tc.outStride+r]
				want := float32(-1)
				if r >= tc.r0 && r < tc.r1 && c >= tc.c0 && c < tc.c1 {
					want = in[r*tc.inStride+c]
				}
				if got != want {
					t.Fatalf("%s: out[%d, %d] = %g, want %g", name, c, r, got, want)
				}
			}
		}
	}
}

// TestTransposeSegmentSums: the blocked sum and transpose of the kernel
// gradient's segments gives the same bits as the loop it replaces.
func TestTransposeSegmentSums(t *testing.T) {
	be, err := gobackend.New("parallelism=4")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Finalize()
	backend := be.(*gobackend.Backend)
	for _, tc := range []struct{ segments, cout, k int }{{1, 64, 576}, {3, 20, 27}, {4, 512, 4608}, {2, 7, 100}} {
		coutPad, kPad := (tc.cout+7)/8*8, (tc.k+31)/32*32
		sums := make([]float32, tc.segments*coutPad*kPad)
		for i := range sums {
			sums[i] = rand.Float32()*2 - 1
		}
		want := make([]float32, tc.k*tc.cout)
		for i := range tc.k {
			for co := range tc.cout {
				v := sums[co*kPad+i]
				for seg := 1; seg < tc.segments; seg++ {
					v += sums[(seg*coutPad+co)*kPad+i]
				}
				want[i*tc.cout+co] = v
			}
		}
		got := make([]float32, tc.k*tc.cout)
		if !transposeSegmentSums(backend, sums, tc.segments, coutPad, kPad, tc.cout, tc.k, got) {
			t.Skip("no AVX-512 blocks here")
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%+v: out[%d] = %g, want %g (bit for bit)", tc, i, got[i], want[i])
			}
		}
	}
}

// BenchmarkTranspose2DBlocks transposes a kernel gradient's dy ([positions,
// Cout]) as float32 (16 x 16 blocks where AVX-512 is allowed) and as uint32
// (the same bytes through the generic tiles), one core.
func BenchmarkTranspose2DBlocks(b *testing.B) {
	for _, hw := range [][2]int{{16384, 64}, {1024, 512}, {64, 16384}} {
		h, w := hw[0], hw[1]
		f32in, f32out := make([]float32, h*w), make([]float32, h*w)
		u32in, u32out := make([]uint32, h*w), make([]uint32, h*w)
		b.Run(fmt.Sprintf("float32/%dx%d", h, w), func(b *testing.B) {
			b.SetBytes(int64(8 * h * w))
			for b.Loop() {
				transpose2D(nil, f32in, f32out, h, w)
			}
		})
		b.Run(fmt.Sprintf("uint32/%dx%d", h, w), func(b *testing.B) {
			b.SetBytes(int64(8 * h * w))
			for b.Loop() {
				transpose2D(nil, u32in, u32out, h, w)
			}
		})
	}
}
