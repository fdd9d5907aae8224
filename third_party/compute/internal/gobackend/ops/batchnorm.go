// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops

import (
	"math"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/shapes"
	"github.com/pkg/errors"
)

func init() {
	gobackend.RegisterBatchNormForTraining.Register(BatchNormForTraining, gobackend.PriorityGeneric)
	gobackend.RegisterBatchNormGradient.Register(BatchNormGradient, gobackend.PriorityGeneric)
	gobackend.MultiOutputsNodeExecutors[compute.OpTypeBatchNormForTraining] = execBatchNormForTraining
	gobackend.MultiOutputsNodeExecutors[compute.OpTypeBatchNormGradient] = execBatchNormGradient
}

// batchNormNode is the data of a BatchNormForTraining or BatchNormGradient
// node.
type batchNormNode struct {
	epsilon     float32
	featureAxis int
}

// BatchNormForTraining normalizes operand over every axis but featureAxis
// with the batch's statistics: normalized = (operand - mean) /
// sqrt(variance + epsilon) * scale + offset, where mean and variance (the
// biased variance) are per feature and also returned. Float32 and float64.
//
// A model written with element-wise ops instead (a reduction for the mean,
// one for the variance, the scaling and the shift, and their gradients)
// makes about a dozen passes over the activations per layer forward and
// backward; this op and BatchNormGradient make four.
func BatchNormForTraining(f *gobackend.Function, operand, scale, offset compute.Value, epsilon float32, featureAxis int) (
	normalized, batchMean, batchVariance compute.Value, err error) {
	opType := compute.OpTypeBatchNormForTraining
	inputs, err := f.VerifyAndCastValues(opType.String(), operand, scale, offset)
	if err != nil {
		return nil, nil, nil, err
	}
	x := inputs[0]
	featureShape, err := checkBatchNormShapes(opType, x.Shape, featureAxis, inputs[1:]...)
	if err != nil {
		return nil, nil, nil, err
	}
	node := f.NewMultiOutputsNode(opType, []shapes.Shape{x.Shape.Clone(), featureShape, featureShape}, inputs...)
	node.Data = &batchNormNode{epsilon: epsilon, featureAxis: featureAxis}
	return node.MultiOutputsNodes[0], node.MultiOutputsNodes[1], node.MultiOutputsNodes[2], nil
}

// BatchNormGradient is the gradient of BatchNormForTraining, given the
// batch's mean and variance and the gradient of its normalized output:
// the gradients of the operand (through the batch statistics as well),
// of the scale and of the offset.
func BatchNormGradient(f *gobackend.Function, operand, scale, mean, variance, gradOutput compute.Value, epsilon float32, featureAxis int) (
	gradOperand, gradScale, gradOffset compute.Value, err error) {
	opType := compute.OpTypeBatchNormGradient
	inputs, err := f.VerifyAndCastValues(opType.String(), operand, scale, mean, variance, gradOutput)
	if err != nil {
		return nil, nil, nil, err
	}
	x := inputs[0]
	featureShape, err := checkBatchNormShapes(opType, x.Shape, featureAxis, inputs[1:4]...)
	if err != nil {
		return nil, nil, nil, err
	}
	if !inputs[4].Shape.Equal(x.Shape) {
		return nil, nil, nil, errors.Errorf("%s: gradOutput shape %s differs from operand shape %s", opType, inputs[4].Shape, x.Shape)
	}
	node := f.NewMultiOutputsNode(opType, []shapes.Shape{x.Shape.Clone(), featureShape, featureShape}, inputs...)
	node.Data = &batchNormNode{epsilon: epsilon, featureAxis: featureAxis}
	return node.MultiOutputsNodes[0], node.MultiOutputsNodes[1], node.MultiOutputsNodes[2], nil
}

// checkBatchNormShapes checks the operand's dtype and feature axis and that
// every per-feature input is a vector of the feature axis' size, of the
// operand's dtype. It returns that vector's shape.
func checkBatchNormShapes(opType compute.OpType, operand shapes.Shape, featureAxis int, perFeature ...*gobackend.Node) (shapes.Shape, error) {
	if operand.DType != dtypes.Float32 && operand.DType != dtypes.Float64 {
		return shapes.Shape{}, errors.Errorf("%s: dtype %s not supported (float32 or float64)", opType, operand.DType)
	}
	if featureAxis < 0 || featureAxis >= operand.Rank() {
		return shapes.Shape{}, errors.Errorf("%s: feature axis %d out of range for operand shape %s", opType, featureAxis, operand)
	}
	featureShape := shapes.Make(operand.DType, operand.Dimensions[featureAxis])
	for i, in := range perFeature {
		if !in.Shape.Equal(featureShape) {
			return shapes.Shape{}, errors.Errorf("%s: input #%d has shape %s, want %s (operand %s, feature axis %d)",
				opType, i+1, in.Shape, featureShape, operand, featureAxis)
		}
	}
	return featureShape, nil
}

// bnLayout views an operand as [outer, c, inner]: c features, each a run
// of inner contiguous values in each of outer blocks. Channels-last
// operands (inner == 1) are rows of c values.
type bnLayout struct{ outer, c, inner int }

func newBNLayout(s shapes.Shape, featureAxis int) bnLayout {
	l := bnLayout{outer: 1, c: s.Dimensions[featureAxis], inner: 1}
	for i, d := range s.Dimensions {
		switch {
		case i < featureAxis:
			l.outer *= d
		case i > featureAxis:
			l.inner *= d
		}
	}
	return l
}

// bnBlockRows is how many rows of a channels-last operand one partial sum
// covers: the row kernels accumulate in the operand's dtype within a
// block, the blocks are added up in float64.
const bnBlockRows = 256

// blocks is the number of partial sums: row blocks of a channels-last
// operand, else one per outer index.
func (l bnLayout) blocks() int {
	if l.inner == 1 {
		return (l.outer + bnBlockRows - 1) / bnBlockRows
	}
	return l.outer
}

// count is the number of values each feature is normalized over.
func (l bnLayout) count() int { return l.outer * l.inner }

// bnRowKernels are the passes over rows of c channels (a channels-last
// operand); their scalar versions are below, the simd build replaces the
// float32 ones.
type bnRowKernels[T float32 | float64] struct {
	// stats adds to s1 and s2 the sums of x - shift and of its square.
	stats func(x []T, rows, c int, shift, s1, s2 []T)
	// affine sets dst = x*a + b.
	affine func(dst, x []T, rows, c int, a, b []T)
	// gradStats adds to s1 and s2 the sums of dy and of dy*(x - mean).
	gradStats func(x, dy []T, rows, c int, mean, s1, s2 []T)
	// gradApply sets dst = dy*a + x*b + d.
	gradApply func(dst, dy, x []T, rows, c int, a, b, d []T)
}

var (
	bnFloat32Kernels = scalarBNKernels[float32]()
	bnFloat64Kernels = scalarBNKernels[float64]()
)

func scalarBNKernels[T float32 | float64]() bnRowKernels[T] {
	return bnRowKernels[T]{
		stats: func(x []T, rows, c int, shift, s1, s2 []T) {
			for r := range rows {
				for j, v := range x[r*c : (r+1)*c] {
					d := v - shift[j]
					s1[j] += d
					s2[j] += d * d
				}
			}
		},
		affine: func(dst, x []T, rows, c int, a, b []T) {
			for r := range rows {
				row := x[r*c : (r+1)*c]
				out := dst[r*c : (r+1)*c]
				for j, v := range row {
					out[j] = v*a[j] + b[j]
				}
			}
		},
		gradStats: func(x, dy []T, rows, c int, mean, s1, s2 []T) {
			for r := range rows {
				xs, gs := x[r*c:(r+1)*c], dy[r*c:(r+1)*c]
				for j, g := range gs {
					s1[j] += g
					s2[j] += g * (xs[j] - mean[j])
				}
			}
		},
		gradApply: func(dst, dy, x []T, rows, c int, a, b, d []T) {
			for r := range rows {
				xs, gs, out := x[r*c:(r+1)*c], dy[r*c:(r+1)*c], dst[r*c:(r+1)*c]
				for j, g := range gs {
					out[j] = g*a[j] + xs[j]*b[j] + d[j]
				}
			}
		},
	}
}

// bnPartials sums, over the operand's blocks (in parallel), two per-feature
// quantities that blockSums computes for one block into its s1 and s2 (in
// T, zeroed), and returns their totals in float64. The blocks' partials
// are added in block order, so the result does not depend on the split
// between workers.
func bnPartials[T float32 | float64](backend *gobackend.Backend, l bnLayout, blockSums func(block int, s1, s2 []T)) (t1, t2 []float64) {
	nb := l.blocks()
	t1, t2 = make([]float64, l.c), make([]float64, l.c)
	if nb == 0 { // an empty operand
		return t1, t2
	}
	partials := make([]T, nb*2*l.c)
	minBlocks := max(1, parallelMinElements/max(1, l.count()*l.c/nb))
	parallelRanges(backend, nb, minBlocks, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			p := partials[b*2*l.c : (b+1)*2*l.c]
			blockSums(b, p[:l.c], p[l.c:])
		}
	})
	for b := range nb {
		p := partials[b*2*l.c : (b+1)*2*l.c]
		for j := range l.c {
			t1[j] += float64(p[j])
			t2[j] += float64(p[l.c+j])
		}
	}
	return t1, t2
}

// bnBlock calls rows(r0, n) for a channels-last block (rows r0..r0+n of
// the operand) or run(o) for the block of outer index o.
func (l bnLayout) bnBlock(block int, rows func(r0, n int), runs func(o int)) {
	if l.inner == 1 {
		r0 := block * bnBlockRows
		rows(r0, min(bnBlockRows, l.outer-r0))
		return
	}
	runs(block)
}

// bnApply calls rows or runs, as bnBlock, over every block, in parallel.
func (l bnLayout) bnApply(backend *gobackend.Backend, rows func(r0, n int), runs func(o int)) {
	nb := l.blocks()
	if nb == 0 {
		return
	}
	minBlocks := max(1, parallelMinElements/max(1, l.count()*l.c/nb))
	parallelRanges(backend, nb, minBlocks, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			l.bnBlock(b, rows, runs)
		}
	})
}

// outputOrReuse returns the buffer of input i when it may be overwritten
// (marking it taken), else a new buffer of its shape.
func outputOrReuse(backend *gobackend.Backend, inputs []*gobackend.Buffer, owned []bool, i int, s shapes.Shape) (*gobackend.Buffer, error) {
	if owned[i] {
		b := inputs[i]
		inputs[i] = nil
		return b, nil
	}
	return backend.GetBuffer(s)
}

func execBatchNormForTraining(backend *gobackend.Backend, node *gobackend.Node, inputs []*gobackend.Buffer, owned []bool) ([]*gobackend.Buffer, error) {
	switch node.MultiOutputsShapes[0].DType {
	case dtypes.Float32:
		return batchNormForTraining(backend, node, inputs, owned, bnFloat32Kernels)
	case dtypes.Float64:
		return batchNormForTraining(backend, node, inputs, owned, bnFloat64Kernels)
	}
	return nil, errors.Errorf("BatchNormForTraining: dtype %s not supported", node.MultiOutputsShapes[0].DType)
}

func batchNormForTraining[T float32 | float64](backend *gobackend.Backend, node *gobackend.Node, inputs []*gobackend.Buffer, owned []bool,
	k bnRowKernels[T]) ([]*gobackend.Buffer, error) {
	p := node.Data.(*batchNormNode)
	l := newBNLayout(inputs[0].RawShape, p.featureAxis)
	x, scale, offset := inputs[0].Flat.([]T), inputs[1].Flat.([]T), inputs[2].Flat.([]T)
	meanBuf, err := backend.GetBuffer(node.MultiOutputsShapes[1])
	if err != nil {
		return nil, err
	}
	varBuf, err := backend.GetBuffer(node.MultiOutputsShapes[2])
	if err != nil {
		return nil, err
	}
	// Sums of x - shift with a shift near the mean (the first value of
	// each feature) keep the variance from cancelling away when the mean is
	// large against the spread.
	shift := make([]T, l.c)
	if len(x) > 0 {
		for j := range l.c {
			shift[j] = x[j*l.inner]
		}
	}
	s1, s2 := bnPartials(backend, l, func(block int, a1, a2 []T) {
		l.bnBlock(block,
			func(r0, n int) { k.stats(x[r0*l.c:(r0+n)*l.c], n, l.c, shift, a1, a2) },
			func(o int) {
				for j := range l.c {
					run := x[(o*l.c+j)*l.inner : (o*l.c+j+1)*l.inner]
					for _, v := range run {
						d := v - shift[j]
						a1[j] += d
						a2[j] += d * d
					}
				}
			})
	})
	mean, variance := meanBuf.Flat.([]T), varBuf.Flat.([]T)
	a, b := make([]T, l.c), make([]T, l.c)
	n := float64(l.count())
	for j := range l.c {
		d := s1[j] / n
		m := float64(shift[j]) + d
		v := max(0, s2[j]/n-d*d)
		mean[j], variance[j] = T(m), T(v)
		inv := float64(scale[j]) / math.Sqrt(v+float64(p.epsilon))
		a[j], b[j] = T(inv), T(float64(offset[j])-m*inv)
	}
	out, err := outputOrReuse(backend, inputs, owned, 0, node.MultiOutputsShapes[0])
	if err != nil {
		return nil, err
	}
	y := out.Flat.([]T)
	l.bnApply(backend,
		func(r0, n int) { k.affine(y[r0*l.c:(r0+n)*l.c], x[r0*l.c:(r0+n)*l.c], n, l.c, a, b) },
		func(o int) {
			for j := range l.c {
				lo, hi := (o*l.c+j)*l.inner, (o*l.c+j+1)*l.inner
				for i, v := range x[lo:hi] {
					y[lo+i] = v*a[j] + b[j]
				}
			}
		})
	return []*gobackend.Buffer{out, meanBuf, varBuf}, nil
}

func execBatchNormGradient(backend *gobackend.Backend, node *gobackend.Node, inputs []*gobackend.Buffer, owned []bool) ([]*gobackend.Buffer, error) {
	switch node.MultiOutputsShapes[0].DType {
	case dtypes.Float32:
		return batchNormGradient(backend, node, inputs, owned, bnFloat32Kernels)
	case dtypes.Float64:
		return batchNormGradient(backend, node, inputs, owned, bnFloat64Kernels)
	}
	return nil, errors.Errorf("BatchNormGradient: dtype %s not supported", node.MultiOutputsShapes[0].DType)
}

// batchNormGradient: with xhat = (x - mean) * inv, inv = 1/sqrt(variance +
// epsilon) and N values per feature, gradOffset = sum(dy), gradScale =
// sum(dy * xhat) and gradOperand = scale * inv * (dy - gradOffset/N -
// xhat * gradScale/N), which is one pass dy*a + x*b + d with per-feature
// a, b and d.
func batchNormGradient[T float32 | float64](backend *gobackend.Backend, node *gobackend.Node, inputs []*gobackend.Buffer, owned []bool,
	k bnRowKernels[T]) ([]*gobackend.Buffer, error) {
	p := node.Data.(*batchNormNode)
	l := newBNLayout(inputs[0].RawShape, p.featureAxis)
	x, scale, mean, variance, dy := inputs[0].Flat.([]T), inputs[1].Flat.([]T), inputs[2].Flat.([]T), inputs[3].Flat.([]T), inputs[4].Flat.([]T)
	s1, s2 := bnPartials(backend, l, func(block int, a1, a2 []T) {
		l.bnBlock(block,
			func(r0, n int) { k.gradStats(x[r0*l.c:(r0+n)*l.c], dy[r0*l.c:(r0+n)*l.c], n, l.c, mean, a1, a2) },
			func(o int) {
				for j := range l.c {
					lo, hi := (o*l.c+j)*l.inner, (o*l.c+j+1)*l.inner
					for i, g := range dy[lo:hi] {
						a1[j] += g
						a2[j] += g * (x[lo+i] - mean[j])
					}
				}
			})
	})
	scaleBuf, err := backend.GetBuffer(node.MultiOutputsShapes[1])
	if err != nil {
		return nil, err
	}
	offsetBuf, err := backend.GetBuffer(node.MultiOutputsShapes[2])
	if err != nil {
		return nil, err
	}
	gradScale, gradOffset := scaleBuf.Flat.([]T), offsetBuf.Flat.([]T)
	a, b, d := make([]T, l.c), make([]T, l.c), make([]T, l.c)
	n := float64(l.count())
	for j := range l.c {
		inv := 1 / math.Sqrt(float64(variance[j])+float64(p.epsilon))
		gradOffset[j] = T(s1[j])
		gradScale[j] = T(s2[j] * inv)
		aj := float64(scale[j]) * inv
		bj := -aj * inv * inv * s2[j] / n
		a[j], b[j] = T(aj), T(bj)
		d[j] = T(-aj*s1[j]/n - bj*float64(mean[j]))
	}
	// dy is read at the same index as each value is written: it may be the
	// output.
	out, err := outputOrReuse(backend, inputs, owned, 4, node.MultiOutputsShapes[0])
	if err != nil {
		return nil, err
	}
	dx := out.Flat.([]T)
	l.bnApply(backend,
		func(r0, n int) {
			k.gradApply(dx[r0*l.c:(r0+n)*l.c], dy[r0*l.c:(r0+n)*l.c], x[r0*l.c:(r0+n)*l.c], n, l.c, a, b, d)
		},
		func(o int) {
			for j := range l.c {
				lo, hi := (o*l.c+j)*l.inner, (o*l.c+j+1)*l.inner
				for i, g := range dy[lo:hi] {
					dx[lo+i] = g*a[j] + x[lo+i]*b[j] + d[j]
				}
			}
		})
	return []*gobackend.Buffer{out, scaleBuf, offsetBuf}, nil
}
