package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/pipelines/demo"
)

// demoFlags are the demo's settings.
type demoFlags struct {
	out             string
	images, size    int
	epochs, classes int
}

func demoCommand() *command {
	df := &demoFlags{}
	def := demo.Defaults("demo-out")
	return &command{
		name:      "demo",
		summary:   "synthesise, train L2G and the CAM baseline, label, evaluate and compare (about 10 minutes)",
		usage:     "[--out demo-out] [--images N] [--epochs E]",
		sections:  config.SectionRunner,
		beamFlags: true,
		bind: func(fs *flag.FlagSet, cfg *config.Config) {
			fs.StringVar(&df.out, "out", "demo-out", "output `dir`")
			fs.IntVar(&df.images, "images", def.Synth.Images, "synthetic images (80% train)")
			fs.IntVar(&df.size, "size", def.Synth.Size, "image side in pixels")
			fs.IntVar(&df.classes, "classes", def.Synth.Classes, "classes")
			fs.IntVar(&df.epochs, "epochs", def.Train.Epochs, "training epochs of each method (the shared budget)")
			bindBackend(fs, &cfg.Runner)
			bindVerbose(fs, &cfg.Runner)
		},
		run: func(ctx context.Context, env *cmdEnv) error { return runDemo(ctx, env, df) },
	}
}

func runDemo(ctx context.Context, env *cmdEnv, df *demoFlags) error {
	o := demo.Defaults(df.out)
	o.Synth.Images, o.Synth.Size, o.Synth.Classes, o.Train.Epochs = df.images, df.size, df.classes, df.epochs
	if df.size < 64 || df.size%o.Train.OutputStride != 0 {
		return usagef("--size must be a multiple of %d, at least 64", o.Train.OutputStride)
	}
	// Scale the training crops with the image size (128 -> 128/96).
	o.Train.ImageSize = df.size
	o.Train.ViewSize = (df.size * 3 / 4) / o.Train.OutputStride * o.Train.OutputStride
	cfg := config.Config{Synth: o.Synth, Train: o.Train, Runner: env.cfg.Runner}
	if err := cfg.Validate(config.SectionSynth | config.SectionTrain); err != nil {
		return usageError{err}
	}
	quietBeam(env, env.cfg.Runner.Verbose)
	beam.Init()
	o.Backend, o.Runner, o.Producer, o.Log = env.cfg.Runner.Backend, *runners.Runner, producer(), env.stderr
	res, err := demo.Run(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprint(env.stdout, "\n"+demo.Table(res))
	for _, r := range res.Rows {
		fmt.Fprintf(env.stdout, "report (%s): %s\n", r.Method, r.Report)
	}
	return nil
}
