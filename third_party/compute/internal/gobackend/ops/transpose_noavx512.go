// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build !(amd64 && goexperiment.simd)

package ops

import "github.com/gomlx/compute/internal/gobackend"

// transposeFloat32Tile reports false: its blocks need AVX-512 (see
// transpose_avx512.go).
func transposeFloat32Tile(in []float32, inStride int, out []float32, outStride int, r0, r1, c0, c1 int) bool {
	return false
}

// transposeSegmentSums reports false: see transpose_avx512.go.
func transposeSegmentSums(backend *gobackend.Backend, sums []float32, segments, coutPad, kPad, cout, k int, out []float32) bool {
	return false
}
