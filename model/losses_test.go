package model

import (
	"math"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/l2gflow/l2gflow/model/maps"
)

// run1 executes fn on the given tensors and returns its flat output.
func runGraph(t *testing.T, backend compute.Backend, fn func(g *graph.Graph, in []*Node) *Node, inputs ...*tensors.Tensor) []float32 {
	t.Helper()
	exec, err := graph.NewExec(backend, func(g *graph.Graph, in []*Node) []*Node { return []*Node{fn(g, in)} })
	if err != nil {
		t.Fatal(err)
	}
	args := make([]any, len(inputs))
	for i, x := range inputs {
		args[i] = x
	}
	out, err := exec.Call(args...)
	if err != nil {
		t.Fatal(err)
	}
	return tensors.MustCopyFlatData[float32](out[0])
}

func close32(a, b float32, tol float64) bool {
	return math.Abs(float64(a-b)) <= tol*(1+math.Abs(float64(b)))
}

func softplus(x float64) float64 { return math.Log1p(math.Exp(x)) }

func TestMultiLabelSoftMargin(t *testing.T) {
	backend := testBackend(t)
	x := []float32{2, -1, 0.5, 0}
	y := []float32{1, 0, 0, 1}
	// By hand: mean of softplus(-2), softplus(-1), softplus(0.5), softplus(0).
	want := (softplus(-2) + softplus(-1) + softplus(0.5) + softplus(0)) / 4
	got := runGraph(t, backend, func(g *graph.Graph, in []*Node) *Node { return MultiLabelSoftMargin(in[0], in[1]) },
		tensors.FromFlatDataAndDimensions(x, 2, 2), tensors.FromFlatDataAndDimensions(y, 2, 2))
	if !close32(got[0], float32(want), 1e-5) {
		t.Errorf("loss = %g, want %g", got[0], want)
	}
}

func TestLocalTarget(t *testing.T) {
	backend := testBackend(t)
	// One view, 1x3 pixels, C=2 classes + background (K=3).
	// Class 1 is absent from the image.
	cam := []float32{
		4, 9, 1, // pixel 0: class 1 largest but absent -> class 0 (4/4=1) vs bg (1/2)
		2, 1, -5, // pixel 1: class 0 = 2/4 = 0.5, bg 0 -> class 0
		-1, 0, 2, // pixel 2: bg 2/2=1 -> bg
	}
	present := []float32{1, 0, 1}
	noSal := runGraph(t, backend, func(g *graph.Graph, in []*Node) *Node {
		return LocalTarget(in[0], in[1], in[2], in[3], 0.001)
	}, tensors.FromFlatDataAndDimensions(cam, 1, 1, 3, 3), tensors.FromFlatDataAndDimensions(present, 1, 3),
		tensors.FromFlatDataAndDimensions([]float32{0.2, 0.4, 0.9}, 1, 1, 3), tensors.FromFlatDataAndDimensions([]float32{0}, 1))
	want := []float32{1, 0, 0, 1, 0, 0, 0, 0, 1}
	for i := range want {
		if noSal[i] != want[i] {
			t.Fatalf("target without saliency = %v, want %v", noSal, want)
		}
	}
	// With saliency: foreground x S, background x (1-S).
	withSal := runGraph(t, backend, func(g *graph.Graph, in []*Node) *Node {
		return LocalTarget(in[0], in[1], in[2], in[3], 0.001)
	}, tensors.FromFlatDataAndDimensions(cam, 1, 1, 3, 3), tensors.FromFlatDataAndDimensions(present, 1, 3),
		tensors.FromFlatDataAndDimensions([]float32{0.2, 0.4, 0.9}, 1, 1, 3), tensors.FromFlatDataAndDimensions([]float32{1}, 1))
	want = []float32{0.2, 0, 0, 0.4, 0, 0, 0, 0, 0.1}
	for i := range want {
		if !close32(withSal[i], want[i], 1e-6) {
			t.Fatalf("target with saliency = %v, want %v", withSal, want)
		}
	}
	// A high bgThr drops weak winners: pixel 1's class 0 is at 0.5.
	high := runGraph(t, backend, func(g *graph.Graph, in []*Node) *Node {
		return LocalTarget(in[0], in[1], in[2], in[3], 0.6)
	}, tensors.FromFlatDataAndDimensions(cam, 1, 1, 3, 3), tensors.FromFlatDataAndDimensions(present, 1, 3),
		tensors.FromFlatDataAndDimensions([]float32{0, 0, 0}, 1, 1, 3), tensors.FromFlatDataAndDimensions([]float32{0}, 1))
	want = []float32{1, 0, 0, 0, 0, 0, 0, 0, 1}
	for i := range want {
		if high[i] != want[i] {
			t.Fatalf("target with bgThr 0.6 = %v, want %v", high, want)
		}
	}
}

func TestTransferLosses(t *testing.T) {
	backend := testBackend(t)
	// One pixel, 2 channels: logits (0, ln 3) -> softmax (0.25, 0.75).
	logits := tensors.FromFlatDataAndDimensions([]float32{0, float32(math.Log(3))}, 1, 1, 1, 2)
	target := tensors.FromFlatDataAndDimensions([]float32{0, 1}, 1, 1, 1, 2)
	mse := runGraph(t, backend, func(g *graph.Graph, in []*Node) *Node { return TransferMSE(in[0], in[1], 10) }, logits, target)
	// 10 * mean(0.25^2, 0.25^2) = 0.625
	if !close32(mse[0], 0.625, 1e-5) {
		t.Errorf("mse = %g, want 0.625", mse[0])
	}
	kl := runGraph(t, backend, func(g *graph.Graph, in []*Node) *Node { return TransferKL(in[0], in[1], 2) }, logits, target)
	// 2 * (1 * (log 1 - log 0.75)) = -2 log 0.75
	if want := -2 * math.Log(0.75); !close32(kl[0], float32(want), 1e-5) {
		t.Errorf("kl = %g, want %g", kl[0], want)
	}
	// A target with no mass contributes nothing.
	zero := tensors.FromFlatDataAndDimensions([]float32{0, 0}, 1, 1, 1, 2)
	kl = runGraph(t, backend, func(g *graph.Graph, in []*Node) *Node { return TransferKL(in[0], in[1], 2) }, logits, zero)
	if kl[0] != 0 {
		t.Errorf("kl of an empty target = %g, want 0", kl[0])
	}
}

func TestAlignToViewsEqualsCropWhenSizesMatch(t *testing.T) {
	backend := testBackend(t)
	// One image 4x5 with 2 channels; two views of 2x3 at integer offsets.
	const hf, wf, k = 4, 5, 2
	feats := make([]float32, hf*wf*k)
	for i := range feats {
		feats[i] = float32(i)
	}
	boxes := [][2]int{{0, 0}, {2, 1}} // (y0, x0)
	var ry, rx []float32
	for _, b := range boxes {
		ry = append(ry, maps.InterpMatrix(2, float64(b[0]), 2, hf)...)
		rx = append(rx, maps.InterpMatrix(3, float64(b[1]), 3, wf)...)
	}
	got := runGraph(t, backend, func(g *graph.Graph, in []*Node) *Node { return AlignToViews(in[0], in[1], in[2]) },
		tensors.FromFlatDataAndDimensions(feats, 1, hf, wf, k),
		tensors.FromFlatDataAndDimensions(ry, 1, 2, 2, hf), tensors.FromFlatDataAndDimensions(rx, 1, 2, 3, wf))
	i := 0
	for _, b := range boxes {
		for y := 0; y < 2; y++ {
			for x := 0; x < 3; x++ {
				for c := 0; c < k; c++ {
					want := feats[((b[0]+y)*wf+b[1]+x)*k+c]
					if !close32(got[i], want, 1e-5) {
						t.Fatalf("view %v (%d,%d,%d) = %g, want %g", b, y, x, c, got[i], want)
					}
					i++
				}
			}
		}
	}
}
