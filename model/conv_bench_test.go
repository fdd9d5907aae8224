package model

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// BenchmarkConv measures conv2DGraph forward and forward+backward against a
// plain MatMul with the same FLOPs ([N*Ho*Wo, K*K*Cin] x [K*K*Cin, Cout]),
// interleaved in one loop so that machine noise hits all three alike. It
// reports each one's GFLOP/s and the conv/matmul ratios.
func BenchmarkConv(b *testing.B) { benchConv(b, conv2DGraph) }

// BenchmarkConvRect is BenchmarkConv for the rectangle-gather im2col.
func BenchmarkConvRect(b *testing.B) { benchConv(b, conv2DRect) }

// BenchmarkConvGeneral is BenchmarkConv for the backend-ConvGeneral
// convolution the networks use (the fork's im2col products, gradients
// included).
func BenchmarkConvGeneral(b *testing.B) { benchConv(b, conv2DGeneral) }

func benchConv(b *testing.B, conv func(x, w *Node, stride, dilation int) *Node) {
	backend := testBackend(b)
	// The 3x3 layers of the tiny preset on 128 px images (batch 8), then
	// three ResNet-18/34 layers at 224 px.
	layers := []struct{ n, hw, cin, cout, stride, dil int }{
		{8, 128, 3, 16, 2, 1}, // tiny stem
		{8, 64, 16, 32, 2, 1}, // tiny stage 1, first conv
		{8, 32, 32, 32, 1, 1}, // tiny stage 1
		{8, 32, 32, 64, 2, 1}, // tiny stage 2, first conv
		{8, 16, 64, 64, 1, 1}, // tiny stage 2
		{8, 16, 64, 96, 1, 2}, // tiny stage 3 (dilated, output stride 8)
		{8, 16, 96, 96, 1, 2}, // tiny stage 3
		{8, 56, 64, 64, 1, 1},
		{8, 28, 128, 128, 1, 1},
		{8, 14, 256, 256, 1, 1},
		{8, 14, 512, 512, 1, 2}, // ResNet-18 layer4 at output stride 16
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, l := range layers {
		b.Run(fmt.Sprintf("%dx%dx%d-%d/s%dd%d", l.hw, l.hw, l.cin, l.cout, l.stride, l.dil), func(b *testing.B) {
			const k = 3
			x := tensors.FromFlatDataAndDimensions(randSlice(r, l.n*l.hw*l.hw*l.cin), l.n, l.hw, l.hw, l.cin)
			w := tensors.FromFlatDataAndDimensions(randSlice(r, k*k*l.cin*l.cout), k, k, l.cin, l.cout)
			ho := (l.hw-1)/l.stride + 1
			rows, inner := l.n*ho*ho, k*k*l.cin
			a := tensors.FromFlatDataAndDimensions(randSlice(r, rows*inner), rows, inner)
			m := tensors.FromFlatDataAndDimensions(randSlice(r, inner*l.cout), inner, l.cout)
			flops := 2 * float64(rows) * float64(inner) * float64(l.cout)

			fwd := graph.MustNewExec(backend, func(x, w *Node) *Node { return conv(x, w, l.stride, l.dil) })
			fwdBwd := graph.MustNewExec(backend, func(x, w *Node) []*Node {
				y := conv(x, w, l.stride, l.dil)
				return graph.Gradient(graph.ReduceAllSum(graph.Mul(y, y)), x, w)
			})
			mm := graph.MustNewExec(backend, func(a, m *Node) *Node { return graph.MatMul(a, m) })
			timeIt := func(e *graph.Exec, p, q *tensors.Tensor) time.Duration {
				start := time.Now()
				outs := e.MustCall(p, q)
				for _, o := range outs {
					o.FinalizeAll()
				}
				return time.Since(start)
			}
			// Compile outside the timing.
			timeIt(fwd, x, w)
			timeIt(fwdBwd, x, w)
			timeIt(mm, a, m)
			var tf, tb, tm time.Duration
			for b.Loop() {
				tf += timeIt(fwd, x, w)
				tb += timeIt(fwdBwd, x, w)
				tm += timeIt(mm, a, m)
			}
			gf := func(d time.Duration, mult float64) float64 { return mult * flops * float64(b.N) / d.Seconds() / 1e9 }
			// Forward+backward is 3x the forward FLOPs (output, input and
			// weight gradients).
			b.ReportMetric(gf(tf, 1), "conv-GFLOP/s")
			b.ReportMetric(gf(tb, 3), "convfb-GFLOP/s")
			b.ReportMetric(gf(tm, 1), "matmul-GFLOP/s")
			b.ReportMetric(gf(tf, 1)/gf(tm, 1), "fwd/matmul")
			b.ReportMetric(gf(tb, 3)/gf(tm, 1), "fwdbwd/matmul")
			b.ReportMetric(0, "ns/op")
		})
	}
}
