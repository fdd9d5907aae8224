// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build goexperiment.simd

package ops

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/dot"
)

// TestWinogradVariants runs both sizes of Winograd's algorithm on the same
// convolutions (odd sizes with tiles past the edge, dilations with phases
// shorter than a tile, asymmetric and no padding, a 1x1 output, channels
// that are not a multiple of the vector length, ResNet's 512 channels)
// and compares them with the definition computed in float64; the schedule
// by positions (large kernels) with super-chunks of tiles. It logs the
// largest error of each, relative to the sum of the products' magnitudes
// (the scale of a float32 rounding error of the direct sum).
func TestWinogradVariants(t *testing.T) {
	tile := dot.Float32Tile8x32
	if tile == nil {
		t.Skip("no 8x32 tile kernel in this build")
	}
	be, err := gobackend.New("parallelism=4")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Finalize()
	backend := be.(*gobackend.Backend)
	r := rand.New(rand.NewPCG(3, 4))
	worst := map[string]float64{}
	for _, tc := range []struct {
		n, h, w, cin, cout, dil int
		pad                     [2][2]int
	}{
		{2, 11, 9, 64, 64, 1, [2][2]int{{1, 1}, {1, 1}}},
		{1, 16, 16, 64, 64, 1, [2][2]int{{1, 1}, {1, 1}}},
		{2, 11, 9, 72, 64, 2, [2][2]int{{2, 2}, {2, 2}}},
		{1, 13, 10, 64, 96, 3, [2][2]int{{3, 3}, {3, 3}}},
		{1, 8, 9, 67, 64, 1, [2][2]int{{0, 1}, {1, 0}}},
		{1, 3, 3, 64, 64, 1, [2][2]int{}},
		{1, 6, 6, 512, 256, 2, [2][2]int{{2, 2}, {2, 2}}},
		{3, 9, 7, 128, 32, 1, [2][2]int{{1, 1}, {1, 1}}},
		// Transformed kernels past winogradKernelCacheBytes (positionMajor),
		// in two super-chunks of tiles, the second partial.
		{4, 50, 50, 128, 64, 1, [2][2]int{{1, 1}, {1, 1}}},
	} {
		g := im2colGeometry{n: tc.n, h: tc.h, w: tc.w, cin: tc.cin, kh: 3, kw: 3, cout: tc.cout,
			ho: tc.h + tc.pad[0][0] + tc.pad[0][1] - 2*tc.dil, wo: tc.w + tc.pad[1][0] + tc.pad[1][1] - 2*tc.dil,
			strideH: 1, strideW: 1, padTop: tc.pad[0][0], padLeft: tc.pad[1][0],
			dilateH: tc.dil, dilateW: tc.dil, inDilH: 1, inDilW: 1}
		x := make([]float32, g.n*g.h*g.w*g.cin)
		k := make([]float32, 9*g.cin*g.cout)
		for i := range x {
			x[i] = r.Float32()*2 - 1
		}
		for i := range k {
			k[i] = r.Float32()*2 - 1
		}
		want := make([]float64, g.n*g.ho*g.wo*g.cout)
		scale := make([]float64, len(want))
		for b := range g.n {
			for oy := range g.ho {
				for ox := range g.wo {
					i := ((b*g.ho+oy)*g.wo + ox) * g.cout
					sum, abs := want[i:i+g.cout], scale[i:i+g.cout]
					for ky := range 3 {
						iy := oy - g.padTop + ky*g.dilateH
						for kx := range 3 {
							ix := ox - g.padLeft + kx*g.dilateW
							if iy < 0 || iy >= g.h || ix < 0 || ix >= g.w {
								continue
							}
							for ci := range g.cin {
								xv := float64(x[((b*g.h+iy)*g.w+ix)*g.cin+ci])
								kr := k[((ky*3+kx)*g.cin+ci)*g.cout:][:g.cout]
								for co, kv := range kr {
									p := xv * float64(kv)
									sum[co], abs[co] = sum[co]+p, abs[co]+math.Abs(p)
								}
							}
						}
					}
				}
			}
		}
		for _, v := range []*winogradVariant{winogradF2, winogradF4} {
			name := fmt.Sprintf("%s/%dx%dx%dx%d-%d-d%d-p%v", v.kind, g.n, g.h, g.w, g.cin, g.cout, g.dilateH, tc.pad)
			t.Run(name, func(t *testing.T) {
				out := make([]float32, len(want))
				for i := range out {
					out[i] = float32(math.NaN()) // every output must be written
				}
				if err := g.convWinogradWith(backend, v, tile, x, k, out); err != nil {
					t.Fatal(err)
				}
				for i := range out {
					e := math.Abs(float64(out[i])-want[i]) / (1 + scale[i])
					if !(e <= 2e-5) {
						t.Fatalf("output %d = %v, want %v (relative error %.2g)", i, out[i], want[i], e)
					}
					worst[v.kind] = max(worst[v.kind], e)
				}
			})
		}
	}
	t.Logf("largest error relative to the sum of |products|: %v", worst)
}

// TestWinogradVariantFor checks which size of Winograd's algorithm a
// convolution gets: F(4x4, 3x3) only with enough of its tiles.
func TestWinogradVariantFor(t *testing.T) {
	for _, tc := range []struct {
		n, ho, wo, dil int
		want           *winogradVariant
	}{
		{8, 32, 32, 1, winogradF4}, // 512 tiles
		{8, 8, 8, 1, winogradF2},   // 32 tiles
		{8, 16, 16, 1, winogradF4}, // 128 tiles
		{8, 15, 16, 1, winogradF4}, // 128 tiles, the last row of them partial
		{7, 16, 16, 1, winogradF2}, // 112 tiles
		{8, 8, 8, 2, winogradF2},   // phases of 4: 32 tiles
		{8, 14, 14, 2, winogradF4}, // phases of 7: 128 tiles
		{1, 56, 56, 1, winogradF4}, // 196 tiles
		{1, 28, 28, 1, winogradF2}, // 49 tiles
	} {
		g := im2colGeometry{n: tc.n, ho: tc.ho, wo: tc.wo, dilateH: tc.dil, dilateW: tc.dil}
		if got := g.winogradVariantFor(); got != tc.want {
			t.Errorf("%d images of %dx%d, dilation %d: %s, want %s", tc.n, tc.ho, tc.wo, tc.dil, got.kind, tc.want.kind)
		}
	}
}

// TestWinogradKernelTransformBits checks both kernel transforms against
// the same arithmetic in scalar float32, in the same order, to the bit
// (F(2x2, 3x3)'s has no product to fuse with a sum, so the scalar code
// rounds as the vectors do); F(4x4, 3x3)'s within float32 rounding.
func TestWinogradKernelTransformBits(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	var taps [9][]float32
	for i := range taps {
		taps[i] = make([]float32, 32)
		for c := range taps[i] {
			taps[i][c] = r.Float32()*2 - 1
		}
	}
	dst := make([][]float32, 16)
	for i := range dst {
		dst[i] = make([]float32, 32)
	}
	winogradKernelTransform(&taps, dst)
	for c := range 32 {
		g := func(a, b int) float32 { return taps[a*3+b][c] }
		var tg [4][3]float32 // G g
		for b := range 3 {
			tg[0][b] = g(0, b)
			tg[1][b] = (g(0, b) + g(1, b) + g(2, b)) * 0.5
			tg[2][b] = (g(0, b) - g(1, b) + g(2, b)) * 0.5
			tg[3][b] = g(2, b)
		}
		for i := range 4 {
			t0, t1, t2 := tg[i][0], tg[i][1], tg[i][2]
			want := [4]float32{t0, (t0 + t1 + t2) * 0.5, (t0 - t1 + t2) * 0.5, t2}
			for j := range 4 {
				if got := dst[i*4+j][c]; math.Float32bits(got) != math.Float32bits(want[j]) {
					t.Fatalf("U[%d][%d] channel %d = %v, want %v", i, j, c, got, want[j])
				}
			}
		}
	}
}

// BenchmarkWinogradKernelTransform: the two kernel transforms over a
// 256x256 kernel's 32-channel strips, in cache-sized runs.
func BenchmarkWinogradKernelTransform(b *testing.B) {
	for _, v := range []*winogradVariant{winogradF2, winogradF4} {
		b.Run(fmt.Sprintf("F%d", v.m), func(b *testing.B) {
			np := v.positions()
			var taps [9][]float32
			for i := range taps {
				taps[i] = make([]float32, 32)
			}
			dst := make([][]float32, np)
			for i := range dst {
				dst[i] = make([]float32, 32)
			}
			b.SetBytes(int64(4 * 32 * (9 + np)))
			for b.Loop() {
				v.kernel(&taps, dst)
			}
		})
	}
}

// BenchmarkWinogradTransformKernel: a training step's transform of whole
// kernels (64 to 512 channels, ResNet-18's), bound by memory at the
// larger ones.
func BenchmarkWinogradTransformKernel(b *testing.B) {
	be, err := gobackend.New("parallelism=2")
	if err != nil {
		b.Fatal(err)
	}
	defer be.Finalize()
	backend := be.(*gobackend.Backend)
	for _, v := range []*winogradVariant{winogradF2, winogradF4} {
		for _, c := range []int{64, 256, 512} {
			b.Run(fmt.Sprintf("F%d/%dx%d", v.m, c, c), func(b *testing.B) {
				kernel := make([]float32, 9*c*c)
				packed := make([]float32, v.positions()*c*c)
				b.SetBytes(int64(4 * (len(kernel) + len(packed))))
				for b.Loop() {
					v.transformKernel(backend, kernel, packed, c, c)
				}
			})
		}
	}
}
