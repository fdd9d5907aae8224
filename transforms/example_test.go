package transforms_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
	"github.com/l2gflow/l2gflow/model/trainer/trainertest"
	"github.com/l2gflow/l2gflow/transforms"
)

// ExampleLabelImages labels a dataset inside a pipeline of one's own,
// with the library alone: the job reads the dataset's tag list, labels
// every image, and writes its own records (dead letters, the model's
// index, the run record); nothing is left for the launching process to do
// after Run.
func ExampleLabelImages() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "l2gflow-example")
	defer os.RemoveAll(dir)
	root, modelURI, out := filepath.Join(dir, "data"), filepath.Join(dir, "m.l2g"), filepath.Join(dir, "labels")
	if err := exampleData(ctx, root, modelURI); err != nil {
		fmt.Println(err)
		return
	}

	st := storage.New()
	defer st.Close()
	// The list is checked (and its classes read) before the job; the job
	// reads the records itself.
	src, _, err := dataset.OpenSource(ctx, st, root, "train", "")
	if err != nil {
		fmt.Println(err)
		return
	}
	data, _ := st.ReadFile(ctx, modelURI, 0)
	m, err := model.LoadModel(data)
	if err != nil {
		fmt.Println(err)
		return
	}
	opts := transforms.LabelOptions{
		Out: out, Model: modelURI, Backend: model.DefaultBackend,
		Views: model.ViewOptions{Scales: []float64{0.5, 1}, Flip: true},
		Fuse:  transforms.FuseOptions{Classes: len(m.Manifest.Classes), Background: transforms.BackgroundThreshold, BgThreshold: 0.25},
	}
	run := transforms.RunOptions{Out: out, RunID: "example", ModelSHA: m.SHA256}

	p, s := beam.NewPipelineWithRoot()
	records, badLines := transforms.ReadRecords(s, src)
	pending, skipped := transforms.SelectPending(s, records, out, m.SHA256, transforms.SkipExisting)
	outs := transforms.LabelImages(s, pending, opts)
	outs.DeadLetters = beam.Flatten(s, outs.DeadLetters, badLines)
	transforms.RecordRun(s, outs, skipped, run)
	if err := beamx.Run(ctx, p); err != nil {
		fmt.Println(err)
		return
	}

	// What the job wrote.
	raw, _ := st.ReadFile(ctx, transforms.RunRecordURI(out, "example"), 0)
	var rec transforms.RunRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		fmt.Println(err)
		return
	}
	parts, _ := st.List(ctx, transforms.RunIndexDir(out, m.SHA256, "example"), "*.txt")
	indexed := 0
	for _, part := range parts {
		raw, _ := st.ReadFile(ctx, part, 0)
		indexed += strings.Count(string(raw), "\n")
	}
	fmt.Printf("%d listed, %d labels written, %d dead letter at stage %s; the model's index lists %d images\n",
		rec.Counts.Listed, rec.Counts.LabelsWritten, rec.Counts.DeadLetters, rec.DeadLetters[0].Stage, indexed)
	// Output:
	// 6 listed, 5 labels written, 1 dead letter at stage load; the model's index lists 5 images
}

// exampleData writes a synthetic set of six images, one of them corrupt,
// and trains a model on it for a few steps.
func exampleData(ctx context.Context, root, modelURI string) error {
	st := storage.New()
	defer st.Close()
	ds, err := trainertest.Write(ctx, st, root, modelURI, trainertest.Options{Images: 6, Size: 48, Seed: 5, Steps: 2})
	if err != nil {
		return err
	}
	return st.WriteFile(ctx, ds.Records[0].Image, []byte("not an image"))
}
