package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model/backbone"
	"github.com/l2gflow/l2gflow/model/trainer"
)

func trainCommand() *command {
	return &command{
		name:     "train",
		summary:  "train the L2G (or CAM baseline) classifiers into a model artifact",
		usage:    "--data ROOT --split train --out model.l2g [--method l2g|cam] [--backbone resnet50 --pretrained FILE] [--steps N | --epochs N | --time-budget D]",
		sections: config.SectionDataset | config.SectionTrain | config.SectionRunner,
		bind: func(fs *flag.FlagSet, cfg *config.Config) {
			bindDataset(fs, &cfg.Dataset)
			t := &cfg.Train
			fs.StringVar(&t.Out, "out", t.Out, "model artifact `uri` to write")
			fs.StringVar(&t.Method, "method", t.Method, "l2g (local-to-global transfer) or cam (baseline)")
			fs.StringVar(&t.Arch, "arch", t.Arch, "global backbone: "+backbone.Help())
			fs.StringVar(&t.Arch, "backbone", t.Arch, "same as --arch")
			fs.StringVar(&t.Pretrained, "pretrained", t.Pretrained, "start both networks from torchvision/timm ResNet weights: a .safetensors or .onnx `file` (local or gs://)")
			fs.BoolVar(&t.PretrainedStrict, "pretrained-strict", t.PretrainedStrict, "refuse a pretrained file with missing, unexpected or mis-shaped tensors (false: skip and list them)")
			fs.BoolVar(&t.FreezeBN, "freeze-bn", t.FreezeBN, "keep batch normalisation fixed while training (the reference's choice with pretrained weights)")
			fs.Var(&t.PCM, "pcm", "add the pixel correlation module (the reference's CAM refinement) to both networks: true, false or auto (with --method l2g, not cam)")
			fs.StringVar(&t.LocalArch, "local-arch", t.LocalArch, "local backbone (default: --arch)")
			fs.IntVar(&t.OutputStride, "output-stride", t.OutputStride, "backbone output stride: 8 or 16")
			fs.IntVar(&t.ImageSize, "image-size", t.ImageSize, "training image side (reference 448)")
			fs.IntVar(&t.ViewSize, "view-size", t.ViewSize, "local view side (reference 320)")
			fs.IntVar(&t.Views, "views", t.Views, "local views an image")
			fs.StringVar(&t.ViewMode, "view-mode", t.ViewMode, "corners+random, random or grid")
			fs.Float64Var(&t.BgThr, "bg-thr", t.BgThr, "binarisation threshold of the local target")
			fs.StringVar(&t.Transfer, "transfer", t.Transfer, "transfer loss: mse (reference code) or kl (paper)")
			fs.Float64Var(&t.KDWeight, "kd-weight", t.KDWeight, "weight of the transfer loss")
			fs.Float64Var(&t.GlobalClsWeight, "global-cls-weight", t.GlobalClsWeight, "weight of the global network's own classification loss (reference 0; docs/defaults.md)")
			fs.StringVar(&t.Optimizer, "optimizer", t.Optimizer, "sgd (Nesterov) or adam")
			fs.Float64Var(&t.LR, "lr", t.LR, "base learning rate")
			fs.StringVar(&t.Schedule, "schedule", t.Schedule, "learning-rate schedule: step or poly")
			fs.IntVar(&t.BatchSize, "batch-size", t.BatchSize, "images a step")
			fs.IntVar(&t.Epochs, "epochs", t.Epochs, "epochs to train (unless --steps)")
			fs.IntVar(&t.Steps, "steps", t.Steps, "steps to train (overrides --epochs)")
			fs.StringVar(&t.TimeBudget, "time-budget", t.TimeBudget, "stop after this `duration` (e.g. 3m)")
			fs.Int64Var(&t.Seed, "seed", t.Seed, "random seed")
			fs.IntVar(&t.Workers, "workers", t.Workers, "input decoding goroutines (0: 2)")
			fs.IntVar(&t.CheckpointEv, "checkpoint-every", t.CheckpointEv, "steps between checkpoints (0: only on interrupt)")
			fs.BoolVar(&t.Resume, "resume", t.Resume, "continue from OUT.ckpt")
			bindBackend(fs, &cfg.Runner)
		},
		run: runTrain,
	}
}

// openDataset loads the configured dataset.
func openDataset(ctx context.Context, st *storage.Store, d config.Dataset) (*dataset.Dataset, error) {
	return dataset.Open(ctx, st, d.Root, d.Split, d.Manifest)
}

func runTrain(ctx context.Context, env *cmdEnv) error {
	cfg := env.cfg
	st := storage.New()
	defer st.Close()
	ds, err := openDataset(ctx, st, cfg.Dataset)
	if err != nil {
		return err
	}
	res, err := trainer.Run(ctx, trainer.Options{Config: cfg.Train, Data: ds, Backend: cfg.Runner.Backend,
		MaxPixels: cfg.Dataset.MaxPixels, Producer: producer(), Log: env.stderr, Store: st})
	if errors.Is(err, trainer.ErrInterrupted) {
		return err
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "model %s (sha256 %s): %d steps, final loss %.4f\n", cfg.Train.Out, res.ArtifactSHA256[:12],
		res.Manifest.Metrics.Steps, res.Manifest.Metrics.FinalLosses["total"])
	return nil
}
