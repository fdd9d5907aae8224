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

// TestReduceWindowMaxChannelsLast checks float32 max pooling over the
// spatial axes of [N, H, W, C] tensors (the channels-last path) against
// the definition, with and without workers: a ResNet stem's 3x3 stride-2
// pooling with padding 1 on odd and even sizes, 2x2 stride 2, a stride
// smaller than the window, asymmetric padding, channels that are not a
// multiple of the vector length, negative values, windows entirely in
// the padding (-Inf), nil strides (the window's), and NaN inputs, which
// propagate as in the generic reduction (the first or any later row of a
// window).
func TestReduceWindowMaxChannelsLast(t *testing.T) {
	seq, par := sequentialAndParallel(t)
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		n, h, w, c, kh, kw, sh, sw int
		pads                       [2][2]int
		nilStrides                 bool
		nans                       bool
	}{
		{2, 9, 8, 64, 3, 3, 2, 2, [2][2]int{{1, 1}, {1, 1}}, false, false},
		{1, 16, 16, 20, 3, 3, 2, 2, [2][2]int{{1, 1}, {1, 1}}, false, false},
		{3, 6, 7, 5, 2, 2, 2, 2, [2][2]int{}, true, false},
		{1, 7, 5, 33, 3, 2, 1, 1, [2][2]int{{1, 0}, {0, 1}}, false, false},
		{2, 4, 5, 17, 2, 2, 1, 2, [2][2]int{{2, 0}, {0, 0}}, false, false},
		{2, 9, 8, 64, 3, 3, 2, 2, [2][2]int{{1, 1}, {1, 1}}, false, true},
		{1, 7, 5, 33, 3, 2, 1, 1, [2][2]int{{1, 0}, {0, 1}}, false, true},
	} {
		name := fmt.Sprintf("%dx%dx%dx%d-k%dx%d-s%dx%d-p%v", tc.n, tc.h, tc.w, tc.c, tc.kh, tc.kw, tc.sh, tc.sw, tc.pads)
		inShape := shapes.Make(dtypes.Float32, tc.n, tc.h, tc.w, tc.c)
		x := randomFloats(r, inShape.Size()) // in [-1, 1)
		if tc.nans {
			name += "-nan"
			for i := 0; i < len(x); i += 37 {
				x[i] = float32(math.NaN())
			}
		}
		window := []int{1, tc.kh, tc.kw, 1}
		strides := []int{1, tc.sh, tc.sw, 1}
		if tc.nilStrides {
			strides = nil
		}
		paddings := [][2]int{{0, 0}, tc.pads[0], tc.pads[1], {0, 0}}
		build := func(f *gobackend.Function, p []compute.Value) (compute.Value, error) {
			return ops.ReduceWindow(f, p[0], compute.ReduceOpMax, window, strides, nil, nil, paddings)
		}
		ho := (tc.h+tc.pads[0][0]+tc.pads[0][1]-tc.kh)/tc.sh + 1
		wo := (tc.w+tc.pads[1][0]+tc.pads[1][1]-tc.kw)/tc.sw + 1
		want := make([]float32, tc.n*ho*wo*tc.c)
		for b := range tc.n {
			for oy := range ho {
				for ox := range wo {
					for ch := range tc.c {
						m := float32(math.Inf(-1))
						for ky := range tc.kh {
							for kx := range tc.kw {
								iy, ix := oy*tc.sh-tc.pads[0][0]+ky, ox*tc.sw-tc.pads[1][0]+kx
								if iy >= 0 && iy < tc.h && ix >= 0 && ix < tc.w {
									m = max(m, x[((b*tc.h+iy)*tc.w+ix)*tc.c+ch])
								}
							}
						}
						want[((b*ho+oy)*wo+ox)*tc.c+ch] = m
					}
				}
			}
		}
		for beName, be := range map[string]compute.Backend{"sequential": seq, "parallel": par} {
			t.Run(name+"/"+beName, func(t *testing.T) {
				got := runOnBackend(t, be, build, []any{x}, []shapes.Shape{inShape})
				if len(got) != len(want) {
					t.Fatalf("%d outputs, want %d", len(got), len(want))
				}
				for i := range got {
					if got[i] != want[i] && !(math.IsNaN(float64(got[i])) && math.IsNaN(float64(want[i]))) {
						t.Fatalf("output %d = %v, want %v", i, got[i], want[i])
					}
				}
			})
		}
	}
}
