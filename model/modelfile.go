package model

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/l2gflow/l2gflow/io/artifact"
)

// Model is a loaded model artifact: the global network and its weights.
type Model struct {
	Manifest *artifact.Manifest
	Net      *Net
	Params   *Params
	// SHA256 is the hex sha256 of the artifact file.
	SHA256 string
}

// LoadModel decodes and checks a model artifact: format, checksums, the
// architecture, and that the classifier has one map per class plus
// background.
func LoadModel(data []byte) (*Model, error) {
	m, ts, err := artifact.Decode(data)
	if err != nil {
		return nil, err
	}
	if m.Kind != artifact.KindModel {
		return nil, fmt.Errorf("%w: a %s, not a model (a training checkpoint cannot label; finish or resume training)", artifact.ErrIncompatible, m.Kind)
	}
	raw, ok := m.Networks["global"]
	if !ok {
		return nil, fmt.Errorf("%w: no global network in the manifest", artifact.ErrIncompatible)
	}
	var arch Arch
	if err := json.Unmarshal(raw, &arch); err != nil {
		return nil, fmt.Errorf("%w: global architecture: %v", artifact.ErrIncompatible, err)
	}
	if err := arch.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", artifact.ErrIncompatible, err)
	}
	if len(m.Classes) == 0 {
		return nil, fmt.Errorf("%w: no class names", artifact.ErrIncompatible)
	}
	if len(m.Input.Mean) != 3 || len(m.Input.Std) != 3 {
		return nil, fmt.Errorf("%w: input normalisation needs 3 means and 3 deviations", artifact.ErrIncompatible)
	}
	p := &Params{}
	for _, t := range ts {
		if !strings.HasPrefix(t.Name, GlobalPrefix) {
			continue
		}
		p.Specs = append(p.Specs, ParamSpec{Name: t.Name, Shape: slices.Clone(t.Shape)})
		p.Values = append(p.Values, t.Data)
	}
	cls := p.Index(GlobalPrefix + "classifier/w")
	if cls < 0 {
		return nil, fmt.Errorf("%w: no classifier weights", artifact.ErrIncompatible)
	}
	if sh := p.Specs[cls].Shape; len(sh) != 4 || sh[3] != len(m.Classes)+1 {
		return nil, fmt.Errorf("%w: the classifier has %v outputs for %d classes (+1 background)", artifact.ErrIncompatible, sh, len(m.Classes))
	}
	if err := p.Check(); err != nil {
		return nil, fmt.Errorf("%w: %v", artifact.ErrIncompatible, err)
	}
	return &Model{Manifest: m, Net: &Net{Arch: arch, Classes: len(m.Classes)}, Params: p, SHA256: artifact.SHA256(data)}, nil
}
