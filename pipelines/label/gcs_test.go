package label

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/storage/gcstest"
	"github.com/l2gflow/l2gflow/io/synth"
	"github.com/l2gflow/l2gflow/model/trainer"
	"github.com/l2gflow/l2gflow/pipelines/eval"
	"github.com/l2gflow/l2gflow/transforms"
)

// gcsFixture puts a synthetic dataset and a briefly trained model (trained
// from the bucket) into the emulator.
func gcsFixture(t *testing.T, bucket string, images int) (*storage.Store, *dataset.Dataset, string) {
	t.Helper()
	st := storage.New()
	t.Cleanup(func() { st.Close() })
	modelURI := "gs://" + bucket + "/models/m.l2g"
	return st, dataAndModel(t, st, "gs://"+bucket+"/data", modelURI, "l2g", images, 6, 3, 21), modelURI
}

func TestTrainLabelEvalOnGCS(t *testing.T) {
	gcstest.Start(t, "e2e")
	st, ds, modelURI := gcsFixture(t, "e2e", 20)
	ctx := context.Background()
	o := options("gs://e2e/data", modelURI, "gs://e2e/labels")
	o.Label.KeepCAMs = true
	rec, err := runRecord(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Counts.LabelsWritten != int64(len(ds.Records)) || rec.Counts.DeadLetters != 0 {
		t.Fatalf("counts %+v", rec.Counts)
	}
	e := config.Default().Eval
	e.Labels, e.Report = "gs://e2e/labels", "gs://e2e/report"
	d := config.Default().Dataset
	d.Root = "gs://e2e/data"
	m, err := eval.Run(ctx, eval.Options{Dataset: d, Eval: e})
	if err != nil {
		t.Fatal(err)
	}
	if err := eval.WriteReport(ctx, st, e.Report, m, 3); err != nil {
		t.Fatal(err)
	}
	if m.Scored != int64(len(ds.Records)) || m.Best == nil {
		t.Errorf("eval scored %d, best %+v", m.Scored, m.Best)
	}
	want := []string{"gs://e2e/models/m.l2g", "gs://e2e/labels/_run.json", "gs://e2e/labels/_errors.jsonl",
		"gs://e2e/report/metrics.json", "gs://e2e/report/report.html"}
	for _, r := range ds.Records {
		want = append(want, transforms.LabelURI("gs://e2e/labels", r.ID), transforms.CAMURI("gs://e2e/labels", r.ID))
	}
	for _, uri := range want {
		if ok, err := st.Exists(ctx, uri); !ok || err != nil {
			t.Errorf("%s missing (%v)", uri, err)
		}
	}
	if l, _ := st.List(ctx, "gs://e2e/labels/"+transforms.RunsDir, "*"); len(l) != 1 {
		t.Errorf("%s holds %v, want one run record", transforms.RunsDir, l)
	}
	// The model's index: parts (one a bundle) of this run, listing every id.
	parts, _ := st.List(ctx, transforms.RunIndexDir("gs://e2e/labels", rec.Model.SHA256, rec.RunID), "*.txt")
	ids := map[string]bool{}
	for _, p := range parts {
		raw, _ := st.ReadFile(ctx, p, 0)
		for _, id := range strings.Fields(string(raw)) {
			ids[id] = true
		}
	}
	if len(parts) == 0 || len(ids) != len(ds.Records) {
		t.Errorf("index parts %v list %d ids, want %d", parts, len(ids), len(ds.Records))
	}
	if ok, _ := st.Exists(ctx, trainer.CheckpointURI("gs://e2e/models/m.l2g")); ok {
		t.Error("the finished training left its checkpoint")
	}
}

func TestLabelThroughStorageFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: trains or runs whole jobs (make test-short)")
	}
	srv := gcstest.Start(t, "flaky")
	_, ds, modelURI := gcsFixture(t, "flaky", 16)
	// From here on every request goes through a proxy that answers the
	// first requests 503 and cuts one connection in 7.
	stats := gcstest.FaultyProxy(t, srv, gcstest.Faults{FirstUnavailable: 5, CutEvery: 7})
	ctx := context.Background()
	o := options("gs://flaky/data", modelURI, "gs://flaky/labels")
	rec, err := runRecord(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	unavailable, cut := stats()
	t.Logf("faults: %d answered 503, %d connections cut; %d storage retries", unavailable, cut, rec.Counts.StorageRetries)
	if unavailable != 5 || cut == 0 || rec.Counts.StorageRetries == 0 {
		t.Errorf("the faults did not happen or were not retried: %d 503s, %d cuts, %d retries", unavailable, cut, rec.Counts.StorageRetries)
	}
	if rec.Counts.LabelsWritten != int64(len(ds.Records)) || rec.Counts.DeadLetters != 0 {
		t.Errorf("counts %+v: want every image labelled", rec.Counts)
	}
	// Every label exists exactly once, whole, and nothing else is there.
	st := storage.New()
	defer st.Close()
	objs, err := st.List(ctx, "gs://flaky/labels", "*")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, u := range objs {
		name := strings.TrimPrefix(u, "gs://flaky/labels/")
		if strings.Contains(name, "/") || strings.HasPrefix(name, "_") {
			continue
		}
		seen[name]++
		raw, err := st.ReadFile(ctx, u, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := imagefile.DecodeLabel(raw, 0); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	for _, r := range ds.Records {
		if seen[r.ID+".png"] != 1 {
			t.Errorf("%s.png present %d times", r.ID, seen[r.ID+".png"])
		}
		delete(seen, r.ID+".png")
	}
	if len(seen) != 0 {
		t.Errorf("unexpected objects: %v", seen)
	}
}

func TestPermanentModelErrorStopsEarly(t *testing.T) {
	gcstest.Start(t, "nomodel")
	ctx := context.Background()
	st := storage.New()
	defer st.Close()
	if _, err := synth.Write(ctx, st, "gs://nomodel/data", synth.Options{Images: 4, Size: 64, Classes: 3, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := runRecord(ctx, options("gs://nomodel/data", "gs://nomodel/missing.l2g", "gs://nomodel/labels"))
	if err == nil || !strings.Contains(err.Error(), "gs://nomodel/missing.l2g") || !strings.Contains(err.Error(), "not exist") {
		t.Errorf("err = %v, want one naming the missing model", err)
	}
	if l, _ := st.List(ctx, "gs://nomodel/labels", "*"); len(l) != 0 {
		t.Errorf("a failed start wrote %v", l)
	}
}

// TestTransientFaultsNeverChangeALabel makes image and saliency reads of
// some objects fail beyond the storage retries (503 for as long as the
// fault lasts). The saliency rule reads every map, so a fault taken for a
// missing map would change a label: instead the job fails (prism retries
// no bundle), the labels it wrote are those of a clean run, and a re-run
// after the fault finishes the rest to the clean run's bytes. A corrupt
// image stays a dead letter throughout.
func TestTransientFaultsNeverChangeALabel(t *testing.T) {
	srv := gcstest.Start(t, "transient")
	st, ds, modelURI := gcsFixture(t, "transient", 16)
	ctx := context.Background()
	corrupt := ds.Records[0]
	if err := st.WriteFile(ctx, corrupt.Image, []byte("not a jpeg")); err != nil {
		t.Fatal(err)
	}
	opts := func(out string) Options {
		o := options("gs://transient/data", modelURI, out)
		o.Label.Background = "saliency"
		// Few, quick retries, so the faults outlast them; an attempt's
		// timeout generous, as no fault here hangs and a starved machine
		// must not turn a clean read into a failure.
		o.Storage = storage.Options{MaxAttempts: 2, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
			AttemptTimeout: 10 * time.Second}
		return o
	}
	clean, err := runRecord(ctx, opts("gs://transient/clean"))
	if err != nil {
		t.Fatal(err)
	}
	if clean.Counts.DeadLetters != 1 || clean.Counts.LabelsWritten != int64(len(ds.Records)-1) {
		t.Fatalf("clean run counts %+v", clean.Counts)
	}
	var withSal []string
	for _, r := range ds.Records[1:] {
		if r.Saliency != "" {
			withSal = append(withSal, r.ID)
		}
	}
	faulty := map[string]bool{}
	for _, id := range withSal[:2] {
		faulty["/Saliency/"+id+".png"] = true
	}
	faulty["/JPEGImages/"+ds.Records[len(ds.Records)-1].ID+".jpg"] = true
	var on atomic.Bool
	on.Store(true)
	gcstest.FaultyProxy(t, srv, gcstest.Faults{Unavailable: func(r *http.Request) bool {
		if !on.Load() || r.Method != http.MethodGet {
			return false
		}
		for suffix := range faulty {
			if strings.HasSuffix(r.URL.Path, suffix) {
				return true
			}
		}
		return false
	}})
	_, err = runRecord(ctx, opts("gs://transient/faulty"))
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("a job whose reads fail past the retries: err = %v, want a failure naming the 503", err)
	}
	t.Logf("faulty run: %v", err)
	cleanLabels := gcsLabels(t, st, "gs://transient/clean")
	for id, data := range gcsLabels(t, st, "gs://transient/faulty") {
		if !bytes.Equal(data, cleanLabels[id]) {
			t.Errorf("%s: a label written during the faults differs from the clean run's", id)
		}
	}
	// The fault passes; the re-run finishes the rest.
	on.Store(false)
	rec, err := runRecord(ctx, opts("gs://transient/faulty"))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Counts.DeadLetters != 1 || rec.Counts.Failed[transforms.StageLoad] != 1 {
		t.Errorf("re-run counts %+v: want the corrupt image's dead letter only", rec.Counts)
	}
	final := gcsLabels(t, st, "gs://transient/faulty")
	if len(final) != len(cleanLabels) {
		t.Errorf("%d labels after the re-run, %d in the clean run", len(final), len(cleanLabels))
	}
	for id, data := range cleanLabels {
		if !bytes.Equal(data, final[id]) {
			t.Errorf("%s: differs from the clean run after the re-run", id)
		}
	}
}

// gcsLabels reads the labels under a gs:// prefix by id.
func gcsLabels(t *testing.T, st *storage.Store, out string) map[string][]byte {
	t.Helper()
	uris, err := st.List(context.Background(), out, "*.png")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, u := range uris {
		if id, ok := transforms.LabelID(out, u); ok {
			raw, err := st.ReadFile(context.Background(), u, 0)
			if err != nil {
				t.Fatal(err)
			}
			m[id] = raw
		}
	}
	return m
}
