// Package imagefile decodes and encodes the image files of a dataset: JPEG
// and PNG photographs as 8-bit RGB, VOC palette PNG label maps as class
// indices (255 = ignore), and 8-bit grayscale maps (saliency).
//
// Every decoder checks the size declared in the file header against a pixel
// limit before decoding, so a hostile or broken file cannot make it allocate
// gigabytes.
package imagefile

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"sync"
)

// DefaultMaxPixels is the default limit on width*height of a decoded image
// (50 megapixels).
const DefaultMaxPixels = 50_000_000

// ErrEmpty is the error of a zero-byte file.
var ErrEmpty = errors.New("empty file (0 bytes)")

// Ignore is the label index of pixels that are not scored (VOC convention).
const Ignore = 255

// ErrTooLarge is returned (wrapped) for an image over the pixel limit.
var ErrTooLarge = errors.New("image exceeds the pixel limit")

// RGB is an 8-bit RGB image, row-major, 3 bytes a pixel.
type RGB struct {
	W, H int
	Pix  []uint8
}

// NewRGB returns a black image of the given size.
func NewRGB(w, h int) *RGB {
	return &RGB{W: w, H: h, Pix: make([]uint8, 3*w*h)}
}

// Gray is an 8-bit single-channel map, row-major: a label map of class
// indices or a saliency map (0 = background, 255 = salient).
type Gray struct {
	W, H int
	Pix  []uint8
}

// NewGray returns a zero map of the given size.
func NewGray(w, h int) *Gray {
	return &Gray{W: w, H: h, Pix: make([]uint8, w*h)}
}

// checkHeader reads the format and declared size and applies the limit.
func checkHeader(data []byte, maxPixels int) (string, error) {
	if len(data) == 0 {
		return "", ErrEmpty
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("read image header: %w", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return "", fmt.Errorf("image declares an empty size %dx%d", cfg.Width, cfg.Height)
	}
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	if int64(cfg.Width)*int64(cfg.Height) > int64(maxPixels) {
		return "", fmt.Errorf("%dx%d: %w of %d pixels", cfg.Width, cfg.Height, ErrTooLarge, maxPixels)
	}
	return format, nil
}

func decode(data []byte, maxPixels int) (image.Image, error) {
	format, err := checkHeader(data, maxPixels)
	if err != nil {
		return nil, err
	}
	var img image.Image
	switch format {
	case "jpeg":
		img, err = jpeg.Decode(bytes.NewReader(data))
	case "png":
		img, err = png.Decode(bytes.NewReader(data))
	default:
		return nil, fmt.Errorf("unsupported image format %q (want JPEG or PNG)", format)
	}
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", format, err)
	}
	return img, nil
}

// Probe reads an image file's header: its format and displayed size (a
// JPEG's EXIF orientation applied, as DecodeRGB gives it), with the checks
// DecodeRGB makes before decoding (an empty file, an unknown format, a
// size over maxPixels). A file that probes can still fail to decode (a
// truncated body).
func Probe(data []byte, maxPixels int) (format string, w, h int, err error) {
	format, err = checkHeader(data, maxPixels)
	if err != nil {
		return "", 0, 0, err
	}
	if format != "jpeg" && format != "png" {
		return "", 0, 0, fmt.Errorf("unsupported image format %q (want JPEG or PNG)", format)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return "", 0, 0, fmt.Errorf("read image header: %w", err)
	}
	w, h = cfg.Width, cfg.Height
	if format == "jpeg" && JPEGOrientation(data).Swapped() {
		w, h = h, w
	}
	return format, w, h, nil
}

// DecodeRGB decodes a JPEG or PNG file (8 or 16 bit, gray, palette, with or
// without alpha) to 8-bit RGB, as displayed: a JPEG's EXIF orientation is
// applied (a phone photo stored on its side comes out upright, with its
// displayed width and height). Alpha is dropped, keeping the colour
// values, as PIL's convert("RGB") does. maxPixels <= 0 means
// DefaultMaxPixels.
func DecodeRGB(data []byte, maxPixels int) (*RGB, error) {
	out, err := decodeRGB(data, maxPixels)
	if err != nil {
		return nil, err
	}
	return Orient(out, JPEGOrientation(data))
}

func decodeRGB(data []byte, maxPixels int) (*RGB, error) {
	img, err := decode(data, maxPixels)
	if err != nil {
		return nil, err
	}
	b := img.Bounds()
	out := NewRGB(b.Dx(), b.Dy())
	i := 0
	switch src := img.(type) {
	case *image.YCbCr:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				yi, ci := src.YOffset(x, y), src.COffset(x, y)
				out.Pix[i], out.Pix[i+1], out.Pix[i+2] = color.YCbCrToRGB(src.Y[yi], src.Cb[ci], src.Cr[ci])
				i += 3
			}
		}
	case *image.Gray:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			row := src.Pix[(y-b.Min.Y)*src.Stride:]
			for x := 0; x < b.Dx(); x++ {
				v := row[x]
				out.Pix[i], out.Pix[i+1], out.Pix[i+2] = v, v, v
				i += 3
			}
		}
	case *image.NRGBA:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			row := src.Pix[(y-b.Min.Y)*src.Stride:]
			for x := 0; x < b.Dx(); x++ {
				copy(out.Pix[i:i+3], row[4*x:4*x+3])
				i += 3
			}
		}
	default:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				c := color.NRGBA64Model.Convert(img.At(x, y)).(color.NRGBA64)
				out.Pix[i], out.Pix[i+1], out.Pix[i+2] = uint8(c.R>>8), uint8(c.G>>8), uint8(c.B>>8)
				i += 3
			}
		}
	}
	return out, nil
}

// DecodeGray decodes an 8-bit grayscale map such as a saliency map. Colour
// or 16-bit inputs are converted to 8-bit luminance. Maps are taken as
// stored: saliency maps and ground truth are in the displayed orientation
// of their image (annotation tools export them so), and any EXIF
// orientation they carry is ignored.
func DecodeGray(data []byte, maxPixels int) (*Gray, error) {
	img, err := decode(data, maxPixels)
	if err != nil {
		return nil, err
	}
	b := img.Bounds()
	out := NewGray(b.Dx(), b.Dy())
	if g, ok := img.(*image.Gray); ok {
		for y := 0; y < b.Dy(); y++ {
			copy(out.Pix[y*out.W:(y+1)*out.W], g.Pix[y*g.Stride:])
		}
		return out, nil
	}
	i := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			out.Pix[i] = color.GrayModel.Convert(img.At(x, y)).(color.Gray).Y
			i++
		}
	}
	return out, nil
}

// DecodeLabel decodes a label map of class indices: a palette PNG (the
// indices are the labels, whatever the palette's colours) or an 8-bit gray
// PNG (the values are the labels). Anything else is refused, since colours
// cannot be mapped back to classes reliably.
func DecodeLabel(data []byte, maxPixels int) (*Gray, error) {
	img, err := decode(data, maxPixels)
	if err != nil {
		return nil, err
	}
	b := img.Bounds()
	out := NewGray(b.Dx(), b.Dy())
	var pix []uint8
	var stride int
	switch src := img.(type) {
	case *image.Paletted:
		pix, stride = src.Pix, src.Stride
	case *image.Gray:
		pix, stride = src.Pix, src.Stride
	default:
		return nil, fmt.Errorf("label map must be a palette or 8-bit gray PNG, got %T", img)
	}
	for y := 0; y < b.Dy(); y++ {
		copy(out.Pix[y*out.W:(y+1)*out.W], pix[y*stride:])
	}
	return out, nil
}

// VOCPalette is the standard PASCAL VOC colour map: 256 colours, index 0
// black (background), 255 (224,224,192) for ignored pixels.
var VOCPalette = func() color.Palette {
	p := make(color.Palette, 256)
	for i := range p {
		var r, g, b uint8
		c := i
		for j := 0; j < 8; j++ {
			r |= uint8((c>>0)&1) << (7 - j)
			g |= uint8((c>>1)&1) << (7 - j)
			b |= uint8((c>>2)&1) << (7 - j)
			c >>= 3
		}
		p[i] = color.RGBA{r, g, b, 255}
	}
	return p
}()

// pngEncoder uses the default compression and reuses its compressor
// between images: a fresh one allocates about 1 MB of state, more than a
// label PNG itself, and the labeling job encodes one per image.
var pngEncoder = png.Encoder{CompressionLevel: png.DefaultCompression, BufferPool: &pngBufferPool{}}

// pngBufferPool is a png.EncoderBufferPool over a sync.Pool (safe for
// concurrent encoders).
type pngBufferPool struct{ pool sync.Pool }

// Get returns a pooled encoder buffer, or nil for the encoder to make one.
func (p *pngBufferPool) Get() *png.EncoderBuffer {
	b, _ := p.pool.Get().(*png.EncoderBuffer)
	return b
}

// Put keeps b for a later Get.
func (p *pngBufferPool) Put(b *png.EncoderBuffer) { p.pool.Put(b) }

// EncodeLabel encodes a label map as a VOC palette PNG whose indices are
// the class indices.
func EncodeLabel(m *Gray) ([]byte, error) {
	img := &image.Paletted{Pix: m.Pix, Stride: m.W, Rect: image.Rect(0, 0, m.W, m.H), Palette: VOCPalette}
	var buf bytes.Buffer
	if err := pngEncoder.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("encode label PNG: %w", err)
	}
	return buf.Bytes(), nil
}

// EncodeGray encodes an 8-bit grayscale PNG.
func EncodeGray(m *Gray) ([]byte, error) {
	img := &image.Gray{Pix: m.Pix, Stride: m.W, Rect: image.Rect(0, 0, m.W, m.H)}
	var buf bytes.Buffer
	if err := pngEncoder.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("encode gray PNG: %w", err)
	}
	return buf.Bytes(), nil
}

func (m *RGB) toNRGBA() *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, m.W, m.H))
	for i, j := 0, 0; i < len(m.Pix); i, j = i+3, j+4 {
		img.Pix[j], img.Pix[j+1], img.Pix[j+2], img.Pix[j+3] = m.Pix[i], m.Pix[i+1], m.Pix[i+2], 255
	}
	return img
}

// EncodeJPEG encodes an RGB image as JPEG at the given quality (1-100).
func EncodeJPEG(m *RGB, quality int) ([]byte, error) {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, m.toNRGBA(), &jpeg.Options{Quality: quality}); err != nil {
		return nil, fmt.Errorf("encode JPEG: %w", err)
	}
	return buf.Bytes(), nil
}

// EncodePNG encodes an RGB image as an 8-bit RGB PNG (written as RGBA with
// opaque alpha by the standard library).
func EncodePNG(m *RGB) ([]byte, error) {
	var buf bytes.Buffer
	if err := pngEncoder.Encode(&buf, m.toNRGBA()); err != nil {
		return nil, fmt.Errorf("encode PNG: %w", err)
	}
	return buf.Bytes(), nil
}
