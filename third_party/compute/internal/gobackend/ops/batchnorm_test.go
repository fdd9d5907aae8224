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

// runMultiOnBackend builds and runs a graph with one multi-output op on
// the given backend, returning each output's flat values as float64.
func runMultiOnBackend(t testing.TB, be compute.Backend, build func(f *gobackend.Function, params []compute.Value) ([]compute.Value, error),
	inputs []any, inputShapes []shapes.Shape) [][]float64 {
	t.Helper()
	exec := compileMulti(t, be, build, inputShapes)
	outs := executeMulti(t, be, exec, inputs, inputShapes)
	res := make([][]float64, len(outs))
	for i, o := range outs {
		switch flat := o.(*gobackend.Buffer).Flat.(type) {
		case []float32:
			for _, v := range flat {
				res[i] = append(res[i], float64(v))
			}
		case []float64:
			res[i] = slices.Clone(flat)
		default:
			t.Fatalf("output %d: unexpected flat type %T", i, flat)
		}
	}
	return res
}

func compileMulti(t testing.TB, be compute.Backend, build func(f *gobackend.Function, params []compute.Value) ([]compute.Value, error),
	inputShapes []shapes.Shape) compute.Executable {
	t.Helper()
	builder := be.Builder("multi").(*gobackend.Builder)
	main := builder.Main().(*gobackend.Function)
	var params []compute.Value
	for i, s := range inputShapes {
		p, err := main.Parameter(fmt.Sprintf("p%d", i), s, nil)
		if err != nil {
			t.Fatalf("Parameter: %+v", err)
		}
		params = append(params, p)
	}
	outs, err := build(main, params)
	if err != nil {
		t.Fatalf("build: %+v", err)
	}
	if err := main.Return(outs, nil); err != nil {
		t.Fatalf("Return: %+v", err)
	}
	exec, err := builder.Compile()
	if err != nil {
		t.Fatalf("Compile: %+v", err)
	}
	return exec
}

func executeMulti(t testing.TB, be compute.Backend, exec compute.Executable, inputs []any, inputShapes []shapes.Shape) []compute.Buffer {
	t.Helper()
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
	return outs
}

// batchNormReference computes, in float64 from the definitions, the
// training batch normalization of x (viewed as [outer, c, inner]) and its
// gradients for an output gradient dy.
func batchNormReference(x, scale, offset, dy []float64, outer, c, inner int, eps float64) (y, mean, variance, dx, dscale, doffset []float64) {
	n := float64(outer * inner)
	at := func(o, j, i int) int { return (o*c+j)*inner + i }
	mean, variance = make([]float64, c), make([]float64, c)
	for j := range c {
		for o := range outer {
			for i := range inner {
				mean[j] += x[at(o, j, i)]
			}
		}
		mean[j] /= n
		for o := range outer {
			for i := range inner {
				d := x[at(o, j, i)] - mean[j]
				variance[j] += d * d
			}
		}
		variance[j] /= n
	}
	y, dx = make([]float64, len(x)), make([]float64, len(x))
	dscale, doffset = make([]float64, c), make([]float64, c)
	for j := range c {
		inv := 1 / math.Sqrt(variance[j]+eps)
		for o := range outer {
			for i := range inner {
				k := at(o, j, i)
				xhat := (x[k] - mean[j]) * inv
				y[k] = xhat*scale[j] + offset[j]
				doffset[j] += dy[k]
				dscale[j] += dy[k] * xhat
			}
		}
		for o := range outer {
			for i := range inner {
				k := at(o, j, i)
				xhat := (x[k] - mean[j]) * inv
				dx[k] = scale[j] * inv * (dy[k] - doffset[j]/n - xhat*dscale[j]/n)
			}
		}
	}
	return
}

// TestBatchNormTraining checks BatchNormForTraining and BatchNormGradient
// against the definitions computed in float64, in float32 and float64, on
// one goroutine and split across workers: channels-last operands whose
// channels are and are not a multiple of the vector length (1, 7, 16, 33,
// 96) and whose rows are not a multiple of the row blocks, a feature axis
// in the middle and first (NCHW, [C, M]), a mean far from zero against
// the spread (the variance must not cancel away) and gradients reusing
// their input's buffer.
func TestBatchNormTraining(t *testing.T) {
	seq, par := sequentialAndParallel(t)
	r := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct {
		dims       []int
		axis       int
		meanOffset float64
	}{
		{[]int{2, 5, 7, 16}, 3, 0},
		{[]int{3, 9, 11, 33}, 3, 0.5},
		{[]int{4, 33, 33, 7}, 3, 0}, // 4356 rows: 17 blocks, the last short
		{[]int{600, 96}, 1, 0},
		{[]int{700, 1}, 1, 0},
		{[]int{2, 33, 5, 6}, 1, 0}, // NCHW
		{[]int{5, 300}, 0, 0},
		{[]int{513, 24}, 1, 1000}, // mean 1000, spread 1
	} {
		for _, dtype := range []dtypes.DType{dtypes.Float32, dtypes.Float64} {
			s := shapes.Make(dtype, tc.dims...)
			c := tc.dims[tc.axis]
			outer, inner := 1, 1
			for i, d := range tc.dims {
				if i < tc.axis {
					outer *= d
				} else if i > tc.axis {
					inner *= d
				}
			}
			x, dy := make([]float64, s.Size()), make([]float64, s.Size())
			for i := range x {
				x[i] = tc.meanOffset + r.NormFloat64()
				dy[i] = r.NormFloat64()
			}
			scale, offset := make([]float64, c), make([]float64, c)
			for j := range c {
				scale[j], offset[j] = 0.5+r.Float64(), r.NormFloat64()
			}
			const eps = 1e-5
			cast := func(v []float64) any {
				if dtype == dtypes.Float64 {
					return slices.Clone(v)
				}
				f := make([]float32, len(v))
				for i := range v {
					f[i] = float32(v[i])
				}
				return f
			}
			// The reference takes the values as the op sees them.
			back := func(v []float64) []float64 {
				if dtype == dtypes.Float64 {
					return v
				}
				out := make([]float64, len(v))
				for i := range v {
					out[i] = float64(float32(v[i]))
				}
				return out
			}
			wantY, wantMean, wantVar, wantDX, wantDScale, wantDOffset := batchNormReference(back(x), back(scale), back(offset), back(dy), outer, c, inner, eps)
			cs := shapes.Make(dtype, c)
			forward := func(f *gobackend.Function, p []compute.Value) ([]compute.Value, error) {
				y, m, v, err := ops.BatchNormForTraining(f, p[0], p[1], p[2], eps, tc.axis)
				return []compute.Value{y, m, v}, err
			}
			// The gradient's dy is computed in the graph (a Neg of -dy), so
			// that the op owns it and may reuse its buffer.
			gradient := func(f *gobackend.Function, p []compute.Value) ([]compute.Value, error) {
				g, err := ops.Neg(f, p[4])
				if err != nil {
					return nil, err
				}
				dx, ds, do, err := ops.BatchNormGradient(f, p[0], p[1], p[2], p[3], g, eps, tc.axis)
				return []compute.Value{dx, ds, do}, err
			}
			negDY := make([]float64, len(dy))
			for i := range dy {
				negDY[i] = -dy[i]
			}
			tol := 1e-9
			if dtype == dtypes.Float32 {
				tol = 2e-4
			}
			name := fmt.Sprintf("%v-axis%d-mean%g-%s", tc.dims, tc.axis, tc.meanOffset, dtype)
			for beName, be := range map[string]compute.Backend{"sequential": seq, "parallel": par} {
				t.Run(name+"/"+beName, func(t *testing.T) {
					got := runMultiOnBackend(t, be, forward, []any{cast(x), cast(scale), cast(offset)}, []shapes.Shape{s, cs, cs})
					checkClose(t, "normalized", got[0], wantY, tol)
					checkClose(t, "mean", got[1], wantMean, tol*(1+tc.meanOffset))
					checkClose(t, "variance", got[2], wantVar, tol)
					// The gradient takes the reference's statistics.
					got = runMultiOnBackend(t, be, gradient, []any{cast(x), cast(scale), cast(wantMean), cast(wantVar), cast(negDY)},
						[]shapes.Shape{s, cs, cs, cs, s})
					checkClose(t, "gradOperand", got[0], wantDX, tol)
					checkClose(t, "gradScale", got[1], wantDScale, tol*math.Sqrt(float64(outer*inner)))
					checkClose(t, "gradOffset", got[2], wantDOffset, tol*math.Sqrt(float64(outer*inner)))
				})
			}
		}
	}
}

// checkClose fails when a value differs from the reference by more than
// tol times (1 + |reference|).
func checkClose(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(got[i] - want[i]); !(d <= tol*(1+math.Abs(want[i]))) {
			t.Fatalf("%s[%d] = %v, want %v (difference %.3g, tolerance %.3g)", what, i, got[i], want[i], d, tol*(1+math.Abs(want[i])))
		}
	}
}

// TestBatchNormShapeErrors checks the ops' errors on bad inputs.
func TestBatchNormShapeErrors(t *testing.T) {
	be, err := gobackend.New("")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Finalize()
	for _, tc := range []struct {
		name          string
		x, scale, off shapes.Shape
		axis          int
	}{
		{"int operand", shapes.Make(dtypes.Int32, 4, 3), shapes.Make(dtypes.Int32, 3), shapes.Make(dtypes.Int32, 3), 1},
		{"axis out of range", shapes.Make(dtypes.Float32, 4, 3), shapes.Make(dtypes.Float32, 3), shapes.Make(dtypes.Float32, 3), 2},
		{"scale size", shapes.Make(dtypes.Float32, 4, 3), shapes.Make(dtypes.Float32, 4), shapes.Make(dtypes.Float32, 3), 1},
		{"offset dtype", shapes.Make(dtypes.Float32, 4, 3), shapes.Make(dtypes.Float32, 3), shapes.Make(dtypes.Float64, 3), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			builder := be.Builder("errors").(*gobackend.Builder)
			main := builder.Main().(*gobackend.Function)
			var p []compute.Value
			for i, s := range []shapes.Shape{tc.x, tc.scale, tc.off} {
				v, err := main.Parameter(fmt.Sprintf("p%d", i), s, nil)
				if err != nil {
					t.Fatal(err)
				}
				p = append(p, v)
			}
			if _, _, _, err := ops.BatchNormForTraining(main, p[0], p[1], p[2], 1e-5, tc.axis); err == nil {
				t.Fatalf("BatchNormForTraining accepted %s", tc.name)
			}
		})
	}
}

// BenchmarkBatchNorm times the two ops on the activations of a small
// network's training step (channels-last).
func BenchmarkBatchNorm(b *testing.B) {
	be, err := gobackend.New("")
	if err != nil {
		b.Fatal(err)
	}
	defer be.Finalize()
	r := rand.New(rand.NewPCG(1, 2))
	for _, dims := range [][]int{{48, 24, 24, 32}, {48, 12, 12, 96}, {8, 16, 16, 512}} {
		s := shapes.Make(dtypes.Float32, dims...)
		c := dims[3]
		cs := shapes.Make(dtypes.Float32, c)
		x, dy := randomFloats(r, s.Size()), randomFloats(r, s.Size())
		ones, zeros := make([]float32, c), make([]float32, c)
		for j := range ones {
			ones[j] = 1
		}
		forward := compileMulti(b, be, func(f *gobackend.Function, p []compute.Value) ([]compute.Value, error) {
			y, m, v, err := ops.BatchNormForTraining(f, p[0], p[1], p[2], 1e-5, 3)
			return []compute.Value{y, m, v}, err
		}, []shapes.Shape{s, cs, cs})
		gradient := compileMulti(b, be, func(f *gobackend.Function, p []compute.Value) ([]compute.Value, error) {
			dx, ds, do, err := ops.BatchNormGradient(f, p[0], p[1], p[2], p[3], p[4], 1e-5, 3)
			return []compute.Value{dx, ds, do}, err
		}, []shapes.Shape{s, cs, cs, cs, s})
		b.Run(fmt.Sprintf("forward/%v", dims), func(b *testing.B) {
			b.SetBytes(int64(4 * s.Size()))
			for b.Loop() {
				for _, o := range executeMulti(b, be, forward, []any{x, ones, zeros}, []shapes.Shape{s, cs, cs}) {
					o.(*gobackend.Buffer).Finalize()
				}
			}
		})
		b.Run(fmt.Sprintf("gradient/%v", dims), func(b *testing.B) {
			b.SetBytes(int64(4 * s.Size()))
			for b.Loop() {
				for _, o := range executeMulti(b, be, gradient, []any{x, ones, zeros, ones, dy}, []shapes.Shape{s, cs, cs, cs, s}) {
					o.(*gobackend.Buffer).Finalize()
				}
			}
		})
	}
}

// TestBatchNormEmpty checks that an operand without values runs (its
// statistics are NaN, as 0/0) instead of failing.
func TestBatchNormEmpty(t *testing.T) {
	seq, par := sequentialAndParallel(t)
	s, cs := shapes.Make(dtypes.Float32, 0, 3), shapes.Make(dtypes.Float32, 3)
	forward := func(f *gobackend.Function, p []compute.Value) ([]compute.Value, error) {
		y, m, v, err := ops.BatchNormForTraining(f, p[0], p[1], p[2], 1e-5, 1)
		return []compute.Value{y, m, v}, err
	}
	gradient := func(f *gobackend.Function, p []compute.Value) ([]compute.Value, error) {
		dx, ds, do, err := ops.BatchNormGradient(f, p[0], p[1], p[2], p[3], p[4], 1e-5, 1)
		return []compute.Value{dx, ds, do}, err
	}
	for name, be := range map[string]compute.Backend{"sequential": seq, "parallel": par} {
		got := runMultiOnBackend(t, be, forward, []any{[]float32{}, []float32{1, 1, 1}, []float32{0, 0, 0}}, []shapes.Shape{s, cs, cs})
		if len(got[0]) != 0 || len(got[1]) != 3 || !math.IsNaN(got[1][0]) {
			t.Fatalf("%s: forward gave %v", name, got)
		}
		got = runMultiOnBackend(t, be, gradient, []any{[]float32{}, []float32{1, 1, 1}, []float32{0, 0, 0}, []float32{1, 1, 1}, []float32{}},
			[]shapes.Shape{s, cs, cs, cs, s})
		if len(got[0]) != 0 || len(got[1]) != 3 || got[2][0] != 0 {
			t.Fatalf("%s: gradient gave %v", name, got)
		}
	}
}
