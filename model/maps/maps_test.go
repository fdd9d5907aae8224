package maps

import (
	"math"
	"slices"
	"testing"

	"github.com/l2gflow/l2gflow/io/imagefile"
)

func seq(h, w, c int) *Map {
	m := New(h, w, c)
	for i := range m.Pix {
		m.Pix[i] = float32(i)
	}
	return m
}

func TestResizeIdentityAndCrop(t *testing.T) {
	m := seq(4, 5, 2)
	if r := Resize(m, 4, 5); !slices.Equal(r.Pix, m.Pix) {
		t.Errorf("same-size resize changed the map")
	}
	// Integer box, output the box size: an exact crop.
	got := CropResize(m, 1, 2, 2, 3, 2, 3)
	want := Crop(m, 1, 2, 2, 3)
	if !slices.Equal(got.Pix, want.Pix) {
		t.Errorf("CropResize = %v, want crop %v", got.Pix, want.Pix)
	}
	if want.At(0, 0, 1) != m.At(1, 2, 1) {
		t.Errorf("Crop misplaced")
	}
}

func TestResizeUpDown(t *testing.T) {
	// A 1x2 ramp [0, 1] upsampled to 1x4 with half-pixel centres:
	// PyTorch gives [0, 0.25, 0.75, 1].
	m := &Map{H: 1, W: 2, C: 1, Pix: []float32{0, 1}}
	got := Resize(m, 1, 4).Pix
	for i, w := range []float32{0, 0.25, 0.75, 1} {
		if math.Abs(float64(got[i]-w)) > 1e-6 {
			t.Fatalf("upsample = %v", got)
		}
	}
	// 2x downsample of a 4-wide ramp averages pairs.
	m = &Map{H: 1, W: 4, C: 1, Pix: []float32{0, 1, 2, 3}}
	got = Resize(m, 1, 2).Pix
	if got[0] != 0.5 || got[1] != 2.5 {
		t.Errorf("downsample = %v, want [0.5 2.5]", got)
	}
}

func TestInterpMatrixMatchesCropResize(t *testing.T) {
	m := seq(6, 7, 1)
	y0, x0, bh, bw := 1.25, 0.5, 3.5, 4.0
	got := CropResize(m, y0, x0, bh, bw, 3, 4)
	ry := InterpMatrix(3, y0, bh, 6)
	rx := InterpMatrix(4, x0, bw, 7)
	for i := 0; i < 3; i++ {
		for j := 0; j < 4; j++ {
			var s float32
			for y := 0; y < 6; y++ {
				for x := 0; x < 7; x++ {
					s += ry[i*6+y] * m.At(y, x, 0) * rx[j*7+x]
				}
			}
			if math.Abs(float64(s-got.At(i, j, 0))) > 1e-4 {
				t.Fatalf("(%d,%d): matrices give %g, CropResize %g", i, j, s, got.At(i, j, 0))
			}
		}
	}
}

func TestFlipAndPaste(t *testing.T) {
	m := seq(2, 3, 1)
	f := FlipH(m)
	if !slices.Equal(f.Pix, []float32{2, 1, 0, 5, 4, 3}) {
		t.Errorf("FlipH = %v", f.Pix)
	}
	if !slices.Equal(FlipH(f).Pix, m.Pix) {
		t.Error("flip twice is not the identity")
	}
	dst := New(3, 3, 1)
	dst.Pix[4] = 10
	src := &Map{H: 2, W: 2, C: 1, Pix: []float32{1, 2, 3, 4}}
	PasteInto(dst, src, 1, 1, Sum)
	if !slices.Equal(dst.Pix, []float32{0, 0, 0, 0, 11, 2, 0, 3, 4}) {
		t.Errorf("paste sum = %v", dst.Pix)
	}
	PasteInto(dst, src, 1, 1, Max)
	if !slices.Equal(dst.Pix, []float32{0, 0, 0, 0, 11, 2, 0, 3, 4}) {
		t.Errorf("paste max = %v", dst.Pix)
	}
	// Partly outside: only the overlap is pasted.
	PasteInto(dst, src, -1, 2, Sum)
	if !slices.Equal(dst.Pix, []float32{0, 0, 3, 0, 11, 2, 0, 3, 4}) {
		t.Errorf("paste outside = %v", dst.Pix)
	}
}

func TestNormalizeCAM(t *testing.T) {
	m := &Map{H: 1, W: 3, C: 2, Pix: []float32{-1, 2, 4, 1, 2, -3}}
	NormalizeCAM(m)
	want := []float32{0, 2 / (2 + 1e-5), 1 / (1 + 2.5e-6), 1 / (2 + 1e-5), 2 / (4 + 1e-5), 0}
	for i := range want {
		if math.Abs(float64(m.Pix[i]-want[i])) > 1e-5 {
			t.Fatalf("NormalizeCAM = %v, want %v", m.Pix, want)
		}
	}
}

func TestThresholdLabels(t *testing.T) {
	// 4 pixels, 3 classes; tags 0 and 2 (class 1 is not tagged).
	cams := &Map{H: 1, W: 4, C: 3, Pix: []float32{
		0.9, 0.0, 0.1, // class 0 wins -> 1
		0.1, 0.99, 0.2, // class 1 untagged; bg 0.25 wins -> 0
		0.3, 0.0, 0.6, // class 2 -> 3
		0.25, 0.0, 0.0, // tie with bg -> 0
	}}
	got, err := ThresholdLabels(cams, []int{0, 2}, 0.25)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Pix, []uint8{1, 0, 3, 0}) {
		t.Errorf("labels = %v, want [1 0 3 0]", got.Pix)
	}
	if _, err := ThresholdLabels(cams, []int{5}, 0.25); err == nil {
		t.Error("tag outside the channels: want an error")
	}
}

func TestSaliencyLabels(t *testing.T) {
	cams := &Map{H: 1, W: 5, C: 2, Pix: []float32{
		0.8, 0.0, // not salient: background wins (score 1)
		0.8, 0.1, // salient: class 0 -> 1
		0.05, 0.0, // salient, class below cam threshold -> ignore 255
		0.3, 0.6, // salient: class 1 -> 2
		0.0, 0.0, // not salient, nothing -> 0
	}}
	sal := &imagefile.Gray{W: 5, H: 1, Pix: []uint8{10, 200, 255, 100, 0}}
	got, err := SaliencyLabels(cams, []int{0, 1}, sal, 0.2, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Pix, []uint8{0, 1, 255, 2, 0}) {
		t.Errorf("labels = %v, want [0 1 255 2 0]", got.Pix)
	}
	if _, err := SaliencyLabels(cams, []int{0}, &imagefile.Gray{W: 2, H: 1, Pix: []uint8{0, 0}}, 0.2, 0.1); err == nil {
		t.Error("wrongly sized saliency: want an error")
	}
}
