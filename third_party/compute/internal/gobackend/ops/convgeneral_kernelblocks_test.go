// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/dot"
)

// TestConvKernelBlocksPackedSameBits runs the kernel-block path on the
// same convolutions with the kernel read in place and from packed strips
// (kernelBlocksPack's two choices) and requires the same bits: packing
// must not change the order in which a product's terms are added. The
// cases: a 1x1 convolution on the input rows in place, a strided 3x3 over
// several contracting blocks with a last tile of fewer than 8 rows, and a
// dilated one whose tiles skip blocks in the padding.
func TestConvKernelBlocksPackedSameBits(t *testing.T) {
	tile := dot.Float32Tile8x32Strided
	if tile == nil {
		t.Skip("no strided 8x32 tile kernel in this build")
	}
	be, err := gobackend.New("parallelism=4")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Finalize()
	backend := be.(*gobackend.Backend)
	r := rand.New(rand.NewPCG(5, 6))
	for _, g := range []im2colGeometry{
		{n: 1, h: 9, w: 7, cin: 1024, kh: 1, kw: 1, cout: 256, ho: 9, wo: 7},
		{n: 2, h: 13, w: 11, cin: 128, kh: 3, kw: 3, cout: 256, ho: 7, wo: 6, strideH: 2, strideW: 2, padTop: 1, padLeft: 1},
		{n: 1, h: 6, w: 6, cin: 640, kh: 3, kw: 3, cout: 512, ho: 6, wo: 6, padTop: 3, padLeft: 3, dilateH: 3, dilateW: 3},
	} {
		if g.strideH == 0 {
			g.strideH, g.strideW = 1, 1
		}
		if g.dilateH == 0 {
			g.dilateH, g.dilateW = 1, 1
		}
		g.inDilH, g.inDilW = 1, 1
		name := fmt.Sprintf("%dx%dx%dx%d-k%dx%d-%d-s%d-d%d", g.n, g.h, g.w, g.cin, g.kh, g.kw, g.cout, g.strideH, g.dilateH)
		t.Run(name, func(t *testing.T) {
			if !g.kernelBlocksPay() {
				t.Fatalf("the kernel-block path does not take %s", name)
			}
			in := make([]float32, g.n*g.h*g.w*g.cin)
			kernel := make([]float32, g.kh*g.kw*g.cin*g.cout)
			for i := range in {
				in[i] = r.Float32()*2 - 1
			}
			for i := range kernel {
				kernel[i] = r.Float32()*2 - 1
			}
			outs := make([][]float32, 2)
			for i, pack := range []bool{false, true} {
				outs[i] = make([]float32, g.n*g.ho*g.wo*g.cout)
				if err := g.convKernelBlocks(backend, tile, pack, in, kernel, outs[i]); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(outs[0], outs[1]) {
				t.Fatal("the kernel read from packed strips gives other bits than read in place")
			}
		})
	}
}
