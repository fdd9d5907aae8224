package model

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomlx/compute"

	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/model/maps"
)

// ViewSpec is one inference view of an image: the whole image at a scale
// (optionally mirrored), or a local crop at scale 1.
type ViewSpec struct {
	Index int     `json:"i"`           // position in the image's view list (fusion order)
	Scale float64 `json:"s"`           // whole-image views: resize factor
	Flip  bool    `json:"f"`           // mirrored left-right
	Local bool    `json:"l"`           // a local crop of the original image
	Y0    int     `json:"y,omitempty"` // local crop box
	X0    int     `json:"x,omitempty"`
	Size  int     `json:"n,omitempty"`
	// InH and InW are the view's input size: the image (or crop box) at
	// Scale, scaled down further when it exceeds the view size limit
	// (BucketOptions.FitView).
	InH int `json:"h"`
	InW int `json:"w"`
	// Of is the number of views of the image: fusion refuses an image
	// some of whose views are missing rather than label it from fewer.
	Of int `json:"o,omitempty"`
}

// ViewOptions chooses an image's inference views.
type ViewOptions struct {
	Scales []float64 // whole-image scales (reference: 0.5, 1, 1.5, 2)
	Flip   bool      // add the mirrored view of each scale
	// LocalViews adds local crops: "none", "grid" or "corners".
	LocalViews string
	LocalSize  int // crop side in pixels (default: the model's training view size, else half the image)
	// LocalCombine merges local crops with the whole-image map: Sum or Max.
	LocalCombine maps.Combine
	// Limits caps each view's input size (MaxViewPixels and the longest
	// bucket side); zero fields take the defaults.
	Limits BucketOptions
}

// DefaultViewOptions are the reference's labeling views: scales 0.5, 1,
// 1.5 and 2, each also mirrored.
func DefaultViewOptions() ViewOptions {
	return ViewOptions{Scales: []float64{0.5, 1, 1.5, 2}, Flip: true}
}

// Views lists the views of an h x w image.
func (o ViewOptions) Views(h, w int) []ViewSpec {
	out := o.views(h, w)
	for i := range out {
		out[i].Of = len(out)
	}
	return out
}

func (o ViewOptions) views(h, w int) []ViewSpec {
	var out []ViewSpec
	// The scales are taken relative to one size: when the largest scale's
	// view must be scaled down to fit the limits, every scale's view is
	// scaled by the same factor, so that a large photo's views stay four
	// scales rather than four near-identical views at the limit.
	k := 1.0
	if len(o.Scales) > 0 {
		vh, vw := viewSize(h, w, slices.Max(o.Scales))
		if fh, fw := o.Limits.FitView(vh, vw); fh != vh || fw != vw {
			k = min(float64(fh)/float64(vh), float64(fw)/float64(vw))
		}
	}
	for _, s := range o.Scales {
		vh, vw := o.Limits.FitView(viewSize(h, w, s*k))
		out = append(out, ViewSpec{Index: len(out), Scale: s, InH: vh, InW: vw})
		if o.Flip {
			out = append(out, ViewSpec{Index: len(out), Scale: s, Flip: true, InH: vh, InW: vw})
		}
	}
	if o.LocalViews == "" || o.LocalViews == "none" {
		return out
	}
	n := o.LocalSize
	if n <= 0 || n > min(h, w) {
		n = max(1, min(h, w)/2)
	}
	var ys, xs []int
	switch o.LocalViews {
	case "corners":
		ys, xs = []int{0, h - n}, []int{0, w - n}
	default: // grid: overlapping crops covering the image, stride n/2
		ys, xs = gridStarts(h, n), gridStarts(w, n)
	}
	vh, vw := o.Limits.FitView(n, n)
	for _, y := range ys {
		for _, x := range xs {
			out = append(out, ViewSpec{Index: len(out), Local: true, Y0: y, X0: x, Size: n, Scale: 1, InH: vh, InW: vw})
		}
	}
	return out
}

func gridStarts(total, n int) []int {
	if n >= total {
		return []int{0}
	}
	var out []int
	for s := 0; ; s += max(1, n/2) {
		if s+n >= total {
			out = append(out, total-n)
			return out
		}
		out = append(out, s)
	}
}

// viewSize is the size of an image at a scale (at least 8 px a side).
func viewSize(h, w int, scale float64) (int, int) {
	return max(8, int(math.Round(float64(h)*scale))), max(8, int(math.Round(float64(w)*scale)))
}

// PrepareView cuts a view's input from the normalised image: its region
// (the image or the crop box) resized to the view's input size, mirrored
// if asked.
func PrepareView(img *maps.Map, v ViewSpec) *maps.Map {
	var out *maps.Map
	if v.Local {
		out = maps.Crop(img, v.Y0, v.X0, v.Size, v.Size)
		if v.InH != v.Size || v.InW != v.Size {
			out = maps.Resize(out, v.InH, v.InW)
		}
	} else {
		out = maps.Resize(img, v.InH, v.InW)
	}
	if v.Flip {
		out = maps.FlipH(out)
	}
	return out
}

// PrepareViewFromRGB writes a view's input into dst (rows stride floats
// apart) straight from the image's 8-bit pixels, normalising each sample
// as Normalize does: the values of PrepareViewInto on the normalised
// image, without the image's float copy (12 bytes a pixel).
func (e *Engine) PrepareViewFromRGB(img *imagefile.RGB, v ViewSpec, dst []float32, stride int) {
	y0, x0, wh, ww := 0, 0, img.H, img.W
	if v.Local {
		y0, x0, wh, ww = v.Y0, v.X0, v.Size, v.Size
	}
	ys := maps.AxisTaps(v.InH, 0, float64(wh), wh)
	xs := maps.AxisTaps(v.InW, 0, float64(ww), ww)
	n0, n1, n2 := &e.norm[0], &e.norm[1], &e.norm[2]
	for y, ty := range ys {
		r0 := img.Pix[((y0+ty.I0)*img.W+x0)*3:]
		r1 := img.Pix[((y0+ty.I1)*img.W+x0)*3:]
		row := dst[y*stride : y*stride+v.InW*3]
		fy := ty.F
		for x, tx := range xs {
			ox := x
			if v.Flip {
				ox = v.InW - 1 - x
			}
			a0, a1 := tx.I0*3, tx.I1*3
			fx := tx.F
			w00, w01, w10, w11 := (1-fy)*(1-fx), (1-fy)*fx, fy*(1-fx), fy*fx
			p00, p01 := r0[a0:a0+3:a0+3], r0[a1:a1+3:a1+3]
			p10, p11 := r1[a0:a0+3:a0+3], r1[a1:a1+3:a1+3]
			o := row[ox*3 : ox*3+3 : ox*3+3]
			o[0] = w00*n0[p00[0]] + w01*n0[p01[0]] + w10*n0[p10[0]] + w11*n0[p11[0]]
			o[1] = w00*n1[p00[1]] + w01*n1[p01[1]] + w10*n1[p10[1]] + w11*n1[p11[1]]
			o[2] = w00*n2[p00[2]] + w01*n2[p01[2]] + w10*n2[p10[2]] + w11*n2[p11[2]]
		}
	}
}

// PrepareViewInto writes a view's input, as PrepareView makes it, into
// dst with rows stride floats apart, without allocating the view.
func PrepareViewInto(img *maps.Map, v ViewSpec, dst []float32, stride int) {
	if v.Local {
		maps.ResampleInto(img, v.Y0, v.X0, v.Size, v.Size, v.InH, v.InW, v.Flip, dst, stride)
		return
	}
	maps.ResampleInto(img, 0, 0, img.H, img.W, v.InH, v.InW, v.Flip, dst, stride)
}

// EngineOptions configure an inference engine.
type EngineOptions struct {
	Buckets BucketOptions
	// Background keeps the background map: CAMs have C+1 channels (the
	// last is background) instead of the C class maps.
	Background bool `json:",omitempty"`
	// Concurrency is the number of batches run at once in the process
	// (default GOMAXPROCS): every caller of Infer shares this one limit.
	Concurrency int
}

// Engine infers CAMs with a loaded model on views of any size. Each view
// is padded to its bucket (see Buckets), views of one bucket are batched
// together, and every bucket shape is compiled when the engine is made,
// so the number of compiled graphs is set by the options, never by the
// data. An Engine is safe for concurrent use; it bounds the batches
// running at once itself.
type Engine struct {
	Model   *Model
	fwd     *Forward
	buckets *Buckets
	stride  int
	mean    [3]float32
	std     [3]float32
	// norm[c][v] is an 8-bit sample v of channel c normalised, exactly as
	// Normalize computes it: a table lookup where a view's four taps per
	// sample would otherwise each pay a division.
	norm    [3][256]float32
	classes int
	// channels are the maps Infer returns: the classes, and the
	// background when asked.
	channels int
	slots    chan struct{}
	stats    engineCounters
	kernels  string
}

// Kernels is the kernel set the engine's backend runs (KernelSet).
func (e *Engine) Kernels() string { return e.kernels }

// NewEngine prepares inference for a model: it compiles every bucket's
// shapes up front.
func NewEngine(backend compute.Backend, m *Model, o EngineOptions) (*Engine, error) {
	buckets, err := NewBuckets(o.Buckets)
	if err != nil {
		return nil, err
	}
	fwd, err := NewForward(backend, m.Net, m.Params, GlobalPrefix)
	if err != nil {
		return nil, err
	}
	kernels := KernelSet(backend)
	fwd.SetMaxCompiled(buckets.Len() + 16)
	// Compile on every core: each graph takes about a millisecond.
	type job struct{ n, h, w int }
	jobs := make(chan job)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if err := fwd.Compile(j.n, j.h, j.w); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for _, b := range buckets.List() {
		jobs <- job{b.Batch, b.H, b.W}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	conc := o.Concurrency
	if conc <= 0 {
		conc = runtime.GOMAXPROCS(0)
	}
	e := &Engine{Model: m, fwd: fwd, kernels: kernels, buckets: buckets, stride: m.Net.Arch.TotalStride(),
		classes: len(m.Manifest.Classes), channels: len(m.Manifest.Classes), slots: make(chan struct{}, conc)}
	if o.Background {
		e.channels++
	}
	var mean, std [3]float32
	for i := 0; i < 3; i++ {
		mean[i], std[i] = float32(m.Manifest.Input.Mean[i]), float32(m.Manifest.Input.Std[i])
	}
	e.setNormalization(mean, std)
	return e, nil
}

// setNormalization sets the input's per-channel mean and deviation and
// the table of normalised 8-bit samples.
func (e *Engine) setNormalization(mean, std [3]float32) {
	e.mean, e.std = mean, std
	for c := range e.norm {
		for v := range e.norm[c] {
			e.norm[c][v] = (float32(v)/255 - e.mean[c]) / e.std[c] // as Normalize computes it
		}
	}
}

// Buckets returns the engine's bucket set.
func (e *Engine) Buckets() *Buckets { return e.buckets }

// Normalize converts an RGB image with the model's normalisation.
func (e *Engine) Normalize(img *imagefile.RGB) *maps.Map {
	m := maps.New(img.H, img.W, 3)
	for i, v := range img.Pix {
		c := i % 3
		m.Pix[i] = (float32(v)/255 - e.mean[c]) / e.std[c]
	}
	return m
}

// InferStats count what one Infer call did.
type InferStats struct {
	Views   int64 `json:"views"`
	Batches int64 `json:"batches"`
	// RealPixels are the views' own pixels; InputPixels what the network
	// ran on (buckets' padding and zero views that fill a batch included).
	RealPixels  int64 `json:"real_pixels"`
	InputPixels int64 `json:"input_pixels"`
	// BatchNanos is the summed run time of the batches.
	BatchNanos int64 `json:"batch_nanos"`
	// BatchViews counts the batches by how many real views they held (the
	// rest of a batch is zero views that fill it).
	BatchViews map[int]int64 `json:"batch_views,omitempty"`
}

// Add adds o to s.
func (s *InferStats) Add(o InferStats) {
	s.Views += o.Views
	s.Batches += o.Batches
	s.RealPixels += o.RealPixels
	s.InputPixels += o.InputPixels
	s.BatchNanos += o.BatchNanos
	for k, n := range o.BatchViews {
		if s.BatchViews == nil {
			s.BatchViews = map[int]int64{}
		}
		s.BatchViews[k] += n
	}
}

// ViewsPerBatch is the mean number of real views a batch held (0 when
// nothing ran).
func (s InferStats) ViewsPerBatch() float64 {
	if s.Batches == 0 {
		return 0
	}
	return float64(s.Views) / float64(s.Batches)
}

// PaddingOverhead is InputPixels / RealPixels (1 = no padding; 0 when
// nothing ran).
func (s InferStats) PaddingOverhead() float64 {
	if s.RealPixels == 0 {
		return 0
	}
	return float64(s.InputPixels) / float64(s.RealPixels)
}

// ViewSource gives an engine its views one by one, when their batch is
// filled, so that a group's view inputs are never all held at once.
type ViewSource interface {
	// Len is the number of views.
	Len() int
	// Size is view i's input height and width.
	Size(i int) (h, w int)
	// Fill writes view i's normalised RGB input into dst, row y at
	// dst[y*stride:].
	Fill(i int, dst []float32, stride int)
}

// mapSource serves prepared views.
type mapSource []*maps.Map

func (s mapSource) Len() int              { return len(s) }
func (s mapSource) Size(i int) (int, int) { return s[i].H, s[i].W }
func (s mapSource) Fill(i int, dst []float32, stride int) {
	v := s[i]
	for y := 0; y < v.H; y++ {
		copy(dst[y*stride:y*stride+v.W*3], v.Pix[y*v.W*3:(y+1)*v.W*3])
	}
}

// rgbViews serves views of one image, each cut straight from its 8-bit
// pixels into its place in the batch input (PrepareViewFromRGB), as the
// labeling pipeline fills its batches.
type rgbViews struct {
	e     *Engine
	img   *imagefile.RGB
	views []ViewSpec
}

func (s rgbViews) Len() int              { return len(s.views) }
func (s rgbViews) Size(i int) (int, int) { return s.views[i].InH, s.views[i].InW }
func (s rgbViews) Fill(i int, dst []float32, stride int) {
	s.e.PrepareViewFromRGB(s.img, s.views[i], dst, stride)
}

// Infer runs the network on views of any sizes (normalised RGB maps as
// PrepareView gives) and returns each one's CAM (the C class maps, and the background map last
// when EngineOptions.Background) at ceil(size / TotalStride): what an unpadded
// run of the view alone gives. Views are grouped by bucket into batches,
// which run concurrently within the engine's limit. A panic inside a
// batch is returned as an error.
func (e *Engine) Infer(views []*maps.Map) ([]*maps.Map, InferStats, error) {
	for i, v := range views {
		if v.C != 3 || v.H <= 0 || v.W <= 0 || len(v.Pix) != v.H*v.W*3 {
			return nil, InferStats{}, fmt.Errorf("view %d: %dx%dx%d (%d values) is not an RGB image", i, v.H, v.W, v.C, len(v.Pix))
		}
	}
	return e.InferFrom(mapSource(views))
}

// InferFrom is Infer on views a source fills in place, in the padded
// batch input itself.
func (e *Engine) InferFrom(src ViewSource) ([]*maps.Map, InferStats, error) {
	type batch struct {
		b   Bucket
		idx []int
	}
	groups := map[[2]int]*batch{}
	var order [][2]int
	for i := range src.Len() {
		h, w := src.Size(i)
		if h <= 0 || w <= 0 {
			return nil, InferStats{}, fmt.Errorf("view %d: empty size %dx%d", i, h, w)
		}
		b, err := e.buckets.For(h, w)
		if err != nil {
			return nil, InferStats{}, fmt.Errorf("view %d: %w", i, err)
		}
		k := [2]int{b.H, b.W}
		if groups[k] == nil {
			groups[k] = &batch{b: b}
			order = append(order, k)
		}
		groups[k].idx = append(groups[k].idx, i)
	}
	var batches []batch
	for _, k := range order {
		g := groups[k]
		for from := 0; from < len(g.idx); from += g.b.Batch {
			batches = append(batches, batch{b: g.b, idx: g.idx[from:min(len(g.idx), from+g.b.Batch)]})
		}
	}
	out := make([]*maps.Map, src.Len())
	errs := make([]error, len(batches))
	stats := make([]InferStats, len(batches))
	var wg sync.WaitGroup
	for bi, bt := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.slots <- struct{}{}
			defer func() { <-e.slots }()
			defer func() {
				if r := recover(); r != nil {
					errs[bi] = fmt.Errorf("inference of a %dx%d batch panicked: %v", bt.b.H, bt.b.W, r)
				}
			}()
			stats[bi], errs[bi] = e.runBatch(bt.b, bt.idx, src, out)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, InferStats{}, err
	}
	var total InferStats
	for _, s := range stats {
		total.Add(s)
	}
	return out, total, nil
}

// runBatch pads views[idx] into one input of bucket b (zeros beyond each
// view, and zero views up to the bucket's batch size), runs it and stores
// each view's CAM, cut to its real region, in out.
func (e *Engine) runBatch(b Bucket, idx []int, src ViewSource, out []*maps.Map) (InferStats, error) {
	n := b.Batch
	real := make([][2]int, n)
	var realPx int64
	for j, i := range idx {
		h, w := src.Size(i)
		real[j] = [2]int{h, w}
		realPx += int64(h * w)
	}
	fill := func(x []float32) {
		for j, i := range idx {
			src.Fill(i, x[j*b.H*b.W*3:(j+1)*b.H*b.W*3], b.W*3)
		}
	}
	start := time.Now()
	cam, dims, _, err := e.fwd.RunFilled(n, b.H, b.W, fill, real)
	if err != nil {
		return InferStats{}, err
	}
	st := InferStats{Views: int64(len(idx)), Batches: 1, RealPixels: realPx, InputPixels: int64(n * b.H * b.W),
		BatchNanos: int64(time.Since(start)), BatchViews: map[int]int64{len(idx): 1}}
	e.stats.add(st)
	ch, cw, k := dims[1], dims[2], dims[3]
	for j, i := range idx {
		h, w := src.Size(i)
		rh, rw := ceilDiv(h, e.stride), ceilDiv(w, e.stride)
		m := maps.New(rh, rw, e.channels)
		for y := 0; y < rh; y++ {
			for x := 0; x < rw; x++ {
				p := (j*ch+y)*cw + x
				copy(m.Pix[(y*rw+x)*e.channels:(y*rw+x+1)*e.channels], cam[p*k:p*k+e.channels])
			}
		}
		out[i] = m
	}
	return st, nil
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// EngineStats are an engine's counts since it was made.
type EngineStats struct {
	Buckets int `json:"buckets"` // bucket shapes, one compiled graph each
	// Options are the bucket options in effect.
	Options BucketOptions `json:"options"`
	Views   int64         `json:"views"`
	Batches int64         `json:"batches"`
	// RealPixels are the views' own pixels; InputPixels what the network
	// ran on (buckets' padding and zero views that fill a batch included).
	RealPixels  int64   `json:"real_pixels"`
	InputPixels int64   `json:"input_pixels"`
	BatchSecs   float64 `json:"batch_secs"` // summed batch run time
}

// PaddingOverhead is InputPixels / RealPixels (1 = no padding).
func (s EngineStats) PaddingOverhead() float64 {
	if s.RealPixels == 0 {
		return 0
	}
	return float64(s.InputPixels) / float64(s.RealPixels)
}

// Sub returns the counts of s since an earlier snapshot.
func (s EngineStats) Sub(before EngineStats) EngineStats {
	s.Views -= before.Views
	s.Batches -= before.Batches
	s.RealPixels -= before.RealPixels
	s.InputPixels -= before.InputPixels
	s.BatchSecs -= before.BatchSecs
	return s
}

type engineCounters struct {
	views, batches, real, input, nanos atomic.Int64
}

func (c *engineCounters) add(s InferStats) {
	c.views.Add(s.Views)
	c.batches.Add(s.Batches)
	c.real.Add(s.RealPixels)
	c.input.Add(s.InputPixels)
	c.nanos.Add(s.BatchNanos)
}

// Stats returns the engine's counts so far.
func (e *Engine) Stats() EngineStats {
	return EngineStats{Buckets: e.buckets.Len(), Options: e.buckets.Options,
		Views: e.stats.views.Load(), Batches: e.stats.batches.Load(), RealPixels: e.stats.real.Load(),
		InputPixels: e.stats.input.Load(), BatchSecs: time.Duration(e.stats.nanos.Load()).Seconds()}
}

// CAM computes an image's fused CAM in process: its views inferred and
// fused in order (Fuse), as the labeling pipeline's stages do.
func (e *Engine) CAM(img *imagefile.RGB, tags []int, opts ViewOptions, fo FuseOptions) (*Fused, error) {
	if fo.Reading == ReadSoftmax && e.channels == e.classes {
		return nil, errors.New("the softmax reading needs an engine with the background map (EngineOptions.Background)")
	}
	views := opts.Views(img.H, img.W)
	slices.SortFunc(views, func(a, b ViewSpec) int { return a.Index - b.Index })
	cams, _, err := e.InferFrom(rgbViews{e: e, img: img, views: views})
	if err != nil {
		return nil, err
	}
	if fo.Reading != ReadSoftmax && e.channels > e.classes {
		for i, c := range cams {
			cams[i] = dropBackground(c, e.classes)
		}
	}
	return Fuse(cams, views, img.H, img.W, e.classes, tags, fo)
}

// dropBackground returns m's first classes channels.
func dropBackground(m *maps.Map, classes int) *maps.Map {
	out := maps.New(m.H, m.W, classes)
	for p := 0; p < m.H*m.W; p++ {
		copy(out.Pix[p*classes:(p+1)*classes], m.Pix[p*m.C:p*m.C+classes])
	}
	return out
}

// Logits returns the network's image logits for img at its own size (one
// view, scale 1, not flipped): the mean of each class's CAM over the map,
// as in training. They score classification, which labeling depends on:
// a class the classifier never learns cannot be labelled.
func (e *Engine) Logits(img *imagefile.RGB) ([]float64, error) {
	cams, _, err := e.Infer([]*maps.Map{e.Normalize(img)})
	if err != nil {
		return nil, err
	}
	m := cams[0]
	out := make([]float64, e.classes)
	for p := 0; p < m.H*m.W; p++ {
		for c := range out {
			out[c] += float64(m.Pix[p*m.C+c])
		}
	}
	for c := range out {
		out[c] /= float64(m.H * m.W)
	}
	return out, nil
}
