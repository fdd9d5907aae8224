package model

import (
	"fmt"
	"slices"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
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

// defaultMaxCompiled bounds the compiled graphs kept per Forward (one per
// distinct input shape: batch and image size) unless SetMaxCompiled
// raises it; the inference engine sets it from its bucket set.
const defaultMaxCompiled = 64

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
		x, valid := inputs[len(specs)], inputs[len(specs)+1]
		out := net.forward(&layerBuilder{ps: ps, prefix: prefix, mask: newPadMask(x, valid)}, x)
		return []*Node{out.CAM, out.Logits}
	})
	if err != nil {
		return nil, fmt.Errorf("compile inference: %w", err)
	}
	f.exec.SetMaxCache(defaultMaxCompiled)
	return f, nil
}

// SetMaxCompiled sets how many input shapes may be compiled.
func (f *Forward) SetMaxCompiled(n int) { f.exec.SetMaxCache(n) }

// Compile compiles the graph for a batch of n h x w inputs ahead of use.
func (f *Forward) Compile(n, h, w int) error {
	in := make([]shapes.Shape, 0, len(f.params)+2)
	for _, p := range f.params {
		in = append(in, p.Shape())
	}
	in = append(in, shapes.Make(dtypes.Float32, n, h, w, 3), shapes.Make(dtypes.Float32, n, 2))
	if _, err := f.exec.Compile(in...); err != nil {
		return fmt.Errorf("compile inference for %d x %dx%d: %w", n, h, w, err)
	}
	return nil
}

// Run infers a batch x of n normalised h x w RGB images (NHWC). Each
// image may be padded: real gives its real height and width (nil: all are
// h x w), the padding at its bottom and right must be zeros, and its CAM
// on the real region is then what an unpadded run gives (see padMask). It
// returns the CAMs [n, h', w', C+1] flat with their dimensions (each
// image's real part is its top-left ceil(real/t) corner, t the network's
// TotalStride), and the image logits [n, C] over the real regions.
func (f *Forward) Run(x []float32, n, h, w int, real [][2]int) (cam []float32, dims []int, logits []float32, err error) {
	if len(x) != n*h*w*3 {
		return nil, nil, nil, fmt.Errorf("input has %d values, want %d", len(x), n*h*w*3)
	}
	if real != nil && len(real) != n {
		return nil, nil, nil, fmt.Errorf("%d real sizes for %d inputs", len(real), n)
	}
	sizes := make([]float32, 2*n)
	for i := range n {
		rh, rw := h, w
		if real != nil {
			rh, rw = real[i][0], real[i][1]
		}
		if rh < 0 || rw < 0 || rh > h || rw > w {
			return nil, nil, nil, fmt.Errorf("input %d: real size %dx%d outside %dx%d", i, rh, rw, h, w)
		}
		sizes[2*i], sizes[2*i+1] = float32(rh), float32(rw)
	}
	in := tensors.FromFlatDataAndDimensions(x, n, h, w, 3)
	valid := tensors.FromFlatDataAndDimensions(sizes, n, 2)
	// Release the inputs' backend buffers now rather than at garbage
	// collection: with shared buffers they would otherwise pile up.
	defer in.FinalizeAll()
	defer valid.FinalizeAll()
	args := make([]any, 0, len(f.params)+2)
	for _, p := range f.params {
		args = append(args, p)
	}
	args = append(args, in, valid)
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
