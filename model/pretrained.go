package model

import (
	"fmt"
	"slices"
	"strings"

	"github.com/l2gflow/l2gflow/io/weights"
	"github.com/l2gflow/l2gflow/model/backbone"
)

// ImportReport says what a pretrained file gave a network.
type ImportReport struct {
	Loaded  int      // parameters set from the file
	Ignored []string // file tensors that are not backbone weights (the ImageNet classifier fc.*, BatchNorm counters)
	// Skipped lists, by name, what did not load: parameters the file
	// lacks, file tensors with no place in the network, and mis-shaped
	// ones. Non-empty only when importing is not strict.
	Skipped []string
}

// torchConv is one convolution of a torchvision ResNet and its place in
// an l2gflow network.
type torchConv struct {
	module string // torchvision module path of the convolution
	bn     string // module path of its batch normalisation
	param  string // l2gflow name of the layer (without network prefix)
}

// torchvisionConvs lists an architecture's convolutions in torchvision's
// forward order, with their torchvision names. Only the ResNet presets
// have a torchvision counterpart.
func torchvisionConvs(a Arch) ([]torchConv, error) {
	if a.StemKernel != 7 || !a.StemPool || len(a.Depths) != 4 || a.StemWidth != 64 {
		return nil, fmt.Errorf("architecture %q has no torchvision counterpart: pretrained weights fit %s", a.Name, backbone.Choices(backbone.Pretrainable()))
	}
	convs := []torchConv{{"conv1", "bn1", "stem"}}
	inWidth := a.StemWidth
	n := 3
	if !a.Bottleneck {
		n = 2
	}
	for s, depth := range a.Depths {
		for k := range depth {
			tv := fmt.Sprintf("layer%d.%d", s+1, k)
			ours := fmt.Sprintf("stage%d/block%d", s+1, k+1)
			for j := 1; j <= n; j++ {
				convs = append(convs, torchConv{fmt.Sprintf("%s.conv%d", tv, j), fmt.Sprintf("%s.bn%d", tv, j), fmt.Sprintf("%s/conv%d", ours, j)})
			}
			// The shortcut has a projection where the shape changes
			// (l2gflow's dilated stages keep torchvision's projections:
			// only their stride differs).
			if k == 0 && (s > 0 || inWidth != a.Widths[s]) {
				convs = append(convs, torchConv{tv + ".downsample.0", tv + ".downsample.1", ours + "/down"})
			}
		}
		inWidth = a.Widths[s]
	}
	return convs, nil
}

// pretrainedValue is one parameter's value taken from a file.
type pretrainedValue struct {
	shape  []int
	data   []float32
	source string // name in the file, for messages
}

// LoadPretrained sets the backbone parameters of n under each of prefixes
// in params (networks of n's architecture, e.g. the global and the local
// one) from a torchvision / timm ResNet weights file (safetensors state
// dict or ONNX export). The file is mapped once for all of them.
// Convolution weights are converted from PyTorch's OIHW layout; batch
// normalisation statistics are kept. With strict, any missing, unexpected
// or mis-shaped tensor is an error naming them all; otherwise they are
// skipped and listed in the report. The classifier head and PCM's
// projections are left as initialised. The report counts one network's parameters.
func (n *Net) LoadPretrained(params *Params, f *weights.File, strict bool, prefixes ...string) (*ImportReport, error) {
	convs, err := torchvisionConvs(n.Arch)
	if err != nil {
		return nil, err
	}
	rep := &ImportReport{}
	var values map[string]pretrainedValue
	var problems []string
	switch f.Format {
	case weights.Safetensors:
		values, problems = fromStateDict(convs, f.Tensors, rep)
	case weights.ONNX:
		values, problems = fromONNX(convs, f.Graph, rep)
	default:
		return nil, fmt.Errorf("weights format %q", f.Format)
	}
	for k, prefix := range prefixes {
		first := k == 0 // the networks share the architecture: report one
		for i, s := range params.Specs {
			name, ok := strings.CutPrefix(s.Name, prefix)
			if !ok || strings.HasPrefix(name, "classifier/") || strings.HasPrefix(name, "pcm/") {
				continue
			}
			v, ok := values[name]
			if !ok {
				if first {
					problems = append(problems, fmt.Sprintf("missing: %s (no tensor in the file for %s)", name, s.Name))
				}
				continue
			}
			if !slices.Equal(v.shape, s.Shape) {
				if first {
					problems = append(problems, fmt.Sprintf("shape: %s is %v in the file, %s wants %v", v.source, v.shape, s.Name, s.Shape))
				}
				continue
			}
			params.Values[i] = slices.Clone(v.data)
			if first {
				rep.Loaded++
			}
		}
	}
	if len(problems) > 0 && strict {
		return nil, fmt.Errorf("pretrained %s does not fit %s (%d problems; --pretrained-strict=false loads the rest):\n  %s",
			f.Name, n.Arch.Name, len(problems), strings.Join(problems, "\n  "))
	}
	rep.Skipped = problems
	return rep, nil
}

// fromStateDict maps torchvision-named tensors onto l2gflow names.
func fromStateDict(convs []torchConv, ts map[string]weights.Tensor, rep *ImportReport) (map[string]pretrainedValue, []string) {
	// A state dict saved from nn.DataParallel prefixes every name.
	prefix := "module."
	for name := range ts {
		if !strings.HasPrefix(name, prefix) {
			prefix = ""
			break
		}
	}
	used := map[string]bool{}
	get := func(name string) (weights.Tensor, bool) {
		t, ok := ts[prefix+name]
		if ok {
			used[prefix+name] = true
		}
		return t, ok
	}
	values := map[string]pretrainedValue{}
	var problems []string
	for _, c := range convs {
		if w, ok := get(c.module + ".weight"); ok {
			v, err := convWeight(w)
			if err != nil {
				problems = append(problems, fmt.Sprintf("shape: %s.weight: %v", c.module, err))
			} else {
				v.source = prefix + c.module + ".weight"
				values[c.param+"/w"] = v
			}
		}
		for suffix, ours := range map[string]string{"weight": "gamma", "bias": "beta", "running_mean": "mean", "running_var": "var"} {
			if t, ok := get(c.bn + "." + suffix); ok {
				values[c.param+"/bn/"+ours] = pretrainedValue{shape: t.Shape, data: t.Data, source: prefix + c.bn + "." + suffix}
			}
		}
	}
	names := make([]string, 0, len(ts))
	for name := range ts {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		switch {
		case used[name]:
		case strings.HasPrefix(name, prefix+"fc.") || strings.HasSuffix(name, "num_batches_tracked"):
			rep.Ignored = append(rep.Ignored, name)
		default:
			problems = append(problems, fmt.Sprintf("unexpected: %s (no such layer in the network)", name))
		}
	}
	return values, problems
}

// fromONNX maps an ONNX export's convolutions onto l2gflow names: by the
// module paths in the node names when they match, else by graph order.
// Exports in inference mode fold each BatchNorm into its convolution's
// weights and bias; such a convolution gets an identity batch norm that
// adds the bias.
func fromONNX(convs []torchConv, g *weights.Graph, rep *ImportReport) (map[string]pretrainedValue, []string) {
	rep.Ignored = append(rep.Ignored, g.Unused...)
	byModule := map[string]int{}
	for i, c := range convs {
		byModule[c.module] = i
	}
	assign := make([]int, len(g.Convs))
	named := true
	seen := map[int]bool{}
	for i, c := range g.Convs {
		k, ok := byModule[c.Module]
		if !ok || seen[k] {
			named = false
			break
		}
		seen[k] = true
		assign[i] = k
	}
	var problems []string
	if !named {
		if len(g.Convs) != len(convs) {
			return nil, []string{fmt.Sprintf("structure: the ONNX graph has %d convolutions, the network %d, and its node names do not say which is which", len(g.Convs), len(convs))}
		}
		for i := range assign {
			assign[i] = i
		}
	}
	values := map[string]pretrainedValue{}
	for i, c := range g.Convs {
		tc := convs[assign[i]]
		src := c.Node
		if c.Group != 1 {
			problems = append(problems, fmt.Sprintf("shape: %s is a grouped convolution (%d groups)", src, c.Group))
			continue
		}
		w, err := convWeight(c.Weight)
		if err != nil {
			problems = append(problems, fmt.Sprintf("shape: %s: %v", src, err))
			continue
		}
		w.source = src
		values[tc.param+"/w"] = w
		out := c.Weight.Shape[0]
		put := func(ours string, data []float32) {
			values[tc.param+"/bn/"+ours] = pretrainedValue{shape: []int{len(data)}, data: data, source: src + " (" + ours + ")"}
		}
		switch {
		case c.BN != nil:
			put("gamma", c.BN.Scale.Data)
			put("beta", c.BN.Bias.Data)
			mean := c.BN.Mean.Data
			if c.Bias != nil {
				// A bias before batch norm shifts the mean it subtracts.
				mean = slices.Clone(mean)
				for j := range mean {
					if j < len(c.Bias.Data) {
						mean[j] -= c.Bias.Data[j]
					}
				}
			}
			put("mean", mean)
			// Keep the file's epsilon: var + eps stays the same.
			v := slices.Clone(c.BN.Var.Data)
			for j := range v {
				v[j] += c.BN.Epsilon - bnEps
			}
			put("var", v)
		default:
			ones, zeros, unit := make([]float32, out), make([]float32, out), make([]float32, out)
			for j := range out {
				ones[j], unit[j] = 1, 1-bnEps
			}
			beta := zeros
			if c.Bias != nil {
				beta = c.Bias.Data
			}
			put("gamma", ones)
			put("beta", beta)
			put("mean", zeros)
			put("var", unit)
		}
	}
	return values, problems
}

// convWeight converts a PyTorch convolution weight [O, I, kh, kw] to
// l2gflow's [kh, kw, I, O].
func convWeight(t weights.Tensor) (pretrainedValue, error) {
	if len(t.Shape) != 4 || t.Shape[2] != t.Shape[3] {
		return pretrainedValue{}, fmt.Errorf("want a square convolution kernel [out, in, k, k], got %v", t.Shape)
	}
	o, in, kh, kw := t.Shape[0], t.Shape[1], t.Shape[2], t.Shape[3]
	out := make([]float32, len(t.Data))
	for oi := range o {
		for ii := range in {
			for y := range kh {
				for x := range kw {
					out[((y*kw+x)*in+ii)*o+oi] = t.Data[((oi*in+ii)*kh+y)*kw+x]
				}
			}
		}
	}
	return pretrainedValue{shape: []int{kh, kw, in, o}, data: out}, nil
}
