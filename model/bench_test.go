package model

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/model/modeltest"
)

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportRate reports images/s and the cores used (CPU time over wall
// time), which is how the benchmarks show whether both cores work.
func reportRate(b *testing.B, images int, wall, cpu time.Duration) {
	b.ReportMetric(float64(images)/wall.Seconds(), "img/s")
	b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cores")
}

// benchTrainStep times one training step of the tiny default (128 px
// images, batch 8; L2G with 6 views of 96 px).
func benchTrainStep(b *testing.B, method string) {
	backend := testBackend(b)
	st, ds := modeltest.TinyData(b, 16, 128, 6)
	arch, _ := Preset("tiny", 8)
	g, l := &Net{Arch: arch, Classes: 6}, &Net{Arch: arch, Classes: 6}
	specs, _ := g.ParamSpecs(backend, GlobalPrefix)
	if method == "l2g" {
		ls, _ := l.ParamSpecs(backend, LocalPrefix)
		specs = append(specs, ls...)
	}
	step, err := NewStepper(backend, StepConfig{Method: method, Classes: 6, Batch: 8, ImageSize: 128, Views: 6, ViewSize: 96,
		Stride: 8, BgThr: 0.001, Transfer: "mse", KDWeight: 10, Optim: OptimConfig{Kind: "sgd", Momentum: 0.9, HeadMult: 1}}, g, l, specs)
	if err != nil {
		b.Fatal(err)
	}
	loader, _ := NewLoader(InputConfig{Method: method, Classes: 6, Batch: 8, ImageSize: 128, ViewSize: 96, Views: 6,
		ViewMode: "corners+random", Stride: 8, Seed: 1}, st, ds.Records, nil)
	br := <-loader.Batches(context.Background(), 0, 1)
	if br.Err != nil {
		b.Fatal(br.Err)
	}
	p, s := InitParams(specs, 1).Tensors(), ZeroSlots(step.SlotShapes())
	p, s, _, err = step.Step(p, s, br.Batch, 0.001, 1) // compile
	if err != nil {
		b.Fatal(err)
	}
	start, cpu0 := time.Now(), cpuTime()
	n := 0
	for b.Loop() {
		np, ns, _, err := step.Step(p, s, br.Batch, 0.001, int64(n+2))
		if err != nil {
			b.Fatal(err)
		}
		finalize(p)
		finalize(s)
		p, s = np, ns
		n++
	}
	reportRate(b, 8*n, time.Since(start), cpuTime()-cpu0)
}

func BenchmarkTrainStepL2G(b *testing.B) { benchTrainStep(b, "l2g") }
func BenchmarkTrainStepCAM(b *testing.B) { benchTrainStep(b, "cam") }

// BenchmarkCAMInference times the default multi-scale CAM (scales 0.5, 1,
// 1.5, 2 with flips: 8 passes) of one 128 px image, images in parallel on
// two goroutines sharing one engine.
func BenchmarkCAMInference(b *testing.B) {
	backend := testBackend(b)
	arch, _ := Preset("tiny", 8)
	net := &Net{Arch: arch, Classes: 6}
	specs, _ := net.ParamSpecs(backend, GlobalPrefix)
	m := &Model{Net: net, Params: InitParams(specs, 1)}
	m.Manifest = testManifest(6)
	e, err := NewEngine(backend, m, EngineOptions{})
	if err != nil {
		b.Fatal(err)
	}
	img := imagefile.NewRGB(128, 128)
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
	}
	opts := ViewOptions{Scales: []float64{0.5, 1, 1.5, 2}, Flip: true}
	if _, err := e.CAM(img, []int{0, 2}, opts, FuseOptions{}); err != nil { // compile
		b.Fatal(err)
	}
	start, cpu0 := time.Now(), cpuTime()
	n := 0
	b.SetParallelism(1)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.CAM(img, []int{0, 2}, opts, FuseOptions{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	n = b.N
	reportRate(b, n, time.Since(start), cpuTime()-cpu0)
}
