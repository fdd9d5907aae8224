package eval

import (
	"math"
	"testing"

	"github.com/l2gflow/l2gflow/io/imagefile"
)

func gray(w, h int, pix ...uint8) *imagefile.Gray { return &imagefile.Gray{W: w, H: h, Pix: pix} }

func TestConfusionByHand(t *testing.T) {
	// 4 classes (background + 3); class 3 absent from both.
	gt := gray(4, 2,
		0, 0, 1, 1,
		2, 255, 1, 0)
	pred := gray(4, 2,
		0, 1, 1, 255,
		2, 2, 0, 0)
	c := NewConfusion(4)
	if err := c.Add(gt, pred); err != nil {
		t.Fatal(err)
	}
	// Scored pixels: 7 (one GT 255 skipped). Predicted 255 at a GT-1 pixel
	// counts as background and as ignored.
	if c.Scored != 7 || c.Ignored != 1 {
		t.Fatalf("scored %d ignored %d, want 7 and 1", c.Scored, c.Ignored)
	}
	// Rows GT, cols pred:
	// bg: (0,0) (0,1) (0,0) -> M[0][0]=2, M[0][1]=1
	// 1 : (1,1) (1,0 from 255) (1,0) -> M[1][1]=1, M[1][0]=2
	// 2 : (2,2) -> M[2][2]=1
	want := map[[2]int]int64{{0, 0}: 2, {0, 1}: 1, {1, 1}: 1, {1, 0}: 2, {2, 2}: 1}
	for g := 0; g < 4; g++ {
		for p := 0; p < 4; p++ {
			if got := c.M[g*4+p]; got != want[[2]int{g, p}] {
				t.Errorf("M[%d][%d] = %d, want %d", g, p, got, want[[2]int{g, p}])
			}
		}
	}
	s, miou := c.Scores()
	// IoU bg = 2/(3+4-2)=0.4; class1 = 1/(3+2-1)=0.25; class2 = 1/(1+1-1)=1; class3 absent.
	wantIoU := []float64{0.4, 0.25, 1, math.NaN()}
	for k, w := range wantIoU {
		if math.IsNaN(w) != math.IsNaN(s[k].IoU) || (!math.IsNaN(w) && math.Abs(s[k].IoU-w) > 1e-12) {
			t.Errorf("IoU[%d] = %v, want %v", k, s[k].IoU, w)
		}
	}
	if want := (0.4 + 0.25 + 1) / 3; math.Abs(miou-want) > 1e-12 {
		t.Errorf("mIoU = %v, want %v (absent class excluded)", miou, want)
	}
	// precision bg = 2/4, recall bg = 2/3; class1 precision 1/2, recall 1/3.
	if math.Abs(s[0].Precision-0.5) > 1e-12 || math.Abs(s[0].Recall-2.0/3) > 1e-12 ||
		math.Abs(s[1].Precision-0.5) > 1e-12 || math.Abs(s[1].Recall-1.0/3) > 1e-12 {
		t.Errorf("precision/recall: %+v", s[:2])
	}
}

func TestConfusionErrors(t *testing.T) {
	c := NewConfusion(3)
	if err := c.Add(gray(2, 1, 0, 0), gray(1, 1, 0)); err == nil {
		t.Error("size mismatch: want an error")
	}
	if err := c.Add(gray(1, 1, 7), gray(1, 1, 0)); err == nil {
		t.Error("class out of range: want an error")
	}
	if !math.IsNaN(NewConfusion(2).MeanIoU()) {
		t.Error("empty matrix: want NaN mIoU")
	}
}
