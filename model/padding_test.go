package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/l2gflow/l2gflow/model/maps"
)

// randomBNParams initialises a network and randomises its batch-norm
// statistics, scales and shifts, so that the padding of a padded input does
// not stay zero by accident (fresh batch norm has zero shifts).
func randomBNParams(t testing.TB, net *Net, seed uint64) *Params {
	t.Helper()
	specs, err := net.ParamSpecs(testBackend(t), GlobalPrefix)
	if err != nil {
		t.Fatal(err)
	}
	p := InitParams(specs, seed)
	r := rand.New(rand.NewPCG(seed, 7))
	for i, s := range p.Specs {
		for k := range p.Values[i] {
			switch {
			case strings.HasSuffix(s.Name, "/mean"), strings.HasSuffix(s.Name, "/beta"):
				p.Values[i][k] = float32(r.NormFloat64() * 0.5)
			case strings.HasSuffix(s.Name, "/var"), strings.HasSuffix(s.Name, "/gamma"):
				p.Values[i][k] = float32(0.5 + r.Float64())
			case strings.HasSuffix(s.Name, "classifier/w"):
				p.Values[i][k] = float32(r.NormFloat64() * 0.1)
			}
		}
	}
	return p
}

func randomImage(r *rand.Rand, h, w int) []float32 {
	x := make([]float32, h*w*3)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// padInto copies an h x w image into the top-left of element j of a
// zero batch of bh x bw images.
func padInto(batch []float32, j, bh, bw int, img []float32, h, w int) {
	base := j * bh * bw * 3
	for y := 0; y < h; y++ {
		copy(batch[base+y*bw*3:base+y*bw*3+w*3], img[y*w*3:(y+1)*w*3])
	}
}

// TestPaddedInferenceMatchesUnpadded checks the padding rule: images of
// different sizes padded into one batch give, on their real regions, the
// CAMs and logits of unpadded runs (which run a graph without the mask);
// without the mask (every position declared real) they do not, so the
// test can tell.
func TestPaddedInferenceMatchesUnpadded(t *testing.T) {
	backend := testBackend(t)
	cases := []struct {
		arch   string
		stride int
		pcm    bool
		bh, bw int
		sizes  [][2]int
	}{
		{"tiny", 8, false, 72, 88, [][2]int{{37, 53}, {72, 88}, {9, 17}, {64, 41}}},
		{"tiny", 16, false, 80, 64, [][2]int{{80, 63}, {33, 33}, {1, 1}}},
		{"resnet18", 16, false, 64, 72, [][2]int{{50, 71}, {17, 64}, {64, 72}}},
		{"resnet50", 8, false, 40, 48, [][2]int{{39, 25}, {21, 47}}},
		{"tiny", 8, true, 72, 88, [][2]int{{37, 53}, {72, 88}, {9, 17}}},
		{"tiny", 16, true, 80, 64, [][2]int{{80, 63}, {33, 33}, {1, 1}}},
		{"resnet18", 8, true, 64, 72, [][2]int{{50, 71}, {17, 64}}},
	}
	for _, tc := range cases {
		name := fmt.Sprintf("%s-os%d", tc.arch, tc.stride)
		if tc.pcm {
			name += "-pcm"
		}
		t.Run(name, func(t *testing.T) {
			arch, err := Preset(tc.arch, tc.stride)
			if err != nil {
				t.Fatal(err)
			}
			arch.PCM = tc.pcm
			net := &Net{Arch: arch, Classes: 5}
			f, err := NewForward(backend, net, randomBNParams(t, net, 3), GlobalPrefix)
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(1, 2))
			n := len(tc.sizes)
			batch := make([]float32, n*tc.bh*tc.bw*3)
			real := make([][2]int, n)
			imgs := make([][]float32, n)
			for j, s := range tc.sizes {
				imgs[j] = randomImage(r, s[0], s[1])
				padInto(batch, j, tc.bh, tc.bw, imgs[j], s[0], s[1])
				real[j] = s
			}
			padded, pdims, plogits, err := f.Run(batch, n, tc.bh, tc.bw, real)
			if err != nil {
				t.Fatal(err)
			}
			unmasked, _, _, err := f.Run(batch, n, tc.bh, tc.bw, nil)
			if err != nil {
				t.Fatal(err)
			}
			// The padded batch ran the masked graph; batches without
			// padding (this one declared unpadded, and the single images
			// below) run the graph without the mask.
			if f.execs[execKey{n, tc.bh, tc.bw, true}] == nil || f.execs[execKey{n, tc.bh, tc.bw, false}] == nil {
				t.Fatalf("compiled graphs %v: want %d x %dx%d with and without the mask", f.execs, n, tc.bh, tc.bw)
			}
			worst, worstUnmasked := 0.0, 0.0
			st := arch.TotalStride()
			for j, s := range tc.sizes {
				want, wdims, wlogits, err := f.Run(imgs[j], 1, s[0], s[1], nil)
				if err != nil {
					t.Fatal(err)
				}
				ch, cw, k := wdims[1], wdims[2], wdims[3]
				if ch != (s[0]+st-1)/st || cw != (s[1]+st-1)/st {
					t.Fatalf("%v: unpadded CAM %dx%d, want ceil(size/%d)", s, ch, cw, st)
				}
				scale := 1e-6
				for _, v := range want {
					scale = max(scale, math.Abs(float64(v)))
				}
				for y := 0; y < ch; y++ {
					for x := 0; x < cw; x++ {
						for c := 0; c < k; c++ {
							w := float64(want[(y*cw+x)*k+c])
							p := (j*pdims[1]+y)*pdims[2] + x
							worst = max(worst, math.Abs(float64(padded[p*k+c])-w)/scale)
							worstUnmasked = max(worstUnmasked, math.Abs(float64(unmasked[p*k+c])-w)/scale)
						}
					}
				}
				for c := range net.Classes {
					worst = max(worst, math.Abs(float64(plogits[j*net.Classes+c]-wlogits[c]))/scale)
				}
			}
			t.Logf("relative error padded %.2g, without the mask %.2g", worst, worstUnmasked)
			if worst > 1e-5 {
				t.Errorf("padded CAM differs from unpadded by %.3g (relative)", worst)
			}
			if worstUnmasked < 1e-3 {
				t.Errorf("without the mask the padded CAM differs by only %.3g: the test cannot tell", worstUnmasked)
			}
		})
	}
}

// TestEngineInferAnySize runs views of many sizes through the engine and
// compares each CAM with an unpadded run of the view alone.
func TestEngineInferAnySize(t *testing.T) {
	backend := testBackend(t)
	arch, _ := Preset("tiny", 8)
	net := &Net{Arch: arch, Classes: 4}
	m := &Model{Net: net, Params: randomBNParams(t, net, 5), Manifest: testManifest(4)}
	e, err := NewEngine(backend, m, EngineOptions{Buckets: BucketOptions{PerOctave: 4, MaxViewPixels: 200 * 200}})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := NewForward(backend, net, m.Params, GlobalPrefix)
	if err != nil {
		t.Fatal(err)
	}
	ref.SetMaxCompiled(1000)
	r := rand.New(rand.NewPCG(9, 9))
	var views []*maps.Map
	for range 40 {
		h, w := 8+r.IntN(150), 8+r.IntN(150)
		views = append(views, &maps.Map{H: h, W: w, C: 3, Pix: randomImage(r, h, w)})
	}
	cams, _, err := e.Infer(views)
	if err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for i, v := range views {
		want, dims, _, err := ref.Run(v.Pix, 1, v.H, v.W, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := cams[i]
		if got.H != dims[1] || got.W != dims[2] || got.C != 4 {
			t.Fatalf("view %dx%d: CAM %dx%dx%d, want %dx%dx4", v.H, v.W, got.H, got.W, got.C, dims[1], dims[2])
		}
		for p := 0; p < got.H*got.W; p++ {
			for c := 0; c < 4; c++ {
				worst = max(worst, math.Abs(float64(got.Pix[p*4+c]-want[p*dims[3]+c])))
			}
		}
	}
	st := e.Stats()
	t.Logf("max abs error %.2g; %d views in %d batches, padding overhead %.2f, %d buckets",
		worst, st.Views, st.Batches, st.PaddingOverhead(), st.Buckets)
	if worst > 1e-4 {
		t.Errorf("engine CAM differs from an unpadded run by %.3g", worst)
	}
	if st.Views != 40 || st.Batches >= 40 || st.PaddingOverhead() < 1 {
		t.Errorf("stats %+v: want 40 views batched together", st)
	}
}

// TestBuckets checks that every view size the limits allow has a bucket
// that holds it, padded by at most one ladder step (or to the aspect
// limit), and that the set stays small.
func TestBuckets(t *testing.T) {
	cases := []struct {
		opts       BucketOptions
		maxBuckets int
	}{
		{BucketOptions{}, 700},
		{BucketOptions{PerOctave: 4}, 250},
		{BucketOptions{PerOctave: 8, MaxViewPixels: 4096 * 4096}, 1000},
		{BucketOptions{PerOctave: 2, MaxAspect: 3, MaxViewPixels: 300 * 200, BatchPixels: 1, MaxBatch: 1}, 80},
	}
	for _, tc := range cases {
		b, err := NewBuckets(tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		o := b.Options
		t.Logf("%+v: %d buckets", o, b.Len())
		if b.Len() > tc.maxBuckets {
			t.Errorf("%+v: %d buckets, want at most %d", o, b.Len(), tc.maxBuckets)
		}
		r := rand.New(rand.NewPCG(4, 4))
		step := 1 + 1/float64(o.PerOctave)
		for range 20000 {
			// Any image size and scale, as FitView caps it.
			h, w := o.FitView(1+r.IntN(6000), 1+r.IntN(6000))
			if h*w > o.MaxViewPixels {
				t.Fatalf("FitView gave %dx%d over %d pixels", h, w, o.MaxViewPixels)
			}
			k, err := b.For(h, w)
			if err != nil {
				t.Fatal(err)
			}
			if k.H < h || k.W < w {
				t.Fatalf("%dx%d in bucket %dx%d", h, w, k.H, k.W)
			}
			aspect := float64(max(k.H, k.W)) / float64(min(k.H, k.W))
			if aspect > o.MaxAspect+1e-9 {
				t.Fatalf("bucket %dx%d is more elongated than %g", k.H, k.W, o.MaxAspect)
			}
			// Each side is at most one ladder step (and 8 px of rounding)
			// above the view or, for the short side of an elongated view,
			// above the long side over the aspect limit.
			long := float64(max(k.H, k.W))
			for _, s := range [][2]int{{h, k.H}, {w, k.W}} {
				if allowed := max(float64(s[0]), long/o.MaxAspect)*step + 8; float64(s[1]) > allowed {
					t.Fatalf("view %dx%d padded to %dx%d", h, w, k.H, k.W)
				}
			}
			if k.Batch < 1 || k.Batch > o.MaxBatch || (k.Batch > 1 && k.Batch*k.H*k.W > o.BatchPixels) {
				t.Fatalf("bucket %dx%d batch %d (max %d, %d pixels)", k.H, k.W, k.Batch, o.MaxBatch, o.BatchPixels)
			}
		}
	}
	// A 2000x1500 photo's scale-2 view is scaled down to the pixel cap; a
	// VOC image's is not.
	if h, w := (BucketOptions{}).FitView(3000, 4000); h != 886 || w != 1182 {
		t.Errorf("4000x3000 view fits as %dx%d, want 1182x886", w, h)
	}
	if h, w := (BucketOptions{}).FitView(750, 1000); h != 750 || w != 1000 {
		t.Errorf("1000x750 view fits as %dx%d, want unchanged", w, h)
	}
	if _, err := NewBuckets(BucketOptions{PerOctave: 100}); err == nil {
		t.Error("100 buckets per octave accepted")
	}
}

// TestEngineBatchInvariant checks that a view's CAM is the same to the
// bit whatever views share its batch and wherever it sits in it: labels
// must not depend on how a runner bundles images.
func TestEngineBatchInvariant(t *testing.T) {
	backend := testBackend(t)
	arch, _ := Preset("tiny", 8)
	net := &Net{Arch: arch, Classes: 3}
	m := &Model{Net: net, Params: randomBNParams(t, net, 8), Manifest: testManifest(3)}
	e, err := NewEngine(backend, m, EngineOptions{Buckets: BucketOptions{PerOctave: 2, MaxViewPixels: 128 * 128, BatchPixels: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 1))
	mk := func(h, w int) *maps.Map { return &maps.Map{H: h, W: w, C: 3, Pix: randomImage(r, h, w)} }
	v := mk(45, 60)
	alone, _, err := e.Infer([]*maps.Map{v})
	if err != nil {
		t.Fatal(err)
	}
	for _, companions := range [][2]int{{44, 60}, {33, 50}, {48, 64}} {
		batch := []*maps.Map{mk(companions[0], companions[1]), mk(companions[1], companions[0]), v, mk(companions[0], companions[1])}
		got, _, err := e.Infer(batch)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got[2].Pix, alone[0].Pix) {
			t.Errorf("CAM of a view batched with %v differs from the view alone", companions)
		}
	}
	if st := e.Stats(); st.Batches >= st.Views {
		t.Errorf("%d batches for %d views: the views were not batched", st.Batches, st.Views)
	}
}

// TestPrepareViewInto checks that cutting a view straight into a batch
// gives what PrepareView gives, for whole-image and local views, mirrored
// or not, resized or not.
func TestPrepareViewInto(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	img := &maps.Map{H: 37, W: 53, C: 3, Pix: randomImage(r, 37, 53)}
	for _, v := range []ViewSpec{
		{Scale: 1, InH: 37, InW: 53},
		{Scale: 0.5, InH: 18, InW: 26, Flip: true},
		{Scale: 2, InH: 74, InW: 106},
		{Local: true, Y0: 5, X0: 11, Size: 20, InH: 20, InW: 20},
		{Local: true, Y0: 17, X0: 33, Size: 20, InH: 13, InW: 13, Flip: true},
	} {
		want := PrepareView(img, v)
		stride := (v.InW + 5) * 3
		dst := make([]float32, v.InH*stride)
		PrepareViewInto(img, v, dst, stride)
		for y := 0; y < v.InH; y++ {
			if !slices.Equal(dst[y*stride:y*stride+v.InW*3], want.Pix[y*v.InW*3:(y+1)*v.InW*3]) {
				t.Fatalf("%+v: row %d differs", v, y)
			}
		}
	}
}

// tinyForward prepares inference of a 3-class tiny network with random
// batch-norm statistics on the test backend.
func tinyForward(t *testing.T) *Forward {
	t.Helper()
	arch, err := Preset("tiny", 8)
	if err != nil {
		t.Fatal(err)
	}
	net := &Net{Arch: arch, Classes: 3}
	f, err := NewForward(testBackend(t), net, randomBNParams(t, net, 4), GlobalPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestForwardMaskLimit checks the compiled-graph limit with the graphs
// without the mask: they are counted apart, and once their limit is
// reached an unpadded batch runs the masked graph of its shape (compiled
// ahead, as the engine does; TestPaddedInferenceMatchesUnpadded checks
// that the two graphs agree); a shape with neither graph compiled past the
// limits is an error.
func TestForwardMaskLimit(t *testing.T) {
	f := tinyForward(t)
	f.SetMaxCompiled(1)
	if err := f.Compile(2, 32, 40); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	small := randomImage(r, 24, 24)
	if _, _, _, err := f.Run(small, 1, 24, 24, nil); err != nil { // the one graph without the mask
		t.Fatal(err)
	}
	batch := make([]float32, 2*32*40*3)
	padInto(batch, 0, 32, 40, randomImage(r, 32, 40), 32, 40)
	padInto(batch, 1, 32, 40, randomImage(r, 32, 40), 32, 40)
	if _, _, _, err := f.Run(batch, 2, 32, 40, nil); err != nil { // falls back to the masked graph
		t.Fatalf("unpadded batch past the limit of graphs without the mask: %v", err)
	}
	if f.execs[execKey{2, 32, 40, false}] != nil {
		t.Fatalf("a second graph without the mask was compiled past the limit of 1")
	}
	if _, _, _, err := f.Run(make([]float32, 16*16*3), 1, 16, 16, [][2]int{{8, 16}}); err == nil {
		t.Fatal("a third shape (padded) past the limit ran")
	}
}

// TestForwardFreezesWeights: inference's weight buffers are frozen on the
// Go backend (so the convolutions keep their transformed kernels without
// comparing the weights on every run), and stay frozen across runs.
func TestForwardFreezesWeights(t *testing.T) {
	f := tinyForward(t)
	if _, _, _, err := f.Run(randomImage(rand.New(rand.NewPCG(5, 6)), 24, 24), 1, 24, 24, nil); err != nil {
		t.Fatal(err)
	}
	for i, p := range f.params {
		buf, err := p.Buffer(f.backend, 0)
		if err != nil {
			t.Fatal(err)
		}
		fb, ok := buf.(interface{ FrozenEpoch() uint64 })
		if !ok {
			t.Skipf("the backend's buffers (%T) cannot be frozen", buf)
		}
		if fb.FrozenEpoch() == 0 {
			t.Errorf("parameter %s: buffer not frozen after a run", f.specs[i].Name)
		}
	}
}
