// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build amd64

package avx512

import "unsafe"

// avx512RowMajorLHSKernelFloat32Asm computes one 8 x 32 output tile,
// out = lhs x rhs (or out += lhs x rhs with accumulate), reading the 8 lhs rows in place (row-major, lhsStride
// bytes apart: no packing) and rhs as 32 contiguous floats per contracting
// step, rhsStride bytes apart (128 for a packed strip). out rows are
// outStride bytes apart. k must be at least 0.
//
//go:noescape
func avx512RowMajorLHSKernelFloat32Asm(lhs unsafe.Pointer, lhsStride int, rhs unsafe.Pointer, rhsStride int, out unsafe.Pointer, outStride int, k int, accumulate bool)
