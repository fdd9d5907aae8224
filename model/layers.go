package model

import (
	"github.com/gomlx/compute"
	"github.com/gomlx/gomlx/core/graph"
)

// Node is a GoMLX graph node.
type Node = graph.Node

// Conv2D is a KxK convolution of x [N,H,W,Cin] with w [K,K,Cin,Cout], zero
// "same" padding (dilation*(K-1)/2 a side), the given stride and dilation.
//
// It is written by hand on MatMul because the Go backend's native
// convolution is a direct loop about 40x slower than its SIMD matrix
// multiplication. It is im2col done by one Gather: the K*K shifted (and
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
// window is again a plain offset in the gathered tensor.
func Conv2D(x, w *Node, stride, dilation int) *Node {
	dims := x.Shape().Dimensions
	n, h, wd, cin := dims[0], dims[1], dims[2], dims[3]
	wdims := w.Shape().Dimensions
	k, cout := wdims[0], wdims[3]
	if k == 1 && stride == 1 {
		y := graph.MatMul(graph.Reshape(x, n*h*wd, cin), graph.Reshape(w, cin, cout))
		return graph.Reshape(y, n, h, wd, cout)
	}
	pad := dilation * (k - 1) / 2
	ho := (h+2*pad-dilation*(k-1)-1)/stride + 1
	wo := (wd+2*pad-dilation*(k-1)-1)/stride + 1
	// Pad to whole multiples of the stride, covering every window.
	hp := roundUp(max(h+2*pad, (ho-1)*stride+dilation*(k-1)+1), stride)
	wp := roundUp(max(wd+2*pad, (wo-1)*stride+dilation*(k-1)+1), stride)
	xp := x
	if hp != h || wp != wd {
		xp = graph.Pad(x, graph.ScalarZero(x.Graph(), x.DType()), compute.PadAxis{},
			compute.PadAxis{Start: pad, End: hp - h - pad}, compute.PadAxis{Start: pad, End: wp - wd - pad}, compute.PadAxis{})
	}
	folded := graph.Reshape(xp, n, hp/stride, stride, wp/stride, stride*cin)
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
	group    Group
}

func (b *layerBuilder) name(n string) string { return b.prefix + n }

// conv adds a KxK convolution without bias.
func (b *layerBuilder) conv(name string, x *Node, k, cout, stride, dilation int) *Node {
	cin := x.Shape().Dimensions[3]
	w := b.ps.get(ParamSpec{Name: b.name(name + "/w"), Shape: []int{k, k, cin, cout}, Init: InitHe, FanIn: k * k * cin, Group: b.group})
	return Conv2D(x, w, stride, dilation)
}

// batchNorm normalises over N,H,W with batch statistics when training
// (recording new running averages) and running statistics otherwise.
// Written by hand: the Go backend's batch-norm ops are not usable here.
func (b *layerBuilder) batchNorm(name string, x *Node) *Node {
	c := x.Shape().Dimensions[3]
	gamma := b.ps.get(ParamSpec{Name: b.name(name + "/gamma"), Shape: []int{c}, Init: InitOnes, Group: b.group})
	beta := b.ps.get(ParamSpec{Name: b.name(name + "/beta"), Shape: []int{c}, Init: InitZeros, Group: b.group, Bias: true})
	rmName, rvName := b.name(name+"/mean"), b.name(name+"/var")
	rm := b.ps.get(ParamSpec{Name: rmName, Shape: []int{c}, Init: InitZeros, Group: b.group, State: true})
	rv := b.ps.get(ParamSpec{Name: rvName, Shape: []int{c}, Init: InitOnes, Group: b.group, State: true})
	var mean, variance *Node
	if b.training {
		mean = graph.ReduceMean(x, 0, 1, 2)
		variance = graph.ReduceMean(graph.Square(graph.Sub(x, graph.Reshape(mean, 1, 1, 1, c))), 0, 1, 2)
		m := graph.ConstAs(mean, bnMomentum)
		keep := graph.ConstAs(mean, 1-bnMomentum)
		b.ps.setState(rmName, graph.StopGradient(graph.Add(graph.Mul(keep, rm), graph.Mul(m, mean))))
		b.ps.setState(rvName, graph.StopGradient(graph.Add(graph.Mul(keep, rv), graph.Mul(m, variance))))
	} else {
		mean, variance = rm, rv
	}
	scale := graph.Div(gamma, graph.Sqrt(graph.Add(variance, graph.ConstAs(variance, bnEps))))
	shift := graph.Sub(beta, graph.Mul(mean, scale))
	return graph.Add(graph.Mul(x, graph.Reshape(scale, 1, 1, 1, c)), graph.Reshape(shift, 1, 1, 1, c))
}

func relu(x *Node) *Node { return graph.Max(x, graph.ScalarZero(x.Graph(), x.DType())) }

// convBN is conv, batch norm and optionally ReLU.
func (b *layerBuilder) convBN(name string, x *Node, k, cout, stride, dilation int, act bool) *Node {
	y := b.batchNorm(name+"/bn", b.conv(name, x, k, cout, stride, dilation))
	if act {
		y = relu(y)
	}
	return y
}
