// Package maps is the plain-Go math on channels-last float maps shared by
// training input, CAM inference and label fusion: bilinear resizing,
// flipping, cropping and pasting, CAM normalisation, and the background
// rules that turn fused CAMs into label maps. Keeping it in one place is
// what makes the Beam pipeline and the in-process path give identical
// labels.
package maps

import (
	"fmt"
	"math"
)

// Map is an H x W x C float map, row-major, channels last.
type Map struct {
	H, W, C int
	Pix     []float32
}

// New returns a zero map.
func New(h, w, c int) *Map { return &Map{H: h, W: w, C: c, Pix: make([]float32, h*w*c)} }

// At returns the value at (y, x, c).
func (m *Map) At(y, x, c int) float32 { return m.Pix[(y*m.W+x)*m.C+c] }

// Clone returns a deep copy.
func (m *Map) Clone() *Map {
	return &Map{H: m.H, W: m.W, C: m.C, Pix: append([]float32(nil), m.Pix...)}
}

// Check verifies that the pixel slice matches the dimensions.
func (m *Map) Check() error {
	if m.H <= 0 || m.W <= 0 || m.C <= 0 || len(m.Pix) != m.H*m.W*m.C {
		return fmt.Errorf("map %dx%dx%d holds %d values", m.H, m.W, m.C, len(m.Pix))
	}
	return nil
}

// Tap is one output index's bilinear sample along an axis: the two source
// indices and the weight of the second.
type Tap struct {
	I0, I1 int
	F      float32
}

// AxisTaps gives, for each output index along an axis of length dst
// sampled from [start, start+size) of an input axis of length src, its
// Tap, with half-pixel centres (PyTorch's align_corners=False) and edge
// clamping.
func AxisTaps(dst int, start, size float64, src int) []Tap {
	out := make([]Tap, dst)
	scale := size / float64(dst)
	for d := range out {
		p := start + (float64(d)+0.5)*scale - 0.5
		p = math.Max(0, math.Min(float64(src-1), p))
		i0 := int(math.Floor(p))
		i1 := min(i0+1, src-1)
		out[d] = Tap{i0, i1, float32(p - float64(i0))}
	}
	return out
}

// Resize resamples m to h x w bilinearly (half-pixel centres, as PyTorch's
// interpolate with align_corners=False).
func Resize(m *Map, h, w int) *Map {
	if h == m.H && w == m.W {
		return m.Clone()
	}
	return CropResize(m, 0, 0, float64(m.H), float64(m.W), h, w)
}

// CropResize samples the box [y0, y0+bh) x [x0, x0+bw) of m (in pixels,
// possibly fractional or partly outside, clamped at the edges) to h x w
// bilinearly. With integer box corners and h, w equal to the box size, it
// is an exact crop.
func CropResize(m *Map, y0, x0, bh, bw float64, h, w int) *Map {
	out := New(h, w, m.C)
	ys := AxisTaps(h, y0, bh, m.H)
	xs := AxisTaps(w, x0, bw, m.W)
	c := m.C
	for y, ty := range ys {
		r0 := m.Pix[ty.I0*m.W*c:]
		r1 := m.Pix[ty.I1*m.W*c:]
		for x, tx := range xs {
			o := out.Pix[(y*w+x)*c : (y*w+x+1)*c]
			a0, a1 := tx.I0*c, tx.I1*c
			fy, fx := ty.F, tx.F
			w00, w01, w10, w11 := (1-fy)*(1-fx), (1-fy)*fx, fy*(1-fx), fy*fx
			for k := 0; k < c; k++ {
				o[k] = w00*r0[a0+k] + w01*r0[a1+k] + w10*r1[a0+k] + w11*r1[a1+k]
			}
		}
	}
	return out
}

// ResampleInto resamples the window [y0, y0+wh) x [x0, x0+ww) of m, as a
// map of its own (edges clamped at the window's edges), to h x w
// bilinearly, mirrored left-right if flip, writing row y of the result at
// dst[y*stride:]. It computes what Resize(Crop(m, ...), h, w) (then
// FlipH) gives, without the intermediate maps.
func ResampleInto(m *Map, y0, x0, wh, ww, h, w int, flip bool, dst []float32, stride int) {
	ys := AxisTaps(h, 0, float64(wh), wh)
	xs := AxisTaps(w, 0, float64(ww), ww)
	c := m.C
	for y, ty := range ys {
		r0 := m.Pix[((y0+ty.I0)*m.W+x0)*c:]
		r1 := m.Pix[((y0+ty.I1)*m.W+x0)*c:]
		row := dst[y*stride:]
		for x, tx := range xs {
			ox := x
			if flip {
				ox = w - 1 - x
			}
			o := row[ox*c : (ox+1)*c]
			a0, a1 := tx.I0*c, tx.I1*c
			fy, fx := ty.F, tx.F
			w00, w01, w10, w11 := (1-fy)*(1-fx), (1-fy)*fx, fy*(1-fx), fy*fx
			for k := 0; k < c; k++ {
				o[k] = w00*r0[a0+k] + w01*r0[a1+k] + w10*r1[a0+k] + w11*r1[a1+k]
			}
		}
	}
}

// InterpMatrix returns the dst x src matrix (row-major) of bilinear
// weights that samples [start, start+size) of a length-src axis at dst
// points, as CropResize does. The training graph uses two of these (rows
// and columns) to crop-and-resize the global CAM into each view's box.
func InterpMatrix(dst int, start, size float64, src int) []float32 {
	m := make([]float32, dst*src)
	for d, t := range AxisTaps(dst, start, size, src) {
		m[d*src+t.I0] += 1 - t.F
		m[d*src+t.I1] += t.F
	}
	return m
}

// FlipH mirrors m left-right.
func FlipH(m *Map) *Map {
	out := New(m.H, m.W, m.C)
	c := m.C
	for y := 0; y < m.H; y++ {
		for x := 0; x < m.W; x++ {
			copy(out.Pix[(y*m.W+m.W-1-x)*c:(y*m.W+m.W-x)*c], m.Pix[(y*m.W+x)*c:(y*m.W+x+1)*c])
		}
	}
	return out
}

// Crop returns the integer box [y0, y0+h) x [x0, x0+w); the box must lie
// inside m.
func Crop(m *Map, y0, x0, h, w int) *Map {
	out := New(h, w, m.C)
	for y := 0; y < h; y++ {
		copy(out.Pix[y*w*m.C:(y+1)*w*m.C], m.Pix[((y0+y)*m.W+x0)*m.C:((y0+y)*m.W+x0+w)*m.C])
	}
	return out
}

// Combine says how a local map is merged into a whole-image map.
type Combine int

// Combine modes.
const (
	Sum Combine = iota // add (the reference's multi-scale rule)
	Max                // element-wise maximum
)

// PasteInto merges src into dst with its top-left corner at (y0, x0); the
// parts of src outside dst are dropped.
func PasteInto(dst, src *Map, y0, x0 int, mode Combine) error {
	if dst.C != src.C {
		return fmt.Errorf("paste %d channels into %d", src.C, dst.C)
	}
	c := dst.C
	for y := max(0, -y0); y < src.H && y0+y < dst.H; y++ {
		for x := max(0, -x0); x < src.W && x0+x < dst.W; x++ {
			d := dst.Pix[((y0+y)*dst.W+x0+x)*c : ((y0+y)*dst.W+x0+x+1)*c]
			s := src.Pix[(y*src.W+x)*c : (y*src.W+x+1)*c]
			for k := range d {
				if mode == Max {
					d[k] = max(d[k], s[k])
				} else {
					d[k] += s[k]
				}
			}
		}
	}
	return nil
}

// Add adds src to dst element-wise; they must have the same shape.
func Add(dst, src *Map) error {
	if dst.H != src.H || dst.W != src.W || dst.C != src.C {
		return fmt.Errorf("add %dx%dx%d to %dx%dx%d", src.H, src.W, src.C, dst.H, dst.W, dst.C)
	}
	for i, v := range src.Pix {
		dst.Pix[i] += v
	}
	return nil
}

// NormalizeCAM applies ReLU and divides each channel by its maximum (plus
// 1e-5, as the reference), in place: every channel ends in [0, 1).
func NormalizeCAM(m *Map) {
	c := m.C
	mx := make([]float32, c)
	for i, v := range m.Pix {
		if v < 0 {
			m.Pix[i] = 0
		} else if v > mx[i%c] {
			mx[i%c] = v
		}
	}
	for i := range m.Pix {
		m.Pix[i] /= mx[i%c] + 1e-5
	}
}
