package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamlog "github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/pipelines/label"
	"github.com/l2gflow/l2gflow/transforms"
)

// labelFlags are the label command's settings outside the configuration.
type labelFlags struct {
	progressEvery time.Duration
	cpuProfile    string
	memProfile    string
}

func labelCommand() *command {
	lf := &labelFlags{}
	return &command{
		name:      "label",
		summary:   "write pseudo labels with the Beam labeling pipeline",
		usage:     "--model model.l2g --data ROOT --split train --out OUT [--runner prism|direct|dataflow] [--in-process]",
		sections:  config.SectionDataset | config.SectionLabel | config.SectionRunner,
		beamFlags: true,
		bind: func(fs *flag.FlagSet, cfg *config.Config) {
			bindDataset(fs, &cfg.Dataset)
			l := &cfg.Label
			fs.StringVar(&l.Model, "model", l.Model, "model artifact `uri`")
			fs.StringVar(&l.Out, "out", l.Out, "output `prefix` for <id>.png labels (local or gs://)")
			fs.Var(floatList{&l.Scales}, "scales", "comma-separated inference scales")
			fs.BoolVar(&l.Flip, "flip", l.Flip, "also infer each scale mirrored")
			fs.StringVar(&l.LocalViews, "local-views", l.LocalViews, "add local crops: none, grid or corners")
			fs.StringVar(&l.LocalCombine, "local-combine", l.LocalCombine, "merge local crops by sum or max")
			fs.StringVar(&l.Background, "background", l.Background, "background rule: threshold or saliency")
			fs.Float64Var(&l.BgThreshold, "bg-threshold", l.BgThreshold, "background score of the threshold rule (with --bg-threshold-from fixed, or a model without a calibrated one)")
			fs.StringVar(&l.BgThresholdFrom, "bg-threshold-from", l.BgThresholdFrom, "model (the threshold calibrated at training on saliency maps) or fixed")
			fs.Float64Var(&l.SaliencyThreshold, "saliency-threshold", l.SaliencyThreshold, "saliency binarisation threshold")
			fs.Float64Var(&l.CAMThreshold, "cam-threshold", l.CAMThreshold, "class scores below this are dropped (saliency rule; with --bg-threshold-from model, the model's calibrated threshold when lower)")
			fs.StringVar(&l.SaliencyFallback, "saliency-fallback", l.SaliencyFallback, "without usable saliency: threshold or skip")
			fs.BoolVar(&l.KeepCAMs, "keep-cams", l.KeepCAMs, "also store the fused CAMs (for threshold sweeps in eval)")
			fs.BoolVar(&l.Overwrite, "overwrite", l.Overwrite, "rewrite labels that exist")
			fs.IntVar(&l.BatchSize, "batch-size", l.BatchSize, "largest CAM inference batch")
			fs.IntVar(&l.BatchPixels, "batch-pixels", l.BatchPixels, "padded pixels of an inference batch")
			fs.IntVar(&l.BucketsPerOctave, "buckets-per-octave", l.BucketsPerOctave, "canonical view sides per doubling of size")
			fs.IntVar(&l.MaxViewPixels, "max-view-pixels", l.MaxViewPixels, "scale down inference views larger than this")
			fs.IntVar(&l.WorkPixels, "work-pixels", l.WorkPixels, "fuse larger images at this many pixels (labels upsampled row by row)")
			fs.IntVar(&l.GroupPixels, "group-pixels", l.GroupPixels, "image pixels whose views are batched together at most")
			fs.StringVar(&l.MemoryBudget, "memory-budget", l.MemoryBudget, "each worker process's memory budget for images, e.g. 2GiB (default: half its memory)")
			fs.IntVar(&l.IndexFlushLabels, "index-flush-labels", l.IndexFlushLabels, "write the model's index every this many labels (an interrupted run loses at most that many)")
			fs.BoolVar(&l.InProcess, "in-process", l.InProcess, "run the stages without Beam (debugging)")
			fs.BoolVar(&l.Incremental, "incremental", l.Incremental, "label only images without a label from this model (scheduled runs)")
			fs.StringVar(&l.RunID, "run-id", l.RunID, "name of the run's records (default: the start time)")
			fs.StringVar(&l.MaxFailures, "max-failures", l.MaxFailures, "exit 1 when dead letters exceed N, a fraction (0.01) or a percentage (1%)")
			fs.DurationVar(&lf.progressEvery, "progress-every", 0, "interval of progress lines (default 10s; 30s on Dataflow)")
			fs.StringVar(&lf.cpuProfile, "cpuprofile", "", "write a CPU profile of this process to `file` (go tool pprof; the prism and direct runners run the stages in this process)")
			fs.StringVar(&lf.memProfile, "memprofile", "", "write a heap profile (allocations included) to `file` at the end")
			bindBackend(fs, &cfg.Runner)
			bindVerbose(fs, &cfg.Runner)
		},
		run: func(ctx context.Context, env *cmdEnv) error { return runLabel(ctx, env, lf) },
	}
}

func runLabel(ctx context.Context, env *cmdEnv, lf *labelFlags) (err error) {
	cfg := env.cfg
	quietBeam(env, cfg.Runner.Verbose)
	beam.Init()
	stopMuting := muteWhenInterrupted(ctx)
	defer stopMuting()
	stopProfiles, err := startProfiles(lf.cpuProfile, lf.memProfile)
	if err != nil {
		return err
	}
	defer func() {
		if perr := stopProfiles(); perr != nil && err == nil {
			err = perr
		}
	}()
	before := transforms.WrittenInProcess()
	res, err := label.Run(ctx, label.Options{Dataset: cfg.Dataset, Label: cfg.Label, Backend: cfg.Runner.Backend,
		Runner: *runners.Runner, InProcess: cfg.Label.InProcess, Producer: producer(), Log: env.stderr,
		ProgressEvery: lf.progressEvery})
	if err != nil && ctx.Err() != nil {
		return interrupted(cfg.Label, *runners.Runner, transforms.WrittenInProcess()-before, res)
	}
	if err != nil {
		return err
	}
	switch {
	case res.Template != "":
		fmt.Fprintf(env.stdout, "template written to %s\n", res.Template)
	case res.Detached && res.Job != "":
		fmt.Fprintf(env.stdout, "job %s submitted without waiting; it writes labels and its run record under %s\nconsole: %s\n",
			res.Job, cfg.Label.Out, res.Console)
	case res.Detached:
		fmt.Fprintf(env.stdout, "dry run: no job was run\n")
	default:
		c := res.Record.Counts
		fmt.Fprintf(env.stdout, "%d labels written to %s (%d skipped, %d dead letters)\n", c.LabelsWritten,
			cfg.Label.Out, c.SkippedExisting, c.DeadLetters)
	}
	return nil
}

// interruptedError is the error of a run stopped by Ctrl-C (or SIGTERM):
// it says what happened in one line, and exits with 130.
type interruptedError struct{ msg string }

func (e interruptedError) Error() string { return e.msg }

// interrupted says what an interrupted label run leaves: how many labels
// it wrote and that running the same command again continues (on
// Dataflow: that the job goes on).
func interrupted(l config.Label, runner string, written int64, res *label.Result) error {
	if runner == "dataflow" {
		msg := "interrupted: stopped following the Dataflow job; the job goes on and writes its own labels and records"
		if res != nil && res.Job != "" {
			msg = fmt.Sprintf("interrupted: stopped following Dataflow job %s; the job goes on and writes its own labels and records (console: %s)", res.Job, res.Console)
		}
		return interruptedError{msg}
	}
	again := "run the same command again to label the rest (labels written are kept and skipped)"
	if l.Overwrite {
		again = "run it again without --overwrite to label only the rest"
	}
	return interruptedError{fmt.Sprintf("interrupted: %d labels written to %s; %s", written, l.Out, again)}
}

// muteWhenInterrupted drops the runner's log lines once ctx is cancelled:
// a stopped job's workers report every bundle they abandon, which says
// nothing the interrupted line does not. It returns a function that stops
// watching.
func muteWhenInterrupted(ctx context.Context) func() {
	var muted atomic.Bool
	slog.SetDefault(slog.New(gatedHandler{h: slog.Default().Handler(), muted: &muted}))
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			muted.Store(true)
		case <-done:
		}
	}()
	return func() { close(done) }
}

// gatedHandler passes log records to h until muted.
type gatedHandler struct {
	h     slog.Handler
	muted *atomic.Bool
}

func (g gatedHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return !g.muted.Load() && g.h.Enabled(ctx, l)
}
func (g gatedHandler) Handle(ctx context.Context, r slog.Record) error {
	if g.muted.Load() {
		return nil
	}
	return g.h.Handle(ctx, r)
}
func (g gatedHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return gatedHandler{h: g.h.WithAttrs(a), muted: g.muted}
}
func (g gatedHandler) WithGroup(name string) slog.Handler {
	return gatedHandler{h: g.h.WithGroup(name), muted: g.muted}
}

// quietBeam keeps the runner's informational log lines (prism logs every
// job state change) off the console unless verbose.
func quietBeam(env *cmdEnv, verbose bool) {
	level := slog.LevelWarn
	beamlog.LogLevel = "warn" // prism resets the default logger from this
	if verbose {
		level = slog.LevelInfo
		beamlog.LogLevel = "info"
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: level})))
}
