// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/ops"
	"github.com/gomlx/compute/shapes"
)

// TestConvKernelReverseFusion checks convolutions of a kernel reversed in
// space against the definition, with and without workers, and whether
// the Reverse was folded into the convolution: with the channels swapped
// (a convolution's input gradient) on the row-major and Winograd paths,
// in the forward layout, grouped (which the direct loop runs, from a
// reversed copy), and not folded where the Reverse has a second user or
// reverses one axis only. A folded convolution must give the same bits
// as the Reverse and the convolution run apart.
func TestConvKernelReverseFusion(t *testing.T) {
	seq, par := sequentialAndParallel(t)
	r := rand.New(rand.NewPCG(13, 14))
	for _, tc := range []struct {
		name                   string
		n, h, w, cin, cout, kh int
		groups                 int
		swapped                bool
		revAxes                []int
		extraUser, wantFolded  bool
	}{
		{"input gradient", 2, 9, 7, 5, 6, 3, 1, true, []int{0, 1}, false, true},
		{"input gradient, Winograd", 1, 6, 5, 64, 64, 3, 1, true, []int{1, 0}, false, true},
		{"forward layout", 2, 8, 6, 4, 32, 3, 1, false, []int{0, 1}, false, true},
		{"grouped", 1, 6, 7, 4, 6, 3, 2, false, []int{0, 1}, false, true},
		{"second user", 2, 9, 7, 5, 6, 3, 1, true, []int{0, 1}, true, false},
		{"one axis", 2, 9, 7, 5, 6, 3, 1, true, []int{0}, false, false},
	} {
		cinG := tc.cin / tc.groups
		xs := shapes.Make(dtypes.Float32, tc.n, tc.h, tc.w, tc.cin)
		ks := shapes.Make(dtypes.Float32, tc.kh, tc.kh, cinG, tc.cout)
		axes := compute.ConvolveAxesConfig{
			InputBatch: 0, InputChannels: 3, InputSpatial: []int{1, 2},
			KernelInputChannels: 2, KernelOutputChannels: 3, KernelSpatial: []int{0, 1},
			OutputBatch: 0, OutputChannels: 3, OutputSpatial: []int{1, 2},
		}
		if tc.swapped {
			ks = shapes.Make(dtypes.Float32, tc.kh, tc.kh, tc.cout, cinG)
			axes.KernelInputChannels, axes.KernelOutputChannels = 3, 2
		}
		x, k := randomFloats(r, xs.Size()), randomFloats(r, ks.Size())
		// weight(ky, kx, ci, co) of the convolution: the stored kernel
		// reversed on revAxes.
		weight := func(ky, kx, ci, co int) float64 {
			for _, a := range tc.revAxes {
				if a == 0 {
					ky = tc.kh - 1 - ky
				} else {
					kx = tc.kh - 1 - kx
				}
			}
			if tc.swapped {
				return float64(k[((ky*tc.kh+kx)*tc.cout+co)*cinG+ci])
			}
			return float64(k[((ky*tc.kh+kx)*cinG+ci)*tc.cout+co])
		}
		pad := tc.kh / 2
		want := make([]float64, tc.n*tc.h*tc.w*tc.cout)
		for b := range tc.n {
			for oy := range tc.h {
				for ox := range tc.w {
					for co := range tc.cout {
						g := co / (tc.cout / tc.groups)
						var s float64
						for ky := range tc.kh {
							for kx := range tc.kh {
								iy, ix := oy-pad+ky, ox-pad+kx
								if iy < 0 || ix < 0 || iy >= tc.h || ix >= tc.w {
									continue
								}
								for ci := range cinG {
									s += float64(x[((b*tc.h+iy)*tc.w+ix)*tc.cin+g*cinG+ci]) * weight(ky, kx, ci, co)
								}
							}
						}
						want[((b*tc.h+oy)*tc.w+ox)*tc.cout+co] = s
					}
				}
			}
		}
		for _, beName := range []string{"sequential", "parallel"} {
			be := map[string]compute.Backend{"sequential": seq, "parallel": par}[beName]
			t.Run(fmt.Sprintf("%s/%s", tc.name, beName), func(t *testing.T) {
				run := func(extraUser bool) ([]float64, []bool) {
					var builder *gobackend.Builder
					build := func(f *gobackend.Function, p []compute.Value) ([]compute.Value, error) {
						builder = f.RawBuilder
						rev, err := ops.Reverse(f, p[1], tc.revAxes...)
						if err != nil {
							return nil, err
						}
						c, err := ops.ConvGeneral(f, p[0], rev, axes, nil, [][2]int{{pad, pad}, {pad, pad}}, nil, nil, tc.groups, 1)
						if err != nil {
							return nil, err
						}
						if extraUser {
							return []compute.Value{c, rev}, nil
						}
						return []compute.Value{c}, nil
					}
					got := runMultiOnBackend(t, be, build, []any{x, k}, []shapes.Shape{xs, ks})
					return got[0], ops.ConvKernelsReversedForTest(builder)
				}
				got, folded := run(tc.extraUser)
				for i := range want {
					if math.Abs(got[i]-want[i]) > 1e-4*(1+math.Abs(want[i])) {
						t.Fatalf("value %d = %v, want %v", i, got[i], want[i])
					}
				}
				if !slices.Equal(folded, []bool{tc.wantFolded}) {
					t.Fatalf("kernel reversed in the convolution: %v, want [%v]", folded, tc.wantFolded)
				}
				if tc.wantFolded {
					apart, folded := run(true)
					if !slices.Equal(folded, []bool{false}) {
						t.Fatalf("with a second user of the Reverse: kernel reversed %v, want [false]", folded)
					}
					if !slices.Equal(got, apart) {
						t.Fatalf("the folded convolution's values differ from the Reverse and convolution run apart")
					}
				}
			})
		}
	}
}
