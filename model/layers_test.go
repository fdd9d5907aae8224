package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/l2gflow/l2gflow/io/artifact"
	"github.com/l2gflow/l2gflow/model/backbone"
)

func testBackend(t testing.TB) compute.Backend {
	t.Helper()
	b, err := NewBackend(DefaultBackend)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randSlice(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// naiveConv is the textbook convolution, for reference.
func naiveConv(x []float32, n, h, w, cin int, wt []float32, k, cout, stride, dil int) ([]float32, int, int) {
	pad := dil * (k - 1) / 2
	ho := (h+2*pad-dil*(k-1)-1)/stride + 1
	wo := (w+2*pad-dil*(k-1)-1)/stride + 1
	out := make([]float32, n*ho*wo*cout)
	for b := 0; b < n; b++ {
		for oy := 0; oy < ho; oy++ {
			for ox := 0; ox < wo; ox++ {
				for co := 0; co < cout; co++ {
					var s float64
					for i := 0; i < k; i++ {
						for j := 0; j < k; j++ {
							iy, ix := oy*stride+i*dil-pad, ox*stride+j*dil-pad
							if iy < 0 || ix < 0 || iy >= h || ix >= w {
								continue
							}
							for ci := 0; ci < cin; ci++ {
								s += float64(x[((b*h+iy)*w+ix)*cin+ci]) * float64(wt[((i*k+j)*cin+ci)*cout+co])
							}
						}
					}
					out[((b*ho+oy)*wo+ox)*cout+co] = float32(s)
				}
			}
		}
	}
	return out, ho, wo
}

func TestConv2DMatchesNaive(t *testing.T) {
	backend := testBackend(t)
	r := rand.New(rand.NewPCG(1, 2))
	tests := []struct{ n, h, w, cin, k, cout, stride, dil int }{
		{2, 7, 9, 3, 3, 4, 1, 1},
		{1, 8, 8, 5, 3, 2, 2, 1},
		{1, 9, 7, 4, 3, 3, 1, 2},
		{2, 6, 6, 70, 3, 5, 1, 1}, // im2col path
		{1, 10, 10, 3, 7, 4, 2, 1},
		{2, 11, 9, 3, 3, 4, 2, 2}, // strided and dilated, odd sizes
		{1, 7, 7, 2, 5, 3, 3, 1},  // stride 3
		{2, 5, 5, 6, 1, 3, 1, 1},
		{1, 6, 6, 6, 1, 3, 2, 1},
	}
	for _, tc := range tests {
		x := randSlice(r, tc.n*tc.h*tc.w*tc.cin)
		wt := randSlice(r, tc.k*tc.k*tc.cin*tc.cout)
		want, ho, wo := naiveConv(x, tc.n, tc.h, tc.w, tc.cin, wt, tc.k, tc.cout, tc.stride, tc.dil)
		exec, err := graph.NewExec(backend, func(x, w *Node) *Node { return conv2DGraph(x, w, tc.stride, tc.dil) })
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Call(tensors.FromFlatDataAndDimensions(x, tc.n, tc.h, tc.w, tc.cin),
			tensors.FromFlatDataAndDimensions(wt, tc.k, tc.k, tc.cin, tc.cout))
		if err != nil {
			t.Fatal(err)
		}
		if d := out[0].Shape().Dimensions; d[1] != ho || d[2] != wo {
			t.Fatalf("%+v: shape %v, want %dx%d", tc, d, ho, wo)
		}
		got := tensors.MustCopyFlatData[float32](out[0])
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > 1e-3*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("%+v: element %d = %g, want %g", tc, i, got[i], want[i])
			}
		}
	}
}

// TestMaxPoolInferenceMatchesTraining checks that the stem's max pooling
// in inference (the backend's ReduceWindow) gives exactly what the
// training graph's gather gives, on non-negative inputs (after a ReLU)
// of odd and even sizes, one of them 1x1.
func TestMaxPoolInferenceMatchesTraining(t *testing.T) {
	backend := testBackend(t)
	r := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct{ n, h, w, c int }{{2, 9, 8, 16}, {1, 16, 16, 64}, {3, 7, 11, 5}, {1, 1, 1, 3}} {
		x := randSlice(r, tc.n*tc.h*tc.w*tc.c)
		for i := range x {
			x[i] = float32(math.Abs(float64(x[i])))
		}
		in := tensors.FromFlatDataAndDimensions(x, tc.n, tc.h, tc.w, tc.c)
		var outs [2][]float32
		var dims [2][]int
		for i, training := range []bool{true, false} {
			b := &layerBuilder{training: training}
			got, err := graph.CallOnce(backend, func(x *Node) *Node { return b.maxPool3x3s2(x) }, in)
			if err != nil {
				t.Fatal(err)
			}
			outs[i], dims[i] = tensors.MustCopyFlatData[float32](got), got.Shape().Dimensions
		}
		if fmt.Sprint(dims[0]) != fmt.Sprint(dims[1]) {
			t.Fatalf("%+v: shapes %v (training) and %v (inference)", tc, dims[0], dims[1])
		}
		for i := range outs[0] {
			if outs[0][i] != outs[1][i] {
				t.Fatalf("%+v: element %d = %g in training, %g in inference", tc, i, outs[0][i], outs[1][i])
			}
		}
	}
}

func TestPresetsBuild(t *testing.T) {
	backend := testBackend(t)
	for _, name := range backbone.Names() {
		for _, os := range []int{8, 16} {
			a, err := Preset(name, os)
			if err != nil {
				t.Fatal(err)
			}
			net := &Net{Arch: a, Classes: 3}
			specs, err := net.ParamSpecs(backend, "g/")
			if err != nil {
				t.Fatalf("%s/%d: %v", name, os, err)
			}
			p := InitParams(specs, 1)
			out, err := runForward(backend, net, p, "g/", false, make([]float32, 1*32*32*3), 1, 32, 32)
			if err != nil {
				t.Fatalf("%s/%d: %v", name, os, err)
			}
			d := out.CAM.Shape().Dimensions
			if d[1] != 32/os || d[2] != 32/os || d[3] != 4 {
				t.Errorf("%s/%d: CAM shape %v, want [1 %d %d 4]", name, os, d, 32/os, 32/os)
			}
			t.Logf("%s os%d: %d parameters", name, os, p.Count())
		}
	}
}

type forwardOut struct{ CAM, Logits *tensors.Tensor }

func runForward(backend compute.Backend, net *Net, p *Params, prefix string, _ bool, x []float32, n, h, w int) (forwardOut, error) {
	f, err := NewForward(backend, net, p, prefix)
	if err != nil {
		return forwardOut{}, err
	}
	cam, dims, logits, err := f.Run(x, n, h, w, nil)
	if err != nil {
		return forwardOut{}, err
	}
	return forwardOut{tensors.FromFlatDataAndDimensions(cam, dims...), tensors.FromFlatDataAndDimensions(logits, n, net.Classes)}, nil
}

func testManifest(classes int) *artifact.Manifest {
	m := &artifact.Manifest{Kind: artifact.KindModel, Input: artifact.Input{Size: 128, Mean: []float64{0.485, 0.456, 0.406}, Std: []float64{0.229, 0.224, 0.225}}}
	for i := 0; i < classes; i++ {
		m.Classes = append(m.Classes, fmt.Sprintf("c%d", i))
	}
	return m
}

// TestBatchNormTrainingMatchesGraph checks batch normalisation in training
// (the backend's BatchNormForTraining and BatchNormGradient ops) against
// the same arithmetic written as element-wise graph ops (the model's
// earlier form): the normalised output, the running statistics' updates
// and the gradients of a weighted sum of the output with respect to the
// input, the scale and the shift, on channel counts that are and are not
// multiples of the vector length and a batch mean far from zero.
func TestBatchNormTrainingMatchesGraph(t *testing.T) {
	backend := testBackend(t)
	r := rand.New(rand.NewPCG(7, 8))
	for _, tc := range []struct {
		n, h, w, c int
		offset     float32
	}{{2, 5, 7, 16, 0}, {4, 9, 9, 33, 0}, {8, 12, 12, 96, 0}, {3, 4, 6, 7, 50}} {
		size := tc.n * tc.h * tc.w * tc.c
		x, dy := randSlice(r, size), randSlice(r, size)
		for i := range x {
			x[i] = 2*x[i] + tc.offset
		}
		gamma, beta := randSlice(r, tc.c), randSlice(r, tc.c)
		rm, rv := randSlice(r, tc.c), randSlice(r, tc.c)
		for i := range rv {
			rv[i] = 1 + float32(math.Abs(float64(rv[i])))
		}
		names := []string{"bn/gamma", "bn/beta", "bn/mean", "bn/var"}
		run := func(reference bool) [][]float32 {
			exec, err := graph.NewExec(backend, func(x, dy, gamma, beta, rm, rv *Node) []*Node {
				var y, newMean, newVar *Node
				if reference {
					var mean, variance *Node
					y, mean, variance = batchNormGraph(x, gamma, beta)
					m, keep := graph.ConstAs(mean, bnMomentum), graph.ConstAs(mean, 1-bnMomentum)
					newMean = graph.Add(graph.Mul(keep, rm), graph.Mul(m, mean))
					newVar = graph.Add(graph.Mul(keep, rv), graph.Mul(m, variance))
				} else {
					ps := &paramSource{g: x.Graph(), nodes: bindParams(
						[]ParamSpec{{Name: names[0]}, {Name: names[1]}, {Name: names[2]}, {Name: names[3]}},
						[]*Node{gamma, beta, rm, rv}), updates: map[string]*Node{}}
					b := &layerBuilder{ps: ps, training: true}
					y = b.batchNorm("bn", x)
					newMean, newVar = ps.updates[names[2]], ps.updates[names[3]]
				}
				loss := graph.ReduceAllSum(graph.Mul(y, dy))
				grads := graph.Gradient(loss, x, gamma, beta)
				return append([]*Node{y, newMean, newVar}, grads...)
			})
			if err != nil {
				t.Fatal(err)
			}
			outs, err := exec.Call(tensors.FromFlatDataAndDimensions(x, tc.n, tc.h, tc.w, tc.c),
				tensors.FromFlatDataAndDimensions(dy, tc.n, tc.h, tc.w, tc.c),
				tensors.FromFlatDataAndDimensions(gamma, tc.c), tensors.FromFlatDataAndDimensions(beta, tc.c),
				tensors.FromFlatDataAndDimensions(rm, tc.c), tensors.FromFlatDataAndDimensions(rv, tc.c))
			if err != nil {
				t.Fatal(err)
			}
			res := make([][]float32, len(outs))
			for i, o := range outs {
				res[i] = tensors.MustCopyFlatData[float32](o)
			}
			return res
		}
		want, got := run(true), run(false)
		for i, what := range []string{"output", "running mean", "running variance", "input gradient", "scale gradient", "shift gradient"} {
			// The sums over the batch (scale and shift gradients) add up
			// to several hundred values' rounding.
			tol := 2e-4
			if i >= 4 {
				tol = 2e-4 * math.Sqrt(float64(tc.n*tc.h*tc.w))
			}
			for j := range want[i] {
				if d := math.Abs(float64(got[i][j] - want[i][j])); d > tol*(1+math.Abs(float64(want[i][j]))) {
					t.Fatalf("%+v: %s[%d] = %g, want %g", tc, what, j, got[i][j], want[i][j])
				}
			}
		}
	}
}
