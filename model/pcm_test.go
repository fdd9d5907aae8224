package model

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// TestPCMMatchesNaive checks the pixel correlation module against a
// direct computation: the image averaged to the map's size and the
// projected mid-level features, mixed, normalised per position; affinity
// the rectified cosine similarity, normalised over source positions; the
// output the CAM plus the affinity-weighted sum of the CAM.
func TestPCMMatchesNaive(t *testing.T) {
	const (
		h, w, t2 = 3, 3, 2 // map size and stride
		cm, cp   = 4, 16   // mid-level channels, projected
		k        = 2       // CAM channels
		cf       = 3 + cp  // features before mixing
		cmix     = cp      // mixed features
	)
	r := rand.New(rand.NewPCG(4, 5))
	fill := func(n int) []float32 { return randSlice(r, n) }
	x, mid, cam := fill(h*t2*w*t2*3), fill(h*w*cm), fill(h*w*k)
	w1, w2 := fill(cm*cp), fill(cf*cmix)
	got := runGraph(t, testBackend(t), func(g *graph.Graph, in []*Node) *Node {
		ps := &paramSource{g: g, nodes: map[string]*graph.Node{"pcm/proj1/w": in[3], "pcm/mix/w": in[4]}}
		b := &layerBuilder{ps: ps}
		return b.pcm(in[0], []*Node{in[1]}, in[2])
	}, tensors.FromFlatDataAndDimensions(x, 1, h*t2, w*t2, 3), tensors.FromFlatDataAndDimensions(mid, 1, h, w, cm),
		tensors.FromFlatDataAndDimensions(cam, 1, h, w, k), tensors.FromFlatDataAndDimensions(w1, 1, 1, cm, cp),
		tensors.FromFlatDataAndDimensions(w2, 1, 1, cf, cmix))

	n := h * w
	f := make([][]float64, n)
	for p := 0; p < n; p++ {
		y, xx := p/w, p%w
		in := make([]float64, cf)
		for dy := 0; dy < t2; dy++ {
			for dx := 0; dx < t2; dx++ {
				for c := 0; c < 3; c++ {
					in[c] += float64(x[((y*t2+dy)*w*t2+xx*t2+dx)*3+c]) / (t2 * t2)
				}
			}
		}
		for o := 0; o < cp; o++ {
			for c := 0; c < cm; c++ {
				in[3+o] += float64(mid[p*cm+c]) * float64(w1[c*cp+o])
			}
		}
		f[p] = make([]float64, cmix)
		norm := 0.0
		for o := 0; o < cmix; o++ {
			for c := 0; c < cf; c++ {
				f[p][o] += in[c] * float64(w2[c*cmix+o])
			}
			norm += f[p][o] * f[p][o]
		}
		for o := range f[p] {
			f[p][o] /= math.Sqrt(norm) + pcmEps
		}
	}
	worst := 0.0
	for j := 0; j < n; j++ {
		aff := make([]float64, n)
		sum := 0.0
		for i := 0; i < n; i++ {
			for o := 0; o < cmix; o++ {
				aff[i] += f[i][o] * f[j][o]
			}
			aff[i] = math.Max(aff[i], 0)
			sum += aff[i]
		}
		for c := 0; c < k; c++ {
			want := float64(cam[j*k+c])
			for i := 0; i < n; i++ {
				want += aff[i] / (sum + pcmEps) * float64(cam[i*k+c])
			}
			worst = max(worst, math.Abs(float64(got[j*k+c])-want))
		}
	}
	if worst > 1e-5 {
		t.Errorf("PCM differs from the direct computation by %.3g", worst)
	}
}

// TestPCMReviseBlocks checks that revising the destinations a block of
// rows at a time (as large maps are revised) gives the revision of the
// whole map: blocks of one row, blocks that leave a shorter last one, and
// a block larger than the map.
func TestPCMReviseBlocks(t *testing.T) {
	const n, p, nf, c = 2, 37, 5, 3
	r := rand.New(rand.NewPCG(6, 7))
	f, flat := randSlice(r, n*p*nf), randSlice(r, n*p*c)
	revise := func(rows int) []float32 {
		return runGraph(t, testBackend(t), func(g *graph.Graph, in []*Node) *Node {
			b := &layerBuilder{}
			return b.pcmRevise(in[0], in[1], rows)
		}, tensors.FromFlatDataAndDimensions(f, n, p, nf), tensors.FromFlatDataAndDimensions(flat, n, p, c))
	}
	whole := revise(p)
	for _, rows := range []int{1, 5, 16, 36, 100} {
		got := revise(rows)
		worst := 0.0
		for i := range whole {
			worst = max(worst, math.Abs(float64(got[i]-whole[i])))
		}
		if worst > 1e-6 {
			t.Errorf("blocks of %d rows: revision differs from the whole map's by %.3g", rows, worst)
		}
	}
}
