package transforms

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/fileio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/textio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
)

// MetricsNamespace holds every l2gflow metric. The run record's counts
// come from the job's own data (outcomes combined), not from metrics,
// which runners may drop; the metrics are there to watch a job run.
const MetricsNamespace = "l2gflow"

// Metric names.
const (
	MetricImagesRead    = "images_read"
	MetricLabelsWritten = "labels_written"
	MetricDeadLetters   = "dead_letters"
	MetricViews         = "views_inferred"
	// Distributions (Beam's are of integers): milliseconds spent on each
	// labelled image, its size in kilopixels, the real views in each
	// inference batch.
	MetricImageMillis     = "image_millis"
	MetricImageKilopixels = "image_kilopixels"
	MetricViewsPerBatch   = "views_per_batch"
)

// The job's metrics, defined once (Beam aggregates them per step).
var (
	imagesRead      = beam.NewCounter(MetricsNamespace, MetricImagesRead)
	labelsWritten   = beam.NewCounter(MetricsNamespace, MetricLabelsWritten)
	deadLettersSeen = beam.NewCounter(MetricsNamespace, MetricDeadLetters)
	viewsInferred   = beam.NewCounter(MetricsNamespace, MetricViews)
	imageMillis     = beam.NewDistribution(MetricsNamespace, MetricImageMillis)
	imageKilopixels = beam.NewDistribution(MetricsNamespace, MetricImageKilopixels)
	viewsPerBatch   = beam.NewDistribution(MetricsNamespace, MetricViewsPerBatch)
)

func init() {
	beam.RegisterType(reflect.TypeOf((*dataset.Record)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*Task)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*Label)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*Written)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*DeadLetter)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*Outcome)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*Counts)(nil)).Elem())

	register.DoFn3x0[string, func(dataset.Record), func(DeadLetter)](&parseLineFn{})
	register.DoFn2x0[dataset.Record, func(string, dataset.Record)](&keyRecordFn{})
	register.DoFn2x0[fileio.FileMetadata, func(string, int)](&labelIDFn{})
	register.DoFn2x0[string, func(string, int)](&indexLineFn{})
	register.DoFn6x0[string, func(*dataset.Record) bool, func(*int) bool, func(*int) bool, func(dataset.Record), func(Outcome)](&selectFn{})
	register.DoFn4x1[context.Context, dataset.Record, func(Task), func(DeadLetter), error](&loadFn{})
	register.DoFn2x0[Task, func(Task)](&viewsFn{})
	register.DoFn3x1[context.Context, Task, func(Task), error](&saliencyFn{})
	register.DoFn5x1[context.Context, Task, func(Task), func(DeadLetter), func(Outcome), error](&inferFn{})
	register.DoFn4x1[context.Context, Task, func(Label), func(DeadLetter), error](&fuseFn{})
	register.DoFn3x1[context.Context, Label, func(Written), error](&writeFn{})
	register.DoFn3x1[context.Context, DeadLetter, func(Outcome), error](&deadLetterFn{})
	register.DoFn3x1[context.Context, Written, func(Outcome), error](&indexFn{})
	register.Combiner3[*Counts, Outcome, *Counts](&countsFn{})
	register.DoFn2x1[context.Context, *Counts, error](&finishFn{})
	register.Emitter1[dataset.Record]()
	register.Emitter1[Task]()
	register.Emitter1[Label]()
	register.Emitter1[Written]()
	register.Emitter1[DeadLetter]()
	register.Emitter1[Outcome]()
	register.Emitter2[string, dataset.Record]()
	register.Emitter2[string, int]()
	register.Iter1[*dataset.Record]()
	register.Iter1[*int]()
	register.Function2x0(noOutcome)
	register.Function3x0(noIDs)
}

// mustJSON encodes DoFn options (plain data) for a DoFn field.
func mustJSON(v any) string {
	raw, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("transforms: options do not encode: %v", err)) // options are plain data
	}
	return string(raw)
}

// --- Reading the list ---

type parseLineFn struct {
	Source string // dataset.Source as JSON
	src    dataset.Source
}

func (f *parseLineFn) Setup() error { return json.Unmarshal([]byte(f.Source), &f.src) }

func (f *parseLineFn) ProcessElement(line string, emit func(dataset.Record), dead func(DeadLetter)) {
	rec, ok, err := f.src.Record(line)
	switch {
	case err != nil:
		id := strings.Fields(line + " ?")[0]
		dead(DeadLetter{ID: id, Stage: StageList, Reason: fmt.Sprintf("%s: %v", f.src.List, err)})
	case ok:
		emit(rec)
	}
}

// ReadRecords reads a dataset's tag list or manifest inside the pipeline
// (sharded by the runner, line by line), so that the job's graph is the
// same size for a hundred images or a million. A line that does not parse
// (the launcher checks the list before the job, so only a list changed
// since) becomes a dead letter at stage "list".
func ReadRecords(s beam.Scope, src dataset.Source) (records, dead beam.PCollection) {
	s = s.Scope("ReadRecords")
	lines := textio.Read(s, src.List)
	return beam.ParDo2(s, &parseLineFn{Source: mustJSON(src)}, lines)
}

// Existing says what a run does with images that already have a label.
type Existing string

// Existing modes.
const (
	Overwrite    Existing = "overwrite"     // label every image again
	SkipExisting Existing = "skip-existing" // skip images with a label
	// Incremental skips images labelled by this model artifact (recorded
	// in its index, OUT/_index/<sha256>/), so that a new model relabels
	// everything and a scheduled run labels only new images.
	Incremental Existing = "incremental"
)

// noOutcome and noIDs emit nothing: empty collections of the right types.
func noOutcome(dataset.Record, func(Outcome)) {}
func noIDs(string, int, func(string, int))    {}

type keyRecordFn struct{}

func (keyRecordFn) ProcessElement(r dataset.Record, emit func(string, dataset.Record)) { emit(r.ID, r) }

type labelIDFn struct{ Out string }

func (f *labelIDFn) ProcessElement(m fileio.FileMetadata, emit func(string, int)) {
	if id, ok := LabelID(f.Out, m.Path); ok {
		emit(id, 1)
	}
}

type indexLineFn struct{}

func (indexLineFn) ProcessElement(line string, emit func(string, int)) {
	if id := strings.TrimSpace(line); id != "" {
		emit(id, 1)
	}
}

// skipRecord is the rule of SelectPending and of the in-process path: an
// image with a label is skipped, when incremental only if this model's
// index lists it.
func skipRecord(hasLabel, inIndex, incremental bool) bool {
	return hasLabel && (!incremental || inIndex)
}

type selectFn struct {
	Incremental bool
}

func (f *selectFn) ProcessElement(id string, recs func(*dataset.Record) bool, labels func(*int) bool, index func(*int) bool,
	emit func(dataset.Record), skipped func(Outcome)) {
	var one int
	hasLabel := labels(&one)
	inIndex := index(&one)
	var r dataset.Record
	for recs(&r) {
		if skipRecord(hasLabel, inIndex, f.Incremental) {
			skipped(Outcome{Kind: OutcomeSkipped, ID: id})
			continue
		}
		emit(r)
	}
}

// SelectPending keeps the records to label: all of them to overwrite;
// else those without a label in OUT, or (incremental) without a label
// made by this model artifact, as its index records. The decision is made
// in the pipeline, by joining the records with a listing of OUT (and the
// model's index parts), not by the launcher. It returns the pending
// records and an outcome for each skipped one.
func SelectPending(s beam.Scope, records beam.PCollection, out, modelSHA string, mode Existing) (pending, skipped beam.PCollection) {
	s = s.Scope("SelectPending")
	if mode == Overwrite {
		return records, beam.ParDo(s, noOutcome, records)
	}
	keyed := beam.ParDo(s, keyRecordFn{}, records)
	files := fileio.MatchFiles(s, storage.Join(out, "*"+LabelSuffix), fileio.MatchEmptyAllow())
	labels := beam.ParDo(s, &labelIDFn{Out: out}, files)
	index := beam.ParDo(s, noIDs, labels) // skip-existing reads no index
	if mode == Incremental {
		dir := storage.Join(out, IndexDir, modelSHA)
		index = beam.ParDo(s, indexLineFn{}, beam.Flatten(s,
			textio.Read(s.Scope("Index"), storage.Join(dir, "*", "*.txt")),
			textio.Read(s.Scope("IndexV1"), storage.Join(dir, "*.txt"))))
	}
	grouped := beam.CoGroupByKey(s, keyed, labels, index)
	return beam.ParDo2(s, &selectFn{Incremental: mode == Incremental}, grouped)
}

// --- The labeling stages ---

// stagesFn is the part every stage DoFn shares: its options, and the
// stages built from them in Setup.
type stagesFn struct {
	Options string // LabelOptions as JSON
	stages  *Stages
}

func (f *stagesFn) Setup() error {
	var o LabelOptions
	if err := json.Unmarshal([]byte(f.Options), &o); err != nil {
		return err
	}
	f.stages = NewStages(o)
	return nil
}

func (f *stagesFn) Teardown() error {
	if f.stages != nil {
		return f.stages.Close()
	}
	return nil
}

type loadFn struct{ stagesFn }

func (f *loadFn) ProcessElement(ctx context.Context, rec dataset.Record, emit func(Task), dead func(DeadLetter)) error {
	t, d, err := f.stages.Load(ctx, rec)
	switch {
	case err != nil:
		return err
	case d != nil:
		dead(*d)
	default:
		imagesRead.Inc(ctx, 1)
		emit(*t)
	}
	return nil
}

// Load reshuffles the records (so that work spreads over bundles and
// workers: the only shuffle of the images' way) and reads and decodes
// their images. A missing, corrupt or too large image is a dead letter; a
// storage fault that outlasts the retries fails the bundle.
func Load(s beam.Scope, records beam.PCollection, opts LabelOptions) (tasks, dead beam.PCollection) {
	s = s.Scope("Load")
	return beam.ParDo2(s, &loadFn{stagesFn{Options: mustJSON(opts)}}, beam.Reshuffle(s, records))
}

type viewsFn struct{ stagesFn }

func (f *viewsFn) ProcessElement(t Task, emit func(Task)) {
	f.stages.MakeViews(&t)
	emit(t)
}

// CropViews lists each image's inference views: its scales, each also
// mirrored, and the local crops asked for.
func CropViews(s beam.Scope, tasks beam.PCollection, opts LabelOptions) beam.PCollection {
	s = s.Scope("CropViews")
	return beam.ParDo(s, &viewsFn{stagesFn{Options: mustJSON(opts)}}, tasks)
}

type saliencyFn struct{ stagesFn }

func (f *saliencyFn) ProcessElement(ctx context.Context, t Task, emit func(Task)) error {
	if err := f.stages.LookupSaliency(ctx, &t); err != nil {
		return err
	}
	emit(t)
	return nil
}

// LookupSaliency attaches each image's saliency map when the background
// rule needs one (see Stages.LookupSaliency).
func LookupSaliency(s beam.Scope, tasks beam.PCollection, opts LabelOptions) beam.PCollection {
	s = s.Scope("Saliency")
	return beam.ParDo(s, &saliencyFn{stagesFn{Options: mustJSON(opts)}}, tasks)
}

type inferFn struct {
	stagesFn
	pending       []*Task
	pendingPixels int
}

func (f *inferFn) StartBundle(ctx context.Context, emit func(Task), dead func(DeadLetter), stats func(Outcome)) {
	f.pending, f.pendingPixels = f.pending[:0], 0
}

func (f *inferFn) ProcessElement(ctx context.Context, t Task, emit func(Task), dead func(DeadLetter), stats func(Outcome)) error {
	f.pending = append(f.pending, &t)
	f.pendingPixels += t.W * t.H
	if len(f.pending) >= f.stages.Opts.group() || f.pendingPixels >= f.stages.Opts.groupPixels() {
		return f.flush(ctx, emit, dead, stats)
	}
	return nil
}

func (f *inferFn) flush(ctx context.Context, emit func(Task), dead func(DeadLetter), stats func(Outcome)) error {
	if len(f.pending) == 0 {
		return nil
	}
	ok, failed, st, err := f.stages.Infer(ctx, f.pending)
	f.pending, f.pendingPixels = f.pending[:0], 0
	if err != nil {
		return err
	}
	for _, d := range failed {
		dead(d)
	}
	viewsInferred.Inc(ctx, st.Views)
	for views, batches := range st.BatchViews {
		for range batches {
			viewsPerBatch.Update(ctx, int64(views))
		}
	}
	stats(Outcome{Kind: OutcomeInfer, Infer: st})
	for _, t := range ok {
		emit(*t)
	}
	return nil
}

func (f *inferFn) FinishBundle(ctx context.Context, emit func(Task), dead func(DeadLetter), stats func(Outcome)) error {
	return f.flush(ctx, emit, dead, stats)
}

// InferCAMs runs the model on the images' views, a group of images at a
// time, so that views of one bucket share batches across images (see
// model.Engine). The model is loaded once per worker process and shared
// by all bundles. It returns the images with their CAMs, the dead letters
// of images the network could not take, and each group's inference
// statistics (as outcomes, for the run record).
func InferCAMs(s beam.Scope, tasks beam.PCollection, opts LabelOptions) (out, dead, stats beam.PCollection) {
	s = s.Scope("InferCAMs")
	return beam.ParDo3(s, &inferFn{stagesFn: stagesFn{Options: mustJSON(opts)}}, tasks)
}

type fuseFn struct{ stagesFn }

func (f *fuseFn) ProcessElement(ctx context.Context, t Task, emit func(Label), dead func(DeadLetter)) error {
	lab, d, err := f.stages.Fuse(ctx, &t)
	switch {
	case err != nil:
		return err
	case d != nil:
		dead(*d)
	default:
		emit(lab)
	}
	return nil
}

// FuseLabels fuses each image's view CAMs and applies the background rule.
func FuseLabels(s beam.Scope, tasks beam.PCollection, opts LabelOptions) (labels, dead beam.PCollection) {
	s = s.Scope("FuseLabels")
	return beam.ParDo2(s, &fuseFn{stagesFn{Options: mustJSON(opts)}}, tasks)
}

type writeFn struct{ stagesFn }

func (f *writeFn) ProcessElement(ctx context.Context, lab Label, emit func(Written)) error {
	w, err := f.stages.Write(ctx, lab)
	if err != nil {
		return err
	}
	labelsWritten.Inc(ctx, 1)
	imageMillis.Update(ctx, int64(w.Millis))
	imageKilopixels.Update(ctx, int64(w.Pixels/1000))
	progress.Add(1)
	emit(w)
	return nil
}

// progress counts labels written by this process, for the launcher's
// progress lines when the stages run in its process (prism's loopback
// workers, the in-process path); remote jobs report through metrics.
var progress atomic.Int64

// WrittenInProcess is the number of labels this process has written.
func WrittenInProcess() int64 { return progress.Load() }

// WriteLabels writes each label as OUT/<id>.png (atomically); a write
// that fails fails the bundle, for the runner to retry.
func WriteLabels(s beam.Scope, labels beam.PCollection, opts LabelOptions) beam.PCollection {
	s = s.Scope("WriteLabels")
	return beam.ParDo(s, &writeFn{stagesFn{Options: mustJSON(opts)}}, labels)
}

// LabelOutputs are what LabelImages gives.
type LabelOutputs struct {
	// Labels are the labels written (Written).
	Labels beam.PCollection
	// DeadLetters are the images no label was made for (DeadLetter).
	DeadLetters beam.PCollection
	// Inference holds each inference group's statistics (Outcome).
	Inference beam.PCollection
}

// LabelImages is the whole labeling of dataset records (dataset.Record):
// Load, CropViews, LookupSaliency, InferCAMs, FuseLabels and WriteLabels,
// one element an image from start to end. It writes OUT/<id>.png for
// every image it can label and returns the labels written and the dead
// letters; pass both to RecordRun for the run's records.
func LabelImages(s beam.Scope, records beam.PCollection, opts LabelOptions) LabelOutputs {
	s = s.Scope("LabelImages")
	tasks, deadLoad := Load(s, records, opts)
	tasks = CropViews(s, tasks, opts)
	tasks = LookupSaliency(s, tasks, opts)
	tasks, deadInfer, stats := InferCAMs(s, tasks, opts)
	labels, deadFuse := FuseLabels(s, tasks, opts)
	written := WriteLabels(s, labels, opts)
	return LabelOutputs{Labels: written, DeadLetters: beam.Flatten(s, deadLoad, deadInfer, deadFuse), Inference: stats}
}

// --- The run's bookkeeping ---

// runFn is the part the bookkeeping DoFns share.
type runFn struct {
	Options string // RunOptions as JSON
	opts    RunOptions
	st      *storage.Store
}

func (f *runFn) Setup() error {
	if err := json.Unmarshal([]byte(f.Options), &f.opts); err != nil {
		return err
	}
	f.st = storage.NewWith(f.opts.Storage)
	return nil
}

func (f *runFn) Teardown() error {
	if f.st != nil {
		return f.st.Close()
	}
	return nil
}

type deadLetterFn struct {
	runFn
	parts partWriter
}

func (f *deadLetterFn) StartBundle(ctx context.Context, emit func(Outcome)) {
	f.parts = partWriter{dir: RunErrorsDir(f.opts.Out, f.opts.RunID), ext: ".jsonl"}
}

func (f *deadLetterFn) ProcessElement(ctx context.Context, d DeadLetter, emit func(Outcome)) error {
	if err := f.parts.add(ctx, f.st, deadLetterLine(d)); err != nil {
		return err
	}
	deadLettersSeen.Inc(ctx, 1)
	emit(Outcome{Kind: OutcomeFailed, ID: d.ID, Stage: d.Stage})
	return nil
}

func (f *deadLetterFn) FinishBundle(ctx context.Context, emit func(Outcome)) error {
	return f.parts.flush(ctx, f.st)
}

type indexFn struct {
	runFn
	parts partWriter
}

func (f *indexFn) StartBundle(ctx context.Context, emit func(Outcome)) {
	f.parts = indexParts(f.opts)
}

func (f *indexFn) ProcessElement(ctx context.Context, w Written, emit func(Outcome)) error {
	if err := f.parts.add(ctx, f.st, []byte(w.ID)); err != nil {
		return err
	}
	emit(labelledOutcome(w))
	return nil
}

func (f *indexFn) FinishBundle(ctx context.Context, emit func(Outcome)) error {
	return f.parts.flush(ctx, f.st)
}

type countsFn struct{}

func (countsFn) CreateAccumulator() *Counts { return &Counts{Failed: map[string]int64{}} }
func (countsFn) AddInput(c *Counts, o Outcome) *Counts {
	c.Add(o)
	return c
}
func (countsFn) MergeAccumulators(a, b *Counts) *Counts {
	a.Merge(*b)
	return a
}
func (countsFn) ExtractOutput(c *Counts) *Counts { return c }

type finishFn struct{ runFn }

func (f *finishFn) ProcessElement(ctx context.Context, c *Counts) error {
	_, err := FinishRun(ctx, f.st, f.opts, *c)
	return err
}

// RecordRun does a run's bookkeeping inside the job, so that nothing
// depends on the launcher waiting (a scheduled Dataflow job, a Flex
// Template): dead letters are written as parts under
// OUT/_errors/<run>/ and the ids labelled as parts of the model's index
// under OUT/_index/<sha256>/<run>/ (each bundle its own parts, so retries
// and concurrent runs never collide); every image's outcome (skipped,
// labelled, failed) is counted by a Combine; a last step merges the dead
// letters into OUT/_errors.jsonl, writes the run record
// (OUT/_runs/<run>.json and OUT/_run.json) and fails the job when the
// dead letters exceed RunOptions.MaxFailures. skipped holds the outcomes
// of SelectPending (may be empty).
func RecordRun(s beam.Scope, outs LabelOutputs, skipped beam.PCollection, o RunOptions) {
	s = s.Scope("RecordRun")
	raw := mustJSON(o)
	failed := beam.ParDo(s, &deadLetterFn{runFn: runFn{Options: raw}}, outs.DeadLetters)
	labelled := beam.ParDo(s, &indexFn{runFn: runFn{Options: raw}}, outs.Labels)
	start := beam.Create(s, Outcome{Kind: OutcomeRun})
	counts := beam.Combine(s, countsFn{}, beam.Flatten(s, start, skipped, failed, labelled, outs.Inference))
	beam.ParDo0(s, &finishFn{runFn{Options: raw}}, counts)
}
