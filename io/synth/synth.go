// Package synth writes the synthetic benchmark: a dataset in the standard
// layout (images, ground truth, saliency, tag lists) built so that it tests
// what L2G is meant to fix.
//
// Every object is a large body whose look (a striped, brownish texture) is
// shared by all classes, carrying one small discriminative part (a patch of
// a class-specific colour and pattern). A classifier needs only the part to
// name the class, so a plain CAM fires on the part and misses the body; the
// ground truth covers the whole object. Backgrounds are cluttered with
// desaturated shapes and, in some images, a body without a part (a
// distractor); objects overlap and vary in scale. Saliency maps are soft and
// imperfect like a real detector's: blurred edges, missed regions, false
// positives, and no file at all for some images.
//
// Generator v2 (the default) makes the benchmark less convenient, closer
// to photos: a body carries faint evidence of its class (a tint towards the
// class colour, a class-specific stripe period), distractors are objects
// of another kind rather than part-less bodies, and saliency maps fail as
// real detectors do (parts cut off, bleeding into high-contrast clutter,
// firing on the distractors). v1 is kept byte for byte for comparison.
package synth

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
)

// Options controls the generator.
type Options struct {
	Images int // number of images
	// Size is the typical long side in pixels. Each image gets its own
	// size, as photos do: long side 0.8 to 1.3 times Size, aspect 1:1 to
	// 1:1.8, a third of them portrait. FixedSize makes every image Size x
	// Size (the first generator's behaviour, byte for byte).
	Size      int
	FixedSize bool
	// Generator names the benchmark variant (Variants): "v2" (the
	// default, ""), "v1" (the first one, kept byte for byte), or one of
	// the family that varies what photos vary (see Variants).
	Generator string
	Classes   int   // foreground classes, 2..20
	Seed      int64 // same seed, same bytes
	// ValFraction of the images are listed in val_cls.txt, the rest in
	// train_cls.txt.
	ValFraction float64
	// NoSaliencyFraction of the images get no saliency file.
	NoSaliencyFraction float64
	// Workers generating in parallel; 0 means 4.
	Workers int
	// Progress, if set, is called after each image is written.
	Progress func(done, total int)
}

// FromConfig returns the generator options of a synth configuration
// (Workers and Progress left unset).
func FromConfig(c config.Synth) Options {
	return Options{Images: c.Images, Size: c.Size, FixedSize: c.FixedSize, Generator: c.Generator,
		Classes: c.Classes, Seed: c.Seed, ValFraction: c.ValFraction, NoSaliencyFraction: c.NoSaliencyFraction}
}

// params are the generator's settings of a variant.
type params struct {
	v2 bool // v2's texture stream, distractors and saliency model
	// tint is how far a body's colour moves towards its class colour
	// (class evidence on bodies: 0 none, v2 0.05); classStripes gives a
	// body a class-specific stripe period.
	tint         float64
	classStripes bool
	// decoyRate is the share of images with a decoy; decoyBody makes it
	// a body of the objects' look without a part (v1's), otherwise an
	// object of another kind (v2's); decoyPart gives a decoy body a part
	// of no class colour.
	decoyRate float64
	decoyBody bool
	decoyPart bool
	// scaleLo + scaleSpan*u is an object's largest radius over the short
	// side; maxObjects the most objects an image (at least one).
	scaleLo, scaleSpan float64
	maxObjects         int
	// saliency: "v1" (blurred ground truth with errors), "v2" (a
	// detector's faults) or "poor" (v2's faults, harsher).
	saliency string
	// width and height of every image as multiples of Size (0: sizes
	// vary as photos do); sizeScale multiplies Size for varied sizes.
	fixedW, fixedH, sizeScale float64
	// noSaliencyMin raises NoSaliencyFraction to at least this.
	noSaliencyMin float64
}

// variants are the benchmark family. v1 and v2 are the first two
// generators; the others each change what photos vary: class evidence on
// object bodies (none to strong), decoys, object scale, saliency quality
// and image size.
var variants = map[string]struct {
	doc string
	p   params
}{
	"v1": {"the first generator: no class evidence on bodies, part-less decoy bodies, blurred ground truth as saliency",
		params{tint: 0, decoyRate: 0.35, decoyBody: true, scaleLo: 0.2, scaleSpan: 0.15, maxObjects: 3, saliency: "v1", sizeScale: 1}},
	"v2": {"faint class evidence on bodies (tint 0.05, class stripes), decoys of another kind, a detector's saliency faults",
		params{v2: true, tint: 0.05, classStripes: true, decoyRate: 0.35, scaleLo: 0.2, scaleSpan: 0.15, maxObjects: 3, saliency: "v2", sizeScale: 1}},
	"part-only": {"every image 160x120 (at size 128), class evidence on the part only, decoy bodies in most images (some with a part of no class)",
		params{v2: true, tint: 0, decoyRate: 0.7, decoyBody: true, decoyPart: true, scaleLo: 0.25, scaleSpan: 0.15, maxObjects: 3, saliency: "v2",
			fixedW: 1.25, fixedH: 0.9375}},
	"strong-bodies": {"every image its own size, strong class evidence on bodies (tint 0.15, class stripes)",
		params{v2: true, tint: 0.15, classStripes: true, decoyRate: 0.35, scaleLo: 0.2, scaleSpan: 0.15, maxObjects: 3, saliency: "v2", sizeScale: 1}},
	"large-weak": {"larger images (long side about 1.5x size), weak class evidence on bodies (tint 0.025), decoy bodies",
		params{v2: true, tint: 0.025, classStripes: true, decoyRate: 0.5, decoyBody: true, scaleLo: 0.2, scaleSpan: 0.15, maxObjects: 3, saliency: "v2", sizeScale: 1.5}},
	"small-objects": {"smaller objects (radius 0.1-0.2 of the short side), up to 5 an image, moderate class evidence (tint 0.08)",
		params{v2: true, tint: 0.08, classStripes: true, decoyRate: 0.35, scaleLo: 0.1, scaleSpan: 0.1, maxObjects: 5, saliency: "v2", sizeScale: 1}},
	"poor-saliency": {"v2's objects with poor saliency: harsher misses and bleeding, a quarter of the images without a map",
		params{v2: true, tint: 0.05, classStripes: true, decoyRate: 0.35, scaleLo: 0.2, scaleSpan: 0.15, maxObjects: 3, saliency: "poor", sizeScale: 1,
			noSaliencyMin: 0.25}},
}

// Variants lists the benchmark variants' names, v1 and v2 first.
func Variants() []string {
	out := []string{"v1", "v2"}
	var rest []string
	for name := range variants {
		if name != "v1" && name != "v2" {
			rest = append(rest, name)
		}
	}
	slices.Sort(rest)
	return append(out, rest...)
}

// VariantDoc says what a variant varies.
func VariantDoc(name string) string { return variants[name].doc }

// variantParams returns a variant's settings ("" is v2).
func variantParams(name string) (params, bool) {
	if name == "" {
		name = "v2"
	}
	v, ok := variants[name]
	return v.p, ok
}

// Sample is one generated image with its annotations.
type Sample struct {
	ID       string
	Image    *imagefile.RGB
	GT       *imagefile.Gray // class index+1 per pixel, 0 background, 255 boundary
	Saliency *imagefile.Gray // nil when the image has no saliency file
	Tags     []int           // 0-based classes present in GT
	Val      bool            // listed in the val split
}

// classNames are the part colours' names.
var classNames = []string{"red", "green", "blue", "yellow", "magenta", "cyan", "orange", "purple",
	"lime", "pink", "teal", "navy", "olive", "maroon", "coral", "gold", "violet", "sky", "mint", "black"}

// partColours are saturated colours, far from the desaturated clutter and
// the brownish body.
var partColours = [][3]float64{{230, 20, 20}, {20, 200, 40}, {30, 50, 240}, {245, 230, 20},
	{230, 20, 220}, {20, 225, 230}, {250, 140, 0}, {130, 20, 200}, {150, 250, 40}, {255, 120, 180},
	{0, 128, 128}, {0, 0, 128}, {128, 128, 0}, {128, 0, 0}, {255, 127, 80}, {255, 200, 0},
	{200, 120, 255}, {100, 180, 255}, {160, 255, 200}, {10, 10, 10}}

// ClassNames returns the class names of a benchmark with c classes.
func ClassNames(c int) []string { return slices.Clone(classNames[:c]) }

// ID returns the id of the i-th image.
func ID(i int) string { return fmt.Sprintf("syn_%06d", i) }

type ellipse struct {
	cx, cy, rx, ry, cos, sin float64
}

// inside returns the normalised radius of (x, y): <= 1 inside.
func (e ellipse) inside(x, y float64) float64 {
	dx, dy := x-e.cx, y-e.cy
	u := (dx*e.cos + dy*e.sin) / e.rx
	v := (-dx*e.sin + dy*e.cos) / e.ry
	return u*u + v*v
}

func randEllipse(r *rand.Rand, cx, cy, rmin, rmax float64) ellipse {
	a := r.Float64() * math.Pi
	rx := rmin + r.Float64()*(rmax-rmin)
	ry := rx * (0.55 + 0.45*r.Float64())
	return ellipse{cx, cy, rx, ry, math.Cos(a), math.Sin(a)}
}

type object struct {
	class       int
	body, part  ellipse
	tint        [3]float64
	stripeAngle float64
}

func clamp8(v float64) uint8 {
	switch {
	case v <= 0:
		return 0
	case v >= 255:
		return 255
	}
	return uint8(v + 0.5)
}

// imageSize returns the width and height of the i-th image. Sizes come
// from a random stream of their own, so that the fixed-size benchmark is
// the same byte for byte as before sizes varied.
func (o Options) imageSize(i int) (int, int) {
	p, _ := variantParams(o.Generator)
	if p.fixedW > 0 {
		return int(math.Round(p.fixedW * float64(o.Size))), int(math.Round(p.fixedH * float64(o.Size)))
	}
	if o.FixedSize {
		return o.Size, o.Size
	}
	r := rand.New(rand.NewPCG(uint64(o.Seed)^0x517e5, uint64(i)))
	size := float64(o.Size)
	if p.sizeScale != 1 {
		size *= p.sizeScale
	}
	long := size * (0.8 + 0.5*r.Float64())
	short := long / (1 + 0.8*r.Float64())
	w, h := int(math.Round(long)), max(16, int(math.Round(short)))
	if r.IntN(3) == 0 {
		w, h = h, w
	}
	return w, h
}

// Generate makes the i-th sample of a benchmark; it depends only on opts'
// Size, FixedSize, Classes, Seed and fractions, and i.
func Generate(opts Options, i int) Sample {
	r := rand.New(rand.NewPCG(uint64(opts.Seed), uint64(i)))
	p, _ := variantParams(opts.Generator)
	// v2 draws its own randomness from a stream of its own, so that v1's
	// images come out byte for byte as before v2 existed.
	r2 := rand.New(rand.NewPCG(uint64(opts.Seed)^0xb0d1e5, uint64(i)))
	sw, sh := opts.imageSize(i)
	fw, fh := float64(sw), float64(sh)
	fs := math.Min(fw, fh) // object and clutter sizes follow the short side
	img := imagefile.NewRGB(sw, sh)
	lab := make([]uint8, sw*sh) // class+1 of the visible object, before boundaries

	// Background: a desaturated gradient, noise and clutter.
	base := [3]float64{60 + 120*r.Float64(), 0, 0}
	base[1] = base[0] + 30*(r.Float64()-0.5)
	base[2] = base[0] + 30*(r.Float64()-0.5)
	gx, gy := 40*(r.Float64()-0.5), 40*(r.Float64()-0.5)
	for y := 0; y < sh; y++ {
		for x := 0; x < sw; x++ {
			g := gx*float64(x)/fw + gy*float64(y)/fh
			n := 24 * (r.Float64() - 0.5)
			p := 3 * (y*sw + x)
			for c := 0; c < 3; c++ {
				img.Pix[p+c] = clamp8(base[c] + g + n)
			}
		}
	}
	// contrast marks clutter pixels that stand out from the background
	// (v2's saliency bleeds into them, as a detector's does).
	contrast := make([]bool, sw*sh)
	for k, n := 0, 4+r.IntN(6); k < n; k++ {
		lum := 40 + 180*r.Float64()
		strong := math.Abs(lum-base[0]) > 70
		col := [3]float64{lum + 40*(r.Float64()-0.5), lum + 40*(r.Float64()-0.5), lum + 40*(r.Float64()-0.5)}
		if r.IntN(2) == 0 { // rectangle
			x0, y0 := r.IntN(sw), r.IntN(sh)
			w, h := 3+r.IntN(max(1, int(fs)/4)), 3+r.IntN(max(1, int(fs)/4))
			for y := y0; y < min(sh, y0+h); y++ {
				for x := x0; x < min(sw, x0+w); x++ {
					for c := 0; c < 3; c++ {
						img.Pix[3*(y*sw+x)+c] = clamp8(col[c])
					}
					contrast[y*sw+x] = strong
				}
			}
		} else { // thick line
			x0, y0 := fw*r.Float64(), fh*r.Float64()
			a := r.Float64() * 2 * math.Pi
			l, th := fs*(0.2+0.5*r.Float64()), 1+2*r.Float64()
			for t := 0.0; t < l; t += 0.5 {
				cx, cy := x0+t*math.Cos(a), y0+t*math.Sin(a)
				for y := int(cy - th); y <= int(cy+th); y++ {
					for x := int(cx - th); x <= int(cx+th); x++ {
						if x >= 0 && y >= 0 && x < sw && y < sh {
							for c := 0; c < 3; c++ {
								img.Pix[3*(y*sw+x)+c] = clamp8(col[c])
							}
							contrast[y*sw+x] = strong
						}
					}
				}
			}
		}
	}

	newBody := func() object {
		rmax := fs * (p.scaleLo + p.scaleSpan*r.Float64())
		margin := rmax * 0.5
		cx := margin + r.Float64()*(fw-2*margin)
		cy := margin + r.Float64()*(fh-2*margin)
		a := r.Float64() * math.Pi
		rx := rmax * (0.8 + 0.2*r.Float64())
		o := object{body: ellipse{cx, cy, rx, rx * (0.45 + 0.3*r.Float64()), math.Cos(a), math.Sin(a)},
			stripeAngle: r.Float64() * math.Pi}
		o.tint = [3]float64{150 + 20*(r.Float64()-0.5), 125 + 20*(r.Float64()-0.5), 95 + 20*(r.Float64()-0.5)}
		return o
	}
	paintBody := func(o object, mark uint8, fill []uint8) {
		sa, ca := math.Sin(o.stripeAngle), math.Cos(o.stripeAngle)
		period := 7.0
		if mark != 0 {
			// A body may carry evidence of its class, as a bird's body is
			// still bird-like: a tint towards the class colour and a
			// class-specific stripe period.
			if p.classStripes {
				period = 6 + float64(o.class%3)
			}
			if p.tint != 0 {
				for c := 0; c < 3; c++ {
					o.tint[c] += p.tint * (partColours[o.class][c] - 128)
				}
			}
		}
		for y := 0; y < sh; y++ {
			for x := 0; x < sw; x++ {
				fx, fy := float64(x)+0.5, float64(y)+0.5
				if o.body.inside(fx, fy) > 1 {
					continue
				}
				stripe := 28 * math.Sin((fx*ca+fy*sa)*2*math.Pi/period)
				n := 16 * (r.Float64() - 0.5)
				p := 3 * (y*sw + x)
				for c := 0; c < 3; c++ {
					img.Pix[p+c] = clamp8(o.tint[c] + stripe + n)
				}
				if fill != nil {
					fill[y*sw+x] = mark
				}
			}
		}
	}

	// A distractor: v1, a body without a part (the look of every object);
	// v2, an object of another kind (a boxy shape with a grained, dotted
	// texture of its own colour), as the background of a photo holds
	// things that are none of the classes.
	var distractor *object
	distractorMask := make([]bool, sw*sh)
	if r.Float64() < p.decoyRate {
		d := newBody()
		distractor = &d
		if p.decoyBody {
			paintBody(d, 0, nil)
			if p.decoyPart {
				paintDecoyPart(rand.New(rand.NewPCG(uint64(opts.Seed)^0xdec07, uint64(i))), img, d)
			}
		} else {
			paintOther(r2, img, d.body, distractorMask)
		}
	}

	nobj := 1 + r.IntN(p.maxObjects)
	objs := make([]object, nobj)
	for k := range objs {
		o := newBody()
		o.class = r.IntN(opts.Classes)
		// The part: a small ellipse near one end of the body's major axis,
		// so that a region grown around it covers little of the body.
		minor := math.Min(o.body.rx, o.body.ry)
		side := float64(1 - 2*r.IntN(2))
		along := side * (0.55 + 0.2*r.Float64()) * o.body.rx
		across := (r.Float64() - 0.5) * 0.4 * o.body.ry
		px := o.body.cx + along*o.body.cos - across*o.body.sin
		py := o.body.cy + along*o.body.sin + across*o.body.cos
		pr := math.Max(2.5, minor*(0.35+0.1*r.Float64()))
		o.part = randEllipse(r, px, py, pr*0.9, pr)
		objs[k] = o

		paintBody(o, uint8(o.class+1), lab)
		col := partColours[o.class]
		pattern := o.class % 3
		for y := 0; y < sh; y++ {
			for x := 0; x < sw; x++ {
				fx, fy := float64(x)+0.5, float64(y)+0.5
				if o.part.inside(fx, fy) > 1 || o.body.inside(fx, fy) > 1 {
					continue
				}
				shade := 1.0
				switch pattern {
				case 1: // checker
					if (x/2+y/2)%2 == 0 {
						shade = 0.55
					}
				case 2: // dots
					if x%3 == 0 && y%3 == 0 {
						shade = 0.4
					}
				}
				n := 10 * (r.Float64() - 0.5)
				p := 3 * (y*sw + x)
				for c := 0; c < 3; c++ {
					img.Pix[p+c] = clamp8(col[c]*shade + n)
				}
			}
		}
	}

	// Ground truth: object pixels next to a different label become 255, a
	// thin version of VOC's ignored boundary band.
	gt := imagefile.NewGray(sw, sh)
	for y := 0; y < sh; y++ {
		for x := 0; x < sw; x++ {
			v := lab[y*sw+x]
			gt.Pix[y*sw+x] = v
			if v == 0 {
				continue
			}
			for _, d := range [][2]int{{1, 0}, {-1, 0}, {0, 1}, {0, -1}} {
				nx, ny := x+d[0], y+d[1]
				if nx >= 0 && ny >= 0 && nx < sw && ny < sh && lab[ny*sw+nx] != v {
					gt.Pix[y*sw+x] = imagefile.Ignore
					break
				}
			}
		}
	}
	var tags []int
	for _, v := range gt.Pix {
		if v != 0 && v != imagefile.Ignore {
			tags = append(tags, int(v)-1)
		}
	}
	slices.Sort(tags)
	tags = slices.Compact(tags)

	var sal *imagefile.Gray
	if r.Float64() >= max(opts.NoSaliencyFraction, p.noSaliencyMin) {
		switch p.saliency {
		case "v2":
			sal = saliencyV2(r2, sw, sh, lab, objs, distractorMask, contrast)
		case "poor":
			sal = saliencyPoor(r2, sw, sh, lab, objs, distractorMask, contrast)
		default:
			sal = saliency(r, sw, sh, lab, distractor)
		}
	}
	return Sample{ID: ID(i), Image: img, GT: gt, Saliency: sal, Tags: tags, Val: r.Float64() < opts.ValFraction}
}

// saliency makes an imperfect soft saliency map from the object mask.
func saliency(r *rand.Rand, sw, sh int, lab []uint8, distractor *object) *imagefile.Gray {
	m := make([]float64, sw*sh)
	for i, v := range lab {
		if v != 0 {
			m[i] = 0.9 + 0.1*r.Float64()
		}
	}
	fw, fh := float64(sw), float64(sh)
	fs := math.Min(fw, fh)
	fill := func(e ellipse, v float64, add bool) {
		for y := 0; y < sh; y++ {
			for x := 0; x < sw; x++ {
				if e.inside(float64(x)+0.5, float64(y)+0.5) <= 1 {
					if add {
						m[y*sw+x] = math.Max(m[y*sw+x], v)
					} else {
						m[y*sw+x] = v
					}
				}
			}
		}
	}
	if r.Float64() < 0.4 { // a missed region
		fill(randEllipse(r, fw*r.Float64(), fh*r.Float64(), fs*0.08, fs*0.18), 0.05, false)
	}
	if distractor != nil && r.Float64() < 0.6 { // fooled by the distractor
		fill(distractor.body, 0.5+0.4*r.Float64(), true)
	}
	if r.Float64() < 0.3 { // a stray blob
		fill(randEllipse(r, fw*r.Float64(), fh*r.Float64(), fs*0.05, fs*0.12), 0.3+0.4*r.Float64(), true)
	}
	m = boxBlur(boxBlur(m, sw, sh, 2), sw, sh, 2)
	out := imagefile.NewGray(sw, sh)
	for i, v := range m {
		out.Pix[i] = clamp8(255 * (v + 0.04*(r.Float64()-0.5)))
	}
	return out
}

// boxBlur blurs a w x h map with a (2k+1)^2 box, clamping at the edges.
func boxBlur(m []float64, w, h, k int) []float64 {
	tmp := make([]float64, len(m))
	out := make([]float64, len(m))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var sum float64
			for d := -k; d <= k; d++ {
				sum += m[y*w+min(w-1, max(0, x+d))]
			}
			tmp[y*w+x] = sum / float64(2*k+1)
		}
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var sum float64
			for d := -k; d <= k; d++ {
				sum += tmp[min(h-1, max(0, y+d))*w+x]
			}
			out[y*w+x] = sum / float64(2*k+1)
		}
	}
	return out
}

// Summary describes a written benchmark.
type Summary struct {
	Train, Val, WithSaliency int
	// Sizes is the number of distinct image sizes; MinLong and MaxLong
	// the shortest and longest long side.
	Sizes, MinLong, MaxLong int
}

// Write generates the benchmark into the layout under root (local or
// gs://), in parallel, and writes classes.txt, train_cls.txt and
// val_cls.txt last, so that a listed id always has its files.
func Write(ctx context.Context, st *storage.Store, root string, opts Options) (Summary, error) {
	if opts.Images <= 0 || opts.Size < 32 || opts.Classes < 2 || opts.Classes > len(classNames) {
		return Summary{}, fmt.Errorf("synth: need images > 0, size >= 32 and 2..%d classes", len(classNames))
	}
	if _, ok := variantParams(opts.Generator); !ok {
		return Summary{}, fmt.Errorf("synth: unknown generator %q (want one of %s)", opts.Generator, strings.Join(Variants(), ", "))
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = 4
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		entry dataset.TagEntry
		val   bool
		sal   bool
	}
	results := make([]result, opts.Images)
	jobs := make(chan int)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				smp := Generate(opts, i)
				if err := writeSample(ctx, st, root, smp); err != nil {
					errc <- err
					cancel()
					return
				}
				results[i] = result{dataset.TagEntry{ID: smp.ID, Tags: smp.Tags}, smp.Val, smp.Saliency != nil}
				if opts.Progress != nil {
					mu.Lock()
					done++
					opts.Progress(done, opts.Images)
					mu.Unlock()
				}
			}
		}()
	}
feed:
	for i := 0; i < opts.Images; i++ {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return Summary{}, err
	}
	if err := ctx.Err(); err != nil {
		return Summary{}, err
	}
	var train, val []dataset.TagEntry
	var sum Summary
	sizes := map[[2]int]bool{}
	for i := range opts.Images {
		w, h := opts.imageSize(i)
		sizes[[2]int{w, h}] = true
		if l := max(w, h); sum.MinLong == 0 || l < sum.MinLong {
			sum.MinLong = l
		}
		sum.MaxLong = max(sum.MaxLong, w, h)
	}
	sum.Sizes = len(sizes)
	for _, r := range results {
		if r.val {
			val = append(val, r.entry)
		} else {
			train = append(train, r.entry)
		}
		if r.sal {
			sum.WithSaliency++
		}
	}
	sum.Train, sum.Val = len(train), len(val)
	var names []byte
	for _, n := range ClassNames(opts.Classes) {
		names = append(names, n+"\n"...)
	}
	files := map[string][]byte{
		dataset.ClassesFile: names,
		"train_cls.txt":     dataset.FormatTagList(train),
		"val_cls.txt":       dataset.FormatTagList(val),
	}
	for _, name := range []string{dataset.ClassesFile, "train_cls.txt", "val_cls.txt"} {
		if err := st.WriteFile(ctx, storage.Join(root, name), files[name]); err != nil {
			return Summary{}, err
		}
	}
	return sum, nil
}

func writeSample(ctx context.Context, st *storage.Store, root string, smp Sample) error {
	jpg, err := imagefile.EncodeJPEG(smp.Image, 92)
	if err != nil {
		return fmt.Errorf("%s: %w", smp.ID, err)
	}
	gt, err := imagefile.EncodeLabel(smp.GT)
	if err != nil {
		return fmt.Errorf("%s: %w", smp.ID, err)
	}
	out := map[string][]byte{
		storage.Join(root, dataset.ImageDir, smp.ID+".jpg"): jpg,
		storage.Join(root, dataset.GTDir, smp.ID+".png"):    gt,
	}
	if smp.Saliency != nil {
		sal, err := imagefile.EncodeGray(smp.Saliency)
		if err != nil {
			return fmt.Errorf("%s: %w", smp.ID, err)
		}
		out[storage.Join(root, dataset.SaliencyDir, smp.ID+".png")] = sal
	}
	for uri, data := range out {
		if err := st.WriteFile(ctx, uri, data); err != nil {
			return err
		}
	}
	return nil
}

// paintOther paints an object of no class inside e's bounding shape: a
// superellipse (boxy), desaturated colour, grain and dots.
func paintOther(r *rand.Rand, img *imagefile.RGB, e ellipse, mask []bool) {
	lum := 60 + 140*r.Float64()
	col := [3]float64{lum + 50*(r.Float64()-0.5), lum + 50*(r.Float64()-0.5), lum + 50*(r.Float64()-0.5)}
	dot := 3 + r.IntN(3)
	for y := 0; y < img.H; y++ {
		for x := 0; x < img.W; x++ {
			dx, dy := float64(x)+0.5-e.cx, float64(y)+0.5-e.cy
			u := (dx*e.cos + dy*e.sin) / e.rx
			v := (-dx*e.sin + dy*e.cos) / e.ry
			if u*u*u*u+v*v*v*v > 1 {
				continue
			}
			shade := 1.0
			if x%dot == 0 && y%dot == 0 {
				shade = 0.6
			}
			n := 30 * (r.Float64() - 0.5)
			p := 3 * (y*img.W + x)
			for c := 0; c < 3; c++ {
				img.Pix[p+c] = clamp8(col[c]*shade + n)
			}
			mask[y*img.W+x] = true
		}
	}
}

// saliencyV2 makes a saliency map with a salient-object detector's
// faults rather than a blurred ground truth: thin ends of objects missed
// (an opening of the mask), some objects only partly found (cut along a
// line), saliency bleeding into high-contrast clutter and onto objects of
// no class, soft edges and noise.
func saliencyV2(r *rand.Rand, sw, sh int, lab []uint8, objs []object, other, contrast []bool) *imagefile.Gray {
	mask := make([]float64, sw*sh)
	for i, v := range lab {
		if v != 0 {
			mask[i] = 1
		}
	}
	// Opening with a (2k+1)^2 square: erode then dilate, which removes
	// parts thinner than 2k+1 pixels.
	k := 1 + r.IntN(2)
	mask = morph(morph(mask, sw, sh, k, math.Min), sw, sh, k, math.Max)
	m := make([]float64, sw*sh)
	for i, v := range mask {
		m[i] = v * (0.85 + 0.15*r.Float64())
	}
	for _, o := range objs {
		if r.Float64() >= 0.3 {
			continue
		}
		// Partly found: the part of the body beyond a line through its
		// centre fades.
		a := r.Float64() * 2 * math.Pi
		keep := 0.1 + 0.3*r.Float64()
		for y := 0; y < sh; y++ {
			for x := 0; x < sw; x++ {
				fx, fy := float64(x)+0.5, float64(y)+0.5
				if o.body.inside(fx, fy) <= 1 && (fx-o.body.cx)*math.Cos(a)+(fy-o.body.cy)*math.Sin(a) > 0 {
					m[y*sw+x] *= keep
				}
			}
		}
	}
	bleed := 0.0
	if r.Float64() < 0.5 {
		bleed = 0.4 + 0.4*r.Float64()
	}
	fooled := 0.0
	if r.Float64() < 0.5 {
		fooled = 0.5 + 0.4*r.Float64()
	}
	for i := range m {
		if contrast[i] {
			m[i] = math.Max(m[i], bleed)
		}
		if other[i] {
			m[i] = math.Max(m[i], fooled)
		}
	}
	m = boxBlur(boxBlur(m, sw, sh, 2), sw, sh, 2)
	out := imagefile.NewGray(sw, sh)
	for i, v := range m {
		out.Pix[i] = clamp8(255 * (v + 0.05*(r.Float64()-0.5)))
	}
	return out
}

// morph applies a (2k+1)^2 min (erosion) or max (dilation) filter to a w
// x h map, treating outside as 0.
func morph(m []float64, w, h, k int, op func(a, b float64) float64) []float64 {
	return morphLine(morphLine(m, w, h, k, 1, 0, op), w, h, k, 0, 1, op)
}

// morphLine applies the filter of morph along one direction (dx, dy): a
// (2k+1)-long row (1, 0) or column (0, 1).
func morphLine(m []float64, w, h, k, dx, dy int, op func(a, b float64) float64) []float64 {
	out := make([]float64, len(m))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := m[y*w+x]
			for d := -k; d <= k; d++ {
				xx, yy := x+d*dx, y+d*dy
				u := 0.0
				if xx >= 0 && xx < w && yy >= 0 && yy < h {
					u = m[yy*w+xx]
				}
				v = op(v, u)
			}
			out[y*w+x] = v
		}
	}
	return out
}

// paintDecoyPart gives a decoy body a part where an object's would be, of a
// grey no class has: a region that looks like a part but names nothing.
func paintDecoyPart(r *rand.Rand, img *imagefile.RGB, d object) {
	minor := math.Min(d.body.rx, d.body.ry)
	side := float64(1 - 2*r.IntN(2))
	along := side * (0.55 + 0.2*r.Float64()) * d.body.rx
	px := d.body.cx + along*d.body.cos
	py := d.body.cy + along*d.body.sin
	pr := math.Max(2.5, minor*(0.35+0.1*r.Float64()))
	part := randEllipse(r, px, py, pr*0.9, pr)
	lum := 90 + 80*r.Float64()
	for y := 0; y < img.H; y++ {
		for x := 0; x < img.W; x++ {
			fx, fy := float64(x)+0.5, float64(y)+0.5
			if part.inside(fx, fy) > 1 || d.body.inside(fx, fy) > 1 {
				continue
			}
			n := 10 * (r.Float64() - 0.5)
			for c := 0; c < 3; c++ {
				img.Pix[3*(y*img.W+x)+c] = clamp8(lum + n)
			}
		}
	}
}

// saliencyPoor is saliencyV2 with a weaker detector: more of the objects
// only partly found, each object's far half missed more often, and stronger
// bleeding into clutter and decoys.
func saliencyPoor(r *rand.Rand, sw, sh int, lab []uint8, objs []object, other, contrast []bool) *imagefile.Gray {
	g := saliencyV2(r, sw, sh, lab, objs, other, contrast)
	fw, fh := float64(sw), float64(sh)
	fs := math.Min(fw, fh)
	// One or two large missed regions and a false positive blob.
	for k, n := 0, 1+r.IntN(2); k < n; k++ {
		e := randEllipse(r, fw*r.Float64(), fh*r.Float64(), fs*0.12, fs*0.25)
		for y := 0; y < sh; y++ {
			for x := 0; x < sw; x++ {
				if e.inside(float64(x)+0.5, float64(y)+0.5) <= 1 {
					g.Pix[y*sw+x] = uint8(float64(g.Pix[y*sw+x]) * 0.15)
				}
			}
		}
	}
	blob := randEllipse(r, fw*r.Float64(), fh*r.Float64(), fs*0.08, fs*0.18)
	level := 120 + 100*r.Float64()
	for y := 0; y < sh; y++ {
		for x := 0; x < sw; x++ {
			if blob.inside(float64(x)+0.5, float64(y)+0.5) <= 1 {
				g.Pix[y*sw+x] = max(g.Pix[y*sw+x], uint8(level))
			}
		}
	}
	return g
}
