// Package demo runs the whole job on the embedded synthetic benchmark:
// synthesise, train L2G and the CAM baseline on the same budget, label the
// train split with both, evaluate both, and compare.
package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/synth"
	"github.com/l2gflow/l2gflow/model/trainer"
	"github.com/l2gflow/l2gflow/pipelines/eval"
	"github.com/l2gflow/l2gflow/pipelines/label"
)

// Options configure the demo.
type Options struct {
	Out      string
	Synth    config.Synth // images, size, classes, seed
	Train    config.Train // shared by both methods (Method and Out are set per method)
	Label    config.Label
	Eval     config.Eval
	Backend  string
	Runner   string // Beam runner for label and eval; "" = prism
	Producer string
	Log      io.Writer
}

// Defaults are the demo's settings: about 10 minutes on 2 cores.
//
// Both methods train with train's defaults (the settings the quality study
// chose for the tiny backbone from scratch, docs/quality.md) for the same number
// of epochs (the same passes over the same images), on 1,000 images.
func Defaults(out string) Options {
	cfg := config.Default()
	s := cfg.Synth
	s.Out, s.Images = filepath.Join(out, "data"), 1000
	t := cfg.Train
	t.CheckpointEv = 0
	l := cfg.Label
	l.KeepCAMs, l.Overwrite = true, true
	return Options{Out: out, Synth: s, Train: t, Label: l, Eval: cfg.Eval, Backend: cfg.Runner.Backend}
}

// Row is one method's line of the comparison.
type Row struct {
	Method        string  `json:"method"`
	MIoU          float64 `json:"miou"`      // labels as written (threshold rule at Threshold)
	Threshold     float64 `json:"threshold"` // the background threshold the labels were written with
	ThresholdFrom string  `json:"threshold_from"`
	BestMIoU      float64 `json:"best_miou"` // best of the threshold sweep
	BestThreshold float64 `json:"best_threshold"`
	TrainSeconds  float64 `json:"train_seconds"`
	TrainImgPerS  float64 `json:"train_images_per_sec"`
	Epochs        float64 `json:"epochs"`
	LabelImgPerS  float64 `json:"label_images_per_sec"`
	Report        string  `json:"report"`
}

// Result is the demo's outcome.
type Result struct {
	Rows      []Row   `json:"rows"`
	Images    int     `json:"train_images"`
	TotalSecs float64 `json:"total_seconds"`
}

func (o Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

// Run executes the demo and writes OUT/summary.md and OUT/summary.json.
func Run(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	st := storage.New()
	defer st.Close()
	o.logf("demo 1/4: synthesising %d images, long side about %d px (%d classes), in %s", o.Synth.Images, o.Synth.Size, o.Synth.Classes, o.Synth.Out)
	if _, err := synth.Write(ctx, st, o.Synth.Out, synth.FromConfig(o.Synth)); err != nil {
		return nil, err
	}
	ds, err := dataset.Load(ctx, st, o.Synth.Out, "train")
	if err != nil {
		return nil, err
	}
	res := &Result{Images: len(ds.Records)}
	for i, method := range []string{"l2g", "cam"} {
		row := Row{Method: method}
		tc := o.Train
		tc.Method = method
		tc.Out = filepath.Join(o.Out, method+".l2g")
		o.logf("demo 2/4 (%d/2): training %s for %d epochs on %d images", i+1, method, tc.Epochs, len(ds.Records))
		tr, err := trainer.Run(ctx, trainer.Options{Config: tc, Data: ds, Backend: o.Backend,
			MaxPixels: config.Default().Dataset.MaxPixels, Producer: o.Producer, Log: o.Log, Store: st,
			ProgressEvery: 10 * time.Second})
		if err != nil {
			return nil, fmt.Errorf("train %s: %w", method, err)
		}
		row.TrainSeconds, row.TrainImgPerS, row.Epochs = tr.Manifest.Metrics.DurationSec, tr.Manifest.Metrics.ImagesPerSec, tr.Manifest.Metrics.Epochs

		lc := o.Label
		lc.Model, lc.Out = tc.Out, filepath.Join(o.Out, "labels-"+method)
		dc := config.Default().Dataset
		dc.Root, dc.Split = o.Synth.Out, "train"
		o.logf("demo 3/4 (%d/2): labelling the train split with %s", i+1, method)
		rec, err := label.Run(ctx, label.Options{Dataset: dc, Label: lc, Backend: o.Backend, Runner: o.Runner,
			Producer: o.Producer, Log: o.Log})
		if err != nil {
			return nil, fmt.Errorf("label %s: %w", method, err)
		}
		row.LabelImgPerS = rec.Record.ImagesPerS
		row.Threshold, row.ThresholdFrom = rec.Record.Threshold.Value, rec.Record.Threshold.Source

		ec := o.Eval
		ec.Labels, ec.Report = lc.Out, filepath.Join(o.Out, "report-"+method)
		o.logf("demo 4/4 (%d/2): evaluating %s", i+1, method)
		m, err := eval.Run(ctx, eval.Options{Dataset: dc, Eval: ec, Runner: o.Runner, Log: o.Log})
		if err != nil {
			return nil, fmt.Errorf("eval %s: %w", method, err)
		}
		if err := eval.WriteReport(ctx, st, ec.Report, m, 6); err != nil {
			return nil, err
		}
		row.MIoU, row.Report = float64(m.MIoU), filepath.Join(ec.Report, eval.ReportFile)
		row.BestMIoU, row.BestThreshold = math.NaN(), math.NaN()
		if m.Best != nil {
			row.BestMIoU, row.BestThreshold = float64(m.Best.MIoU), m.Best.Threshold
		}
		res.Rows = append(res.Rows, row)
	}
	res.TotalSecs = time.Since(start).Seconds()
	table := Table(res)
	raw, _ := json.MarshalIndent(res, "", "  ")
	if err := st.WriteFile(ctx, filepath.Join(o.Out, "summary.json"), append(raw, '\n')); err != nil {
		return nil, err
	}
	if err := st.WriteFile(ctx, filepath.Join(o.Out, "summary.md"), []byte(table)); err != nil {
		return nil, err
	}
	return res, nil
}

// Table renders the comparison as a Markdown table. The first mIoU is
// that of the labels as written, at the background threshold labeling
// used (the model's calibrated one unless configured otherwise).
func Table(r *Result) string {
	var b strings.Builder
	b.WriteString("| method | mIoU as written (bg thr, source) | best mIoU (bg thr) | training | train img/s | labelling img/s |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- |\n")
	for _, row := range r.Rows {
		best := "-"
		if !math.IsNaN(row.BestMIoU) {
			best = fmt.Sprintf("%.1f (%.2f)", 100*row.BestMIoU, row.BestThreshold)
		}
		fmt.Fprintf(&b, "| %s | %.1f (%.2f, %s) | %s | %s, %.1f epochs | %.1f | %.1f |\n", row.Method, 100*row.MIoU, row.Threshold, row.ThresholdFrom, best,
			(time.Duration(row.TrainSeconds * float64(time.Second))).Round(time.Second).String(), row.Epochs, row.TrainImgPerS, row.LabelImgPerS)
	}
	fmt.Fprintf(&b, "\n%d training images; whole demo %s.\n", r.Images, (time.Duration(r.TotalSecs * float64(time.Second))).Round(time.Second).String())
	return b.String()
}
