package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/synth"
)

// againstRun is one timed label process of the paired benchmark against
// another l2gflow binary.
type againstRun struct {
	Side      string  `json:"side"` // "this" or "other"
	Round     int     `json:"round"`
	Images    int     `json:"images"`
	Seconds   float64 `json:"seconds"` // from process start to exit
	ImagesPS  float64 `json:"images_per_sec"`
	PeakRSSMB float64 `json:"peak_rss_mb"`
}

// runAgainst labels one synthetic train split with this binary and with
// another (typically the previous commit's, `make bench-against`) in
// alternating order, each run a new `label` process on prism timed from
// start to exit, and reports both sides' images a second, the paired
// ratio of each round and whether the two binaries wrote the same labels.
func runAgainst(ctx context.Context, env *cmdEnv, bf *benchFlags) error {
	n, err := strconv.Atoi(strings.TrimSpace(bf.sizes))
	if err != nil || n < 8 {
		return usagef("--against takes one --images count of at least 8, not %q", bf.sizes)
	}
	if bf.rounds < 1 {
		return usagef("--rounds must be at least 1")
	}
	other, err := exec.LookPath(bf.against)
	if err != nil {
		return usagef("--against %s: %v", bf.against, err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	st := storage.New()
	defer st.Close()
	data := filepath.Join(bf.out, "data")
	fmt.Fprintf(env.stderr, "bench: synthesising %d images in %s\n", n, data)
	if _, err := synth.Write(ctx, st, data, synth.Options{Images: n, Size: bf.size, Classes: 6, Seed: 1, NoSaliencyFraction: 0.1}); err != nil {
		return err
	}
	ds, err := dataset.Load(ctx, st, data, "train")
	if err != nil {
		return err
	}
	modelURI, err := benchModel(ctx, env, st, ds, bf, "l2g")
	if err != nil {
		return err
	}
	sides := []struct{ name, bin string }{{"this", self}, {"other", other}}
	var runs []againstRun
	fmt.Fprintf(env.stdout, "%-6s %-6s %7s %8s %9s %9s\n", "side", "round", "images", "seconds", "images/s", "peak RSS")
	for round := 1; round <= bf.rounds; round++ {
		order := slices.Clone(sides)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, s := range order {
			out := filepath.Join(bf.out, "labels-"+s.name)
			if err := os.RemoveAll(out); err != nil {
				return err
			}
			secs, peak, err := timedRun(ctx, s.bin, "label", "--model", modelURI, "--data", data, "--split", "train", "--out", out,
				"--backend", env.cfg.Runner.Backend)
			if err != nil {
				return fmt.Errorf("with %s: %w", s.bin, err)
			}
			r := againstRun{Side: s.name, Round: round, Images: len(ds.Records), Seconds: secs, ImagesPS: float64(len(ds.Records)) / secs, PeakRSSMB: peak}
			runs = append(runs, r)
			fmt.Fprintf(env.stdout, "%-6s %-6d %7d %8.1f %9.1f %7.0fMB\n", r.Side, round, r.Images, r.Seconds, r.ImagesPS, r.PeakRSSMB)
		}
	}
	var ratios, this, that []float64
	for round := 1; round <= bf.rounds; round++ {
		var a, b againstRun
		for _, r := range runs {
			if r.Round == round && r.Side == "this" {
				a = r
			} else if r.Round == round {
				b = r
			}
		}
		ratios, this, that = append(ratios, a.ImagesPS/b.ImagesPS), append(this, a.ImagesPS), append(that, b.ImagesPS)
	}
	same, differ, err := compareLabelDirs(filepath.Join(bf.out, "labels-this"), filepath.Join(bf.out, "labels-other"))
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "this binary %.1f images/s, %s %.1f (medians); paired ratio %.2fx (rounds %.2f-%.2f); labels: %d identical, %d differ\n",
		median(this), bf.against, median(that), median(ratios), slices.Min(ratios), slices.Max(ratios), same, differ)
	raw, _ := json.MarshalIndent(runs, "", "  ")
	return st.WriteFile(ctx, filepath.Join(bf.out, "bench-against.json"), append(raw, '\n'))
}

// median of xs (the upper one of an even count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// compareLabelDirs counts the label PNGs of dir a whose bytes are the same
// in dir b, and those that differ or are missing there.
func compareLabelDirs(a, b string) (same, differ int, err error) {
	names, err := filepath.Glob(filepath.Join(a, "*.png"))
	if err != nil {
		return 0, 0, err
	}
	for _, p := range names {
		x, err := os.ReadFile(p)
		if err != nil {
			return 0, 0, err
		}
		y, err := os.ReadFile(filepath.Join(b, filepath.Base(p)))
		if err == nil && bytes.Equal(x, y) {
			same++
		} else {
			differ++
		}
	}
	return same, differ, nil
}
