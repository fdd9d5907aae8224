package model

import (
	"github.com/gomlx/gomlx/core/graph"
)

// MultiLabelSoftMargin is PyTorch's multilabel_soft_margin_loss: the mean
// over batch and classes of y*softplus(-x) + (1-y)*softplus(x), for logits
// x [N, C] and 0/1 targets y [N, C].
func MultiLabelSoftMargin(logits, targets *Node) *Node {
	pos := graph.Mul(targets, graph.Softplus(graph.Neg(logits)))
	neg := graph.Mul(graph.OneMinus(targets), graph.Softplus(logits))
	return graph.ReduceAllMean(graph.Add(pos, neg))
}

// LocalTarget builds the attention-transfer target from the local
// network's CAMs, detached, exactly as the reference:
//  1. ReLU, then divide each channel by its spatial maximum (+1e-5);
//  2. zero the channels of classes absent from the image (present is
//     [M, C+1], 1 for the tagged classes and for background, the last);
//  3. keep, per pixel, only the argmax channel, and binarise it: 1 where it
//     is above bgThr, else 0;
//  4. shape transfer where a saliency map exists (hasSal [M] is 1): the
//     foreground channels are multiplied by the soft saliency sal [M,h,w]
//     (scaled to [0,1] by the image's saliency maximum) and the background
//     channel by 1 - sal.
//
// cam is [M, h, w, C+1]; the result has the same shape.
func LocalTarget(cam, present, sal, hasSal *Node, bgThr float64) *Node {
	cam = graph.StopGradient(cam)
	dims := cam.Shape().Dimensions
	m, h, w, k := dims[0], dims[1], dims[2], dims[3]
	r := relu(cam)
	mx := graph.ReduceAndKeep(r, graph.ReduceMax, 1, 2)
	norm := graph.Div(r, graph.Add(mx, graph.ConstAs(mx, 1e-5)))
	norm = graph.Mul(norm, graph.Reshape(present, m, 1, 1, k))
	best := graph.ReduceAndKeep(norm, graph.ReduceMax, 3)
	// The first channel reaching the maximum, as argmax picks it.
	argmax := graph.ArgMax(norm, 3)
	isArgmax := graph.Equal(graph.Iota(cam.Graph(), cam.Shape(), 3), graph.ConvertDType(graph.Reshape(argmax, m, h, w, 1), cam.DType()))
	keep := graph.LogicalAnd(isArgmax, graph.GreaterThan(best, graph.ConstAs(best, bgThr)))
	target := graph.Where(keep, graph.OnesLike(cam), graph.ZerosLike(cam))

	// Shape transfer: factor = [S, ..., S, 1-S] where a saliency map exists,
	// else 1.
	s := graph.Reshape(sal, m, h, w, 1)
	fg := graph.BroadcastToDims(s, m, h, w, k-1)
	factor := graph.Concatenate([]*Node{fg, graph.OneMinus(s)}, 3)
	use := graph.Reshape(hasSal, m, 1, 1, 1)
	factor = graph.Add(graph.Mul(use, factor), graph.OneMinus(use))
	return graph.StopGradient(graph.Mul(target, factor))
}

// AlignToViews crops and resizes the global CAMs feats [B, Hf, Wf, K] into
// every view's box with bilinear weights ry [B, V, h, Hf] and rx
// [B, V, w, Wf] (see maps.InterpMatrix): out[b,v,i,j] = sum over y, x of
// ry[b,v,i,y] * feats[b,y,x] * rx[b,v,j,x]. This is RoIAlign with one
// sample a bin; being two matrix products, it is differentiable in feats.
// The result is [B*V, h, w, K].
func AlignToViews(feats, ry, rx *Node) *Node {
	fd := feats.Shape().Dimensions
	b, hf, wf, k := fd[0], fd[1], fd[2], fd[3]
	rd := ry.Shape().Dimensions
	v, h := rd[1], rd[2]
	w := rx.Shape().Dimensions[2]
	// Rows: [B, V*h, Hf] x [B, Hf, Wf*K] -> [B, V*h, Wf*K].
	rows := graph.Einsum("bny,byz->bnz", graph.Reshape(ry, b, v*h, hf), graph.Reshape(feats, b, hf, wf*k))
	// Columns, batched over (b, v): [BV, w, Wf] x [BV, h, Wf, K].
	rows = graph.Reshape(rows, b*v, h, wf, k)
	out := graph.Einsum("njx,nixc->nijc", graph.Reshape(rx, b*v, w, wf), rows)
	return out
}

// TransferMSE is the reference's attention-transfer loss: weight times the
// mean squared error between the soft-maxed aligned global CAMs and the
// local target, over every element.
func TransferMSE(aligned, target *Node, weight float64) *Node {
	p := graph.Softmax(aligned, 3)
	return scale(graph.ReduceAllMean(graph.Square(graph.Sub(p, target))), weight)
}

// TransferKL is the paper's form: weight times the mean, over pixels
// whose target has any mass, of KL(t || p) with the target normalised to a
// distribution over the C+1 channels.
func TransferKL(aligned, target *Node, weight float64) *Node {
	logp := graph.LogSoftmax(aligned, 3)
	mass := graph.ReduceAndKeep(target, graph.ReduceSum, 3)
	valid := graph.ConvertDType(graph.GreaterThan(mass, graph.ConstAs(mass, 0)), target.DType())
	t := graph.Div(target, graph.Max(mass, graph.ConstAs(mass, 1e-12)))
	const eps = 1e-12
	kl := graph.ReduceSum(graph.Mul(t, graph.Sub(graph.Log(graph.Add(t, graph.ConstAs(t, eps))), logp)), 3)
	n := graph.Max(graph.ReduceAllSum(valid), graph.ScalarOne(mass.Graph(), mass.DType()))
	return scale(graph.Div(graph.ReduceAllSum(kl), n), weight)
}

func scale(x *Node, k float64) *Node { return graph.Mul(x, graph.ConstAs(x, k)) }
