package model

import (
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
)

// padMask makes inference on a padded input give, on each element's real
// region, exactly what an unpadded run of that element gives.
//
// Inputs of varied sizes are padded at the bottom and right to one of a
// few canonical shapes (see Buckets), so that the number of compiled
// graphs stays bounded. Every convolution here is "same"-padded (pad
// d*(K-1)/2) and every pooling window too, so an h x w input gives a
// ceil(h/t) x ceil(w/t) feature map after a total stride t, and an output
// position of the real region reads only real positions and the zero
// padding beyond them. In a padded run, positions beyond the real region
// hold what batch-norm shifts and ReLUs made of the padding, not zeros:
// padMask zeroes them before every layer that looks at neighbours (KxK
// convolutions with K > 1 and max pooling). Point-wise layers (1x1
// convolutions, batch norm, ReLU, residual adds) only move garbage within
// the padded region, and a stride-2 1x1 convolution samples real
// positions for real outputs, so they need no mask.
type padMask struct {
	valid    *Node // [N, 2] float32: each element's real input height and width
	inH, inW int   // padded input size
	cache    map[[2]int]*Node
	// clean holds nodes known to be zero outside the real region (the
	// input, which the caller pads with zeros, and masked nodes).
	clean map[*Node]bool
}

func newPadMask(x, valid *Node) *padMask {
	d := x.Shape().Dimensions
	return &padMask{valid: valid, inH: d[1], inW: d[2], cache: map[[2]int]*Node{}, clean: map[*Node]bool{x: true}}
}

// strideOf returns the total stride t (a power of two) with ceil(in/t) ==
// out. When several fit (out == 1) the real size is 1 for every one.
func strideOf(in, out int) int {
	t := 1
	for (in+t-1)/t > out {
		t *= 2
	}
	return t
}

// at returns the [N, h, w, 1] mask of real positions of an h x w map.
func (m *padMask) at(n, h, w int) *Node {
	key := [2]int{h, w}
	if mk, ok := m.cache[key]; ok {
		return mk
	}
	g := m.valid.Graph()
	axis := func(col, in, out int) *Node {
		t := float32(strideOf(in, out))
		real := graph.Slice(m.valid, graph.AxisRange(), graph.AxisRange(col, col+1)) // [N, 1]
		real = graph.Ceil(graph.Div(real, graph.Scalar(g, dtypes.Float32, t)))
		pos := graph.Iota(g, shapes.Make(dtypes.Float32, 1, out), 1) // [1, out]
		return graph.ConvertDType(graph.LessThan(graph.BroadcastToDims(pos, n, out), graph.BroadcastToDims(real, n, out)), dtypes.Float32)
	}
	rows := graph.Reshape(axis(0, m.inH, h), n, h, 1, 1)
	cols := graph.Reshape(axis(1, m.inW, w), n, 1, w, 1)
	mk := graph.Mul(rows, cols)
	m.cache[key] = mk
	return mk
}

// apply zeroes x [N, h, w, C] outside each element's real region (a no-op
// without a mask, or for a node already zero there).
func (m *padMask) apply(x *Node) *Node {
	if m == nil || m.clean[x] {
		return x
	}
	d := x.Shape().Dimensions
	y := graph.Mul(x, m.at(d[0], d[1], d[2]))
	m.clean[y] = true
	return y
}

// mean averages x [N, h, w, C] over each element's real region: [N, C].
func (m *padMask) mean(x *Node) *Node {
	if m == nil {
		return graph.ReduceMean(x, 1, 2)
	}
	d := x.Shape().Dimensions
	mk := m.at(d[0], d[1], d[2])
	sum := graph.ReduceSum(graph.Mul(x, mk), 1, 2)                                           // [N, C]
	count := graph.Max(graph.ReduceSum(mk, 1, 2), graph.OnesLike(graph.ReduceSum(mk, 1, 2))) // [N, 1]
	return graph.Div(sum, count)
}
