package transforms

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
	"github.com/l2gflow/l2gflow/model/trainer/trainertest"
)

// poison makes every inference group that holds the image id fail, as an
// image that breaks its group would.
func poison(t *testing.T, id string) {
	t.Helper()
	inferFault = func(tasks []*Task) error {
		for _, task := range tasks {
			if task.Rec.ID == id {
				return fmt.Errorf("poisoned by %s", id)
			}
		}
		return nil
	}
	t.Cleanup(func() { inferFault = nil })
}

// TestOnePoisonedImageFailsAlone labels 16 images, one of which makes any
// inference group holding it fail: on prism and in process, the group is
// retried one image at a time, so that the one image gets a dead letter
// and the other 15 their labels.
func TestOnePoisonedImageFailsAlone(t *testing.T) {
	dir := t.TempDir()
	root, modelURI := filepath.Join(dir, "data"), filepath.Join(dir, "m.l2g")
	st := storage.New()
	defer st.Close()
	ds := trainertest.MustWrite(t, st, root, modelURI, trainertest.Options{Images: 20, Size: 40, Seed: 4, ValFraction: 0.0001})
	if len(ds.Records) < 16 {
		t.Fatalf("%d records", len(ds.Records))
	}
	recs := ds.Records[:16]
	bad := recs[5].ID
	poison(t, bad)
	opts := func(out string) LabelOptions {
		return LabelOptions{Out: out, Model: modelURI, Backend: model.DefaultBackend, Views: model.ViewOptions{Scales: []float64{1}},
			Fuse: FuseOptions{Classes: 3, Background: BackgroundThreshold, BgThreshold: 0.25}}
	}
	var want []any
	for _, r := range recs {
		if r.ID != bad {
			want = append(want, r.ID)
		}
	}

	p, s := beam.NewPipelineWithRoot()
	outs := LabelImages(s, beam.CreateList(s, recs), opts(filepath.Join(dir, "prism")))
	passert.Equals(s, beam.ParDo(s, writtenID, outs.Labels), want...)
	passert.Equals(s, beam.ParDo(s, deadID, outs.DeadLetters), bad+"@"+StageInfer)
	ptest.RunAndValidate(t, p)

	// In process, the whole group of 16 is one inference group.
	stages := NewStages(opts(filepath.Join(dir, "in-process")))
	defer stages.Close()
	var tasks []*Task
	for _, r := range recs {
		task, d, err := stages.Load(context.Background(), r)
		if err != nil || d != nil {
			t.Fatalf("load %s: %v %+v", r.ID, err, d)
		}
		stages.MakeViews(task)
		tasks = append(tasks, task)
	}
	ok, dead, _, err := stages.Infer(context.Background(), tasks)
	if err != nil || len(ok) != 15 || len(dead) != 1 || dead[0].ID != bad || dead[0].Stage != StageInfer {
		t.Fatalf("in process: %d inferred, dead letters %+v, %v", len(ok), dead, err)
	}
}

// TestBudgetBoundsConcurrentGroups infers two groups of large images at
// once under a budget that holds one group at a time: the budget is never
// exceeded (the second group waits), and both groups finish.
func TestBudgetBoundsConcurrentGroups(t *testing.T) {
	dir := t.TempDir()
	root, modelURI := filepath.Join(dir, "data"), filepath.Join(dir, "m.l2g")
	st := storage.New()
	defer st.Close()
	trainertest.MustWrite(t, st, root, modelURI, trainertest.Options{Images: 4, Size: 48, Seed: 2})
	// Four large images (1600 x 1200: 23 MB of budget each to infer).
	big, err := bigRecords(st, root, 4, 1200, 1600)
	if err != nil {
		t.Fatal(err)
	}
	need := inferNeed(&Task{W: 1600, H: 1200})
	budget := NewBudget(2*need+need/2, "test")
	o := LabelOptions{Out: filepath.Join(dir, "out"), Model: modelURI, Backend: model.DefaultBackend,
		Views: model.ViewOptions{Scales: []float64{0.25}}, Fuse: FuseOptions{Classes: 3, Background: BackgroundThreshold, BgThreshold: 0.25}}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	inferred := make([]int, 2)
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stages := NewStages(o)
			stages.mem = budget
			defer stages.Close()
			var tasks []*Task
			for _, r := range big[2*g : 2*g+2] {
				task, d, err := stages.Load(context.Background(), r)
				if err != nil || d != nil {
					errs[g] = errors.Join(err, fmt.Errorf("dead letter %+v", d))
					return
				}
				stages.MakeViews(task)
				tasks = append(tasks, task)
			}
			ok, _, _, err := stages.Infer(context.Background(), tasks)
			errs[g], inferred[g] = err, len(ok)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil || !slices.Equal(inferred, []int{2, 2}) {
		t.Fatalf("inferred %v, %v", inferred, err)
	}
	if budget.Peak() > budget.Total() || budget.Peak() < 2*need {
		t.Errorf("peak held %d of a budget of %d (one group needs %d)", budget.Peak(), budget.Total(), 2*need)
	}
	t.Logf("budget %d MiB, peak held %d MiB, a group needs %d MiB", budget.Total()>>20, budget.Peak()>>20, (2*need)>>20)
}

// bigRecords writes n noise images of h x w as PNGs under root and returns
// their records.
func bigRecords(st *storage.Store, root string, n, h, w int) ([]dataset.Record, error) {
	var out []dataset.Record
	for i := range n {
		uri := filepath.Join(root, fmt.Sprintf("big%d.png", i))
		if err := st.WriteFile(context.Background(), uri, noisePNG(h, w, uint64(i))); err != nil {
			return nil, err
		}
		out = append(out, dataset.Record{ID: fmt.Sprintf("big%d", i), Image: uri, Tags: []int{0}})
	}
	return out, nil
}

// noisePNG is an h x w RGB PNG of noise.
func noisePNG(h, w int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 9))
	img := imagefile.NewRGB(w, h)
	for i := range img.Pix {
		img.Pix[i] = uint8(r.IntN(256))
	}
	data, _ := imagefile.EncodePNG(img)
	return data
}
