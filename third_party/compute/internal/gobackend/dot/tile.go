// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package dot

// Float32Tile8x32 computes one 8 x 32 tile of a float32 matrix product,
// out = lhs x rhs (out += lhs x rhs with accumulate), reading the 8 lhs rows in place (row-major, lhsStride
// values apart, k values each: no packing) and rhs as a packed strip (32
// contiguous values per contracting step, k steps). out's rows are
// outStride values apart.
//
// It is nil unless an architecture package provides it (the AVX-512 one
// does, at init). Callers that multiply a matrix whose rows are produced
// on the fly (an im2col) use it to skip packing the lhs, which costs as
// much as the multiplication itself when the output has few columns.
var Float32Tile8x32 func(lhs []float32, lhsStride int, rhs []float32, out []float32, outStride int, k int, accumulate bool)

// Float32Tile8x32Strided is Float32Tile8x32 with the rhs read in place as
// well: its 32 values of each contracting step are rhsStride values apart
// (at least 32), e.g. 32 columns of a row-major matrix. It is nil unless
// an architecture package provides it.
var Float32Tile8x32Strided func(lhs []float32, lhsStride int, rhs []float32, rhsStride int, out []float32, outStride int, k int, accumulate bool)
