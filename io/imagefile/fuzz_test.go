package imagefile

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"testing"
)

// fuzzLimit keeps fuzzed images small.
const fuzzLimit = 1 << 16

func imageSeeds(f *testing.F) {
	m := NewRGB(9, 7)
	for i := range m.Pix {
		m.Pix[i] = uint8(i * 7)
	}
	p, _ := EncodePNG(m)
	j, _ := EncodeJPEG(m, 80)
	lab := NewGray(5, 4)
	lab.Pix[3], lab.Pix[7] = 2, Ignore
	l, _ := EncodeLabel(lab)
	g, _ := EncodeGray(lab)
	var g16 bytes.Buffer
	im := image.NewGray16(image.Rect(0, 0, 3, 2))
	im.Set(1, 1, color.Gray16{Y: 40000})
	png.Encode(&g16, im)
	var gj bytes.Buffer
	jpeg.Encode(&gj, image.NewGray(image.Rect(0, 0, 8, 8)), nil)
	for _, s := range [][]byte{p, j, l, g, g16.Bytes(), gj.Bytes(), p[:len(p)/2], j[:40], {}, []byte("GIF89a")} {
		f.Add(s)
	}
}

func FuzzDecodeRGB(f *testing.F) {
	imageSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := DecodeRGB(data, fuzzLimit)
		if err != nil {
			return
		}
		if img.W <= 0 || img.H <= 0 || img.W*img.H > fuzzLimit || len(img.Pix) != 3*img.W*img.H {
			t.Fatalf("decoded %dx%d with %d values (limit %d)", img.W, img.H, len(img.Pix), fuzzLimit)
		}
	})
}

func FuzzDecodeLabel(f *testing.F) {
	imageSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		lab, err := DecodeLabel(data, fuzzLimit)
		if err != nil {
			return
		}
		if lab.W*lab.H > fuzzLimit || len(lab.Pix) != lab.W*lab.H {
			t.Fatalf("decoded %dx%d with %d values", lab.W, lab.H, len(lab.Pix))
		}
		back, err := EncodeLabel(lab)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeLabel(back, fuzzLimit)
		if err != nil || !bytes.Equal(again.Pix, lab.Pix) {
			t.Fatalf("label round trip: %v", err)
		}
	})
}
