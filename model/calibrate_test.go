package model

import (
	"strings"
	"testing"
)

// TestChooseThreshold checks the calibration's choice and its warnings on
// agreement curves: a peak inside the candidates, a curve still rising at
// either end, and a weak best agreement.
func TestChooseThreshold(t *testing.T) {
	n := len(ThresholdCandidates)
	curve := func(f func(i int) float64) (inter, union []float64) {
		for i := range n {
			inter = append(inter, 1000*f(i))
			union = append(union, 1000)
		}
		return inter, union
	}
	peak := func(at int, top float64) func(int) float64 {
		return func(i int) float64 { return top - 0.02*float64((i-at)*(i-at)) }
	}
	for _, tc := range []struct {
		name     string
		f        func(int) float64
		value    float64
		warnings []string // substrings, one a warning
	}{
		{"peak inside", peak(9, 0.6), ThresholdCandidates[9], nil},
		{"rising at the top", func(i int) float64 { return 0.2 + 0.02*float64(i) }, ThresholdCandidates[n-1], []string{"highest threshold"}},
		{"rising at the bottom", func(i int) float64 { return 0.6 - 0.02*float64(i) }, ThresholdCandidates[0], []string{"lowest threshold"}},
		{"weak agreement", peak(5, 0.2), ThresholdCandidates[5], []string{"only 20%"}},
		{"weak and inverted", func(i int) float64 { return 0.05 + 0.005*float64(i) }, ThresholdCandidates[n-1], []string{"highest threshold", "only 13%"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := chooseThreshold(curve(tc.f))
			if got.Value != tc.value || len(got.IoU) != n {
				t.Errorf("threshold %g (%d IoUs), want %g", got.Value, len(got.IoU), tc.value)
			}
			if len(got.Warnings) != len(tc.warnings) {
				t.Fatalf("warnings %q, want %d", got.Warnings, len(tc.warnings))
			}
			for i, w := range tc.warnings {
				if !strings.Contains(got.Warnings[i], w) {
					t.Errorf("warning %q does not say %q", got.Warnings[i], w)
				}
			}
		})
	}
}
