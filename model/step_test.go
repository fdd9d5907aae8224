package model

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/gomlx/compute"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model/modeltest"
)

// TestEveryParameterGetsAGradient takes one L2G step (the reference
// objective) with and without PCM and requires every parameter to move.
func TestEveryParameterGetsAGradient(t *testing.T) {
	backend := testBackend(t)
	st, ds := modeltest.TinyData(t, 20, 64, 3)
	for _, pcm := range []bool{false, true} {
		t.Run(fmt.Sprintf("pcm=%v", pcm), func(t *testing.T) { everyParameterGetsAGradient(t, backend, st, ds, pcm) })
	}
}

func everyParameterGetsAGradient(t *testing.T, backend compute.Backend, st *storage.Store, ds *dataset.Dataset, pcm bool) {
	arch, _ := Preset("tiny", 8)
	arch.PCM = pcm
	g, l := &Net{Arch: arch, Classes: 3}, &Net{Arch: arch, Classes: 3}
	gs, _ := g.ParamSpecs(backend, GlobalPrefix)
	ls, _ := l.ParamSpecs(backend, LocalPrefix)
	specs := append(gs, ls...)
	// Plain SGD with lr 1: the update is the gradient itself.
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
	newP, _, losses, err := step.Step(p.Tensors(), ZeroSlots(step.SlotShapes()), br.Batch, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if losses.Cls <= 0 || losses.Transfer <= 0 {
		t.Errorf("losses %+v: want positive classification and transfer terms", losses)
	}
	q := p.Clone()
	if err := q.SetFromTensors(newP); err != nil {
		t.Fatal(err)
	}
	pcmParams := 0
	for i, s := range specs {
		if strings.Contains(s.Name, "pcm/") {
			pcmParams++
		}
		changed := false
		for k, v := range q.Values[i] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("%s: non-finite after one step", s.Name)
			}
			if v != p.Values[i][k] {
				changed = true
			}
		}
		if !changed {
			t.Errorf("%s did not change: no gradient (or, for state, no running statistics)", s.Name)
		}
	}
	if pcm != (pcmParams == 4) { // proj1 and mix, in each network
		t.Errorf("%d PCM parameters with pcm %v", pcmParams, pcm)
	}
}
