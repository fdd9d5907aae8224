package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/synth"
)

func synthCommand() *command {
	return &command{
		name:     "synth",
		summary:  "write the synthetic benchmark (images, ground truth, saliency, tag lists)",
		usage:    "--out DIR [--images N] [--size S] [--fixed-size] [--generator VARIANT] [--seed K] [--classes C]",
		sections: config.SectionSynth,
		bind: func(fs *flag.FlagSet, cfg *config.Config) {
			s := &cfg.Synth
			fs.StringVar(&s.Out, "out", s.Out, "output dataset root (local `path` or gs://bucket/prefix)")
			fs.IntVar(&s.Images, "images", s.Images, "number of images")
			fs.IntVar(&s.Size, "size", s.Size, "typical long side in pixels (each image its own size around it)")
			fs.BoolVar(&s.FixedSize, "fixed-size", s.FixedSize, "every image size x size (the first benchmark's behaviour)")
			fs.StringVar(&s.Generator, "generator", s.Generator, "benchmark variant: "+variantHelp())
			fs.Int64Var(&s.Seed, "seed", s.Seed, "random seed (same seed, same bytes)")
			fs.IntVar(&s.Classes, "classes", s.Classes, "number of foreground classes (2-20)")
			fs.Float64Var(&s.ValFraction, "val-fraction", s.ValFraction, "fraction of images in the val split")
			fs.Float64Var(&s.NoSaliencyFraction, "no-saliency-fraction", s.NoSaliencyFraction, "fraction of images without a saliency map")
		},
		run: runSynth,
	}
}

// variantHelp lists the benchmark variants with what each varies.
func variantHelp() string {
	var b strings.Builder
	for _, v := range synth.Variants() {
		fmt.Fprintf(&b, "\n    %s: %s", v, synth.VariantDoc(v))
	}
	return b.String()
}

// checkVariants refuses names that are not benchmark variants (a usage
// error).
func checkVariants(names ...string) error {
	for _, n := range names {
		if !slices.Contains(synth.Variants(), n) {
			return usagef("unknown benchmark variant %q (want one of %s)", n, strings.Join(synth.Variants(), ", "))
		}
	}
	return nil
}

func runSynth(ctx context.Context, env *cmdEnv) error {
	s := env.cfg.Synth
	if err := checkVariants(s.Generator); err != nil {
		return err
	}
	st := storage.New()
	defer st.Close()
	start := time.Now()
	p := newProgress(env.stderr, "synth", s.Images)
	opts := synth.FromConfig(s)
	opts.Progress = func(done, total int) { p.update(done) }
	sum, err := synth.Write(ctx, st, s.Out, opts)
	p.finish()
	if err != nil {
		return err
	}
	size := fmt.Sprintf("%dx%d px", s.Size, s.Size)
	if !s.FixedSize {
		size = fmt.Sprintf("%d sizes, long side %d-%d px", sum.Sizes, sum.MinLong, sum.MaxLong)
	}
	fmt.Fprintf(env.stdout, "wrote %d images (%d train, %d val, %d with saliency), %d classes, %s, to %s in %s\n",
		s.Images, sum.Train, sum.Val, sum.WithSaliency, s.Classes, size, s.Out, time.Since(start).Round(time.Millisecond))
	return nil
}
