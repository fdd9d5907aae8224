package model

import (
	"fmt"
	"math"
	"slices"

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
	for _, s := range o.Scales {
		out = append(out, ViewSpec{Index: len(out), Scale: s})
		if o.Flip {
			out = append(out, ViewSpec{Index: len(out), Scale: s, Flip: true})
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
	for _, y := range ys {
		for _, x := range xs {
			out = append(out, ViewSpec{Index: len(out), Local: true, Y0: y, X0: x, Size: n, Scale: 1})
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

// viewSize is the input size of a whole-image view at a scale (at least
// 8 px a side).
func viewSize(h, w int, scale float64) (int, int) {
	return max(8, int(math.Round(float64(h)*scale))), max(8, int(math.Round(float64(w)*scale)))
}

// PrepareView cuts a view's input from the normalised image.
func PrepareView(img *maps.Map, v ViewSpec) *maps.Map {
	var out *maps.Map
	if v.Local {
		out = maps.Crop(img, v.Y0, v.X0, v.Size, v.Size)
	} else {
		h, w := viewSize(img.H, img.W, v.Scale)
		out = maps.Resize(img, h, w)
	}
	if v.Flip {
		out = maps.FlipH(out)
	}
	return out
}

// RestoreView brings a view's foreground CAM back to image coordinates:
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

// Engine infers CAMs with a loaded model. One compiled executable (per
// input shape) serves any number of goroutines.
type Engine struct {
	Model   *Model
	fwd     *Forward
	mean    [3]float32
	std     [3]float32
	classes int
}

// NewEngine compiles inference for a model.
func NewEngine(backend compute.Backend, m *Model) (*Engine, error) {
	fwd, err := NewForward(backend, m.Net, m.Params, GlobalPrefix)
	if err != nil {
		return nil, err
	}
	e := &Engine{Model: m, fwd: fwd, classes: len(m.Manifest.Classes)}
	for i := 0; i < 3; i++ {
		e.mean[i], e.std[i] = float32(m.Manifest.Input.Mean[i]), float32(m.Manifest.Input.Std[i])
	}
	return e, nil
}

// Normalize converts an RGB image with the model's normalisation.
func (e *Engine) Normalize(img *imagefile.RGB) *maps.Map {
	m := maps.New(img.H, img.W, 3)
	for i, v := range img.Pix {
		c := i % 3
		m.Pix[i] = (float32(v)/255 - e.mean[c]) / e.std[c]
	}
	return m
}

// InferBatch runs the network on same-sized views and returns each one's
// foreground CAMs (the C class maps, background dropped).
func (e *Engine) InferBatch(views []*maps.Map) ([]*maps.Map, error) {
	if len(views) == 0 {
		return nil, nil
	}
	h, w := views[0].H, views[0].W
	x := make([]float32, 0, len(views)*h*w*3)
	for _, v := range views {
		if v.H != h || v.W != w || v.C != 3 {
			return nil, fmt.Errorf("batch mixes view sizes %dx%d and %dx%dx%d", h, w, v.H, v.W, v.C)
		}
		x = append(x, v.Pix...)
	}
	cam, dims, _, err := e.fwd.Run(x, len(views), h, w)
	if err != nil {
		return nil, err
	}
	ch, cw, k := dims[1], dims[2], dims[3]
	out := make([]*maps.Map, len(views))
	for i := range views {
		m := maps.New(ch, cw, e.classes)
		for p := 0; p < ch*cw; p++ {
			copy(m.Pix[p*e.classes:(p+1)*e.classes], cam[(i*ch*cw+p)*k:(i*ch*cw+p)*k+e.classes])
		}
		out[i] = m
	}
	return out, nil
}

// CAM computes an image's fused CAM in process: every view inferred one by
// one, restored and fused in order. The labeling pipeline does the same
// steps as separate Beam stages.
func (e *Engine) CAM(img *imagefile.RGB, tags []int, opts ViewOptions) (*maps.Map, error) {
	norm := e.Normalize(img)
	f := NewFuser(img.H, img.W, e.classes, opts.LocalCombine)
	views := opts.Views(img.H, img.W)
	slices.SortFunc(views, func(a, b ViewSpec) int { return a.Index - b.Index })
	for _, v := range views {
		cams, err := e.InferBatch([]*maps.Map{PrepareView(norm, v)})
		if err != nil {
			return nil, err
		}
		if err := f.Add(v, RestoreView(cams[0], v, img.H, img.W)); err != nil {
			return nil, err
		}
	}
	return f.Result(tags), nil
}
