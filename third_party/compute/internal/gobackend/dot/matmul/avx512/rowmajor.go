// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build amd64 && goexperiment.simd

package avx512

import (
	"fmt"
	"unsafe"

	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/dot"
)

func init() {
	if gobackend.IsAVX512Allowed && AVX512UseAsm {
		dot.Float32Tile8x32 = avx512Tile8x32Float32
		dot.Float32Tile8x32Strided = avx512Tile8x32StridedFloat32
	}
}

// avx512Tile8x32Float32 implements dot.Float32Tile8x32 with
// avx512RowMajorLHSKernelFloat32Asm, after checking that every access is
// within the slices.
func avx512Tile8x32Float32(lhs []float32, lhsStride int, rhs []float32, out []float32, outStride int, k int, accumulate bool) {
	if k <= 0 {
		if !accumulate {
			clear8x32(out, outStride)
		}
		return
	}
	if lhsStride < k || outStride < 32 || len(lhs) < 7*lhsStride+k || len(rhs) < 32*k || len(out) < 7*outStride+32 {
		panic(fmt.Sprintf("avx512Tile8x32Float32: slices too short (lhs %d, stride %d, rhs %d, out %d, stride %d, k %d)",
			len(lhs), lhsStride, len(rhs), len(out), outStride, k))
	}
	avx512RowMajorLHSKernelFloat32Asm(unsafe.Pointer(&lhs[0]), 4*lhsStride, unsafe.Pointer(&rhs[0]), 4*32,
		unsafe.Pointer(&out[0]), 4*outStride, k, accumulate)
}

// avx512Tile8x32StridedFloat32 implements dot.Float32Tile8x32Strided with
// avx512RowMajorLHSKernelFloat32Asm, after checking that every access is
// within the slices.
func avx512Tile8x32StridedFloat32(lhs []float32, lhsStride int, rhs []float32, rhsStride int, out []float32, outStride int, k int, accumulate bool) {
	if k <= 0 {
		if !accumulate {
			clear8x32(out, outStride)
		}
		return
	}
	if lhsStride < k || rhsStride < 32 || outStride < 32 || len(lhs) < 7*lhsStride+k || len(rhs) < (k-1)*rhsStride+32 || len(out) < 7*outStride+32 {
		panic(fmt.Sprintf("avx512Tile8x32StridedFloat32: slices too short (lhs %d, stride %d, rhs %d, stride %d, out %d, stride %d, k %d)",
			len(lhs), lhsStride, len(rhs), rhsStride, len(out), outStride, k))
	}
	avx512RowMajorLHSKernelFloat32Asm(unsafe.Pointer(&lhs[0]), 4*lhsStride, unsafe.Pointer(&rhs[0]), 4*rhsStride,
		unsafe.Pointer(&out[0]), 4*outStride, k, accumulate)
}

func clear8x32(out []float32, outStride int) {
	for r := range 8 {
		clear(out[r*outStride : r*outStride+32])
	}
}
