package model

import (
	"encoding/json"
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

var updateLosses = flag.Bool("update-losses", false, "rewrite testdata/train_losses.json from this build's training steps")

// lossesFile holds the losses of trainingLosses as the fork's backend,
// with its batch-normalisation ops, computes them.
const lossesFile = "testdata/train_losses.json"

// trainingLosses runs eight tiny L2G training steps (global classification
// loss at weight 1, so that every loss term is non-zero) from fixed weights
// on one fixed batch and returns each step's total loss and parts.
func trainingLosses(t *testing.T) [][4]float64 {
	t.Helper()
	backend := testBackend(t)
	arch, err := Preset("tiny", 8)
	if err != nil {
		t.Fatal(err)
	}
	const classes = 6
	global, local := &Net{Arch: arch, Classes: classes}, &Net{Arch: arch, Classes: classes}
	specs, err := global.ParamSpecs(backend, GlobalPrefix)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := local.ParamSpecs(backend, LocalPrefix)
	if err != nil {
		t.Fatal(err)
	}
	specs = append(specs, ls...)
	cfg := StepConfig{Method: "l2g", Classes: classes, Batch: 4, ImageSize: 64, Views: 4, ViewSize: 48, Stride: 8,
		BgThr: 0.001, Transfer: "mse", KDWeight: 10, GlobalClsWeight: 1,
		Optim: OptimConfig{Kind: "sgd", Momentum: 0.9, HeadMult: 10}}
	step, err := NewStepper(backend, cfg, global, local, specs)
	if err != nil {
		t.Fatal(err)
	}
	batch := randomBatch(InputConfig{Method: "l2g", Classes: classes, Batch: cfg.Batch, ImageSize: cfg.ImageSize,
		ViewSize: cfg.ViewSize, Views: cfg.Views, ViewMode: "corners+random", Stride: cfg.Stride}, rand.New(rand.NewPCG(3, 4)))
	p, s := InitParams(specs, 1).Tensors(), ZeroSlots(step.SlotShapes())
	var out [][4]float64
	for n := int64(1); n <= 8; n++ {
		np, ns, l, err := step.Step(p, s, batch, 0.01, n)
		if err != nil {
			t.Fatal(err)
		}
		finalize(p)
		finalize(s)
		p, s = np, ns
		out = append(out, [4]float64{l.Total, l.Cls, l.Transfer, l.GlobalCls})
	}
	return out
}

// TestTrainingLossesMatchForkBatchNorm checks eight training steps'
// losses against those the fork's backend computes with its batch
// normalisation ops (testdata/train_losses.json). In `make test` it runs
// on the fork (the ops); `make test-upstream` runs it on upstream compute
// v0.1.14 without the replace directive, whose Go backend lacks the ops,
// so that training falls back to the element-wise batch norm
// (batchNormGraph): the two agree to 1e-3 relative. Run with
// -update-losses on the fork to rewrite the file.
func TestTrainingLossesMatchForkBatchNorm(t *testing.T) {
	got := trainingLosses(t)
	if *updateLosses {
		if !hasBatchNormOps(testBackend(t)) {
			t.Fatal("-update-losses needs the fork's backend (the batch normalisation ops)")
		}
		b, err := json.MarshalIndent(got, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(lossesFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(lossesFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(lossesFile)
	if err != nil {
		t.Fatal(err)
	}
	var want [][4]float64
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d steps, file has %d", len(got), len(want))
	}
	// make test-upstream says which form it means to check.
	ops := hasBatchNormOps(testBackend(t))
	if want := os.Getenv("L2GFLOW_EXPECT_BATCHNORM_OPS"); want != "" && want != strconv.FormatBool(ops) {
		t.Fatalf("batch normalisation ops in the backend: %v, L2GFLOW_EXPECT_BATCHNORM_OPS=%s", ops, want)
	}
	for i := range want {
		for j, what := range []string{"total", "cls", "transfer", "global cls"} {
			if d := math.Abs(got[i][j] - want[i][j]); d > 1e-3*math.Max(math.Abs(want[i][j]), 1e-3) {
				t.Errorf("step %d %s loss %.6g, fork's %.6g", i+1, what, got[i][j], want[i][j])
			}
		}
	}
	// The steps train: the loss falls.
	if got[len(got)-1][0] >= got[0][0] {
		t.Errorf("total loss %.4g after 8 steps, %.4g at the first", got[len(got)-1][0], got[0][0])
	}
}
