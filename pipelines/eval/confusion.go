// Package eval scores pseudo labels against ground truth: a Beam pipeline
// (prism by default, any Beam runner) that builds the confusion matrix with
// a combiner, sweeps the background threshold over stored CAMs, and writes
// metrics.json and a self-contained report.html.
package eval

import (
	"fmt"
	"math"

	"github.com/l2gflow/l2gflow/io/imagefile"
)

// Confusion is a (C+1) x (C+1) confusion matrix, rows ground truth,
// columns prediction, class 0 background. Ground-truth pixels marked 255
// are not scored. Predicted 255 (ignore) pixels are counted in Ignored and
// scored as background, so that a label cannot gain by abstaining.
type Confusion struct {
	K       int     // classes including background
	M       []int64 // K*K counts
	Ignored int64   // scored pixels the label marked 255
	Scored  int64   // pixels with a ground-truth class
}

// NewConfusion returns an empty matrix for k classes (background included).
func NewConfusion(k int) *Confusion { return &Confusion{K: k, M: make([]int64, k*k)} }

// Add scores one label map against its ground truth.
func (c *Confusion) Add(gt, pred *imagefile.Gray) error {
	if gt.W != pred.W || gt.H != pred.H {
		return fmt.Errorf("label is %dx%d, ground truth %dx%d", pred.W, pred.H, gt.W, gt.H)
	}
	for i, g := range gt.Pix {
		if g == imagefile.Ignore {
			continue
		}
		p := pred.Pix[i]
		if p == imagefile.Ignore {
			c.Ignored++
			p = 0
		}
		if int(g) >= c.K || int(p) >= c.K {
			return fmt.Errorf("class %d or %d outside the %d classes", g, p, c.K)
		}
		c.M[int(g)*c.K+int(p)]++
		c.Scored++
	}
	return nil
}

// Merge adds another matrix of the same size.
func (c *Confusion) Merge(o *Confusion) {
	for i, v := range o.M {
		c.M[i] += v
	}
	c.Ignored += o.Ignored
	c.Scored += o.Scored
}

// ClassScores are one class's numbers; NaN where undefined (the class is
// absent from both ground truth and prediction).
type ClassScores struct {
	IoU, Precision, Recall float64
	GTPixels, PredPixels   int64
}

// Scores returns per-class scores and the mean IoU over the classes that
// occur in the ground truth or the prediction (the field's convention).
func (c *Confusion) Scores() ([]ClassScores, float64) {
	out := make([]ClassScores, c.K)
	var sum float64
	var n int
	for k := 0; k < c.K; k++ {
		tp := c.M[k*c.K+k]
		var row, col int64
		for j := 0; j < c.K; j++ {
			row += c.M[k*c.K+j]
			col += c.M[j*c.K+k]
		}
		s := ClassScores{IoU: math.NaN(), Precision: math.NaN(), Recall: math.NaN(), GTPixels: row, PredPixels: col}
		if union := row + col - tp; union > 0 {
			s.IoU = float64(tp) / float64(union)
			sum += s.IoU
			n++
		}
		if col > 0 {
			s.Precision = float64(tp) / float64(col)
		}
		if row > 0 {
			s.Recall = float64(tp) / float64(row)
		}
		out[k] = s
	}
	if n == 0 {
		return out, math.NaN()
	}
	return out, sum / float64(n)
}

// MeanIoU is the second result of Scores.
func (c *Confusion) MeanIoU() float64 {
	_, m := c.Scores()
	return m
}
