package synth

import (
	"github.com/l2gflow/l2gflow/io/imagefile"
)

// SampleSheet draws samples first..first+n-1 of a benchmark as a picture
// for the documentation: one column a sample, rows image, ground truth
// (VOC palette colours) and saliency (white where the image has no
// saliency file), each cell as large as the largest sample, on grey.
func SampleSheet(opts Options, first, n int) *imagefile.RGB {
	samples := make([]Sample, n)
	cw, ch := 0, 0
	for i := range samples {
		samples[i] = Generate(opts, first+i)
		cw, ch = max(cw, samples[i].Image.W), max(ch, samples[i].Image.H)
	}
	const gap = 4
	out := imagefile.NewRGB(n*(cw+gap)+gap, 3*(ch+gap)+gap)
	for i := range out.Pix {
		out.Pix[i] = 128
	}
	put := func(col, row, x, y int, r, g, b uint8) {
		p := 3 * ((gap+row*(ch+gap)+y)*out.W + gap + col*(cw+gap) + x)
		out.Pix[p], out.Pix[p+1], out.Pix[p+2] = r, g, b
	}
	for i, s := range samples {
		w, h := s.Image.W, s.Image.H
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				p := 3 * (y*w + x)
				put(i, 0, x, y, s.Image.Pix[p], s.Image.Pix[p+1], s.Image.Pix[p+2])
				r, g, b, _ := imagefile.VOCPalette[s.GT.Pix[y*w+x]].RGBA()
				put(i, 1, x, y, uint8(r>>8), uint8(g>>8), uint8(b>>8))
				v := uint8(255)
				if s.Saliency != nil {
					v = s.Saliency.Pix[y*w+x]
				}
				put(i, 2, x, y, v, v, v)
			}
		}
	}
	return out
}
