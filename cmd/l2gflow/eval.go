package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/pipelines/eval"
)

// evalFlags are eval's settings outside the configuration file.
type evalFlags struct {
	inProcess bool
	samples   int
}

func evalCommand() *command {
	ef := &evalFlags{}
	return &command{
		name:      "eval",
		summary:   "score pseudo labels against ground truth (mIoU, per-class IoU, threshold sweep, report)",
		usage:     "--labels OUT --data ROOT --split train --report DIR [--runner prism|direct|dataflow]",
		sections:  config.SectionDataset | config.SectionEval,
		beamFlags: true,
		bind: func(fs *flag.FlagSet, cfg *config.Config) {
			bindDataset(fs, &cfg.Dataset)
			e := &cfg.Eval
			fs.StringVar(&e.Labels, "labels", e.Labels, "`prefix` holding <id>.png labels (and _cams/ with --keep-cams)")
			fs.StringVar(&e.Report, "report", e.Report, "report `dir`: metrics.json and report.html")
			fs.Float64Var(&e.SweepFrom, "sweep-from", e.SweepFrom, "first background threshold of the sweep")
			fs.Float64Var(&e.SweepTo, "sweep-to", e.SweepTo, "last background threshold of the sweep")
			fs.Float64Var(&e.SweepStep, "sweep-step", e.SweepStep, "sweep step")
			fs.BoolVar(&ef.inProcess, "in-process", false, "compute without Beam (debugging)")
			fs.IntVar(&ef.samples, "samples", 6, "sample rows in the report (besides the worst images)")
			bindVerbose(fs, &cfg.Runner)
		},
		run: func(ctx context.Context, env *cmdEnv) error { return runEval(ctx, env, ef) },
	}
}

func runEval(ctx context.Context, env *cmdEnv, ef *evalFlags) error {
	cfg := env.cfg
	if cfg.Eval.Report == "" {
		return usagef("--report is required")
	}
	quietBeam(env, cfg.Runner.Verbose)
	beam.Init()
	m, err := eval.Run(ctx, eval.Options{Dataset: cfg.Dataset, Eval: cfg.Eval, Runner: *runners.Runner,
		InProcess: ef.inProcess, Log: env.stderr})
	if err != nil {
		return err
	}
	st := storage.New()
	defer st.Close()
	if err := eval.WriteReport(ctx, st, cfg.Eval.Report, m, ef.samples); err != nil {
		return err
	}
	eval.PrintTable(env.stdout, m)
	fmt.Fprintf(env.stdout, "wrote %s and %s\n", storage.Join(cfg.Eval.Report, "metrics.json"), storage.Join(cfg.Eval.Report, eval.ReportFile))
	return nil
}
