// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build goexperiment.simd

package ops

import "simd"

func init() {
	biasReLURows = simdBiasReLURows
}

// simdBiasReLURows is biasReLURows a vector at a time.
func simdBiasReLURows(out, bias, res []float32, relu bool) {
	c := len(bias)
	vl := simd.BroadcastFloat32s(0).Len()
	zero := simd.BroadcastFloat32s(0)
	for r := 0; r+c <= len(out); r += c {
		row := out[r : r+c]
		var rrow []float32
		if res != nil {
			rrow = res[r : r+c]
		}
		j := 0
		for ; j+vl <= c; j += vl {
			v := simd.LoadFloat32s(row[j:]).Add(simd.LoadFloat32s(bias[j:]))
			if rrow != nil {
				v = v.Add(simd.LoadFloat32s(rrow[j:]))
			}
			if relu {
				v = v.Max(zero)
			}
			v.Store(row[j:])
		}
		if j < c {
			v, _ := simd.LoadFloat32sPart(row[j:])
			b, _ := simd.LoadFloat32sPart(bias[j:])
			v = v.Add(b)
			if rrow != nil {
				x, _ := simd.LoadFloat32sPart(rrow[j:])
				v = v.Add(x)
			}
			if relu {
				v = v.Max(zero)
			}
			v.StorePart(row[j:])
		}
	}
}
