// Package model holds l2gflow's GoMLX networks (a ResNet-style backbone
// family with a CAM classifier head), the L2G losses, the training loop,
// and the CAM inference engine.
//
// Parameters are kept outside GoMLX's model.Store, as plain named float32
// tensors passed into pure graph functions (weights in, new weights out):
// the artifact format, the optimizer (SGD with Nesterov momentum and the
// reference's per-group learning-rate multipliers, which GoMLX's optimizers
// lack) and resuming all need direct, ordered access to them anyway.
package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// Group is a parameter's learning-rate group.
type Group int

// Learning-rate groups, as in the reference: backbone layers train at the
// base rate, the new classifier head at a multiple of it.
const (
	Backbone Group = iota
	Head
)

// InitKind is how a parameter starts.
type InitKind int

// Initialisations.
const (
	InitHe    InitKind = iota // normal, std sqrt(2/fan_in)
	InitZeros                 // 0
	InitOnes                  // 1
	InitSmall                 // normal, std 0.01 (classifier weights)
)

// ParamSpec describes one named parameter.
type ParamSpec struct {
	Name  string
	Shape []int
	Init  InitKind
	FanIn int
	Group Group
	// Bias parameters (biases, normalisation shifts) train at twice the
	// group rate and without weight decay, as the reference does.
	Bias bool
	// State parameters are not trained by gradients: batch normalisation's
	// running statistics, updated by the training step.
	State bool
}

// Size is the number of elements.
func (s ParamSpec) Size() int {
	n := 1
	for _, d := range s.Shape {
		n *= d
	}
	return n
}

// Params is an ordered set of named parameter values.
type Params struct {
	Specs  []ParamSpec
	Values [][]float32
}

// Index returns the position of a named parameter or -1.
func (p *Params) Index(name string) int {
	return slices.IndexFunc(p.Specs, func(s ParamSpec) bool { return s.Name == name })
}

// Count returns the number of trainable scalars.
func (p *Params) Count() int {
	n := 0
	for _, s := range p.Specs {
		if !s.State {
			n += s.Size()
		}
	}
	return n
}

// Clone deep-copies the values.
func (p *Params) Clone() *Params {
	q := &Params{Specs: p.Specs, Values: make([][]float32, len(p.Values))}
	for i, v := range p.Values {
		q.Values[i] = slices.Clone(v)
	}
	return q
}

// InitParams draws initial values for specs from a seeded generator.
func InitParams(specs []ParamSpec, seed uint64) *Params {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	p := &Params{Specs: specs, Values: make([][]float32, len(specs))}
	for i, s := range specs {
		v := make([]float32, s.Size())
		switch s.Init {
		case InitOnes:
			for k := range v {
				v[k] = 1
			}
		case InitHe:
			std := math.Sqrt(2 / float64(max(1, s.FanIn)))
			for k := range v {
				v[k] = float32(r.NormFloat64() * std)
			}
		case InitSmall:
			for k := range v {
				v[k] = float32(r.NormFloat64() * 0.01)
			}
		}
		p.Values[i] = v
	}
	return p
}

// Tensors converts the values to tensors, in order.
func (p *Params) Tensors() []*tensors.Tensor {
	out := make([]*tensors.Tensor, len(p.Values))
	for i, v := range p.Values {
		out[i] = tensors.FromFlatDataAndDimensions(slices.Clone(v), p.Specs[i].Shape...)
	}
	return out
}

// SetFromTensors copies tensor values back, checking sizes.
func (p *Params) SetFromTensors(ts []*tensors.Tensor) error {
	if len(ts) != len(p.Values) {
		return fmt.Errorf("got %d tensors for %d parameters", len(ts), len(p.Values))
	}
	for i, t := range ts {
		v, err := tensors.CopyFlatData[float32](t)
		if err != nil {
			return fmt.Errorf("parameter %s: %w", p.Specs[i].Name, err)
		}
		if len(v) != len(p.Values[i]) {
			return fmt.Errorf("parameter %s: %d values, want %d", p.Specs[i].Name, len(v), len(p.Values[i]))
		}
		p.Values[i] = v
	}
	return nil
}

// Check verifies that values match their specs and are finite.
func (p *Params) Check() error {
	if len(p.Specs) != len(p.Values) {
		return fmt.Errorf("%d specs for %d values", len(p.Specs), len(p.Values))
	}
	for i, s := range p.Specs {
		if len(p.Values[i]) != s.Size() {
			return fmt.Errorf("parameter %s has %d values, want %d (shape %v)", s.Name, len(p.Values[i]), s.Size(), s.Shape)
		}
		for _, x := range p.Values[i] {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return fmt.Errorf("parameter %s holds a non-finite value", s.Name)
			}
		}
	}
	return nil
}

// paramSource hands out the graph nodes of parameters while a network is
// built. In collection mode (nodes == nil) it records the specs and hands
// out zeros, so that one description of the network serves both to list its
// parameters and to build its graph.
type paramSource struct {
	g       *graph.Graph
	specs   []ParamSpec
	nodes   map[string]*graph.Node
	updates map[string]*graph.Node // new values of state parameters
}

func (ps *paramSource) get(spec ParamSpec) *graph.Node {
	if ps.nodes == nil {
		ps.specs = append(ps.specs, spec)
		return graph.Zeros(ps.g, shapes.Make(dtypes.Float32, spec.Shape...))
	}
	n, ok := ps.nodes[spec.Name]
	if !ok {
		panic(fmt.Sprintf("model: parameter %s missing from the parameter set", spec.Name))
	}
	return n
}

func (ps *paramSource) setState(name string, v *graph.Node) {
	if ps.updates != nil {
		ps.updates[name] = v
	}
}

// bindParams creates graph nodes for params from the given inputs (one per
// spec, in order).
func bindParams(specs []ParamSpec, inputs []*graph.Node) map[string]*graph.Node {
	m := make(map[string]*graph.Node, len(specs))
	for i, s := range specs {
		m[s.Name] = inputs[i]
	}
	return m
}

// CountTrainable counts the trainable values (not state) of the
// parameters under prefix.
func CountTrainable(specs []ParamSpec, prefix string) int {
	n := 0
	for _, s := range specs {
		if !s.State && strings.HasPrefix(s.Name, prefix) {
			n += s.Size()
		}
	}
	return n
}
