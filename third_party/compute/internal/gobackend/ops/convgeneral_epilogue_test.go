// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/ops"
	"github.com/gomlx/compute/shapes"
)

// TestConvEpilogueFusion checks a channels-last convolution followed by a
// per-channel bias, a residual and a ReLU against the definition, with and
// without workers, and which epilogues the fusion gave the convolutions:
// bias and ReLU (the ReLU's zero on either side), the bias alone (the sum
// has a second user, or no ReLU follows), bias, residual and ReLU (either
// order of the residual sum; the sum of two convolutions' biased outputs,
// as a projection shortcut, where one convolution takes the other's output
// as its residual), bias and residual (the residual sum has a second
// user), and none (the convolution has a second user, or the added operand
// is not a per-channel bias).
func TestConvEpilogueFusion(t *testing.T) {
	seq, par := sequentialAndParallel(t)
	r := rand.New(rand.NewPCG(11, 12))
	const n, h, w, cin, cout = 2, 9, 7, 5, 37
	xs := shapes.Make(dtypes.Float32, n, h, w, cin)
	ks := shapes.Make(dtypes.Float32, 3, 3, cin, cout)
	os := shapes.Make(dtypes.Float32, n, h, w, cout)
	x, k, bias, full := randomFloats(r, xs.Size()), randomFloats(r, ks.Size()), randomFloats(r, cout), randomFloats(r, os.Size())
	conv := make([]float64, os.Size())
	for b := range n {
		for oy := range h {
			for ox := range w {
				for co := range cout {
					var s float64
					for ky := range 3 {
						for kx := range 3 {
							iy, ix := oy-1+ky, ox-1+kx
							if iy < 0 || ix < 0 || iy >= h || ix >= w {
								continue
							}
							for ci := range cin {
								s += float64(x[((b*h+iy)*w+ix)*cin+ci]) * float64(k[((ky*3+kx)*cin+ci)*cout+co])
							}
						}
					}
					conv[((b*h+oy)*w+ox)*cout+co] = s
				}
			}
		}
	}
	axes := compute.ConvolveAxesConfig{
		InputBatch: 0, InputChannels: 3, InputSpatial: []int{1, 2},
		KernelInputChannels: 2, KernelOutputChannels: 3, KernelSpatial: []int{0, 1},
		OutputBatch: 0, OutputChannels: 3, OutputSpatial: []int{1, 2},
	}
	type values = []compute.Value
	for _, tc := range []struct {
		name string
		// build returns the outputs from the convolution, the bias
		// [1,1,1,C], the full-shape operand and the zero scalar.
		build     func(f *gobackend.Function, c, b, full, zero compute.Value) (values, error)
		want      func(i int) []float64 // output i by the definition
		epilogues [][3]bool             // in any order
	}{
		{"bias and relu", func(f *gobackend.Function, c, b, _, zero compute.Value) (values, error) {
			a, _ := ops.Add(f, c, b)
			m, err := ops.Max(f, a, zero)
			return values{m}, err
		}, func(int) []float64 { return apply(conv, bias, true) }, [][3]bool{{true, false, true}}},
		{"zero first", func(f *gobackend.Function, c, b, _, zero compute.Value) (values, error) {
			a, _ := ops.Add(f, b, c)
			m, err := ops.Max(f, zero, a)
			return values{m}, err
		}, func(int) []float64 { return apply(conv, bias, true) }, [][3]bool{{true, false, true}}},
		{"sum used twice", func(f *gobackend.Function, c, b, _, zero compute.Value) (values, error) {
			a, _ := ops.Add(f, c, b)
			m, err := ops.Max(f, a, zero)
			return values{m, a}, err
		}, func(i int) []float64 { return apply(conv, bias, i == 0) }, [][3]bool{{true, false, false}}},
		{"no relu", func(f *gobackend.Function, c, b, _, _ compute.Value) (values, error) {
			a, err := ops.Add(f, c, b)
			return values{a}, err
		}, func(int) []float64 { return apply(conv, bias, false) }, [][3]bool{{true, false, false}}},
		{"convolution used twice", func(f *gobackend.Function, c, b, _, zero compute.Value) (values, error) {
			a, _ := ops.Add(f, c, b)
			m, err := ops.Max(f, a, zero)
			return values{m, c}, err
		}, func(i int) []float64 {
			if i == 1 {
				return conv
			}
			return apply(conv, bias, true)
		}, [][3]bool{{false, false, false}}},
		{"full-shape operand", func(f *gobackend.Function, c, _, full, zero compute.Value) (values, error) {
			a, _ := ops.Add(f, c, full)
			m, err := ops.Max(f, a, zero)
			return values{m}, err
		}, func(int) []float64 {
			out := make([]float64, len(conv))
			for i, v := range conv {
				out[i] = max(0, v+float64(full[i]))
			}
			return out
		}, [][3]bool{{false, false, false}}},
		{"bias, residual and relu", func(f *gobackend.Function, c, b, full, zero compute.Value) (values, error) {
			a, _ := ops.Add(f, c, b)
			s, _ := ops.Add(f, a, full)
			m, err := ops.Max(f, s, zero)
			return values{m}, err
		}, func(int) []float64 { return applyResidual(conv, bias, full, true) }, [][3]bool{{true, true, true}}},
		{"residual first, no relu", func(f *gobackend.Function, c, b, full, _ compute.Value) (values, error) {
			a, _ := ops.Add(f, b, c)
			s, err := ops.Add(f, full, a)
			return values{s}, err
		}, func(int) []float64 { return applyResidual(conv, bias, full, false) }, [][3]bool{{true, true, false}}},
		{"residual sum used twice", func(f *gobackend.Function, c, b, full, zero compute.Value) (values, error) {
			a, _ := ops.Add(f, c, b)
			s, _ := ops.Add(f, a, full)
			m, err := ops.Max(f, s, zero)
			return values{m, s}, err
		}, func(i int) []float64 { return applyResidual(conv, bias, full, i == 0) }, [][3]bool{{true, true, false}}},
		{"biased sum used twice", func(f *gobackend.Function, c, b, full, zero compute.Value) (values, error) {
			a, _ := ops.Add(f, c, b)
			s, _ := ops.Add(f, a, full)
			m, err := ops.Max(f, s, zero)
			return values{m, a}, err
		}, func(i int) []float64 {
			if i == 1 {
				return apply(conv, bias, false)
			}
			return applyResidual(conv, bias, full, true)
		}, [][3]bool{{true, false, false}}},
		{"two convolutions' sum", func(f *gobackend.Function, c, b, _, zero compute.Value) (values, error) {
			// c2 = 2 * conv (the kernel doubled), as a projection shortcut.
			k2, _ := ops.Add(f, c.(*gobackend.Node).Inputs[1], c.(*gobackend.Node).Inputs[1])
			c2, _ := ops.ConvGeneral(f, c.(*gobackend.Node).Inputs[0], k2, axes, nil, [][2]int{{1, 1}, {1, 1}}, nil, nil, 1, 1)
			a1, _ := ops.Add(f, c, b)
			a2, _ := ops.Add(f, c2, b)
			s, _ := ops.Add(f, a1, a2)
			m, err := ops.Max(f, s, zero)
			return values{m}, err
		}, func(int) []float64 {
			out := make([]float64, len(conv))
			for i, v := range conv {
				out[i] = max(0, 3*v+2*float64(bias[i%len(bias)]))
			}
			return out
		}, [][3]bool{{true, false, false}, {true, true, true}}},
	} {
		for beName, be := range map[string]compute.Backend{"sequential": seq, "parallel": par} {
			t.Run(tc.name+"/"+beName, func(t *testing.T) {
				var builder *gobackend.Builder
				build := func(f *gobackend.Function, p []compute.Value) ([]compute.Value, error) {
					builder = f.RawBuilder
					c, err := ops.ConvGeneral(f, p[0], p[1], axes, nil, [][2]int{{1, 1}, {1, 1}}, nil, nil, 1, 1)
					if err != nil {
						return nil, err
					}
					b, err := ops.Reshape(f, p[2], 1, 1, 1, cout)
					if err != nil {
						return nil, err
					}
					zero, err := f.Constant([]float32{0})
					if err != nil {
						return nil, err
					}
					return tc.build(f, c, b, p[3], zero)
				}
				got := runMultiOnBackend(t, be, build, []any{x, k, bias, full},
					[]shapes.Shape{xs, ks, shapes.Make(dtypes.Float32, cout), os})
				for i := range got {
					want := tc.want(i)
					for j := range want {
						if math.Abs(got[i][j]-want[j]) > 1e-4*(1+math.Abs(want[j])) {
							t.Fatalf("output %d value %d = %v, want %v", i, j, got[i][j], want[j])
						}
					}
				}
				e := ops.ConvEpiloguesForTest(builder)
				want := slices.Clone(tc.epilogues)
				for _, l := range [][][3]bool{e, want} {
					slices.SortFunc(l, func(a, b [3]bool) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
				}
				if !slices.Equal(e, want) {
					t.Fatalf("epilogues %v, want %v", e, want)
				}
			})
		}
	}
}

// applyResidual adds bias to each row of channels, then full, and clamps
// at 0 with relu.
func applyResidual(conv []float64, bias, full []float32, relu bool) []float64 {
	out := apply(conv, bias, false)
	for i := range out {
		out[i] += float64(full[i])
		if relu {
			out[i] = max(0, out[i])
		}
	}
	return out
}

// apply adds bias to each row of channels and clamps at 0 with relu.
func apply(conv []float64, bias []float32, relu bool) []float64 {
	out := make([]float64, len(conv))
	for i, v := range conv {
		v += float64(bias[i%len(bias)])
		if relu {
			v = max(0, v)
		}
		out[i] = v
	}
	return out
}
