package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/synth"
	"github.com/l2gflow/l2gflow/pipelines/study"
)

// studyFlags are the study's settings.
type studyFlags struct {
	out, report, arms, seeds, selectSeeds, generators string
	images                                            int
	quick, reportOnly                                 bool
}

func studyCommand() *command {
	sf := &studyFlags{}
	def := study.Defaults("study-out")
	return &command{
		name:     "study",
		summary:  "label-quality study: every arm over seeds and generators, resumable, written to docs/quality.md (an hour or more)",
		usage:    "[--config FILE (train section: the arms' base)] [--out study-out] [--report docs/quality.md] [--quick] [--arms a,b] [--seeds 1,...,6] [--select-seeds 1,2,3] [--generators v1,v2,...] [--report-only]",
		sections: config.SectionRunner | config.SectionTrain,
		bind: func(fs *flag.FlagSet, cfg *config.Config) {
			fs.StringVar(&sf.out, "out", "study-out", "working `dir` (data, models, results; a re-run resumes there)")
			fs.StringVar(&sf.report, "report", "docs/quality.md", "Markdown report `file` (sweep plots are written beside it)")
			fs.BoolVar(&sf.quick, "quick", false, "a check of minutes: 300 images, a third of the epochs, one seed, generator v2")
			fs.StringVar(&sf.arms, "arms", "", "comma-separated arms to run (default all: "+armNames()+")")
			fs.StringVar(&sf.seeds, "seeds", joinSeeds(def.Seeds), "comma-separated seeds (each its own dataset and training seed)")
			fs.StringVar(&sf.selectSeeds, "select-seeds", joinSeeds(def.SelectSeeds), "comma-separated seeds the defaults are chosen on; the report shows the others")
			fs.StringVar(&sf.generators, "generators", strings.Join(def.Generators, ","), "comma-separated benchmark variants ("+strings.Join(synth.Variants(), ", ")+")")
			fs.IntVar(&sf.images, "images", def.Synth.Images, "synthetic images a dataset (80% train)")
			fs.IntVar(&cfg.Train.Epochs, "epochs", cfg.Train.Epochs, "training epochs of every arm")
			fs.BoolVar(&sf.reportOnly, "report-only", false, "rewrite the report from the results under --out without running anything")
			bindBackend(fs, &cfg.Runner)
		},
		run: func(ctx context.Context, env *cmdEnv) error { return runStudy(ctx, env, sf) },
	}
}

func armNames() string {
	var names []string
	for _, a := range study.Arms() {
		names = append(names, a.Name)
	}
	return strings.Join(names, ", ")
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func runStudy(ctx context.Context, env *cmdEnv, sf *studyFlags) error {
	// The base of every arm is the configuration (train's defaults unless
	// --config says otherwise); the label and eval sections too.
	o := study.Defaults(sf.out)
	o.Synth.Images = sf.images
	o.Train, o.Label, o.Eval = env.cfg.Train, env.cfg.Label, env.cfg.Eval
	o.Train.CheckpointEv, o.Label.KeepCAMs, o.Label.Overwrite = 0, true, true
	o.Arms, o.Generators = splitList(sf.arms), splitList(sf.generators)
	var err error
	if o.Seeds, err = parseSeeds("--seeds", sf.seeds); err != nil {
		return err
	}
	if o.SelectSeeds, err = parseSeeds("--select-seeds", sf.selectSeeds); err != nil {
		return err
	}
	for _, seed := range o.SelectSeeds {
		if !slices.Contains(o.Seeds, seed) {
			return usagef("--select-seeds: seed %d is not among --seeds %s", seed, sf.seeds)
		}
	}
	o.Commit = buildCommit()
	if len(o.Seeds) == 0 || len(o.Generators) == 0 {
		return usagef("--seeds and --generators need at least one value")
	}
	if err := checkVariants(o.Generators...); err != nil {
		return err
	}
	if sf.quick {
		o = o.Quick()
	}
	cfg := config.Config{Synth: o.Synth, Train: o.Train, Runner: env.cfg.Runner}
	cfg.Synth.Out = sf.out
	if err := cfg.Validate(config.SectionSynth | config.SectionTrain); err != nil {
		return usageError{err}
	}
	o.Backend, o.Log = env.cfg.Runner.Backend, env.stderr
	var results []study.Result
	if sf.reportOnly {
		results, err = study.LoadResults(sf.out)
	} else {
		results, err = study.Run(ctx, o)
	}
	if err != nil {
		return err
	}
	if len(results) == 0 {
		return fmt.Errorf("no results under %s", sf.out)
	}
	if err := os.MkdirAll(filepath.Dir(sf.report), 0o755); err != nil {
		return err
	}
	base := strings.TrimSuffix(filepath.Base(sf.report), filepath.Ext(sf.report))
	command := "l2gflow " + strings.Join(os.Args[1:], " ")
	if err := study.WriteReport(sf.report, results, study.ReportOptions{Options: o, Command: strings.TrimSpace(command), Plot: base + "-sweeps-%s.svg"}); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%d runs; report %s\n", len(results), sf.report)
	return nil
}

func joinSeeds(seeds []int64) string {
	var out []string
	for _, s := range seeds {
		out = append(out, strconv.FormatInt(s, 10))
	}
	return strings.Join(out, ",")
}

// parseSeeds parses a flag's comma-separated seeds.
func parseSeeds(flagName, s string) ([]int64, error) {
	var out []int64
	for _, f := range splitList(s) {
		seed, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, usagef("%s: %q is not an integer", flagName, f)
		}
		out = append(out, seed)
	}
	return out, nil
}
