package transforms

import (
	"context"
	"fmt"
	"sync"

	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
)

// engines holds the process's loaded models. A Beam worker runs many DoFn
// instances (Setup is per instance) and a model should be read, checked
// and compiled once per process, then shared: the engine also owns the
// process-wide limit on concurrent inference. Only successes are kept: a
// load that failed (a storage fault, say) is tried again by the next
// caller. This is the package's only process-wide state.
var engines = struct {
	sync.Mutex
	m map[string]*engineSlot
}{m: map[string]*engineSlot{}}

type engineSlot struct {
	mu sync.Mutex // held while loading, so that one caller loads
	e  *model.Engine
}

// LoadEngine returns the process's engine for a model URI, backend and
// engine options, loading it (with st) on first use.
func LoadEngine(ctx context.Context, st *storage.Store, uri, backend string, opts model.EngineOptions) (*model.Engine, error) {
	key := fmt.Sprintf("%s\x00%s\x00%+v", uri, backend, opts)
	engines.Lock()
	slot, ok := engines.m[key]
	if !ok {
		slot = &engineSlot{}
		engines.m[key] = slot
	}
	engines.Unlock()
	slot.mu.Lock()
	defer slot.mu.Unlock()
	if slot.e != nil {
		return slot.e, nil
	}
	data, err := st.ReadFile(ctx, uri, 0)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	m, err := model.LoadModel(data)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", uri, err)
	}
	b, err := model.NewBackend(backend)
	if err != nil {
		return nil, err
	}
	e, err := model.NewEngine(b, m, opts)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", uri, err)
	}
	slot.e = e
	return e, nil
}

// ReleaseEngines drops every loaded model from the process's cache, for a
// process that labels with many models one after another (the study
// trains and labels hundreds): each engine keeps its backend's cache of
// free buffers, and a process holding every model it ever loaded grows
// until the soft memory limit ProcessBudget sets makes the garbage
// collector run without pause. Callers still holding an engine keep using
// it (it is collected once they let go); the next LoadEngine of a model
// loads it again. A Beam worker, which serves one model, never needs it.
func ReleaseEngines() {
	engines.Lock()
	defer engines.Unlock()
	clear(engines.m)
}
