// Package label assembles and runs the labeling pipeline: dataset to
// pseudo-label PNGs, on the Beam prism runner by default, any Beam runner
// (direct, Dataflow) on request, or in process without Beam for
// debugging. Both paths call the same stage functions of package
// transforms and give identical labels.
package label

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/metrics"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/exec/optimized" // faster reflection
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/dataflow"            // --runner dataflow
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/direct"              // --runner direct
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"               // the default
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/universal"           // portable runners

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/artifact"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
	"github.com/l2gflow/l2gflow/model/maps"
	"github.com/l2gflow/l2gflow/transforms"
)

// Options configure a labeling run.
type Options struct {
	Dataset config.Dataset
	Label   config.Label
	Backend string // GoMLX backend
	// Runner is the Beam runner name ("prism", "direct", "dataflow", ...);
	// "" means prism. InProcess skips Beam altogether.
	Runner    string
	InProcess bool
	Producer  string
	Log       io.Writer // progress and summary; nil for none
	// ProgressEvery is the interval of progress lines (default 10s).
	ProgressEvery time.Duration
}

// Counts are a run's numbers, per stage.
type Counts struct {
	Listed          int   `json:"listed"`           // records in the tag list or manifest
	SkippedExisting int   `json:"skipped_existing"` // labels already present (not --overwrite)
	Submitted       int   `json:"submitted"`        // records sent to the pipeline
	ImagesRead      int64 `json:"images_read"`
	ViewsInferred   int64 `json:"views_inferred"`
	LabelsWritten   int64 `json:"labels_written"`
	SaliencyMissing int64 `json:"saliency_missing"`
	SaliencyBad     int64 `json:"saliency_unusable"`
	Fallback        int64 `json:"saliency_fallback"`
	// Failed counts dead letters per stage.
	Failed         map[string]int64 `json:"failed"`
	DeadLetters    int              `json:"dead_letters"`
	StorageRetries int64            `json:"storage_retries"`
}

// BatchStats summarises inference batches.
type BatchStats struct {
	Batches   int64   `json:"batches"`
	MeanSize  float64 `json:"mean_size"`
	MeanMs    float64 `json:"mean_latency_ms"`
	MaxMs     int64   `json:"max_latency_ms"`
	TotalSecs float64 `json:"total_secs"`
	views     int64
}

// RunRecord is written to OUT/_run.json after every run.
type RunRecord struct {
	Started     time.Time `json:"started"`
	Finished    time.Time `json:"finished"`
	DurationSec float64   `json:"duration_sec"`
	Runner      string    `json:"runner"`
	// Detached is set when the runner returned without running the job
	// to its end (a dry run, or an asynchronous submission): the labels
	// and failures are then not known to this run.
	Detached  bool           `json:"detached,omitempty"`
	Producer  string         `json:"producer"`
	Model     ModelInfo      `json:"model"`
	Dataset   config.Dataset `json:"dataset"`
	Config    config.Label   `json:"config"`
	Counts    Counts         `json:"counts"`
	Inference BatchStats     `json:"inference"`
	// Engine is what this process's inference engine did for the run:
	// its bucket set and padding overhead (local runners and in-process;
	// a remote runner's workers keep their own).
	Engine      *model.EngineStats      `json:"engine,omitempty"`
	ImagesPerS  float64                 `json:"images_per_sec"`
	DeadLetters []transforms.DeadLetter `json:"dead_letters,omitempty"`
}

// ModelInfo identifies the model used.
type ModelInfo struct {
	URI      string             `json:"uri"`
	SHA256   string             `json:"sha256"`
	Manifest *artifact.Manifest `json:"manifest"`
}

// maxDeadLettersInRecord bounds the dead letters copied into _run.json
// (all are in _errors.jsonl).
const maxDeadLettersInRecord = 100

func (o Options) viewOptions(m *model.Model) model.ViewOptions {
	comb := maps.Sum
	if o.Label.LocalCombine == "max" {
		comb = maps.Max
	}
	local := 0
	var tc config.Train
	if json.Unmarshal(m.Manifest.Training, &tc) == nil && tc.ViewSize > 0 && tc.ImageSize > 0 {
		local = tc.ViewSize // crops of the size the local network saw (in training pixels)
	}
	return model.ViewOptions{Scales: o.Label.Scales, Flip: o.Label.Flip, LocalViews: o.Label.LocalViews,
		LocalSize: local, LocalCombine: comb, Limits: o.engineOptions().Buckets}
}

// engineOptions are the inference engine's options from the configuration.
func (o Options) engineOptions() model.EngineOptions {
	l := o.Label
	return model.EngineOptions{Buckets: model.BucketOptions{PerOctave: l.BucketsPerOctave, MaxAspect: l.BucketMaxAspect,
		MaxViewPixels: l.MaxViewPixels, BatchPixels: l.BatchPixels, MaxBatch: l.BatchSize}}
}

func (o Options) fuseOptions() transforms.FuseOptions {
	l := o.Label
	return transforms.FuseOptions{Background: l.Background, BgThreshold: l.BgThreshold,
		SaliencyThreshold: l.SaliencyThreshold, CAMThreshold: l.CAMThreshold,
		SaliencyFallback: l.SaliencyFallback, LocalCombine: l.LocalCombine, KeepCAMs: l.KeepCAMs}
}

func (o Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

// Build adds the labeling stages to a pipeline for the given records and
// returns nothing: its outputs are the files it writes.
func Build(s beam.Scope, recs []dataset.Record, o Options, m *model.Model) {
	records := beam.CreateList(s, recs)
	images, deadLoad := transforms.Load(s, records, o.Dataset.MaxPixels)
	views := transforms.CropViews(s, images, o.viewOptions(m))
	metas := transforms.LookupSaliencyMaps(s, images, o.Label.Background == "saliency", o.Dataset.MaxPixels)
	cams, deadInfer := transforms.InferCAMs(s, views, o.Label.Model, o.Backend, o.engineOptions())
	labels, deadFuse := transforms.FuseLabels(s, metas, cams, len(m.Manifest.Classes), o.fuseOptions())
	deadWrite := transforms.WriteLabels(s, labels, o.Label.Out)
	transforms.WriteDeadLetters(s, o.Label.Out, deadLoad, deadInfer, deadFuse, deadWrite)
}

// Run labels a dataset and writes OUT/<id>.png, OUT/_errors.jsonl and
// OUT/_run.json.
func Run(ctx context.Context, o Options) (*RunRecord, error) {
	rec := &RunRecord{Started: time.Now().UTC(), Producer: o.Producer, Dataset: o.Dataset, Config: o.Label}
	// The launcher's own client: its retries add to the workers' (counted
	// by the storage_retries metric) without being counted twice when the
	// workers run in this process.
	st := storage.New()
	defer st.Close()
	ds, err := dataset.Open(ctx, st, o.Dataset.Root, o.Dataset.Split, o.Dataset.Manifest)
	if err != nil {
		return nil, err
	}
	data, err := st.ReadFile(ctx, o.Label.Model, 0)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	m, err := model.LoadModel(data)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", o.Label.Model, err)
	}
	if len(m.Manifest.Classes) != len(ds.Classes) {
		return nil, fmt.Errorf("the model knows %d classes, the dataset %d (%s)", len(m.Manifest.Classes), len(ds.Classes), ds.Source)
	}
	rec.Model = ModelInfo{URI: o.Label.Model, SHA256: m.SHA256, Manifest: m.Manifest}
	rec.Counts.Listed = len(ds.Records)

	if _, _, err := failureLimit(o.Label.MaxFailures, 0); err != nil {
		return nil, err
	}
	retries0 := st.Retries()
	n, err := storage.CleanStaleTemps(o.Label.Out)
	if err != nil {
		return nil, fmt.Errorf("clean up after an interrupted run: %w", err)
	}
	if n > 0 {
		o.logf("label: removed %d temporary files left by an interrupted run", n)
	}
	runID := rec.Started.Format("20060102T150405.000000000Z")
	todo, skipped, err := pending(ctx, st, ds.Records, o, m.SHA256)
	if err != nil {
		return nil, err
	}
	rec.Counts.SkippedExisting, rec.Counts.Submitted = skipped, len(todo)
	if err := clearDeadLetterParts(ctx, st, o.Label.Out); err != nil {
		return nil, err
	}
	what := "already labelled"
	if o.Label.Incremental {
		what = "labelled by this model"
	}
	o.logf("label: %d images listed, %d %s (skipped), %d to do; model %s (%s, sha256 %s)",
		len(ds.Records), skipped, what, len(todo), o.Label.Model, m.Manifest.Method, m.SHA256[:12])

	runner := o.Runner
	if runner == "" {
		runner = "prism"
	}
	if o.InProcess {
		runner = "in-process"
	}
	rec.Runner = runner
	// On a local runner the stages run in this process: load the engine
	// (compiling every bucket) before the job, and read what it did after.
	var engine *model.Engine
	var engine0 model.EngineStats
	if len(todo) > 0 && (o.InProcess || localRunner(runner)) {
		if engine, err = transforms.LoadEngine(ctx, o.Label.Model, o.Backend, o.engineOptions()); err != nil {
			return nil, err
		}
		engine0 = engine.Stats()
	}
	stopProgress := o.progress(len(todo))
	if len(todo) == 0 {
		// Nothing to do: no job is started.
	} else if o.InProcess {
		err = runInProcess(ctx, st, todo, o, m, &rec.Counts)
	} else {
		chunk := len(todo)
		if o.Label.ChunkSize > 0 && localRunner(runner) {
			chunk = o.Label.ChunkSize
		}
		for from := 0; from < len(todo) && err == nil; from += chunk {
			part := todo[from:min(len(todo), from+chunk)]
			if chunk < len(todo) {
				o.logf("label: job for images %d-%d of %d", from+1, from+len(part), len(todo))
			}
			err = runBeam(ctx, part, o, m, runner, rec)
		}
	}
	stopProgress()
	if err != nil {
		return nil, err
	}
	if engine != nil {
		st := engine.Stats().Sub(engine0)
		rec.Engine = &st
	}
	dead, err := mergeDeadLetters(ctx, st, o.Label.Out)
	if err != nil {
		return nil, err
	}
	rec.Counts.DeadLetters = len(dead)
	if len(dead) > maxDeadLettersInRecord {
		rec.DeadLetters = dead[:maxDeadLettersInRecord]
	} else {
		rec.DeadLetters = dead
	}
	// The images whose outcome this run knows: none when the runner did
	// not wait for the job.
	done := todo
	if rec.Detached {
		done = nil
		o.logf("label: the runner returned without waiting for the job (dry run or asynchronous): its labels and failures are not counted here")
	}
	countOutcome(&rec.Counts, len(done), dead)
	if _, err := writeIndex(ctx, st, o.Label.Out, m.SHA256, runID, done, dead); err != nil {
		return nil, err
	}
	rec.Counts.StorageRetries += st.Retries() - retries0
	rec.Finished = time.Now().UTC()
	rec.DurationSec = rec.Finished.Sub(rec.Started).Seconds()
	if rec.DurationSec > 0 {
		rec.ImagesPerS = float64(rec.Counts.LabelsWritten) / rec.DurationSec
	}
	raw, _ := json.MarshalIndent(rec, "", "  ")
	raw = append(raw, '\n')
	for _, uri := range []string{storage.Join(o.Label.Out, RunsDir, runID+".json"), storage.Join(o.Label.Out, transforms.RunFile)} {
		if err := st.WriteFile(ctx, uri, raw); err != nil {
			return nil, err
		}
	}
	o.summary(rec)
	if limit, ok, _ := failureLimit(o.Label.MaxFailures, len(todo)); ok && rec.Counts.DeadLetters > limit {
		return rec, fmt.Errorf("%w: %d dead letters, more than the %d allowed (--max-failures %s); see %s",
			ErrTooManyFailures, rec.Counts.DeadLetters, limit, o.Label.MaxFailures, storage.Join(o.Label.Out, transforms.ErrorsFile))
	}
	return rec, nil
}

// IndexDir holds, per model artifact sha256, the ids each run labelled
// with it: OUT/_index/<sha256>/<run>.txt. Incremental runs use it to tell
// labels of this model from labels of another.
const IndexDir = "_index"

// RunsDir accumulates one run record per run: OUT/_runs/<run>.json.
const RunsDir = "_runs"

// outputState is what one listing of OUT tells.
type outputState struct {
	labels map[string]bool // ids with OUT/<id>.png
	index  []string        // index parts of the model in use
}

// listOutput lists OUT once (recursively) and sorts what it finds.
func listOutput(ctx context.Context, st *storage.Store, out, modelSHA string) (outputState, error) {
	uris, err := st.List(ctx, out, "*")
	if err != nil {
		return outputState{}, err
	}
	s := outputState{labels: map[string]bool{}}
	idxDir := strings.TrimSuffix(storage.Join(out, IndexDir, modelSHA), "/")
	for _, u := range uris {
		if id, ok := transforms.LabelID(out, u); ok {
			s.labels[id] = true
		} else if strings.TrimSuffix(storage.Dir(u), "/") == idxDir && strings.HasSuffix(u, ".txt") {
			s.index = append(s.index, u)
		}
	}
	return s, nil
}

// pending chooses the records to label: all with overwrite; without a
// label of this model (recorded in the index) when incremental; else
// without a label.
func pending(ctx context.Context, st *storage.Store, recs []dataset.Record, o Options, modelSHA string) ([]dataset.Record, int, error) {
	if o.Label.Overwrite {
		return recs, 0, nil
	}
	state, err := listOutput(ctx, st, o.Label.Out, modelSHA)
	if err != nil {
		return nil, 0, err
	}
	done := state.labels
	if o.Label.Incremental {
		done = map[string]bool{}
		for _, part := range state.index {
			raw, err := st.ReadFile(ctx, part, 1<<30)
			if err != nil {
				return nil, 0, err
			}
			for _, id := range strings.Fields(string(raw)) {
				if state.labels[id] {
					done[id] = true
				}
			}
		}
	}
	var todo []dataset.Record
	for _, r := range recs {
		if !done[r.ID] {
			todo = append(todo, r)
		}
	}
	return todo, len(recs) - len(todo), nil
}

// writeIndex records the ids this run labelled with the model.
func writeIndex(ctx context.Context, st *storage.Store, out, modelSHA, runID string, todo []dataset.Record, dead []transforms.DeadLetter) (int, error) {
	failed := map[string]bool{}
	for _, d := range dead {
		failed[d.ID] = true
	}
	var b strings.Builder
	n := 0
	for _, r := range todo {
		if !failed[r.ID] {
			b.WriteString(r.ID)
			b.WriteByte('\n')
			n++
		}
	}
	if n == 0 {
		return 0, nil
	}
	return n, st.WriteFile(ctx, storage.Join(out, IndexDir, modelSHA, runID+".txt"), []byte(b.String()))
}

// ErrTooManyFailures is returned (wrapped) when a run's dead letters
// exceed Label.MaxFailures; the labels and records are written first.
var ErrTooManyFailures = errors.New("too many failed images")

// failureLimit parses Label.MaxFailures ("" = no limit, "N" a count, "F"
// with a decimal point or "P%" a share of the submitted images).
func failureLimit(spec string, submitted int) (int, bool, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return 0, false, nil
	}
	if p, ok := strings.CutSuffix(spec, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f < 0 || f > 100 {
			return 0, false, fmt.Errorf("max failures %q: want a count, a fraction or a percentage", spec)
		}
		return int(math.Floor(f / 100 * float64(submitted))), true, nil
	}
	if strings.Contains(spec, ".") {
		f, err := strconv.ParseFloat(spec, 64)
		if err != nil || f < 0 || f > 1 {
			return 0, false, fmt.Errorf("max failures %q: a fraction must be in [0, 1]", spec)
		}
		return int(math.Floor(f * float64(submitted))), true, nil
	}
	n, err := strconv.Atoi(spec)
	if err != nil || n < 0 {
		return 0, false, fmt.Errorf("max failures %q: want a count, a fraction or a percentage", spec)
	}
	return n, true, nil
}

func clearDeadLetterParts(ctx context.Context, st *storage.Store, out string) error {
	parts, err := st.List(ctx, storage.Join(out, transforms.ErrorsDir), "*.json")
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := st.Remove(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// mergeDeadLetters gathers this run's dead letters into OUT/_errors.jsonl
// (sorted by id, then stage) and removes the parts.
func mergeDeadLetters(ctx context.Context, st *storage.Store, out string) ([]transforms.DeadLetter, error) {
	parts, err := st.List(ctx, storage.Join(out, transforms.ErrorsDir), "*.json")
	if err != nil {
		return nil, err
	}
	var dead []transforms.DeadLetter
	for _, p := range parts {
		raw, err := st.ReadFile(ctx, p, 1<<20)
		if err != nil {
			return nil, err
		}
		var d transforms.DeadLetter
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, fmt.Errorf("dead letter %s: %w", p, err)
		}
		dead = append(dead, d)
	}
	sort.Slice(dead, func(i, j int) bool {
		if dead[i].ID != dead[j].ID {
			return dead[i].ID < dead[j].ID
		}
		return dead[i].Stage < dead[j].Stage
	})
	var b strings.Builder
	for _, d := range dead {
		raw, _ := json.Marshal(d)
		b.Write(raw)
		b.WriteByte('\n')
	}
	if err := st.WriteFile(ctx, storage.Join(out, transforms.ErrorsFile), []byte(b.String())); err != nil {
		return nil, err
	}
	for _, p := range parts {
		if err := st.Remove(ctx, p); err != nil {
			return nil, err
		}
	}
	return dead, nil
}

// progress prints labels written so far every ProgressEvery; it returns a
// function that stops it. (Counts come from this process, which is where
// the prism runner and the in-process path run the stages.)
func (o Options) progress(total int) func() {
	if o.Log == nil || total == 0 {
		return func() {}
	}
	every := o.ProgressEvery
	if every <= 0 {
		every = 10 * time.Second
	}
	base := transforms.WrittenInProcess()
	start := time.Now()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				n := transforms.WrittenInProcess() - base
				rate := float64(n) / time.Since(start).Seconds()
				eta := "?"
				if rate > 0 {
					eta = (time.Duration(float64(int64(total)-n)/rate) * time.Second).Round(time.Second).String()
				}
				o.logf("label: %d/%d written, %.1f img/s, ETA %s", n, total, rate, eta)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// localRunner reports whether a runner keeps every stage's output in this
// process's memory (prism, direct): large jobs then run as a sequence of
// jobs of Label.ChunkSize images, so that memory does not grow with the
// dataset. Dataflow shuffles through its own service and runs one job.
func localRunner(runner string) bool {
	return runner == "prism" || runner == "direct"
}

func runBeam(ctx context.Context, todo []dataset.Record, o Options, m *model.Model, runner string, rec *RunRecord) error {
	p, s := beam.NewPipelineWithRoot()
	Build(s, todo, o, m)
	res, err := beam.Run(ctx, runner, p)
	if err != nil {
		return fmt.Errorf("pipeline on %s: %w", runner, err)
	}
	if res == nil {
		// Dry runs and asynchronous runners return no result.
		rec.Detached = true
		return nil
	}
	readMetrics(res.Metrics(), rec)
	return nil
}

// countOutcome counts images read, labels written and failures per stage
// exactly from the outcome of done images whose jobs succeeded: each ended
// as a label or as dead letters. Runner metrics are not used for these:
// prism drops a bundle's counters when bundles reporting a metric for the
// first time finish together (seen under load), and a count of labels
// must not depend on that.
func countOutcome(c *Counts, done int, dead []transforms.DeadLetter) {
	c.Failed = map[string]int64{}
	failedIDs := map[string]bool{}
	loadFailed := 0
	for _, d := range dead {
		c.Failed[d.Stage]++
		if !failedIDs[d.ID] && d.Stage == transforms.StageLoad {
			loadFailed++
		}
		failedIDs[d.ID] = true
	}
	c.LabelsWritten = int64(done - len(failedIDs))
	c.ImagesRead = int64(done - loadFailed)
}

// readMetrics adds the counts only the runner knows (views inferred,
// saliency statuses, storage retries, inference batches) from the
// pipeline's committed (or, where a runner only has those, attempted)
// metrics, matched by namespace and name. On prism these can under-count
// when bundles finish together (see countOutcome); the image and label
// counts do not come from here.
func readMetrics(r metrics.Results, rec *RunRecord) {
	c := &rec.Counts
	fields := map[string]*int64{
		transforms.MetricViews:           &c.ViewsInferred,
		transforms.MetricSaliencyMissing: &c.SaliencyMissing,
		transforms.MetricSaliencyBad:     &c.SaliencyBad,
		transforms.MetricFallback:        &c.Fallback,
		transforms.MetricStorageRetries:  &c.StorageRetries,
	}
	for _, cr := range r.AllMetrics().Counters() {
		if cr.Namespace() != transforms.MetricsNamespace {
			continue
		}
		// Images read, labels written and failures per stage are counted
		// exactly from the outcome instead (see countOutcome).
		if f, ok := fields[cr.Name()]; ok {
			*f += cr.Result()
		}
	}
	for _, d := range r.AllMetrics().Distributions() {
		if d.Namespace() != transforms.MetricsNamespace {
			continue
		}
		v := d.Result()
		switch d.Name() {
		case transforms.MetricBatchLatency:
			rec.Inference.Batches += v.Count
			rec.Inference.TotalSecs += float64(v.Sum) / 1000
			rec.Inference.MaxMs = max(rec.Inference.MaxMs, v.Max)
		case transforms.MetricBatchSize:
			rec.Inference.views += v.Sum
		}
	}
	if rec.Inference.Batches > 0 {
		rec.Inference.MeanMs = 1000 * rec.Inference.TotalSecs / float64(rec.Inference.Batches)
		rec.Inference.MeanSize = float64(rec.Inference.views) / float64(rec.Inference.Batches)
	}
}

// runInProcess runs the same stages without Beam, one image at a time on
// each of GOMAXPROCS goroutines.
func runInProcess(ctx context.Context, st *storage.Store, todo []dataset.Record, o Options, m *model.Model, c *Counts) error {
	e, err := transforms.LoadEngine(ctx, o.Label.Model, o.Backend, o.engineOptions())
	if err != nil {
		return err
	}
	vopts, fopts := o.viewOptions(m), o.fuseOptions()
	classes := len(m.Manifest.Classes)
	var mu sync.Mutex
	var firstErr error
	count := func(f func()) { mu.Lock(); f(); mu.Unlock() }
	dead := func(d transforms.DeadLetter) {
		if err := transforms.WriteDeadLetter(ctx, st, o.Label.Out, d); err != nil {
			count(func() {
				if firstErr == nil {
					firstErr = err
				}
			})
		}
	}
	jobs := make(chan dataset.Record)
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range jobs {
				img, err := transforms.LoadImage(ctx, st, r, o.Dataset.MaxPixels)
				if err != nil {
					dead(transforms.DeadLetter{ID: r.ID, Stage: transforms.StageLoad, Reason: err.Error()})
					continue
				}
				meta := transforms.LookupSaliency(ctx, st, img, o.Label.Background == "saliency", o.Dataset.MaxPixels)
				ok := true
				cams, err := transforms.InferViews(e, transforms.MakeViews(img, vopts))
				if err != nil {
					dead(transforms.DeadLetter{ID: r.ID, Stage: transforms.StageInfer, Reason: err.Error()})
					ok = false
				}
				count(func() {
					c.ViewsInferred += int64(len(cams))
					switch meta.SalStatus {
					case transforms.SalNone, transforms.SalMissing:
						c.SaliencyMissing++
					case transforms.SalUnreadable, transforms.SalWrongSize:
						c.SaliencyBad++
					}
				})
				if !ok {
					continue
				}
				lab, err := transforms.Fuse(meta, cams, classes, fopts)
				if err != nil {
					dead(transforms.DeadLetter{ID: r.ID, Stage: transforms.StageFuse, Reason: err.Error()})
					continue
				}
				if err := transforms.WriteLabel(ctx, st, o.Label.Out, lab); err != nil {
					dead(transforms.DeadLetter{ID: r.ID, Stage: transforms.StageWrite, Reason: err.Error()})
					continue
				}
				if lab.Rule == "threshold(fallback)" {
					count(func() { c.Fallback++ })
				}
				transforms.CountWritten()
			}
		}()
	}
	for _, r := range todo {
		select {
		case jobs <- r:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return firstErr
}

// summary prints the run's table.
func (o Options) summary(r *RunRecord) {
	if o.Log == nil {
		return
	}
	c := r.Counts
	if r.Detached {
		fmt.Fprintf(o.Log, "  runner %s: job for %d images submitted, not waited for (%d listed, %d skipped)\n",
			r.Runner, c.Submitted, c.Listed, c.SkippedExisting)
		return
	}
	rows := [][2]string{
		{"runner", r.Runner},
		{"images listed", fmt.Sprint(c.Listed)},
		{"skipped (label exists)", fmt.Sprint(c.SkippedExisting)},
		{"images read", fmt.Sprint(c.ImagesRead)},
		{"views inferred", fmt.Sprint(c.ViewsInferred)},
		{"labels written", fmt.Sprint(c.LabelsWritten)},
		{"saliency missing", fmt.Sprint(c.SaliencyMissing)},
		{"saliency unusable", fmt.Sprint(c.SaliencyBad)},
		{"saliency fallbacks", fmt.Sprint(c.Fallback)},
	}
	stages := make([]string, 0, len(c.Failed))
	for s := range c.Failed {
		stages = append(stages, s)
	}
	slices.Sort(stages)
	for _, s := range stages {
		rows = append(rows, [2]string{"failed at " + s, fmt.Sprint(c.Failed[s])})
	}
	rows = append(rows, [2]string{"dead letters", fmt.Sprint(c.DeadLetters)}, [2]string{"storage retries", fmt.Sprint(c.StorageRetries)})
	if e := r.Engine; e != nil && e.Views > 0 {
		rows = append(rows, [2]string{"inference padding", fmt.Sprintf("x%.2f of the views' pixels (%d buckets, %d views in %d batches)",
			e.PaddingOverhead(), e.Buckets, e.Views, e.Batches)})
	}
	if r.Inference.Batches > 0 {
		rows = append(rows, [2]string{"inference batches", fmt.Sprintf("%d (mean size %.1f, mean %.0f ms, max %d ms)",
			r.Inference.Batches, r.Inference.MeanSize, r.Inference.MeanMs, r.Inference.MaxMs)})
	}
	rows = append(rows, [2]string{"duration", fmt.Sprintf("%.1fs (%.1f img/s)", r.DurationSec, r.ImagesPerS)})
	for _, row := range rows {
		o.logf("  %-24s %s", row[0], row[1])
	}
	if c.DeadLetters > 0 {
		o.logf("  see %s for the reasons", storage.Join(r.Config.Out, transforms.ErrorsFile))
	}
}
