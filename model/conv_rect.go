package model

import (
	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
)

// conv2DRect is Conv2D's path for undilated convolutions with 8 or more
// input channels (and, for tests and benchmarks, any convolution): im2col
// gathered straight into its matrix layout: with the input as [N, Hp, Wp*Cin], the K x K window of an
// undilated convolution at an output position is one rectangle (K rows of
// K*Cin contiguous values), so one GatherSlices with a start per output
// position gives [N*Ho*Wo, K*K*Cin] in the order of the weights
// [K, K, Cin, Cout], with no transpose, and the gather copies runs of
// K*Cin values. A dilated convolution is first split into its dilation
// phases (the input's d x d sub-images of every d-th row and column,
// each convolved undilated), which costs two copies of the input and
// output size instead of the K*K-times-larger im2col transpose.
func conv2DRect(x, w *Node, stride, dilation int) *Node {
	g := newConvGeometry(x, w, stride, dilation)
	n, h, wd, cin, k, cout, pad, ho, wo := g.n, g.h, g.w, g.cin, g.k, g.cout, g.pad, g.ho, g.wo
	if dilation == 1 {
		hp, wp := max(h+2*pad, (ho-1)*stride+k), max(wd+2*pad, (wo-1)*stride+k)
		xp := padHW(x, pad, hp-h-pad, pad, wp-wd-pad)
		return rectConv(xp, w, ho, wo, stride)
	}
	// Dilation phases: stride is 1 (the networks dilate only where they
	// stop striding).
	d := dilation
	hq, wq := ceilDiv(ho, d)+k-1, ceilDiv(wo, d)+k-1 // phase image size
	hp, wp := hq*d, wq*d
	xp := padHW(x, pad, hp-h-pad, pad, wp-wd-pad)
	phases := graph.Reshape(graph.TransposeAllAxes(graph.Reshape(xp, n, hq, d, wq, d, cin), 2, 4, 0, 1, 3, 5), d*d*n, hq, wq, cin)
	yq := rectConv(phases, w, hq-k+1, wq-k+1, 1) // [d*d*N, hq-k+1, wq-k+1, Cout]
	hy, wy := hq-k+1, wq-k+1
	y := graph.Reshape(graph.TransposeAllAxes(graph.Reshape(yq, d, d, n, hy, wy, cout), 2, 3, 0, 4, 1, 5), n, hy*d, wy*d, cout)
	return graph.Slice(y, graph.AxisRange(), graph.AxisRange(0, ho), graph.AxisRange(0, wo), graph.AxisRange())
}

// padHW zero-pads the spatial axes of x [N,H,W,C].
func padHW(x *Node, top, bottom, left, right int) *Node {
	if top == 0 && bottom == 0 && left == 0 && right == 0 {
		return x
	}
	return graph.Pad(x, graph.ScalarZero(x.Graph(), x.DType()), compute.PadAxis{},
		compute.PadAxis{Start: top, End: bottom}, compute.PadAxis{Start: left, End: right}, compute.PadAxis{})
}

// rectConv is the undilated convolution of a padded input xp [N, Hp, Wp,
// Cin] (valid: no more padding) to ho x wo outputs at a stride.
func rectConv(xp, w *Node, ho, wo, stride int) *Node {
	dims := xp.Shape().Dimensions
	n, hp, wp, cin := dims[0], dims[1], dims[2], dims[3]
	wdims := w.Shape().Dimensions
	k, cout := wdims[0], wdims[3]
	g := xp.Graph()
	// Start of each window: (image, first row, first flat column).
	shape := shapes.Make(dtypes.Int32, n, ho, wo, 1)
	starts := graph.Concatenate([]*Node{
		graph.Iota(g, shape, 0),
		graph.MulScalar(graph.Iota(g, shape, 1), stride),
		graph.MulScalar(graph.Iota(g, shape, 2), stride*cin),
	}, 3)
	flat := graph.Reshape(xp, n, hp, wp*cin)
	cols := graph.GatherSlices(flat, []int{0, 1, 2}, graph.Reshape(starts, n*ho*wo, 3), []int{1, k, k * cin}, true)
	y := graph.MatMul(graph.Reshape(cols, n*ho*wo, k*k*cin), graph.Reshape(w, k*k*cin, cout))
	return graph.Reshape(y, n, ho, wo, cout)
}
