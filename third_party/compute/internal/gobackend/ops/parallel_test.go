// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/ops"
	"github.com/gomlx/compute/shapes"
)

// runOnBackend builds and runs a one-op graph with float32 and int32
// parameters on the given backend, returning the output's flat values.
func runOnBackend(t *testing.T, be compute.Backend, build func(f *gobackend.Function, params []compute.Value) (compute.Value, error),
	inputs []any, inputShapes []shapes.Shape) []float32 {
	t.Helper()
	builder := be.Builder("parallel").(*gobackend.Builder)
	main := builder.Main().(*gobackend.Function)
	var params []compute.Value
	for i, s := range inputShapes {
		p, err := main.Parameter(fmt.Sprintf("p%d", i), s, nil)
		if err != nil {
			t.Fatalf("Parameter: %+v", err)
		}
		params = append(params, p)
	}
	out, err := build(main, params)
	if err != nil {
		t.Fatalf("build: %+v", err)
	}
	if err := main.Return([]compute.Value{out}, nil); err != nil {
		t.Fatalf("Return: %+v", err)
	}
	exec, err := builder.Compile()
	if err != nil {
		t.Fatalf("Compile: %+v", err)
	}
	var bufs []compute.Buffer
	for i, in := range inputs {
		b, err := be.BufferFromFlatData(0, in, inputShapes[i])
		if err != nil {
			t.Fatalf("BufferFromFlatData: %+v", err)
		}
		bufs = append(bufs, b)
	}
	outs, err := exec.Execute(bufs, nil, 0)
	if err != nil {
		t.Fatalf("Execute: %+v", err)
	}
	return slices.Clone(outs[0].(*gobackend.Buffer).Flat.([]float32))
}

// sequentialAndParallel are a backend whose ops run on one goroutine and one
// that splits large ops across workers.
func sequentialAndParallel(t *testing.T) (seq, par compute.Backend) {
	t.Helper()
	seq, err := gobackend.New("parallelism=0")
	if err != nil {
		t.Fatalf("New: %+v", err)
	}
	par, err = gobackend.New("parallelism=4")
	if err != nil {
		t.Fatalf("New: %+v", err)
	}
	t.Cleanup(func() { seq.Finalize(); par.Finalize() })
	return seq, par
}

func randomFloats(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = r.Float32()*2 - 1
	}
	return v
}

// TestBinaryOpsParallel checks that binary ops split across workers give
// the same values as on one goroutine, for every broadcast pattern, on
// operands large enough to be split (and with rows that do not divide
// evenly into the workers' ranges).
func TestBinaryOpsParallel(t *testing.T) {
	seq, par := sequentialAndParallel(t)
	r := rand.New(rand.NewPCG(1, 2))
	const a, b = 1237, 97 // 120k elements
	full := shapes.Make(dtypes.Float32, a, b)
	for _, tc := range []struct {
		name     string
		lhs, rhs shapes.Shape
	}{
		{"none", full, full},
		{"scalar-rhs", full, shapes.Make(dtypes.Float32)},
		{"scalar-lhs", shapes.Make(dtypes.Float32), full},
		{"leading-rhs", full, shapes.Make(dtypes.Float32, 1, b)},
		{"leading-rhs-16", shapes.Make(dtypes.Float32, 8001, 16), shapes.Make(dtypes.Float32, 1, 16)},
		{"leading-lhs", shapes.Make(dtypes.Float32, 1, b), full},
		{"trailing-rhs", full, shapes.Make(dtypes.Float32, a, 1)},
		{"trailing-lhs", shapes.Make(dtypes.Float32, a, 1), full},
		{"row-col", shapes.Make(dtypes.Float32, a, 1), shapes.Make(dtypes.Float32, 1, b)},
		{"col-row", shapes.Make(dtypes.Float32, 1, b), shapes.Make(dtypes.Float32, a, 1)},
	} {
		for opName, op := range map[string]func(f *gobackend.Function, lhs, rhs compute.Value) (compute.Value, error){
			"Add": ops.Add, "Sub": ops.Sub, "Mul": ops.Mul, "Max": ops.Max,
		} {
			t.Run(tc.name+"/"+opName, func(t *testing.T) {
				inputs := []any{randomFloats(r, tc.lhs.Size()), randomFloats(r, tc.rhs.Size())}
				build := func(f *gobackend.Function, p []compute.Value) (compute.Value, error) { return op(f, p[0], p[1]) }
				want := runOnBackend(t, seq, build, inputs, []shapes.Shape{tc.lhs, tc.rhs})
				got := runOnBackend(t, par, build, inputs, []shapes.Shape{tc.lhs, tc.rhs})
				if !slices.Equal(want, got) {
					t.Fatalf("parallel result differs from sequential (%d values)", len(want))
				}
			})
		}
	}
}

// TestGatherParallel checks that a large gather whose slices are copied on
// several workers equals the sequential one: an im2col-like gather of
// overlapping windows (one contiguous run a slice) and one whose slices are
// several runs.
func TestGatherParallel(t *testing.T) {
	seq, par := sequentialAndParallel(t)
	r := rand.New(rand.NewPCG(3, 4))
	const n, h, w, c = 2, 40, 40, 24
	operand := shapes.Make(dtypes.Float32, n, h, w*c)
	for _, tc := range []struct {
		name       string
		sliceSizes []int
	}{
		{"rows", []int{1, 1, 3 * c}},    // one run a slice
		{"windows", []int{1, 3, 3 * c}}, // three runs a slice
	} {
		t.Run(tc.name, func(t *testing.T) {
			ho, wo := h-tc.sliceSizes[1]+1, w-2
			starts := make([]int32, 0, 3*n*ho*wo)
			for i := range n {
				for y := range ho {
					for x := range wo {
						starts = append(starts, int32(i), int32(y), int32(x*c))
					}
				}
			}
			startShape := shapes.Make(dtypes.Int32, n*ho*wo, 3)
			build := func(f *gobackend.Function, p []compute.Value) (compute.Value, error) {
				return ops.Gather(f, p[0], p[1], 1, []int{1, 2}, []int{0}, []int{0, 1, 2}, tc.sliceSizes, false)
			}
			inputs := []any{randomFloats(r, operand.Size()), starts}
			want := runOnBackend(t, seq, build, inputs, []shapes.Shape{operand, startShape})
			got := runOnBackend(t, par, build, inputs, []shapes.Shape{operand, startShape})
			if len(want) < 2*64*1024 {
				t.Fatalf("test gather too small to be split: %d values", len(want))
			}
			if !slices.Equal(want, got) {
				t.Fatalf("parallel gather differs from sequential (%d values)", len(want))
			}
		})
	}
}

// TestScatterSumParallel checks large scatter-adds of overlapping windows
// (the gradient of an im2col gather: windows overlap within an image, not
// across images) and of windows that all overlap: the backend with workers
// must give the sequential result bit for bit, and both the definition.
func TestScatterSumParallel(t *testing.T) {
	seq, par := sequentialAndParallel(t)
	r := rand.New(rand.NewPCG(15, 16))
	const n, h, w, c = 6, 30, 30, 16
	operand := shapes.Make(dtypes.Float32, n, h, w*c)
	for _, tc := range []struct {
		name      string
		windowH   int
		allImage0 bool // every window in image 0: no disjoint groups
	}{
		{"im2col-gradient", 3, false},
		{"overlapping", 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ho, wo := h-tc.windowH+1, w-2
			var starts []int32
			for i := range n {
				for y := range ho {
					for x := range wo {
						img := int32(i)
						if tc.allImage0 {
							img = 0
						}
						starts = append(starts, img, int32(y), int32(x*c))
					}
				}
			}
			numWin := n * ho * wo
			startShape := shapes.Make(dtypes.Int32, numWin, 3)
			updShape := shapes.Make(dtypes.Float32, numWin, tc.windowH, 3*c)
			zeros := make([]float32, operand.Size())
			upd := randomFloats(r, updShape.Size())
			build := func(f *gobackend.Function, p []compute.Value) (compute.Value, error) {
				return ops.ScatterSum(f, p[0], p[1], p[2], 1, []int{1, 2}, []int{0}, []int{0, 1, 2}, false, false)
			}
			inputs := []any{zeros, starts, upd}
			inShapes := []shapes.Shape{operand, startShape, updShape}
			want := runOnBackend(t, seq, build, inputs, inShapes)
			got := runOnBackend(t, par, build, inputs, inShapes)
			if !slices.Equal(want, got) {
				t.Fatalf("parallel scatter differs from sequential")
			}
			ref := make([]float64, operand.Size())
			for k := range numWin {
				b, y, x0 := int(starts[3*k]), int(starts[3*k+1]), int(starts[3*k+2])
				for dy := range tc.windowH {
					for j := range 3 * c {
						ref[(b*h+y+dy)*w*c+x0+j] += float64(upd[(k*tc.windowH+dy)*3*c+j])
					}
				}
			}
			for i := range ref {
				if math.Abs(ref[i]-float64(got[i])) > 1e-4*(1+math.Abs(ref[i])) {
					t.Fatalf("out[%d] = %v, want %v", i, got[i], ref[i])
				}
			}
		})
	}
}

// TestParallelPull checks that parallelPull hands out every item exactly
// once, with and without workers, and with fewer items than workers, and
// that it returns an error a goroutine's work returned.
func TestParallelPull(t *testing.T) {
	seq, par := sequentialAndParallel(t)
	for _, be := range []compute.Backend{seq, par} {
		for _, n := range []int{0, 1, 3, 1000} {
			counts := make([]atomic.Int32, n)
			err := ops.ParallelPullForTest(be.(*gobackend.Backend), n, func(next func() (int, bool)) error {
				for i, ok := next(); ok; i, ok = next() {
					counts[i].Add(1)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%s, n=%d: %v", be.Name(), n, err)
			}
			for i := range counts {
				if c := counts[i].Load(); c != 1 {
					t.Fatalf("%s, n=%d: item %d taken %d times", be.Name(), n, i, c)
				}
			}
		}
		failed := errors.New("no buffer")
		err := ops.ParallelPullForTest(be.(*gobackend.Backend), 10, func(next func() (int, bool)) error {
			for _, ok := next(); ok; _, ok = next() {
			}
			return failed
		})
		if !errors.Is(err, failed) {
			t.Fatalf("%s: error %v, want %v", be.Name(), err, failed)
		}
	}
}
