// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops

import (
	"slices"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
)

func init() {
	gobackend.RegisterTransformation(60, convKernelReverseFusion{})
}

// convKernelReverseFusion folds Reverse(kernel, 0, 1) into the ConvGeneral
// that reads it, when the kernel's spatial axes are its first two (the
// channels-last layout) and the convolution is its only user: a
// convolution's input gradient is such a convolution, of the forward
// kernel reversed in space (and its channels swapped). The convolution
// then reads the kernel's taps in reverse order while it lays the kernel
// out for the product (which copies it anyway when the channels are
// swapped), instead of the Reverse writing a reversed copy of every
// kernel on every training step. The values read are the same, so the
// results are the same bits.
type convKernelReverseFusion struct{}

// Name implements gobackend.GraphTransformation.
func (convKernelReverseFusion) Name() string { return "ConvKernelReverseFusion" }

// Apply implements gobackend.GraphTransformation.
func (convKernelReverseFusion) Apply(b *gobackend.Builder) (bool, error) {
	modified := false
	for _, f := range b.Functions {
		users, outputs := nodeUsers(f)
		for _, conv := range f.Nodes {
			if conv.OpType != compute.OpTypeConvGeneral || len(conv.Inputs) < 2 {
				continue
			}
			rev := conv.Inputs[1]
			p, ok := conv.Data.(*convNode)
			if !ok || p.kernelReversed || rev.OpType != compute.OpTypeReverse || len(users[rev]) != 1 || outputs[rev] || !reversesKernelSpace(rev, p) {
				continue
			}
			q := *p
			q.kernelReversed = true
			conv.Data = &q
			conv.Inputs[1] = rev.Inputs[0]
			modified = true
		}
	}
	return modified, nil
}

// reversesKernelSpace reports whether rev reverses exactly the first two
// axes of a float32 rank-4 kernel, and those are the convolution's
// kernel spatial axes.
func reversesKernelSpace(rev *gobackend.Node, p *convNode) bool {
	axes, ok := rev.Data.([]int)
	if !ok || rev.Shape.DType != dtypes.Float32 || rev.Shape.Rank() != 4 || rev.Shape.IsDynamic() ||
		!slices.Equal(p.axes.KernelSpatial, []int{0, 1}) {
		return false
	}
	sorted := slices.Sorted(slices.Values(axes))
	return slices.Equal(sorted, []int{0, 1})
}
