package model

import (
	"fmt"
	"math"

	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/model/maps"
)

// The CAM readings (how a fused CAM becomes class scores) are
// maps.ReadNormalized and maps.ReadSoftmax.
const (
	ReadNormalized = maps.ReadNormalized
	ReadSoftmax    = maps.ReadSoftmax
)

// DefaultWorkPixels is the default bound of a fused map's working
// resolution (see FuseOptions.WorkPixels): 1024 x 1024, the largest view
// the engine runs by default, whose CAM holds far fewer positions.
const DefaultWorkPixels = 1 << 20

// FuseOptions say how an image's view CAMs are fused.
type FuseOptions struct {
	// Reading is ReadNormalized (default) or ReadSoftmax; ReadSoftmax
	// needs the views' maps with the background channel
	// (EngineOptions.Background).
	Reading string `json:",omitempty"`
	// LocalCombine merges local crops with the whole-image map.
	LocalCombine maps.Combine `json:",omitempty"`
	// WorkPixels bounds the fused map's resolution: an image of more
	// pixels is fused at its size scaled down to at most this many
	// (default DefaultWorkPixels), and its label is read from that map
	// upsampled a row at a time, so that no full-resolution float map is
	// ever made. An image of at most WorkPixels is fused at its own size.
	WorkPixels int `json:",omitempty"`
}

// Fused is an image's fused CAM: one channel per tagged class (channel i
// scores class Tags[i]), values in [0, 1], at a working resolution of at
// most the image's.
type Fused struct {
	H, W int       // the image's size
	Tags []int     // the classes of the channels
	Map  *maps.Map // Map.H x Map.W x len(Tags)
}

// WorkSize is the working resolution of an h x w image: its own size when
// it has at most limit pixels (limit <= 0: DefaultWorkPixels), else the
// size scaled down to fit.
func WorkSize(h, w, limit int) (int, int) {
	if limit <= 0 {
		limit = DefaultWorkPixels
	}
	if h*w <= limit {
		return h, w
	}
	s := math.Sqrt(float64(limit) / float64(h*w))
	wh, ww := max(1, int(float64(h)*s)), max(1, int(float64(w)*s))
	// A side clamped to 1 (an extreme aspect) leaves the other to fit.
	return max(1, min(wh, limit/ww)), max(1, min(ww, limit/wh))
}

// Fuse fuses an image's view CAMs (the engine's raw maps, in view order:
// classes channels, plus the background channel for ReadSoftmax) into its
// Fused map for the given tags, accumulating each view straight into the
// working-resolution map. For an image of at most WorkPixels and the
// normalized reading, the scores are exactly those of restoring every
// view to the image's size, adding them in view order and normalising
// (tested against that computation).
func Fuse(cams []*maps.Map, views []ViewSpec, h, w, classes int, tags []int, o FuseOptions) (*Fused, error) {
	if len(cams) == 0 || len(cams) != len(views) {
		return nil, fmt.Errorf("%d CAMs for %d views", len(cams), len(views))
	}
	for i, v := range views {
		if v.Index != i {
			return nil, fmt.Errorf("view %d in place %d", v.Index, i)
		}
	}
	softmax := o.Reading == ReadSoftmax
	want := classes
	if softmax {
		want = classes + 1
	}
	for i, c := range cams {
		if c.C != want {
			return nil, fmt.Errorf("view %d has %d channels, want %d", i, c.C, want)
		}
	}
	for _, t := range tags {
		if t < 0 || t >= classes || t >= 254 {
			return nil, fmt.Errorf("tag %d outside the %d classes", t, classes)
		}
	}
	wh, ww := WorkSize(h, w, o.WorkPixels)
	// The channels read from each view: the tags, then (softmax) the
	// background.
	chans := append([]int(nil), tags...)
	if softmax {
		chans = append(chans, classes)
	}
	k := len(chans)
	sy, sx := float64(wh)/float64(h), float64(ww)/float64(w)
	global := maps.New(wh, ww, k)
	var local *maps.Map
	var localCount []float32
	nGlobal := 0
	for i, v := range views {
		if !v.Local {
			accumulate(global, cams[i], chans, 0, 0, wh, ww, v.Flip)
			nGlobal++
			continue
		}
		if local == nil {
			local, localCount = maps.New(wh, ww, k), make([]float32, wh*ww)
		}
		y0, x0 := int(math.Round(float64(v.Y0)*sy)), int(math.Round(float64(v.X0)*sx))
		bh, bw := max(1, int(math.Round(float64(v.Size)*sy))), max(1, int(math.Round(float64(v.Size)*sx)))
		accumulate(local, cams[i], chans, y0, x0, bh, bw, v.Flip)
		for y := max(0, y0); y < min(wh, y0+bh); y++ {
			for x := max(0, x0); x < min(ww, x0+bw); x++ {
				localCount[y*ww+x]++
			}
		}
	}
	out := &Fused{H: h, W: w, Tags: append([]int(nil), tags...)}
	if softmax {
		out.Map = softmaxScores(global, nGlobal, local, localCount, len(tags))
		return out, nil
	}
	maps.NormalizeCAM(global)
	if local != nil {
		for p, n := range localCount {
			if n > 0 {
				for c := 0; c < k; c++ {
					local.Pix[p*k+c] /= n
				}
			}
		}
		maps.NormalizeCAM(local)
		for i, v := range local.Pix {
			if o.LocalCombine == maps.Max {
				global.Pix[i] = max(global.Pix[i], v)
			} else {
				global.Pix[i] += v
			}
		}
		if o.LocalCombine != maps.Max {
			maps.NormalizeCAM(global)
		}
	}
	out.Map = global
	return out, nil
}

// accumulate adds the channels chans of cam (mirrored back if flip),
// resampled bilinearly to the box [y0, y0+bh) x [x0, x0+bw) of dst, to
// dst's pixels in the box. Each value is computed as maps.Resize computes
// it, then added: accumulating a whole-image view equals adding the view
// resized to dst's size.
func accumulate(dst, cam *maps.Map, chans []int, y0, x0, bh, bw int, flip bool) {
	ys := maps.AxisTaps(bh, 0, float64(cam.H), cam.H)
	xs := maps.AxisTaps(bw, 0, float64(cam.W), cam.W)
	c, k := cam.C, dst.C
	for y, ty := range ys {
		oy := y0 + y
		if oy < 0 || oy >= dst.H {
			continue
		}
		r0 := cam.Pix[ty.I0*cam.W*c:]
		r1 := cam.Pix[ty.I1*cam.W*c:]
		for x, tx := range xs {
			ox := x0 + x
			if ox < 0 || ox >= dst.W {
				continue
			}
			i0, i1 := tx.I0, tx.I1
			if flip {
				i0, i1 = cam.W-1-i0, cam.W-1-i1
			}
			a0, a1 := i0*c, i1*c
			fy, fx := ty.F, tx.F
			w00, w01, w10, w11 := (1-fy)*(1-fx), (1-fy)*fx, fy*(1-fx), fy*fx
			d := dst.Pix[(oy*dst.W+ox)*k : (oy*dst.W+ox+1)*k]
			for j, ch := range chans {
				v := w00*r0[a0+ch] + w01*r0[a1+ch] + w10*r1[a0+ch] + w11*r1[a1+ch]
				d[j] += v
			}
		}
	}
}

// softmaxScores averages the raw maps (global over its n views, local over
// each pixel's crops, both where present) and takes, per pixel, a softmax
// over the tagged classes and the background channel (the last of acc's
// channels); it returns the tagged classes' probabilities.
func softmaxScores(global *maps.Map, n int, local *maps.Map, localCount []float32, tags int) *maps.Map {
	k := global.C
	out := maps.New(global.H, global.W, tags)
	logits := make([]float64, k)
	for p := 0; p < global.H*global.W; p++ {
		cnt := float64(n)
		for c := range k {
			logits[c] = float64(global.Pix[p*k+c])
		}
		if local != nil && localCount[p] > 0 {
			cnt += float64(localCount[p])
			for c := range k {
				logits[c] += float64(local.Pix[p*k+c])
			}
		}
		m := math.Inf(-1)
		for c := range k {
			logits[c] /= max(cnt, 1)
			m = max(m, logits[c])
		}
		var sum float64
		for c := range k {
			logits[c] = math.Exp(logits[c] - m)
			sum += logits[c]
		}
		for c := range tags {
			out.Pix[p*tags+c] = float32(logits[c] / sum)
		}
	}
	return out
}

// ScanRows calls fn for each row of the image at full resolution with the
// row's scores (W x len(Tags), channels last): the working map's row
// itself when the map is at the image's size, else the map upsampled
// bilinearly (half-pixel centres) into a row buffer fn must not keep. It
// never holds more than one full-resolution row.
func (f *Fused) ScanRows(fn func(y int, row []float32)) {
	m, k := f.Map, f.Map.C
	if m.H == f.H && m.W == f.W {
		for y := range f.H {
			fn(y, m.Pix[y*f.W*k:(y+1)*f.W*k])
		}
		return
	}
	ys := maps.AxisTaps(f.H, 0, float64(m.H), m.H)
	xs := maps.AxisTaps(f.W, 0, float64(m.W), m.W)
	row := make([]float32, f.W*k)
	for y, ty := range ys {
		r0 := m.Pix[ty.I0*m.W*k:]
		r1 := m.Pix[ty.I1*m.W*k:]
		for x, tx := range xs {
			a0, a1 := tx.I0*k, tx.I1*k
			fy, fx := ty.F, tx.F
			w00, w01, w10, w11 := (1-fy)*(1-fx), (1-fy)*fx, fy*(1-fx), fy*fx
			o := row[x*k : (x+1)*k]
			for c := range k {
				o[c] = w00*r0[a0+c] + w01*r0[a1+c] + w10*r1[a0+c] + w11*r1[a1+c]
			}
		}
		fn(y, row)
	}
}

// LabelThreshold is the threshold background rule on a fused map: each
// pixel takes the tagged class with the highest score above bgThr (the
// first in Tags order on a tie), else background 0.
func (f *Fused) LabelThreshold(bgThr float32) *imagefile.Gray {
	out := imagefile.NewGray(f.W, f.H)
	k, chans := len(f.Tags), f.channels()
	f.ScanRows(func(y int, row []float32) {
		for x := range f.W {
			out.Pix[y*f.W+x] = maps.ThresholdPixel(row[x*k:(x+1)*k], chans, f.Tags, bgThr)
		}
	})
	return out
}

// LabelSaliency is the saliency background rule (see
// maps.SaliencyLabels) on a fused map and the image's saliency map.
func (f *Fused) LabelSaliency(sal *imagefile.Gray, salThr, camThr float32) (*imagefile.Gray, error) {
	if sal.W != f.W || sal.H != f.H {
		return nil, fmt.Errorf("saliency %dx%d for a %dx%d image", sal.W, sal.H, f.W, f.H)
	}
	out := imagefile.NewGray(f.W, f.H)
	k, chans := len(f.Tags), f.channels()
	f.ScanRows(func(y int, row []float32) {
		for x := range f.W {
			p := y*f.W + x
			out.Pix[p] = maps.SaliencyPixel(row[x*k:(x+1)*k], chans, f.Tags, float32(sal.Pix[p])/255 > salThr, camThr)
		}
	})
	return out, nil
}

// channels are the map's channel of each tag: channel i scores Tags[i].
func (f *Fused) channels() []int {
	chans := make([]int, len(f.Tags))
	for i := range chans {
		chans[i] = i
	}
	return chans
}

// Top is, for each pixel of the working map, the highest tagged-class
// score (0 without tags): the foreground evidence a threshold cuts.
func (f *Fused) Top() []float32 {
	m, k := f.Map, f.Map.C
	out := make([]float32, m.H*m.W)
	for p := range out {
		for c := range k {
			out[p] = max(out[p], m.Pix[p*k+c])
		}
	}
	return out
}
