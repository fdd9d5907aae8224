// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build goexperiment.simd

package ops

import (
	"simd"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/shapes"
)

// This file runs 3x3 stride-1 convolutions with Winograd's minimal
// filtering algorithm (Lavin and Gray, "Fast Algorithms for Convolutional
// Neural Networks", 2016) in one of two sizes: F(2x2, 3x3) computes each
// 2x2 block of outputs from a 4x4 block of inputs with 16 multiplications
// per input and output channel pair instead of 36; F(4x4, 3x3) each 4x4
// block from a 6x6 block with 36 instead of 144, 1.78 times fewer. With
// the input transform V = B^T d B of every input tile, the kernel
// transform U = G g G^T and the output transform Y = A^T M A, the
// multiplications are one matrix product M[p] = V[p] U[p] ([tiles, Cin] x
// [Cin, Cout]) per position p of the input tile, run with the 8 x 32 tile
// kernel as convRowMajor does. The transforms cost O(Cin + Cout) per tile
// against O(Cin * Cout) for the products.
//
// F(4x4, 3x3) rounds less closely to the direct convolution than F(2x2,
// 3x3) (its transforms multiply by up to 8 and divide by 24; measured
// against float64 in TestWinogradVariants) and has 4 times fewer tiles, so
// fewer rows to amortise each U[p] over: it is taken where the products
// stay bound by arithmetic, not by reading U (winogradVariantFor).
//
// A kernel dilation d is taken as tiles of outputs d apart (and inputs d
// apart): the convolution of each of the d*d phases of the output grid is
// an undilated convolution of the input's same phase.

func init() {
	convWinograd = (*im2colGeometry).convWinograd
}

// winogradVariant is one size of Winograd's algorithm: m x m outputs a
// tile from an (m+2) x (m+2) input tile, and its three transforms, each
// over slices of (m+2)^2 positions (row-major within the tile).
type winogradVariant struct {
	kind string // the DerivedCache key of its transformed kernels
	m    int    // outputs per tile side
	// kernel writes U = G g G^T of the 3x3 taps (taps[a*3+b], 32 values
	// each) into dst[i*(m+2)+j].
	kernel func(taps *[9][]float32, dst [][]float32)
	// input writes V = B^T d B of rows[r*(m+2)+c] (Cin values each) into
	// dst[i*(m+2)+j].
	input func(rows, dst [][]float32)
	// output writes Y = A^T M A of m[i*(m+2)+j] (Cout values each, a
	// multiple of 32) into ys[y*m+x], skipping nil ones.
	output func(m, ys [][]float32)
}

var (
	winogradF2 = &winogradVariant{kind: "winograd-f2x2-3x3", m: 2,
		kernel: winogradKernelTransform, input: winogradInputTransform, output: winogradOutputTransform}
	winogradF4 = &winogradVariant{kind: "winograd-f4x4-3x3", m: 4,
		kernel: winogradF4KernelTransform, input: winogradF4InputTransform, output: winogradF4OutputTransform}
)

// side is the input tile's side, m+2.
func (v *winogradVariant) side() int { return v.m + 2 }

// positions is the number of positions of an input tile, (m+2)^2.
func (v *winogradVariant) positions() int { return (v.m + 2) * (v.m + 2) }

// winogradF4MinTiles is the fewest F(4x4, 3x3) tiles a convolution must
// have for that variant to be taken. Each U[p] strip is read from the
// caches once per chunk of tiles and used for the chunk's rows; with
// fewer tiles (ResNet's 8x8 maps at 128 px, batch 8) the chunks of two
// workers get too few rows and the products wait on those reads more
// than they save in arithmetic. The choice does not depend on the number
// of workers: a result must not either.
const winogradF4MinTiles = 128

// winogradVariantFor picks F(4x4, 3x3) for convolutions of at least
// winogradF4MinTiles of its tiles, else F(2x2, 3x3).
func (g *im2colGeometry) winogradVariantFor() *winogradVariant {
	tiles := g.n * len(winogradTileStarts(g.ho, g.dilateH, 4)) * len(winogradTileStarts(g.wo, g.dilateW, 4))
	if tiles >= winogradF4MinTiles {
		return winogradF4
	}
	return winogradF2
}

// winogradTileStarts lists the first output index of every m-output tile
// along an axis of size n with dilation d: within each phase (indices
// congruent modulo d), consecutive runs of m; a phase whose length is not
// a multiple of m ends with a tile whose last outputs are past the end
// (computed, not stored).
func winogradTileStarts(n, d, m int) []int {
	var starts []int
	for phase := range min(d, n) {
		for o := phase; o < n; o += m * d {
			starts = append(starts, o)
		}
	}
	return starts
}

// winogradConv is one Winograd convolution's operands and tile lists.
type winogradConv struct {
	g                    *im2colGeometry
	v                    *winogradVariant
	tile                 func(lhs []float32, lhsStride int, rhs []float32, out []float32, outStride int, k int, accumulate bool)
	in, out              []float32
	packed               []float32 // U[p] as 32-column strips: [positions][strips][Cin][32]
	rowStarts, colStarts []int
	tilesPerImage        int
}

// convWinograd computes the convolution with Winograd's algorithm (see the
// file's comment) in the size winogradVariantFor picks. kernel is
// [9*Cin, Cout] (as kernelMatrix returns it).
func (g *im2colGeometry) convWinograd(backend *gobackend.Backend,
	tile func(lhs []float32, lhsStride int, rhs []float32, out []float32, outStride int, k int, accumulate bool),
	in, kernel, out []float32) error {
	return g.convWinogradWith(backend, g.winogradVariantFor(), tile, in, kernel, out)
}

// convWinogradWith computes the convolution with the variant v. Each
// worker takes chunks of tiles and runs the three stages on a chunk while
// it is in its caches.
func (g *im2colGeometry) convWinogradWith(backend *gobackend.Backend, v *winogradVariant,
	tile func(lhs []float32, lhsStride int, rhs []float32, out []float32, outStride int, k int, accumulate bool),
	in, kernel, out []float32) error {
	cin, cout := g.cin, g.cout
	np := v.positions()
	w := &winogradConv{g: g, v: v, tile: tile, in: in, out: out,
		rowStarts: winogradTileStarts(g.ho, g.dilateH, v.m), colStarts: winogradTileStarts(g.wo, g.dilateW, v.m)}
	w.tilesPerImage = len(w.rowStarts) * len(w.colStarts)
	numTiles := g.n * w.tilesPerImage

	// The transformed kernel is kept by the backend between executions
	// (inference runs the same weights every time); one not kept (a
	// kernel being trained) is written into a buffer of the backend's,
	// given back after the convolution.
	var packedBuf *gobackend.Buffer
	alloc := func(n int) []float32 {
		var err error
		if packedBuf, err = backend.GetBuffer(shapes.Make(dtypes.Float32, n)); err != nil {
			return make([]float32, n) // a finalized backend: the op fails elsewhere
		}
		return packedBuf.Flat.([]float32)
	}
	packed, kept := backend.Derived.Float32(kernel, g.kernelFrozen, v.kind, [4]int{cin, cout}, np*cin*cout, alloc, func(packed []float32) {
		v.transformKernel(backend, kernel, packed, cin, cout)
	})
	w.packed = packed
	if !kept && packedBuf != nil {
		defer backend.PutBuffer(packedBuf)
	}

	if np*cin*cout*4 > winogradKernelCacheBytes {
		return w.positionMajor(backend, numTiles)
	}

	// Chunks of tiles, pulled by the workers: the input transform, the
	// products and the output transform of a chunk while it is in cache.
	workers := workerCount(backend)
	chunkTiles := min(winogradChunkBytes/(np*4*cin), (numTiles+2*workers-1)/(2*workers))
	chunkTiles = max(8, (chunkTiles+7)/8*8)
	numChunks := (numTiles + chunkTiles - 1) / chunkTiles
	return parallelPull(backend, numChunks, func(next func() (int, bool)) error {
		vt, m, zeros, release, err := w.scratch(backend, chunkTiles)
		if err != nil {
			return err
		}
		defer release()
		for c, ok := next(); ok; c, ok = next() {
			t0 := c * chunkTiles
			tiles := min(chunkTiles, numTiles-t0)
			padded := (tiles + 7) / 8 * 8
			w.transformInput(vt, chunkTiles, t0, tiles, padded, zeros)
			for p := range np {
				w.multiply(vt, m, chunkTiles, p, padded)
			}
			w.transformOutput(m, chunkTiles, t0, tiles)
		}
		return nil
	})
}

// winogradKernelCacheBytes is the largest transformed kernel the chunked
// schedule of convWinogradWith takes: each chunk reads all of it, which
// must stay in the core's caches (L2) for the products to be bound by
// arithmetic. Larger ones (ResNet's layers of 128 channels and more) go
// to positionMajor.
const winogradKernelCacheBytes = 1 << 20

// winogradSuperChunkBytes bounds the transformed inputs and products
// ([positions, tiles, Cin + Cout] values) positionMajor holds at once.
const winogradSuperChunkBytes = 16 << 20

// positionMajor runs the convolution in super-chunks of tiles, each in
// three stages shared by the workers: the input transform of all its
// tiles, then the products position by position (each worker a range of
// positions, so every U[p] is read once for all the super-chunk's tiles
// and stays in cache across them), then the output transform. The
// chunked schedule reads all of U once per chunk of a few dozen tiles,
// which for deep layers (U[p] of 512x512 channels is 1 MB a position)
// streams the transformed kernel from memory many times over.
func (w *winogradConv) positionMajor(backend *gobackend.Backend, numTiles int) error {
	cin, cout, np := w.g.cin, w.g.cout, w.v.positions()
	superTiles := max(8, winogradSuperChunkBytes/(np*4*(cin+cout))/8*8)
	superTiles = min(superTiles, (numTiles+7)/8*8)
	v, m, zeros, release, err := w.scratch(backend, superTiles)
	if err != nil {
		return err
	}
	defer release()
	for t0 := 0; t0 < numTiles; t0 += superTiles {
		tiles := min(superTiles, numTiles-t0)
		padded := (tiles + 7) / 8 * 8
		// Groups of 8 tiles: the input and output transforms' ranges.
		groups := padded / 8
		parallelRanges(backend, groups, 2, func(lo, hi int) {
			first := lo * 8
			w.transformInput(v[first*cin:], superTiles, t0+first, max(0, min(hi*8, tiles)-first), (hi-lo)*8, zeros)
		})
		parallelRanges(backend, np, 1, func(lo, hi int) {
			for p := lo; p < hi; p++ {
				w.multiply(v, m, superTiles, p, padded)
			}
		})
		parallelRanges(backend, groups, 2, func(lo, hi int) {
			first := lo * 8
			if n := min(hi*8, tiles) - first; n > 0 {
				w.transformOutput(m[first*cout:], superTiles, t0+first, n)
			}
		})
	}
	return nil
}

// scratch returns, in one backend buffer, room for the transformed inputs
// and the products of ld tiles (v laid out [positions][ld][Cin], m
// [positions][ld][Cout]) and Cin zeros (the input rows outside the image);
// release gives the buffer back.
func (w *winogradConv) scratch(backend *gobackend.Backend, ld int) (v, m, zeros []float32, release func(), err error) {
	np := w.v.positions()
	vSize, mSize := np*ld*w.g.cin, np*ld*w.g.cout
	buf, err := backend.GetBuffer(shapes.Make(dtypes.Float32, vSize+mSize+w.g.cin))
	if err != nil {
		return nil, nil, nil, nil, err
	}
	flat := buf.Flat.([]float32)
	v, m, zeros = flat[:vSize], flat[vSize:vSize+mSize], flat[vSize+mSize:]
	clear(zeros)
	return v, m, zeros, func() { backend.PutBuffer(buf) }, nil
}

// transformInput writes V[p][i] = (B^T d B)[p] of tile base+i into rows i
// of v (laid out [positions][ld][Cin]) for i in [0, tiles), and zeros for
// i in [tiles, padded).
func (w *winogradConv) transformInput(v []float32, ld, base, tiles, padded int, zeros []float32) {
	g, cin, d := w.g, w.g.cin, w.g.dilateH
	side, np := w.v.side(), w.v.positions()
	rows, dst := make([][]float32, np), make([][]float32, np)
	for i := range padded {
		for p := range np {
			dst[p] = v[(p*ld+i)*cin : (p*ld+i+1)*cin]
		}
		if i >= tiles {
			for p := range np {
				clear(dst[p])
			}
			continue
		}
		b, oy0, ox0 := w.tileAt(base + i)
		for r := range side {
			iy := oy0 - g.padTop + r*d
			for col := range side {
				ix := ox0 - g.padLeft + col*d
				if iy < 0 || iy >= g.h || ix < 0 || ix >= g.w {
					rows[r*side+col] = zeros
				} else {
					off := ((b*g.h+iy)*g.w + ix) * cin
					rows[r*side+col] = w.in[off : off+cin]
				}
			}
		}
		w.v.input(rows, dst)
	}
}

// multiply computes the first rows (a multiple of 8) of M[p] = V[p] x U[p].
func (w *winogradConv) multiply(v, m []float32, ld, p, rows int) {
	cin, cout := w.g.cin, w.g.cout
	strips := cout / 32
	vp, mp := v[p*ld*cin:], m[p*ld*cout:]
	for k0 := 0; k0 < cin; k0 += rowMajorBlockK {
		kLen := min(rowMajorBlockK, cin-k0)
		for s := range strips {
			rhs := w.packed[((p*strips+s)*cin+k0)*32:]
			for rs := 0; rs < rows; rs += 8 {
				w.tile(vp[rs*cin+k0:], cin, rhs, mp[rs*cout+32*s:], cout, kLen, k0 > 0)
			}
		}
	}
}

// transformOutput writes the m x m outputs, A^T M A, of tiles base+i for i
// in [0, tiles) from rows i of m (laid out [positions][ld][Cout]).
func (w *winogradConv) transformOutput(m []float32, ld, base, tiles int) {
	g, cout, d := w.g, w.g.cout, w.g.dilateH
	om, np := w.v.m, w.v.positions()
	rows, ys := make([][]float32, np), make([][]float32, om*om)
	for i := range tiles {
		b, oy0, ox0 := w.tileAt(base + i)
		for p := range np {
			rows[p] = m[(p*ld+i)*cout : (p*ld+i+1)*cout]
		}
		for yi := range om {
			for xi := range om {
				oy, ox := oy0+yi*d, ox0+xi*d
				ys[yi*om+xi] = nil
				if oy < g.ho && ox < g.wo {
					off := ((b*g.ho+oy)*g.wo + ox) * cout
					ys[yi*om+xi] = w.out[off : off+cout]
				}
			}
		}
		w.v.output(rows, ys)
	}
}

// transformKernel writes U = G g G^T of the [9*Cin, Cout] kernel into
// packed as 32-column strips, [positions][strips][Cin][32]. It goes strip
// by strip, so that each position's values are written in runs over the
// input channels rather than a strip apart (1.1-1.3x on kernels of 256
// and 512 channels, bound by memory).
func (v *winogradVariant) transformKernel(backend *gobackend.Backend, kernel, packed []float32, cin, cout int) {
	strips, np := cout/32, v.positions()
	parallelRanges(backend, cin, max(1, 4096/cout), func(lo, hi int) {
		var taps [9][]float32
		dst := make([][]float32, np)
		for s := range strips {
			for ci := lo; ci < hi; ci++ {
				for t := range 9 {
					taps[t] = kernel[(t*cin+ci)*cout+32*s : (t*cin+ci)*cout+32*s+32]
				}
				for p := range np {
					off := ((p*strips+s)*cin + ci) * 32
					dst[p] = packed[off : off+32]
				}
				v.kernel(&taps, dst)
			}
		}
	})
}

// tileAt returns tile t's image and first output row and column.
func (w *winogradConv) tileAt(t int) (b, oy0, ox0 int) {
	b, t = t/w.tilesPerImage, t%w.tilesPerImage
	return b, w.rowStarts[t/len(w.colStarts)], w.colStarts[t%len(w.colStarts)]
}

// winogradKernelTransform writes U = G g G^T, for 32 output channels, of
// the 3x3 taps g (taps[a*3+b], each 32 values) into dst[i*4+j].
//
//	G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
//
// Written out without arrays of vectors, which Go keeps in memory: a
// training step transforms every kernel anew, and with loops over such
// arrays this took 1.6 times as long (in cache).
func winogradKernelTransform(taps *[9][]float32, dst [][]float32) {
	_ = dst[15]
	half := simd.BroadcastFloat32s(0.5)
	vl := half.Len()
	for c := 0; c < 32; c += vl {
		g0, g1, g2 := simd.LoadFloat32s(taps[0][c:]), simd.LoadFloat32s(taps[1][c:]), simd.LoadFloat32s(taps[2][c:])
		g3, g4, g5 := simd.LoadFloat32s(taps[3][c:]), simd.LoadFloat32s(taps[4][c:]), simd.LoadFloat32s(taps[5][c:])
		g6, g7, g8 := simd.LoadFloat32s(taps[6][c:]), simd.LoadFloat32s(taps[7][c:]), simd.LoadFloat32s(taps[8][c:])
		// Rows of G g: g's first row, (r0+r1+r2)/2, (r0-r1+r2)/2, its last row.
		winogradF2KernelRow(g0, g1, g2, half, dst[0][c:], dst[1][c:], dst[2][c:], dst[3][c:])
		winogradF2KernelRow(g0.Add(g3).Add(g6).Mul(half), g1.Add(g4).Add(g7).Mul(half), g2.Add(g5).Add(g8).Mul(half),
			half, dst[4][c:], dst[5][c:], dst[6][c:], dst[7][c:])
		winogradF2KernelRow(g0.Sub(g3).Add(g6).Mul(half), g1.Sub(g4).Add(g7).Mul(half), g2.Sub(g5).Add(g8).Mul(half),
			half, dst[8][c:], dst[9][c:], dst[10][c:], dst[11][c:])
		winogradF2KernelRow(g6, g7, g8, half, dst[12][c:], dst[13][c:], dst[14][c:], dst[15][c:])
	}
}

// winogradF2KernelRow stores one row (t0, t1, t2) of G g times G^T:
// t0, (t0+t1+t2)/2, (t0-t1+t2)/2, t2.
func winogradF2KernelRow(t0, t1, t2, half simd.Float32s, d0, d1, d2, d3 []float32) {
	t0.Store(d0)
	t0.Add(t1).Add(t2).Mul(half).Store(d1)
	t0.Sub(t1).Add(t2).Mul(half).Store(d2)
	t2.Store(d3)
}

// winogradInputTransform writes V = B^T d B of a 4x4 input tile (rows[r*4+c],
// each Cin values) into dst[i*4+j].
//
//	B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
//
// Written out without loops over arrays of vectors, as the F(4x4, 3x3)
// transforms are (see winogradF4KernelTransform).
func winogradInputTransform(rows, dst [][]float32) {
	_, _ = rows[15], dst[15]
	n := len(dst[0])
	vl := simd.BroadcastFloat32s(0).Len()
	c := 0
	for ; c+vl <= n; c += vl {
		// e[i*4+col] = (B^T d)[i][col].
		var e [16]simd.Float32s
		for col := range 4 {
			d0, d1 := simd.LoadFloat32s(rows[col][c:]), simd.LoadFloat32s(rows[4+col][c:])
			d2, d3 := simd.LoadFloat32s(rows[8+col][c:]), simd.LoadFloat32s(rows[12+col][c:])
			e[col], e[4+col], e[8+col], e[12+col] = d0.Sub(d2), d1.Add(d2), d2.Sub(d1), d1.Sub(d3)
		}
		for i := range 4 {
			e0, e1, e2, e3 := e[i*4], e[i*4+1], e[i*4+2], e[i*4+3]
			e0.Sub(e2).Store(dst[i*4][c:])
			e1.Add(e2).Store(dst[i*4+1][c:])
			e2.Sub(e1).Store(dst[i*4+2][c:])
			e1.Sub(e3).Store(dst[i*4+3][c:])
		}
	}
	for ; c < n; c++ {
		var e [16]float32
		for col := range 4 {
			d0, d1, d2, d3 := rows[col][c], rows[4+col][c], rows[8+col][c], rows[12+col][c]
			e[col], e[4+col], e[8+col], e[12+col] = d0-d2, d1+d2, d2-d1, d1-d3
		}
		for i := range 4 {
			e0, e1, e2, e3 := e[i*4], e[i*4+1], e[i*4+2], e[i*4+3]
			dst[i*4][c], dst[i*4+1][c], dst[i*4+2][c], dst[i*4+3][c] = e0-e2, e1+e2, e2-e1, e1-e3
		}
	}
}

// winogradOutputTransform writes Y = A^T M A of one tile (m[i*4+j], each
// Cout values) into the 2x2 outputs ys[y*2+x]; a nil output (past the
// image's edge) is skipped. Cout is a multiple of 32, so of the vector
// length.
//
//	A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
func winogradOutputTransform(m, ys [][]float32) {
	_, _ = m[15], ys[3]
	n := len(m[0])
	vl := simd.BroadcastFloat32s(0).Len()
	for c := 0; c+vl <= n; c += vl {
		var s [2][4]simd.Float32s
		for col := range 4 {
			m0, m1, m2, m3 := simd.LoadFloat32s(m[col][c:]), simd.LoadFloat32s(m[4+col][c:]),
				simd.LoadFloat32s(m[8+col][c:]), simd.LoadFloat32s(m[12+col][c:])
			s[0][col] = m0.Add(m1).Add(m2)
			s[1][col] = m1.Sub(m2).Sub(m3)
		}
		for i := range 2 {
			if y := ys[i*2]; y != nil {
				s[i][0].Add(s[i][1]).Add(s[i][2]).Store(y[c:])
			}
			if y := ys[i*2+1]; y != nil {
				s[i][1].Sub(s[i][2]).Sub(s[i][3]).Store(y[c:])
			}
		}
	}
}

// winogradF4KernelTransform writes U = G g G^T of F(4x4, 3x3), for 32
// output channels, of the 3x3 taps g (taps[a*3+b], each 32 values) into
// dst[i*6+j].
//
//	G = [[1/4, 0, 0], [-1/6, -1/6, -1/6], [-1/6, 1/6, -1/6],
//	     [1/24, 1/12, 1/6], [1/24, -1/12, 1/6], [0, 0, 1]]
//
// The three transforms of F(4x4, 3x3) are written out in one function each,
// without helpers: vectors passed to or returned from a function that is
// not inlined go through memory, which made them 20 times slower.
func winogradF4KernelTransform(taps *[9][]float32, dst [][]float32) {
	_ = dst[35]
	quarter, minusSixth := simd.BroadcastFloat32s(0.25), simd.BroadcastFloat32s(-1.0/6)
	sixth, twelfth, twentyFourth := simd.BroadcastFloat32s(1.0/6), simd.BroadcastFloat32s(1.0/12), simd.BroadcastFloat32s(1.0/24)
	vl := quarter.Len()
	for c := 0; c < 32; c += vl {
		// t[i*3+b] = (G g)[i][b].
		var t [18]simd.Float32s
		for b := range 3 {
			g0, g1, g2 := simd.LoadFloat32s(taps[b][c:]), simd.LoadFloat32s(taps[3+b][c:]), simd.LoadFloat32s(taps[6+b][c:])
			a := g0.Add(g2)
			p := g0.Mul(twentyFourth).Add(g2.Mul(sixth))
			q := g1.Mul(twelfth)
			t[b], t[3+b], t[6+b] = g0.Mul(quarter), a.Add(g1).Mul(minusSixth), a.Sub(g1).Mul(minusSixth)
			t[9+b], t[12+b], t[15+b] = p.Add(q), p.Sub(q), g2
		}
		for i := range 6 {
			g0, g1, g2 := t[i*3], t[i*3+1], t[i*3+2]
			a := g0.Add(g2)
			p := g0.Mul(twentyFourth).Add(g2.Mul(sixth))
			q := g1.Mul(twelfth)
			g0.Mul(quarter).Store(dst[i*6][c:])
			a.Add(g1).Mul(minusSixth).Store(dst[i*6+1][c:])
			a.Sub(g1).Mul(minusSixth).Store(dst[i*6+2][c:])
			p.Add(q).Store(dst[i*6+3][c:])
			p.Sub(q).Store(dst[i*6+4][c:])
			g2.Store(dst[i*6+5][c:])
		}
	}
}

// winogradF4InputTransform writes V = B^T d B of a 6x6 input tile
// (rows[r*6+c], each Cin values) into dst[i*6+j].
//
//	B^T = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
//	       [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
func winogradF4InputTransform(rows, dst [][]float32) {
	_, _ = rows[35], dst[35]
	n := len(dst[0])
	two, four, five := simd.BroadcastFloat32s(2), simd.BroadcastFloat32s(4), simd.BroadcastFloat32s(5)
	vl := two.Len()
	c := 0
	for ; c+vl <= n; c += vl {
		// e[i*6+col] = (B^T d)[i][col].
		var e [36]simd.Float32s
		for col := range 6 {
			x0, x1, x2 := simd.LoadFloat32s(rows[col][c:]), simd.LoadFloat32s(rows[6+col][c:]), simd.LoadFloat32s(rows[12+col][c:])
			x3, x4, x5 := simd.LoadFloat32s(rows[18+col][c:]), simd.LoadFloat32s(rows[24+col][c:]), simd.LoadFloat32s(rows[30+col][c:])
			s12, d12 := x1.Add(x2), x1.Sub(x2)
			d42, d31 := x4.Sub(x2), x3.Sub(x1).Mul(two)
			e[col] = x0.Mul(four).Sub(x2.Mul(five)).Add(x4)
			e[6+col] = x3.Add(x4).Sub(s12.Mul(four))
			e[12+col] = x4.Sub(x3).Add(d12.Mul(four))
			e[18+col] = d42.Add(d31)
			e[24+col] = d42.Sub(d31)
			e[30+col] = x1.Mul(four).Sub(x3.Mul(five)).Add(x5)
		}
		for i := range 6 {
			x0, x1, x2, x3, x4, x5 := e[i*6], e[i*6+1], e[i*6+2], e[i*6+3], e[i*6+4], e[i*6+5]
			s12, d12 := x1.Add(x2), x1.Sub(x2)
			d42, d31 := x4.Sub(x2), x3.Sub(x1).Mul(two)
			x0.Mul(four).Sub(x2.Mul(five)).Add(x4).Store(dst[i*6][c:])
			x3.Add(x4).Sub(s12.Mul(four)).Store(dst[i*6+1][c:])
			x4.Sub(x3).Add(d12.Mul(four)).Store(dst[i*6+2][c:])
			d42.Add(d31).Store(dst[i*6+3][c:])
			d42.Sub(d31).Store(dst[i*6+4][c:])
			x1.Mul(four).Sub(x3.Mul(five)).Add(x5).Store(dst[i*6+5][c:])
		}
	}
	for ; c < n; c++ {
		var e [36]float32
		for col := range 6 {
			x0, x1, x2, x3, x4, x5 := rows[col][c], rows[6+col][c], rows[12+col][c], rows[18+col][c], rows[24+col][c], rows[30+col][c]
			s12, d12 := x1+x2, x1-x2
			d42, d31 := x4-x2, (x3-x1)*2
			e[col], e[6+col], e[12+col] = x0*4-x2*5+x4, (x3+x4)-s12*4, (x4-x3)+d12*4
			e[18+col], e[24+col], e[30+col] = d42+d31, d42-d31, x1*4-x3*5+x5
		}
		for i := range 6 {
			x0, x1, x2, x3, x4, x5 := e[i*6], e[i*6+1], e[i*6+2], e[i*6+3], e[i*6+4], e[i*6+5]
			s12, d12 := x1+x2, x1-x2
			d42, d31 := x4-x2, (x3-x1)*2
			dst[i*6][c], dst[i*6+1][c], dst[i*6+2][c] = x0*4-x2*5+x4, (x3+x4)-s12*4, (x4-x3)+d12*4
			dst[i*6+3][c], dst[i*6+4][c], dst[i*6+5][c] = d42+d31, d42-d31, x1*4-x3*5+x5
		}
	}
}

// winogradF4OutputTransform writes Y = A^T M A of one 6x6 tile (m[i*6+j],
// each Cout values) into the 4x4 outputs ys[y*4+x]; a nil output (past
// the image's edge) is skipped. Cout is a multiple of 32, so of the
// vector length.
//
//	A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
func winogradF4OutputTransform(m, ys [][]float32) {
	_, _ = m[35], ys[15]
	n := len(m[0])
	two, four, eight := simd.BroadcastFloat32s(2), simd.BroadcastFloat32s(4), simd.BroadcastFloat32s(8)
	vl := two.Len()
	for c := 0; c+vl <= n; c += vl {
		// s[i*6+col] = (A^T M)[i][col].
		var s [24]simd.Float32s
		for col := range 6 {
			x0, x1, x2 := simd.LoadFloat32s(m[col][c:]), simd.LoadFloat32s(m[6+col][c:]), simd.LoadFloat32s(m[12+col][c:])
			x3, x4, x5 := simd.LoadFloat32s(m[18+col][c:]), simd.LoadFloat32s(m[24+col][c:]), simd.LoadFloat32s(m[30+col][c:])
			a, b := x1.Add(x2), x1.Sub(x2)
			p, q := x3.Add(x4), x3.Sub(x4)
			s[col], s[6+col] = x0.Add(a).Add(p), b.Add(q.Mul(two))
			s[12+col], s[18+col] = a.Add(p.Mul(four)), b.Add(q.Mul(eight)).Add(x5)
		}
		for i := range 4 {
			x0, x1, x2, x3, x4, x5 := s[i*6], s[i*6+1], s[i*6+2], s[i*6+3], s[i*6+4], s[i*6+5]
			a, b := x1.Add(x2), x1.Sub(x2)
			p, q := x3.Add(x4), x3.Sub(x4)
			if y := ys[i*4]; y != nil {
				x0.Add(a).Add(p).Store(y[c:])
			}
			if y := ys[i*4+1]; y != nil {
				b.Add(q.Mul(two)).Store(y[c:])
			}
			if y := ys[i*4+2]; y != nil {
				a.Add(p.Mul(four)).Store(y[c:])
			}
			if y := ys[i*4+3]; y != nil {
				b.Add(q.Mul(eight)).Add(x5).Store(y[c:])
			}
		}
	}
}
