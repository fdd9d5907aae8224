package model

import (
	"fmt"
	"math"
	"slices"
)

// BucketOptions choose the canonical input shapes of inference. GoMLX
// compiles one graph per input shape, so views of every size are padded
// (bottom and right, see padMask) up to one of a fixed set of bucket
// shapes that depends only on these options, never on the data.
type BucketOptions struct {
	// PerOctave is the number of bucket sides per doubling of size: the
	// sides are 2^k * (1 + j/PerOctave) rounded up to a multiple of 8, so
	// a view is padded by at most 1/PerOctave of a side. Default 8.
	PerOctave int `json:"per_octave"`
	// MaxAspect is the largest ratio of a bucket's long side to its short
	// side (default 2); longer views are padded to that ratio.
	MaxAspect float64 `json:"max_aspect"`
	// MaxViewPixels caps a view's input size: a larger view is scaled down
	// to this many pixels (default 1,048,576 = 1024x1024; a 500x375 image
	// at scale 2 is 750,000).
	MaxViewPixels int `json:"max_view_pixels"`
	// BatchPixels sets each bucket's batch size: the largest power of two
	// of views whose padded pixels fit (at least 1, at most MaxBatch).
	// Default 16,384: small views (up to 64x64) run 4 or 8 at a time,
	// larger ones alone (docs/performance.md, "Inference batch size").
	BatchPixels int `json:"batch_pixels"`
	// MaxBatch is the largest inference batch (default 8).
	MaxBatch int `json:"max_batch"`
}

// DefaultBucketOptions are the defaults documented on BucketOptions.
func DefaultBucketOptions() BucketOptions {
	return BucketOptions{PerOctave: 8, MaxAspect: 2, MaxViewPixels: 1 << 20, BatchPixels: 16384, MaxBatch: 8}
}

// withDefaults fills zero fields with the defaults.
func (o BucketOptions) withDefaults() BucketOptions {
	d := DefaultBucketOptions()
	if o.PerOctave <= 0 {
		o.PerOctave = d.PerOctave
	}
	if o.MaxAspect < 1 {
		o.MaxAspect = d.MaxAspect
	}
	if o.MaxViewPixels <= 0 {
		o.MaxViewPixels = d.MaxViewPixels
	}
	if o.BatchPixels <= 0 {
		o.BatchPixels = d.BatchPixels
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = d.MaxBatch
	}
	return o
}

// Validate checks options read from a configuration.
func (o BucketOptions) Validate() error {
	switch {
	case o.PerOctave < 1 || o.PerOctave > 32:
		return fmt.Errorf("buckets per octave %d: want 1 to 32", o.PerOctave)
	case o.MaxAspect < 1 || o.MaxAspect > 8:
		return fmt.Errorf("bucket max aspect %g: want 1 to 8", o.MaxAspect)
	case o.MaxViewPixels < 64*64:
		return fmt.Errorf("max view pixels %d: want at least 4096", o.MaxViewPixels)
	case o.MaxBatch < 1 || o.MaxBatch > 256:
		return fmt.Errorf("max batch %d: want 1 to 256", o.MaxBatch)
	}
	return nil
}

// maxSide is the longest side a view may have: that of a MaxAspect view
// of MaxViewPixels.
func (o BucketOptions) maxSide() int {
	return int(math.Ceil(math.Sqrt(float64(o.MaxViewPixels) * o.MaxAspect)))
}

// FitView returns the input size of an h x w view: the same, or scaled
// down (keeping its aspect) to at most MaxViewPixels pixels and the
// longest bucket side.
func (o BucketOptions) FitView(h, w int) (int, int) {
	o = o.withDefaults()
	f := 1.0
	if px := float64(h) * float64(w); px > float64(o.MaxViewPixels) {
		f = math.Sqrt(float64(o.MaxViewPixels) / px)
	}
	if side := float64(max(h, w)) * f; side > float64(o.maxSide()) {
		f *= float64(o.maxSide()) / side
	}
	if f >= 1 {
		return h, w
	}
	return max(1, int(float64(h)*f)), max(1, int(float64(w)*f))
}

// Bucket is one canonical input shape with its batch size. Every batch
// of a bucket has that size (a partial batch is filled with zero views):
// the backend's matrix multiplication takes other paths for other sizes,
// so a view's CAM is then the same to the bit whatever views share its
// batch, and labels do not depend on how a runner bundles the images.
type Bucket struct {
	H, W  int
	Batch int
}

// Buckets is the set of canonical input shapes for some options.
type Buckets struct {
	Options BucketOptions
	ladder  []int // bucket sides, ascending
	list    []Bucket
	index   map[[2]int]int
}

// NewBuckets builds the bucket set: the image under bucketFor of every
// view size that FitView can give.
func NewBuckets(o BucketOptions) (*Buckets, error) {
	o = o.withDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	b := &Buckets{Options: o, index: map[[2]int]int{}}
	top := roundUp(o.maxSide(), 8)
	seen := map[int]bool{}
	for k := 8; ; k *= 2 {
		for j := 0; j < o.PerOctave; j++ {
			v := min(top, roundUp(int(math.Ceil(float64(k)*(1+float64(j)/float64(o.PerOctave)))), 8))
			if !seen[v] {
				seen[v] = true
				b.ladder = append(b.ladder, v)
			}
		}
		if k >= top {
			break
		}
	}
	slices.Sort(b.ladder)
	for i := range b.ladder {
		for j := range b.ladder {
			// The smallest view whose sides round up to (a, c).
			h, w := 1, 1
			if i > 0 {
				h = b.ladder[i-1] + 1
			}
			if j > 0 {
				w = b.ladder[j-1] + 1
			}
			if h*w > o.MaxViewPixels || max(h, w) > o.maxSide() {
				continue
			}
			bh, bw := b.bucketFor(h, w)
			if _, ok := b.index[[2]int{bh, bw}]; ok {
				continue
			}
			full := 1
			for full*2 <= o.MaxBatch && full*2*bh*bw <= o.BatchPixels {
				full *= 2
			}
			b.index[[2]int{bh, bw}] = len(b.list)
			b.list = append(b.list, Bucket{H: bh, W: bw, Batch: full})
		}
	}
	return b, nil
}

// up returns the smallest ladder side >= v (the largest if none is).
func (b *Buckets) up(v int) int {
	i, _ := slices.BinarySearch(b.ladder, v)
	return b.ladder[min(i, len(b.ladder)-1)]
}

// bucketFor returns the bucket shape of an h x w view: each side rounded
// up the ladder, then the short side raised so that the bucket is no
// more elongated than MaxAspect.
func (b *Buckets) bucketFor(h, w int) (int, int) {
	bh, bw := b.up(h), b.up(w)
	r := b.Options.MaxAspect
	if float64(bw) > r*float64(bh) {
		bh = b.up(int(math.Ceil(float64(bw) / r)))
	}
	if float64(bh) > r*float64(bw) {
		bw = b.up(int(math.Ceil(float64(bh) / r)))
	}
	return bh, bw
}

// For returns the bucket of an h x w view (a size FitView gives).
func (b *Buckets) For(h, w int) (Bucket, error) {
	bh, bw := b.bucketFor(h, w)
	i, ok := b.index[[2]int{bh, bw}]
	if !ok || h > bh || w > bw {
		return Bucket{}, fmt.Errorf("no inference bucket holds a %dx%d view (max %d pixels, side %d)", h, w,
			b.Options.MaxViewPixels, b.Options.maxSide())
	}
	return b.list[i], nil
}

// List returns the buckets, in the order they were built.
func (b *Buckets) List() []Bucket { return slices.Clone(b.list) }

// Len is the number of buckets: one compiled graph each.
func (b *Buckets) Len() int { return len(b.list) }
