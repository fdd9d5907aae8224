// Package label assembles and runs the labeling pipeline: dataset to
// pseudo-label PNGs, on the Beam prism runner by default, any Beam runner
// (direct, Dataflow) on request, or in process without Beam for
// debugging. A run is prepared (Prepare: the list and the model checked,
// nothing embedded), run (Plan.Execute: the job reads the list, skips
// what is done, labels, and writes its own records) and reported (Report).
package label

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/exec/optimized" // faster reflection
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/dataflow"            // --runner dataflow
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/direct"              // --runner direct
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"               // the default
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/universal"           // portable runners

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
	"github.com/l2gflow/l2gflow/model/maps"
	"github.com/l2gflow/l2gflow/pipelines/workerbin"
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
	// Storage sets the retries of every storage client of the run.
	Storage storage.Options
}

// RunRecord is the run record the job writes (see transforms.RunRecord).
type RunRecord = transforms.RunRecord

// ErrTooManyFailures is returned (wrapped) when a run's dead letters
// exceed --max-failures; the labels and records are written first.
var ErrTooManyFailures = transforms.ErrTooManyFailures

// Plan is a prepared run: the dataset's list checked, the model read, and
// everything the job needs as plain options.
type Plan struct {
	Options Options
	Source  dataset.Source
	Info    dataset.Info
	Model   *model.Model
	Label   transforms.LabelOptions
	Run     transforms.RunOptions
	Mode    transforms.Existing
	Runner  string
}

// Result is what Execute reports.
type Result struct {
	// Record is the run record the job wrote; nil when the runner did not
	// wait for the job (Detached).
	Record *RunRecord
	// Detached is set when the job was handed over without waiting: a dry
	// run, a template written, or an asynchronous submission.
	Detached bool
	// Job is the runner's job id (Dataflow), Console its page, Template
	// the template written.
	Job, Console, Template string
}

// Prepare checks a run before anything is started: the dataset's list is
// streamed once (a bad line is refused with FILE:LINE), the model is read
// and checked against the dataset's classes, --max-failures is parsed,
// and temporary files left by a killed local run are removed. No record
// is embedded in the job: it reads the list itself.
func Prepare(ctx context.Context, o Options) (*Plan, error) {
	st := storage.NewWith(o.Storage)
	defer st.Close()
	src, info, err := dataset.OpenSource(ctx, st, o.Dataset.Root, o.Dataset.Split, o.Dataset.Manifest)
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
	if len(m.Manifest.Classes) != len(info.Classes) {
		return nil, fmt.Errorf("the model knows %d classes, the dataset %d (%s)", len(m.Manifest.Classes), len(info.Classes), src.List)
	}
	if _, _, err := transforms.FailureLimit(o.Label.MaxFailures, 0); err != nil {
		return nil, err
	}
	n, err := storage.CleanStaleTemps(o.Label.Out)
	if err != nil {
		return nil, fmt.Errorf("clean up after an interrupted run: %w", err)
	}
	if n > 0 {
		o.logf("label: removed %d temporary files left by an interrupted run", n)
	}
	p := &Plan{Options: o, Source: src, Info: info, Model: m, Mode: transforms.SkipExisting, Runner: o.Runner}
	if p.Runner == "" {
		p.Runner = "prism"
	}
	if o.InProcess {
		p.Runner = "in-process"
	}
	switch {
	case o.Label.Overwrite:
		p.Mode = transforms.Overwrite
	case o.Label.Incremental:
		p.Mode = transforms.Incremental
	}
	started := time.Now().UTC()
	runID := o.Label.RunID
	if runID == "" {
		runID = started.Format("20060102T150405.000000000Z")
	}
	p.Label = o.labelOptions(m)
	used := thresholdUsed(o.Label, m)
	p.Label.Fuse.BgThreshold = used.Value
	if used.Source == "model" && used.Value < p.Label.Fuse.CAMThreshold {
		// The calibrated threshold is where this model's normalised CAM
		// starts to mean its class. Under the saliency rule the saliency
		// map has already said "object"; the class-score floor only keeps
		// a salient pixel from a class the CAM shows no evidence for. A
		// model whose CAMs are low on object bodies (peaked on the
		// discriminative part) needs its own, lower floor; a floor above
		// the configured one would discard evidence (docs/design.md).
		p.Label.Fuse.CAMThreshold = used.Value
	}
	used.CAMThreshold = p.Label.Fuse.CAMThreshold
	dsRaw, _ := json.Marshal(o.Dataset)
	cfgRaw, _ := json.Marshal(o.Label)
	p.Run = transforms.RunOptions{Out: o.Label.Out, RunID: runID, ModelSHA: m.SHA256, Storage: o.Storage,
		MaxFailures: o.Label.MaxFailures, MemoryBudget: p.Label.MemoryBudget,
		IndexFlushLabels: o.Label.IndexFlushLabels, IndexFlushEvery: time.Duration(o.Label.IndexFlushSeconds) * time.Second,
		Record: RunRecord{Started: started, Runner: p.Runner, Producer: o.Producer, Mode: string(p.Mode), Threshold: used,
			Model:   transforms.ModelInfo{URI: o.Label.Model, SHA256: m.SHA256, Manifest: m.Manifest},
			Dataset: dsRaw, Config: cfgRaw, Buckets: p.Label.Engine.Buckets}}
	return p, nil
}

// thresholdUsed picks the background threshold of a run and says why: the
// model's calibrated one unless the configuration fixes it or the model
// has none (it was trained without saliency maps, so nothing could be
// calibrated).
func thresholdUsed(l config.Label, m *model.Model) transforms.ThresholdUsed {
	fixed := transforms.ThresholdUsed{Value: l.BgThreshold, Source: "fixed"}
	t := m.Manifest.Threshold
	switch {
	case l.BgThresholdFrom == "fixed":
		fixed.Reason = fmt.Sprintf("label.bg_threshold %.2f, as label.bg_threshold_from is fixed", l.BgThreshold)
		return fixed
	case t == nil:
		fixed.Reason = fmt.Sprintf("label.bg_threshold %.2f: the model has no calibrated threshold (it was trained without saliency maps, so none could be calibrated; give saliency maps at training, or set --bg-threshold)", l.BgThreshold)
		return fixed
	}
	return transforms.ThresholdUsed{Value: t.Value, Source: "model", Images: t.Images, Warnings: t.Warnings,
		Reason: fmt.Sprintf("calibrated by the model on %d training images' saliency maps", t.Images)}
}

// labelOptions turns the configuration into the stages' options.
func (o Options) labelOptions(m *model.Model) transforms.LabelOptions {
	l := o.Label
	comb := maps.Sum
	if l.LocalCombine == "max" {
		comb = maps.Max
	}
	engine := model.EngineOptions{Buckets: model.BucketOptions{PerOctave: l.BucketsPerOctave, MaxAspect: l.BucketMaxAspect,
		MaxViewPixels: l.MaxViewPixels, BatchPixels: l.BatchPixels, MaxBatch: l.BatchSize},
		Background: m.Manifest.Reading == model.ReadSoftmax}
	return transforms.LabelOptions{
		Out: l.Out, Model: l.Model, Backend: o.Backend, Engine: engine,
		Views: model.ViewOptions{Scales: l.Scales, Flip: l.Flip, LocalViews: l.LocalViews,
			LocalSize: m.Manifest.ViewSize(), LocalCombine: comb, Limits: engine.Buckets},
		Fuse: transforms.FuseOptions{Classes: len(m.Manifest.Classes), Background: transforms.Background(l.Background),
			BgThreshold: l.BgThreshold, SaliencyThreshold: l.SaliencyThreshold, CAMThreshold: l.CAMThreshold,
			SaliencyFallback: transforms.SaliencyFallback(l.SaliencyFallback), LocalCombine: comb, KeepCAMs: l.KeepCAMs,
			Reading: m.Manifest.Reading, WorkPixels: l.WorkPixels},
		MaxPixels: o.Dataset.MaxPixels, Storage: o.Storage,
		GroupPixels: l.GroupPixels, MemoryBudget: memoryBudget(l.MemoryBudget),
	}
}

// memoryBudget is the configured budget in bytes (0: automatic; the
// configuration was validated).
func memoryBudget(s string) int64 {
	if s == "" {
		return 0
	}
	n, _ := config.ParseBytes(s)
	return n
}

// Build adds the whole labeling job to a pipeline: the list read by the
// job, the pending records selected against OUT, the labeling stages, and
// the run's bookkeeping.
func (p *Plan) Build(s beam.Scope) {
	records, badLines := transforms.ReadRecords(s, p.Source)
	pending, skipped := transforms.SelectPending(s, records, p.Label.Out, p.Model.SHA256, p.Mode)
	outs := transforms.LabelImages(s, pending, p.Label)
	outs.DeadLetters = beam.Flatten(s, outs.DeadLetters, badLines)
	transforms.RecordRun(s, outs, skipped, p.Run)
}

// Execute runs the planned job and, when the runner waits for it, reads
// back the run record the job wrote.
func (p *Plan) Execute(ctx context.Context) (*Result, error) {
	o := p.Options
	o.logf("label: %d images listed in %s; model %s (%s, sha256 %s); %s; run %s",
		p.Info.Listed, p.Source.List, o.Label.Model, p.Model.Manifest.Method, p.Model.SHA256[:12], p.Mode, p.Run.RunID)
	if p.Label.Fuse.Background == transforms.BackgroundThreshold || p.Label.Fuse.SaliencyFallback == transforms.FallbackThreshold {
		th := p.Run.Record.Threshold
		o.logf("label: background threshold %.3g: %s", th.Value, th.Reason)
	}
	for _, w := range p.Run.Record.Threshold.Warnings {
		o.logf("label: warning: the model's calibration says: %s", w)
	}
	if o.InProcess {
		stop := o.progress(int64(p.Info.Listed))
		rec, err := transforms.RunInProcess(ctx, p.Source, p.Mode, p.Label, p.Run)
		stop()
		if err != nil && rec == nil {
			return nil, err
		}
		return &Result{Record: rec}, err
	}
	wb, restore, err := workerbin.Use(p.Runner)
	if err != nil {
		return nil, err
	}
	defer restore()
	if wb.Self {
		o.logf("label: the workers run this binary (%s)", wb.Binary)
	}
	if p.Runner == "dataflow" {
		return p.executeDataflow(ctx)
	}
	pipe, s := beam.NewPipelineWithRoot()
	p.Build(s)
	stop := o.progress(int64(p.Info.Listed))
	res, err := beam.Run(ctx, p.Runner, pipe)
	stop()
	if err != nil {
		// A job that failed on too many dead letters wrote its record.
		if rec, rerr := p.readRecord(ctx); rerr == nil && rec.TooManyFailures {
			return &Result{Record: rec}, tooMany(rec)
		}
		return nil, fmt.Errorf("pipeline on %s failed: %s", p.Runner, RootCause(err))
	}
	if detached(res) {
		return &Result{Detached: true, Job: jobID(res)}, nil
	}
	rec, err := p.readRecord(ctx)
	if err != nil {
		return nil, err
	}
	return &Result{Record: rec}, nil
}

// doFnFailed finds the DoFn named in a Beam worker's error.
var doFnFailed = regexp.MustCompile(`DoFn\[[^\]]*Name: [^\]]*?\.(\w+)\] failed:\s*`)

// RootCause shortens a Beam job's error to its cause: the runner's error
// holds the whole failed bundle's plan, then "caused by:" links down to
// the DoFn that failed and its error.
func RootCause(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, "caused by:\n"); i >= 0 {
		msg = msg[i+len("caused by:\n"):]
	}
	if m := doFnFailed.FindStringSubmatchIndex(msg); m != nil {
		msg = fmt.Sprintf("stage %s: %s", msg[m[2]:m[3]], msg[m[1]:])
	}
	return strings.TrimSpace(msg)
}

// tooMany is the error of a run whose dead letters exceeded the limit.
func tooMany(rec *RunRecord) error {
	return fmt.Errorf("%w: %d dead letters, more than the %d allowed (--max-failures %s); see %s",
		ErrTooManyFailures, rec.Counts.DeadLetters, rec.FailureLimit, rec.MaxFailures, rec.ErrorsFile)
}

// readRecord reads the run record the job wrote for this run.
func (p *Plan) readRecord(ctx context.Context) (*RunRecord, error) {
	st := storage.NewWith(p.Options.Storage)
	defer st.Close()
	uri := transforms.RunRecordURI(p.Run.Out, p.Run.RunID)
	raw, err := st.ReadFile(ctx, uri, 256<<20)
	if err != nil {
		return nil, fmt.Errorf("the job ended but its run record cannot be read: %w", err)
	}
	var rec RunRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("run record %s: %w", uri, err)
	}
	return &rec, nil
}

// detached reports whether a runner returned without running the job to
// its end: no result (a dry run), a result without a value behind it (the
// Dataflow runner when it writes a template), or a result without
// metrics (an asynchronous submission, whose Metrics panics).
func detached(res beam.PipelineResult) (d bool) {
	if res == nil || reflectNil(res) {
		return true
	}
	defer func() {
		if recover() != nil {
			d = true
		}
	}()
	_ = res.Metrics()
	return false
}

// jobID returns the runner's job id, if it has one.
func jobID(res beam.PipelineResult) (id string) {
	if res == nil || reflectNil(res) {
		return ""
	}
	defer func() {
		if recover() != nil {
			id = ""
		}
	}()
	return res.JobID()
}

// Run prepares, executes and reports a labeling run: the CLI's label
// command.
func Run(ctx context.Context, o Options) (*Result, error) {
	p, err := Prepare(ctx, o)
	if err != nil {
		return nil, err
	}
	res, err := p.Execute(ctx)
	if res != nil {
		o.Report(res)
	}
	return res, err
}

// Report prints a run's summary.
func (o Options) Report(res *Result) {
	if o.Log == nil {
		return
	}
	if res.Detached {
		switch {
		case res.Template != "":
			o.logf("  template written to %s; the job runs when the template is launched", res.Template)
		case res.Job != "":
			o.logf("  job %s submitted, not waited for; it writes its own records under %s", res.Job, o.Label.Out)
			if res.Console != "" {
				o.logf("  console: %s", res.Console)
			}
		default:
			o.logf("  the runner returned without running the job (dry run)")
		}
		return
	}
	r := res.Record
	c := r.Counts
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
	if in := c.Inference; in.Views > 0 {
		most := 0
		for k := range in.BatchViews {
			most = max(most, k)
		}
		rows = append(rows, [2]string{"inference", fmt.Sprintf("%d views in %d batches (%.2f views a batch, at most %d), padding x%.2f of the views' pixels",
			in.Views, in.Batches, in.ViewsPerBatch(), most, in.PaddingOverhead())})
	}
	if d := c.ImageMillis; d.Count > 0 {
		mp := c.ImageMegapixels
		rows = append(rows, [2]string{"per image", fmt.Sprintf("%.0f ms (%.0f-%.0f), %.2f megapixels (%.2f-%.2f)",
			d.Mean(), d.Min, d.Max, mp.Mean(), mp.Min, mp.Max)})
	}
	var sets []string
	for k, n := range c.KernelSets {
		sets = append(sets, fmt.Sprintf("%s (%d labels)", k, n))
	}
	slices.Sort(sets)
	if len(sets) > 0 {
		rows = append(rows, [2]string{"kernels", strings.Join(sets, ", ")})
	}
	if mb := r.MemoryBudget; mb.Bytes > 0 {
		rows = append(rows, [2]string{"memory budget", fmt.Sprintf("%d MiB (%s), at most %d MiB held", mb.Bytes>>20, mb.Source, mb.PeakHeld>>20)})
	}
	rows = append(rows, [2]string{"duration", fmt.Sprintf("%.1fs (%.1f img/s)", r.DurationSec, r.ImagesPerS)})
	for _, row := range rows {
		o.logf("  %-24s %s", row[0], row[1])
	}
	if c.DeadLetters > 0 {
		o.logf("  see %s for the reasons", r.ErrorsFile)
	}
}

func (o Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

// progress prints the labels this process has written every
// ProgressEvery, for runners that run the stages here (prism's loopback
// workers, the in-process path); it returns a function that stops it.
func (o Options) progress(total int64) func() {
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
				o.logf("label: %s", progressLine(n, total, time.Since(start)))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// progressLine renders labels written out of the images listed (an upper
// bound of those to do), with the rate and the time left at that rate.
func progressLine(n, total int64, elapsed time.Duration) string {
	rate := float64(n) / elapsed.Seconds()
	eta := "?"
	if rate > 0 && total >= n {
		eta = (time.Duration(float64(total-n)/rate) * time.Second).Round(time.Second).String()
	}
	return fmt.Sprintf("%d/%d written, %.1f img/s, at most %s left", n, total, rate, eta)
}
