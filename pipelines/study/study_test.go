package study

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func tinyOptions(out string) Options {
	o := Defaults(out)
	o.Synth.Images, o.Synth.Size, o.Synth.Classes = 40, 64, 3
	o.Train.Epochs, o.Train.ImageSize, o.Train.ViewSize, o.Train.Views = 1, 64, 48, 4
	o.Seeds, o.Generators, o.Arms = []int64{1, 2}, []string{"v2"}, []string{"cam", "l2g"}
	return o
}

// TestStudyRunsResumesAndReports runs a tiny study of two arms over two
// seeds, checks each result, re-runs it (nothing is trained again) and
// writes the report and plot.
func TestStudyRunsResumesAndReports(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: trains or runs whole jobs (make test-short)")
	}
	out := t.TempDir()
	var log bytes.Buffer
	o := tinyOptions(out)
	o.Log = &log
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 4 {
		t.Fatalf("%d results, want 4", len(res))
	}
	for _, r := range res {
		if math.IsNaN(float64(r.Written)) || r.Written <= 0 || math.IsNaN(float64(r.Best)) || r.Best < r.Written-1e-9 ||
			math.IsNaN(float64(r.Saliency)) || math.IsNaN(float64(r.Fixed)) || len(r.Sweep) == 0 || r.TrainSeconds <= 0 {
			t.Errorf("%s seed %d: %+v", r.Arm, r.Seed, r)
		}
		if r.Classification.Images == 0 || len(r.Classification.PerClass) != 3 || r.Classification.MAP <= 0 {
			t.Errorf("%s seed %d: classification %+v", r.Arm, r.Seed, r.Classification)
		}
		if r.Config.Method != r.Arm || r.Config.Seed != r.Seed {
			t.Errorf("%s seed %d: trained with method %s seed %d", r.Arm, r.Seed, r.Config.Method, r.Config.Seed)
		}
	}
	// Labels are not kept; models are.
	if _, err := os.Stat(filepath.Join(out, "v2", "seed1", "l2g", "labels")); !os.IsNotExist(err) {
		t.Errorf("labels kept: %v", err)
	}
	model := filepath.Join(out, "v2", "seed1", "l2g", "model.l2g")
	before, err := os.Stat(model)
	if err != nil {
		t.Fatal(err)
	}

	log.Reset()
	if _, err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log.String(), "done earlier"); n != 4 {
		t.Errorf("re-run: %d runs skipped, want 4:\n%s", n, log.String())
	}
	after, _ := os.Stat(model)
	if !after.ModTime().Equal(before.ModTime()) {
		t.Error("re-run trained again")
	}

	report := filepath.Join(t.TempDir(), "quality.md")
	if err := WriteReport(report, res, ReportOptions{Options: o, Command: "test", Plot: "quality-sweeps-%s.svg"}); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(report)
	for _, want := range []string{"| cam | 2 |", "| l2g | 2 |", "Difference to `cam`", "quality-sweeps-v2.svg", " ± "} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	svg, err := os.ReadFile(filepath.Join(filepath.Dir(report), "quality-sweeps-v2.svg"))
	if err != nil || strings.Count(string(svg), "<polyline") != 2 {
		t.Errorf("plot: %v, %d curves", err, strings.Count(string(svg), "<polyline"))
	}
}

func TestArmSelection(t *testing.T) {
	if _, err := selectArms([]string{"cam", "nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown arm: err = %v", err)
	}
	arms, err := selectArms([]string{"l2g", "cam"})
	if err != nil || len(arms) != 2 || arms[0].Name != "cam" {
		t.Errorf("arms %v, %v: want cam then l2g (the study's order)", arms, err)
	}
}

func TestAveragePrecision(t *testing.T) {
	tests := []struct {
		scores []float64
		pos    []bool
		want   float64
	}{
		{[]float64{3, 2, 1}, []bool{true, false, false}, 1},
		{[]float64{3, 2, 1}, []bool{false, false, true}, 1.0 / 3},
		{[]float64{3, 2, 1, 0}, []bool{true, false, true, false}, (1 + 2.0/3) / 2},
		{[]float64{1, 1}, []bool{true, false}, 0.5}, // ties rank negatives first
		{[]float64{1, 2}, []bool{false, false}, 0},
	}
	for _, tc := range tests {
		if got := AveragePrecision(tc.scores, tc.pos); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("AP(%v, %v) = %g, want %g", tc.scores, tc.pos, got, tc.want)
		}
	}
}

func TestStatOf(t *testing.T) {
	s := statOf([]float64{1, 2, math.NaN(), 3})
	if s.N != 3 || s.Mean != 2 || math.Abs(s.SD-1) > 1e-12 {
		t.Errorf("stat %+v, want mean 2, sd 1 over 3", s)
	}
	if s := statOf([]float64{0.5}); s.Mean != 0.5 || !math.IsNaN(s.SD) || s.pct() != "50.0" {
		t.Errorf("one value: %+v %q", s, s.pct())
	}
}
