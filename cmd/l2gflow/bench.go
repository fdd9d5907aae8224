package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/synth"
	"github.com/l2gflow/l2gflow/model/trainer"
	"github.com/l2gflow/l2gflow/pipelines/label"
)

// benchFlags are the bench command's own settings.
type benchFlags struct {
	out    string
	sizes  string
	rounds int
	model  string
	// imageSizes runs the image-size benchmark instead: varied against
	// fixed sizes, each run a fresh label process.
	imageSizes bool
	size       int
	choices    string
	// workloads measures the pinned network workloads instead.
	workloads  bool
	minTime    time.Duration
	only       string
	cpuProfile string
	// against is another l2gflow binary to label the same images with,
	// in paired rounds (runAgainst).
	against string
}

func benchCommand() *command {
	bf := &benchFlags{}
	return &command{
		name:     "bench",
		summary:  "measure the labeling pipeline on prism against the in-process path (images/s, cores, memory)",
		usage:    "[--out DIR] [--images 200,2000] [--rounds 2] [--model M] | --image-sizes [--images 300] [--size 128] [--buckets-per-octave 4,8,16] | --workloads [--min-time 3s] | --against BINARY [--images 1000] [--rounds 4]",
		sections: config.SectionRunner,
		bind: func(fs *flag.FlagSet, cfg *config.Config) {
			fs.StringVar(&bf.out, "out", "bench-out", "working `dir` (dataset, model, labels, bench.json)")
			fs.StringVar(&bf.sizes, "images", "200", "comma-separated image counts to measure (e.g. 200,2000 for memory growth)")
			fs.IntVar(&bf.rounds, "rounds", 2, "alternating rounds of in-process and prism runs")
			fs.StringVar(&bf.model, "model", "", "model artifact (default: train a small one on the synthetic data)")
			fs.BoolVar(&bf.imageSizes, "image-sizes", false, "measure labeling megapixels/s on varied against fixed image sizes, each run a new label process")
			fs.IntVar(&bf.size, "size", 128, "--image-sizes: typical long side of the synthetic images")
			fs.StringVar(&bf.choices, "buckets-per-octave", "8", "--image-sizes: comma-separated bucket densities to measure on the varied set")
			fs.BoolVar(&bf.workloads, "workloads", false, "measure the pinned network workloads (JSON lines; see bench/compare.py)")
			fs.DurationVar(&bf.minTime, "min-time", minTimeDefault, "--workloads: time each workload runs after its warm-up")
			fs.StringVar(&bf.only, "only", "", "--workloads: only those whose name contains this")
			fs.StringVar(&bf.cpuProfile, "cpuprofile", "", "--workloads: write a CPU profile of each workload into this `dir` (go tool pprof)")
			fs.StringVar(&bf.against, "against", "", "label the same images with this `binary` too (e.g. the previous commit's: make bench-against), in paired rounds, and compare images/s and the labels' bytes")
			bindBackend(fs, &cfg.Runner)
		},
		run: func(ctx context.Context, env *cmdEnv) error { return runBench(ctx, env, bf) },
	}
}

func runBench(ctx context.Context, env *cmdEnv, bf *benchFlags) error {
	if bf.imageSizes {
		return runSizeBench(ctx, env, bf)
	}
	if bf.workloads {
		return runWorkloads(ctx, env, bf)
	}
	if bf.against != "" {
		return runAgainst(ctx, env, bf)
	}
	quietBeam(env, false)
	beam.Init()
	var sizes []int
	for _, s := range strings.Split(bf.sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 8 {
			return usagef("--images: %q is not a count of at least 8", s)
		}
		sizes = append(sizes, n)
	}
	if bf.rounds < 1 {
		return usagef("--rounds must be at least 1")
	}
	st := storage.New()
	defer st.Close()
	largest := 0
	for _, n := range sizes {
		largest = max(largest, n)
	}
	data := filepath.Join(bf.out, "data")
	fmt.Fprintf(env.stderr, "bench: synthesising %d images in %s\n", largest, data)
	// All images go to the train split, so that sizes are prefixes of it.
	if _, err := synth.Write(ctx, st, data, synth.Options{Images: largest, Size: 128, Classes: 6, Seed: 1, NoSaliencyFraction: 0.1}); err != nil {
		return err
	}
	ds, err := dataset.Load(ctx, st, data, "train")
	if err != nil {
		return err
	}
	modelURI, err := benchModel(ctx, env, st, ds, bf, "cam")
	if err != nil {
		return err
	}
	// Warm up: load the model and compile every inference shape once (on
	// both paths), so that no measured run pays for it.
	warm := filepath.Join(bf.out, "first-8.jsonl")
	if err := writeManifestPrefix(ctx, st, data, warm, 8); err != nil {
		return err
	}
	for _, inProcess := range []bool{true, false} {
		o := label.Options{Dataset: config.Dataset{Manifest: warm, MaxPixels: config.Default().Dataset.MaxPixels},
			Label: config.Default().Label, Backend: env.cfg.Runner.Backend, InProcess: inProcess}
		o.Label.Model, o.Label.Out = modelURI, filepath.Join(bf.out, "labels-warmup")
		if _, err := label.Measured(ctx, o); err != nil {
			return err
		}
	}
	var results []label.Measure
	fmt.Fprintf(env.stdout, "%-7s %-11s %8s %9s %6s %10s %10s %10s\n", "images", "mode", "seconds", "images/s", "cores", "peak live", "peak heap", "peak RSS")
	for _, n := range sizes {
		manifest := filepath.Join(bf.out, fmt.Sprintf("first-%d.jsonl", n))
		if err := writeManifestPrefix(ctx, st, data, manifest, n); err != nil {
			return err
		}
		for r := 0; r < bf.rounds; r++ {
			for _, inProcess := range []bool{true, false} {
				o := label.Options{Dataset: config.Dataset{Manifest: manifest, MaxPixels: config.Default().Dataset.MaxPixels},
					Label: config.Default().Label, Backend: env.cfg.Runner.Backend, InProcess: inProcess}
				o.Label.Model = modelURI
				o.Label.Out = filepath.Join(bf.out, fmt.Sprintf("labels-%d", n))
				m, err := label.Measured(ctx, o)
				if err != nil {
					return err
				}
				results = append(results, m)
				fmt.Fprintf(env.stdout, "%-7d %-11s %8.1f %9.1f %6.2f %8.0fMB %8.0fMB %8.0fMB\n", n, m.Mode, m.Seconds, m.ImagesPerSec, m.Cores, m.PeakLiveMB, m.PeakHeapMB, m.PeakRSSMB)
			}
		}
	}
	raw, _ := json.MarshalIndent(results, "", "  ")
	return st.WriteFile(ctx, filepath.Join(bf.out, "bench.json"), append(raw, '\n'))
}

// writeManifestPrefix writes a manifest of the first n train records.
func writeManifestPrefix(ctx context.Context, st *storage.Store, root, path string, n int) error {
	ds, err := dataset.Load(ctx, st, root, "train")
	if err != nil {
		return err
	}
	if n > len(ds.Records) {
		n = len(ds.Records)
	}
	var b strings.Builder
	for _, r := range ds.Records[:n] {
		tags := make([]string, len(r.Tags))
		for i, t := range r.Tags {
			tags[i] = ds.Classes[t]
		}
		line, _ := json.Marshal(map[string]any{"id": r.ID, "image": r.Image, "tags": tags, "saliency": r.Saliency, "gt": r.GT})
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := st.WriteFile(ctx, storage.Join(storage.Dir(path), dataset.ClassesFile), []byte(strings.Join(ds.Classes, "\n")+"\n")); err != nil {
		return err
	}
	return st.WriteFile(ctx, path, []byte(b.String()))
}

// benchModel is --model, or else a small model of method trained for 30
// steps on ds (written to bench-model.l2g in the working dir): what a
// benchmark labels with.
func benchModel(ctx context.Context, env *cmdEnv, st *storage.Store, ds *dataset.Dataset, bf *benchFlags, method string) (string, error) {
	if bf.model != "" {
		return bf.model, nil
	}
	uri := filepath.Join(bf.out, "bench-model.l2g")
	tc := config.Default().Train
	tc.Out, tc.Method, tc.Steps = uri, method, 30
	fmt.Fprintf(env.stderr, "bench: training a small %s model (%d steps)\n", method, tc.Steps)
	if _, err := trainer.Run(ctx, trainer.Options{Config: tc, Data: ds, Store: st, Backend: env.cfg.Runner.Backend}); err != nil {
		return "", err
	}
	return uri, nil
}

// timedRun runs bin with args to its exit and returns its wall seconds
// and peak resident memory in MB (pollPeakRSS); its output is kept for
// the error.
func timedRun(ctx context.Context, bin string, args ...string) (secs, peakMB float64, err error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("%s %s: %w", filepath.Base(bin), args[0], err)
	}
	done, peak := make(chan struct{}), make(chan float64, 1)
	go func() { peak <- pollPeakRSS(cmd.Process.Pid, done) }()
	err = cmd.Wait()
	close(done)
	peakMB = <-peak
	if err != nil {
		return 0, 0, fmt.Errorf("%s %s: %w (%s)", filepath.Base(bin), args[0], err, strings.TrimSpace(out.String()))
	}
	return time.Since(start).Seconds(), peakMB, nil
}
