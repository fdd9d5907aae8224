package eval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/synth"
	"github.com/l2gflow/l2gflow/transforms"
)

// ownPhotos writes a dataset without ground truth (as one's own photos
// are) and labels for it: the first image's label all background, the
// second's all class 1, the others the generator's ground truth. It
// returns the dataset and the labels' pixel counts by value (4 classes
// with background, then 255).
func ownPhotos(t *testing.T, st *storage.Store, root, out string) (*dataset.Dataset, []int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := synth.Write(ctx, st, root, synth.Options{Images: 24, Size: 48, Classes: 3, Seed: 9, NoSaliencyFraction: 0.3}); err != nil {
		t.Fatal(err)
	}
	ds, err := dataset.Load(ctx, st, root, "train")
	if err != nil {
		t.Fatal(err)
	}
	hist := make([]int64, 5)
	for i, rec := range ds.Records {
		raw, err := os.ReadFile(rec.GT)
		if err != nil {
			t.Fatal(err)
		}
		lab, _ := imagefile.DecodeLabel(raw, 0)
		for p := range lab.Pix {
			switch i {
			case 0:
				lab.Pix[p] = 0
			case 1:
				lab.Pix[p] = 1
			}
			if v := lab.Pix[p]; v == imagefile.Ignore {
				hist[4]++
			} else {
				hist[v]++
			}
		}
		png, _ := imagefile.EncodeLabel(lab)
		if err := st.WriteFile(ctx, transforms.LabelURI(out, rec.ID), png); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(filepath.Join(root, dataset.GTDir)); err != nil {
		t.Fatal(err)
	}
	return ds, hist
}

// writeRunRecord puts the record a label run would leave beside the
// labels: written at a calibrated 0.30 while the configuration says 0.25,
// with one dead letter.
func writeRunRecord(t *testing.T, st *storage.Store, out string) {
	t.Helper()
	lc := config.Default().Label
	lc.Background, lc.BgThreshold = "threshold", 0.25
	cfg, _ := json.Marshal(lc)
	rec := transforms.RunRecord{RunID: "r1", Runner: "prism", Config: cfg,
		Threshold: transforms.ThresholdUsed{Value: 0.30, Source: "model", Images: 200, CAMThreshold: 0.1,
			Reason: "calibrated by the model on 200 training images' saliency maps"},
		Counts:      transforms.Counts{Listed: 25, LabelsWritten: 24, DeadLetters: 1},
		DeadLetters: []transforms.DeadLetter{{ID: "broken_photo", Stage: transforms.StageLoad, Reason: "JPEGImages/broken_photo.jpg: empty file"}},
		ErrorsFile:  storage.Join(out, "_errors.jsonl")}
	raw, _ := json.Marshal(rec)
	if err := st.WriteFile(context.Background(), storage.Join(out, transforms.RunFile), raw); err != nil {
		t.Fatal(err)
	}
}

// TestEvalWithoutGroundTruth evaluates labels of a dataset with no ground
// truth: metrics.json is valid JSON without NaN, describes the labels
// (prism and in-process alike), and the report shows them with how they
// were written.
func TestEvalWithoutGroundTruth(t *testing.T) {
	st := storage.New()
	defer st.Close()
	ctx := context.Background()
	root, out := t.TempDir(), t.TempDir()
	ds, hist := ownPhotos(t, st, root, out)
	writeRunRecord(t, st, out)
	d := config.Default().Dataset
	d.Root = root
	var got [2]*Metrics
	for i, inProcess := range []bool{false, true} {
		e := config.Default().Eval
		e.Labels, e.Report = out, t.TempDir()
		m, err := Run(ctx, Options{Dataset: d, Eval: e, InProcess: inProcess})
		if err != nil {
			t.Fatal(err)
		}
		got[i] = m
		raw, err := os.ReadFile(filepath.Join(e.Report, "metrics.json"))
		if err != nil || !json.Valid(raw) || bytes.Contains(raw, []byte("NaN")) {
			t.Fatalf("metrics.json is not valid JSON without NaN (%v):\n%.300s", err, raw)
		}
		var back Metrics
		if err := json.Unmarshal(raw, &back); err != nil || !bytes.Contains(raw, []byte(`"miou": null`)) || back.GroundTruth {
			t.Errorf("metrics.json: %v, ground_truth %v\n%.300s", err, back.GroundTruth, raw)
		}
	}
	m := got[0]
	if !reflect.DeepEqual(m.Description, got[1].Description) {
		t.Errorf("prism and in-process describe the labels differently:\n%+v\n%+v", m.Description, got[1].Description)
	}
	desc := m.Description
	if m.GroundTruth || desc.Images != int64(len(ds.Records)) || m.MissingGTCount != int64(len(ds.Records)) {
		t.Errorf("ground truth %v, %d described, %d without ground truth; want none, %d, %d", m.GroundTruth, desc.Images, m.MissingGTCount, len(ds.Records), len(ds.Records))
	}
	var total int64
	for _, n := range hist {
		total += n
	}
	for i, c := range desc.Classes {
		if c.Pixels != hist[i] {
			t.Errorf("class %s: %d pixels, want %d", c.Name, c.Pixels, hist[i])
		}
	}
	if desc.Pixels != total || desc.Classes[0].Name != "background" || len(desc.Coverage) != CoverageBins {
		t.Errorf("description %+v", desc)
	}
	if len(ds.Records[0].Tags) > 0 && !slicesContain(desc.NoForeground.IDs, ds.Records[0].ID) {
		t.Errorf("the all-background label is not flagged: %+v", desc.NoForeground)
	}
	if !slicesContain(desc.MostlyForeground.IDs, ds.Records[1].ID) {
		t.Errorf("the all-foreground label is not flagged: %+v", desc.MostlyForeground)
	}
	var described int64
	for _, b := range desc.Coverage {
		described += b.Images
	}
	if described != desc.Images {
		t.Errorf("coverage counts %d images of %d", described, desc.Images)
	}

	report := t.TempDir()
	if err := WriteReport(ctx, st, report, m, 4); err != nil {
		t.Fatal(err)
	}
	html := readReport(t, report)
	for _, want := range []string{"this report describes the labels", "What the labels hold", "Images by foreground share",
		"background score 0.30 (calibrated by the model on 200 training images", "broken_photo", "empty file",
		"labelled all background", "almost all foreground", "Label colours", "ignore (255)", "data:image/jpeg;base64,"} {
		if !strings.Contains(html, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, unwanted := range []string{"Per-class IoU", "Background threshold sweep", "0.25", "<th>ground truth</th>"} {
		if strings.Contains(html, unwanted) {
			t.Errorf("report without ground truth shows %q", unwanted)
		}
	}
	openInBrowser(t, report, "report-no-ground-truth.png")
}

func slicesContain(ids []string, id string) bool {
	for _, v := range ids {
		if v == id {
			return true
		}
	}
	return false
}

// TestEvalNoLabels: a labels prefix that holds no label of the list is an
// error (the wrong folder), not a report of nothing.
func TestEvalNoLabels(t *testing.T) {
	st := storage.New()
	defer st.Close()
	root := t.TempDir()
	if _, err := synth.Write(context.Background(), st, root, synth.Options{Images: 6, Size: 40, Classes: 2, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	d := config.Default().Dataset
	d.Root = root
	for _, inProcess := range []bool{true, false} {
		e := config.Default().Eval
		e.Labels, e.Report = filepath.Join(t.TempDir(), "typo"), t.TempDir()
		_, err := Run(context.Background(), Options{Dataset: d, Eval: e, InProcess: inProcess})
		if !errors.Is(err, ErrNoLabels) || !strings.Contains(err.Error(), "typo") {
			t.Errorf("in-process %v: %v, want ErrNoLabels naming the folder", inProcess, err)
		}
		if _, err := os.Stat(filepath.Join(e.Report, "metrics.json")); err == nil {
			t.Error("metrics.json written for a folder without labels")
		}
	}
}

// TestReportThresholdAsWritten: the report states the threshold the labels
// were written with and its source, not the configured default, and marks
// it on the sweep.
func TestReportThresholdAsWritten(t *testing.T) {
	st := storage.New()
	defer st.Close()
	ctx := context.Background()
	root, out, report := t.TempDir(), t.TempDir(), t.TempDir()
	if _, err := synth.Write(ctx, st, root, synth.Options{Images: 12, Size: 48, Classes: 3, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	ds, _ := dataset.Load(ctx, st, root, "train")
	writeLabels(t, st, ds, out)
	writeRunRecord(t, st, out)
	e := config.Default().Eval
	e.Labels, e.Report = out, report
	d := config.Default().Dataset
	d.Root = root
	m, err := Run(ctx, Options{Dataset: d, Eval: e, InProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteReport(ctx, st, report, m, 2); err != nil {
		t.Fatal(err)
	}
	html := readReport(t, report)
	for _, want := range []string{"background score 0.30 (calibrated by the model on 200", "labels written at 0.30"} {
		if !strings.Contains(html, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(html, "threshold 0.25") {
		t.Error("report shows the configured 0.25, not the threshold the labels were written with")
	}
}

func TestTickStep(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   float64
	}{
		{0.05, 0.5, 0.05},  // the default sweep: 9 steps
		{0.01, 0.50, 0.05}, // the study's 50 thresholds: labelled every 0.05
		{0.1, 0.15, 0.01},
		{0, 1, 0.1},
		{0, 4, 0.5},
	} {
		if got := tickStep(tc.lo, tc.hi, 10); got != tc.want {
			t.Errorf("tickStep(%g, %g) = %g, want %g", tc.lo, tc.hi, got, tc.want)
		}
	}
}
