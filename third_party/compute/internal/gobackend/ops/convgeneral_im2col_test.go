// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/ops"
	"github.com/gomlx/compute/shapes"
)

// TestConvGeneralIm2col checks float32 channels-last convolutions, which
// run as chunked im2col matrix multiplications, against the definition:
// strides, asymmetric paddings, kernel dilations, 1x1 and 7x7 kernels, few
// and many channels, and a size that takes several chunks, with and
// without workers; with Cout a multiple of 32, the row-major 8 x 32 tiles
// (partial last strips included).
func TestConvGeneralIm2col(t *testing.T) {
	seq, par := sequentialAndParallel(t)
	r := rand.New(rand.NewPCG(7, 8))
	for _, tc := range []struct {
		n, h, w, cin, kh, kw, cout int
		stride, dil                int
		pad                        [2][2]int
	}{
		{2, 9, 7, 3, 7, 7, 5, 2, 1, [2][2]int{{3, 3}, {3, 3}}},     // a stem
		{1, 12, 10, 16, 3, 3, 8, 1, 1, [2][2]int{{1, 1}, {1, 1}}},  // same padding
		{2, 10, 11, 8, 3, 3, 4, 1, 2, [2][2]int{{2, 2}, {2, 2}}},   // dilated
		{1, 9, 9, 4, 1, 1, 6, 2, 1, [2][2]int{}},                   // 1x1, stride 2
		{1, 8, 9, 5, 3, 3, 7, 2, 1, [2][2]int{{0, 1}, {1, 0}}},     // asymmetric padding
		{2, 40, 40, 32, 3, 3, 64, 1, 1, [2][2]int{{1, 1}, {1, 1}}}, // several chunks
		// Cout a multiple of 32 (the row-major path): a last strip of fewer
		// than 8 rows, a stride with dilation, the stem.
		{1, 7, 9, 8, 3, 3, 32, 1, 1, [2][2]int{{1, 1}, {1, 1}}},
		{2, 13, 11, 24, 3, 3, 96, 2, 2, [2][2]int{{2, 2}, {2, 2}}},
		{3, 23, 19, 3, 7, 7, 64, 2, 1, [2][2]int{{3, 3}, {3, 3}}},
		{1, 10, 10, 130, 3, 3, 64, 1, 1, [2][2]int{{1, 1}, {1, 1}}}, // contracting blocks, a partial one
	} {
		name := fmt.Sprintf("%dx%dx%dx%d-k%dx%d-%d-s%d-d%d-p%v", tc.n, tc.h, tc.w, tc.cin, tc.kh, tc.kw, tc.cout, tc.stride, tc.dil, tc.pad)
		inShape := shapes.Make(dtypes.Float32, tc.n, tc.h, tc.w, tc.cin)
		kShape := shapes.Make(dtypes.Float32, tc.kh, tc.kw, tc.cin, tc.cout)
		x := randomFloats(r, inShape.Size())
		k := randomFloats(r, kShape.Size())
		axes := compute.ConvolveAxesConfig{
			InputBatch: 0, InputChannels: 3, InputSpatial: []int{1, 2},
			KernelInputChannels: 2, KernelOutputChannels: 3, KernelSpatial: []int{0, 1},
			OutputBatch: 0, OutputChannels: 3, OutputSpatial: []int{1, 2},
		}
		build := func(f *gobackend.Function, p []compute.Value) (compute.Value, error) {
			return ops.ConvGeneral(f, p[0], p[1], axes, []int{tc.stride, tc.stride},
				[][2]int{tc.pad[0], tc.pad[1]}, nil, []int{tc.dil, tc.dil}, 1, 1)
		}
		effK := func(k int) int { return (k-1)*tc.dil + 1 }
		ho := (tc.h+tc.pad[0][0]+tc.pad[0][1]-effK(tc.kh))/tc.stride + 1
		wo := (tc.w+tc.pad[1][0]+tc.pad[1][1]-effK(tc.kw))/tc.stride + 1
		want := make([]float64, tc.n*ho*wo*tc.cout)
		for b := range tc.n {
			for oy := range ho {
				for ox := range wo {
					for co := range tc.cout {
						var sum float64
						for ky := range tc.kh {
							iy := oy*tc.stride - tc.pad[0][0] + ky*tc.dil
							for kx := range tc.kw {
								ix := ox*tc.stride - tc.pad[1][0] + kx*tc.dil
								if iy < 0 || iy >= tc.h || ix < 0 || ix >= tc.w {
									continue
								}
								for ci := range tc.cin {
									sum += float64(x[((b*tc.h+iy)*tc.w+ix)*tc.cin+ci]) * float64(k[((ky*tc.kw+kx)*tc.cin+ci)*tc.cout+co])
								}
							}
						}
						want[((b*ho+oy)*wo+ox)*tc.cout+co] = sum
					}
				}
			}
		}
		for beName, be := range map[string]compute.Backend{"sequential": seq, "parallel": par} {
			t.Run(name+"/"+beName, func(t *testing.T) {
				got := runOnBackend(t, be, build, []any{x, k}, []shapes.Shape{inShape, kShape})
				if len(got) != len(want) {
					t.Fatalf("%d outputs, want %d", len(got), len(want))
				}
				for i := range got {
					if math.Abs(float64(got[i])-want[i]) > 1e-4*(1+math.Abs(want[i])) {
						t.Fatalf("output %d = %v, want %v", i, got[i], want[i])
					}
				}
			})
		}
	}
}
