package model

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/gomlx/compute"

	"github.com/l2gflow/l2gflow/io/artifact"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/model/maps"
)

// Workload is a pinned benchmark of a network, with random weights and
// inputs: its shapes are fixed here, not taken from defaults that other
// work may change, so that l2gflow and a PyTorch reference of the same
// networks (bench/torch_ref.py) measure the same thing.
type Workload struct {
	Name string
	Arch string // preset
	OS   int    // output stride
	// Kind: "multiscale" (one image's CAM at scales 0.5, 1, 1.5, 2 with
	// flips, two tagged classes, by Engine.CAM as labeling runs it), "infer" (a batch forward),
	// "train-cam" (a CAM training step), "train-l2g" (an L2G step).
	Kind  string
	Batch int
	Size  int // image side
	Views int // L2G local views
	View  int // L2G view side
	// Unit of the result: "img/s" (higher is better) or "ms" (per image
	// for inference, per step for training; lower is better).
	Unit string
}

// Training reports whether the workload is a training step (to be run on
// a training backend, NewTrainingBackend, as the trainer does).
func (w Workload) Training() bool { return strings.HasPrefix(w.Kind, "train") }

// Classes is the class count of every workload (the tiny preset's
// benchmark uses 6, as the synthetic set; the ResNets 20, as VOC).
func (w Workload) classes() int {
	if w.Arch == "tiny" {
		return 6
	}
	return 20
}

// Workloads are the pinned benchmarks, in the order of the comparison
// table.
func Workloads() []Workload {
	return []Workload{
		{Name: "tiny: CAM inference, 128 px, 8 passes (4 scales x flip)", Arch: "tiny", OS: 8, Kind: "multiscale", Batch: 1, Size: 128, Unit: "img/s"},
		{Name: "tiny: CAM training step, batch 8 at 128 px", Arch: "tiny", OS: 8, Kind: "train-cam", Batch: 8, Size: 128, Unit: "img/s"},
		{Name: "tiny: L2G training step (6 views of 96 px)", Arch: "tiny", OS: 8, Kind: "train-l2g", Batch: 8, Size: 128, Views: 6, View: 96, Unit: "img/s"},
		{Name: "resnet18 OS16: inference batch 8 at 128 px", Arch: "resnet18", OS: 16, Kind: "infer", Batch: 8, Size: 128, Unit: "ms"},
		{Name: "resnet18 OS16: inference batch 8 at 224 px", Arch: "resnet18", OS: 16, Kind: "infer", Batch: 8, Size: 224, Unit: "ms"},
		{Name: "resnet50 OS16: inference batch 8 at 224 px", Arch: "resnet50", OS: 16, Kind: "infer", Batch: 8, Size: 224, Unit: "ms"},
		{Name: "resnet50 OS8: CAM inference, 448 px, 8 passes (4 scales x flip)", Arch: "resnet50", OS: 8, Kind: "multiscale", Batch: 1, Size: 448, Unit: "ms"},
		{Name: "resnet18 OS16: training step, batch 16 at 128 px", Arch: "resnet18", OS: 16, Kind: "train-cam", Batch: 16, Size: 128, Unit: "ms"},
		{Name: "resnet18 OS16: training step, batch 8 at 224 px", Arch: "resnet18", OS: 16, Kind: "train-cam", Batch: 8, Size: 224, Unit: "ms"},
		{Name: "resnet50 OS16: training step, batch 8 at 224 px", Arch: "resnet50", OS: 16, Kind: "train-cam", Batch: 8, Size: 224, Unit: "ms"},
	}
}

// Measure runs the workload once to compile and warm up, then for at
// least minTime (and at least once), and returns its figure in Unit.
// bench/torch_ref.py measures the same way.
func (w Workload) Measure(backend compute.Backend, minTime time.Duration) (float64, error) {
	iter, err := w.prepare(backend)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", w.Name, err)
	}
	if err := iter(); err != nil { // compile, warm up
		return 0, fmt.Errorf("%s: %w", w.Name, err)
	}
	start := time.Now()
	n := 0
	for n < 1 || time.Since(start) < minTime {
		if err := iter(); err != nil {
			return 0, fmt.Errorf("%s: %w", w.Name, err)
		}
		n++
	}
	per := time.Since(start).Seconds() / float64(n) // seconds an iteration
	switch {
	case w.Unit == "img/s":
		return float64(w.Batch) / per, nil
	case w.Kind == "infer":
		return 1000 * per / float64(w.Batch), nil
	default:
		return 1000 * per, nil
	}
}

// prepare builds the workload's network, weights and inputs and returns
// one iteration.
func (w Workload) prepare(backend compute.Backend) (func() error, error) {
	arch, err := Preset(w.Arch, w.OS)
	if err != nil {
		return nil, err
	}
	r := rand.New(rand.NewPCG(1, 2))
	global := &Net{Arch: arch, Classes: w.classes()}
	specs, err := global.ParamSpecs(backend, GlobalPrefix)
	if err != nil {
		return nil, err
	}
	switch w.Kind {
	case "multiscale":
		m := &Model{Net: global, Params: InitParams(specs, 1), Manifest: &artifact.Manifest{
			Input: artifact.Input{Mean: []float64{0.485, 0.456, 0.406}, Std: []float64{0.229, 0.224, 0.225}}}}
		for i := range w.classes() {
			m.Manifest.Classes = append(m.Manifest.Classes, fmt.Sprintf("c%d", i))
		}
		e, err := NewEngine(backend, m, EngineOptions{})
		if err != nil {
			return nil, err
		}
		img := imagefile.NewRGB(w.Size, w.Size)
		for i := range img.Pix {
			img.Pix[i] = uint8(r.IntN(256))
		}
		opts := ViewOptions{Scales: []float64{0.5, 1, 1.5, 2}, Flip: true}
		return func() error { _, err := e.CAM(img, []int{0, 2}, opts, FuseOptions{}); return err }, nil
	case "infer":
		f, err := NewForward(backend, global, InitParams(specs, 1), GlobalPrefix)
		if err != nil {
			return nil, err
		}
		x := make([]float32, w.Batch*w.Size*w.Size*3)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return func() error { _, _, _, err := f.Run(x, w.Batch, w.Size, w.Size, nil); return err }, nil
	}
	// Training steps, SGD with momentum as the reference.
	method := "cam"
	var local *Net
	if w.Kind == "train-l2g" {
		method = "l2g"
		local = &Net{Arch: arch, Classes: w.classes()}
		ls, err := local.ParamSpecs(backend, LocalPrefix)
		if err != nil {
			return nil, err
		}
		specs = append(specs, ls...)
	}
	cfg := StepConfig{Method: method, Classes: w.classes(), Batch: w.Batch, ImageSize: w.Size, Views: w.Views, ViewSize: w.View,
		Stride: w.OS, BgThr: 0.001, Transfer: "mse", KDWeight: 10, Optim: OptimConfig{Kind: "sgd", Momentum: 0.9, HeadMult: 10}}
	step, err := NewStepper(backend, cfg, global, local, specs)
	if err != nil {
		return nil, err
	}
	batch := randomBatch(InputConfig{Method: method, Classes: w.classes(), Batch: w.Batch, ImageSize: w.Size, ViewSize: w.View,
		Views: w.Views, ViewMode: "corners+random", Stride: w.OS}, r)
	p, s := InitParams(specs, 1).Tensors(), ZeroSlots(step.SlotShapes())
	n := int64(0)
	return func() error {
		n++
		np, ns, _, err := step.Step(p, s, batch, 0.001, n)
		if err != nil {
			return err
		}
		finalize(p)
		finalize(s)
		p, s = np, ns
		return nil
	}, nil
}

// randomBatch is a training batch of random images, tags and saliency,
// laid out as the loader lays out a real one.
func randomBatch(c InputConfig, r *rand.Rand) *Batch {
	l := &Loader{cfg: c}
	b := &Batch{}
	h := (c.ViewSize + c.Stride - 1) / c.Stride
	for range c.Batch {
		img := maps.New(c.ImageSize, c.ImageSize, 3)
		for i := range img.Pix {
			img.Pix[i] = float32(r.NormFloat64())
		}
		s := &sample{img: img, tags: []int{r.IntN(c.Classes)}, hasSal: true}
		if c.Method == "l2g" {
			s.boxes = ViewBoxes(c.ViewMode, c.Views, c.ImageSize, c.ViewSize, r)
			for _, box := range s.boxes {
				s.views = append(s.views, maps.Crop(img, box[0], box[1], c.ViewSize, c.ViewSize))
				sal := maps.New(h, h, 1)
				for i := range sal.Pix {
					sal.Pix[i] = r.Float32()
				}
				s.sal = append(s.sal, sal)
			}
		}
		l.append(b, s)
	}
	return b
}
