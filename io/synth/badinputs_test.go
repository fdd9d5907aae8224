package synth

import (
	"strings"
	"testing"

	"github.com/l2gflow/l2gflow/io/imagefile"
)

// TestBadImagesDecodeAsDeclared checks the corpus itself: processed cases
// decode to their declared size, dead-letter image cases fail to decode
// with their reason.
func TestBadImagesDecodeAsDeclared(t *testing.T) {
	good := Generate(Options{Images: 1, Size: 48, Classes: 3, Seed: 1}, 0)
	cases, err := BadImages(good)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			if c.Image == nil {
				return // the missing file
			}
			img, err := imagefile.DecodeRGB(c.Image, 0)
			switch c.Expect {
			case Processed:
				if err != nil {
					t.Fatalf("does not decode: %v", err)
				}
				if img.W != c.W || img.H != c.H {
					t.Errorf("decodes to %dx%d, want %dx%d", img.W, img.H, c.W, c.H)
				}
			case DeadLetter:
				if err == nil || !strings.Contains(err.Error(), c.Reason) {
					t.Errorf("decode error %v, want one with %q", err, c.Reason)
				}
			}
		})
	}
}

// TestCMYKJPEGColours checks the hand-written CMYK encoder: Go's decoder
// reads it back as CMYK with each 8x8 block's mean colour.
func TestCMYKJPEGColours(t *testing.T) {
	m := imagefile.NewRGB(16, 8)
	for i := 0; i < 16*8; i++ {
		if i%16 < 8 {
			m.Pix[3*i], m.Pix[3*i+1], m.Pix[3*i+2] = 220, 30, 30
		} else {
			m.Pix[3*i], m.Pix[3*i+1], m.Pix[3*i+2] = 20, 40, 200
		}
	}
	got, err := imagefile.DecodeRGB(CMYKJPEG(m), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []int{3, 12} {
		i := 3 * (4*16 + x)
		for c := 0; c < 3; c++ {
			d := int(got.Pix[i+c]) - int(m.Pix[i+c])
			if d < -6 || d > 6 {
				t.Errorf("pixel x=%d channel %d: %d, want %d", x, c, got.Pix[i+c], m.Pix[i+c])
			}
		}
	}
}
