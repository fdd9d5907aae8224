package model

import (
	"fmt"
	"math"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// Network name prefixes of parameters.
const (
	GlobalPrefix = "global/"
	LocalPrefix  = "local/"
)

// OptimConfig configures the optimizer built into the training step.
type OptimConfig struct {
	Kind        string  // "sgd" (Nesterov momentum, the reference) or "adam"
	Momentum    float64 // SGD momentum
	WeightDecay float64 // L2 on weights (not on biases or normalisation)
	HeadMult    float64 // learning-rate multiplier of the classifier heads
	Beta1       float64 // Adam
	Beta2       float64 // Adam
	Eps         float64 // Adam
}

// slotsPerParam is the number of optimizer state tensors per trainable
// parameter.
func (o OptimConfig) slotsPerParam() int {
	if o.Kind == "adam" {
		return 2
	}
	return 1
}

// lrMult is the reference's per-group multiplier: 1x/2x for backbone
// weights/biases, HeadMult and 2*HeadMult for the new classifier layers.
func (o OptimConfig) lrMult(s ParamSpec) float64 {
	m := 1.0
	if s.Group == Head {
		m = o.HeadMult
	}
	if s.Bias {
		m *= 2
	}
	return m
}

// StepConfig fixes the shapes and losses of one training step.
type StepConfig struct {
	Method    string // "l2g" or "cam"
	Classes   int
	Batch     int
	ImageSize int
	Views     int
	ViewSize  int
	Stride    int
	BgThr     float64
	Transfer  string // "mse" or "kl"
	KDWeight  float64
	// GlobalClsWeight adds the global network's own classification loss
	// to the L2G objective (0 in the reference, which reports but does not
	// add it; useful when training from scratch).
	GlobalClsWeight float64
	Optim           OptimConfig
}

// camSize is the side of a CAM for an input of side s.
func (c StepConfig) camSize(s int) int { return (s + c.Stride - 1) / c.Stride }

// Batch is one training batch in host memory (row-major, NHWC).
type Batch struct {
	Images []float32 // [B, S, S, 3] normalised
	Tags   []float32 // [B, C] 0/1
	// L2G only:
	Views    []float32 // [B*V, vs, vs, 3]
	ViewTags []float32 // [B*V, C]
	Present  []float32 // [B*V, C+1]: tags and background
	Sal      []float32 // [B*V, h, h] soft saliency at CAM resolution
	HasSal   []float32 // [B*V]
	RY, RX   []float32 // [B, V, h, Hf] and [B, V, h, Hf] interpolation weights
}

// Losses of one step.
type Losses struct {
	Total, Cls, Transfer, GlobalCls float64
}

// Stepper runs compiled training steps: parameters and optimizer state in,
// updated ones and the losses out.
type Stepper struct {
	cfg       StepConfig
	specs     []ParamSpec
	trainable []int // indices into specs
	exec      *graph.Exec
	global    *Net
	local     *Net
}

// NewStepper compiles the training step for the given networks (local may
// be nil for the cam method). specs must list the global parameters (under
// GlobalPrefix) then the local ones (under LocalPrefix).
func NewStepper(backend compute.Backend, cfg StepConfig, global, local *Net, specs []ParamSpec) (*Stepper, error) {
	s := &Stepper{cfg: cfg, specs: specs, global: global, local: local}
	for i, sp := range specs {
		if !sp.State {
			s.trainable = append(s.trainable, i)
		}
	}
	if cfg.Method == "l2g" && local == nil {
		return nil, fmt.Errorf("l2g training needs a local network")
	}
	exec, err := graph.NewExec(backend, s.build)
	if err != nil {
		return nil, fmt.Errorf("compile training step: %w", err)
	}
	s.exec = exec
	return s, nil
}

// SlotCount is the number of optimizer state tensors.
func (s *Stepper) SlotCount() int { return len(s.trainable) * s.cfg.Optim.slotsPerParam() }

// SlotShapes returns the shapes of the optimizer state tensors, in order.
func (s *Stepper) SlotShapes() [][]int {
	var out [][]int
	for _, i := range s.trainable {
		for k := 0; k < s.cfg.Optim.slotsPerParam(); k++ {
			out = append(out, s.specs[i].Shape)
		}
	}
	return out
}

// build is the step's graph. Inputs: the parameters (in spec order), the
// optimizer slots, the batch tensors, then the learning rate and the step
// number (both scalars). Outputs: the new parameters, the new slots, then
// the losses (total, cls, transfer, global cls).
func (s *Stepper) build(g *graph.Graph, in []*Node) []*Node {
	cfg := s.cfg
	np, ns := len(s.specs), s.SlotCount()
	params := in[:np]
	slots := in[np : np+ns]
	data := in[np+ns : len(in)-2]
	lr, stepNum := in[len(in)-2], in[len(in)-1]

	ps := &paramSource{g: g, nodes: bindParams(s.specs, params), updates: map[string]*Node{}}
	images, tags := data[0], data[1]
	gOut := s.global.forward(&layerBuilder{ps: ps, prefix: GlobalPrefix, training: true}, images)
	zero := graph.ScalarZero(g, dtypes.Float32)
	globalCls := MultiLabelSoftMargin(gOut.Logits, tags)
	var total, cls, transfer *Node
	if cfg.Method == "cam" {
		total, cls, transfer = globalCls, globalCls, zero
	} else {
		views, viewTags, present, sal, hasSal, ry, rx := data[2], data[3], data[4], data[5], data[6], data[7], data[8]
		lOut := s.local.forward(&layerBuilder{ps: ps, prefix: LocalPrefix, training: true}, views)
		cls = MultiLabelSoftMargin(lOut.Logits, viewTags)
		target := LocalTarget(lOut.CAM, present, sal, hasSal, cfg.BgThr)
		aligned := AlignToViews(gOut.CAM, ry, rx)
		if cfg.Transfer == "kl" {
			transfer = TransferKL(aligned, target, cfg.KDWeight)
		} else {
			transfer = TransferMSE(aligned, target, cfg.KDWeight)
		}
		// As the reference: the global network learns from the transfer
		// term only; its own classification loss is reported, not added
		// (unless GlobalClsWeight says otherwise).
		total = graph.Add(cls, transfer)
		if cfg.GlobalClsWeight > 0 {
			total = graph.Add(total, scale(globalCls, cfg.GlobalClsWeight))
		}
	}

	wrt := make([]*Node, len(s.trainable))
	for k, i := range s.trainable {
		wrt[k] = params[i]
	}
	grads := graph.Gradient(total, wrt...)

	newParams := make([]*Node, np)
	copy(newParams, params)
	for i, sp := range s.specs {
		if sp.State {
			if u, ok := ps.updates[sp.Name]; ok {
				newParams[i] = u
			}
		}
	}
	newSlots := make([]*Node, ns)
	per := cfg.Optim.slotsPerParam()
	for k, i := range s.trainable {
		sp := s.specs[i]
		p, gr := params[i], grads[k]
		if cfg.Optim.WeightDecay > 0 && !sp.Bias && sp.Init != InitOnes {
			gr = graph.Add(gr, scale(p, cfg.Optim.WeightDecay))
		}
		plr := scale(lr, cfg.Optim.lrMult(sp))
		switch cfg.Optim.Kind {
		case "adam":
			m, v := slots[k*per], slots[k*per+1]
			b1, b2 := cfg.Optim.Beta1, cfg.Optim.Beta2
			m = graph.Add(scale(m, b1), scale(gr, 1-b1))
			v = graph.Add(scale(v, b2), scale(graph.Square(gr), 1-b2))
			// Bias corrections 1 - beta^t with t = stepNum (from 1).
			c1 := graph.OneMinus(graph.Pow(graph.ConstAs(stepNum, b1), stepNum))
			c2 := graph.OneMinus(graph.Pow(graph.ConstAs(stepNum, b2), stepNum))
			mhat := graph.Div(m, c1)
			vhat := graph.Div(v, c2)
			upd := graph.Div(mhat, graph.Add(graph.Sqrt(vhat), graph.ConstAs(vhat, cfg.Optim.Eps)))
			newParams[i] = graph.Sub(p, graph.Mul(plr, upd))
			newSlots[k*per], newSlots[k*per+1] = m, v
		default: // SGD with Nesterov momentum, as torch.optim.SGD(nesterov=True).
			buf := graph.Add(scale(slots[k], cfg.Optim.Momentum), gr)
			upd := graph.Add(gr, scale(buf, cfg.Optim.Momentum))
			newParams[i] = graph.Sub(p, graph.Mul(plr, upd))
			newSlots[k] = buf
		}
	}
	out := append(newParams, newSlots...)
	return append(out, total, cls, transfer, globalCls)
}

// batchTensors converts a batch to the step's input tensors.
func (s *Stepper) batchTensors(b *Batch) ([]*tensors.Tensor, error) {
	c := s.cfg
	n, sz := c.Batch, c.ImageSize
	check := func(name string, v []float32, dims ...int) (*tensors.Tensor, error) {
		want := 1
		for _, d := range dims {
			want *= d
		}
		if len(v) != want {
			return nil, fmt.Errorf("batch %s has %d values, want %d (%v)", name, len(v), want, dims)
		}
		return tensors.FromFlatDataAndDimensions(v, dims...), nil
	}
	var out []*tensors.Tensor
	add := func(name string, v []float32, dims ...int) error {
		t, err := check(name, v, dims...)
		if err != nil {
			return err
		}
		out = append(out, t)
		return nil
	}
	if err := add("images", b.Images, n, sz, sz, 3); err != nil {
		return nil, err
	}
	if err := add("tags", b.Tags, n, c.Classes); err != nil {
		return nil, err
	}
	if c.Method == "cam" {
		return out, nil
	}
	m, vs, h, hf := n*c.Views, c.ViewSize, c.camSize(c.ViewSize), c.camSize(sz)
	for _, e := range []struct {
		name string
		v    []float32
		dims []int
	}{
		{"views", b.Views, []int{m, vs, vs, 3}},
		{"view tags", b.ViewTags, []int{m, c.Classes}},
		{"present", b.Present, []int{m, c.Classes + 1}},
		{"saliency", b.Sal, []int{m, h, h}},
		{"has saliency", b.HasSal, []int{m}},
		{"row weights", b.RY, []int{n, c.Views, h, hf}},
		{"column weights", b.RX, []int{n, c.Views, h, hf}},
	} {
		if err := add(e.name, e.v, e.dims...); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Step runs one training step, replacing params and slots with their
// updated values. step counts from 1.
func (s *Stepper) Step(params, slots []*tensors.Tensor, b *Batch, lr float64, step int64) ([]*tensors.Tensor, []*tensors.Tensor, Losses, error) {
	data, err := s.batchTensors(b)
	if err != nil {
		return nil, nil, Losses{}, err
	}
	args := make([]any, 0, len(params)+len(slots)+len(data)+2)
	for _, p := range params {
		args = append(args, p)
	}
	for _, p := range slots {
		args = append(args, p)
	}
	for _, d := range data {
		args = append(args, d)
	}
	defer finalize(data)
	args = append(args, tensors.FromScalar(float32(lr)), tensors.FromScalar(float32(step)))
	outs, err := s.exec.Call(args...)
	if err != nil {
		return nil, nil, Losses{}, fmt.Errorf("training step: %w", err)
	}
	np, ns := len(params), len(slots)
	l := Losses{}
	for i, dst := range []*float64{&l.Total, &l.Cls, &l.Transfer, &l.GlobalCls} {
		v, err := tensors.CopyFlatData[float32](outs[np+ns+i])
		if err != nil {
			return nil, nil, Losses{}, err
		}
		*dst = float64(v[0])
	}
	if math.IsNaN(l.Total) || math.IsInf(l.Total, 0) {
		return nil, nil, l, fmt.Errorf("training diverged at step %d: loss is %v (lower the learning rate)", step, l.Total)
	}
	return outs[:np], outs[np : np+ns], l, nil
}

// ZeroSlots returns zero optimizer state of the given shapes (a fresh
// run's optimizer slots).
func ZeroSlots(shapesList [][]int) []*tensors.Tensor {
	out := make([]*tensors.Tensor, len(shapesList))
	for i, sh := range shapesList {
		out[i] = tensors.FromShape(shapes.Make(dtypes.Float32, sh...))
	}
	return out
}

// finalize frees tensors no longer needed (their backend buffers too).
func finalize(ts []*tensors.Tensor) {
	for _, t := range ts {
		t.FinalizeAll()
	}
}
