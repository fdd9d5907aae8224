package model

import (
	"fmt"
	"slices"

	"github.com/gomlx/compute"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// Forward runs a network in inference mode. It compiles once per input
// shape (GoMLX caches the compiled graphs) and is safe for concurrent use:
// a compiled executable may be called from several goroutines.
type Forward struct {
	net    *Net
	prefix string
	specs  []ParamSpec
	params []*tensors.Tensor
	exec   *graph.Exec
}

// maxCompiledShapes bounds the compiled graphs kept per Forward: one per
// distinct input shape (batch and image size).
const maxCompiledShapes = 64

// NewForward prepares inference of net with the parameters under prefix.
func NewForward(backend compute.Backend, net *Net, params *Params, prefix string) (*Forward, error) {
	specs, err := net.ParamSpecs(backend, prefix)
	if err != nil {
		return nil, err
	}
	f := &Forward{net: net, prefix: prefix, specs: specs}
	for _, s := range specs {
		i := params.Index(s.Name)
		if i < 0 {
			return nil, fmt.Errorf("parameter %s missing", s.Name)
		}
		if !slices.Equal(params.Specs[i].Shape, s.Shape) {
			return nil, fmt.Errorf("parameter %s has shape %v, the architecture needs %v", s.Name, params.Specs[i].Shape, s.Shape)
		}
		t := tensors.FromFlatDataAndDimensions(slices.Clone(params.Values[i]), s.Shape...)
		// Move the weights to the backend now, before any concurrent Run:
		// the first use of a tensor changes its storage, and several
		// executions starting at once on fresh tensors failed with "Tensor
		// has no local or on-device representation".
		if err := t.MaterializeOnDevice(backend, backend.HasSharedBuffers(), 0); err != nil {
			return nil, fmt.Errorf("parameter %s: %w", s.Name, err)
		}
		f.params = append(f.params, t)
	}
	f.exec, err = graph.NewExec(backend, func(g *graph.Graph, inputs []*Node) []*Node {
		ps := &paramSource{g: g, nodes: bindParams(specs, inputs)}
		out := net.forward(&layerBuilder{ps: ps, prefix: prefix}, inputs[len(specs)])
		return []*Node{out.CAM, out.Logits}
	})
	if err != nil {
		return nil, fmt.Errorf("compile inference: %w", err)
	}
	f.exec.SetMaxCache(maxCompiledShapes)
	return f, nil
}

// Run infers a batch x of n normalised h x w RGB images (NHWC). It returns
// the CAMs [n, h', w', C+1] flat with their dimensions, and the image
// logits [n, C].
func (f *Forward) Run(x []float32, n, h, w int) (cam []float32, dims []int, logits []float32, err error) {
	if len(x) != n*h*w*3 {
		return nil, nil, nil, fmt.Errorf("input has %d values, want %d", len(x), n*h*w*3)
	}
	in := tensors.FromFlatDataAndDimensions(x, n, h, w, 3)
	// Release the input's backend buffer now rather than at garbage
	// collection: with shared buffers it would otherwise pile up.
	defer in.FinalizeAll()
	args := make([]any, 0, len(f.params)+1)
	for _, p := range f.params {
		args = append(args, p)
	}
	args = append(args, in)
	outs, err := f.exec.Exec(args...)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("inference: %w", err)
	}
	defer func() {
		for _, o := range outs {
			o.FinalizeAll()
		}
	}()
	cam, err = tensors.CopyFlatData[float32](outs[0])
	if err != nil {
		return nil, nil, nil, err
	}
	logits, err = tensors.CopyFlatData[float32](outs[1])
	if err != nil {
		return nil, nil, nil, err
	}
	return cam, outs[0].Shape().Dimensions, logits, nil
}
