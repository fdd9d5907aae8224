package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/model/maps"
)

// RestoreView (the reference, with Fuser, that Fuse is tested against)
// brings a view's foreground CAM back to image coordinates:
// upsampled to the view's extent in the image and mirrored back. For a
// local view the result covers its crop box only.
func RestoreView(cam *maps.Map, v ViewSpec, h, w int) *maps.Map {
	if v.Flip {
		cam = maps.FlipH(cam)
	}
	if v.Local {
		return maps.Resize(cam, v.Size, v.Size)
	}
	return maps.Resize(cam, h, w)
}

// Fuser accumulates the restored views of one image, in view order.
type Fuser struct {
	H, W, C       int
	combine       maps.Combine
	global, local *maps.Map
	localCount    []float32
}

// NewFuser starts the fusion of an h x w image with c classes.
func NewFuser(h, w, c int, combine maps.Combine) *Fuser {
	return &Fuser{H: h, W: w, C: c, combine: combine, global: maps.New(h, w, c)}
}

// Add merges one restored view (see RestoreView). Views must be added in
// Index order for results to be bit-identical between runs.
func (f *Fuser) Add(v ViewSpec, restored *maps.Map) error {
	if restored.C != f.C {
		return fmt.Errorf("view %d has %d channels, want %d", v.Index, restored.C, f.C)
	}
	if !v.Local {
		return maps.Add(f.global, restored)
	}
	if f.local == nil {
		f.local = maps.New(f.H, f.W, f.C)
		f.localCount = make([]float32, f.H*f.W)
	}
	if err := maps.PasteInto(f.local, restored, v.Y0, v.X0, maps.Sum); err != nil {
		return err
	}
	for y := max(0, v.Y0); y < min(f.H, v.Y0+restored.H); y++ {
		for x := max(0, v.X0); x < min(f.W, v.X0+restored.W); x++ {
			f.localCount[y*f.W+x]++
		}
	}
	return nil
}

// Result is the fused CAM: the whole-image views summed, ReLU, each class
// divided by its maximum, classes not in tags zeroed (the reference). With
// local views, their per-pixel mean is normalised the same way and merged
// by sum (then renormalised) or max.
func (f *Fuser) Result(tags []int) *maps.Map {
	out := f.global.Clone()
	maps.NormalizeCAM(out)
	if f.local != nil {
		loc := f.local.Clone()
		for p, n := range f.localCount {
			if n > 0 {
				for k := 0; k < f.C; k++ {
					loc.Pix[p*f.C+k] /= n
				}
			}
		}
		maps.NormalizeCAM(loc)
		for i, v := range loc.Pix {
			if f.combine == maps.Max {
				out.Pix[i] = max(out.Pix[i], v)
			} else {
				out.Pix[i] += v
			}
		}
		if f.combine != maps.Max {
			maps.NormalizeCAM(out)
		}
	}
	keep := make([]bool, f.C)
	for _, t := range tags {
		if t >= 0 && t < f.C {
			keep[t] = true
		}
	}
	for i := range out.Pix {
		if !keep[i%f.C] {
			out.Pix[i] = 0
		}
	}
	return out
}

// referenceFused fuses as the labeling did before Fuse: every view
// restored to the image's size with all channels (RestoreView), added in
// view order (Fuser), normalised, untagged classes zeroed. It is the
// reference Fuse must equal for images within the working resolution.
func referenceFused(cams []*maps.Map, views []ViewSpec, h, w, classes int, tags []int, combine maps.Combine) *maps.Map {
	f := NewFuser(h, w, classes, combine)
	for i, v := range views {
		if err := f.Add(v, RestoreView(cams[i], v, h, w)); err != nil {
			panic(err)
		}
	}
	return f.Result(tags)
}

func randomCAMs(r *rand.Rand, views []ViewSpec, stride, channels int) []*maps.Map {
	out := make([]*maps.Map, len(views))
	for i, v := range views {
		m := maps.New((v.InH+stride-1)/stride, (v.InW+stride-1)/stride, channels)
		for j := range m.Pix {
			m.Pix[j] = float32(r.NormFloat64())
		}
		out[i] = m
	}
	return out
}

// TestFuseEqualsRestoringEveryView: within the working resolution, Fuse's
// scores and labels equal the restore-every-view path to the bit, for
// whole-image views at four scales with flips, and with local crops.
func TestFuseEqualsRestoringEveryView(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, tc := range []struct {
		h, w    int
		local   string
		combine maps.Combine
		tags    []int
	}{
		{97, 131, "", maps.Sum, []int{2, 0}},
		{64, 40, "grid", maps.Sum, []int{1}},
		{50, 77, "corners", maps.Max, []int{3, 1, 4}},
		{9, 8, "", maps.Sum, nil},
	} {
		t.Run(fmt.Sprintf("%dx%d-%s", tc.h, tc.w, tc.local), func(t *testing.T) {
			const classes = 5
			opts := DefaultViewOptions()
			opts.LocalViews, opts.LocalSize, opts.LocalCombine = tc.local, min(tc.h, tc.w)*2/3, tc.combine
			views := opts.Views(tc.h, tc.w)
			cams := randomCAMs(r, views, 8, classes)
			want := referenceFused(cams, views, tc.h, tc.w, classes, tc.tags, tc.combine)
			got, err := Fuse(cams, views, tc.h, tc.w, classes, tc.tags, FuseOptions{LocalCombine: tc.combine})
			if err != nil {
				t.Fatal(err)
			}
			if got.Map.H != tc.h || got.Map.W != tc.w {
				t.Fatalf("fused at %dx%d, want the image's %dx%d", got.Map.W, got.Map.H, tc.w, tc.h)
			}
			for p := 0; p < tc.h*tc.w; p++ {
				for i, tag := range tc.tags {
					if a, b := got.Map.Pix[p*len(tc.tags)+i], want.Pix[p*classes+tag]; math.Float32bits(a) != math.Float32bits(b) {
						t.Fatalf("pixel %d class %d: %v, want %v", p, tag, a, b)
					}
				}
			}
			for _, thr := range []float32{0.05, 0.25, 0.6} {
				lab := got.LabelThreshold(thr)
				ref, err := maps.ThresholdLabels(want, tc.tags, thr)
				if err != nil {
					t.Fatal(err)
				}
				for p := range lab.Pix {
					if lab.Pix[p] != ref.Pix[p] {
						t.Fatalf("threshold %g: label %d at pixel %d, want %d", thr, lab.Pix[p], p, ref.Pix[p])
					}
				}
			}
		})
	}
}

// TestFuseAtWorkingResolution: a large image fused at a working
// resolution gives labels that agree with the full-resolution path on
// almost every pixel.
func TestFuseAtWorkingResolution(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	const h, w, classes = 600, 900, 4
	tags := []int{1, 3}
	views := DefaultViewOptions().Views(h, w)
	// Smooth maps (objects, not noise): a few blobs per class.
	cams := make([]*maps.Map, len(views))
	type blob struct{ cy, cx, rad, amp float64 }
	blobs := make([][]blob, classes)
	for c := range blobs {
		for range 3 {
			blobs[c] = append(blobs[c], blob{r.Float64(), r.Float64(), 0.05 + 0.15*r.Float64(), 1 + 2*r.Float64()})
		}
	}
	for i, v := range views {
		m := maps.New((v.InH+7)/8, (v.InW+7)/8, classes)
		for y := range m.H {
			for x := range m.W {
				fy, fx := (float64(y)+0.5)/float64(m.H), (float64(x)+0.5)/float64(m.W)
				if v.Flip {
					fx = 1 - fx
				}
				for c, bs := range blobs {
					val := -0.5
					for _, b := range bs {
						d := math.Hypot(fy-b.cy, fx-b.cx) / b.rad
						val += b.amp * math.Exp(-d*d)
					}
					m.Pix[(y*m.W+x)*classes+c] = float32(val)
				}
			}
		}
		cams[i] = m
	}
	full := referenceFused(cams, views, h, w, classes, tags, maps.Sum)
	ref, _ := maps.ThresholdLabels(full, tags, 0.25)
	got, err := Fuse(cams, views, h, w, classes, tags, FuseOptions{WorkPixels: 200 * 300})
	if err != nil {
		t.Fatal(err)
	}
	if got.Map.H*got.Map.W > 200*300 || got.Map.H >= h {
		t.Fatalf("working map %dx%d for a limit of %d pixels", got.Map.W, got.Map.H, 200*300)
	}
	lab := got.LabelThreshold(0.25)
	same := 0
	for p := range lab.Pix {
		if lab.Pix[p] == ref.Pix[p] {
			same++
		}
	}
	share := float64(same) / float64(len(lab.Pix))
	t.Logf("labels from a %dx%d working map agree with full resolution on %.3f%% of the pixels", got.Map.W, got.Map.H, 100*share)
	if share < 0.995 {
		t.Errorf("only %.2f%% of the pixels agree", 100*share)
	}
}

func TestWorkSize(t *testing.T) {
	for _, tc := range []struct{ h, w, limit, wh, ww int }{
		{100, 200, 0, 100, 200},
		{3000, 4000, 1 << 20, 886, 1182},
		{7000, 7000, 1 << 20, 1024, 1024},
		{10, 1, 4, 4, 1},
		{1, 50000, 1000, 1, 1000},
	} {
		wh, ww := WorkSize(tc.h, tc.w, tc.limit)
		if wh != tc.wh || ww != tc.ww {
			t.Errorf("WorkSize(%d, %d, %d) = %d, %d; want %d, %d", tc.h, tc.w, tc.limit, wh, ww, tc.wh, tc.ww)
		}
	}
}

// TestFuseSoftmaxReading: with one unmirrored view whose map has the
// image's size, the softmax reading gives each pixel the softmax of its
// raw values over the tagged classes and the background (two views: of
// their mean).
func TestFuseSoftmaxReading(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	const h, w, classes = 5, 7, 4
	tags := []int{2, 0}
	view := ViewSpec{Index: 0, Scale: 1, InH: h, InW: w}
	a, b := maps.New(h, w, classes+1), maps.New(h, w, classes+1)
	for i := range a.Pix {
		a.Pix[i], b.Pix[i] = float32(3*r.NormFloat64()), float32(3*r.NormFloat64())
	}
	for _, tc := range []struct {
		name  string
		cams  []*maps.Map
		views []ViewSpec
	}{
		{"one view", []*maps.Map{a}, []ViewSpec{view}},
		{"two views", []*maps.Map{a, b}, []ViewSpec{view, {Index: 1, Scale: 1, InH: h, InW: w}}},
	} {
		got, err := Fuse(tc.cams, tc.views, h, w, classes, tags, FuseOptions{Reading: ReadSoftmax})
		if err != nil {
			t.Fatal(err)
		}
		for p := 0; p < h*w; p++ {
			mean := func(c int) float64 {
				var s float64
				for _, m := range tc.cams {
					s += float64(m.Pix[p*(classes+1)+c])
				}
				return s / float64(len(tc.cams))
			}
			den := math.Exp(mean(classes))
			for _, tag := range tags {
				den += math.Exp(mean(tag))
			}
			for i, tag := range tags {
				want := math.Exp(mean(tag)) / den
				if d := math.Abs(float64(got.Map.Pix[p*len(tags)+i]) - want); d > 1e-6 {
					t.Fatalf("%s: pixel %d class %d: %v, want %v", tc.name, p, tag, got.Map.Pix[p*len(tags)+i], want)
				}
			}
		}
	}
	if _, err := Fuse([]*maps.Map{maps.New(h, w, classes)}, []ViewSpec{view}, h, w, classes, tags, FuseOptions{Reading: ReadSoftmax}); err == nil {
		t.Error("the softmax reading took maps without the background channel")
	}
}

// TestPrepareViewFromRGB: a view cut straight from the 8-bit pixels equals
// the view cut from the normalised float image, to the bit.
func TestPrepareViewFromRGB(t *testing.T) {
	e := &Engine{}
	e.setNormalization(ImageMean, ImageStd)
	r := rand.New(rand.NewPCG(1, 1))
	img := imagefile.NewRGB(53, 38)
	for i := range img.Pix {
		img.Pix[i] = uint8(r.IntN(256))
	}
	norm := e.Normalize(img)
	opts := DefaultViewOptions()
	opts.LocalViews, opts.LocalSize = "grid", 20
	for _, v := range opts.Views(img.H, img.W) {
		want := make([]float32, v.InH*v.InW*3)
		got := make([]float32, v.InH*v.InW*3)
		PrepareViewInto(norm, v, want, v.InW*3)
		e.PrepareViewFromRGB(img, v, got, v.InW*3)
		for i := range want {
			if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
				t.Fatalf("view %+v: value %d = %v, want %v", v, i, got[i], want[i])
			}
		}
	}
}

// TestLargePhotoViewsStayScales: a large photo's views are scaled
// together, so they keep the ratios of their scales; a small image's are
// as before (each scale of its size).
func TestLargePhotoViewsStayScales(t *testing.T) {
	opts := DefaultViewOptions()
	big := opts.Views(3000, 4000)
	if len(big) != 8 {
		t.Fatalf("%d views", len(big))
	}
	lo, hi := big[0], big[6] // scale 0.5 and 2, not mirrored
	if hi.InH*hi.InW > 1<<20 || math.Abs(float64(hi.InW)/float64(lo.InW)-4) > 0.02 {
		t.Errorf("scale-2 view %dx%d, scale-0.5 view %dx%d: want a ratio of 4 within the pixel limit", hi.InW, hi.InH, lo.InW, lo.InH)
	}
	for _, v := range opts.Views(100, 150) {
		if v.InH != int(math.Round(100*v.Scale)) || v.InW != int(math.Round(150*v.Scale)) {
			t.Errorf("small image: view %+v not at its scale", v)
		}
	}
}
