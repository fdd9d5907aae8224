package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// convCase is one convolution layer of the equivalence tests.
type convCase struct{ n, h, w, cin, cout, k, s, d int }

// compareConvs checks that two convolution implementations give the same
// output and input and weight gradients (of the sum of squared outputs),
// to float tolerance, on random data for every case.
func compareConvs(t *testing.T, seed uint64, cases []convCase, want, got func(x, w *Node, s, d int) *Node) {
	backend := testBackend(t)
	r := rand.New(rand.NewPCG(seed, seed+1))
	for _, c := range cases {
		t.Run(fmt.Sprintf("%+v", c), func(t *testing.T) {
			x := tensors.FromFlatDataAndDimensions(randSlice(r, c.n*c.h*c.w*c.cin), c.n, c.h, c.w, c.cin)
			w := tensors.FromFlatDataAndDimensions(randSlice(r, c.k*c.k*c.cin*c.cout), c.k, c.k, c.cin, c.cout)
			run := func(conv func(x, w *Node, s, d int) *Node) []*tensors.Tensor {
				e := graph.MustNewExec(backend, func(x, w *Node) []*Node {
					y := conv(x, w, c.s, c.d)
					gs := graph.Gradient(graph.ReduceAllSum(graph.Mul(y, y)), x, w)
					return []*Node{y, gs[0], gs[1]}
				})
				return e.MustCall(x, w)
			}
			wantT, gotT := run(want), run(got)
			for i, name := range []string{"output", "input gradient", "weight gradient"} {
				a, _ := tensors.CopyFlatData[float32](wantT[i])
				b, _ := tensors.CopyFlatData[float32](gotT[i])
				if len(a) != len(b) {
					t.Fatalf("%s: %v, want %v", name, gotT[i].Shape(), wantT[i].Shape())
				}
				for j := range a {
					if math.Abs(float64(a[j]-b[j])) > 1e-3*(1+math.Abs(float64(a[j]))) {
						t.Fatalf("%s[%d]: %g, want %g", name, j, b[j], a[j])
					}
				}
			}
		})
	}
}

// TestConvRectMatchesConv2D compares the rectangle-gather convolution with
// the tap-gather one, values and gradients, over strides, dilations and
// odd sizes.
func TestConvRectMatchesConv2D(t *testing.T) {
	compareConvs(t, 5, []convCase{
		{2, 9, 7, 3, 5, 3, 1, 1}, {2, 9, 7, 3, 5, 3, 2, 1}, {1, 13, 10, 4, 6, 7, 2, 1},
		{2, 11, 9, 3, 4, 3, 1, 2}, {1, 8, 8, 2, 3, 3, 1, 4}, {2, 5, 6, 3, 4, 1, 2, 1}, {1, 6, 7, 2, 2, 3, 1, 3},
	}, conv2DTaps, conv2DRect)
}

// TestConvGeneralMatchesConv2D compares the backend-ConvGeneral
// convolution (run by the fork as im2col matrix multiplications, its
// gradients too) with conv2DGraph, values and both gradients, over the layer
// shapes the presets use: strides, dilations, 1x1 at strides 1 (the
// fork's in-place rows, 105 of them: not a multiple of 8) and 2, the 7x7 stem,
// odd sizes, and one large enough to take several chunks.
func TestConvGeneralMatchesConv2D(t *testing.T) {
	compareConvs(t, 7, []convCase{
		{2, 9, 7, 3, 5, 3, 1, 1}, {2, 9, 7, 3, 5, 3, 2, 1}, {1, 13, 10, 3, 6, 7, 2, 1},
		{2, 11, 9, 8, 4, 3, 1, 2}, {1, 8, 8, 16, 3, 3, 1, 4}, {2, 5, 6, 3, 4, 1, 2, 1}, {1, 6, 7, 2, 2, 1, 1, 1},
		{2, 33, 31, 32, 48, 3, 1, 1}, {2, 17, 15, 16, 64, 3, 2, 1}, {3, 7, 5, 48, 64, 1, 1, 1},
	}, conv2DGraph, conv2DGeneral)
}
