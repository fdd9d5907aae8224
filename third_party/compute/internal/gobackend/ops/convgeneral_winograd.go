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
// filtering algorithm F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016): each 2x2 block of outputs is
// computed from a 4x4 block of inputs with 16 multiplications per input and
// output channel pair instead of 36. With the input transform
// V = B^T d B of every 4x4 input tile, the kernel transform U = G g G^T and
// the output transform Y = A^T M A, the multiplications are 16 matrix
// products M[p] = V[p] U[p] ([tiles, Cin] x [Cin, Cout], one per position p
// of the 4x4 tile), run with the 8 x 32 tile kernel as convRowMajor does.
// The transforms cost O(Cin + Cout) per tile against O(Cin * Cout) for the
// products. F(2x2, 3x3) is the variant whose float32 rounding stays close
// to the direct convolution's (the larger F(4x4, 3x3) loses digits).
//
// A kernel dilation d is taken as tiles of outputs d apart (and inputs d
// apart): the convolution of each of the d*d phases of the output grid is
// an undilated convolution of the input's same phase.

func init() {
	convWinograd = (*im2colGeometry).convWinograd
}

// winogradTileStarts lists the first output index of every 2-output tile
// along an axis of size n with dilation d: within each phase (indices
// congruent modulo d), consecutive pairs; a phase of odd length ends with
// a tile whose second output is past the end (computed, not stored).
func winogradTileStarts(n, d int) []int {
	var starts []int
	for phase := range min(d, n) {
		for o := phase; o < n; o += 2 * d {
			starts = append(starts, o)
		}
	}
	return starts
}

// winogradConv is one Winograd convolution's operands and tile lists.
type winogradConv struct {
	g                    *im2colGeometry
	tile                 func(lhs []float32, lhsStride int, rhs []float32, out []float32, outStride int, k int, accumulate bool)
	in, out              []float32
	packed               []float32 // U[p] as 32-column strips: [16][strips][Cin][32]
	rowStarts, colStarts []int
	tilesPerImage        int
}

// convWinograd computes the convolution with F(2x2, 3x3) (see the file's
// comment). kernel is [9*Cin, Cout] (as kernelMatrix returns it).
// Each worker takes chunks of tiles and runs the three stages on a chunk
// while it is in its caches.
func (g *im2colGeometry) convWinograd(backend *gobackend.Backend,
	tile func(lhs []float32, lhsStride int, rhs []float32, out []float32, outStride int, k int, accumulate bool),
	in, kernel, out []float32) error {
	cin, cout := g.cin, g.cout
	strips := cout / 32
	w := &winogradConv{g: g, tile: tile, in: in, out: out,
		rowStarts: winogradTileStarts(g.ho, g.dilateH), colStarts: winogradTileStarts(g.wo, g.dilateW)}
	w.tilesPerImage = len(w.rowStarts) * len(w.colStarts)
	numTiles := g.n * w.tilesPerImage

	// The transformed kernel is kept by the backend between executions
	// (inference runs the same weights every time).
	w.packed = backend.Derived.Float32(kernel, "winograd-f2x2-3x3", [4]int{cin, cout}, 16*cin*cout, func(packed []float32) {
		parallelRanges(backend, cin, max(1, 4096/cout), func(lo, hi int) {
			var taps [9][]float32
			var dst [16][]float32
			for ci := lo; ci < hi; ci++ {
				for s := range strips {
					for t := range 9 {
						taps[t] = kernel[(t*cin+ci)*cout+32*s : (t*cin+ci)*cout+32*s+32]
					}
					for p := range 16 {
						off := ((p*strips+s)*cin + ci) * 32
						dst[p] = packed[off : off+32]
					}
					winogradKernelTransform(&taps, &dst)
				}
			}
		})
	})

	// Chunks of tiles, pulled by the workers: the input transform, the 16
	// products and the output transform of a chunk while it is in cache.
	workers := workerCount(backend)
	chunkTiles := min(winogradChunkBytes/(16*4*cin), (numTiles+2*workers-1)/(2*workers))
	chunkTiles = max(8, (chunkTiles+7)/8*8)
	numChunks := (numTiles + chunkTiles - 1) / chunkTiles
	return parallelPull(backend, numChunks, func(next func() (int, bool)) error {
		vSize, mSize := 16*chunkTiles*cin, 16*chunkTiles*cout
		buf, err := backend.GetBuffer(shapes.Make(dtypes.Float32, vSize+mSize+cin))
		if err != nil {
			return err
		}
		defer backend.PutBuffer(buf)
		flat := buf.Flat.([]float32)
		v, m, zeros := flat[:vSize], flat[vSize:vSize+mSize], flat[vSize+mSize:]
		clear(zeros)
		for c, ok := next(); ok; c, ok = next() {
			t0 := c * chunkTiles
			tiles := min(chunkTiles, numTiles-t0)
			padded := (tiles + 7) / 8 * 8
			w.transformInput(v, chunkTiles, t0, tiles, padded, zeros)
			for p := range 16 {
				w.multiply(v, m, chunkTiles, p, padded)
			}
			w.transformOutput(m, chunkTiles, t0, tiles)
		}
		return nil
	})
}

// transformInput writes V[p][i] = (B^T d B)[p] of tile base+i into rows i
// of v (laid out [16][ld][Cin]) for i in [0, tiles), and zeros for i in
// [tiles, padded).
func (w *winogradConv) transformInput(v []float32, ld, base, tiles, padded int, zeros []float32) {
	g, cin, d := w.g, w.g.cin, w.g.dilateH
	var rows, dst [16][]float32
	for i := range padded {
		for p := range 16 {
			dst[p] = v[(p*ld+i)*cin : (p*ld+i+1)*cin]
		}
		if i >= tiles {
			for p := range 16 {
				clear(dst[p])
			}
			continue
		}
		b, oy0, ox0 := w.tileAt(base + i)
		for r := range 4 {
			iy := oy0 - g.padTop + r*d
			for col := range 4 {
				ix := ox0 - g.padLeft + col*d
				if iy < 0 || iy >= g.h || ix < 0 || ix >= g.w {
					rows[r*4+col] = zeros
				} else {
					off := ((b*g.h+iy)*g.w + ix) * cin
					rows[r*4+col] = w.in[off : off+cin]
				}
			}
		}
		winogradInputTransform(&rows, &dst)
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

// transformOutput writes the 2x2 outputs, A^T M A, of tiles base+i for i in
// [0, tiles) from rows i of m (laid out [16][ld][Cout]).
func (w *winogradConv) transformOutput(m []float32, ld, base, tiles int) {
	g, cout, d := w.g, w.g.cout, w.g.dilateH
	var rows [16][]float32
	for i := range tiles {
		b, oy0, ox0 := w.tileAt(base + i)
		for p := range 16 {
			rows[p] = m[(p*ld+i)*cout : (p*ld+i+1)*cout]
		}
		var ys [4][]float32
		for yi := range 2 {
			for xi := range 2 {
				oy, ox := oy0+yi*d, ox0+xi*d
				if oy < g.ho && ox < g.wo {
					off := ((b*g.ho+oy)*g.wo + ox) * cout
					ys[yi*2+xi] = w.out[off : off+cout]
				}
			}
		}
		winogradOutputTransform(&rows, &ys)
	}
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
func winogradKernelTransform(taps *[9][]float32, dst *[16][]float32) {
	half := simd.BroadcastFloat32s(0.5)
	vl := half.Len()
	for c := 0; c < 32; c += vl {
		var gv [9]simd.Float32s
		for t := range 9 {
			gv[t] = simd.LoadFloat32s(taps[t][c:])
		}
		// t[i][b] = (G g)[i][b].
		var tv [4][3]simd.Float32s
		for b := range 3 {
			g0, g1, g2 := gv[b], gv[3+b], gv[6+b]
			tv[0][b] = g0
			tv[1][b] = g0.Add(g1).Add(g2).Mul(half)
			tv[2][b] = g0.Sub(g1).Add(g2).Mul(half)
			tv[3][b] = g2
		}
		for i := range 4 {
			t0, t1, t2 := tv[i][0], tv[i][1], tv[i][2]
			t0.Store(dst[i*4][c:])
			t0.Add(t1).Add(t2).Mul(half).Store(dst[i*4+1][c:])
			t0.Sub(t1).Add(t2).Mul(half).Store(dst[i*4+2][c:])
			t2.Store(dst[i*4+3][c:])
		}
	}
}

// winogradInputTransform writes V = B^T d B of a 4x4 input tile (rows[r*4+c],
// each Cin values) into dst[i*4+j].
//
//	B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
func winogradInputTransform(rows, dst *[16][]float32) {
	n := len(dst[0])
	vl := simd.BroadcastFloat32s(0).Len()
	c := 0
	for ; c+vl <= n; c += vl {
		var dv [16]simd.Float32s
		for k := range 16 {
			dv[k] = simd.LoadFloat32s(rows[k][c:])
		}
		// e[i][col] = (B^T d)[i][col].
		var e [16]simd.Float32s
		for col := range 4 {
			d0, d1, d2, d3 := dv[col], dv[4+col], dv[8+col], dv[12+col]
			e[col] = d0.Sub(d2)
			e[4+col] = d1.Add(d2)
			e[8+col] = d2.Sub(d1)
			e[12+col] = d1.Sub(d3)
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
func winogradOutputTransform(m *[16][]float32, ys *[4][]float32) {
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
