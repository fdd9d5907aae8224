package imagefile

import (
	"encoding/binary"
	"fmt"
)

// Orientation is the EXIF orientation of a stored image (TIFF tag 0x0112):
// how the stored pixels must be turned to be seen as the camera saw them.
// 1 is upright; 3 needs a half turn; 6 a quarter turn clockwise (a phone
// held upright); 8 a quarter turn counter-clockwise; 2, 4, 5 and 7 are
// the mirrored variants.
type Orientation int

// Upright is the orientation of an image stored as displayed.
const Upright Orientation = 1

// Swapped reports whether displaying the image swaps its width and height.
func (o Orientation) Swapped() bool { return o >= 5 && o <= 8 }

// JPEGOrientation reads the EXIF orientation of a JPEG file; it returns
// Upright for other files, files without EXIF, and unreadable or
// out-of-range values (as viewers do).
//
// Written by hand: only this one tag is needed, read from IFD0 of the
// APP1 segment; the EXIF library the module proxy serves
// (dsoprea/go-exif) parses every IFD and tag and brings logging, YAML and
// geometry packages with it. Every offset is bounds-checked (fuzzed with
// the image decoder).
func JPEGOrientation(data []byte) Orientation {
	if len(data) < 4 || data[0] != 0xFF || data[1] != 0xD8 {
		return Upright
	}
	p := 2
	for p+4 <= len(data) {
		if data[p] != 0xFF {
			return Upright
		}
		marker := data[p+1]
		if marker == 0xFF { // fill byte
			p++
			continue
		}
		if marker == 0xDA || marker == 0xD9 { // start of scan, end of image
			return Upright
		}
		n := int(binary.BigEndian.Uint16(data[p+2:]))
		if n < 2 || p+2+n > len(data) {
			return Upright
		}
		seg := data[p+4 : p+2+n]
		if marker == 0xE1 && len(seg) >= 6 && string(seg[:6]) == "Exif\x00\x00" {
			if o, ok := tiffOrientation(seg[6:]); ok {
				return o
			}
		}
		p += 2 + n
	}
	return Upright
}

// tiffOrientation finds tag 0x0112 in IFD0 of a TIFF structure.
func tiffOrientation(t []byte) (Orientation, bool) {
	if len(t) < 8 {
		return 0, false
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 0, false
	}
	if bo.Uint16(t[2:]) != 42 {
		return 0, false
	}
	ifd := int(bo.Uint32(t[4:]))
	if ifd < 8 || ifd+2 > len(t) {
		return 0, false
	}
	count := int(bo.Uint16(t[ifd:]))
	for i := 0; i < count; i++ {
		e := ifd + 2 + 12*i
		if e+12 > len(t) {
			return 0, false
		}
		if bo.Uint16(t[e:]) != 0x0112 {
			continue
		}
		// Type SHORT (3), count 1: the value sits in the entry's first two
		// value bytes.
		if bo.Uint16(t[e+2:]) != 3 || bo.Uint32(t[e+4:]) != 1 {
			return 0, false
		}
		o := Orientation(bo.Uint16(t[e+8:]))
		if o < 1 || o > 8 {
			return 0, false
		}
		return o, true
	}
	return 0, false
}

// source returns, for orientation o and a stored w x h image, the stored
// (row, column) shown at display position (r, c).
func (o Orientation) source(r, c, w, h int) (int, int) {
	switch o {
	case 2: // mirrored left-right
		return r, w - 1 - c
	case 3: // half turn
		return h - 1 - r, w - 1 - c
	case 4: // mirrored top-bottom
		return h - 1 - r, c
	case 5: // transposed
		return c, r
	case 6: // quarter turn clockwise
		return h - 1 - c, r
	case 7: // transverse
		return h - 1 - c, w - 1 - r
	case 8: // quarter turn counter-clockwise
		return c, w - 1 - r
	}
	return r, c
}

// Orient returns img as displayed under orientation o (img itself when
// upright).
func Orient(img *RGB, o Orientation) (*RGB, error) {
	pix, w, h, err := orient(img.Pix, img.W, img.H, 3, o)
	if err != nil {
		return nil, err
	}
	if w == img.W && h == img.H && &pix[0] == &img.Pix[0] {
		return img, nil
	}
	return &RGB{W: w, H: h, Pix: pix}, nil
}

// OrientGray turns a map as Orient turns an image: for making a map in
// the displayed orientation of a turned photo (tests, the bad-input
// corpus). Decoding never turns maps (see DecodeGray).
func OrientGray(m *Gray, o Orientation) (*Gray, error) {
	pix, w, h, err := orient(m.Pix, m.W, m.H, 1, o)
	if err != nil {
		return nil, err
	}
	return &Gray{W: w, H: h, Pix: pix}, nil
}

func orient(pix []byte, w, h, ch int, o Orientation) ([]byte, int, int, error) {
	if len(pix) != ch*w*h || len(pix) == 0 {
		return nil, 0, 0, fmt.Errorf("orient: %dx%d map holds %d bytes", w, h, len(pix))
	}
	if o == Upright || o < 1 || o > 8 {
		return pix, w, h, nil
	}
	dw, dh := w, h
	if o.Swapped() {
		dw, dh = h, w
	}
	out := make([]byte, len(pix))
	for r := 0; r < dh; r++ {
		for c := 0; c < dw; c++ {
			sr, sc := o.source(r, c, w, h)
			copy(out[ch*(r*dw+c):ch*(r*dw+c)+ch], pix[ch*(sr*w+sc):ch*(sr*w+sc)+ch])
		}
	}
	return out, dw, dh, nil
}

// SetJPEGOrientation returns a copy of a JPEG file with an EXIF segment
// declaring orientation o inserted after its start marker (a camera's
// way of storing a turned photo without re-encoding it). Test data and
// the bad-input corpus use it.
func SetJPEGOrientation(jpegData []byte, o Orientation) []byte {
	tiff := make([]byte, 26)
	copy(tiff, "MM")
	bo := binary.BigEndian
	bo.PutUint16(tiff[2:], 42)
	bo.PutUint32(tiff[4:], 8)       // IFD0 right after the header
	bo.PutUint16(tiff[8:], 1)       // one entry
	bo.PutUint16(tiff[10:], 0x0112) // orientation
	bo.PutUint16(tiff[12:], 3)      // SHORT
	bo.PutUint32(tiff[14:], 1)      // one value
	bo.PutUint16(tiff[18:], uint16(o))
	seg := append([]byte("Exif\x00\x00"), tiff...)
	if len(jpegData) < 2 {
		return append([]byte(nil), jpegData...)
	}
	out := make([]byte, 0, len(jpegData)+4+len(seg))
	out = append(out, jpegData[:2]...)
	out = append(out, 0xFF, 0xE1, byte((len(seg)+2)>>8), byte(len(seg)+2))
	out = append(out, seg...)
	return append(out, jpegData[2:]...)
}
