package model

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
	"github.com/klauspost/compress/zstd"
	"github.com/l2gflow/l2gflow/io/weights"
)

// fixtureDir holds files made by testdata/pretrained/make_fixture.py with
// PyTorch: a random torchvision resnet18 as safetensors and ONNX, fixed
// inputs and its features.
const fixtureDir = "testdata/pretrained"

// readFixture reads a fixture file, decompressing .zst files.
func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fixtureDir, name))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(name, ".zst") {
		dec, err := zstd.NewReader(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer dec.Close()
		if data, err = dec.DecodeAll(data, nil); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	return data
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
		return net.backbone(&layerBuilder{ps: ps, prefix: GlobalPrefix}, inputs[len(specs)])
	})
	if err != nil {
		t.Fatal(err)
	}
	var args []any
	for _, s := range specs {
		args = append(args, tensors.FromFlatDataAndDimensions(params.Values[params.Index(s.Name)], s.Shape...))
	}
	args = append(args, tensors.FromFlatDataAndDimensions(x, dims[:]...))
	outs, err := exec.Exec(args...)
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
	files := map[string]string{"safetensors": "resnet18.safetensors.zst", "onnx": "resnet18.onnx.zst"}
	for format, name := range files {
		f, err := weights.Parse(readFixture(t, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(f.Format) != format {
			t.Fatalf("%s detected as %s", name, f.Format)
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
			rep, err := net.LoadPretrained(params, GlobalPrefix, f, true)
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
