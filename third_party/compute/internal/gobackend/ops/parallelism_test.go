// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/ops"
	"github.com/gomlx/compute/shapes"
)

// backendsOfParallelism returns backends whose workers allow 1, 2, 3 and 8
// goroutines at once (GOMAXPROCS is raised to 8 for the test).
func backendsOfParallelism(t *testing.T) map[int]compute.Backend {
	t.Helper()
	prev := runtime.GOMAXPROCS(8)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	out := map[int]compute.Backend{}
	for _, p := range []int{1, 2, 3, 8} {
		be, err := gobackend.New(fmt.Sprintf("parallelism=%d", p))
		if err != nil {
			t.Fatalf("New: %+v", err)
		}
		t.Cleanup(be.Finalize)
		out[p] = be
	}
	return out
}

// TestConvolutionsIndependentOfParallelism runs convolutions whose path or
// split of the contracting axis could depend on the workers (a kernel
// gradient over many blocks of positions, a large kernel walked in kernel
// blocks, a strided layer's input gradient) on backends of 1, 2, 3 and 8
// workers: the outputs must be the same to the bit.
func TestConvolutionsIndependentOfParallelism(t *testing.T) {
	backends := backendsOfParallelism(t)
	r := rand.New(rand.NewPCG(21, 22))
	nhwc := compute.ConvolveAxesConfig{
		InputBatch: 0, InputChannels: 3, InputSpatial: []int{1, 2},
		KernelInputChannels: 2, KernelOutputChannels: 3, KernelSpatial: []int{0, 1},
		OutputBatch: 0, OutputChannels: 3, OutputSpatial: []int{1, 2},
	}
	kernelGrad := compute.ConvolveAxesConfig{
		InputBatch: 3, InputChannels: 0, InputSpatial: []int{1, 2},
		KernelInputChannels: 0, KernelOutputChannels: 3, KernelSpatial: []int{1, 2},
		OutputBatch: 2, OutputChannels: 3, OutputSpatial: []int{0, 1},
	}
	tests := []struct {
		name     string
		in, kern shapes.Shape
		build    func(f *gobackend.Function, v []compute.Value) (compute.Value, error)
	}{
		{"kernel gradient, 16 blocks of positions",
			shapes.Make(dtypes.Float32, 4, 32, 32, 16), shapes.Make(dtypes.Float32, 4, 32, 32, 32),
			func(f *gobackend.Function, v []compute.Value) (compute.Value, error) {
				return ops.ConvGeneral(f, v[0], v[1], kernelGrad, nil, [][2]int{{1, 1}, {1, 1}}, nil, nil, 1, 1)
			}},
		{"512 output channels, a 4.5 MB kernel",
			shapes.Make(dtypes.Float32, 2, 8, 8, 256), shapes.Make(dtypes.Float32, 3, 3, 256, 512),
			func(f *gobackend.Function, v []compute.Value) (compute.Value, error) {
				return ops.ConvGeneral(f, v[0], v[1], nhwc, nil, [][2]int{{1, 1}, {1, 1}}, nil, nil, 1, 1)
			}},
		{"stride 2, 64 channels",
			shapes.Make(dtypes.Float32, 3, 29, 30, 64), shapes.Make(dtypes.Float32, 3, 3, 64, 64),
			func(f *gobackend.Function, v []compute.Value) (compute.Value, error) {
				return ops.ConvGeneral(f, v[0], v[1], nhwc, []int{2, 2}, [][2]int{{1, 1}, {1, 1}}, nil, nil, 1, 1)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x, k := randomFloats(r, tc.in.Size()), randomFloats(r, tc.kern.Size())
			want := runOnBackend(t, backends[1], tc.build, []any{x, k}, []shapes.Shape{tc.in, tc.kern})
			for _, p := range []int{2, 3, 8} {
				got := runOnBackend(t, backends[p], tc.build, []any{x, k}, []shapes.Shape{tc.in, tc.kern})
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%d workers: value %d = %v, %v with one worker", p, i, got[i], want[i])
					}
				}
			}
		})
	}
}
