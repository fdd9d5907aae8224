// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops

import (
	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
)

func init() {
	// After ImplicitBroadcastFusion (100), which leaves the bias and the
	// ReLU's zero as the binary ops' direct operands.
	gobackend.RegisterTransformation(50, convEpilogueFusion{})
}

// convEpilogue is what a ConvGeneral node applies to its output after the
// convolution: a per-channel bias (its third input), then a residual of
// the output's shape added (its fourth input), then a ReLU.
type convEpilogue struct {
	bias, residual, relu bool
}

// convEpilogueFusion folds a float32 channels-last ConvGeneral's bias,
// residual and ReLU into the convolution: Add(conv, bias [1, ..., 1, C]);
// when that sum's only user is Add(sum, r) with r of the output's shape (a
// residual network's shortcut), that too; and when the last sum's only
// user is one, Max(sum, 0). They become one pass over the output right
// after the convolution (applyConvEpilogue), instead of up to three ops
// that each read and write the whole output (a network's batch
// normalisation folded for inference is such a bias). The convolution must
// have no other user. The pass adds in the ops' order, so its results are
// the same bits as theirs.
type convEpilogueFusion struct{}

// Name implements gobackend.GraphTransformation.
func (convEpilogueFusion) Name() string { return "ConvEpilogueFusion" }

// Apply implements gobackend.GraphTransformation.
func (convEpilogueFusion) Apply(b *gobackend.Builder) (bool, error) {
	modified := false
	for _, f := range b.Functions {
		users, outputs := nodeUsers(f)
		replace := map[*gobackend.Node]*gobackend.Node{}
		claimed := map[*gobackend.Node]bool{} // residual sums a convolution took
		for _, add := range f.Nodes {
			if add.OpType != compute.OpTypeAdd || len(add.Inputs) != 2 {
				continue
			}
			conv, bias := add.Inputs[0], add.Inputs[1]
			if conv.OpType != compute.OpTypeConvGeneral {
				conv, bias = bias, conv
			}
			if !epilogueFits(conv, bias, add) || len(users[conv]) != 1 || outputs[conv] {
				continue
			}
			p := *conv.Data.(*convNode)
			p.epilogue.bias = true
			conv.Inputs = append(conv.Inputs, bias)
			target := add
			if u := users[add]; len(u) == 1 && !outputs[add] && !claimed[u[0]] {
				if r := residualOf(u[0], add); r != nil {
					p.epilogue.residual = true
					conv.Inputs = append(conv.Inputs, r)
					claimed[u[0]] = true
					target = u[0]
				}
			}
			if u := users[target]; len(u) == 1 && !outputs[target] && isReLUOf(u[0], target) {
				p.epilogue.relu = true
				target = u[0]
			}
			conv.Data = &p
			replace[target] = conv
			modified = true
		}
		if len(replace) == 0 {
			continue
		}
		for _, n := range f.Nodes {
			for i, in := range n.Inputs {
				if r, ok := replace[in]; ok {
					n.Inputs[i] = r
				}
			}
			for _, captured := range n.CapturedInputs {
				for i, in := range captured {
					if r, ok := replace[in]; ok {
						captured[i] = r
					}
				}
			}
		}
		for i, o := range f.Outputs {
			if r, ok := replace[o]; ok {
				f.Outputs[i] = r
			}
		}
	}
	// The bias may come after the convolution in the nodes' order.
	return modified, nil
}

// nodeUsers returns, for the nodes of f, the nodes that take each as an
// input (captured inputs included; a node that takes it twice is listed
// twice), and which nodes are f's outputs.
func nodeUsers(f *gobackend.Function) (users map[*gobackend.Node][]*gobackend.Node, outputs map[*gobackend.Node]bool) {
	users, outputs = map[*gobackend.Node][]*gobackend.Node{}, map[*gobackend.Node]bool{}
	for _, n := range f.Nodes {
		for _, in := range n.Inputs {
			users[in] = append(users[in], n)
		}
		for _, captured := range n.CapturedInputs {
			for _, in := range captured {
				users[in] = append(users[in], n)
			}
		}
	}
	for _, o := range f.Outputs {
		outputs[o] = true
	}
	return users, outputs
}

// epilogueFits reports whether add is conv + bias with conv a float32
// convolution whose channels are its last axis (without an epilogue yet)
// and bias [1, ..., 1, C] of its channels.
func epilogueFits(conv, bias, add *gobackend.Node) bool {
	if conv.OpType != compute.OpTypeConvGeneral || len(conv.Inputs) != 2 {
		return false
	}
	p, ok := conv.Data.(*convNode)
	s := conv.Shape
	if !ok || p.epilogue.bias || s.DType != dtypes.Float32 || s.IsDynamic() || s.Rank() < 1 ||
		p.axes.OutputChannels != s.Rank()-1 || !add.Shape.Equal(s) {
		return false
	}
	bs := bias.Shape
	if bs.DType != dtypes.Float32 || bs.IsDynamic() || bs.Rank() != s.Rank() || bs.Dimensions[s.Rank()-1] != s.Dimensions[s.Rank()-1] {
		return false
	}
	for _, d := range bs.Dimensions[:s.Rank()-1] {
		if d != 1 {
			return false
		}
	}
	return true
}

// residualOf returns r when a is Add(sum, r) or Add(r, sum) with r a
// float32 of sum's shape other than sum, else nil.
func residualOf(a, sum *gobackend.Node) *gobackend.Node {
	if a.OpType != compute.OpTypeAdd || len(a.Inputs) != 2 || !a.Shape.Equal(sum.Shape) {
		return nil
	}
	r := a.Inputs[1]
	if a.Inputs[0] != sum {
		r = a.Inputs[0]
		if a.Inputs[1] != sum {
			return nil
		}
	}
	if r == sum || !r.Shape.Equal(sum.Shape) {
		return nil
	}
	return r
}

// isReLUOf reports whether m is Max(x, 0) (either order) with 0 a float32
// scalar constant.
func isReLUOf(m, x *gobackend.Node) bool {
	if m.OpType != compute.OpTypeMax || len(m.Inputs) != 2 || !m.Shape.Equal(x.Shape) {
		return false
	}
	zero := m.Inputs[1]
	if m.Inputs[0] != x {
		if m.Inputs[1] != x {
			return false
		}
		zero = m.Inputs[0]
	}
	if zero.OpType != compute.OpTypeConstant || !zero.Shape.IsScalar() || zero.Shape.DType != dtypes.Float32 {
		return false
	}
	buf, ok := zero.Data.(*gobackend.Buffer)
	if !ok {
		return false
	}
	v, ok := buf.Flat.([]float32)
	return ok && len(v) == 1 && v[0] == 0
}

// biasReLURows adds bias (c values) to each of the rows of c values in out,
// then res's value at the same place when res is not nil, then clamps them
// at 0 when relu is set; the simd build replaces it.
var biasReLURows = func(out, bias, res []float32, relu bool) {
	c := len(bias)
	for r := 0; r+c <= len(out); r += c {
		row := out[r : r+c]
		for j, b := range bias {
			v := row[j] + b
			if res != nil {
				v += res[r+j]
			}
			if relu && v < 0 {
				v = 0
			}
			row[j] = v
		}
	}
}

// applyConvEpilogue applies an epilogue to a channels-last output, a range
// of rows per worker. The matrix products' matmul.ApplyEpilogue does the
// same with a bias and an activation call per row: in its place, four
// alternating pairs measured ResNet-18 inference at 128 px about 3% and the
// tiny multiscale CAM (16-96 channels) about 7% slower.
func applyConvEpilogue(backend *gobackend.Backend, e convEpilogue, out, bias, res []float32) {
	c := len(bias)
	if c == 0 {
		return
	}
	rows := len(out) / c
	parallelRanges(backend, rows, max(1, parallelMinElements/c), func(lo, hi int) {
		var r []float32
		if res != nil {
			r = res[lo*c : hi*c]
		}
		biasReLURows(out[lo*c:hi*c], bias, r, e.relu)
	})
}
