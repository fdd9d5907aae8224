package transforms

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
	"github.com/l2gflow/l2gflow/model/trainer/trainertest"
)

func recordID(r dataset.Record, emit func(string)) { emit(r.ID) }
func deadID(d DeadLetter, emit func(string))       { emit(d.ID + "@" + d.Stage) }
func outcomeID(o Outcome, emit func(string))       { emit(o.Kind + ":" + o.ID) }
func writtenID(w Written, emit func(string))       { emit(w.ID) }
func taskSal(t Task, emit func(string))            { emit(t.Rec.ID + ":" + t.SalStatus) }
func inferViews(o Outcome, emit func(int64))       { emit(o.Infer.Views) }
func sumInt64(a, b int64) int64                    { return a + b }

func init() {
	register.Function2x0(recordID)
	register.Function2x0(deadID)
	register.Function2x0(outcomeID)
	register.Function2x0(writtenID)
	register.Function2x0(taskSal)
	register.Function2x0(inferViews)
	register.Function2x1(sumInt64)
	register.Emitter1[string]()
	register.Emitter1[int64]()
}

// TestReadAndSelect reads a tag list in a pipeline and selects the
// records to label in the three modes, against an output holding labels
// of a and b, and an index (of this model) listing only a.
func TestReadAndSelect(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(dir, "train_cls.txt"), []byte("a 0\nb 1 2\nbad 9\n\nc 0\n"), 0o644)
	os.WriteFile(filepath.Join(out, "a.png"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(out, "b.png"), []byte("x"), 0o644)
	idx := RunIndexDir(out, "sha", "run1")
	os.MkdirAll(idx, 0o755)
	os.WriteFile(filepath.Join(idx, "p1.txt"), []byte("a\n"), 0o644)
	src := dataset.Source{List: filepath.Join(dir, "train_cls.txt"), Root: dir, Classes: []string{"x", "y", "z"}}
	for _, tc := range []struct {
		mode             Existing
		pending, skipped []any
	}{
		{Overwrite, []any{"a", "b", "c"}, nil},
		{SkipExisting, []any{"c"}, []any{"skipped:a", "skipped:b"}},
		{Incremental, []any{"b", "c"}, []any{"skipped:a"}},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			p, s := beam.NewPipelineWithRoot()
			records, dead := ReadRecords(s, src)
			passert.Equals(s, beam.ParDo(s, deadID, dead), "bad@list")
			pending, skipped := SelectPending(s, records, out, "sha", tc.mode)
			passert.Equals(s, beam.ParDo(s, recordID, pending), tc.pending...)
			passert.Equals(s, beam.ParDo(s, outcomeID, skipped), tc.skipped...)
			ptest.RunAndValidate(t, p)
		})
	}
}

// TestLabelImagesComposite runs the labeling composite on a small set with
// one corrupt image and checks each output: a label for every other
// image, the corrupt one's dead letter at stage load, and inference
// statistics covering every view.
func TestLabelImagesComposite(t *testing.T) {
	dir := t.TempDir()
	root, modelURI, out := filepath.Join(dir, "data"), filepath.Join(dir, "m.l2g"), filepath.Join(dir, "out")
	st := storage.New()
	defer st.Close()
	ds := trainertest.MustWrite(t, st, root, modelURI, trainertest.Options{Images: 7, Size: 48, Seed: 8, NoSaliencyFraction: 0.4})
	os.WriteFile(ds.Records[0].Image, []byte("junk"), 0o644)
	opts := LabelOptions{Out: out, Model: modelURI, Backend: model.DefaultBackend,
		Views: model.ViewOptions{Scales: []float64{1, 2}, Flip: true},
		Fuse:  FuseOptions{Classes: 3, Background: BackgroundSaliency, SaliencyThreshold: 0.2, CAMThreshold: 0.1, SaliencyFallback: FallbackThreshold}}

	p, s := beam.NewPipelineWithRoot()
	records := beam.CreateList(s, ds.Records)
	var wantLabels, wantSal []any
	for _, r := range ds.Records[1:] {
		wantLabels = append(wantLabels, r.ID)
		status := SalOK
		if r.Saliency == "" {
			status = SalNone
		}
		wantSal = append(wantSal, r.ID+":"+status)
	}
	// The stages one by one...
	tasks, deadLoad := Load(s, records, opts)
	passert.Equals(s, beam.ParDo(s, deadID, deadLoad), ds.Records[0].ID+"@load")
	passert.Equals(s, beam.ParDo(s, taskSal, LookupSaliency(s, CropViews(s, tasks, opts), opts)), wantSal...)
	// ... and composed.
	outs := LabelImages(s, records, opts)
	passert.Equals(s, beam.ParDo(s, writtenID, outs.Labels), wantLabels...)
	passert.Equals(s, beam.ParDo(s, deadID, outs.DeadLetters), ds.Records[0].ID+"@load")
	passert.Equals(s, beam.Combine(s, sumInt64, beam.ParDo(s, inferViews, outs.Inference)), int64(4*len(wantLabels)))
	ptest.RunAndValidate(t, p)
	for _, id := range wantLabels {
		if _, err := os.Stat(LabelURI(out, id.(string))); err != nil {
			t.Errorf("label of %s: %v", id, err)
		}
	}
}
