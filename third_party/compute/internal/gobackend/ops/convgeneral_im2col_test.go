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
// (partial last strips included, a 1x1 convolution that multiplies the
// input rows in place, and kernels of 1 MB or more, whose blocks are
// read per worker's group of columns, in place or, with many rows, from
// packed strips).
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
		{1, 5, 7, 40, 1, 1, 64, 1, 1, [2][2]int{}},                  // 1x1: the input rows themselves, a partial strip
		{2, 6, 5, 16, 3, 3, 320, 1, 1, [2][2]int{{1, 1}, {1, 1}}},   // many output channels
		// Contracting blocks of one tap each (Cin 512): tiles whose windows
		// miss the input over a block skip it, and tiles entirely in the
		// padding are zeroed.
		{1, 6, 8, 512, 3, 3, 32, 1, 3, [2][2]int{{3, 3}, {3, 3}}},
		{1, 2, 8, 512, 3, 3, 32, 1, 1, [2][2]int{{3, 3}, {1, 1}}},
		// Few rows and many output channels, contracting blocks that end
		// within a tap (Cin 96 and 600), partial last strips; kernels of
		// 1 MB or more (the kernel-block path, which takes a group of
		// columns per worker): strided, dilated with tiles in the padding,
		// 1x1 on the input rows in place.
		{1, 9, 7, 96, 3, 3, 512, 2, 1, [2][2]int{{1, 1}, {1, 1}}},
		{1, 5, 3, 600, 1, 1, 256, 1, 1, [2][2]int{}},
		{1, 6, 6, 640, 3, 3, 512, 1, 3, [2][2]int{{3, 3}, {3, 3}}},
		{1, 5, 3, 1024, 1, 1, 256, 1, 1, [2][2]int{}},
		// Kernel-block convolutions of 1,024 rows and more, which read the
		// kernel from strips packed first: 1x1 in place, and strided with
		// a last tile of fewer than 8 rows.
		{1, 32, 33, 512, 1, 1, 512, 1, 1, [2][2]int{}},
		{2, 45, 45, 128, 3, 3, 256, 2, 1, [2][2]int{{1, 1}, {1, 1}}},
		// 3x3, stride 1, Cin and Cout >= 64 (Winograd F(2x2, 3x3)): odd
		// sizes (tiles past the edge), dilations 2 and 3 (phases of odd
		// length), asymmetric and no padding, a 1x1 output, channels that
		// are not a multiple of the vector length; a kernel too large for
		// it (the im2col path).
		{2, 11, 9, 64, 3, 3, 64, 1, 1, [2][2]int{{1, 1}, {1, 1}}},
		{2, 11, 9, 72, 3, 3, 64, 1, 2, [2][2]int{{2, 2}, {2, 2}}},
		{1, 13, 10, 64, 3, 3, 96, 1, 3, [2][2]int{{3, 3}, {3, 3}}},
		{1, 8, 9, 67, 3, 3, 64, 1, 1, [2][2]int{{0, 1}, {1, 0}}},
		{1, 3, 3, 64, 3, 3, 64, 1, 1, [2][2]int{}},
		{1, 7, 5, 544, 3, 3, 512, 1, 2, [2][2]int{{2, 2}, {2, 2}}},
		// Winograd with ResNet's larger channels: 256 to 512, dilated.
		{1, 6, 6, 512, 3, 3, 256, 1, 3, [2][2]int{{3, 3}, {3, 3}}},
		{2, 5, 4, 256, 3, 3, 512, 1, 1, [2][2]int{{1, 1}, {1, 1}}},
		// Inputs narrower than the kernel (no window wholly inside, the
		// padding on one side only), and a 16-channel stem: the im2col
		// rows are written a run of one output row at a time.
		{2, 5, 2, 4, 3, 3, 16, 1, 1, [2][2]int{{1, 1}, {0, 2}}},
		{2, 5, 2, 4, 3, 3, 16, 2, 1, [2][2]int{{1, 1}, {0, 2}}},
		{1, 9, 2, 3, 3, 3, 16, 2, 1, [2][2]int{{1, 1}, {2, 3}}},
		{3, 17, 23, 3, 3, 3, 16, 2, 1, [2][2]int{{1, 1}, {1, 1}}},
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

// TestConvGeneralIm2colGradients checks the two convolutions GoMLX's
// autodiff builds for a channels-last convolution's gradients, which also
// run as im2col products, against their definitions: the input gradient
// (kernel stored [KH, KW, Cout, Cin], input-dilated by the forward stride,
// run phase by phase: strides 2 and 3, with a kernel dilation of 2 too)
// and the kernel gradient (x's batch and channel axes swapped, the forward
// stride as kernel dilation).
func TestConvGeneralIm2colGradients(t *testing.T) {
	seq, par := sequentialAndParallel(t)
	r := rand.New(rand.NewPCG(9, 10))
	type conv struct{ n, h, w, cin, k, cout, stride, dil, pad int }
	for _, c := range []conv{{2, 9, 8, 5, 3, 7, 2, 1, 1}, {1, 10, 10, 8, 3, 32, 1, 2, 2}, {2, 12, 11, 3, 7, 64, 2, 1, 3},
		{2, 7, 9, 64, 3, 64, 1, 1, 1},  // input gradient with Winograd (swapped kernel)
		{1, 11, 10, 6, 3, 32, 2, 2, 2}, // stride and dilation 2: phases with all taps or none
		{1, 10, 9, 4, 3, 8, 3, 1, 1},   // stride 3: phases of one tap
		// Kernel gradient over several blocks of positions (the last
		// short), columns not a multiple of 32, Cout a multiple of 8 only.
		{3, 20, 19, 20, 3, 96, 1, 1, 1},
		{2, 31, 29, 16, 3, 12, 2, 2, 2},
	} {
		ho := (c.h+2*c.pad-(c.k-1)*c.dil-1)/c.stride + 1
		wo := (c.w+2*c.pad-(c.k-1)*c.dil-1)/c.stride + 1
		t.Run(fmt.Sprintf("%+v/input-gradient", c), func(t *testing.T) {
			// dy [N, Ho, Wo, Cout] convolved, input-dilated by the stride,
			// with a kernel [K, K, Cout(out), Cin(in)]... here a generic
			// kernel [K, K, A, B] contracting B (axis 3) into A (axis 2).
			a, b := c.cin, c.cout // output channels, input channels of this convolution
			inShape := shapes.Make(dtypes.Float32, c.n, ho, wo, b)
			kShape := shapes.Make(dtypes.Float32, c.k, c.k, a, b)
			x, k := randomFloats(r, inShape.Size()), randomFloats(r, kShape.Size())
			axes := compute.ConvolveAxesConfig{
				InputBatch: 0, InputChannels: 3, InputSpatial: []int{1, 2},
				KernelInputChannels: 3, KernelOutputChannels: 2, KernelSpatial: []int{0, 1},
				OutputBatch: 0, OutputChannels: 3, OutputSpatial: []int{1, 2},
			}
			p := c.dil*(c.k-1) - c.pad // start padding of the transposed convolution
			dh, dw := (ho-1)*c.stride+1, (wo-1)*c.stride+1
			oh, ow := dh+2*p-(c.k-1)*c.dil, dw+2*p-(c.k-1)*c.dil
			build := func(f *gobackend.Function, v []compute.Value) (compute.Value, error) {
				return ops.ConvGeneral(f, v[0], v[1], axes, nil, [][2]int{{p, p}, {p, p}},
					[]int{c.stride, c.stride}, []int{c.dil, c.dil}, 1, 1)
			}
			want := make([]float64, c.n*oh*ow*a)
			for bi := range c.n {
				for oy := range oh {
					for ox := range ow {
						for co := range a {
							var sum float64
							for ky := range c.k {
								for kx := range c.k {
									iy, ix := oy-p+ky*c.dil, ox-p+kx*c.dil
									if iy < 0 || ix < 0 || iy >= dh || ix >= dw || iy%c.stride != 0 || ix%c.stride != 0 {
										continue
									}
									iy, ix = iy/c.stride, ix/c.stride
									for ci := range b {
										sum += float64(x[((bi*ho+iy)*wo+ix)*b+ci]) * float64(k[((ky*c.k+kx)*a+co)*b+ci])
									}
								}
							}
							want[((bi*oh+oy)*ow+ox)*a+co] = sum
						}
					}
				}
			}
			for name, be := range map[string]compute.Backend{"sequential": seq, "parallel": par} {
				got := runOnBackend(t, be, build, []any{x, k}, []shapes.Shape{inShape, kShape})
				compareFloats(t, name, got, want)
			}
		})
		t.Run(fmt.Sprintf("%+v/kernel-gradient", c), func(t *testing.T) {
			xShape := shapes.Make(dtypes.Float32, c.n, c.h, c.w, c.cin)
			dyShape := shapes.Make(dtypes.Float32, c.n, ho, wo, c.cout)
			x, dy := randomFloats(r, xShape.Size()), randomFloats(r, dyShape.Size())
			axes := compute.ConvolveAxesConfig{
				InputBatch: 3, InputChannels: 0, InputSpatial: []int{1, 2},
				KernelInputChannels: 0, KernelOutputChannels: 3, KernelSpatial: []int{1, 2},
				OutputBatch: 2, OutputChannels: 3, OutputSpatial: []int{0, 1},
			}
			endH := (c.k-1)*c.dil + (ho-1)*c.stride + 1 - c.h - c.pad
			endW := (c.k-1)*c.dil + (wo-1)*c.stride + 1 - c.w - c.pad
			build := func(f *gobackend.Function, v []compute.Value) (compute.Value, error) {
				return ops.ConvGeneral(f, v[0], v[1], axes, []int{c.dil, c.dil}, [][2]int{{c.pad, endH}, {c.pad, endW}},
					nil, []int{c.stride, c.stride}, 1, 1)
			}
			want := make([]float64, c.k*c.k*c.cin*c.cout)
			for ky := range c.k {
				for kx := range c.k {
					for ci := range c.cin {
						for co := range c.cout {
							var sum float64
							for bi := range c.n {
								for oy := range ho {
									for ox := range wo {
										iy, ix := oy*c.stride-c.pad+ky*c.dil, ox*c.stride-c.pad+kx*c.dil
										if iy < 0 || ix < 0 || iy >= c.h || ix >= c.w {
											continue
										}
										sum += float64(x[((bi*c.h+iy)*c.w+ix)*c.cin+ci]) * float64(dy[((bi*ho+oy)*wo+ox)*c.cout+co])
									}
								}
							}
							want[((ky*c.k+kx)*c.cin+ci)*c.cout+co] = sum
						}
					}
				}
			}
			for name, be := range map[string]compute.Backend{"sequential": seq, "parallel": par} {
				got := runOnBackend(t, be, build, []any{x, dy}, []shapes.Shape{xShape, dyShape})
				compareFloats(t, name, got, want)
			}
		})
	}
}

func compareFloats(t *testing.T, name string, got []float32, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	for i := range got {
		if math.Abs(float64(got[i])-want[i]) > 1e-4*(1+math.Abs(want[i])) {
			t.Fatalf("%s: value %d = %v, want %v", name, i, got[i], want[i])
		}
	}
}

// BenchmarkConvGeneralIm2col measures channels-last float32 convolutions
// of ResNet's shapes (batch 8 at 224 px, output stride 16) on a backend
// with workers, in GFLOP/s (2 per multiply-add).
func BenchmarkConvGeneralIm2col(b *testing.B) {
	be, err := gobackend.New("parallelism=-1")
	if err != nil {
		b.Fatalf("New: %+v", err)
	}
	defer be.Finalize()
	axes := compute.ConvolveAxesConfig{
		InputBatch: 0, InputChannels: 3, InputSpatial: []int{1, 2},
		KernelInputChannels: 2, KernelOutputChannels: 3, KernelSpatial: []int{0, 1},
		OutputBatch: 0, OutputChannels: 3, OutputSpatial: []int{1, 2},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, l := range []struct{ hw, cin, cout, k, dil int }{
		{56, 64, 64, 3, 1}, {28, 128, 128, 3, 1}, {14, 256, 256, 3, 1}, {14, 512, 512, 3, 2},
		{56, 64, 256, 1, 1}, {56, 256, 64, 1, 1}, {14, 1024, 256, 1, 1}, {14, 512, 2048, 1, 1},
		// Cout not a multiple of 32: a CAM head (VOC's 21 classes, the
		// tiny preset's 7), 16 channels, and a few.
		{14, 512, 21, 1, 1}, {16, 96, 7, 1, 1}, {64, 32, 16, 3, 1}, {32, 64, 48, 3, 1}, {32, 64, 3, 3, 1},
	} {
		b.Run(fmt.Sprintf("%dx%dx%d-%d-k%d-d%d", l.hw, l.hw, l.cin, l.cout, l.k, l.dil), func(b *testing.B) {
			const n = 8
			inShape := shapes.Make(dtypes.Float32, n, l.hw, l.hw, l.cin)
			kShape := shapes.Make(dtypes.Float32, l.k, l.k, l.cin, l.cout)
			pad := l.dil * (l.k / 2)
			builder := be.Builder("bench").(*gobackend.Builder)
			main := builder.Main().(*gobackend.Function)
			x, _ := main.Parameter("x", inShape, nil)
			w, _ := main.Parameter("w", kShape, nil)
			y, err := ops.ConvGeneral(main, x, w, axes, []int{1, 1}, [][2]int{{pad, pad}, {pad, pad}}, nil, []int{l.dil, l.dil}, 1, 1)
			if err != nil {
				b.Fatalf("ConvGeneral: %+v", err)
			}
			if err := main.Return([]compute.Value{y}, nil); err != nil {
				b.Fatalf("Return: %+v", err)
			}
			exec, err := builder.Compile()
			if err != nil {
				b.Fatalf("Compile: %+v", err)
			}
			xBuf, _ := be.BufferFromFlatData(0, randomFloats(r, inShape.Size()), inShape)
			wBuf, _ := be.BufferFromFlatData(0, randomFloats(r, kShape.Size()), kShape)
			run := func() {
				outs, err := exec.Execute([]compute.Buffer{xBuf, wBuf}, []bool{false, false}, 0)
				if err != nil {
					b.Fatalf("Execute: %+v", err)
				}
				outs[0].(*gobackend.Buffer).Finalize()
			}
			run()
			for b.Loop() {
				run()
			}
			flops := 2 * float64(n*l.hw*l.hw) * float64(l.k*l.k*l.cin) * float64(l.cout)
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkConvKernelGradIm2col measures the kernel gradients of
// channels-last float32 3x3 convolutions (the tiny preset's local views,
// 48 of 96 px, and ResNet-18's layers at batch 8, 224 px) on a backend
// with workers, in GFLOP/s (2 per multiply-add).
func BenchmarkConvKernelGradIm2col(b *testing.B) {
	be, err := gobackend.New("parallelism=-1")
	if err != nil {
		b.Fatalf("New: %+v", err)
	}
	defer be.Finalize()
	axes := compute.ConvolveAxesConfig{
		InputBatch: 3, InputChannels: 0, InputSpatial: []int{1, 2},
		KernelInputChannels: 0, KernelOutputChannels: 3, KernelSpatial: []int{1, 2},
		OutputBatch: 2, OutputChannels: 3, OutputSpatial: []int{0, 1},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, l := range []struct{ n, hw, cin, cout, dil int }{
		{48, 24, 32, 32, 1}, {48, 12, 64, 64, 1}, {48, 12, 96, 96, 2},
		{8, 56, 64, 64, 1}, {8, 28, 128, 128, 1}, {8, 14, 256, 256, 1}, {8, 14, 512, 512, 2},
	} {
		b.Run(fmt.Sprintf("%dx%dx%dx%d-%d-d%d", l.n, l.hw, l.hw, l.cin, l.cout, l.dil), func(b *testing.B) {
			xShape := shapes.Make(dtypes.Float32, l.n, l.hw, l.hw, l.cin)
			dyShape := shapes.Make(dtypes.Float32, l.n, l.hw, l.hw, l.cout)
			pad := l.dil
			builder := be.Builder("bench").(*gobackend.Builder)
			main := builder.Main().(*gobackend.Function)
			x, _ := main.Parameter("x", xShape, nil)
			dy, _ := main.Parameter("dy", dyShape, nil)
			dw, err := ops.ConvGeneral(main, x, dy, axes, []int{l.dil, l.dil}, [][2]int{{pad, pad}, {pad, pad}}, nil, []int{1, 1}, 1, 1)
			if err != nil {
				b.Fatalf("ConvGeneral: %+v", err)
			}
			if err := main.Return([]compute.Value{dw}, nil); err != nil {
				b.Fatalf("Return: %+v", err)
			}
			exec, err := builder.Compile()
			if err != nil {
				b.Fatalf("Compile: %+v", err)
			}
			xBuf, _ := be.BufferFromFlatData(0, randomFloats(r, xShape.Size()), xShape)
			dyBuf, _ := be.BufferFromFlatData(0, randomFloats(r, dyShape.Size()), dyShape)
			run := func() {
				outs, err := exec.Execute([]compute.Buffer{xBuf, dyBuf}, []bool{false, false}, 0)
				if err != nil {
					b.Fatalf("Execute: %+v", err)
				}
				outs[0].(*gobackend.Buffer).Finalize()
			}
			run()
			for b.Loop() {
				run()
			}
			flops := 2 * float64(l.n*l.hw*l.hw) * float64(9*l.cin) * float64(l.cout)
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
