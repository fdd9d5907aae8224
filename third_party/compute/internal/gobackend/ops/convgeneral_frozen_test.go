// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/dot"
	"github.com/gomlx/compute/internal/gobackend/ops"
	"github.com/gomlx/compute/shapes"
)

// TestConvFrozenKernel runs a Winograd convolution whose kernel buffer is
// frozen (Buffer.Freeze): it gives the bits of an unfrozen run, and its
// transformed kernel is kept from the first execution and used without
// reading the kernel again while the freeze lasts, which this test shows
// by breaking the freeze's promise (a write to the kernel is not seen).
// A new freeze, or none (a donated kernel), is read again.
func TestConvFrozenKernel(t *testing.T) {
	if dot.Float32Tile8x32 == nil {
		t.Skip("no Winograd convolutions in this build (no 8x32 tile kernel)")
	}
	be, err := gobackend.New("parallelism=2")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Finalize()
	r := rand.New(rand.NewPCG(21, 22))
	xs := shapes.Make(dtypes.Float32, 1, 8, 8, 64)
	ks := shapes.Make(dtypes.Float32, 3, 3, 64, 64)
	axes := compute.ConvolveAxesConfig{
		InputBatch: 0, InputChannels: 3, InputSpatial: []int{1, 2},
		KernelInputChannels: 2, KernelOutputChannels: 3, KernelSpatial: []int{0, 1},
		OutputBatch: 0, OutputChannels: 3, OutputSpatial: []int{1, 2},
	}
	exec := compileMulti(t, be, func(f *gobackend.Function, p []compute.Value) ([]compute.Value, error) {
		c, err := ops.ConvGeneral(f, p[0], p[1], axes, nil, [][2]int{{1, 1}, {1, 1}}, nil, nil, 1, 1)
		return []compute.Value{c}, err
	}, []shapes.Shape{xs, ks})
	x := randomFloats(r, xs.Size())
	xBuf, err := be.BufferFromFlatData(0, x, xs)
	if err != nil {
		t.Fatal(err)
	}
	kernelValues := randomFloats(r, ks.Size())
	kBuf, err := be.BufferFromFlatData(0, kernelValues, ks)
	if err != nil {
		t.Fatal(err)
	}
	kernel := kBuf.(*gobackend.Buffer)
	run := func(k compute.Buffer, donate bool) []float32 {
		t.Helper()
		outs, err := exec.Execute([]compute.Buffer{xBuf, k}, []bool{false, donate}, 0)
		if err != nil {
			t.Fatalf("Execute: %+v", err)
		}
		defer outs[0].Finalize()
		return slices.Clone(outs[0].(*gobackend.Buffer).Flat.([]float32))
	}
	// unfrozen runs the convolution on a fresh unfrozen copy of values.
	unfrozen := func(values []float32) []float32 {
		t.Helper()
		k, err := be.BufferFromFlatData(0, values, ks)
		if err != nil {
			t.Fatal(err)
		}
		defer k.Finalize()
		return run(k, false)
	}

	want := unfrozen(kernelValues)
	kernel.Freeze()
	epoch := kernel.FrozenEpoch()
	if epoch == 0 {
		t.Fatal("a frozen buffer reports freeze number 0")
	}
	if got := run(kernel, false); !slices.Equal(got, want) {
		t.Fatal("frozen kernel: values differ from the unfrozen run")
	}
	flat := kernel.Flat.([]float32)
	flat[0] += 1 // forbidden by the freeze: not read while it lasts
	for range 2 {
		if got := run(kernel, false); !slices.Equal(got, want) {
			t.Fatal("a write to a frozen kernel was read: the kept transform was not trusted")
		}
	}
	if kernel.FrozenEpoch() != epoch {
		t.Fatalf("freeze number changed from %d to %d by executions", epoch, kernel.FrozenEpoch())
	}

	kernel.Freeze()
	if e := kernel.FrozenEpoch(); e == 0 || e == epoch {
		t.Fatalf("freeze number after a second freeze: %d (first %d), want a new one", e, epoch)
	}
	want = unfrozen(flat)
	if got := run(kernel, false); !slices.Equal(got, want) {
		t.Fatal("refrozen kernel: the values are not those of its current contents")
	}

	flat[1] += 1
	want = unfrozen(flat)
	if got := run(kernel, true); !slices.Equal(got, want) {
		t.Fatal("donated frozen kernel: the values are not those of its current contents")
	}
}
