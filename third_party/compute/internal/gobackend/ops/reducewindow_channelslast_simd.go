// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build goexperiment.simd

package ops

import "simd"

func init() {
	maxOfRows = simdMaxOfRows
}

// nanMax is the element-wise maximum of v and u, NaN where either is NaN
// (a vector Max returns one of its operands for a NaN, depending on the
// order).
func nanMax(v, u simd.Float32s) simd.Float32s {
	m := u.IfElse(u.NotEqual(u), v.Max(u))
	return v.IfElse(v.NotEqual(v), m)
}

// simdMaxOfRows is maxOfRows a vector at a time.
func simdMaxOfRows(dst, in []float32, offsets []int) {
	n := len(dst)
	vl := simd.BroadcastFloat32s(0).Len()
	c := 0
	for ; c+vl <= n; c += vl {
		v := simd.LoadFloat32s(in[offsets[0]+c:])
		for _, o := range offsets[1:] {
			v = nanMax(v, simd.LoadFloat32s(in[o+c:]))
		}
		v.Store(dst[c:])
	}
	if c < n {
		v, _ := simd.LoadFloat32sPart(in[offsets[0]+c : offsets[0]+n])
		for _, o := range offsets[1:] {
			u, _ := simd.LoadFloat32sPart(in[o+c : o+n])
			v = nanMax(v, u)
		}
		v.StorePart(dst[c:])
	}
}
