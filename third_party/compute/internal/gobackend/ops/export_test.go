// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops

import "github.com/gomlx/compute/internal/gobackend"

// ParallelPullForTest exposes parallelPull to the external tests.
var ParallelPullForTest = parallelPull

// ConvEpiloguesForTest reports, for each ConvGeneral node of the builder's
// main function, its epilogue (bias, relu), after the builder compiled.
func ConvEpiloguesForTest(b *gobackend.Builder) [][3]bool {
	var res [][3]bool
	for _, n := range b.MainFn.Nodes {
		if p, ok := n.Data.(*convNode); ok {
			res = append(res, [3]bool{p.epilogue.bias, p.epilogue.residual, p.epilogue.relu})
		}
	}
	return res
}

// ConvKernelsReversedForTest reports, for each ConvGeneral node of the
// builder's main function, whether convKernelReverseFusion folded a
// Reverse of its kernel into it, after the builder compiled.
func ConvKernelsReversedForTest(b *gobackend.Builder) []bool {
	var res []bool
	for _, n := range b.MainFn.Nodes {
		if p, ok := n.Data.(*convNode); ok {
			res = append(res, p.kernelReversed)
		}
	}
	return res
}
