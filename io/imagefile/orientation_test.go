package imagefile

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// withOrientation inserts an APP1 EXIF segment holding orientation o
// right after a JPEG's SOI marker.
func withOrientation(t *testing.T, jpegData []byte, o int, bo binary.ByteOrder) []byte {
	t.Helper()
	tiff := make([]byte, 8+2+12+4)
	if bo == binary.LittleEndian {
		copy(tiff, "II")
	} else {
		copy(tiff, "MM")
	}
	bo.PutUint16(tiff[2:], 42)
	bo.PutUint32(tiff[4:], 8)
	bo.PutUint16(tiff[8:], 1)       // one entry
	bo.PutUint16(tiff[10:], 0x0112) // orientation
	bo.PutUint16(tiff[12:], 3)      // SHORT
	bo.PutUint32(tiff[14:], 1)
	bo.PutUint16(tiff[18:], uint16(o))
	seg := append([]byte("Exif\x00\x00"), tiff...)
	var b bytes.Buffer
	b.Write(jpegData[:2])
	b.Write([]byte{0xFF, 0xE1})
	binary.Write(&b, binary.BigEndian, uint16(len(seg)+2))
	b.Write(seg)
	b.Write(jpegData[2:])
	return b.Bytes()
}

// Turns of a stored image, written independently of Orientation.source.
func rotCW(m *RGB) *RGB {
	out := NewRGB(m.H, m.W)
	for y := 0; y < m.H; y++ {
		for x := 0; x < m.W; x++ {
			copy(out.Pix[3*(x*out.W+m.H-1-y):], m.Pix[3*(y*m.W+x):3*(y*m.W+x)+3])
		}
	}
	return out
}

func flipH(m *RGB) *RGB {
	out := NewRGB(m.W, m.H)
	for y := 0; y < m.H; y++ {
		for x := 0; x < m.W; x++ {
			copy(out.Pix[3*(y*m.W+m.W-1-x):], m.Pix[3*(y*m.W+x):3*(y*m.W+x)+3])
		}
	}
	return out
}

// TestOrientationAllEight decodes a JPEG under each orientation, in both
// TIFF byte orders, and compares with the stored image turned as the EXIF
// specification says.
func TestOrientationAllEight(t *testing.T) {
	stored := NewRGB(40, 24) // 8x8 blocks of distinct colours survive JPEG
	for y := 0; y < stored.H; y++ {
		for x := 0; x < stored.W; x++ {
			b := (y/8)*5 + x/8
			stored.Pix[3*(y*stored.W+x)] = uint8(20 + 15*b)
			stored.Pix[3*(y*stored.W+x)+1] = uint8(240 - 15*b)
			stored.Pix[3*(y*stored.W+x)+2] = uint8(60 * (b % 4))
		}
	}
	data, err := EncodeJPEG(stored, 100)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := DecodeRGB(data, 0)
	if err != nil {
		t.Fatal(err)
	}
	r90 := rotCW(plain)
	want := map[int]*RGB{1: plain, 2: flipH(plain), 3: rotCW(r90), 4: flipH(rotCW(r90)), 5: flipH(r90),
		6: r90, 7: flipH(rotCW(rotCW(r90))), 8: rotCW(rotCW(r90))}
	for o := 1; o <= 8; o++ {
		for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
			t.Run(fmt.Sprintf("%d-%v", o, bo), func(t *testing.T) {
				in := withOrientation(t, data, o, bo)
				if got := JPEGOrientation(in); int(got) != o {
					t.Fatalf("orientation %d read as %d", o, got)
				}
				got, err := DecodeRGB(in, 0)
				if err != nil {
					t.Fatal(err)
				}
				w := want[o]
				if got.W != w.W || got.H != w.H || !bytes.Equal(got.Pix, w.Pix) {
					t.Errorf("orientation %d: got %dx%d, want %dx%d (or other pixels)", o, got.W, got.H, w.W, w.H)
				}
			})
		}
	}
}

// TestOrientationMatchesPIL compares with what PIL's exif_transpose shows
// for JPEGs it wrote with orientations 3, 6 and 8 (testdata/orientation,
// made by make_fixture.py).
func TestOrientationMatchesPIL(t *testing.T) {
	for _, o := range []int{3, 6, 8} {
		dir := filepath.Join("testdata", "orientation")
		jpg, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("orient%d.jpg", o)))
		if err != nil {
			t.Fatal(err)
		}
		png, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("orient%d.png", o)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeRGB(jpg, 0)
		if err != nil {
			t.Fatal(err)
		}
		want, err := DecodeRGB(png, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got.W != want.W || got.H != want.H {
			t.Fatalf("orientation %d: %dx%d, PIL shows %dx%d", o, got.W, got.H, want.W, want.H)
		}
		worst := 0
		for i := range got.Pix {
			worst = max(worst, abs(int(got.Pix[i])-int(want.Pix[i])))
		}
		// Two JPEG decoders differ by a few levels; a wrong turn moves
		// whole colour blocks (differences of 100 and more).
		if worst > 24 {
			t.Errorf("orientation %d: pixels differ from PIL's by up to %d", o, worst)
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// TestOrientationIgnoresBadEXIF reads malformed EXIF as upright.
func TestOrientationIgnoresBadEXIF(t *testing.T) {
	img := NewRGB(16, 8)
	data, _ := EncodeJPEG(img, 90)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"value 9", withOrientation(t, data, 9, binary.LittleEndian)},
		{"value 0", withOrientation(t, data, 0, binary.BigEndian)},
		{"truncated", withOrientation(t, data, 6, binary.LittleEndian)[:30]},
		{"png", func() []byte { b, _ := EncodePNG(img); return b }()},
		{"empty", nil},
	} {
		if o := JPEGOrientation(tc.data); o != Upright {
			t.Errorf("%s: orientation %d, want upright", tc.name, o)
		}
	}
}
