package model

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model/maps"
)

// ImageMean and ImageStd normalise RGB/255 inputs (the ImageNet values the
// reference uses).
var (
	ImageMean = [3]float32{0.485, 0.456, 0.406}
	ImageStd  = [3]float32{0.229, 0.224, 0.225}
)

// InputConfig configures training input.
type InputConfig struct {
	Method    string // l2g or cam
	Classes   int
	Batch     int
	ImageSize int
	ViewSize  int
	Views     int
	ViewMode  string // corners+random, random, grid
	Stride    int
	Seed      int64
	Workers   int // decoding goroutines
	Prefetch  int // batches prepared ahead
	MaxPixels int
}

// Loader turns dataset records into augmented training batches, decoded in
// parallel goroutines and delivered in a deterministic order for a seed.
type Loader struct {
	cfg  InputConfig
	st   *storage.Store
	recs []dataset.Record

	// Counters (read with atomic loads).
	Failed      atomic.Int64 // images that could not be read or decoded
	NoSaliency  atomic.Int64 // images without a usable saliency map
	BadSaliency atomic.Int64 // saliency maps unreadable or of the wrong size

	warnOnce sync.Once
	warn     func(string)
}

// NewLoader prepares a loader. warn, if set, receives a message about the
// first unreadable record.
func NewLoader(cfg InputConfig, st *storage.Store, recs []dataset.Record, warn func(string)) (*Loader, error) {
	if len(recs) < cfg.Batch {
		return nil, fmt.Errorf("%d training images for a batch of %d", len(recs), cfg.Batch)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.Prefetch <= 0 {
		cfg.Prefetch = 2 * cfg.Workers
	}
	return &Loader{cfg: cfg, st: st, recs: recs, warn: warn}, nil
}

// StepsPerEpoch is the number of full batches in one pass over the data.
func (l *Loader) StepsPerEpoch() int { return len(l.recs) / l.cfg.Batch }

// order returns the epoch's permutation of record indices.
func (l *Loader) order(epoch int) []int {
	r := rand.New(rand.NewPCG(uint64(l.cfg.Seed), uint64(epoch)+1<<40))
	return r.Perm(len(l.recs))
}

// BatchResult is a prepared batch or the error that stopped preparation.
type BatchResult struct {
	Step  int // global step index (from 0)
	Batch *Batch
	Err   error
}

// Batches prepares the batches of steps [from, to) and sends them in
// order. The channel closes after the last batch, an error, or when ctx is
// done.
func (l *Loader) Batches(ctx context.Context, from, to int) <-chan BatchResult {
	out := make(chan BatchResult)
	futures := make(chan chan BatchResult, l.cfg.Prefetch)
	sem := make(chan struct{}, l.cfg.Workers)
	go func() {
		defer close(futures)
		for step := from; step < to; step++ {
			f := make(chan BatchResult, 1)
			select {
			case futures <- f:
			case <-ctx.Done():
				return
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go func(step int) {
				defer func() { <-sem }()
				b, err := l.batch(ctx, step)
				f <- BatchResult{Step: step, Batch: b, Err: err}
			}(step)
		}
	}()
	go func() {
		defer close(out)
		for f := range futures {
			var r BatchResult
			select {
			case r = <-f:
			case <-ctx.Done():
				return
			}
			select {
			case out <- r:
			case <-ctx.Done():
				return
			}
			if r.Err != nil {
				return
			}
		}
	}()
	return out
}

// sample is one augmented image and its views.
type sample struct {
	img    *maps.Map // S x S x 3, normalised
	tags   []int
	views  []*maps.Map
	boxes  [][2]int // view top-left (y, x) in the image
	sal    []*maps.Map
	hasSal bool
}

func (l *Loader) batch(ctx context.Context, step int) (*Batch, error) {
	spe := l.StepsPerEpoch()
	epoch, pos := step/spe, step%spe
	order := l.order(epoch)
	c := l.cfg
	b := &Batch{}
	for k := 0; k < c.Batch; k++ {
		var smp *sample
		var err error
		// A record that cannot be read is replaced by another one further
		// along the permutation (deterministically), and counted.
		for try := 0; try < 10; try++ {
			idx := order[(pos*c.Batch+k+try*7919)%len(order)]
			rec := l.recs[idx]
			r := rand.New(rand.NewPCG(uint64(c.Seed), uint64(epoch)<<32|uint64(idx)))
			smp, err = l.prepare(ctx, rec, r)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			l.Failed.Add(1)
			l.warnOnce.Do(func() {
				if l.warn != nil {
					l.warn(fmt.Sprintf("skipping unreadable training image %s: %v (further ones are only counted)", rec.ID, err))
				}
			})
		}
		if err != nil {
			return nil, fmt.Errorf("training input: too many unreadable images in a row: %w", err)
		}
		l.append(b, smp)
	}
	return b, nil
}

func (l *Loader) append(b *Batch, s *sample) {
	c := l.cfg
	b.Images = append(b.Images, s.img.Pix...)
	tags := make([]float32, c.Classes)
	for _, t := range s.tags {
		tags[t] = 1
	}
	b.Tags = append(b.Tags, tags...)
	if c.Method == "cam" {
		return
	}
	present := append(append([]float32(nil), tags...), 1)
	h := (c.ViewSize + c.Stride - 1) / c.Stride
	hf := (c.ImageSize + c.Stride - 1) / c.Stride
	for v, view := range s.views {
		b.Views = append(b.Views, view.Pix...)
		b.ViewTags = append(b.ViewTags, tags...)
		b.Present = append(b.Present, present...)
		if s.hasSal {
			b.Sal = append(b.Sal, s.sal[v].Pix...)
			b.HasSal = append(b.HasSal, 1)
		} else {
			b.Sal = append(b.Sal, make([]float32, h*h)...)
			b.HasSal = append(b.HasSal, 0)
		}
	}
	for _, box := range s.boxes {
		b.RY = append(b.RY, maps.InterpMatrix(h, float64(box[0])/float64(c.Stride), float64(c.ViewSize)/float64(c.Stride), hf)...)
	}
	for _, box := range s.boxes {
		b.RX = append(b.RX, maps.InterpMatrix(h, float64(box[1])/float64(c.Stride), float64(c.ViewSize)/float64(c.Stride), hf)...)
	}
}

// ViewBoxes returns the top-left corners of n views of side v in an image
// of side s: "corners+random" (the 4 corners, then random), "random", or
// "grid" (evenly spaced).
func ViewBoxes(mode string, n, s, v int, r *rand.Rand) [][2]int {
	span := s - v
	var out [][2]int
	switch mode {
	case "grid":
		g := 1
		for g*g < n {
			g++
		}
		for i := 0; i < g && len(out) < n; i++ {
			for j := 0; j < g && len(out) < n; j++ {
				y, x := 0, 0
				if g > 1 {
					y, x = i*span/(g-1), j*span/(g-1)
				}
				out = append(out, [2]int{y, x})
			}
		}
		return out
	case "corners+random":
		out = append(out, [2]int{0, 0}, [2]int{0, span}, [2]int{span, 0}, [2]int{span, span})
		if n < 4 {
			return out[:n]
		}
	}
	for len(out) < n {
		out = append(out, [2]int{r.IntN(span + 1), r.IntN(span + 1)})
	}
	return out
}

// prepare reads, decodes and augments one record: random rescale (short
// side S to 1.25 S), random S x S crop, random flip; then cuts the views.
func (l *Loader) prepare(ctx context.Context, rec dataset.Record, r *rand.Rand) (*sample, error) {
	c := l.cfg
	data, err := l.st.ReadFile(ctx, rec.Image, 256<<20)
	if err != nil {
		return nil, err
	}
	rgb, err := imagefile.DecodeRGB(data, c.MaxPixels)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rec.Image, err)
	}
	img := maps.New(rgb.H, rgb.W, 3)
	for i, v := range rgb.Pix {
		img.Pix[i] = float32(v)
	}
	var sal *maps.Map
	if c.Method == "l2g" {
		sal = l.readSaliency(ctx, rec, rgb.W, rgb.H)
	}

	s := c.ImageSize
	short := min(img.H, img.W)
	target := float64(s) * (1 + 0.25*r.Float64())
	nh := max(s, int(float64(img.H)*target/float64(short)+0.5))
	nw := max(s, int(float64(img.W)*target/float64(short)+0.5))
	y0, x0 := r.IntN(nh-s+1), r.IntN(nw-s+1)
	// The s x s crop of the image resized to nh x nw, computed for the
	// crop alone: the same samples as resizing the whole image and
	// cropping, without resizing all of a large or elongated photo.
	fy, fx := float64(img.H)/float64(nh), float64(img.W)/float64(nw)
	box := func(m *maps.Map) *maps.Map {
		return maps.CropResize(m, float64(y0)*fy, float64(x0)*fx, float64(s)*fy, float64(s)*fx, s, s)
	}
	img = box(img)
	flip := r.IntN(2) == 1
	if flip {
		img = maps.FlipH(img)
	}
	for i := range img.Pix {
		ch := i % 3
		img.Pix[i] = (img.Pix[i]/255 - ImageMean[ch]) / ImageStd[ch]
	}
	smp := &sample{img: img, tags: rec.Tags}
	if c.Method == "cam" {
		return smp, nil
	}
	if sal != nil {
		sal = box(sal)
		if flip {
			sal = maps.FlipH(sal)
		}
		var mx float32
		for _, v := range sal.Pix {
			mx = max(mx, v)
		}
		// As the reference: soft saliency scaled by its maximum.
		if mx > 0 {
			for i := range sal.Pix {
				sal.Pix[i] /= mx
			}
			smp.hasSal = true
		}
	}
	if !smp.hasSal {
		l.NoSaliency.Add(1)
	}
	smp.boxes = ViewBoxes(c.ViewMode, c.Views, s, c.ViewSize, r)
	h := (c.ViewSize + c.Stride - 1) / c.Stride
	for _, b := range smp.boxes {
		smp.views = append(smp.views, maps.Crop(img, b[0], b[1], c.ViewSize, c.ViewSize))
		if smp.hasSal {
			smp.sal = append(smp.sal, maps.CropResize(sal, float64(b[0]), float64(b[1]), float64(c.ViewSize), float64(c.ViewSize), h, h))
		}
	}
	return smp, nil
}

// readSaliency returns the record's saliency map as values in [0, 255], or
// nil when it has none or it is unusable (counted).
func (l *Loader) readSaliency(ctx context.Context, rec dataset.Record, w, h int) *maps.Map {
	if rec.Saliency == "" {
		return nil
	}
	data, err := l.st.ReadFile(ctx, rec.Saliency, 256<<20)
	if err != nil {
		if !errors.Is(err, storage.ErrNotExist) {
			l.BadSaliency.Add(1)
		}
		return nil
	}
	g, err := imagefile.DecodeGray(data, l.cfg.MaxPixels)
	if err != nil || g.W != w || g.H != h {
		l.BadSaliency.Add(1)
		return nil
	}
	m := maps.New(h, w, 1)
	for i, v := range g.Pix {
		m.Pix[i] = float32(v)
	}
	return m
}
