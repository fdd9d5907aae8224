package imagefile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"strings"
	"testing"
)

func encodePNG(t *testing.T, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestLabelRoundTripKeepsIndices(t *testing.T) {
	m := NewGray(7, 3)
	for i := range m.Pix {
		m.Pix[i] = uint8(i * 13 % 22)
	}
	m.Pix[0], m.Pix[5], m.Pix[20] = Ignore, Ignore, 20
	data, err := EncodeLabel(m)
	if err != nil {
		t.Fatal(err)
	}
	// It is a real palette PNG with the VOC colours.
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	p, ok := img.(*image.Paletted)
	if !ok {
		t.Fatalf("decoded %T, want *image.Paletted", img)
	}
	if got := p.Palette[1]; got != (color.RGBA{128, 0, 0, 255}) {
		t.Errorf("palette[1] = %v, want VOC aeroplane red", got)
	}
	if got := p.Palette[255]; got != (color.RGBA{224, 224, 192, 255}) {
		t.Errorf("palette[255] = %v, want (224,224,192)", got)
	}
	back, err := DecodeLabel(data, 0)
	if err != nil {
		t.Fatal(err)
	}
	if back.W != 7 || back.H != 3 || !bytes.Equal(back.Pix, m.Pix) {
		t.Errorf("round trip changed the label map:\n got %v\nwant %v", back.Pix, m.Pix)
	}
}

func TestDecodeLabelRejectsColour(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 2, 2))
	if _, err := DecodeLabel(encodePNG(t, img), 0); err == nil {
		t.Error("want an error for an RGB label map")
	}
}

func TestDecodeRGBFormats(t *testing.T) {
	want := [3]uint8{200, 100, 50}
	gray16 := image.NewGray16(image.Rect(0, 0, 3, 2))
	rgba64 := image.NewRGBA64(image.Rect(0, 0, 3, 2))
	nrgba := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	gray := image.NewGray(image.Rect(0, 0, 3, 2))
	pal := image.NewPaletted(image.Rect(0, 0, 3, 2), color.Palette{color.Black, color.RGBA{200, 100, 50, 255}})
	for y := 0; y < 2; y++ {
		for x := 0; x < 3; x++ {
			gray16.SetGray16(x, y, color.Gray16{0xC8FF})
			rgba64.SetRGBA64(x, y, color.RGBA64{200 << 8, 100 << 8, 50 << 8, 0xffff})
			nrgba.SetNRGBA(x, y, color.NRGBA{200, 100, 50, 10}) // mostly transparent
			gray.SetGray(x, y, color.Gray{200})
			pal.SetColorIndex(x, y, 1)
		}
	}
	jpg, err := EncodeJPEG(&RGB{W: 8, H: 8, Pix: bytes.Repeat(want[:], 64)}, 95)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
		want [3]uint8
		tol  int
	}{
		{"gray 16-bit", encodePNG(t, gray16), [3]uint8{200, 200, 200}, 0},
		{"rgb 16-bit", encodePNG(t, rgba64), want, 0},
		{"rgba alpha dropped", encodePNG(t, nrgba), want, 0},
		{"gray 8-bit", encodePNG(t, gray), [3]uint8{200, 200, 200}, 0},
		{"palette", encodePNG(t, pal), want, 0},
		{"jpeg", jpg, want, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img, err := DecodeRGB(tc.data, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < len(img.Pix); i += 3 {
				for c := 0; c < 3; c++ {
					d := int(img.Pix[i+c]) - int(tc.want[c])
					if d < -tc.tol || d > tc.tol {
						t.Fatalf("pixel %d = %v, want %v (±%d)", i/3, img.Pix[i:i+3], tc.want, tc.tol)
					}
				}
			}
		})
	}
}

// pngHeaderOnly builds a PNG signature and IHDR chunk declaring w x h, with
// no image data: enough for the size check, which must refuse it before
// trying to decode.
func pngHeaderOnly(w, h uint32) []byte {
	var b bytes.Buffer
	b.Write([]byte("\x89PNG\r\n\x1a\n"))
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b.Write(chunk)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

func TestPixelLimit(t *testing.T) {
	tests := []struct {
		name  string
		data  []byte
		limit int
	}{
		{"declared 10 gigapixels, default limit", pngHeaderOnly(100000, 100000), 0},
		{"declared just over 50 MP", pngHeaderOnly(10000, 5001), 0},
		{"real image over a small limit", encodePNG(t, image.NewGray(image.Rect(0, 0, 100, 100))), 9999},
	}
	for _, tc := range tests {
		for name, dec := range map[string]func([]byte, int) error{
			"rgb":   func(d []byte, l int) error { _, err := DecodeRGB(d, l); return err },
			"gray":  func(d []byte, l int) error { _, err := DecodeGray(d, l); return err },
			"label": func(d []byte, l int) error { _, err := DecodeLabel(d, l); return err },
		} {
			if err := dec(tc.data, tc.limit); !errors.Is(err, ErrTooLarge) {
				t.Errorf("%s/%s: err = %v, want ErrTooLarge", tc.name, name, err)
			}
		}
	}
}

func TestCorruptInputs(t *testing.T) {
	jpg, _ := EncodeJPEG(NewRGB(16, 16), 90)
	tests := map[string][]byte{
		"empty":          nil,
		"not an image":   []byte("hello, world"),
		"truncated jpeg": jpg[:len(jpg)/2],
		"header only":    pngHeaderOnly(4, 4),
	}
	for name, data := range tests {
		if _, err := DecodeRGB(data, 0); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
	for name, dec := range map[string]func([]byte, int) error{
		"rgb":   func(d []byte, l int) error { _, err := DecodeRGB(d, l); return err },
		"gray":  func(d []byte, l int) error { _, err := DecodeGray(d, l); return err },
		"label": func(d []byte, l int) error { _, err := DecodeLabel(d, l); return err },
	} {
		if err := dec([]byte{}, 0); !errors.Is(err, ErrEmpty) || !strings.Contains(err.Error(), "empty file") {
			t.Errorf("%s of a zero-byte file: %v, want ErrEmpty", name, err)
		}
	}
}

func TestGrayRoundTrip(t *testing.T) {
	m := NewGray(5, 4)
	for i := range m.Pix {
		m.Pix[i] = uint8(i * 12)
	}
	data, err := EncodeGray(m)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeGray(data, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Pix, m.Pix) {
		t.Errorf("gray round trip: got %v want %v", back.Pix, m.Pix)
	}
	rgb, err := EncodePNG(&RGB{W: 1, H: 1, Pix: []uint8{255, 255, 255}})
	if err != nil {
		t.Fatal(err)
	}
	if g, err := DecodeGray(rgb, 0); err != nil || g.Pix[0] != 255 {
		t.Errorf("DecodeGray(white RGB) = %v, %v; want 255", g, err)
	}
}

func TestProbe(t *testing.T) {
	img := NewRGB(12, 7)
	jpg, _ := EncodeJPEG(img, 90)
	png, _ := EncodePNG(img)
	for _, tc := range []struct {
		name   string
		data   []byte
		format string
		w, h   int
		err    bool
	}{
		{"jpeg", jpg, "jpeg", 12, 7, false},
		{"png", png, "png", 12, 7, false},
		{"jpeg on its side (EXIF 6)", SetJPEGOrientation(jpg, 6), "jpeg", 7, 12, false},
		{"empty", nil, "", 0, 0, true},
		{"not an image", []byte("hello"), "", 0, 0, true},
		{"over the limit", pngHeaderOnly(100000, 100000), "", 0, 0, true},
	} {
		format, w, h, err := Probe(tc.data, 0)
		if (err != nil) != tc.err || format != tc.format || w != tc.w || h != tc.h {
			t.Errorf("%s: Probe = %q %dx%d %v", tc.name, format, w, h, err)
		}
		if !tc.err {
			d, err := DecodeRGB(tc.data, 0)
			if err != nil || d.W != w || d.H != h {
				t.Errorf("%s: decodes to %dx%d (%v), probed %dx%d", tc.name, d.W, d.H, err, w, h)
			}
		}
	}
}
