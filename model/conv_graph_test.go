package model

// The graph-level convolution: an im2col of Gather ops and a MatMul, which
// the model used before the backend fork ran convolutions as one
// ConvGeneral op. It stays as the tests' independent reference for
// conv2DGeneral's values and gradients (autodiff of gathers and a product),
// and BenchmarkConv compares the two.

import (
	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
)

// conv2DGraph is a KxK convolution of x [N,H,W,Cin] with w [K,K,Cin,Cout], zero
// "same" padding (dilation*(K-1)/2 a side), the given stride and dilation.
//
// It is written on MatMul and Gather alone, independently of the backend's
// ConvGeneral, so that it can serve as ConvGeneral's reference. Undilated convolutions of 8 or more input channels
// gather each window as one rectangle straight into the im2col matrix
// (conv2DRect: no transpose); the others (the 3-channel stem, dilated
// layers) are im2col done by one Gather of taps: the K*K shifted (and
// strided) windows of the padded input are gathered straight into
// [N, Ho, Wo, K*K, Cin] layout, which is then one MatMul with the weights
// as [K*K*Cin, Cout]. A Gather copies contiguous runs of Cin values with
// memmove, and its gradient is a scatter-add of the same runs, where the
// backend's Slice copies element by element and the transposes an Einsum
// would need are slow; BenchmarkConv measures the result against a plain
// MatMul of the same size.
//
// Strides are handled by folding the stride phases into the layout first
// (space-to-depth by reshape: [N, Hp/s, s, Wp/s, s*Cin]), so that every
// window is again a plain offset in the gathered tensor (and, for K > 1 and
// few input channels, whole column groups are gathered: see
// conv2DStrided).
func conv2DGraph(x, w *Node, stride, dilation int) *Node {
	dims := x.Shape().Dimensions
	n, h, wd, cin := dims[0], dims[1], dims[2], dims[3]
	wdims := w.Shape().Dimensions
	k, cout := wdims[0], wdims[3]
	if k == 1 && stride == 1 {
		y := graph.MatMul(graph.Reshape(x, n*h*wd, cin), graph.Reshape(w, cin, cout))
		return graph.Reshape(y, n, h, wd, cout)
	}
	if dilation == 1 && cin >= groupedMaxChannels {
		return conv2DRect(x, w, stride, dilation)
	}
	return conv2DTaps(x, w, stride, dilation)
}

// conv2DTaps is conv2DGraph by a gather of the K*K taps' windows, transposed
// into the im2col matrix.
func conv2DTaps(x, w *Node, stride, dilation int) *Node {
	g := newConvGeometry(x, w, stride, dilation)
	n, h, wd, cin, k, cout, pad, ho, wo := g.n, g.h, g.w, g.cin, g.k, g.cout, g.pad, g.ho, g.wo
	// Pad to whole multiples of the stride, covering every window.
	hp := roundUp(max(h+2*pad, (ho-1)*stride+dilation*(k-1)+1), stride)
	wp := roundUp(max(wd+2*pad, (wo-1)*stride+dilation*(k-1)+1), stride)
	grouped := stride > 1 && k > 1 && cin < groupedMaxChannels
	if grouped {
		// Whole stride groups of columns: every window row is then one
		// contiguous run (see conv2DStrided).
		groups := (k-1)*dilation/stride + 1
		if wp2 := stride * (wo + groups - 1); wp2 > wp {
			wp = wp2
		}
	}
	xp := x
	if hp != h || wp != wd {
		xp = graph.Pad(x, graph.ScalarZero(x.Graph(), x.DType()), compute.PadAxis{},
			compute.PadAxis{Start: pad, End: hp - h - pad}, compute.PadAxis{Start: pad, End: wp - wd - pad}, compute.PadAxis{})
	}
	folded := graph.Reshape(xp, n, hp/stride, stride, wp/stride, stride*cin)
	if grouped {
		return conv2DStrided(folded, w, n, ho, wo, stride, dilation)
	}
	starts := make([]int32, 0, 4*k*k)
	for i := 0; i < k; i++ {
		for j := 0; j < k; j++ {
			dy, dx := i*dilation, j*dilation
			starts = append(starts, int32(dy/stride), int32(dy%stride), int32(dx/stride), int32((dx%stride)*cin))
		}
	}
	start := graph.Reshape(graph.Const(x.Graph(), starts), k*k, 4)
	// [K*K, N, Ho, 1, Wo, Cin]: one window per tap.
	cols := graph.GatherSlices(folded, []int{1, 2, 3, 4}, start, []int{ho, 1, wo, cin}, true)
	// To im2col layout [N*Ho*Wo, K*K*Cin]: the [1,0,2] transpose is one of
	// the backend's fast ones, in both directions.
	cols = graph.TransposeAllAxes(graph.Reshape(cols, k*k, n*ho*wo, cin), 1, 0, 2)
	y := graph.MatMul(graph.Reshape(cols, n*ho*wo, k*k*cin), graph.Reshape(w, k*k*cin, cout))
	return graph.Reshape(y, n, ho, wo, cout)
}

// conv2DStrided is conv2DGraph for stride > 1 on the folded input
// [N, Hp/s, s, Wp/s, s*Cin]. Gathering one tap's window there copies runs
// of only Cin values (the other column phases sit in between), which is
// slow for few channels. Instead each window takes all s column phases of
// a column group: rows of Wo*s*Cin contiguous values. The groups cover
// column offsets 0 .. G*s-1, a little more than the K taps: the weights
// get zero rows for the offsets that are not taps (for 3x3 stride 2, 12
// columns for 9 taps), trading 33% more multiply-adds for far faster
// copies.
func conv2DStrided(folded, w *Node, n, ho, wo, stride, dilation int) *Node {
	wdims := w.Shape().Dimensions
	k, cin, cout := wdims[0], wdims[2], wdims[3]
	groups := (k-1)*dilation/stride + 1
	starts := make([]int32, 0, 4*k*groups)
	for i := 0; i < k; i++ {
		dy := i * dilation
		for g := 0; g < groups; g++ {
			starts = append(starts, int32(dy/stride), int32(dy%stride), int32(g), 0)
		}
	}
	start := graph.Reshape(graph.Const(folded.Graph(), starts), k*groups, 4)
	cols := graph.GatherSlices(folded, []int{1, 2, 3, 4}, start, []int{ho, 1, wo, stride * cin}, true)
	inner := k * groups * stride * cin
	cols = graph.TransposeAllAxes(graph.Reshape(cols, k*groups, n*ho*wo, stride*cin), 1, 0, 2)
	// Weights [K, G*s, Cin, Cout]: column offset c holds tap c/dilation
	// when c is a multiple of the dilation below K*dilation, else zeros.
	zero := graph.Zeros(w.Graph(), shapes.Make(w.DType(), k, 1, cin, cout))
	var wcols []*Node
	for c := 0; c < groups*stride; c++ {
		if j := c / dilation; c%dilation == 0 && j < k {
			wcols = append(wcols, graph.Slice(w, graph.AxisRange(), graph.AxisRange(j, j+1)))
		} else {
			wcols = append(wcols, zero)
		}
	}
	wt := graph.Reshape(graph.Concatenate(wcols, 1), inner, cout)
	y := graph.MatMul(graph.Reshape(cols, n*ho*wo, inner), wt)
	return graph.Reshape(y, n, ho, wo, cout)
}

// groupedMaxChannels bounds the input width for which strided
// convolutions gather whole column groups: the grouped gather pays for
// narrow inputs (the 3-channel stem), not for wide ones (BenchmarkConv).
const groupedMaxChannels = 8

// conv2DRect is conv2DGraph's path for undilated convolutions with 8 or more
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
