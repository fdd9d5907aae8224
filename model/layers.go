package model

import (
	"github.com/gomlx/compute"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/layers/activation"
)

// Node is a GoMLX graph node.
type Node = graph.Node

// conv1x1 is a 1x1 stride-1 convolution of x [N,H,W,Cin] with w
// [1,1,Cin,Cout]: one matrix product of the positions' rows (its gradients
// are two plain products), used where a graph is trained (the CAM head, the
// pixel correlation module's projections and a 1x1 stride-1 layer in
// training; see useConvGeneral).
func conv1x1(x, w *Node) *Node {
	d, wd := x.Shape().Dimensions, w.Shape().Dimensions
	y := graph.MatMul(graph.Reshape(x, d[0]*d[1]*d[2], d[3]), graph.Reshape(w, wd[2], wd[3]))
	return graph.Reshape(y, d[0], d[1], d[2], wd[3])
}

// convGeometry is the sizes of a "same"-padded convolution of x [N,H,W,Cin]
// with w [K,K,Cin,Cout].
type convGeometry struct {
	n, h, w, cin, k, cout int
	pad                   int // each side: dilation*(K-1)/2
	ho, wo                int // output size
}

func newConvGeometry(x, w *Node, stride, dilation int) convGeometry {
	dims, wdims := x.Shape().Dimensions, w.Shape().Dimensions
	g := convGeometry{n: dims[0], h: dims[1], w: dims[2], cin: dims[3], k: wdims[0], cout: wdims[3]}
	g.pad = dilation * (g.k - 1) / 2
	g.ho = (g.h+2*g.pad-dilation*(g.k-1)-1)/stride + 1
	g.wo = (g.w+2*g.pad-dilation*(g.k-1)-1)/stride + 1
	return g
}

// maxPool3x3s2 is a 3x3 max pool with stride 2 and padding 1 (PyTorch's
// MaxPool2d(3, 2, 1), the ResNet stem's) of x [N,H,W,C] whose values are
// >= 0 (after a ReLU), so zero padding cannot win the max.
//
// Written by hand on one Gather: the backend's ReduceWindow
// (graph.MaxPool) walks the window with a generic per-element iterator,
// which took 43% of a resnet18 inference (and its gradient, SelectAndScatter,
// another 7% of a training step) in a CPU profile. Here the nine taps of
// the stride-2-folded input are gathered as runs of C values and reduced
// with one ReduceMax.
func maxPool3x3s2(x *Node) *Node {
	dims := x.Shape().Dimensions
	n, h, w, c := dims[0], dims[1], dims[2], dims[3]
	ho, wo := (h-1)/2+1, (w-1)/2+1
	hp, wp := roundUp(max(h+2, 2*ho+2), 2), roundUp(max(w+2, 2*wo+2), 2)
	xp := graph.Pad(x, graph.ScalarZero(x.Graph(), x.DType()), compute.PadAxis{},
		compute.PadAxis{Start: 1, End: hp - h - 1}, compute.PadAxis{Start: 1, End: wp - w - 1}, compute.PadAxis{})
	folded := graph.Reshape(xp, n, hp/2, 2, wp/2, 2*c)
	starts := make([]int32, 0, 4*9)
	for dy := 0; dy < 3; dy++ {
		for dx := 0; dx < 3; dx++ {
			starts = append(starts, int32(dy/2), int32(dy%2), int32(dx/2), int32((dx%2)*c))
		}
	}
	start := graph.Reshape(graph.Const(x.Graph(), starts), 9, 4)
	taps := graph.GatherSlices(folded, []int{1, 2, 3, 4}, start, []int{ho, 1, wo, c}, true) // [9, N, Ho, 1, Wo, C]
	return graph.Reshape(graph.ReduceMax(taps, 0), n, ho, wo, c)
}

// maxPool3x3s2 is the ResNet stem's max pooling. In inference it is the
// backend's ReduceWindow, which the backend fork runs as a channels-last
// loop over each window's rows of C values, with no padded copy. In
// training it is the gather of the function maxPool3x3s2, whose gradient
// is a scatter-add (ReduceWindow's gradient, SelectAndScatter, walks every
// element).
func (b *layerBuilder) maxPool3x3s2(x *Node) *Node {
	if b.training {
		return maxPool3x3s2(x)
	}
	return graph.BackendReduceWindow(x, compute.ReduceOpMax, []int{1, 3, 3, 1}, []int{1, 2, 2, 1}, nil, nil,
		[][2]int{{0, 0}, {1, 1}, {1, 1}, {0, 0}})
}

func roundUp(v, m int) int { return (v + m - 1) / m * m }

// bnEps and bnMomentum are batch normalisation's constants (PyTorch's).
const (
	bnEps      = 1e-5
	bnMomentum = 0.1
)

// layerBuilder builds one network's graph under a name prefix.
type layerBuilder struct {
	ps       *paramSource
	prefix   string
	training bool
	frozenBN bool // batch norm uses and keeps its running statistics
	group    Group
	// mask, in padded inference, zeroes the padding before every layer
	// that reads neighbours (nil: the input is not padded).
	mask *padMask
	// folded, in inference, takes batch normalisation as folded into the
	// convolution before it: the convolution's weights are scaled, and
	// the normalisation is one added shift (see foldBatchNorm).
	folded bool
}

func (b *layerBuilder) name(n string) string { return b.prefix + n }

// conv adds a KxK convolution without bias.
func (b *layerBuilder) conv(name string, x *Node, k, cout, stride, dilation int) *Node {
	cin := x.Shape().Dimensions[3]
	w := b.ps.get(ParamSpec{Name: b.name(name + "/w"), Shape: []int{k, k, cin, cout}, Init: InitHe, FanIn: k * k * cin, Group: b.group})
	if k > 1 {
		x = b.mask.apply(x)
	}
	if useConvGeneral(k, stride, b.training) {
		return conv2DGeneral(x, w, stride, dilation)
	}
	return conv1x1(x, w)
}

// batchNorm normalises over N,H,W with batch statistics when training
// (recording new running averages) and running statistics otherwise. In
// training it is the backend's BatchNormForTraining op (its gradient
// BatchNormGradient; the Go backend fork implements both), or the same
// arithmetic as element-wise ops where the backend lacks them
// (batchNormGraph); frozen or in inference, a scale and a shift per
// channel.
func (b *layerBuilder) batchNorm(name string, x *Node) *Node {
	c := x.Shape().Dimensions[3]
	if b.folded {
		shift := b.ps.get(ParamSpec{Name: b.name(name + foldedShift), Shape: []int{c}, Init: InitZeros, Group: b.group, Bias: true})
		return graph.Add(x, graph.Reshape(shift, 1, 1, 1, c))
	}
	// Frozen scales and shifts are state: kept, not trained.
	gamma := b.ps.get(ParamSpec{Name: b.name(name + "/gamma"), Shape: []int{c}, Init: InitOnes, Group: b.group, State: b.frozenBN})
	beta := b.ps.get(ParamSpec{Name: b.name(name + "/beta"), Shape: []int{c}, Init: InitZeros, Group: b.group, Bias: true, State: b.frozenBN})
	rmName, rvName := b.name(name+"/mean"), b.name(name+"/var")
	rm := b.ps.get(ParamSpec{Name: rmName, Shape: []int{c}, Init: InitZeros, Group: b.group, State: true})
	rv := b.ps.get(ParamSpec{Name: rvName, Shape: []int{c}, Init: InitOnes, Group: b.group, State: true})
	if b.training && !b.frozenBN {
		// The op normalises with the batch statistics in two passes over x,
		// and its gradient takes two more, where the element-wise form
		// makes about a dozen (TestBatchNormTrainingMatchesGraph compares
		// the two).
		var y, mean, variance *Node
		if hasBatchNormOps(x.Graph().Backend()) {
			y, mean, variance = graph.InternalBatchNormForTraining(x, gamma, beta, bnEps, 3)
		} else {
			y, mean, variance = batchNormGraph(x, gamma, beta)
		}
		m := graph.ConstAs(mean, bnMomentum)
		keep := graph.ConstAs(mean, 1-bnMomentum)
		b.ps.setState(rmName, graph.StopGradient(graph.Add(graph.Mul(keep, rm), graph.Mul(m, mean))))
		b.ps.setState(rvName, graph.StopGradient(graph.Add(graph.Mul(keep, rv), graph.Mul(m, variance))))
		return y
	}
	mean, variance := rm, rv
	scale := graph.Div(gamma, graph.Sqrt(graph.Add(variance, graph.ConstAs(variance, bnEps))))
	shift := graph.Sub(beta, graph.Mul(mean, scale))
	return graph.Add(graph.Mul(x, graph.Reshape(scale, 1, 1, 1, c)), graph.Reshape(shift, 1, 1, 1, c))
}

// hasBatchNormOps reports whether backend implements batch normalisation
// for training and its gradient as ops (the Go backend fork does; the
// upstream Go backend, v0.1.14, does not).
func hasBatchNormOps(backend compute.Backend) bool {
	ops := backend.Capabilities().Operations
	return ops[compute.OpTypeBatchNormForTraining] && ops[compute.OpTypeBatchNormGradient]
}

// batchNormGraph is batch normalisation over N,H,W of a channels-last x
// with the batch statistics, as element-wise graph ops (the biased
// variance, as the op and PyTorch normalise with): the normalised x, the
// batch mean and the batch variance. Its gradient is the graph's.
func batchNormGraph(x, gamma, beta *Node) (y, mean, variance *Node) {
	c := x.Shape().Dimensions[3]
	mean = graph.ReduceMean(x, 0, 1, 2)
	variance = graph.ReduceMean(graph.Square(graph.Sub(x, graph.Reshape(mean, 1, 1, 1, c))), 0, 1, 2)
	scale := graph.Div(gamma, graph.Sqrt(graph.Add(variance, graph.ConstAs(variance, bnEps))))
	shift := graph.Sub(beta, graph.Mul(mean, scale))
	y = graph.Add(graph.Mul(x, graph.Reshape(scale, 1, 1, 1, c)), graph.Reshape(shift, 1, 1, 1, c))
	return y, mean, variance
}

// relu is ReLU where a gradient is wanted: the backend's fused activation,
// one pass forward and one backward, where the gradient of Max(x, 0) is a
// sign, a subtraction, two products and more. Its gradient at 0 is 0, as
// PyTorch's.
func relu(x *Node) *Node { return activation.Relu(x) }

// relu is the builder's ReLU: relu in training, Max(x, 0) in inference,
// which the Go backend computes in place on its input's buffer, split
// across the workers (the fused activation writes a new buffer).
func (b *layerBuilder) relu(x *Node) *Node {
	if b.training {
		return relu(x)
	}
	return graph.Max(x, graph.ScalarZero(x.Graph(), x.DType()))
}

// convBN is conv, batch norm and optionally ReLU.
func (b *layerBuilder) convBN(name string, x *Node, k, cout, stride, dilation int, act bool) *Node {
	y := b.batchNorm(name+"/bn", b.conv(name, x, k, cout, stride, dilation))
	if act {
		y = b.relu(y)
	}
	return y
}

// useConvGeneral reports whether a layer is one backend ConvGeneral op
// (true) or a MatMul over its channels (false, 1x1 stride-1 layers in
// training only). The backend fork runs ConvGeneral and its gradients on
// its fastest paths, and a 1x1 stride-1 layer in inference multiplies its
// input rows in place. In training such a layer is a MatMul, whose
// gradients are two plain products and which the fork runs as fast.
func useConvGeneral(k, stride int, training bool) bool {
	if training {
		return k > 1 || stride > 1
	}
	return true
}

// nhwcAxes is the channels-last layout of a convolution's operands for the
// backend's ConvGeneral: input [N,H,W,Cin], kernel [K,K,Cin,Cout], output
// [N,Ho,Wo,Cout].
var nhwcAxes = graph.ConvolveAxesConfig{
	InputBatch: 0, InputChannels: 3, InputSpatial: []int{1, 2},
	KernelInputChannels: 2, KernelOutputChannels: 3, KernelSpatial: []int{0, 1},
	OutputBatch: 0, OutputChannels: 3, OutputSpatial: []int{1, 2},
}

// conv2DGeneral is a KxK convolution of x [N,H,W,Cin] with w [K,K,Cin,Cout]
// (zero "same" padding, the given stride and dilation; the values of
// conv2DGraph, the tests' reference, to float tolerance) as one backend
// ConvGeneral op. The backend fork runs it, and the ConvGeneral ops of its
// gradients (the input gradient: a convolution of the output gradient with
// the flipped kernel, input-dilated for strides; the kernel gradient:
// im2col(x)^T dy), as im2col matrix multiplications with an unpacked-lhs
// tile kernel, 3x3 stride-1 layers of 64-128 channels as Winograd F(2x2,
// 3x3), strided input gradients by stride phases (third_party/compute's
// FORK.md), which skips the graph-level padded copy, its full-size im2col
// gather and the gather's scatter-add gradient.
func conv2DGeneral(x, w *Node, stride, dilation int) *Node {
	g := newConvGeometry(x, w, stride, dilation)
	pad := g.pad
	return graph.ConvGeneral(x, w, nhwcAxes, []int{stride, stride}, [][2]int{{pad, pad}, {pad, pad}},
		nil, []int{dilation, dilation}, 1, 1)
}
