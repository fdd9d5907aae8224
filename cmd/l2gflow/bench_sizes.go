package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/synth"
	"github.com/l2gflow/l2gflow/model"
	"github.com/l2gflow/l2gflow/pipelines/label"
)

// sizeRun is one timed label process of the image-size benchmark.
type sizeRun struct {
	Set             string  `json:"set"` // "varied" or "fixed"
	BucketsOctave   int     `json:"buckets_per_octave"`
	Round           int     `json:"round"`
	Images          int     `json:"images"`
	Megapixels      float64 `json:"megapixels"`
	Seconds         float64 `json:"seconds"` // from process start to exit
	MegapixelsPerS  float64 `json:"megapixels_per_sec"`
	PeakRSSMB       float64 `json:"peak_rss_mb"`
	PaddingOverhead float64 `json:"padding_overhead"` // from the run record
	Buckets         int     `json:"buckets"`
}

// runSizeBench compares labeling on images of varied sizes with images of
// one size and the same number of pixels: each run is a new `l2gflow
// label` process on prism, timed from its start to its exit, so that
// model loading and the compilation of every bucket are paid as a user
// pays them.
func runSizeBench(ctx context.Context, env *cmdEnv, bf *benchFlags) error {
	var choices []int
	for _, c := range strings.Split(bf.choices, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 || n > 32 {
			return usagef("--buckets-per-octave: %q is not a count from 1 to 32", c)
		}
		choices = append(choices, n)
	}
	n, err := strconv.Atoi(strings.TrimSpace(bf.sizes))
	if err != nil || n < 8 {
		return usagef("--image-sizes takes one --images count of at least 8, not %q", bf.sizes)
	}
	if bf.rounds < 1 || bf.size < 32 {
		return usagef("--rounds must be at least 1 and --size at least 32")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	st := storage.New()
	defer st.Close()
	varied := filepath.Join(bf.out, "varied")
	fmt.Fprintf(env.stderr, "bench: synthesising %d images of varied sizes (long side about %d px) in %s\n", n, bf.size, varied)
	opts := synth.Options{Images: n, Size: bf.size, Classes: 6, Seed: 1, NoSaliencyFraction: 0.1}
	if _, err := synth.Write(ctx, st, varied, opts); err != nil {
		return err
	}
	pixels, err := trainPixels(ctx, st, varied)
	if err != nil {
		return err
	}
	ds, err := dataset.Load(ctx, st, varied, "train")
	if err != nil {
		return err
	}
	// The fixed set: as many train images, of the side that gives the same
	// number of pixels.
	side := int(math.Round(math.Sqrt(float64(pixels) / float64(len(ds.Records)))))
	fixed := filepath.Join(bf.out, "fixed")
	fopts := opts
	fopts.Size, fopts.FixedSize = side, true
	fmt.Fprintf(env.stderr, "bench: synthesising %d images of %dx%d px in %s\n", n, side, side, fixed)
	if _, err := synth.Write(ctx, st, fixed, fopts); err != nil {
		return err
	}
	fixedPixels, err := trainPixels(ctx, st, fixed)
	if err != nil {
		return err
	}
	modelURI, err := benchModel(ctx, env, st, ds, bf, "cam")
	if err != nil {
		return err
	}
	type job struct {
		set    string
		root   string
		px     int64
		octave int
	}
	var jobs []job
	for _, c := range choices {
		jobs = append(jobs, job{"varied", varied, pixels, c})
	}
	jobs = append(jobs, job{"fixed", fixed, fixedPixels, choices[0]})
	var runs []sizeRun
	fmt.Fprintf(env.stdout, "%-7s %-7s %-6s %7s %8s %8s %9s %9s %8s\n", "set", "octave", "round", "images", "MP", "seconds", "MP/s", "padding", "peak RSS")
	for round := 1; round <= bf.rounds; round++ {
		for _, j := range jobs {
			out := filepath.Join(bf.out, fmt.Sprintf("labels-%s-%d", j.set, j.octave))
			args := []string{"label", "--model", modelURI, "--data", j.root, "--split", "train", "--out", out,
				"--overwrite", "--buckets-per-octave", strconv.Itoa(j.octave), "--backend", env.cfg.Runner.Backend}
			secs, peak, err := timedRun(ctx, self, args...)
			if err != nil {
				return fmt.Errorf("%s set: %w", j.set, err)
			}
			r := sizeRun{Set: j.set, BucketsOctave: j.octave, Round: round, Images: len(ds.Records), Megapixels: float64(j.px) / 1e6,
				Seconds: secs, MegapixelsPerS: float64(j.px) / 1e6 / secs, PeakRSSMB: peak}
			var rec label.RunRecord
			if raw, err := st.ReadFile(ctx, storage.Join(out, "_run.json"), 0); err == nil && json.Unmarshal(raw, &rec) == nil {
				r.PaddingOverhead = rec.PaddingOverhead
				if b, err := model.NewBuckets(rec.Buckets); err == nil {
					r.Buckets = b.Len()
				}
				r.Images = int(rec.Counts.LabelsWritten)
			}
			runs = append(runs, r)
			fmt.Fprintf(env.stdout, "%-7s %-7d %-6d %7d %8.2f %8.1f %9.3f %8.3fx %6.0fMB\n", r.Set, r.BucketsOctave, round, r.Images,
				r.Megapixels, r.Seconds, r.MegapixelsPerS, r.PaddingOverhead, r.PeakRSSMB)
		}
	}
	median := func(set string, octave int) float64 {
		var v []float64
		for _, r := range runs {
			if r.Set == set && r.BucketsOctave == octave {
				v = append(v, r.MegapixelsPerS)
			}
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	fixedRate := median("fixed", choices[0])
	fmt.Fprintf(env.stdout, "median fixed-size rate %.3f MP/s (%d buckets per octave)\n", fixedRate, choices[0])
	for _, c := range choices {
		v := median("varied", c)
		fmt.Fprintf(env.stdout, "median varied-size rate %.3f MP/s with %d buckets per octave: %.0f%% of the fixed-size rate\n", v, c, 100*v/fixedRate)
	}
	raw, _ := json.MarshalIndent(runs, "", "  ")
	return st.WriteFile(ctx, filepath.Join(bf.out, "bench-sizes.json"), append(raw, '\n'))
}

// trainPixels sums the pixels of a dataset's train images.
func trainPixels(ctx context.Context, st *storage.Store, root string) (int64, error) {
	ds, err := dataset.Load(ctx, st, root, "train")
	if err != nil {
		return 0, err
	}
	var px int64
	for _, r := range ds.Records {
		data, err := st.ReadFile(ctx, r.Image, 0)
		if err != nil {
			return 0, err
		}
		img, err := imagefile.DecodeRGB(data, 0)
		if err != nil {
			return 0, err
		}
		px += int64(img.W * img.H)
	}
	return px, nil
}
