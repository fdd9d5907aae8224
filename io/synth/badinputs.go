package synth

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"

	"github.com/l2gflow/l2gflow/io/imagefile"
)

// Outcome is what l2gflow must do with a bad input.
type Outcome string

// Outcomes of bad inputs.
const (
	// Processed: the input is odd but valid; it is labelled.
	Processed Outcome = "processed"
	// DeadLetter: the image is skipped with a line in _errors.jsonl; the
	// rest of the job goes on.
	DeadLetter Outcome = "dead letter"
	// Refused: the job does not start; the message names the fault.
	Refused Outcome = "refused"
)

// ImageCase is a bad input confined to one image of an otherwise valid
// dataset: its image file (and optionally saliency or ground truth) is
// replaced by the case's bytes.
type ImageCase struct {
	Name string
	// Image is the file's contents, nil for a missing file; Ext its
	// extension (".jpg" or ".png").
	Image []byte
	Ext   string
	// Saliency and GT, when non-nil, replace the sample's maps.
	Saliency []byte
	GT       []byte
	// NoTags lists the image without tags.
	NoTags bool
	Expect Outcome
	// Reason is a substring of the dead-letter reason (DeadLetter only).
	Reason string
	// W, H is the size of the label when processed.
	W, H int
}

// BadImages returns the image-level cases of the bad-input corpus, built
// from a valid sample image of the given size. Every case is generated
// here, none is a stored binary.
func BadImages(good Sample) ([]ImageCase, error) {
	w, h := good.Image.W, good.Image.H
	jpg, err := imagefile.EncodeJPEG(good.Image, 90)
	if err != nil {
		return nil, err
	}
	pngData, err := imagefile.EncodePNG(good.Image)
	if err != nil {
		return nil, err
	}
	gray := image.NewGray(image.Rect(0, 0, w, h))
	rgba16 := image.NewNRGBA64(image.Rect(0, 0, w, h))
	pal := color.Palette{color.NRGBA{0, 0, 0, 0}, color.NRGBA{200, 30, 30, 128}, color.NRGBA{30, 200, 30, 255}, color.NRGBA{240, 240, 240, 255}}
	paletted := image.NewPaletted(image.Rect(0, 0, w, h), pal)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			r, g, b := good.Image.Pix[3*(y*w+x)], good.Image.Pix[3*(y*w+x)+1], good.Image.Pix[3*(y*w+x)+2]
			gray.Pix[y*w+x] = uint8((int(r) + int(g) + int(b)) / 3)
			rgba16.Set(x, y, color.NRGBA64{uint16(r) * 257, uint16(g) * 257, uint16(b) * 257, 0xffff})
			paletted.SetColorIndex(x, y, uint8((x/8+y/8)%len(pal)))
		}
	}
	grayJPG := encodeJPEG(gray)
	png16 := encodePNG(rgba16)
	palPNG := encodePNG(paletted)
	one := imagefile.NewRGB(1, 1)
	one.Pix[0], one.Pix[1], one.Pix[2] = 200, 40, 40
	onePNG, err := imagefile.EncodePNG(one)
	if err != nil {
		return nil, err
	}
	corruptJPG := bytes.Clone(jpg)
	// Overwrite the frame header's component count and what follows.
	if i := bytes.Index(corruptJPG, []byte{0xff, 0xc0}); i > 0 {
		copy(corruptJPG[i+9:], bytes.Repeat([]byte{0xee}, 12))
	}
	corruptPNG := bytes.Clone(pngData)
	corruptPNG[len(corruptPNG)-13] ^= 0xff // the last image-data chunk's CRC (before the 12-byte IEND)

	salOther := imagefile.NewGray(w/2+3, h/2+1)
	for i := range salOther.Pix {
		salOther.Pix[i] = 255
	}
	salOtherPNG, err := imagefile.EncodeGray(salOther)
	if err != nil {
		return nil, err
	}
	salZero, err := imagefile.EncodeGray(imagefile.NewGray(w, h))
	if err != nil {
		return nil, err
	}
	gtOther, err := imagefile.EncodeLabel(imagefile.NewGray(w+5, h))
	if err != nil {
		return nil, err
	}

	turned := map[imagefile.Orientation][]byte{}
	for _, o := range []imagefile.Orientation{3, 6} {
		g, err := imagefile.OrientGray(good.GT, o)
		if err != nil {
			return nil, err
		}
		if turned[o], err = imagefile.EncodeLabel(g); err != nil {
			return nil, err
		}
	}

	return []ImageCase{
		{Name: "truncated jpeg", Image: jpg[:len(jpg)/2], Ext: ".jpg", Expect: DeadLetter, Reason: "decode jpeg"},
		{Name: "truncated png", Image: pngData[:len(pngData)/2], Ext: ".png", Expect: DeadLetter, Reason: "decode png"},
		{Name: "corrupt jpeg", Image: corruptJPG, Ext: ".jpg", Expect: DeadLetter, Reason: "invalid JPEG format"},
		{Name: "corrupt png", Image: corruptPNG, Ext: ".png", Expect: DeadLetter, Reason: "checksum"},
		{Name: "zero bytes", Image: []byte{}, Ext: ".jpg", Expect: DeadLetter, Reason: "empty file"},
		{Name: "png bomb", Image: PNGHeaderOnly(100000, 100000), Ext: ".png", Expect: DeadLetter, Reason: "exceeds the pixel limit"},
		{Name: "not an image", Image: []byte("<html>404 not found</html>"), Ext: ".jpg", Expect: DeadLetter, Reason: "image header"},
		{Name: "missing image", Image: nil, Ext: ".jpg", Expect: DeadLetter, Reason: "file does not exist (nor with .png"},
		{Name: "1x1 image", Image: onePNG, Ext: ".png", Expect: Processed, W: 1, H: 1},
		{Name: "16-bit png", Image: png16, Ext: ".png", Expect: Processed, W: w, H: h},
		{Name: "gray jpeg", Image: grayJPG, Ext: ".jpg", Expect: Processed, W: w, H: h},
		{Name: "cmyk jpeg", Image: CMYKJPEG(good.Image), Ext: ".jpg", Expect: Processed, W: w, H: h},
		{Name: "palette png with alpha", Image: palPNG, Ext: ".png", Expect: Processed, W: w, H: h},
		{Name: "png named .jpg", Image: pngData, Ext: ".jpg", Expect: Processed, W: w, H: h},
		{Name: "no tags", Image: jpg, Ext: ".jpg", NoTags: true, Expect: Processed, W: w, H: h},
		{Name: "saliency of another size", Image: jpg, Ext: ".jpg", Saliency: salOtherPNG, Expect: Processed, W: w, H: h},
		{Name: "all-zero saliency", Image: jpg, Ext: ".jpg", Saliency: salZero, Expect: Processed, W: w, H: h},
		// A phone photo stored on its side and a camera's upside-down
		// one: labelled as displayed, ground truth in that orientation.
		{Name: "jpeg turned by EXIF orientation 6", Image: imagefile.SetJPEGOrientation(jpg, 6), Ext: ".jpg", GT: turned[6], Expect: Processed, W: h, H: w},
		{Name: "jpeg turned by EXIF orientation 3", Image: imagefile.SetJPEGOrientation(jpg, 3), Ext: ".jpg", GT: turned[3], Expect: Processed, W: w, H: h},
		{Name: "ground truth of another size", Image: jpg, Ext: ".jpg", GT: gtOther, Expect: Processed, W: w, H: h},
	}, nil
}

func encodeJPEG(m image.Image) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, m, &jpeg.Options{Quality: 90}); err != nil {
		panic(err) // in-memory encoding of a valid image cannot fail
	}
	return b.Bytes()
}

func encodePNG(m image.Image) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		panic(err) // in-memory encoding of a valid image cannot fail
	}
	return b.Bytes()
}

// PNGHeaderOnly is a PNG that declares w x h RGB pixels and holds none: a
// decompression bomb's header. Decoders that allocate from the header
// before reading the data would ask for w*h*3 bytes.
func PNGHeaderOnly(w, h int) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		crc := crc32.NewIEEE()
		crc.Write([]byte(typ))
		crc.Write(data)
		b.WriteString(typ)
		b.Write(data)
		binary.Write(&b, binary.BigEndian, crc.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	chunk("IHDR", ihdr)
	chunk("IEND", nil)
	return b.Bytes()
}

// CMYKJPEG encodes an image as a 4-component (Adobe CMYK) baseline JPEG,
// which Go's encoder cannot write. Written by hand for the corpus: each
// 8x8 block is coded by its DC coefficient alone (its mean colour, AC
// all zero), which keeps the encoder to Huffman-coding DC differences.
func CMYKJPEG(m *imagefile.RGB) []byte {
	bw, bh := (m.W+7)/8, (m.H+7)/8
	// Block means per component, Adobe's inverted CMYK (0 = full ink).
	means := make([][4]int, bw*bh)
	for by := 0; by < bh; by++ {
		for bx := 0; bx < bw; bx++ {
			var sum [4]int
			n := 0
			for y := by * 8; y < min(by*8+8, m.H); y++ {
				for x := bx * 8; x < min(bx*8+8, m.W); x++ {
					p := m.Pix[3*(y*m.W+x):]
					c, mg, ye, k := color.RGBToCMYK(p[0], p[1], p[2])
					sum[0] += 255 - int(c)
					sum[1] += 255 - int(mg)
					sum[2] += 255 - int(ye)
					sum[3] += 255 - int(k)
					n++
				}
			}
			for i := range sum {
				means[by*bw+bx][i] = sum[i] / n
			}
		}
	}
	var b bytes.Buffer
	seg := func(marker byte, data []byte) {
		b.Write([]byte{0xff, marker})
		binary.Write(&b, binary.BigEndian, uint16(len(data)+2))
		b.Write(data)
	}
	b.Write([]byte{0xff, 0xd8})                                               // SOI
	seg(0xee, []byte{'A', 'd', 'o', 'b', 'e', 0, 100, 0, 0, 0, 0, 0})         // APP14 Adobe, transform 0: CMYK
	seg(0xdb, append([]byte{0}, bytes.Repeat([]byte{1}, 64)...))              // DQT 0, all ones
	sof := []byte{8, byte(m.H >> 8), byte(m.H), byte(m.W >> 8), byte(m.W), 4} // SOF0, 4 components
	for c := byte(1); c <= 4; c++ {
		sof = append(sof, c, 0x11, 0)
	}
	seg(0xc0, sof)
	// DHT: the standard luminance DC table; an AC table whose one symbol
	// is end-of-block, coded "0".
	dc := append([]byte{0x00, 0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0}, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
	ac := append([]byte{0x10, 1}, append(make([]byte, 15), 0)...)
	seg(0xc4, append(dc, ac...))
	sos := []byte{4}
	for c := byte(1); c <= 4; c++ {
		sos = append(sos, c, 0x00)
	}
	seg(0xda, append(sos, 0, 63, 0))
	// Standard DC luminance codes by category.
	dcCode := [12]struct{ bits, n uint32 }{{0, 2}, {2, 3}, {3, 3}, {4, 3}, {5, 3}, {6, 3}, {14, 4}, {30, 5}, {62, 6}, {126, 7}, {254, 8}, {510, 9}}
	var acc uint64
	var nacc uint
	var out []byte
	put := func(bits uint32, n uint) {
		acc = acc<<n | uint64(bits)
		nacc += n
		for nacc >= 8 {
			v := byte(acc >> (nacc - 8))
			out = append(out, v)
			if v == 0xff {
				out = append(out, 0) // byte stuffing
			}
			nacc -= 8
		}
	}
	var pred [4]int
	for _, mean := range means {
		for c := range 4 {
			dcv := 8 * (mean[c] - 128) // DC of a flat block, quantiser 1
			diff := dcv - pred[c]
			pred[c] = dcv
			cat, mag := 0, diff
			if mag < 0 {
				mag = -mag
			}
			for mag>>cat != 0 {
				cat++
			}
			put(dcCode[cat].bits, uint(dcCode[cat].n))
			if cat > 0 {
				v := diff
				if v < 0 {
					v += 1<<cat - 1
				}
				put(uint32(v), uint(cat))
			}
			put(0, 1) // end of block
		}
	}
	if nacc > 0 {
		put(1<<(8-nacc)-1, 8-nacc) // pad with ones
	}
	b.Write(out)
	b.Write([]byte{0xff, 0xd9}) // EOI
	return b.Bytes()
}
