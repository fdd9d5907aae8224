package study

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func tinyOptions(out string) Options {
	o := Defaults(out)
	o.Synth.Images, o.Synth.Size, o.Synth.Classes = 40, 64, 3
	o.Train.Epochs, o.Train.ImageSize, o.Train.ViewSize, o.Train.Views = 1, 64, 48, 4
	o.Seeds, o.SelectSeeds, o.Generators, o.Arms = []int64{1, 2}, []int64{1}, []string{"v2"}, []string{"cam", "l2g"}
	o.Commit = "commit-a"
	return o
}

// TestStudyRunsResumesAndReports runs a tiny study of three arms over two
// seeds, checks each result, re-runs it (nothing is trained again) and
// writes the report and plot. l2g-gcw05 and l2g-pcm spell out train's
// defaults (l2g-pcm sets train.pcm true, the default auto resolves to it),
// so they take l2g's result and are not trained again; the reporting seed
// runs only cam and the chosen arm.
func TestStudyRunsResumesAndReports(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: trains or runs whole jobs (make test-short)")
	}
	// The output folder does not exist yet, as `make study` starts.
	out := filepath.Join(t.TempDir(), "study-out")
	var log bytes.Buffer
	o := tinyOptions(out)
	o.Arms = append(o.Arms, "l2g-gcw05", "l2g-pcm")
	o.Log = &log
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	runs := map[[2]string]Result{}
	for _, r := range res {
		runs[[2]string{r.Arm, fmt.Sprint(r.Seed)}] = r
	}
	if len(res) != 6 || len(runs) != 6 {
		t.Fatalf("%d results, want 6 (four arms on the selection seed, cam and the chosen on the other)", len(res))
	}
	for _, twin := range []string{"l2g-gcw05", "l2g-pcm"} {
		same := runs[[2]string{twin, "1"}]
		if same.SameAs != "l2g" || same.Written != runs[[2]string{"l2g", "1"}].Written {
			t.Errorf("%s on seed 1: same as %q, mIoU %v (l2g's %v)", twin, same.SameAs, same.Written, runs[[2]string{"l2g", "1"}].Written)
		}
		if _, err := os.Stat(filepath.Join(out, "v2", "seed1", twin, "model.l2g")); !os.IsNotExist(err) {
			t.Errorf("%s trained though its configuration is l2g's: %v", twin, err)
		}
	}
	if _, ok := runs[[2]string{"cam", "2"}]; !ok {
		t.Error("the reporting seed has no cam run")
	}
	if !strings.Contains(log.String(), "the reporting seeds run cam and") {
		t.Errorf("no choice logged:\n%s", log.String())
	}
	for _, r := range res {
		if math.IsNaN(float64(r.Written)) || r.Written <= 0 || math.IsNaN(float64(r.Best)) || r.Best < r.Written-1e-9 ||
			math.IsNaN(float64(r.Saliency)) || math.IsNaN(float64(r.Fixed)) || len(r.Sweep) == 0 || r.TrainSeconds <= 0 {
			t.Errorf("%s seed %d: %+v", r.Arm, r.Seed, r)
		}
		if r.Classification.Images == 0 || len(r.Classification.PerClass) != 3 || r.Classification.MAP <= 0 {
			t.Errorf("%s seed %d: classification %+v", r.Arm, r.Seed, r.Classification)
		}
		if !strings.HasPrefix(r.Arm, r.Config.Method) || r.Config.Seed != r.Seed {
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
	if n := strings.Count(log.String(), "done earlier"); n != 6 {
		t.Errorf("re-run: %d runs skipped, want 6:\n%s", n, log.String())
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
	// Seed 1 chooses, seed 2 reports.
	for _, want := range []string{"| cam | 1 |", "| l2g | 1 |", "Difference to `cam`", "quality-sweeps-v2.svg", "Chosen: **l2g**",
		"On the selection seeds [1]", "of commit commit-a", "wall time", "were not run (`--arms`): `cam-time`",
		"Every arm trains the same epochs.", "- `l2g-gcw05`: "} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	// Arms not run are named once, not described as if they had been.
	if strings.Contains(string(md), "- `cam-time`:") || strings.Contains(string(md), "except `cam-time`") {
		t.Errorf("report describes cam-time, which did not run:\n%s", md)
	}
	svg, err := os.ReadFile(filepath.Join(filepath.Dir(report), "quality-sweeps-v2.svg"))
	if err != nil || strings.Count(string(svg), "<polyline") != 2 {
		t.Errorf("plot: %v, %d curves", err, strings.Count(string(svg), "<polyline"))
	}
	for _, r := range res {
		if r.Commit != "commit-a" || len(r.ConfigHash) != 16 || r.WallSeconds < r.TrainSeconds {
			t.Errorf("%s seed %d: commit %q, config hash %q, wall %.1f s (training %.1f s)", r.Arm, r.Seed, r.Commit, r.ConfigHash, r.WallSeconds, r.TrainSeconds)
		}
	}
	// Another commit's binary does not add to these results.
	o.Commit = "commit-b"
	if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), `commit "commit-a"`) {
		t.Errorf("a run of another commit on the same folder: err = %v", err)
	}
}

// TestChooseDefault checks the worst-case rule: the arm with the highest
// minimum over variants of the seed-mean paired difference to cam wins;
// arms within half a point of it are ranked by their mean.
func TestChooseDefault(t *testing.T) {
	// written mIoU per (variant, arm), seeds 1 and 2 alike.
	scores := map[string]map[string]float64{
		"a": {"cam": 0.50, "l2g": 0.70, "l2g-gcw1": 0.55, "l2g-gcw05": 0.56, "l2g-kl": 0.60},
		"b": {"cam": 0.40, "l2g": 0.35, "l2g-gcw1": 0.48, "l2g-gcw05": 0.452, "l2g-kl": 0.60},
		"c": {"cam": 0.30, "l2g": 0.50, "l2g-gcw1": 0.36, "l2g-gcw05": 0.40},
	}
	var results []Result
	for gen, arms := range scores {
		for arm, w := range arms {
			for seed := int64(1); seed <= 2; seed++ {
				results = append(results, Result{Arm: arm, Generator: gen, Seed: seed, Written: Score(w)})
			}
		}
	}
	ranked := ChooseDefault(Summarize(results))
	var names []string
	for _, c := range ranked {
		names = append(names, c.Arm)
	}
	// l2g-kl was not run on c: no candidate. gcw1 (worst +5.0 on a) and
	// gcw05 (worst +5.2 on b) tie within 0.5; gcw05's mean is higher.
	// l2g's worst is -5.0 on b.
	if want := []string{"l2g-gcw05", "l2g-gcw1", "l2g"}; !slices.Equal(names, want) {
		t.Fatalf("ranking %v, want %v", names, want)
	}
	if c := ranked[0]; math.Abs(c.Worst-0.052) > 1e-9 || c.WorstOn != "b" || math.Abs(c.Mean-(0.06+0.052+0.10)/3) > 1e-9 {
		t.Errorf("chosen %+v", c)
	}
}

func TestCheckComparable(t *testing.T) {
	r := func(arm, gen, commit, hash string) Result {
		return Result{Arm: arm, Generator: gen, Seed: 1, Commit: commit, ConfigHash: hash}
	}
	tests := []struct {
		name    string
		results []Result
		wantErr string
	}{
		{"one commit", []Result{r("cam", "v1", "c1", "h1"), r("l2g", "v1", "c1", "h2"), r("cam", "v2", "c1", "h3")}, ""},
		{"two commits", []Result{r("cam", "v1", "c1", "h1"), r("l2g", "v1", "c2", "h2")}, "2 commits"},
		{"an arm with two configurations", []Result{r("cam", "v1", "c1", "h1"), r("cam", "v1", "c1", "h9")}, "two configurations"},
	}
	for _, tc := range tests {
		err := CheckComparable(tc.results)
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.wantErr)
		}
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
