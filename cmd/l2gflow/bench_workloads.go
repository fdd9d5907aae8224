package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/l2gflow/l2gflow/model"
)

// runWorkloads measures the pinned workloads (model.Workloads) and prints
// one JSON object a line, for bench/compare.py. Training workloads run on
// the backend the trainer uses (model.NewTrainingBackend), the others on
// the labeling one.
func runWorkloads(ctx context.Context, env *cmdEnv, bf *benchFlags) error {
	inferBackend, err := model.NewBackend(env.cfg.Runner.Backend)
	if err != nil {
		return err
	}
	trainBackend, err := model.NewTrainingBackend(env.cfg.Runner.Backend)
	if err != nil {
		return err
	}
	head, _ := json.Marshal(map[string]any{"side": "l2gflow", "version": Version, "commit": buildCommit(), "backend": env.cfg.Runner.Backend,
		"threads": runtime.GOMAXPROCS(0), "go": runtime.Version()})
	fmt.Fprintln(env.stdout, string(head))
	for _, w := range model.Workloads() {
		if bf.only != "" && !strings.Contains(w.Name, bf.only) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var stop func()
		if bf.cpuProfile != "" {
			if stop, err = startProfile(filepath.Join(bf.cpuProfile, profileName(w.Name))); err != nil {
				return err
			}
		}
		backend := inferBackend
		if w.Training() {
			backend = trainBackend
		}
		v, err := w.Measure(backend, bf.minTime)
		if stop != nil {
			stop()
		}
		if err != nil {
			return err
		}
		line, _ := json.Marshal(map[string]any{"name": w.Name, "value": v, "unit": w.Unit})
		fmt.Fprintln(env.stdout, string(line))
		runtime.GC()
	}
	return nil
}

// profileName is a file name for a workload's CPU profile.
func profileName(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else if b.Len() > 0 && !strings.HasSuffix(b.String(), "-") {
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-") + ".pprof"
}

// startProfile starts a CPU profile into path and returns its stop.
func startProfile(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// minTimeDefault is how long each workload runs after its warm-up.
const minTimeDefault = 3 * time.Second
