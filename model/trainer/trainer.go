// Package trainer runs L2G (or plain CAM) training from a training
// configuration: it builds the networks and their initial weights (random
// or pretrained), compiles the step, feeds it batches on a schedule,
// checkpoints and resumes, and writes the model artifact with its
// calibrated background threshold. The networks, losses, step and input
// pipeline are package model's; this package is the only one that reads
// the configuration.
package trainer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/artifact"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/weights"
	"github.com/l2gflow/l2gflow/model"
)

// ErrInterrupted is returned when training stopped on a signal after
// saving a checkpoint.
var ErrInterrupted = errors.New("training interrupted")

// Options are the inputs of Run.
type Options struct {
	Config    config.Train
	Data      *dataset.Dataset
	Backend   string // GoMLX backend configuration
	MaxPixels int
	Producer  string    // l2gflow version, recorded in the artifact
	Log       io.Writer // progress lines; nil for none
	Store     *storage.Store
	// ProgressEvery is the interval between progress lines (default 2s).
	ProgressEvery time.Duration
}

// Result describes a finished run.
type Result struct {
	Manifest *artifact.Manifest
	// ArtifactSHA256 identifies the written model file.
	ArtifactSHA256 string
}

// CheckpointURI is where training keeps its checkpoint for an output.
func CheckpointURI(out string) string { return out + ".ckpt" }

// Run trains and writes the model artifact to Config.Out. It saves a
// checkpoint every Config.CheckpointEv steps and on interruption (ctx
// cancelled), then returns ErrInterrupted; with Config.Resume it continues
// from that checkpoint.
func Run(ctx context.Context, o Options) (*Result, error) {
	t := &trainer{o: o, c: o.Config.Resolved(), classes: len(o.Data.Classes)}
	steps := []func(context.Context) error{t.networks, t.weights, t.compile, t.schedule, t.resume}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	if err := t.loop(ctx); err != nil {
		return nil, err
	}
	return t.artifact(ctx)
}

// trainer is one training run; each method is one concern, run in order.
type trainer struct {
	o       Options
	c       config.Train
	classes int

	backend       compute.Backend
	global, local *model.Net
	specs         []model.ParamSpec
	params        *model.Params
	source        *artifact.Pretrained // the pretrained file started from

	stepper *model.Stepper
	loader  *model.Loader

	spe, total int // steps a epoch, steps in all
	stoppedBy  string
	budget     time.Duration
	sig        stepSignature

	paramT, slotT []*tensors.Tensor
	start, step   int
	images        int64
	prevElapsed   time.Duration
	began         time.Time
	last          model.Losses
}

func (t *trainer) logf(format string, args ...any) {
	if t.o.Log != nil {
		fmt.Fprintf(t.o.Log, format+"\n", args...)
	}
}

// localArch is the local network's backbone.
func localArch(c config.Train) string {
	if c.LocalArch != "" {
		return c.LocalArch
	}
	return c.Arch
}

// networks builds the global network (and the local one for L2G) and
// lists their parameters.
func (t *trainer) networks(ctx context.Context) error {
	var err error
	if t.backend, err = model.NewTrainingBackend(t.o.Backend); err != nil {
		return err
	}
	c := t.c
	garch, err := model.Preset(c.Arch, c.OutputStride)
	if err != nil {
		return err
	}
	garch.PCM = c.UsePCM()
	t.global = &model.Net{Arch: garch, Classes: t.classes, FrozenBN: c.FreezeBN}
	if t.specs, err = t.global.ParamSpecs(t.backend, model.GlobalPrefix); err != nil {
		return err
	}
	if c.Method != "l2g" {
		return nil
	}
	larch, err := model.Preset(localArch(c), c.OutputStride)
	if err != nil {
		return err
	}
	larch.PCM = c.UsePCM()
	t.local = &model.Net{Arch: larch, Classes: t.classes, FrozenBN: c.FreezeBN}
	lspecs, err := t.local.ParamSpecs(t.backend, model.LocalPrefix)
	if err != nil {
		return err
	}
	t.specs = append(t.specs, lspecs...)
	return nil
}

// weights draws the initial weights, from a pretrained file when given
// (not when resuming: the checkpoint has them): a file that does not fit
// fails here, before the training step is compiled.
func (t *trainer) weights(ctx context.Context) error {
	t.params = model.InitParams(t.specs, uint64(t.c.Seed))
	if t.c.Pretrained == "" || t.c.Resume {
		return nil
	}
	f, err := weights.Open(ctx, t.o.Store, t.c.Pretrained)
	if err != nil {
		return fmt.Errorf("pretrained: %w", err)
	}
	t.source, err = loadPretrained(f, t.c.PretrainedStrict, t.params, t.global, t.local, t.logf)
	return err
}

// compile builds the training step and the input pipeline.
func (t *trainer) compile(ctx context.Context) error {
	c := t.c
	optim := model.OptimConfig{Kind: c.Optimizer, Momentum: c.Momentum, WeightDecay: c.WeightDecay,
		HeadMult: c.NewLayerLRx, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
	scfg := model.StepConfig{Method: c.Method, Classes: t.classes, Batch: c.BatchSize, ImageSize: c.ImageSize,
		Views: c.Views, ViewSize: c.ViewSize, Stride: c.OutputStride, BgThr: c.BgThr,
		Transfer: c.Transfer, KDWeight: c.KDWeight, GlobalClsWeight: c.GlobalClsWeight, Optim: optim}
	var err error
	if t.stepper, err = model.NewStepper(t.backend, scfg, t.global, t.local, t.specs); err != nil {
		return err
	}
	t.loader, err = model.NewLoader(model.InputConfig{Method: c.Method, Classes: t.classes, Batch: c.BatchSize,
		ImageSize: c.ImageSize, ViewSize: c.ViewSize, Views: c.Views, ViewMode: c.ViewMode,
		Stride: c.OutputStride, Seed: c.Seed, Workers: c.Workers, MaxPixels: t.o.MaxPixels},
		t.o.Store, t.o.Data.Records, func(msg string) { t.logf("warning: %s", msg) })
	return err
}

// schedule sets the run's length: steps, or epochs, or a time budget.
func (t *trainer) schedule(ctx context.Context) error {
	c := t.c
	t.spe = t.loader.StepsPerEpoch()
	t.total, t.stoppedBy = c.Steps, "steps"
	if t.total <= 0 {
		t.total, t.stoppedBy = c.Epochs*t.spe, "epochs"
	}
	if c.TimeBudget != "" {
		t.budget, _ = time.ParseDuration(c.TimeBudget) // validated by config
		if t.total <= 0 {
			t.total = math.MaxInt32
		}
	}
	return nil
}

// learningRate applies the schedule: step (x0.1 every StepEpochs epochs)
// or poly (power 0.9 over the run's progress in [0, 1], by steps or by the
// time budget, whichever is further along).
func learningRate(c config.Train, epoch int, progress float64) float64 {
	if c.Schedule == "poly" {
		return c.LR * math.Pow(max(0, 1-progress), 0.9)
	}
	return c.LR * math.Pow(0.1, float64(epoch/max(1, c.StepEpochs)))
}

// resume starts from the initial weights, or from the checkpoint with
// Resume.
func (t *trainer) resume(ctx context.Context) error {
	t.sig = signature(t.c, t.classes, t.o.Data.Fingerprint)
	t.paramT = t.params.Tensors()
	t.slotT = model.ZeroSlots(t.stepper.SlotShapes())
	ckpt := CheckpointURI(t.c.Out)
	if t.c.Resume {
		st, err := loadCheckpoint(ctx, t.o.Store, ckpt, t.specs, t.stepper.SlotShapes(), t.sig)
		if err != nil {
			return err
		}
		t.paramT, t.slotT, t.start, t.images = st.params, st.slots, st.pos.Step, st.pos.Images
		t.prevElapsed = time.Duration(st.pos.Elapsed * float64(time.Second))
		t.source = st.pos.Pretrained
		t.logf("resuming from %s at step %d", ckpt, t.start)
	}
	t.logf("train %s: %s global (%d parameters)%s, %d images, %d classes, %d steps (%d a epoch), batch %d, backend %s",
		t.c.Method, t.c.Arch, model.CountTrainable(t.specs, model.GlobalPrefix), t.localDesc(), len(t.o.Data.Records), t.classes,
		t.total, t.spe, t.c.BatchSize, model.TrainingBackendConfig(t.o.Backend))
	return nil
}

func (t *trainer) localDesc() string {
	c := t.c
	if c.Method != "l2g" {
		return ""
	}
	return fmt.Sprintf(" + %s local (%d parameters), %d views of %d px from %d px", localArch(c),
		model.CountTrainable(t.specs, model.LocalPrefix), c.Views, c.ViewSize, c.ImageSize)
}

func (t *trainer) elapsed() time.Duration { return t.prevElapsed + time.Since(t.began) }

func (t *trainer) save(ctx context.Context) error {
	st := resumeState{Step: t.step, Elapsed: t.elapsed().Seconds(), Images: t.images, Signature: t.sig, Pretrained: t.source}
	return saveCheckpoint(ctx, t.o.Store, CheckpointURI(t.c.Out), t.specs, t.paramT, t.slotT, st)
}

// loop runs the steps, logging progress and saving checkpoints; on
// interruption it saves one and returns ErrInterrupted.
func (t *trainer) loop(ctx context.Context) error {
	c := t.c
	loaderCtx, cancelLoader := context.WithCancel(context.Background())
	defer cancelLoader()
	batches := t.loader.Batches(loaderCtx, t.start, t.total)
	every := t.o.ProgressEvery
	if every <= 0 {
		every = 2 * time.Second
	}
	t.began = time.Now()
	lastLog := t.began
	var sum model.Losses
	var sumN int
	for t.step = t.start; t.step < t.total; {
		if ctx.Err() != nil {
			if err := t.save(ctx); err != nil {
				return fmt.Errorf("interrupted, and saving the checkpoint failed: %w", err)
			}
			t.logf("interrupted at step %d: checkpoint saved to %s (continue with --resume)", t.step, CheckpointURI(c.Out))
			return ErrInterrupted
		}
		if t.budget > 0 && t.elapsed() >= t.budget {
			t.stoppedBy = "time_budget"
			break
		}
		br, ok := <-batches
		if !ok {
			return fmt.Errorf("training input stopped early")
		}
		if br.Err != nil {
			return br.Err
		}
		progress := float64(t.step) / float64(t.total)
		if t.budget > 0 {
			progress = max(progress, float64(t.elapsed())/float64(t.budget))
		}
		lr := learningRate(c, t.step/t.spe, progress)
		newP, newS, l, err := t.stepper.Step(t.paramT, t.slotT, br.Batch, lr, int64(t.step+1))
		if err != nil {
			return err
		}
		finalize(t.paramT)
		finalize(t.slotT)
		t.paramT, t.slotT = newP, newS
		t.step++
		t.images += int64(c.BatchSize)
		sum.Total += l.Total
		sum.Cls += l.Cls
		sum.Transfer += l.Transfer
		sum.GlobalCls += l.GlobalCls
		sumN++
		t.last = l
		if now := time.Now(); now.Sub(lastLog) >= every || t.step == t.total {
			lastLog = now
			n := float64(sumN)
			rate := float64((t.step-t.start)*c.BatchSize) / time.Since(t.began).Seconds()
			eta := time.Duration(float64(t.total-t.step)*float64(c.BatchSize)/rate) * time.Second
			if t.budget > 0 {
				eta = min(eta, t.budget-t.elapsed())
			}
			t.logf("step %d/%s epoch %.2f | loss %.4f cls %.4f transfer %.4f global-cls %.4f | lr %.3g | %.1f img/s | ETA %s",
				t.step, totalDesc(t.total), float64(t.step)/float64(t.spe), sum.Total/n, sum.Cls/n, sum.Transfer/n, sum.GlobalCls/n,
				lr, rate, eta.Round(time.Second))
			sum, sumN = model.Losses{}, 0
		}
		if c.CheckpointEv > 0 && t.step%c.CheckpointEv == 0 && t.step < t.total {
			if err := t.save(ctx); err != nil {
				return fmt.Errorf("checkpoint: %w", err)
			}
		}
	}
	return nil
}

// artifact writes the model artifact: the global network's weights, the
// manifest with the run's metrics and the calibrated background
// threshold; then removes the checkpoint.
func (t *trainer) artifact(ctx context.Context) (*Result, error) {
	c := t.c
	dur := t.elapsed()
	if err := t.params.SetFromTensors(t.paramT); err != nil {
		return nil, err
	}
	if err := t.params.Check(); err != nil {
		return nil, fmt.Errorf("trained parameters: %w", err)
	}
	l := t.last
	m := &artifact.Manifest{
		Kind: artifact.KindModel, Created: time.Now().UTC(), Producer: t.o.Producer, Method: c.Method,
		Classes: t.o.Data.Classes, Networks: map[string]json.RawMessage{},
		Input:      artifact.Input{Size: c.ImageSize, ViewSize: c.ViewSize, Mean: f64(model.ImageMean[:]), Std: f64(model.ImageStd[:])},
		Dataset:    artifact.Dataset{Source: t.o.Data.Source, Fingerprint: t.o.Data.Fingerprint, Images: len(t.o.Data.Records)},
		Pretrained: t.source,
		Metrics: artifact.Metrics{Steps: t.step, Epochs: float64(t.step) / float64(t.spe), Images: t.images,
			DurationSec: dur.Seconds(), ImagesPerSec: float64(t.images) / dur.Seconds(), StoppedBy: t.stoppedBy,
			FinalLosses: map[string]float64{"total": l.Total, "cls": l.Cls, "transfer": l.Transfer, "global_cls": l.GlobalCls}},
	}
	m.Networks["global"], _ = json.Marshal(t.global.Arch)
	m.Training, _ = json.Marshal(c)
	global := &model.Params{}
	for i, s := range t.params.Specs {
		if strings.HasPrefix(s.Name, model.GlobalPrefix) {
			global.Specs = append(global.Specs, s)
			global.Values = append(global.Values, t.params.Values[i])
		}
	}
	var err error
	if c.CAMReading != "" && c.CAMReading != model.ReadNormalized {
		m.Reading = c.CAMReading
	}
	if m.Threshold, err = t.calibrate(ctx, m, global); err != nil {
		return nil, err
	}
	if th := m.Threshold; th != nil {
		t.logf("background threshold %.3g: the best agreement with the saliency maps of %d training images", th.Value, th.Images)
		for _, w := range th.Warnings {
			t.logf("warning: %s", w)
		}
	} else {
		t.logf("notice: no training image has a readable saliency map of its size: no background threshold was calibrated and the model's maps were not checked; label will use label.bg_threshold")
	}
	var ts []artifact.Tensor
	for i, s := range global.Specs {
		ts = append(ts, artifact.Tensor{Name: s.Name, Shape: s.Shape, Data: global.Values[i]})
	}
	data, err := artifact.Marshal(m, ts)
	if err != nil {
		return nil, err
	}
	if err := t.o.Store.WriteFile(ctx, c.Out, data); err != nil {
		return nil, err
	}
	if err := t.o.Store.Remove(ctx, CheckpointURI(c.Out)); err != nil {
		t.logf("warning: could not remove the finished checkpoint: %v", err)
	}
	if n := t.loader.Failed.Load(); n > 0 {
		t.logf("warning: %d unreadable training images were replaced by others", n)
	}
	t.logf("trained %d steps (%.2f epochs, %d images) in %s, %.1f img/s; stopped by %s; wrote %s",
		t.step, m.Metrics.Epochs, t.images, dur.Round(time.Second), m.Metrics.ImagesPerSec, t.stoppedBy, c.Out)
	return &Result{Manifest: m, ArtifactSHA256: artifact.SHA256(data)}, nil
}

// calibrate chooses the trained model's background threshold from its
// training images' saliency maps (see model.Calibrate), with the labeling
// pipeline's default views.
func (t *trainer) calibrate(ctx context.Context, m *artifact.Manifest, global *model.Params) (*artifact.Threshold, error) {
	fo := model.FuseOptions{Reading: m.Reading}
	e, err := model.NewEngine(t.backend, &model.Model{Manifest: m, Net: &model.Net{Arch: t.global.Arch, Classes: t.classes}, Params: global},
		model.EngineOptions{Background: fo.Reading == model.ReadSoftmax})
	if err != nil {
		return nil, fmt.Errorf("calibration: %w", err)
	}
	return model.Calibrate(ctx, e, t.o.Store, t.o.Data.Records, model.DefaultViewOptions(), fo, t.o.MaxPixels)
}

func totalDesc(total int) string {
	if total == math.MaxInt32 {
		return "?"
	}
	return fmt.Sprint(total)
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func finalize(ts []*tensors.Tensor) {
	for _, t := range ts {
		t.FinalizeAll()
	}
}
