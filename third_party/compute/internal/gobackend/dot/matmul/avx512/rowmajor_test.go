// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build amd64 && goexperiment.simd

package avx512

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute/internal/gobackend"
)

// TestTile8x32Float32 checks the row-major-lhs 8 x 32 tile, written then
// accumulated, against the definition, with strides larger than the rows and k of 0, 1, odd and
// long, its rhs packed (a strip of 32 values per step) and in place (rhsStride 32 to 100).
func TestTile8x32Float32(t *testing.T) {
	if !gobackend.IsAVX512Allowed || !AVX512UseAsm {
		t.Skip("no AVX-512 assembly on this machine")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct{ k, rhsStride int }{{0, 32}, {1, 32}, {7, 32}, {147, 32}, {576, 32}, {7, 33}, {147, 100}, {256, 864}} {
		k, rhsStride := tc.k, tc.rhsStride
		packed := rhsStride == 32
		lhsStride, outStride := k+5, 40
		lhs := make([]float32, 7*lhsStride+k)
		rhs := make([]float32, max(0, (k-1)*rhsStride+32))
		for i := range lhs {
			lhs[i] = r.Float32()*2 - 1
		}
		for i := range rhs {
			rhs[i] = r.Float32()*2 - 1
		}
		out := make([]float32, 7*outStride+32)
		for i := range out {
			out[i] = 99 // overwritten in the tile, kept outside
		}
		if packed {
			avx512Tile8x32Float32(lhs, lhsStride, rhs, out, outStride, k, false)
			// Accumulating a second product of the same tile doubles it.
			avx512Tile8x32Float32(lhs, lhsStride, rhs, out, outStride, k, true)
		} else {
			avx512Tile8x32StridedFloat32(lhs, lhsStride, rhs, rhsStride, out, outStride, k, false)
			avx512Tile8x32StridedFloat32(lhs, lhsStride, rhs, rhsStride, out, outStride, k, true)
		}
		for row := range 8 {
			for col := range outStride {
				idx := row*outStride + col
				if idx >= len(out) {
					break
				}
				if col >= 32 {
					if out[idx] != 99 {
						t.Fatalf("k=%d, rhs stride %d: out[%d][%d] = %v written outside the tile", k, rhsStride, row, col, out[idx])
					}
					continue
				}
				var want float64
				for i := range k {
					want += 2 * float64(lhs[row*lhsStride+i]) * float64(rhs[i*rhsStride+col])
				}
				if math.Abs(float64(out[idx])-want) > 1e-4*(1+math.Abs(want)) {
					t.Fatalf("k=%d, rhs stride %d: out[%d][%d] = %v, want %v", k, rhsStride, row, col, out[idx], want)
				}
			}
		}
	}
}
