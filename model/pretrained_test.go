package model

import (
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/l2gflow/l2gflow/io/weights"
	"github.com/l2gflow/l2gflow/model/modeltest"
)

// fixtureDir holds files made by testdata/pretrained/make_fixture.py with
// PyTorch: a random torchvision resnet18 as safetensors and ONNX, fixed
// inputs and its features.
const fixtureDir = "testdata/pretrained"

// readFixture reads a file of fixtureDir.
func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	return modeltest.ReadFixture(t, filepath.Join(fixtureDir, name))
}

// nchwToNHWC converts a PyTorch tensor layout.
func nchwToNHWC(t weights.Tensor) ([]float32, [4]int) {
	n, c, h, w := t.Shape[0], t.Shape[1], t.Shape[2], t.Shape[3]
	out := make([]float32, len(t.Data))
	for i := range n {
		for k := range c {
			for y := range h {
				for x := range w {
					out[((i*h+y)*w+x)*c+k] = t.Data[((i*c+k)*h+y)*w+x]
				}
			}
		}
	}
	return out, [4]int{n, h, w, c}
}

// backboneFeatures runs net's feature extractor (inference mode) on x.
func backboneFeatures(t *testing.T, net *Net, params *Params, x []float32, dims [4]int) []float32 {
	t.Helper()
	backend := testBackend(t)
	specs, err := net.ParamSpecs(backend, GlobalPrefix)
	if err != nil {
		t.Fatal(err)
	}
	exec, err := graph.NewExec(backend, func(g *graph.Graph, inputs []*Node) *Node {
		ps := &paramSource{g: g, nodes: bindParams(specs, inputs)}
		y, _ := net.backbone(&layerBuilder{ps: ps, prefix: GlobalPrefix}, inputs[len(specs)])
		return y
	})
	if err != nil {
		t.Fatal(err)
	}
	var args []any
	for _, s := range specs {
		args = append(args, tensors.FromFlatDataAndDimensions(params.Values[params.Index(s.Name)], s.Shape...))
	}
	args = append(args, tensors.FromFlatDataAndDimensions(x, dims[:]...))
	outs, err := exec.Call(args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tensors.CopyFlatData[float32](outs[0])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPretrainedParity loads the torchvision resnet18 from its
// safetensors and its ONNX export and checks the project's backbone
// reproduces PyTorch's features at output strides 16 and 8, on an even and
// an odd input size.
func TestPretrainedParity(t *testing.T) {
	feats, err := weights.ReadSafetensors(readFixture(t, "features.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"safetensors": "resnet18.safetensors.zst", "onnx": "resnet18.onnx.zst", "onnx-unfolded": "", "onnx-unnamed": ""}
	for format, name := range files {
		var f *weights.File
		switch {
		case format == "onnx-unnamed":
			// Node names without module paths: mapped by graph order.
			if f, err = weights.Parse(readFixture(t, "resnet18.onnx.zst")); err != nil {
				t.Fatal(err)
			}
			for i := range f.Graph.Convs {
				f.Graph.Convs[i].Module, f.Graph.Convs[i].Node = "", fmt.Sprintf("Conv_%d", i)
			}
		case name != "":
			if f, err = weights.Parse(readFixture(t, name)); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if string(f.Format) != format {
				t.Fatalf("%s detected as %s", name, f.Format)
			}
		default:
			f = unfoldedONNX(t)
		}
		for _, os := range []int{16, 8} {
			arch, err := Preset("resnet18", os)
			if err != nil {
				t.Fatal(err)
			}
			net := &Net{Arch: arch, Classes: 3}
			specs, err := net.ParamSpecs(testBackend(t), GlobalPrefix)
			if err != nil {
				t.Fatal(err)
			}
			params := InitParams(specs, 1)
			rep, err := net.LoadPretrained(params, f, true, GlobalPrefix)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			// 20 convolutions, each with 4 batch-norm tensors.
			if rep.Loaded != 100 {
				t.Errorf("%s: loaded %d parameters, want 100", name, rep.Loaded)
			}
			if !strings.Contains(strings.Join(rep.Ignored, ","), "fc.weight") {
				t.Errorf("%s: fc.weight not reported as ignored: %v", name, rep.Ignored)
			}
			for _, in := range []string{"input", "input_odd"} {
				key := "os" + map[int]string{16: "16", 8: "8"}[os]
				want := feats[key+strings.TrimPrefix(in, "input")]
				x, dims := nchwToNHWC(feats[in])
				got := backboneFeatures(t, net, params, x, dims)
				wantNHWC, wdims := nchwToNHWC(want)
				if len(got) != len(wantNHWC) {
					t.Fatalf("%s os%d %s: %d features, want %d (%v)", format, os, in, len(got), len(wantNHWC), wdims)
				}
				var num, den float64
				for i := range got {
					d := float64(got[i] - wantNHWC[i])
					num += d * d
					den += float64(wantNHWC[i]) * float64(wantNHWC[i])
				}
				rel := math.Sqrt(num / den)
				t.Logf("%s os%d %s: relative error %.2g", format, os, in, rel)
				if rel > 1e-4 || den == 0 {
					t.Errorf("%s os%d %s: relative error %.3g, want <= 1e-4", format, os, in, rel)
				}
			}
		}
	}
}

// fixtureStateDict reads the fixture's resnet18 state dict.
func fixtureStateDict(t *testing.T) map[string]weights.Tensor {
	t.Helper()
	ts, err := weights.ReadSafetensors(readFixture(t, "resnet18.safetensors.zst"))
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func TestLoadPretrainedReports(t *testing.T) {
	base := fixtureStateDict(t)
	with := func(edit func(m map[string]weights.Tensor)) *weights.File {
		m := make(map[string]weights.Tensor, len(base))
		for k, v := range base {
			m[k] = v
		}
		edit(m)
		return &weights.File{Name: "w.safetensors", Format: weights.Safetensors, Tensors: m}
	}
	tests := []struct {
		name    string
		arch    string
		file    *weights.File
		want    []string // in the strict error and in the lenient report
		loaded  int      // parameters loaded when not strict
		noError bool     // strict loading succeeds
	}{
		{"exact", "resnet18", with(func(map[string]weights.Tensor) {}), nil, 100, true},
		{"DataParallel prefix", "resnet18", with(func(m map[string]weights.Tensor) {
			renamed := map[string]weights.Tensor{}
			for k, v := range m {
				renamed["module."+k] = v
			}
			clear(m)
			for k, v := range renamed {
				m[k] = v
			}
		}), nil, 100, true},
		{"missing", "resnet18", with(func(m map[string]weights.Tensor) { delete(m, "layer2.1.bn1.running_var") }),
			[]string{"missing: stage2/block2/conv1/bn/var"}, 99, false},
		{"unexpected", "resnet18", with(func(m map[string]weights.Tensor) {
			m["layer5.0.conv1.weight"] = weights.Tensor{Shape: []int{1}, Data: []float32{1}}
		}), []string{"unexpected: layer5.0.conv1.weight"}, 100, false},
		{"mis-shaped", "resnet18", with(func(m map[string]weights.Tensor) {
			m["layer1.0.bn2.weight"] = weights.Tensor{Shape: []int{32}, Data: make([]float32, 32)}
		}), []string{"shape: layer1.0.bn2.weight is [32]", "wants [64]"}, 99, false},
		{"deeper network", "resnet34", with(func(map[string]weights.Tensor) {}),
			[]string{"missing: stage1/block3/conv1/w", "missing: stage3/block6/conv2/bn/gamma"}, 100, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			arch, _ := Preset(tc.arch, 16)
			net := &Net{Arch: arch, Classes: 2}
			specs, err := net.ParamSpecs(testBackend(t), LocalPrefix)
			if err != nil {
				t.Fatal(err)
			}
			_, err = net.LoadPretrained(InitParams(specs, 1), tc.file, true, LocalPrefix)
			if (err == nil) != tc.noError {
				t.Fatalf("strict: error %v, want error: %v", err, !tc.noError)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("strict error does not name %q:\n%v", w, err)
				}
			}
			rep, err := net.LoadPretrained(InitParams(specs, 1), tc.file, false, LocalPrefix)
			if err != nil {
				t.Fatalf("lenient: %v", err)
			}
			if rep.Loaded != tc.loaded {
				t.Errorf("lenient: loaded %d, want %d", rep.Loaded, tc.loaded)
			}
			skipped := strings.Join(rep.Skipped, "\n")
			for _, w := range tc.want {
				if !strings.Contains(skipped, w) {
					t.Errorf("lenient report does not list %q:\n%s", w, skipped)
				}
			}
			if len(tc.want) == 0 && len(rep.Skipped) > 0 {
				t.Errorf("skipped %v, want none", rep.Skipped)
			}
		})
	}
	// The tiny preset has no counterpart.
	arch, _ := Preset("tiny", 8)
	net := &Net{Arch: arch, Classes: 2}
	specs, _ := net.ParamSpecs(testBackend(t), GlobalPrefix)
	if _, err := net.LoadPretrained(InitParams(specs, 1), with(func(map[string]weights.Tensor) {}), false, GlobalPrefix); err == nil || !strings.Contains(err.Error(), "no torchvision counterpart") {
		t.Errorf("tiny: %v, want a refusal", err)
	}
}

// unfoldedONNX is the fixture's network as an ONNX graph that keeps its
// BatchNormalization nodes (an export in training-preserving mode), with
// a convolution bias and another epsilon that the mapping must absorb.
func unfoldedONNX(t *testing.T) *weights.File {
	sd := fixtureStateDict(t)
	arch, _ := Preset("resnet18", 16)
	convs, err := torchvisionConvs(arch)
	if err != nil {
		t.Fatal(err)
	}
	g := &weights.Graph{}
	for _, c := range convs {
		w := sd[c.module+".weight"]
		out := w.Shape[0]
		bias := weights.Tensor{Shape: []int{out}, Data: make([]float32, out)}
		mean := slices.Clone(sd[c.bn+".running_mean"].Data)
		variance := slices.Clone(sd[c.bn+".running_var"].Data)
		for j := range out {
			bias.Data[j] = 0.01 * float32(j%7)
			mean[j] += bias.Data[j] // BN(conv + b) with mean + b is BN(conv) with mean
			variance[j] -= 1e-3 - 1e-5
		}
		g.Convs = append(g.Convs, weights.Conv{Node: "/" + c.module + "/Conv", Weight: w, Bias: &bias, Group: 1,
			BN: &weights.BatchNorm{Scale: sd[c.bn+".weight"], Bias: sd[c.bn+".bias"], Mean: weights.Tensor{Shape: []int{out}, Data: mean},
				Var: weights.Tensor{Shape: []int{out}, Data: variance}, Epsilon: 1e-3}})
	}
	g.Unused = []string{"fc.weight", "fc.bias"}
	return &weights.File{Name: "unfolded.onnx", Format: weights.ONNX, Graph: g}
}

// TestTorchvisionNamesAndShapes loads state dicts with torchvision's exact
// tensor names and shapes (listed by make_fixture.py) into each ResNet
// preset, strictly: every backbone parameter is found, nothing is left
// over but the classifier and BatchNorm counters.
func TestTorchvisionNamesAndShapes(t *testing.T) {
	var shapes map[string]map[string][]int
	if err := json.Unmarshal(readFixture(t, "torchvision_shapes.json"), &shapes); err != nil {
		t.Fatal(err)
	}
	for _, arch := range []string{"resnet18", "resnet34", "resnet50"} {
		ts := map[string]weights.Tensor{}
		for name, shape := range shapes[arch] {
			ts[name] = weights.Tensor{Shape: shape, Data: make([]float32, weights.Size(shape))}
		}
		a, err := Preset(arch, 8)
		if err != nil {
			t.Fatal(err)
		}
		net := &Net{Arch: a, Classes: 20}
		specs, err := net.ParamSpecs(testBackend(t), GlobalPrefix)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := net.LoadPretrained(InitParams(specs, 1), &weights.File{Name: arch, Format: weights.Safetensors, Tensors: ts}, true, GlobalPrefix)
		if err != nil {
			t.Fatalf("%s: %v", arch, err)
		}
		if want := len(specs) - 1; rep.Loaded != want { // all but the classifier
			t.Errorf("%s: loaded %d of %d backbone parameters", arch, rep.Loaded, want)
		}
		for _, name := range rep.Ignored {
			if !strings.HasPrefix(name, "fc.") && !strings.HasSuffix(name, "num_batches_tracked") {
				t.Errorf("%s: ignored %s", arch, name)
			}
		}
	}
}
