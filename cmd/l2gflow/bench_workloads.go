package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/l2gflow/l2gflow/model"
)

// runWorkloads measures the pinned workloads (model.Workloads) and prints
// one JSON object a line, for bench/compare.py.
func runWorkloads(ctx context.Context, env *cmdEnv, bf *benchFlags) error {
	backend, err := model.NewBackend(env.cfg.Runner.Backend)
	if err != nil {
		return err
	}
	head, _ := json.Marshal(map[string]any{"side": "l2gflow", "version": Version, "backend": env.cfg.Runner.Backend,
		"threads": runtime.GOMAXPROCS(0), "go": runtime.Version()})
	fmt.Fprintln(env.stdout, string(head))
	for _, w := range model.Workloads() {
		if bf.only != "" && !strings.Contains(w.Name, bf.only) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		v, err := w.Measure(backend, bf.minTime)
		if err != nil {
			return err
		}
		line, _ := json.Marshal(map[string]any{"name": w.Name, "value": v, "unit": w.Unit})
		fmt.Fprintln(env.stdout, string(line))
		runtime.GC()
	}
	return nil
}

// minTimeDefault is how long each workload runs after its warm-up.
const minTimeDefault = 3 * time.Second
