// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build amd64 && goexperiment.simd

package ops

import (
	"simd/archsimd"

	"github.com/gomlx/compute/internal/gobackend"
)

// transposeIndices[s] are the permutations of stage s of transpose16x16:
// [0] gives the first row of a pair, [1] the second.
var transposeIndices = func() (idx [4][2][16]uint32) {
	for s, b := range []uint32{8, 4, 2, 1} {
		for k := range uint32(16) {
			if k&b == 0 {
				idx[s][0][k], idx[s][1][k] = k, k+b
			} else {
				idx[s][0][k], idx[s][1][k] = 16+k-b, 16+k
			}
		}
	}
	return idx
}()

// transposeFloat32Tile writes out[c*outStride+r] = in[r*inStride+c] for
// the rows [r0, r1) and columns [c0, c1) of in: blocks of 16 x 16 with
// AVX-512 permutes, the edges one value at a time. It reports false, and
// writes nothing, where AVX-512 is not allowed.
func transposeFloat32Tile(in []float32, inStride int, out []float32, outStride int, r0, r1, c0, c1 int) bool {
	if !gobackend.IsAVX512Allowed {
		return false
	}
	rEnd, cEnd := r0+(r1-r0)/16*16, c0+(c1-c0)/16*16
	for r := r0; r < rEnd; r += 16 {
		for c := c0; c < cEnd; c += 16 {
			transpose16x16(in[r*inStride+c:], inStride, out[c*outStride+r:], outStride)
		}
	}
	// The edges: columns past cEnd of every row, rows past rEnd.
	for r := r0; r < r1; r++ {
		cFrom := cEnd
		if r >= rEnd {
			cFrom = c0
		}
		for c := cFrom; c < c1; c++ {
			out[c*outStride+r] = in[r*inStride+c]
		}
	}
	return true
}

// transposeSegmentSums writes out[i, co] = the sum over segments of
// sums[seg][co, i] (segments of [coutPad, kPad] values), for cout rows and
// k columns: the segments are added into the first (in the order of the
// loop it replaces, so the sums are the same to the bit), then transposed
// in blocks (transposeFloat32Tile). It reports false, writing nothing,
// where those blocks are not available.
func transposeSegmentSums(backend *gobackend.Backend, sums []float32, segments, coutPad, kPad, cout, k int, out []float32) bool {
	if !gobackend.IsAVX512Allowed {
		return false
	}
	if segments > 1 {
		parallelRanges(backend, cout, max(1, parallelMinElements/(kPad*segments)), func(lo, hi int) {
			for co := lo; co < hi; co++ {
				dst := sums[co*kPad : co*kPad+k]
				for seg := 1; seg < segments; seg++ {
					off := (seg*coutPad + co) * kPad
					simdAddVVFloat32(dst, sums[off:off+k], dst)
				}
			}
		})
	}
	// Rows of 16 columns of out (i) a range: each its own lines of out.
	parallelRanges(backend, (k+15)/16, max(1, parallelMinElements/(16*cout)), func(lo, hi int) {
		transposeFloat32Tile(sums, kPad, out, cout, 0, cout, 16*lo, min(k, 16*hi))
	})
	return true
}

// transpose16x16 writes the transpose of the 16 x 16 block at in (rows
// inStride apart) to out (rows outStride apart). Stage s exchanges bit
// 3-s of the row and column index of every value, so after the four the
// value of row i, column k is at row k, column i. Written out without
// arrays: the 16 rows stay in registers.
func transpose16x16(in []float32, inStride int, out []float32, outStride int) {
	r0 := archsimd.LoadFloat32x16(in)
	r1 := archsimd.LoadFloat32x16(in[1*inStride:])
	r2 := archsimd.LoadFloat32x16(in[2*inStride:])
	r3 := archsimd.LoadFloat32x16(in[3*inStride:])
	r4 := archsimd.LoadFloat32x16(in[4*inStride:])
	r5 := archsimd.LoadFloat32x16(in[5*inStride:])
	r6 := archsimd.LoadFloat32x16(in[6*inStride:])
	r7 := archsimd.LoadFloat32x16(in[7*inStride:])
	r8 := archsimd.LoadFloat32x16(in[8*inStride:])
	r9 := archsimd.LoadFloat32x16(in[9*inStride:])
	r10 := archsimd.LoadFloat32x16(in[10*inStride:])
	r11 := archsimd.LoadFloat32x16(in[11*inStride:])
	r12 := archsimd.LoadFloat32x16(in[12*inStride:])
	r13 := archsimd.LoadFloat32x16(in[13*inStride:])
	r14 := archsimd.LoadFloat32x16(in[14*inStride:])
	r15 := archsimd.LoadFloat32x16(in[15*inStride:])
	lo, hi := archsimd.LoadUint32x16Array(&transposeIndices[0][0]), archsimd.LoadUint32x16Array(&transposeIndices[0][1])
	r0, r8 = r0.ConcatPermute(r8, lo), r0.ConcatPermute(r8, hi)
	r1, r9 = r1.ConcatPermute(r9, lo), r1.ConcatPermute(r9, hi)
	r2, r10 = r2.ConcatPermute(r10, lo), r2.ConcatPermute(r10, hi)
	r3, r11 = r3.ConcatPermute(r11, lo), r3.ConcatPermute(r11, hi)
	r4, r12 = r4.ConcatPermute(r12, lo), r4.ConcatPermute(r12, hi)
	r5, r13 = r5.ConcatPermute(r13, lo), r5.ConcatPermute(r13, hi)
	r6, r14 = r6.ConcatPermute(r14, lo), r6.ConcatPermute(r14, hi)
	r7, r15 = r7.ConcatPermute(r15, lo), r7.ConcatPermute(r15, hi)
	lo, hi = archsimd.LoadUint32x16Array(&transposeIndices[1][0]), archsimd.LoadUint32x16Array(&transposeIndices[1][1])
	r0, r4 = r0.ConcatPermute(r4, lo), r0.ConcatPermute(r4, hi)
	r1, r5 = r1.ConcatPermute(r5, lo), r1.ConcatPermute(r5, hi)
	r2, r6 = r2.ConcatPermute(r6, lo), r2.ConcatPermute(r6, hi)
	r3, r7 = r3.ConcatPermute(r7, lo), r3.ConcatPermute(r7, hi)
	r8, r12 = r8.ConcatPermute(r12, lo), r8.ConcatPermute(r12, hi)
	r9, r13 = r9.ConcatPermute(r13, lo), r9.ConcatPermute(r13, hi)
	r10, r14 = r10.ConcatPermute(r14, lo), r10.ConcatPermute(r14, hi)
	r11, r15 = r11.ConcatPermute(r15, lo), r11.ConcatPermute(r15, hi)
	lo, hi = archsimd.LoadUint32x16Array(&transposeIndices[2][0]), archsimd.LoadUint32x16Array(&transposeIndices[2][1])
	r0, r2 = r0.ConcatPermute(r2, lo), r0.ConcatPermute(r2, hi)
	r1, r3 = r1.ConcatPermute(r3, lo), r1.ConcatPermute(r3, hi)
	r4, r6 = r4.ConcatPermute(r6, lo), r4.ConcatPermute(r6, hi)
	r5, r7 = r5.ConcatPermute(r7, lo), r5.ConcatPermute(r7, hi)
	r8, r10 = r8.ConcatPermute(r10, lo), r8.ConcatPermute(r10, hi)
	r9, r11 = r9.ConcatPermute(r11, lo), r9.ConcatPermute(r11, hi)
	r12, r14 = r12.ConcatPermute(r14, lo), r12.ConcatPermute(r14, hi)
	r13, r15 = r13.ConcatPermute(r15, lo), r13.ConcatPermute(r15, hi)
	lo, hi = archsimd.LoadUint32x16Array(&transposeIndices[3][0]), archsimd.LoadUint32x16Array(&transposeIndices[3][1])
	r0, r1 = r0.ConcatPermute(r1, lo), r0.ConcatPermute(r1, hi)
	r2, r3 = r2.ConcatPermute(r3, lo), r2.ConcatPermute(r3, hi)
	r4, r5 = r4.ConcatPermute(r5, lo), r4.ConcatPermute(r5, hi)
	r6, r7 = r6.ConcatPermute(r7, lo), r6.ConcatPermute(r7, hi)
	r8, r9 = r8.ConcatPermute(r9, lo), r8.ConcatPermute(r9, hi)
	r10, r11 = r10.ConcatPermute(r11, lo), r10.ConcatPermute(r11, hi)
	r12, r13 = r12.ConcatPermute(r13, lo), r12.ConcatPermute(r13, hi)
	r14, r15 = r14.ConcatPermute(r15, lo), r14.ConcatPermute(r15, hi)
	r0.Store(out)
	r1.Store(out[1*outStride:])
	r2.Store(out[2*outStride:])
	r3.Store(out[3*outStride:])
	r4.Store(out[4*outStride:])
	r5.Store(out[5*outStride:])
	r6.Store(out[6*outStride:])
	r7.Store(out[7*outStride:])
	r8.Store(out[8*outStride:])
	r9.Store(out[9*outStride:])
	r10.Store(out[10*outStride:])
	r11.Store(out[11*outStride:])
	r12.Store(out[12*outStride:])
	r13.Store(out[13*outStride:])
	r14.Store(out[14*outStride:])
	r15.Store(out[15*outStride:])
}
