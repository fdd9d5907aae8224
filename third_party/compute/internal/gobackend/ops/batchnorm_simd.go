// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build goexperiment.simd

package ops

import "simd"

func init() {
	bnFloat32Kernels = bnRowKernels[float32]{
		stats:     simdBNStats,
		affine:    simdBNAffine,
		gradStats: simdBNGradStats,
		gradApply: simdBNGradApply,
	}
}

// The reductions walk one vector of channels at a time down the rows, two
// rows per step into two pairs of accumulators (a dependent chain of adds
// would wait on each add's latency); the element-wise passes walk the rows
// in order. Channels past the last whole vector use partial loads.

func simdBNStats(x []float32, rows, c int, shift, s1, s2 []float32) {
	vl := simd.BroadcastFloat32s(0).Len()
	for j := 0; j < c; j += vl {
		w := min(vl, c-j)
		k, _ := simd.LoadFloat32sPart(shift[j : j+w])
		zero := simd.BroadcastFloat32s(0)
		a1, a2, b1, b2 := zero, zero, zero, zero
		r := 0
		for ; r+2 <= rows; r += 2 {
			u, _ := simd.LoadFloat32sPart(x[r*c+j : r*c+j+w])
			v, _ := simd.LoadFloat32sPart(x[(r+1)*c+j : (r+1)*c+j+w])
			u, v = u.Sub(k), v.Sub(k)
			a1, b1 = a1.Add(u), u.MulAdd(u, b1)
			a2, b2 = a2.Add(v), v.MulAdd(v, b2)
		}
		if r < rows {
			u, _ := simd.LoadFloat32sPart(x[r*c+j : r*c+j+w])
			u = u.Sub(k)
			a1, b1 = a1.Add(u), u.MulAdd(u, b1)
		}
		t1, _ := simd.LoadFloat32sPart(s1[j : j+w])
		t2, _ := simd.LoadFloat32sPart(s2[j : j+w])
		t1.Add(a1.Add(a2)).StorePart(s1[j : j+w])
		t2.Add(b1.Add(b2)).StorePart(s2[j : j+w])
	}
}

func simdBNGradStats(x, dy []float32, rows, c int, mean, s1, s2 []float32) {
	vl := simd.BroadcastFloat32s(0).Len()
	for j := 0; j < c; j += vl {
		w := min(vl, c-j)
		m, _ := simd.LoadFloat32sPart(mean[j : j+w])
		zero := simd.BroadcastFloat32s(0)
		a1, a2, b1, b2 := zero, zero, zero, zero
		r := 0
		for ; r+2 <= rows; r += 2 {
			g, _ := simd.LoadFloat32sPart(dy[r*c+j : r*c+j+w])
			h, _ := simd.LoadFloat32sPart(dy[(r+1)*c+j : (r+1)*c+j+w])
			u, _ := simd.LoadFloat32sPart(x[r*c+j : r*c+j+w])
			v, _ := simd.LoadFloat32sPart(x[(r+1)*c+j : (r+1)*c+j+w])
			a1, b1 = a1.Add(g), g.MulAdd(u.Sub(m), b1)
			a2, b2 = a2.Add(h), h.MulAdd(v.Sub(m), b2)
		}
		if r < rows {
			g, _ := simd.LoadFloat32sPart(dy[r*c+j : r*c+j+w])
			u, _ := simd.LoadFloat32sPart(x[r*c+j : r*c+j+w])
			a1, b1 = a1.Add(g), g.MulAdd(u.Sub(m), b1)
		}
		t1, _ := simd.LoadFloat32sPart(s1[j : j+w])
		t2, _ := simd.LoadFloat32sPart(s2[j : j+w])
		t1.Add(a1.Add(a2)).StorePart(s1[j : j+w])
		t2.Add(b1.Add(b2)).StorePart(s2[j : j+w])
	}
}

func simdBNAffine(dst, x []float32, rows, c int, a, b []float32) {
	vl := simd.BroadcastFloat32s(0).Len()
	for r := range rows {
		row, out := x[r*c:(r+1)*c], dst[r*c:(r+1)*c]
		j := 0
		for ; j+vl <= c; j += vl {
			simd.LoadFloat32s(row[j:]).MulAdd(simd.LoadFloat32s(a[j:]), simd.LoadFloat32s(b[j:])).Store(out[j:])
		}
		if j < c {
			u, _ := simd.LoadFloat32sPart(row[j:])
			va, _ := simd.LoadFloat32sPart(a[j:c])
			vb, _ := simd.LoadFloat32sPart(b[j:c])
			u.MulAdd(va, vb).StorePart(out[j:])
		}
	}
}

func simdBNGradApply(dst, dy, x []float32, rows, c int, a, b, d []float32) {
	vl := simd.BroadcastFloat32s(0).Len()
	for r := range rows {
		gs, xs, out := dy[r*c:(r+1)*c], x[r*c:(r+1)*c], dst[r*c:(r+1)*c]
		j := 0
		for ; j+vl <= c; j += vl {
			t := simd.LoadFloat32s(xs[j:]).MulAdd(simd.LoadFloat32s(b[j:]), simd.LoadFloat32s(d[j:]))
			simd.LoadFloat32s(gs[j:]).MulAdd(simd.LoadFloat32s(a[j:]), t).Store(out[j:])
		}
		if j < c {
			g, _ := simd.LoadFloat32sPart(gs[j:])
			u, _ := simd.LoadFloat32sPart(xs[j:])
			va, _ := simd.LoadFloat32sPart(a[j:c])
			vb, _ := simd.LoadFloat32sPart(b[j:c])
			vd, _ := simd.LoadFloat32sPart(d[j:c])
			g.MulAdd(va, u.MulAdd(vb, vd)).StorePart(out[j:])
		}
	}
}
