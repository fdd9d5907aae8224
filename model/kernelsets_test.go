package model

import (
	"context"
	"encoding/gob"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"

	"github.com/l2gflow/l2gflow/model/modeltest"
)

// kernelsChildEnv makes TestFallbackKernelsAgree, run as a child process,
// write its workload's results to the file it names.
const kernelsChildEnv = "L2GFLOW_KERNELS_CHILD_OUT"

// kernelWorkload computes, with fixed weights and inputs, what the kernel
// sets implement differently: CAMs and logits of the tiny, ResNet-18 and
// ResNet-50 networks (convolutions, Winograd, kernel blocks, batch norm,
// pooling, matrix products) and one L2G training step of the tiny model
// (the gradients' convolutions, batch norm in training, split-K).
func kernelWorkload(t *testing.T) map[string][]float32 {
	backend := testBackend(t)
	out := map[string][]float32{}
	r := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct {
		arch     string
		stride   int
		n, h, w  int
		classes  int
		realSize [2]int
	}{
		{"tiny", 8, 2, 72, 88, 5, [2]int{61, 77}},
		{"resnet18", 16, 2, 96, 112, 5, [2]int{96, 101}},
		{"resnet50", 8, 1, 64, 64, 5, [2]int{64, 64}},
	} {
		arch, err := Preset(tc.arch, tc.stride)
		if err != nil {
			t.Fatal(err)
		}
		net := &Net{Arch: arch, Classes: tc.classes}
		f, err := NewForward(backend, net, randomBNParams(t, net, 11), GlobalPrefix)
		if err != nil {
			t.Fatal(err)
		}
		batch := randomImage(r, tc.n*tc.h, tc.w)
		real := make([][2]int, tc.n)
		for j := range real {
			real[j] = tc.realSize
		}
		cams, _, logits, err := f.Run(batch, tc.n, tc.h, tc.w, real)
		if err != nil {
			t.Fatal(err)
		}
		out[tc.arch+" CAMs"], out[tc.arch+" logits"] = cams, logits
	}

	st, ds := modeltest.TinyData(t, 12, 64, 3)
	arch, _ := Preset("tiny", 8)
	g, l := &Net{Arch: arch, Classes: 3}, &Net{Arch: arch, Classes: 3}
	gs, _ := g.ParamSpecs(backend, GlobalPrefix)
	ls, _ := l.ParamSpecs(backend, LocalPrefix)
	specs := append(gs, ls...)
	step, err := NewStepper(backend, StepConfig{Method: "l2g", Classes: 3, Batch: 8, ImageSize: 64, Views: 4, ViewSize: 48,
		Stride: 8, BgThr: 0.001, Transfer: "mse", KDWeight: 10, Optim: OptimConfig{Kind: "sgd", HeadMult: 1}}, g, l, specs)
	if err != nil {
		t.Fatal(err)
	}
	loader, err := NewLoader(InputConfig{Method: "l2g", Classes: 3, Batch: 8, ImageSize: 64, ViewSize: 48, Views: 4,
		ViewMode: "corners+random", Stride: 8, Seed: 1}, st, ds.Records, nil)
	if err != nil {
		t.Fatal(err)
	}
	br := <-loader.Batches(context.Background(), 0, 1)
	if br.Err != nil {
		t.Fatal(br.Err)
	}
	p := InitParams(specs, 1)
	newP, _, losses, err := step.Step(p.Tensors(), ZeroSlots(step.SlotShapes()), br.Batch, 0.01, 1)
	if err != nil {
		t.Fatal(err)
	}
	q := p.Clone()
	if err := q.SetFromTensors(newP); err != nil {
		t.Fatal(err)
	}
	out["training step losses"] = []float32{float32(losses.Cls), float32(losses.Transfer)}
	var w []float32
	for _, v := range q.Values {
		w = append(w, v...)
	}
	out["training step weights"] = w
	return out
}

// TestFallbackKernelsAgree computes the kernel workload here (AVX-512
// kernels, on a machine that has them) and in a child process with
// AVX-512 switched off (GODEBUG=cpu.avx512f=off: the AVX2 kernels, as on
// a worker without AVX-512), and requires the two to agree to float
// tolerance. make test-cpus runs the model's tests in the other kernel
// sets as well.
func TestFallbackKernelsAgree(t *testing.T) {
	if path := os.Getenv(kernelsChildEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := gob.NewEncoder(f).Encode(kernelWorkload(t)); err != nil {
			t.Fatal(err)
		}
		return
	}
	here := CurrentPlatform(testBackend(t)).Kernels
	if here != "go/avx512" {
		t.Skipf("this process already runs the %s kernels", here)
	}
	if testing.Short() {
		t.Skip("runs the workload twice")
	}
	want := kernelWorkload(t)
	path := filepath.Join(t.TempDir(), "fallback.gob")
	cmd := exec.Command(os.Args[0], "-test.run=^TestFallbackKernelsAgree$")
	cmd.Env = append(os.Environ(), kernelsChildEnv+"="+path, "GODEBUG=cpu.avx512f=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child with AVX-512 off: %v\n%s", err, out)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got map[string][]float32
	if err := gob.NewDecoder(f).Decode(&got); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		w, g := want[name], got[name]
		if len(w) != len(g) || len(w) == 0 {
			t.Errorf("%s: %d values with AVX-512, %d without", name, len(w), len(g))
			continue
		}
		scale, worst, same := 1e-12, 0.0, 0
		for _, v := range w {
			scale = max(scale, math.Abs(float64(v)))
		}
		for i := range w {
			worst = max(worst, math.Abs(float64(w[i])-float64(g[i])))
			if math.Float32bits(w[i]) == math.Float32bits(g[i]) {
				same++
			}
		}
		rel := worst / scale
		t.Logf("%-24s %8d values, %5.1f%% bit-identical, largest difference %.2g of the largest value", name, len(w), 100*float64(same)/float64(len(w)), rel)
		if limit := 1e-4; rel > limit || math.IsNaN(rel) {
			t.Errorf("%s: AVX-512 and fallback kernels differ by %.3g (relative), more than %g", name, rel, limit)
		}
	}
	if n := len(got); n != len(want) {
		t.Errorf("%d results without AVX-512, %d with", n, len(want))
	}

}
