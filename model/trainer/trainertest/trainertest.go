// Package trainertest makes the fixture that tests across packages share:
// a small synthetic dataset with a tiny model briefly trained on it. It is
// imported by tests only.
package trainertest

import (
	"context"
	"fmt"
	"testing"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/synth"
	"github.com/l2gflow/l2gflow/model/trainer"
)

// Options describe a fixture. Zero fields take the defaults below.
type Options struct {
	// The dataset (synth.Options): Images (default 8) of about Size px
	// (default 48), Classes (default 3), Seed (default 1).
	Images, Size, Classes int
	Seed                  int64
	ValFraction           float64
	NoSaliencyFraction    float64
	// Training: Method (default "cam"), Steps (default 1), ImageSize
	// (default Size), ViewSize (default ImageSize*2/3), Views (default:
	// train's), BatchSize (default 4), Optimizer and LR (default: train's),
	// CheckpointEvery (default 0: none).
	Method          string
	Steps           int
	ImageSize       int
	ViewSize        int
	Views           int
	BatchSize       int
	Optimizer       string
	LR              float64
	CheckpointEvery int
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Images, 8)
	def(&o.Size, 48)
	def(&o.Classes, 3)
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Method == "" {
		o.Method = "cam"
	}
	def(&o.Steps, 1)
	def(&o.ImageSize, o.Size)
	def(&o.ViewSize, o.ImageSize*2/3)
	def(&o.BatchSize, 4)
	return o
}

// TrainConfig is the training configuration of a fixture, writing the
// model to modelURI.
func (o Options) TrainConfig(modelURI string) config.Train {
	o = o.withDefaults()
	c := config.Default().Train
	c.Out, c.Method, c.Steps, c.ImageSize, c.ViewSize = modelURI, o.Method, o.Steps, o.ImageSize, o.ViewSize
	c.BatchSize, c.CheckpointEv = o.BatchSize, o.CheckpointEvery
	if o.Views > 0 {
		c.Views = o.Views
	}
	if o.Optimizer != "" {
		c.Optimizer = o.Optimizer
	}
	if o.LR > 0 {
		c.LR = o.LR
	}
	return c
}

// Write generates the dataset under root (local or gs://), trains a model
// on its train split into modelURI, and returns the train split.
func Write(ctx context.Context, st *storage.Store, root, modelURI string, o Options) (*dataset.Dataset, error) {
	o = o.withDefaults()
	if _, err := synth.Write(ctx, st, root, synth.Options{Images: o.Images, Size: o.Size, Classes: o.Classes,
		Seed: o.Seed, ValFraction: o.ValFraction, NoSaliencyFraction: o.NoSaliencyFraction}); err != nil {
		return nil, fmt.Errorf("fixture data: %w", err)
	}
	ds, err := dataset.Load(ctx, st, root, "train")
	if err != nil {
		return nil, fmt.Errorf("fixture data: %w", err)
	}
	if _, err := trainer.Run(ctx, trainer.Options{Config: o.TrainConfig(modelURI), Data: ds, Store: st}); err != nil {
		return nil, fmt.Errorf("fixture model: %w", err)
	}
	return ds, nil
}

// MustWrite is Write, failing the test on error.
func MustWrite(t testing.TB, st *storage.Store, root, modelURI string, o Options) *dataset.Dataset {
	t.Helper()
	ds, err := Write(context.Background(), st, root, modelURI, o)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}
