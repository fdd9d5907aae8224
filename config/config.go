// Package config holds l2gflow's typed configuration: defaults, loading
// from a YAML file (unknown keys are errors, with the line), and validation
// whose messages name the offending key.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/dustin/go-humanize"
	"github.com/l2gflow/l2gflow/model/backbone"
)

// Config is the whole configuration. Each command uses the sections it
// needs; YAML keys are the snake_case names in the tags.
type Config struct {
	Dataset Dataset `yaml:"dataset"`
	Synth   Synth   `yaml:"synth"`
	Train   Train   `yaml:"train"`
	Label   Label   `yaml:"label"`
	Eval    Eval    `yaml:"eval"`
	Runner  Runner  `yaml:"runner"`
}

// Dataset selects the input images and their tags.
type Dataset struct {
	// Root is the dataset root (local path or gs://bucket/prefix) laid out
	// as JPEGImages/, SegmentationClass/, Saliency/, <split>_cls.txt.
	Root string `yaml:"root"`
	// Split names the tag list <split>_cls.txt under Root. Default "train".
	Split string `yaml:"split"`
	// Manifest is a JSON Lines manifest used instead of Root/Split.
	Manifest string `yaml:"manifest"`
	// MaxPixels refuses images whose declared width*height is larger.
	// Default 50,000,000.
	MaxPixels int `yaml:"max_pixels"`
}

// Synth configures the synthetic benchmark generator.
type Synth struct {
	Out    string `yaml:"out"`    // output root
	Images int    `yaml:"images"` // number of images, default 2000
	// Size is the typical long side in pixels (default 128): each image
	// gets its own size around it, as photos do, unless FixedSize.
	Size      int  `yaml:"size"`
	FixedSize bool `yaml:"fixed_size"` // every image Size x Size
	// Generator is the benchmark's version: "v2" (default: class-tinted
	// objects, distractors, imperfect saliency) or "v1" (the first one,
	// byte for byte).
	Generator string `yaml:"generator"`
	// Classes is the number of foreground classes (2-20), default 6.
	Classes int   `yaml:"classes"`
	Seed    int64 `yaml:"seed"` // default 1
	// ValFraction of the images go to val_cls.txt, default 0.2.
	ValFraction float64 `yaml:"val_fraction"`
	// NoSaliencyFraction of the images get no saliency file, default 0.1.
	NoSaliencyFraction float64 `yaml:"no_saliency_fraction"`
}

// Train configures L2G (or plain CAM) training.
type Train struct {
	Out string `yaml:"out"` // model artifact URI, default model.l2g
	// Method is "l2g" (local-to-global transfer, the default) or "cam"
	// (the global network with the classification loss only).
	Method string `yaml:"method"`
	// Arch is the backbone preset of the global network (one of
	// backbone.Names; default backbone.Default). LocalArch defaults to
	// Arch.
	Arch      string `yaml:"arch"`
	LocalArch string `yaml:"local_arch"`
	// OutputStride of the backbones: 8 (default, as the reference) or 16.
	OutputStride int `yaml:"output_stride"`
	// ImageSize is the training crop of the whole image (reference 448,
	// default 128); ViewSize the local view (reference 320, default 96).
	ImageSize int `yaml:"image_size"`
	ViewSize  int `yaml:"view_size"`
	// Views is the number of local views an image (reference VOC 6).
	Views int `yaml:"views"`
	// ViewMode is corners+random (default), random or grid.
	ViewMode string `yaml:"view_mode"`
	// BgThr binarises the local target (reference VOC 0.001).
	BgThr float64 `yaml:"bg_thr"`
	// Transfer is the attention-transfer loss: mse (reference) or kl.
	Transfer string `yaml:"transfer"`
	// KDWeight scales the transfer loss (default 20, chosen over the
	// benchmark family: docs/defaults.md; reference VOC 10).
	KDWeight float64 `yaml:"kd_weight"`
	// GlobalClsWeight adds the global network's classification loss to
	// the L2G objective (default 0.5; reference 0: computed, not added).
	GlobalClsWeight float64 `yaml:"global_cls_weight"`
	// CAMReading is how labeling reads the model's maps, recorded in the
	// artifact and used to calibrate its threshold: normalized (the
	// reference: summed maps, ReLU, each class divided by its maximum) or
	// softmax (per pixel, a softmax over the tagged classes and the
	// background, as the transfer trains the global network).
	CAMReading string `yaml:"cam_reading"`
	// Optimizer is sgd (Nesterov momentum, reference) or adam.
	Optimizer    string  `yaml:"optimizer"`
	LR           float64 `yaml:"lr"`
	Momentum     float64 `yaml:"momentum"`
	WeightDecay  float64 `yaml:"weight_decay"`
	NewLayerLRx  float64 `yaml:"new_layer_lr_mult"` // lr multiplier of the classifier heads (reference 10)
	Schedule     string  `yaml:"schedule"`          // step or poly (default)
	StepEpochs   int     `yaml:"step_epochs"`       // step schedule: lr x0.1 every this many epochs
	BatchSize    int     `yaml:"batch_size"`
	Epochs       int     `yaml:"epochs"`
	Steps        int     `yaml:"steps"`       // overrides Epochs when > 0
	TimeBudget   string  `yaml:"time_budget"` // e.g. "5m"; stops early when spent
	Seed         int64   `yaml:"seed"`
	Workers      int     `yaml:"workers"`          // input decoding goroutines; 0 means 2
	CheckpointEv int     `yaml:"checkpoint_every"` // steps between checkpoints; 0: a checkpoint only on interrupt
	Resume       bool    `yaml:"resume"`
	// Pretrained is an ImageNet-pretrained torchvision / timm ResNet
	// weights file (safetensors or ONNX, local or gs://) that both
	// networks start from; empty starts from random weights.
	Pretrained string `yaml:"pretrained"`
	// PretrainedStrict refuses a file with missing, unexpected or
	// mis-shaped tensors (default); false skips and lists them.
	PretrainedStrict bool `yaml:"pretrained_strict"`
	// FreezeBN keeps batch normalisation fixed while training (running
	// statistics used and kept, scales and shifts not trained), as the
	// reference does with its pretrained backbone.
	FreezeBN bool `yaml:"freeze_bn"`
	// PCM adds the reference networks' pixel correlation module (an
	// affinity refinement of the CAM from low-level features) to both
	// networks, at training and at inference: true, false or auto (the
	// default: with method l2g, not with cam, so the CAM baseline stays
	// the plain CAM; docs/defaults.md). UsePCM resolves it.
	PCM AutoBool `yaml:"pcm"`
}

// UsePCM reports whether the networks get the pixel correlation module:
// PCM, or when it is auto, whether the method is l2g.
func (t Train) UsePCM() bool { return t.PCM.Resolve(t.Method == "l2g") }

// Resolved is t with its automatic settings decided (PCM true or false),
// as a model's manifest and a study's configuration hash record it: two
// spellings of the same networks are one configuration.
func (t Train) Resolved() Train {
	t.PCM = AutoBoolOf(t.UsePCM())
	return t
}

// Label configures the pseudo-labeling pipeline.
type Label struct {
	Model string `yaml:"model"` // model artifact URI
	Out   string `yaml:"out"`   // output prefix for <id>.png
	// Scales of the whole-image inference views (reference 0.5,1,1.5,2).
	Scales []float64 `yaml:"scales"`
	Flip   bool      `yaml:"flip"` // also infer each scale flipped
	// LocalViews adds local crops at labeling time: none (default), grid,
	// corners.
	LocalViews string `yaml:"local_views"`
	// LocalCombine combines local crops with the global map: sum or max.
	LocalCombine string `yaml:"local_combine"`
	// Background is the background rule: threshold (reference) or saliency.
	Background string `yaml:"background"`
	// BgThreshold is the background score of the threshold rule (0.25,
	// the reference's), used when the model has no calibrated threshold
	// or BgThresholdFrom is "fixed".
	BgThreshold float64 `yaml:"bg_threshold"`
	// BgThresholdFrom is "model" (default: the threshold the model chose
	// at the end of training from its training images' saliency maps,
	// when it has one) or "fixed" (always BgThreshold).
	BgThresholdFrom string `yaml:"bg_threshold_from"`
	// SaliencyThreshold binarises saliency for the saliency rule (0.2).
	SaliencyThreshold float64 `yaml:"saliency_threshold"`
	// CAMThreshold drops class scores below it in the saliency rule; with
	// BgThresholdFrom "model", the model's calibrated threshold instead
	// when that is lower.
	CAMThreshold float64 `yaml:"cam_threshold"`
	// SaliencyFallback applies the saliency rule to images without a
	// usable saliency map: threshold (default) or skip (dead-letter).
	SaliencyFallback string `yaml:"saliency_fallback"`
	KeepCAMs         bool   `yaml:"keep_cams"` // store fused CAMs for threshold sweeps
	Overwrite        bool   `yaml:"overwrite"`
	// InProcess runs the stages without Beam (debugging).
	InProcess bool `yaml:"in_process"`
	// Incremental labels only the images without a label from this model
	// artifact (by sha256): for scheduled runs over growing datasets.
	Incremental bool `yaml:"incremental"`
	// RunID names the run's records (OUT/_runs/<run_id>.json, dead-letter
	// and index parts); default: the start time, UTC, to the nanosecond.
	RunID string `yaml:"run_id"`
	// MaxFailures makes the run fail (exit 1) when its dead letters exceed
	// a count ("10"), a fraction ("0.01") or a percentage ("1%"). Empty:
	// no limit.
	MaxFailures string `yaml:"max_failures"`
	// BatchSize is the largest inference batch (views of one bucket).
	BatchSize int `yaml:"batch_size"`
	// BatchPixels sets each bucket's batch: the largest power of two of
	// views whose padded pixels fit, at most BatchSize (default 16384:
	// views up to about 64x64 run several at a time, larger ones alone).
	BatchPixels int `yaml:"batch_pixels"`
	// BucketsPerOctave is the number of canonical view sides per doubling
	// of size: views are padded to the next one (default 8: at most 1/8 of
	// a side). More buckets pad less and compile more graphs.
	BucketsPerOctave int `yaml:"buckets_per_octave"`
	// BucketMaxAspect is the most elongated bucket (default 2).
	BucketMaxAspect float64 `yaml:"bucket_max_aspect"`
	// MaxViewPixels scales down any inference view larger than this
	// (default 1048576 = 1024x1024; a 500x375 image at scale 2 is 750000).
	MaxViewPixels int `yaml:"max_view_pixels"`
	// WorkPixels bounds the resolution images are fused at (default
	// 1,048,576): a larger image's label is read from its fused map
	// upsampled a row at a time, never a full-resolution float map.
	WorkPixels int `yaml:"work_pixels"`
	// GroupPixels bounds the image pixels whose views the inference stage
	// batches together (default 16,000,000; a larger image is a group of
	// its own).
	GroupPixels int `yaml:"group_pixels"`
	// MemoryBudget is each worker process's memory budget for images:
	// bytes or a size such as "2GiB" or "1500MB"; empty takes half of the
	// memory available to the process (its cgroup's limit, else the
	// machine's). Images wait for their share instead of exceeding it; an
	// image larger than the budget runs alone.
	MemoryBudget string `yaml:"memory_budget"`
	// IndexFlushLabels and IndexFlushSeconds flush the model's index (the
	// ids labelled, for --incremental) every so many labels or seconds,
	// whichever comes first (defaults 50 and 30), so that an interrupted
	// run loses at most that much of it.
	IndexFlushLabels  int `yaml:"index_flush_labels"`
	IndexFlushSeconds int `yaml:"index_flush_seconds"`
}

// Eval configures the evaluation of pseudo labels.
type Eval struct {
	Labels string `yaml:"labels"` // prefix holding <id>.png labels
	Report string `yaml:"report"` // report directory
	// SweepFrom/To/Step define the background threshold sweep over stored
	// CAMs (default 0.01 to 0.95 by 0.01: the reference's range, 0.05 to
	// 0.50, and the higher thresholds of the softmax reading).
	SweepFrom float64 `yaml:"sweep_from"`
	SweepTo   float64 `yaml:"sweep_to"`
	SweepStep float64 `yaml:"sweep_step"`
}

// Runner configures where computations run.
type Runner struct {
	// Backend is the GoMLX backend config, default "go:parallelism=-1"
	// (the pure-Go backend on all cores).
	Backend string `yaml:"backend"`
	// Verbose shows the Beam runner's own log lines.
	Verbose bool `yaml:"verbose"`
}

// Default returns the configuration with every documented default.
func Default() Config {
	return Config{
		Dataset: Dataset{Split: "train", MaxPixels: 50_000_000},
		Synth: Synth{Images: 2000, Size: 128, Generator: "v2", Classes: 6, Seed: 1, ValFraction: 0.2,
			NoSaliencyFraction: 0.1},
		Train: Train{Out: "model.l2g", Method: "l2g", Arch: backbone.Default, OutputStride: 8,
			// The settings chosen for the tiny backbone trained from
			// scratch by the worst case over the benchmark family
			// (docs/defaults.md); the reference's, for pretrained
			// ResNets, are config/reference.yaml.
			ImageSize: 128, ViewSize: 96, Views: 4, ViewMode: "corners+random",
			BgThr: 0.001, Transfer: "mse", KDWeight: 20, GlobalClsWeight: 0.5, Optimizer: "adam", LR: 0.001,
			Momentum: 0.9, WeightDecay: 5e-4, NewLayerLRx: 10, Schedule: "poly",
			StepEpochs: 5, BatchSize: 8, Epochs: 12, Seed: 1, CheckpointEv: 200,
			PretrainedStrict: true, PCM: Auto},
		Label: Label{Scales: []float64{0.5, 1, 1.5, 2}, Flip: true, LocalViews: "none",
			LocalCombine: "sum", Background: "threshold", BgThreshold: 0.25, BgThresholdFrom: "model",
			SaliencyThreshold: 0.2, CAMThreshold: 0.1, SaliencyFallback: "threshold", BatchSize: 8,
			BatchPixels: 16384, BucketsPerOctave: 8, BucketMaxAspect: 2, MaxViewPixels: 1 << 20,
			WorkPixels: 1 << 20, GroupPixels: 16_000_000, IndexFlushLabels: 50, IndexFlushSeconds: 30},
		Eval:   Eval{SweepFrom: 0.01, SweepTo: 0.95, SweepStep: 0.01},
		Runner: Runner{Backend: "go:parallelism=-1"},
	}
}

// Parse overlays YAML data onto the defaults. Unknown keys are errors that
// name the line; name is used in messages (usually the file path).
func Parse(name string, data []byte) (Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("config %s: %w", name, cleanYAMLError(err))
	}
	return cfg, nil
}

func cleanYAMLError(err error) error {
	return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
}

// Load reads a YAML file (local path) and overlays it onto the defaults.
// An empty path gives the defaults.
func Load(path string) (Config, error) {
	if path == "" {
		return Default(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// ParseBytes reads a size in bytes: a number, or a number with a unit
// such as "2GiB", "1.5 GB" or "800MiB".
func ParseBytes(s string) (int64, error) {
	n, err := humanize.ParseBytes(strings.TrimSpace(s))
	if err != nil {
		return 0, err
	}
	if n > 1<<62 {
		return 0, fmt.Errorf("%s is too large", s)
	}
	return int64(n), nil
}
