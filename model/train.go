package model

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/gomlx/core/tensors"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/artifact"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/weights"
)

// ErrInterrupted is returned when training stopped on a signal after
// saving a checkpoint.
var ErrInterrupted = errors.New("training interrupted")

// TrainOptions are the inputs of Train.
type TrainOptions struct {
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

// TrainResult describes a finished run.
type TrainResult struct {
	Manifest *artifact.Manifest
	// ArtifactSHA256 identifies the written model file.
	ArtifactSHA256 string
}

// CheckpointURI is where training keeps its checkpoint for an output.
func CheckpointURI(out string) string { return out + ".ckpt" }

// resumeState is the position stored in a checkpoint.
type resumeState struct {
	Step      int           `json:"step"`
	Elapsed   float64       `json:"elapsed_sec"`
	Images    int64         `json:"images"`
	Signature stepSignature `json:"signature"`
	// Pretrained is the weights file the run started from.
	Pretrained *artifact.Pretrained `json:"pretrained,omitempty"`
}

// stepSignature lists what must match for a checkpoint to be resumed.
type stepSignature struct {
	Method, Arch, LocalArch, ViewMode, Optimizer string
	Classes, Batch, ImageSize, ViewSize, Views   int
	Stride                                       int
	Seed                                         int64
	Fingerprint                                  string
	FreezeBN, PCM                                bool
}

func signature(c config.Train, classes int, fingerprint string) stepSignature {
	return stepSignature{Method: c.Method, Arch: c.Arch, LocalArch: localArch(c), ViewMode: c.ViewMode,
		Optimizer: c.Optimizer, Classes: classes, Batch: c.BatchSize, ImageSize: c.ImageSize,
		ViewSize: c.ViewSize, Views: c.Views, Stride: c.OutputStride, Seed: c.Seed, Fingerprint: fingerprint,
		FreezeBN: c.FreezeBN, PCM: c.PCM}
}

func localArch(c config.Train) string {
	if c.LocalArch != "" {
		return c.LocalArch
	}
	return c.Arch
}

// Train runs L2G (or CAM baseline) training and writes the model artifact
// to Config.Out. It saves a checkpoint every Config.CheckpointEv steps and
// on interruption (ctx cancelled), then returns ErrInterrupted; with
// Config.Resume it continues from that checkpoint.
func Train(ctx context.Context, o TrainOptions) (*TrainResult, error) {
	c := o.Config
	classes := len(o.Data.Classes)
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	backend, err := NewBackend(o.Backend)
	if err != nil {
		return nil, err
	}
	// Read a pretrained file first: a wrong path fails before compiling.
	var pretrained *weights.File
	if c.Pretrained != "" && !c.Resume {
		if pretrained, err = weights.Open(ctx, o.Store, c.Pretrained); err != nil {
			return nil, fmt.Errorf("pretrained: %w", err)
		}
	}
	garch, err := Preset(c.Arch, c.OutputStride)
	if err != nil {
		return nil, err
	}
	garch.PCM = c.PCM
	global := &Net{Arch: garch, Classes: classes, FrozenBN: c.FreezeBN}
	specs, err := global.ParamSpecs(backend, GlobalPrefix)
	if err != nil {
		return nil, err
	}
	var local *Net
	if c.Method == "l2g" {
		larch, err := Preset(localArch(c), c.OutputStride)
		if err != nil {
			return nil, err
		}
		larch.PCM = c.PCM
		local = &Net{Arch: larch, Classes: classes, FrozenBN: c.FreezeBN}
		lspecs, err := local.ParamSpecs(backend, LocalPrefix)
		if err != nil {
			return nil, err
		}
		specs = append(specs, lspecs...)
	}
	// Initial weights, from a pretrained file when given: a file that does
	// not fit fails here, before the training step is compiled.
	params := InitParams(specs, uint64(c.Seed))
	var source *artifact.Pretrained
	if pretrained != nil {
		if source, err = loadPretrained(pretrained, c.PretrainedStrict, params, global, local, logf); err != nil {
			return nil, err
		}
		pretrained = nil // its tensors are copied; let them go
	}
	optim := OptimConfig{Kind: c.Optimizer, Momentum: c.Momentum, WeightDecay: c.WeightDecay,
		HeadMult: c.NewLayerLRx, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
	scfg := StepConfig{Method: c.Method, Classes: classes, Batch: c.BatchSize, ImageSize: c.ImageSize,
		Views: c.Views, ViewSize: c.ViewSize, Stride: c.OutputStride, BgThr: c.BgThr,
		Transfer: c.Transfer, KDWeight: c.KDWeight, GlobalClsWeight: c.GlobalClsWeight, Optim: optim}
	stepper, err := NewStepper(backend, scfg, global, local, specs)
	if err != nil {
		return nil, err
	}
	loader, err := NewLoader(InputConfig{Method: c.Method, Classes: classes, Batch: c.BatchSize,
		ImageSize: c.ImageSize, ViewSize: c.ViewSize, Views: c.Views, ViewMode: c.ViewMode,
		Stride: c.OutputStride, Seed: c.Seed, Workers: c.Workers, MaxPixels: o.MaxPixels},
		o.Store, o.Data.Records, func(msg string) { logf("warning: %s", msg) })
	if err != nil {
		return nil, err
	}
	spe := loader.StepsPerEpoch()
	total := c.Steps
	stoppedBy := "steps"
	if total <= 0 {
		total = c.Epochs * spe
		stoppedBy = "epochs"
	}
	var budget time.Duration
	if c.TimeBudget != "" {
		budget, _ = time.ParseDuration(c.TimeBudget) // validated by config
		if total <= 0 {
			total = math.MaxInt32
		}
	}
	sig := signature(c, classes, o.Data.Fingerprint)

	paramT := params.Tensors()
	slotT := zeroSlots(stepper.SlotShapes())
	start := 0
	var images int64
	var prevElapsed time.Duration
	ckpt := CheckpointURI(c.Out)
	if c.Resume {
		st, err := loadCheckpoint(ctx, o.Store, ckpt, specs, stepper.SlotShapes(), sig)
		if err != nil {
			return nil, err
		}
		paramT, slotT, start, images, prevElapsed = st.params, st.slots, st.pos.Step, st.pos.Images, time.Duration(st.pos.Elapsed*float64(time.Second))
		source = st.pos.Pretrained
		logf("resuming from %s at step %d", ckpt, start)
	}
	logf("train %s: %s global (%d parameters)%s, %d images, %d classes, %d steps (%d a epoch), batch %d, backend %s",
		c.Method, c.Arch, countTrainable(specs, GlobalPrefix), localDesc(c, specs), len(o.Data.Records), classes,
		total, spe, c.BatchSize, backendName(o.Backend))

	save := func(step int, elapsed time.Duration) error {
		st := resumeState{Step: step, Elapsed: elapsed.Seconds(), Images: images, Signature: sig, Pretrained: source}
		return saveCheckpoint(ctx, o.Store, ckpt, specs, paramT, slotT, st)
	}

	loaderCtx, cancelLoader := context.WithCancel(context.Background())
	defer cancelLoader()
	batches := loader.Batches(loaderCtx, start, total)
	every := o.ProgressEvery
	if every <= 0 {
		every = 2 * time.Second
	}
	began := time.Now()
	lastLog := began
	var sum Losses
	var sumN int
	var last Losses
	step := start
	elapsed := func() time.Duration { return prevElapsed + time.Since(began) }
	for step < total {
		if ctx.Err() != nil {
			if err := save(step, elapsed()); err != nil {
				return nil, fmt.Errorf("interrupted, and saving the checkpoint failed: %w", err)
			}
			logf("interrupted at step %d: checkpoint saved to %s (continue with --resume)", step, ckpt)
			return nil, ErrInterrupted
		}
		if budget > 0 && elapsed() >= budget {
			stoppedBy = "time_budget"
			break
		}
		br, ok := <-batches
		if !ok {
			return nil, fmt.Errorf("training input stopped early")
		}
		if br.Err != nil {
			return nil, br.Err
		}
		epoch := step / spe
		progress := float64(step) / float64(total)
		if budget > 0 {
			progress = max(progress, float64(elapsed())/float64(budget))
		}
		lr := learningRate(c, epoch, progress)
		newP, newS, l, err := stepper.Step(paramT, slotT, br.Batch, lr, int64(step+1))
		if err != nil {
			return nil, err
		}
		finalize(paramT)
		finalize(slotT)
		paramT, slotT = newP, newS
		step++
		images += int64(c.BatchSize)
		sum.Total += l.Total
		sum.Cls += l.Cls
		sum.Transfer += l.Transfer
		sum.GlobalCls += l.GlobalCls
		sumN++
		last = l
		if now := time.Now(); now.Sub(lastLog) >= every || step == total {
			lastLog = now
			n := float64(sumN)
			rate := float64((step-start)*c.BatchSize) / time.Since(began).Seconds()
			eta := time.Duration(float64(total-step)*float64(c.BatchSize)/rate) * time.Second
			if budget > 0 {
				eta = min(eta, budget-elapsed())
			}
			logf("step %d/%s epoch %.2f | loss %.4f cls %.4f transfer %.4f global-cls %.4f | lr %.3g | %.1f img/s | ETA %s",
				step, totalDesc(total), float64(step)/float64(spe), sum.Total/n, sum.Cls/n, sum.Transfer/n, sum.GlobalCls/n,
				lr, rate, eta.Round(time.Second))
			sum, sumN = Losses{}, 0
		}
		if c.CheckpointEv > 0 && step%c.CheckpointEv == 0 && step < total {
			if err := save(step, elapsed()); err != nil {
				return nil, fmt.Errorf("checkpoint: %w", err)
			}
		}
	}
	dur := elapsed()
	if err := params.SetFromTensors(paramT); err != nil {
		return nil, err
	}
	if err := params.Check(); err != nil {
		return nil, fmt.Errorf("trained parameters: %w", err)
	}
	m := &artifact.Manifest{
		Kind: artifact.KindModel, Created: time.Now().UTC(), Producer: o.Producer, Method: c.Method,
		Classes: o.Data.Classes, Networks: map[string]json.RawMessage{},
		Input:      artifact.Input{Size: c.ImageSize, ViewSize: c.ViewSize, Mean: f64(ImageMean[:]), Std: f64(ImageStd[:])},
		Dataset:    artifact.Dataset{Source: o.Data.Source, Fingerprint: o.Data.Fingerprint, Images: len(o.Data.Records)},
		Pretrained: source,
		Metrics: artifact.Metrics{Steps: step, Epochs: float64(step) / float64(spe), Images: images,
			DurationSec: dur.Seconds(), ImagesPerSec: float64(images) / dur.Seconds(), StoppedBy: stoppedBy,
			FinalLosses: map[string]float64{"total": last.Total, "cls": last.Cls, "transfer": last.Transfer, "global_cls": last.GlobalCls}},
	}
	m.Networks["global"], _ = json.Marshal(garch)
	m.Training, _ = json.Marshal(c)
	if m.Threshold, err = calibrateTrained(ctx, backend, global, params, m, o); err != nil {
		return nil, err
	}
	if t := m.Threshold; t != nil {
		logf("background threshold %.3g: the best agreement with the saliency maps of %d training images", t.Value, t.Images)
	}
	var ts []artifact.Tensor
	for i, s := range params.Specs {
		if strings.HasPrefix(s.Name, GlobalPrefix) {
			ts = append(ts, artifact.Tensor{Name: s.Name, Shape: s.Shape, Data: params.Values[i]})
		}
	}
	data, err := artifact.Marshal(m, ts)
	if err != nil {
		return nil, err
	}
	if err := o.Store.WriteFile(ctx, c.Out, data); err != nil {
		return nil, err
	}
	if err := o.Store.Remove(ctx, ckpt); err != nil {
		logf("warning: could not remove the finished checkpoint: %v", err)
	}
	if n := loader.Failed.Load(); n > 0 {
		logf("warning: %d unreadable training images were replaced by others", n)
	}
	logf("trained %d steps (%.2f epochs, %d images) in %s, %.1f img/s; stopped by %s; wrote %s",
		step, m.Metrics.Epochs, images, dur.Round(time.Second), m.Metrics.ImagesPerSec, stoppedBy, c.Out)
	return &TrainResult{Manifest: m, ArtifactSHA256: artifact.SHA256(data)}, nil
}

// loadPretrained starts both networks from a pretrained weights file and
// describes the file for the artifact.
func loadPretrained(f *weights.File, strict bool, params *Params, global, local *Net, logf func(string, ...any)) (*artifact.Pretrained, error) {
	// Networks of one architecture take the file mapped once.
	nets, prefixes := []*Net{global}, [][]string{{GlobalPrefix}}
	switch {
	case local == nil: // the cam method has no local network
	case local.Arch.Name == global.Arch.Name:
		prefixes[0] = append(prefixes[0], LocalPrefix)
	default:
		nets, prefixes = append(nets, local), append(prefixes, []string{LocalPrefix})
	}
	var rep *ImportReport
	var loaded []string
	for i, net := range nets {
		r, err := net.LoadPretrained(params, f, strict, prefixes[i]...)
		if err != nil {
			return nil, fmt.Errorf("pretrained, %s network: %w", netNames(prefixes[i]), err)
		}
		loaded = append(loaded, fmt.Sprintf("%d tensors into the %s network", r.Loaded, netNames(prefixes[i])))
		if rep == nil {
			rep = r
		} else {
			rep.Skipped = append(rep.Skipped, r.Skipped...)
		}
	}
	logf("pretrained %s (%s, sha256 %.12s): %s; %d ignored (%s); %d skipped",
		f.Name, f.Format, f.SHA256, strings.Join(loaded, ", "), len(rep.Ignored), ignoredDesc(rep.Ignored), len(rep.Skipped))
	for _, s := range rep.Skipped {
		logf("  skipped %s", s)
	}
	return &artifact.Pretrained{Name: f.Name, URI: f.URI, SHA256: f.SHA256, Format: string(f.Format),
		Loaded: rep.Loaded, Skipped: rep.Skipped}, nil
}

// netNames names networks by their parameter prefixes: "global and local".
func netNames(prefixes []string) string {
	names := make([]string, len(prefixes))
	for i, p := range prefixes {
		names[i] = strings.TrimSuffix(p, "/")
	}
	return strings.Join(names, " and ")
}

// ignoredDesc shortens a list of ignored tensor names for a log line.
func ignoredDesc(names []string) string {
	if len(names) <= 3 {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:3], ", ") + ", ..."
}

func totalDesc(total int) string {
	if total == math.MaxInt32 {
		return "?"
	}
	return fmt.Sprint(total)
}

func backendName(cfg string) string {
	if cfg == "" {
		return DefaultBackend
	}
	return cfg
}

func localDesc(c config.Train, specs []ParamSpec) string {
	if c.Method != "l2g" {
		return ""
	}
	return fmt.Sprintf(" + %s local (%d parameters), %d views of %d px from %d px", localArch(c),
		countTrainable(specs, LocalPrefix), c.Views, c.ViewSize, c.ImageSize)
}

func countTrainable(specs []ParamSpec, prefix string) int {
	n := 0
	for _, s := range specs {
		if !s.State && strings.HasPrefix(s.Name, prefix) {
			n += s.Size()
		}
	}
	return n
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
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

func finalize(ts []*tensors.Tensor) {
	for _, t := range ts {
		t.FinalizeAll()
	}
}

func saveCheckpoint(ctx context.Context, st *storage.Store, uri string, specs []ParamSpec, params, slots []*tensors.Tensor, pos resumeState) error {
	var ts []artifact.Tensor
	for i, p := range params {
		v, err := tensors.CopyFlatData[float32](p)
		if err != nil {
			return err
		}
		ts = append(ts, artifact.Tensor{Name: specs[i].Name, Shape: specs[i].Shape, Data: v})
	}
	for i, s := range slots {
		v, err := tensors.CopyFlatData[float32](s)
		if err != nil {
			return err
		}
		ts = append(ts, artifact.Tensor{Name: fmt.Sprintf("optimizer/%d", i), Shape: s.Shape().Dimensions, Data: v})
	}
	m := &artifact.Manifest{Kind: artifact.KindCheckpoint, Created: time.Now().UTC()}
	m.Resume, _ = json.Marshal(pos)
	data, err := artifact.Marshal(m, ts)
	if err != nil {
		return err
	}
	return st.WriteFile(ctx, uri, data)
}

type loadedCheckpoint struct {
	params, slots []*tensors.Tensor
	pos           resumeState
}

func loadCheckpoint(ctx context.Context, st *storage.Store, uri string, specs []ParamSpec, slotShapes [][]int, sig stepSignature) (*loadedCheckpoint, error) {
	data, err := st.ReadFile(ctx, uri, 0)
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	m, ts, err := artifact.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("resume from %s: %w", uri, err)
	}
	if m.Kind != artifact.KindCheckpoint {
		return nil, fmt.Errorf("resume: %s is a %s, not a checkpoint", uri, m.Kind)
	}
	var pos resumeState
	if err := json.Unmarshal(m.Resume, &pos); err != nil {
		return nil, fmt.Errorf("resume from %s: %w", uri, err)
	}
	if pos.Signature != sig {
		return nil, fmt.Errorf("resume: %s was made with different settings or data (%+v, now %+v); start afresh without --resume", uri, pos.Signature, sig)
	}
	if len(ts) != len(specs)+len(slotShapes) {
		return nil, fmt.Errorf("resume: %s holds %d tensors, want %d", uri, len(ts), len(specs)+len(slotShapes))
	}
	out := &loadedCheckpoint{pos: pos}
	for i, s := range specs {
		if ts[i].Name != s.Name || !slices.Equal(ts[i].Shape, s.Shape) {
			return nil, fmt.Errorf("resume: %s tensor %d is %s %v, want %s %v", uri, i, ts[i].Name, ts[i].Shape, s.Name, s.Shape)
		}
		out.params = append(out.params, tensors.FromFlatDataAndDimensions(ts[i].Data, s.Shape...))
	}
	for i, sh := range slotShapes {
		t := ts[len(specs)+i]
		if !slices.Equal(t.Shape, sh) {
			return nil, fmt.Errorf("resume: %s optimizer tensor %d has shape %v, want %v", uri, i, t.Shape, sh)
		}
		out.slots = append(out.slots, tensors.FromFlatDataAndDimensions(t.Data, sh...))
	}
	return out, nil
}

// calibrateTrained chooses the trained model's background threshold from
// its training images' saliency maps (see Calibrate), with the labeling
// pipeline's default views.
func calibrateTrained(ctx context.Context, backend compute.Backend, global *Net, params *Params, m *artifact.Manifest, o TrainOptions) (*artifact.Threshold, error) {
	gp := &Params{}
	for i, s := range params.Specs {
		if strings.HasPrefix(s.Name, GlobalPrefix) {
			gp.Specs = append(gp.Specs, s)
			gp.Values = append(gp.Values, params.Values[i])
		}
	}
	e, err := NewEngine(backend, &Model{Manifest: m, Net: &Net{Arch: global.Arch, Classes: global.Classes}, Params: gp}, EngineOptions{})
	if err != nil {
		return nil, fmt.Errorf("calibration: %w", err)
	}
	return Calibrate(ctx, e, o.Store, o.Data.Records, DefaultViewOptions(), o.MaxPixels)
}
