package label

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/artifact"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
	"github.com/l2gflow/l2gflow/model/maps"
	"github.com/l2gflow/l2gflow/model/trainer/trainertest"
	"github.com/l2gflow/l2gflow/pipelines/pipetest"
	"github.com/l2gflow/l2gflow/transforms"
)

func TestMain(m *testing.M) { pipetest.Main(m) }

// dataAndModel writes a small synthetic dataset under root and trains a
// model on it briefly (checkpointing every ckpt steps, 0 never).
func dataAndModel(t *testing.T, st *storage.Store, root, modelURI, method string, images, steps, ckpt int, seed int64) *dataset.Dataset {
	t.Helper()
	return trainertest.MustWrite(t, st, root, modelURI, trainertest.Options{Images: images, Size: 64, Seed: seed,
		ValFraction: 0.1, NoSaliencyFraction: 0.2, Method: method, ImageSize: 64, ViewSize: 48, Views: 4,
		Steps: steps, Optimizer: "adam", LR: 0.002, BatchSize: 8, CheckpointEvery: ckpt})
}

// fixture makes a small local dataset and a briefly trained model.
func fixture(t *testing.T, images int) (root, modelPath string, ds *dataset.Dataset) {
	t.Helper()
	st := storage.New()
	t.Cleanup(func() { st.Close() })
	root, modelPath = t.TempDir(), filepath.Join(t.TempDir(), "m.l2g")
	return root, modelPath, dataAndModel(t, st, root, modelPath, "cam", images, 20, 0, 11)
}

func options(root, modelPath, out string) Options {
	l := config.Default().Label
	l.Model, l.Out, l.BatchSize = modelPath, out, 4
	d := config.Default().Dataset
	d.Root = root
	return Options{Dataset: d, Label: l}
}

// runRecord runs a labeling run and returns the run record the job wrote.
func runRecord(ctx context.Context, o Options) (*RunRecord, error) {
	res, err := Run(ctx, o)
	if res == nil {
		return nil, err
	}
	return res.Record, err
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readLabels(t *testing.T, out string) map[string][]byte {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(out, "*.png"))
	m := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m[strings.TrimSuffix(filepath.Base(f), ".png")] = b
	}
	return m
}

func TestLabelPipelineEndToEnd(t *testing.T) {
	root, modelPath, ds := fixture(t, 28)
	ctx := context.Background()
	// One corrupt image and one missing image.
	corrupt, missing := ds.Records[1], ds.Records[2]
	if err := os.WriteFile(corrupt.Image, []byte("not a jpeg"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(missing.Image); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	rec, err := runRecord(ctx, options(root, modelPath, out))
	if err != nil {
		t.Fatal(err)
	}
	n := len(ds.Records)
	if rec.Counts.LabelsWritten != int64(n-2) || rec.Counts.DeadLetters != 2 || rec.Counts.Failed[transforms.StageLoad] != 2 {
		t.Errorf("counts %+v: want %d labels and 2 load failures", rec.Counts, n-2)
	}
	if kernels := model.CurrentPlatform(nil).Kernels; rec.Counts.KernelSets[kernels] != rec.Counts.LabelsWritten ||
		rec.Platform.Kernels != kernels || rec.Platform.Arch == "" {
		t.Errorf("kernel sets %v, platform %+v: want every label computed with %s", rec.Counts.KernelSets, rec.Platform, kernels)
	}
	if rec.Counts.ViewsInferred != int64(8*(n-2)) {
		t.Errorf("views inferred %d, want %d", rec.Counts.ViewsInferred, 8*(n-2))
	}
	labels := readLabels(t, out)
	for _, r := range ds.Records {
		data, ok := labels[r.ID]
		if r.ID == corrupt.ID || r.ID == missing.ID {
			if ok {
				t.Errorf("%s: a label for a bad image", r.ID)
			}
			continue
		}
		if !ok {
			t.Fatalf("%s: no label", r.ID)
		}
		lab, err := imagefile.DecodeLabel(data, 0)
		if err != nil {
			t.Fatal(err)
		}
		img, err := imagefile.DecodeRGB(mustRead(t, r.Image), 0)
		if err != nil {
			t.Fatal(err)
		}
		if lab.W != img.W || lab.H != img.H {
			t.Errorf("%s: label %dx%d, image %dx%d", r.ID, lab.W, lab.H, img.W, img.H)
		}
		allowed := map[uint8]bool{0: true, imagefile.Ignore: true}
		for _, tag := range r.Tags {
			allowed[uint8(tag+1)] = true
		}
		for _, v := range lab.Pix {
			if !allowed[v] {
				t.Fatalf("%s: label value %d not in {0, tags+1, 255} (tags %v)", r.ID, v, r.Tags)
			}
		}
	}
	errs, err := os.ReadFile(filepath.Join(out, transforms.ErrorsFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(errs)), "\n")
	if len(lines) != 2 {
		t.Fatalf("_errors.jsonl has %d lines, want 2:\n%s", len(lines), errs)
	}
	for _, l := range lines {
		var d transforms.DeadLetter
		if err := json.Unmarshal([]byte(l), &d); err != nil || d.Stage != transforms.StageLoad || d.Reason == "" ||
			(d.ID != corrupt.ID && d.ID != missing.ID) {
			t.Errorf("dead letter %q", l)
		}
	}
	var runRec RunRecord
	raw, _ := os.ReadFile(filepath.Join(out, transforms.RunFile))
	var cfg config.Label
	if err := json.Unmarshal(raw, &runRec); err != nil || runRec.Model.SHA256 == "" || runRec.Runner != "prism" ||
		runRec.Counts.Listed != int64(n) || json.Unmarshal(runRec.Config, &cfg) != nil || cfg.BgThreshold != 0.25 {
		t.Errorf("_run.json: %v %+v", err, runRec)
	}

	// The in-process path gives the same bytes.
	outIP := t.TempDir()
	o := options(root, modelPath, outIP)
	o.InProcess = true
	if _, err := runRecord(ctx, o); err != nil {
		t.Fatal(err)
	}
	ip := readLabels(t, outIP)
	if len(ip) != len(labels) {
		t.Fatalf("in-process wrote %d labels, pipeline %d", len(ip), len(labels))
	}
	for id, b := range labels {
		if !bytes.Equal(b, ip[id]) {
			t.Errorf("%s: in-process label differs from the pipeline's", id)
		}
	}

	// A second run writes nothing and reports the labels skipped.
	rec2, err := runRecord(ctx, options(root, modelPath, out))
	if err != nil {
		t.Fatal(err)
	}
	if rec2.Counts.LabelsWritten != 0 || rec2.Counts.SkippedExisting != int64(n-2) || rec2.Counts.Submitted != 2 {
		t.Errorf("re-run counts %+v: want 0 written, %d skipped, 2 retried", rec2.Counts, n-2)
	}
	// --overwrite rewrites them all.
	o = options(root, modelPath, out)
	o.Label.Overwrite = true
	before, _ := os.Stat(filepath.Join(out, ds.Records[0].ID+".png"))
	rec3, err := runRecord(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(filepath.Join(out, ds.Records[0].ID+".png"))
	if rec3.Counts.LabelsWritten != int64(n-2) || rec3.Counts.SkippedExisting != 0 {
		t.Errorf("overwrite: %d written, %d skipped; want %d and 0", rec3.Counts.LabelsWritten, rec3.Counts.SkippedExisting, n-2)
	}
	if os.SameFile(before, after) {
		t.Error("overwrite left the old file in place (labels are replaced by rename)")
	}
}

// rewriteModel writes the model artifact at src to dst with its manifest
// changed by edit (same weights).
func rewriteModel(t *testing.T, src, dst string, edit func(*artifact.Manifest)) {
	t.Helper()
	m, err := model.LoadModel(mustRead(t, src))
	if err != nil {
		t.Fatal(err)
	}
	edit(m.Manifest)
	var ts []artifact.Tensor
	for i, s := range m.Params.Specs {
		ts = append(ts, artifact.Tensor{Name: s.Name, Shape: s.Shape, Data: m.Params.Values[i]})
	}
	raw, err := artifact.Marshal(m.Manifest, ts)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestThresholdSource checks where the threshold rule's background
// threshold comes from: the model's calibrated one by default, the
// configuration's with bg_threshold_from fixed or when the model has none;
// the run record says which, and the labels follow it.
func TestThresholdSource(t *testing.T) {
	root, modelPath, _ := fixture(t, 12)
	ctx := context.Background()
	calibrated := filepath.Join(t.TempDir(), "calibrated.l2g")
	rewriteModel(t, modelPath, calibrated, func(m *artifact.Manifest) {
		m.Threshold = &artifact.Threshold{Value: 0.6, Images: 7, Candidates: []float64{0.25, 0.6}, IoU: []float64{0.5, 0.7}}
	})
	none := filepath.Join(t.TempDir(), "none.l2g")
	rewriteModel(t, modelPath, none, func(m *artifact.Manifest) { m.Threshold = nil })
	low := filepath.Join(t.TempDir(), "low.l2g")
	rewriteModel(t, modelPath, low, func(m *artifact.Manifest) {
		m.Threshold = &artifact.Threshold{Value: 0.03, Images: 7, Candidates: []float64{0.03, 0.25}, IoU: []float64{0.7, 0.5}}
	})
	tests := []struct {
		name, model, from string
		want              transforms.ThresholdUsed
		reason            string // in the record's reason
	}{
		{"model's", calibrated, "model", transforms.ThresholdUsed{Value: 0.6, Source: "model", Images: 7, CAMThreshold: 0.1}, "calibrated by the model on 7"},
		{"model's, below the saliency rule's floor", low, "model", transforms.ThresholdUsed{Value: 0.03, Source: "model", Images: 7, CAMThreshold: 0.03}, "saliency maps"},
		{"fixed by the configuration", calibrated, "fixed", transforms.ThresholdUsed{Value: 0.25, Source: "fixed", CAMThreshold: 0.1}, "bg_threshold_from is fixed"},
		{"model without one", none, "model", transforms.ThresholdUsed{Value: 0.25, Source: "fixed", CAMThreshold: 0.1}, "trained without saliency maps"},
	}
	labels := map[string]map[string][]byte{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := options(root, tc.model, t.TempDir())
			o.Label.BgThreshold, o.Label.BgThresholdFrom = 0.25, tc.from
			rec, err := runRecord(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(rec.Threshold.Reason, tc.reason) {
				t.Errorf("reason %q does not say %q", rec.Threshold.Reason, tc.reason)
			}
			got := rec.Threshold
			got.Reason = ""
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("threshold %+v, want %+v", got, tc.want)
			}
			var onDisk RunRecord
			if err := json.Unmarshal(mustRead(t, filepath.Join(o.Label.Out, transforms.RunFile)), &onDisk); err != nil || !reflect.DeepEqual(onDisk.Threshold, rec.Threshold) {
				t.Errorf("_run.json threshold %+v (%v), want %+v", onDisk.Threshold, err, rec.Threshold)
			}
			labels[tc.name] = readLabels(t, o.Label.Out)
		})
	}
	a, b, c := labels["model's"], labels["fixed by the configuration"], labels["model without one"]
	if len(a) == 0 || fmt.Sprint(b) != fmt.Sprint(c) {
		t.Fatalf("labels at 0.25 differ between the two runs that used it")
	}
	differ := 0
	for id := range a {
		if !bytes.Equal(a[id], b[id]) {
			differ++
		}
	}
	if differ == 0 {
		t.Error("labels at the model's threshold 0.6 equal those at 0.25")
	}
}

func TestDirectRunnerAndSaliencyRule(t *testing.T) {
	root, modelPath, ds := fixture(t, 16)
	ctx := context.Background()
	outPrism, outDirect := t.TempDir(), t.TempDir()
	o := options(root, modelPath, outPrism)
	o.Label.Background = "saliency"
	// A class score threshold high enough that a briefly trained model
	// leaves some salient pixels to no class (marked 255 below).
	o.Label.CAMThreshold, o.Label.BgThresholdFrom = 0.5, "fixed"
	recP, err := runRecord(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	o.Label.Out, o.Runner = outDirect, "direct"
	recD, err := runRecord(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if recD.Runner != "direct" || recD.Counts.LabelsWritten != int64(len(ds.Records)) {
		t.Errorf("direct runner counts %+v", recD.Counts)
	}
	p, d := readLabels(t, outPrism), readLabels(t, outDirect)
	for id, b := range p {
		if !bytes.Equal(b, d[id]) {
			t.Errorf("%s: direct and prism labels differ", id)
		}
	}
	noSal := 0
	for _, r := range ds.Records {
		if r.Saliency == "" {
			noSal++
		}
	}
	if noSal == 0 || recP.Counts.SaliencyMissing != int64(noSal) || recP.Counts.Fallback != int64(noSal) {
		t.Errorf("saliency missing %d, fallbacks %d; want %d each", recP.Counts.SaliencyMissing, recP.Counts.Fallback, noSal)
	}
	// Under the saliency rule, some salient pixels end up ignored (255).
	ignored := 0
	for _, b := range p {
		lab, _ := imagefile.DecodeLabel(b, 0)
		for _, v := range lab.Pix {
			if v == imagefile.Ignore {
				ignored++
			}
		}
	}
	if ignored == 0 {
		t.Error("the saliency rule marked no pixel 255")
	}
}

func TestIncrementalRuns(t *testing.T) {
	root, modelPath, ds := fixture(t, 24)
	ctx := context.Background()
	list := filepath.Join(root, "train_cls.txt")
	full, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSpace(string(full)), "\n")
	n := len(lines)
	// Start with all but the last 5 images listed.
	if err := os.WriteFile(list, []byte(strings.Join(lines[:n-5], "")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	o := options(root, modelPath, out)
	o.Label.Incremental = true
	rec, err := runRecord(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Counts.LabelsWritten != int64(n-5) {
		t.Fatalf("first run wrote %d, want %d", rec.Counts.LabelsWritten, n-5)
	}
	// Unchanged dataset: no inference, nothing written.
	rec, err = runRecord(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Counts.Submitted != 0 || rec.Counts.ViewsInferred != 0 || rec.Counts.LabelsWritten != 0 || rec.Counts.SkippedExisting != int64(n-5) {
		t.Errorf("unchanged re-run counts %+v: want nothing done", rec.Counts)
	}
	// Five more images listed: exactly those are processed.
	if err := os.WriteFile(list, full, 0o644); err != nil {
		t.Fatal(err)
	}
	rec, err = runRecord(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Counts.Submitted != 5 || rec.Counts.LabelsWritten != 5 || rec.Counts.ViewsInferred != 5*8 {
		t.Errorf("after adding 5 images: %+v", rec.Counts)
	}
	// A different model artifact relabels everything.
	other := filepath.Join(t.TempDir(), "other.l2g")
	rewriteModel(t, modelPath, other, func(m *artifact.Manifest) { m.Producer = "another build" }) // same weights, another artifact
	o.Label.Model = other
	rec, err = runRecord(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Counts.LabelsWritten != int64(len(ds.Records)) {
		t.Errorf("new model relabelled %d of %d", rec.Counts.LabelsWritten, len(ds.Records))
	}
	runs, _ := filepath.Glob(filepath.Join(out, transforms.RunsDir, "*.json"))
	if len(runs) != 4 {
		t.Errorf("%d run records in %s, want 4", len(runs), transforms.RunsDir)
	}
}

func TestMaxFailures(t *testing.T) {
	root, modelPath, ds := fixture(t, 16)
	os.WriteFile(ds.Records[0].Image, []byte("junk"), 0o644)
	os.WriteFile(ds.Records[1].Image, []byte("junk"), 0o644)
	for _, tc := range []struct {
		limit string
		fail  bool
	}{{"1", true}, {"2", false}, {"0.1", true}, {"20%", false}, {"", false}} {
		o := options(root, modelPath, t.TempDir())
		o.Label.MaxFailures = tc.limit
		rec, err := runRecord(context.Background(), o)
		if tc.fail != errors.Is(err, ErrTooManyFailures) {
			t.Errorf("max failures %q: err = %v", tc.limit, err)
		}
		if rec == nil || rec.Counts.DeadLetters != 2 {
			t.Errorf("max failures %q: run record %+v", tc.limit, rec)
		}
	}
	o := options(root, modelPath, t.TempDir())
	o.Label.MaxFailures = "lots"
	if _, err := runRecord(context.Background(), o); err == nil {
		t.Error("max failures \"lots\": want an error")
	}
}

// TestVariedSizes labels a set whose images nearly all differ in size
// (portrait and landscape, aspect 1:1 to 1:2, two stored sideways with an
// EXIF orientation) on prism and in process: every image gets a label of
// its displayed size, no dead letter, and both paths write the same bytes.
func TestVariedSizes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: trains or runs whole jobs (make test-short)")
	}
	root, modelPath, ds := fixture(t, 120)
	// Stretch some images to exactly 1:2 and 2:1, and store two sideways.
	for i, r := range ds.Records[:10] {
		img, err := imagefile.DecodeRGB(mustRead(t, r.Image), 0)
		if err != nil {
			t.Fatal(err)
		}
		var data []byte
		switch {
		case i < 8:
			h := 40 + 6*i
			w := 2 * h
			if i%2 == 1 {
				h, w = w, h
			}
			m := maps.New(img.H, img.W, 3)
			for k, v := range img.Pix {
				m.Pix[k] = float32(v)
			}
			m = maps.Resize(m, h, w)
			out := imagefile.NewRGB(w, h)
			for k, v := range m.Pix {
				out.Pix[k] = uint8(v)
			}
			data, err = imagefile.EncodeJPEG(out, 90)
		default:
			var enc []byte
			enc, err = imagefile.EncodeJPEG(img, 90)
			data = imagefile.SetJPEGOrientation(enc, 6)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(r.Image, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][2]int{}
	sizes := map[[2]int]bool{}
	for _, r := range ds.Records {
		img, err := imagefile.DecodeRGB(mustRead(t, r.Image), 0)
		if err != nil {
			t.Fatal(err)
		}
		want[r.ID] = [2]int{img.W, img.H}
		sizes[[2]int{img.W, img.H}] = true
	}
	if len(ds.Records) < 100 || len(sizes) < 60 {
		t.Fatalf("%d images of %d sizes: want at least 100 of 60", len(ds.Records), len(sizes))
	}
	ctx := context.Background()
	outs := map[string]string{"prism": t.TempDir(), "in-process": t.TempDir()}
	for mode, out := range outs {
		o := options(root, modelPath, out)
		o.InProcess = mode == "in-process"
		rec, err := runRecord(ctx, o)
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if rec.Counts.DeadLetters != 0 || rec.Counts.LabelsWritten != int64(len(ds.Records)) {
			t.Fatalf("%s: %d labels, %d dead letters %+v", mode, rec.Counts.LabelsWritten, rec.Counts.DeadLetters, rec.DeadLetters)
		}
		e := rec.Counts.Inference
		if e.Views != int64(8*len(ds.Records)) || e.PaddingOverhead() < 1 || e.PaddingOverhead() > 1.6 || rec.PaddingOverhead != e.PaddingOverhead() ||
			rec.Buckets.PerOctave != 8 {
			t.Errorf("%s: inference %+v, buckets %+v", mode, e, rec.Buckets)
		} else {
			t.Logf("%s: %d views in %d batches, padding x%.3f", mode, e.Views, e.Batches, e.PaddingOverhead())
		}
		for id, data := range readLabels(t, out) {
			lab, err := imagefile.DecodeLabel(data, 0)
			if err != nil {
				t.Fatal(err)
			}
			if w := want[id]; lab.W != w[0] || lab.H != w[1] {
				t.Errorf("%s: %s label %dx%d, image %dx%d", mode, id, lab.W, lab.H, w[0], w[1])
			}
		}
	}
	a, b := readLabels(t, outs["prism"]), readLabels(t, outs["in-process"])
	if len(a) != len(ds.Records) || len(b) != len(a) {
		t.Fatalf("%d and %d labels for %d images", len(a), len(b), len(ds.Records))
	}
	for id := range a {
		if !bytes.Equal(a[id], b[id]) {
			t.Errorf("%s: prism and in-process labels differ", id)
		}
	}
}

func TestRootCause(t *testing.T) {
	err := errors.New("job job-001 failed:\nbundle inst010 stage-010 failed:process bundle ...\n24: ParDo[transforms.loadFn] Out:[21 22]\n" +
		"\tcaused by:\nsource failed processing data\n\tcaused by:\nDoFn[UID:24, PID:e16, Name: github.com/l2gflow/l2gflow/transforms.loadFn] failed:\nimage s: read x: 503")
	if got := RootCause(err); got != "stage loadFn: image s: read x: 503" {
		t.Errorf("RootCause = %q", got)
	}
	if got := RootCause(errors.New("plain")); got != "plain" {
		t.Errorf("RootCause of a plain error = %q", got)
	}
}

// TestModelThatFailsWarns trains a model for one step (maps that find no
// object): training warns and records it in the model, and labeling with
// the model repeats the warning and records it in the run record.
func TestModelThatFailsWarns(t *testing.T) {
	st := storage.New()
	defer st.Close()
	root, modelPath := t.TempDir(), filepath.Join(t.TempDir(), "m.l2g")
	dataAndModel(t, st, root, modelPath, "cam", 24, 1, 0, 21)
	m, err := model.LoadModel(mustRead(t, modelPath))
	if err != nil {
		t.Fatal(err)
	}
	if m.Manifest.Threshold == nil || len(m.Manifest.Threshold.Warnings) == 0 {
		t.Fatalf("a one-step model's calibration has no warning: %+v", m.Manifest.Threshold)
	}
	var log strings.Builder
	o := options(root, modelPath, t.TempDir())
	o.Log = &log
	rec, err := runRecord(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "label: warning: the model's calibration says: ") || len(rec.Threshold.Warnings) == 0 {
		t.Errorf("labeling with a failing model: warnings %q, log:\n%s", rec.Threshold.Warnings, log.String())
	}
}
