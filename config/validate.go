package config

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/l2gflow/l2gflow/model/backbone"
	"github.com/l2gflow/l2gflow/model/maps"
)

// Section names the parts of the configuration a command uses, so that a
// command validates only what it reads.
type Section int

// The sections of Config.
const (
	SectionDataset Section = 1 << iota
	SectionSynth
	SectionTrain
	SectionLabel
	SectionEval
	SectionRunner
)

type checker struct{ errs []error }

func (c *checker) failf(key, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

func (c *checker) intRange(key string, v, lo, hi int) {
	if v < lo || v > hi {
		c.failf(key, "%d is out of range [%d, %d]", v, lo, hi)
	}
}

func (c *checker) floatRange(key string, v, lo, hi float64) {
	if !(v >= lo && v <= hi) {
		c.failf(key, "%g is out of range [%g, %g]", v, lo, hi)
	}
}

func (c *checker) oneOf(key, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		c.failf(key, "%q is not one of %q", v, allowed)
	}
}

// Validate checks the sections a command uses and returns every problem
// found, each naming its key (e.g. "train.view_size: ...").
func (cfg *Config) Validate(sections Section) error {
	c := &checker{}
	if sections&SectionDataset != 0 {
		d := cfg.Dataset
		if d.Root != "" && d.Manifest != "" {
			c.failf("dataset.manifest", "give either dataset.root (with dataset.split) or dataset.manifest, not both")
		}
		if d.Root == "" && d.Manifest == "" {
			c.failf("dataset.root", "required (or dataset.manifest)")
		}
		if d.Root != "" && d.Split == "" {
			c.failf("dataset.split", "required with dataset.root")
		}
		c.intRange("dataset.max_pixels", d.MaxPixels, 1, 1<<31-1)
	}
	if sections&SectionSynth != 0 {
		s := cfg.Synth
		if s.Out == "" {
			c.failf("synth.out", "required")
		}
		c.intRange("synth.images", s.Images, 1, 10_000_000)
		c.intRange("synth.size", s.Size, 32, 16384)
		c.intRange("synth.classes", s.Classes, 2, 20)
		if s.Generator == "" {
			c.failf("synth.generator", "required (a benchmark variant: l2gflow synth --help lists them)")
		}
		c.floatRange("synth.val_fraction", s.ValFraction, 0, 0.9)
		c.floatRange("synth.no_saliency_fraction", s.NoSaliencyFraction, 0, 1)
	}
	if sections&SectionTrain != 0 {
		t := cfg.Train
		if t.Out == "" {
			c.failf("train.out", "required")
		}
		c.oneOf("train.method", t.Method, "l2g", "cam")
		c.oneOf("train.pcm", string(t.PCM), string(Auto), string(True), string(False))
		c.oneOf("train.arch", t.Arch, backbone.Names()...)
		if t.LocalArch != "" {
			c.oneOf("train.local_arch", t.LocalArch, backbone.Names()...)
		}
		if t.OutputStride != 8 && t.OutputStride != 16 {
			c.failf("train.output_stride", "%d must be 8 or 16", t.OutputStride)
		}
		c.intRange("train.image_size", t.ImageSize, 32, 2048)
		c.intRange("train.view_size", t.ViewSize, 16, 2048)
		if t.ViewSize > t.ImageSize {
			c.failf("train.view_size", "%d must not exceed train.image_size (%d)", t.ViewSize, t.ImageSize)
		}
		if t.ImageSize%t.OutputStride != 0 && t.OutputStride > 0 {
			c.failf("train.image_size", "%d must be a multiple of train.output_stride (%d)", t.ImageSize, t.OutputStride)
		}
		if t.ViewSize%t.OutputStride != 0 && t.OutputStride > 0 {
			c.failf("train.view_size", "%d must be a multiple of train.output_stride (%d)", t.ViewSize, t.OutputStride)
		}
		c.intRange("train.views", t.Views, 1, 64)
		c.oneOf("train.view_mode", t.ViewMode, "corners+random", "random", "grid")
		if t.ViewMode == "corners+random" && t.Views < 4 {
			c.failf("train.views", "%d is fewer than the 4 corner views of view_mode corners+random", t.Views)
		}
		c.floatRange("train.bg_thr", t.BgThr, 0, 1)
		c.oneOf("train.transfer", t.Transfer, "mse", "kl")
		if t.CAMReading != "" {
			c.oneOf("train.cam_reading", t.CAMReading, maps.Readings...)
		}
		c.floatRange("train.kd_weight", t.KDWeight, 0, 1e4)
		c.floatRange("train.global_cls_weight", t.GlobalClsWeight, 0, 1e4)
		c.oneOf("train.optimizer", t.Optimizer, "sgd", "adam")
		if !(t.LR > 0 && t.LR <= 10) {
			c.failf("train.lr", "%g must be in (0, 10]", t.LR)
		}
		c.floatRange("train.momentum", t.Momentum, 0, 0.999)
		c.floatRange("train.weight_decay", t.WeightDecay, 0, 1)
		c.floatRange("train.new_layer_lr_mult", t.NewLayerLRx, 0, 1000)
		c.oneOf("train.schedule", t.Schedule, "step", "poly")
		c.intRange("train.step_epochs", t.StepEpochs, 1, 1_000_000)
		c.intRange("train.batch_size", t.BatchSize, 1, 4096)
		c.intRange("train.epochs", t.Epochs, 0, 1_000_000)
		c.intRange("train.steps", t.Steps, 0, 1<<31-1)
		if t.TimeBudget != "" {
			if d, err := time.ParseDuration(t.TimeBudget); err != nil || d <= 0 {
				c.failf("train.time_budget", "%q is not a positive duration such as 90s or 5m", t.TimeBudget)
			}
		}
		if t.Epochs == 0 && t.Steps == 0 && t.TimeBudget == "" {
			c.failf("train.epochs", "set train.epochs, train.steps or train.time_budget")
		}
		c.intRange("train.workers", t.Workers, 0, 256)
		c.intRange("train.checkpoint_every", t.CheckpointEv, 0, 1<<31-1)
		if t.Pretrained != "" {
			for _, k := range [][2]string{{"train.arch", t.Arch}, {"train.local_arch", t.LocalArch}} {
				if k[1] != "" && !slices.Contains(backbone.Pretrainable(), k[1]) {
					c.failf(k[0], "%s has no pretrained counterpart; with train.pretrained use %s", k[1], backbone.Choices(backbone.Pretrainable()))
				}
			}
		}
	}
	if sections&SectionLabel != 0 {
		l := cfg.Label
		if l.Model == "" {
			c.failf("label.model", "required")
		}
		if l.Out == "" {
			c.failf("label.out", "required")
		}
		if len(l.Scales) == 0 {
			c.failf("label.scales", "give at least one scale")
		}
		for i, s := range l.Scales {
			c.floatRange(fmt.Sprintf("label.scales[%d]", i), s, 0.1, 8)
		}
		c.oneOf("label.local_views", l.LocalViews, "none", "grid", "corners")
		c.oneOf("label.local_combine", l.LocalCombine, "sum", "max")
		c.oneOf("label.background", l.Background, "threshold", "saliency")
		c.floatRange("label.bg_threshold", l.BgThreshold, 0, 1)
		c.oneOf("label.bg_threshold_from", l.BgThresholdFrom, "model", "fixed")
		c.floatRange("label.saliency_threshold", l.SaliencyThreshold, 0, 1)
		c.floatRange("label.cam_threshold", l.CAMThreshold, 0, 1)
		c.oneOf("label.saliency_fallback", l.SaliencyFallback, "threshold", "skip")
		c.intRange("label.batch_size", l.BatchSize, 1, 256)
		c.intRange("label.batch_pixels", l.BatchPixels, 1, 1<<30)
		c.intRange("label.buckets_per_octave", l.BucketsPerOctave, 1, 32)
		c.floatRange("label.bucket_max_aspect", l.BucketMaxAspect, 1, 8)
		c.intRange("label.max_view_pixels", l.MaxViewPixels, 4096, 1<<30)
		c.intRange("label.work_pixels", l.WorkPixels, 4096, 1<<30)
		c.intRange("label.group_pixels", l.GroupPixels, 1, 1<<40)
		c.intRange("label.index_flush_labels", l.IndexFlushLabels, 1, 1<<30)
		c.intRange("label.index_flush_seconds", l.IndexFlushSeconds, 1, 86400)
		if l.MemoryBudget != "" {
			if n, err := ParseBytes(l.MemoryBudget); err != nil || n < 64<<20 {
				c.failf("label.memory_budget", "%q is not a size of at least 64MiB such as 2GiB or 1500MB", l.MemoryBudget)
			}
		}
	}
	if sections&SectionEval != 0 {
		e := cfg.Eval
		if e.Labels == "" {
			c.failf("eval.labels", "required")
		}
		c.floatRange("eval.sweep_from", e.SweepFrom, 0, 1)
		c.floatRange("eval.sweep_to", e.SweepTo, 0, 1)
		if e.SweepTo < e.SweepFrom {
			c.failf("eval.sweep_to", "%g is below eval.sweep_from (%g)", e.SweepTo, e.SweepFrom)
		}
		if !(e.SweepStep > 0 && e.SweepStep <= 1) {
			c.failf("eval.sweep_step", "%g must be in (0, 1]", e.SweepStep)
		}
	}
	if sections&SectionRunner != 0 {
		if cfg.Runner.Backend == "" {
			c.failf("runner.backend", "required, e.g. go:parallelism=-1")
		}
	}
	return errors.Join(c.errs...)
}
