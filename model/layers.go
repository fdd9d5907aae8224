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
// multiplication. Two formulations, both differentiable:
//   - per tap: the sum over the K*K taps of (a strided slice of the padded
//     input) x (that tap's [Cin,Cout] weights): no copy larger than the
//     input, best when channels are few and the image large;
//   - im2col: the K*K slices concatenated along channels and one MatMul
//     with [K*K*Cin, Cout]: one large product, best with many channels.
//
// The choice depends only on Cin (see im2colMinChannels), measured with
// BenchmarkConv.
func Conv2D(x, w *Node, stride, dilation int) *Node {
	dims := x.Shape().Dimensions
	n, h, wd, cin := dims[0], dims[1], dims[2], dims[3]
	wdims := w.Shape().Dimensions
	k, cout := wdims[0], wdims[3]
	if k == 1 {
		if stride > 1 {
			x = graph.Slice(x, graph.AxisRange(), graph.AxisRange().Stride(stride), graph.AxisRange().Stride(stride))
		}
		d := x.Shape().Dimensions
		y := graph.MatMul(graph.Reshape(x, d[0]*d[1]*d[2], cin), graph.Reshape(w, cin, cout))
		return graph.Reshape(y, d[0], d[1], d[2], cout)
	}
	pad := dilation * (k - 1) / 2
	ho := (h+2*pad-dilation*(k-1)-1)/stride + 1
	wo := (wd+2*pad-dilation*(k-1)-1)/stride + 1
	xp := graph.Pad(x, graph.ScalarZero(x.Graph(), x.DType()),
		compute.PadAxis{}, compute.PadAxis{Start: pad, End: pad}, compute.PadAxis{Start: pad, End: pad}, compute.PadAxis{})
	tap := func(i, j int) *Node {
		y0, x0 := i*dilation, j*dilation
		return graph.Slice(xp, graph.AxisRange(),
			graph.AxisRange(y0, y0+stride*(ho-1)+1).Stride(stride),
			graph.AxisRange(x0, x0+stride*(wo-1)+1).Stride(stride))
	}
	rows := n * ho * wo
	if cin >= im2colMinChannels {
		cols := make([]*Node, 0, k*k)
		for i := 0; i < k; i++ {
			for j := 0; j < k; j++ {
				cols = append(cols, tap(i, j))
			}
		}
		y := graph.MatMul(graph.Reshape(graph.Concatenate(cols, 3), rows, k*k*cin), graph.Reshape(w, k*k*cin, cout))
		return graph.Reshape(y, n, ho, wo, cout)
	}
	var sum *Node
	for i := 0; i < k; i++ {
		for j := 0; j < k; j++ {
			wt := graph.Reshape(graph.Slice(w, graph.AxisElem(i), graph.AxisElem(j)), cin, cout)
			y := graph.MatMul(graph.Reshape(tap(i, j), rows, cin), wt)
			if sum == nil {
				sum = y
			} else {
				sum = graph.Add(sum, y)
			}
		}
	}
	return graph.Reshape(sum, n, ho, wo, cout)
}

// im2colMinChannels is the input width from which Conv2D uses im2col.
const im2colMinChannels = 64

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
	scale := graph.Mul(gamma, graph.Rsqrt(graph.Add(variance, graph.ConstAs(variance, bnEps))))
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
