package trainer

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/gomlx/gomlx/core/tensors"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/artifact"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
)

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
		FreezeBN: c.FreezeBN, PCM: c.UsePCM()}
}

func saveCheckpoint(ctx context.Context, st *storage.Store, uri string, specs []model.ParamSpec, params, slots []*tensors.Tensor, pos resumeState) error {
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

func loadCheckpoint(ctx context.Context, st *storage.Store, uri string, specs []model.ParamSpec, slotShapes [][]int, sig stepSignature) (*loadedCheckpoint, error) {
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
