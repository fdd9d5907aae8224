package model

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// Forward runs a network in inference mode. It compiles once per input
// shape and is safe for concurrent use: a compiled executable may be
// called from several goroutines.
//
// Each input shape has an executable of its own, found through a map:
// GoMLX's Exec keeps its compiled graphs in a list it searches by
// comparing every input's shape (about 60 parameters for a ResNet), which
// for an engine's hundreds of buckets cost 6% of inference in a profile.
type Forward struct {
	net     *Net
	prefix  string
	specs   []ParamSpec
	params  []*tensors.Tensor
	backend compute.Backend
	// build makes the graph; masked adds the padding mask (see padMask),
	// which a batch of unpadded inputs does not need.
	build func(g *graph.Graph, inputs []*Node, masked bool) []*Node

	mu        sync.RWMutex
	execs     map[execKey]*graph.Exec
	maxShapes int
}

// execKey identifies a compiled graph: the input shape, and whether it
// masks padding.
type execKey struct {
	n, h, w int
	masked  bool
}

// defaultMaxCompiled bounds the compiled graphs kept per Forward (one per
// distinct input shape: batch and image size) unless SetMaxCompiled
// raises it; the inference engine sets it from its bucket set.
const defaultMaxCompiled = 64

// NewForward prepares inference of net with the parameters under prefix.
// Batch normalisation is folded into the convolutions (see
// foldBatchNorm).
func NewForward(backend compute.Backend, net *Net, params *Params, prefix string) (*Forward, error) {
	if err := net.checkParams(backend, params, prefix); err != nil {
		return nil, err
	}
	specs, err := net.paramSpecs(backend, layerBuilder{prefix: prefix, folded: true})
	if err != nil {
		return nil, err
	}
	folded, err := foldBatchNorm(specs, params)
	if err != nil {
		return nil, err
	}
	f := &Forward{net: net, prefix: prefix, specs: specs}
	for i, s := range specs {
		t := tensors.FromFlatDataAndDimensions(folded[i], s.Shape...)
		// Move the weights to the backend now, before any concurrent Run:
		// the first use of a tensor changes its storage, and several
		// executions starting at once on fresh tensors failed with "Tensor
		// has no local or on-device representation".
		if err := t.MaterializeOnDevice(backend, backend.HasSharedBuffers(), 0); err != nil {
			return nil, fmt.Errorf("parameter %s: %w", s.Name, err)
		}
		// The weights are never written again: say so to a backend that
		// can use it (the forked Go backend's buffers: its convolutions
		// then keep their transformed kernels without comparing the
		// weights with a copy on every run, about 10% of a ResNet-18
		// inference at 128 px).
		buf, err := t.Buffer(backend, 0)
		if err != nil {
			return nil, fmt.Errorf("parameter %s: %w", s.Name, err)
		}
		if fb, ok := buf.(freezable); ok {
			fb.Freeze()
		}
		f.params = append(f.params, t)
	}
	f.backend, f.execs, f.maxShapes = backend, map[execKey]*graph.Exec{}, defaultMaxCompiled
	f.build = func(g *graph.Graph, inputs []*Node, masked bool) []*Node {
		ps := &paramSource{g: g, nodes: bindParams(specs, inputs)}
		x, valid := inputs[len(specs)], inputs[len(specs)+1]
		var mask *padMask
		if masked {
			mask = newPadMask(x, valid)
		}
		out := net.forward(&layerBuilder{ps: ps, prefix: prefix, mask: mask, folded: true}, x)
		return []*Node{out.CAM, out.Logits}
	}
	return f, nil
}

// SetMaxCompiled sets how many input shapes may be compiled. The graphs
// without the padding mask, which Run compiles for batches that have no
// padding, are counted apart, up to as many again; past that, such
// batches run the masked graph (the same result).
func (f *Forward) SetMaxCompiled(n int) {
	f.mu.Lock()
	f.maxShapes = n
	f.mu.Unlock()
}

// Compile compiles the graph for a batch of n h x w inputs ahead of use.
func (f *Forward) Compile(n, h, w int) error {
	_, err := f.execFor(execKey{n, h, w, true})
	return err
}

// execFor returns the executable of an input shape, compiling it on first
// use; at most maxShapes shapes (with the padding mask) are compiled, and
// as many without it.
func (f *Forward) execFor(key execKey) (*graph.Exec, error) {
	n, h, w := key.n, key.h, key.w
	f.mu.RLock()
	e := f.execs[key]
	f.mu.RUnlock()
	if e != nil {
		return e, nil
	}
	f.mu.RLock()
	count := 0 // compiled graphs of this kind (with or without the mask)
	for k := range f.execs {
		if k.masked == key.masked {
			count++
		}
	}
	f.mu.RUnlock()
	if count >= f.maxShapes {
		return nil, fmt.Errorf("inference for %d x %dx%d: %d input shapes compiled already, the most allowed", n, h, w, f.maxShapes)
	}
	// Compile outside the lock, so that shapes compile in parallel; two
	// callers may compile one shape at once, and the first one kept wins.
	e, err := graph.NewExec(f.backend, func(g *graph.Graph, inputs []*Node) []*Node { return f.build(g, inputs, key.masked) })
	if err != nil {
		return nil, fmt.Errorf("compile inference: %w", err)
	}
	in := make([]shapes.Shape, 0, len(f.params)+2)
	for _, p := range f.params {
		in = append(in, p.Shape())
	}
	in = append(in, shapes.Make(dtypes.Float32, n, h, w, 3), shapes.Make(dtypes.Float32, n, 2))
	if _, err := e.Compile(in...); err != nil {
		return nil, fmt.Errorf("compile inference for %d x %dx%d: %w", n, h, w, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if kept := f.execs[key]; kept != nil {
		return kept, nil
	}
	f.execs[key] = e
	return e, nil
}

// freezable is a backend buffer whose holder can promise not to write it
// again until it is finalized (the Go backend's Buffer.Freeze in our
// fork, third_party/compute; upstream's buffers lack it).
type freezable interface{ Freeze() }

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
	return f.RunFilled(n, h, w, func(dst []float32) { copy(dst, x) }, real)
}

// RunFilled is Run with the input written by fill into the input tensor
// itself ([n, h, w, 3], zeroed; with the Go backend a buffer it shares
// with the host), so that a batch is not built in a slice of its own and
// copied.
func (f *Forward) RunFilled(n, h, w int, fill func(x []float32), real [][2]int) (cam []float32, dims []int, logits []float32, err error) {
	if real != nil && len(real) != n {
		return nil, nil, nil, fmt.Errorf("%d real sizes for %d inputs", len(real), n)
	}
	sizes := make([]float32, 2*n)
	padded := false
	for i := range n {
		rh, rw := h, w
		if real != nil {
			rh, rw = real[i][0], real[i][1]
		}
		if rh < 0 || rw < 0 || rh > h || rw > w {
			return nil, nil, nil, fmt.Errorf("input %d: real size %dx%d outside %dx%d", i, rh, rw, h, w)
		}
		sizes[2*i], sizes[2*i+1] = float32(rh), float32(rw)
		padded = padded || rh < h || rw < w
	}
	in, err := tensors.FromShapeForBackend(f.backend, 0, shapes.Make(dtypes.Float32, n, h, w, 3))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("input tensor: %w", err)
	}
	if err := tensors.MutableFlatData(in, fill); err != nil {
		in.FinalizeAll()
		return nil, nil, nil, fmt.Errorf("input tensor: %w", err)
	}
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
	// A batch without padding skips the mask (a multiplication before
	// every layer that reads neighbours: 2-3% of a ResNet-18 inference).
	exec, err := f.execFor(execKey{n, h, w, padded})
	if err != nil && !padded {
		exec, err = f.execFor(execKey{n, h, w, true})
	}
	if err != nil {
		return nil, nil, nil, err
	}
	outs, err := exec.Call(args...)
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

// foldedShift names the shift of a batch normalisation folded into its
// convolution.
const foldedShift = "/shift"

// foldBatchNorm computes the values of the inference parameters (specs,
// as the folded network lists them) from trained parameters: batch
// normalisation y = gamma * (x - mean) / sqrt(var + eps) + beta after a
// convolution with weights w is the convolution with weights w * s plus
// the shift beta - mean * s, where s = gamma / sqrt(var + eps), per output
// channel. Inference then runs one add a normalisation instead of a
// multiply and an add, and nothing is recomputed from the statistics.
func foldBatchNorm(specs []ParamSpec, p *Params) ([][]float32, error) {
	get := func(name string, size int) ([]float32, error) {
		i := p.Index(name)
		if i < 0 {
			return nil, fmt.Errorf("parameter %s missing", name)
		}
		if len(p.Values[i]) != size {
			return nil, fmt.Errorf("parameter %s has %d values, want %d", name, len(p.Values[i]), size)
		}
		return p.Values[i], nil
	}
	scaleShift := func(bn string, c int) (scale, shift []float64, err error) {
		var v [4][]float32
		for k, suffix := range []string{"/gamma", "/beta", "/mean", "/var"} {
			if v[k], err = get(bn+suffix, c); err != nil {
				return nil, nil, err
			}
		}
		scale, shift = make([]float64, c), make([]float64, c)
		for j := range c {
			scale[j] = float64(v[0][j]) / math.Sqrt(float64(v[3][j])+bnEps)
			shift[j] = float64(v[1][j]) - float64(v[2][j])*scale[j]
		}
		return scale, shift, nil
	}
	out := make([][]float32, len(specs))
	for i, s := range specs {
		switch {
		case strings.HasSuffix(s.Name, "/bn"+foldedShift):
			_, shift, err := scaleShift(strings.TrimSuffix(s.Name, foldedShift), s.Size())
			if err != nil {
				return nil, err
			}
			out[i] = make([]float32, len(shift))
			for j, v := range shift {
				out[i][j] = float32(v)
			}
		default:
			w, err := get(s.Name, s.Size())
			if err != nil {
				return nil, err
			}
			out[i] = slices.Clone(w)
			bn := strings.TrimSuffix(s.Name, "/w") + "/bn"
			if !strings.HasSuffix(s.Name, "/w") || p.Index(bn+"/gamma") < 0 {
				continue // not followed by batch normalisation (the classifier)
			}
			cout := s.Shape[len(s.Shape)-1]
			scale, _, err := scaleShift(bn, cout)
			if err != nil {
				return nil, err
			}
			for j := range out[i] {
				out[i][j] = float32(float64(out[i][j]) * scale[j%cout])
			}
		}
	}
	return out, nil
}

// checkParams verifies that params hold every parameter of the network
// under prefix, with its shape.
func (n *Net) checkParams(backend compute.Backend, params *Params, prefix string) error {
	specs, err := n.ParamSpecs(backend, prefix)
	if err != nil {
		return err
	}
	for _, s := range specs {
		i := params.Index(s.Name)
		if i < 0 {
			return fmt.Errorf("parameter %s missing", s.Name)
		}
		if !slices.Equal(params.Specs[i].Shape, s.Shape) {
			return fmt.Errorf("parameter %s has shape %v, the architecture needs %v", s.Name, params.Specs[i].Shape, s.Shape)
		}
	}
	return nil
}
