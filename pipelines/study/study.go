// Package study runs the label-quality study: for each benchmark
// generator and seed it synthesises a dataset, trains every arm (a method
// and its settings), labels the train split with it under the threshold
// rule (at the model's calibrated threshold, CAMs kept for the threshold
// sweep) and under the saliency rule, evaluates both against the ground
// truth, and scores the classifier on the val split. Each finished run
// leaves a result file, so an interrupted study resumes where it stopped;
// Report aggregates the results over seeds into docs/quality.md and a
// plot of the threshold sweeps.
package study

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/synth"
	"github.com/l2gflow/l2gflow/model"
	"github.com/l2gflow/l2gflow/model/trainer"
	"github.com/l2gflow/l2gflow/pipelines/eval"
	"github.com/l2gflow/l2gflow/pipelines/label"
	"github.com/l2gflow/l2gflow/transforms"
)

// Arm is one method with its settings.
type Arm struct {
	Name string
	// Doc says what the arm tests, for the report.
	Doc string
	// Train changes the study's base training configuration.
	Train func(t *config.Train)
	// EqualTimeTo names an arm (run before this one) whose training time,
	// per seed, is this arm's time budget; its epochs are then only an
	// upper bound.
	EqualTimeTo string
}

// Arms are the study's arms, in the order they run.
func Arms() []Arm {
	return []Arm{
		{Name: "cam", Doc: "plain CAM baseline: the global network with the classification loss only", Train: func(t *config.Train) { t.Method = "cam" }},
		{Name: "l2g", Doc: "L2G with train's defaults", Train: func(t *config.Train) { t.Method = "l2g" }},
		{Name: "cam-time", Doc: "CAM trained for as long (wall time) as L2G, up to 4x the epochs", EqualTimeTo: "l2g",
			Train: func(t *config.Train) { t.Method, t.Epochs = "cam", 4*t.Epochs }},
		{Name: "l2g-pcm", Doc: "L2G with the pixel correlation module (the reference's networks)", Train: func(t *config.Train) { t.Method, t.PCM = "l2g", config.True }},
		{Name: "l2g-nopcm", Doc: "L2G without the pixel correlation module", Train: func(t *config.Train) { t.Method, t.PCM = "l2g", config.False }},
		{Name: "l2g-gcw0", Doc: "L2G without the global classification loss (the reference objective)", Train: func(t *config.Train) { t.Method, t.GlobalClsWeight = "l2g", 0 }},
		{Name: "l2g-gcw1", Doc: "L2G with the global classification loss at weight 1", Train: func(t *config.Train) { t.Method, t.GlobalClsWeight = "l2g", 1 }},
		{Name: "l2g-kl", Doc: "L2G with the paper's KL transfer loss instead of the code's MSE", Train: func(t *config.Train) { t.Method, t.Transfer = "l2g", "kl" }},
		{Name: "l2g-gcw05", Doc: "L2G with the global classification loss at weight 0.5", Train: func(t *config.Train) { t.Method, t.GlobalClsWeight = "l2g", 0.5 }},
		{Name: "l2g-kd5", Doc: "L2G with the transfer weight 5 (kd_weight 5)", Train: func(t *config.Train) { t.Method, t.KDWeight = "l2g", 5 }},
		{Name: "l2g-kd10", Doc: "L2G with the reference's transfer weight (kd_weight 10)", Train: func(t *config.Train) { t.Method, t.KDWeight = "l2g", 10 }},
		{Name: "l2g-kd20", Doc: "L2G with the transfer weight 20 (kd_weight 20)", Train: func(t *config.Train) { t.Method, t.KDWeight = "l2g", 20 }},
		{Name: "l2g-bgthr01", Doc: "L2G whose local target keeps a class only where its normalised local CAM exceeds 0.1 (bg_thr 0.1; the reference's 0.001 keeps any activation)",
			Train: func(t *config.Train) { t.Method, t.BgThr = "l2g", 0.1 }},
		{Name: "l2g-softmax", Doc: "L2G without the global classification loss, its maps read per pixel as a softmax over the tagged classes and background (as the transfer trains them)",
			Train: func(t *config.Train) { t.Method, t.GlobalClsWeight, t.CAMReading = "l2g", 0, "softmax" }},
		{Name: "l2g-softmax-gcw1", Doc: "L2G with the global classification loss at weight 1, its maps read as a softmax",
			Train: func(t *config.Train) { t.Method, t.GlobalClsWeight, t.CAMReading = "l2g", 1, "softmax" }},
	}
}

// Options configure a study.
type Options struct {
	Out   string   // working directory: data, models, labels, results
	Arms  []string // names of the arms to run (all when empty)
	Seeds []int64  // dataset and training seeds
	// SelectSeeds are the seeds (of Seeds) the defaults are chosen on;
	// the report gives the figures of the other seeds, on which nothing
	// was chosen (all seeds when none are left).
	SelectSeeds []int64
	Generators  []string // benchmark variants (synth.Variants)
	// Commit is the source commit of the binary running the study; every
	// result records it, and a study's results must share one.
	Commit  string
	Synth   config.Synth
	Train   config.Train // base configuration every arm changes
	Label   config.Label
	Eval    config.Eval
	Backend string
	Log     io.Writer
}

// Defaults are the full study's settings: 600 images of about 128 px, 6
// classes per dataset, train's defaults, every benchmark variant, seeds
// 1-6 of which 1-3 choose the defaults and 4-6 report them.
func Defaults(out string) Options {
	cfg := config.Default()
	s := cfg.Synth
	s.Images = 600
	t := cfg.Train
	t.CheckpointEv = 0
	l := cfg.Label
	l.KeepCAMs, l.Overwrite = true, true
	return Options{Out: out, Seeds: []int64{1, 2, 3, 4, 5, 6}, SelectSeeds: []int64{1, 2, 3}, Generators: synth.Variants(),
		Synth: s, Train: t, Label: l, Eval: cfg.Eval, Backend: cfg.Runner.Backend}
}

// Quick shrinks a study to a check of minutes: 300 images of about 96 px,
// a third of the epochs (at least 2), one seed, the v2 generator.
func (o Options) Quick() Options {
	o.Synth.Images, o.Synth.Size = 300, 96
	o.Train.Epochs = max(2, o.Train.Epochs/3)
	o.Train.ImageSize, o.Train.ViewSize = 96, 72
	o.Seeds, o.SelectSeeds, o.Generators = o.Seeds[:1], o.Seeds[:1], []string{"v2"}
	return o
}

// Result is one run of one arm: what it cost and what it scored.
type Result struct {
	Arm       string `json:"arm"`
	Generator string `json:"generator"`
	Seed      int64  `json:"seed"`
	// Commit is the source commit of the binary that made the result.
	Commit string `json:"commit"`
	// ConfigHash identifies the run's settings apart from its seed and
	// paths: the arm's training, the dataset's, labeling's and
	// evaluation's configuration (configHash).
	ConfigHash string `json:"config_hash"`
	// WallSeconds is the run's wall time: training, labeling (both rules),
	// evaluation and classification.
	WallSeconds float64 `json:"wall_seconds"`
	// Config is the arm's training configuration.
	Config       config.Train `json:"config"`
	TrainSeconds float64      `json:"train_seconds"`
	Epochs       float64      `json:"epochs"`
	Steps        int          `json:"steps"`
	// Threshold is the calibrated background threshold the labels were
	// written with (NaN when the model has none: then the configured one).
	Threshold Score `json:"threshold"`
	// Written is the mIoU of the labels as written (threshold rule at
	// Threshold); Fixed the sweep's mIoU at the configured fixed
	// threshold; Best the best of the sweep and the written labels, at
	// BestThreshold (a calibrated threshold can lie outside the sweep);
	// Saliency the saliency background rule's.
	Written       Score              `json:"miou_written"`
	FixedAt       float64            `json:"fixed_threshold"`
	Fixed         Score              `json:"miou_fixed"`
	Best          Score              `json:"miou_best"`
	BestThreshold Score              `json:"best_threshold"`
	Saliency      Score              `json:"miou_saliency"`
	Sweep         []eval.SweepPoint  `json:"sweep"`
	ClassIoU      map[string]float64 `json:"class_iou"`
	// Classification of the val split from the image logits.
	Classification Classification `json:"classification"`
	LabelSeconds   float64        `json:"label_seconds"`
	// SameAs names the arm whose run this result is when this arm's
	// configuration is that arm's (nothing was trained for it).
	SameAs string `json:"same_as,omitempty"`
}

// ResultFile is the name of a finished run's result in its directory.
const ResultFile = "result.json"

// Run runs the study in two stages and returns all results under Out
// (also those of earlier invocations). First every arm on every variant
// with the selection seeds; then, on the other seeds, only what the
// report shows of them: cam and the arm ChooseDefault picks from the
// first stage's results (every arm when there is no choice, as when cam
// is not among the arms). An arm whose configuration is an earlier arm's
// on the same variant and seed (l2g-gcw05 while train's default weight
// is 0.5) is not trained again: its result is that arm's, marked SameAs.
// Runs with a result are skipped, so an interrupted study resumes.
func Run(ctx context.Context, o Options) ([]Result, error) {
	arms, err := selectArms(o.Arms)
	if err != nil {
		return nil, err
	}
	earlier, err := LoadResults(o.Out)
	if err != nil {
		return nil, err
	}
	for _, r := range earlier {
		if r.Commit != o.Commit {
			return nil, fmt.Errorf("%s holds results of commit %q (%s seed %d %s) and this binary is commit %q: "+
				"a study's results come from one commit; use an empty --out, or that commit's binary to resume",
				o.Out, r.Commit, r.Generator, r.Seed, r.Arm, o.Commit)
		}
	}
	selectSeeds, reportSeeds := o.stageSeeds()
	st := storage.New()
	defer st.Close()
	if err := o.runStage(ctx, st, "selection", selectSeeds, arms); err != nil {
		return nil, err
	}
	if len(reportSeeds) > 0 {
		results, err := LoadResults(o.Out)
		if err != nil {
			return nil, err
		}
		sel, _ := splitSeeds(results, selectSeeds)
		reportArms := arms
		if ranked := ChooseDefault(Summarize(sel)); len(ranked) > 0 {
			chosen := ranked[0].Arm
			reportArms = slices.DeleteFunc(slices.Clone(arms), func(a Arm) bool { return a.Name != "cam" && a.Name != chosen })
			o.logf("study: %s chosen on seeds %v (worst case %+.1f on %s, mean %+.1f); the reporting seeds run cam and %s",
				chosen, selectSeeds, 100*ranked[0].Worst, ranked[0].WorstOn, 100*ranked[0].Mean, chosen)
		}
		if err := o.runStage(ctx, st, "reporting", reportSeeds, reportArms); err != nil {
			return nil, err
		}
	}
	return LoadResults(o.Out)
}

// stageSeeds splits Seeds into the selection seeds (all of them when
// SelectSeeds names none of them) and the rest.
func (o Options) stageSeeds() (selection, reporting []int64) {
	for _, s := range o.Seeds {
		if slices.Contains(o.SelectSeeds, s) {
			selection = append(selection, s)
		} else {
			reporting = append(reporting, s)
		}
	}
	if len(selection) == 0 {
		return reporting, nil
	}
	return selection, reporting
}

// runStage runs the arms on every variant with the seeds, skipping runs
// with a result and reusing the result of an earlier arm of the same
// configuration.
func (o Options) runStage(ctx context.Context, st *storage.Store, stage string, seeds []int64, arms []Arm) error {
	total := len(o.Generators) * len(seeds) * len(arms)
	done := 0
	for _, gen := range o.Generators {
		for _, seed := range seeds {
			data := filepath.Join(o.Out, gen, fmt.Sprintf("seed%d", seed), "data")
			byHash := map[string]string{} // configuration hash -> the arm's result file
			for _, arm := range arms {
				done++
				dir := filepath.Join(o.Out, gen, fmt.Sprintf("seed%d", seed), arm.Name)
				file := filepath.Join(dir, ResultFile)
				hash, err := armHash(o, arm, gen)
				if err != nil {
					return err
				}
				if _, err := os.Stat(file); err == nil {
					o.logf("study %s %d/%d: %s seed %d %s: done earlier", stage, done, total, gen, seed, arm.Name)
					byHash[hash] = file
					continue
				}
				if same, ok := byHash[hash]; ok && arm.EqualTimeTo == "" {
					res, err := readResult(same)
					if err != nil {
						return err
					}
					res.SameAs, res.Arm = res.Arm, arm.Name
					if err := os.MkdirAll(dir, 0o755); err != nil {
						return err
					}
					if err := writeJSON(file, res); err != nil {
						return err
					}
					o.logf("study %s %d/%d: %s seed %d %s: the configuration of %s, its result", stage, done, total, gen, seed, arm.Name, res.SameAs)
					continue
				}
				if err := ensureData(ctx, st, o, gen, seed, data); err != nil {
					return err
				}
				o.logf("study %s %d/%d: %s seed %d %s", stage, done, total, gen, seed, arm.Name)
				res, err := runArm(ctx, st, o, arm, gen, seed, data, dir)
				if err != nil {
					return fmt.Errorf("%s seed %d %s: %w", gen, seed, arm.Name, err)
				}
				if err := writeJSON(file, res); err != nil {
					return err
				}
				byHash[hash] = file
				o.logf("study %s %d/%d: %s seed %d %s: mIoU written %.1f (thr %.2f), fixed %.1f, best %.1f (%.2f), saliency rule %.1f; mAP %.1f; trained %s",
					stage, done, total, gen, seed, arm.Name, 100*res.Written, res.Threshold, 100*res.Fixed, 100*res.Best, res.BestThreshold,
					100*res.Saliency, 100*res.Classification.MAP, time.Duration(res.TrainSeconds*float64(time.Second)).Round(time.Second))
			}
		}
	}
	return nil
}

// armHash is the configuration hash of an arm's runs on a variant.
func armHash(o Options, arm Arm, gen string) (string, error) {
	return configHash(o, armTrain(o, arm), gen)
}

// armTrain is the arm's training configuration, its automatic settings
// resolved: an arm that spells out a default (l2g-pcm, with PCM auto)
// has its twin's configuration and takes its results.
func armTrain(o Options, arm Arm) config.Train {
	tc := o.Train
	arm.Train(&tc)
	return tc.Resolved()
}

func selectArms(names []string) ([]Arm, error) {
	all := Arms()
	if len(names) == 0 {
		return all, nil
	}
	var out []Arm
	for _, a := range all {
		if slices.Contains(names, a.Name) {
			out = append(out, a)
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(all, func(a Arm) bool { return a.Name == n }) {
			known := make([]string, len(all))
			for i, a := range all {
				known[i] = a.Name
			}
			return nil, fmt.Errorf("unknown arm %q (arms: %s)", n, strings.Join(known, ", "))
		}
	}
	return out, nil
}

// ensureData synthesises the dataset of a (generator, seed) unless its
// tag lists (written last) exist.
func ensureData(ctx context.Context, st *storage.Store, o Options, gen string, seed int64, root string) error {
	if _, err := os.Stat(filepath.Join(root, "val_cls.txt")); err == nil {
		return nil
	}
	s := o.Synth
	s.Out, s.Generator, s.Seed = root, gen, seed
	o.logf("study: synthesising %d images (generator %s, seed %d) in %s", s.Images, gen, seed, root)
	_, err := synth.Write(ctx, st, root, synth.FromConfig(s))
	return err
}

func runArm(ctx context.Context, st *storage.Store, o Options, arm Arm, gen string, seed int64, data, dir string) (*Result, error) {
	// The labeling runs below load the arm's model into the process's
	// engine cache; hundreds of runs would keep hundreds of models.
	defer transforms.ReleaseEngines()
	ds, err := dataset.Load(ctx, st, data, "train")
	if err != nil {
		return nil, err
	}
	tc := armTrain(o, arm)
	tc.Seed, tc.Out = seed, filepath.Join(dir, "model.l2g")
	if arm.EqualTimeTo != "" {
		ref, err := readResult(filepath.Join(filepath.Dir(dir), arm.EqualTimeTo, ResultFile))
		if err != nil {
			return nil, fmt.Errorf("equal time needs arm %s first: %w", arm.EqualTimeTo, err)
		}
		tc.TimeBudget = (time.Duration(ref.TrainSeconds * float64(time.Second))).Round(time.Second).String()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	hash, err := configHash(o, tc, gen)
	if err != nil {
		return nil, err
	}
	began := time.Now()
	res := &Result{Arm: arm.Name, Generator: gen, Seed: seed, Commit: o.Commit, ConfigHash: hash, Config: tc}
	m, err := trainedModel(ctx, st, o, tc, ds)
	if err != nil {
		return nil, err
	}
	res.TrainSeconds, res.Epochs, res.Steps = m.Manifest.Metrics.DurationSec, m.Manifest.Metrics.Epochs, m.Manifest.Metrics.Steps
	res.Threshold = Score(math.NaN())
	if t := m.Manifest.Threshold; t != nil {
		res.Threshold = Score(t.Value)
	}

	dc := config.Default().Dataset
	dc.Root, dc.Split = data, "train"
	start := time.Now()
	lc := o.Label
	lc.Model, lc.Out = tc.Out, filepath.Join(dir, "labels")
	if _, err := label.Run(ctx, label.Options{Dataset: dc, Label: lc, Backend: o.Backend, InProcess: true}); err != nil {
		return nil, fmt.Errorf("label: %w", err)
	}
	res.LabelSeconds = time.Since(start).Seconds()
	mt, err := eval.Run(ctx, eval.Options{Dataset: dc, Eval: withLabels(o.Eval, lc.Out), InProcess: true})
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	if err := eval.WriteReport(ctx, st, filepath.Join(dir, "report"), mt, 0); err != nil {
		return nil, err
	}
	res.Written, res.Sweep = Score(mt.MIoU), mt.Sweep
	res.FixedAt, res.Fixed = o.Label.BgThreshold, Score(math.NaN())
	for _, p := range mt.Sweep {
		if math.Abs(p.Threshold-o.Label.BgThreshold) < 1e-9 {
			res.Fixed = Score(p.MIoU)
		}
	}
	res.Best, res.BestThreshold = Score(math.NaN()), Score(math.NaN())
	if mt.Best != nil {
		res.Best, res.BestThreshold = Score(mt.Best.MIoU), Score(mt.Best.Threshold)
	}
	if !(res.Best >= res.Written) { // also when the sweep has no best (NaN)
		res.Best, res.BestThreshold = res.Written, res.Threshold
	}
	res.ClassIoU = map[string]float64{}
	for _, c := range mt.Classes {
		if c.IoU != nil {
			res.ClassIoU[c.Name] = *c.IoU
		}
	}

	sc := o.Label
	sc.Model, sc.Out, sc.Background, sc.KeepCAMs = tc.Out, filepath.Join(dir, "labels-saliency"), "saliency", false
	if _, err := label.Run(ctx, label.Options{Dataset: dc, Label: sc, Backend: o.Backend, InProcess: true}); err != nil {
		return nil, fmt.Errorf("label (saliency rule): %w", err)
	}
	ms, err := eval.Run(ctx, eval.Options{Dataset: dc, Eval: withLabels(o.Eval, sc.Out), InProcess: true})
	if err != nil {
		return nil, fmt.Errorf("eval (saliency rule): %w", err)
	}
	res.Saliency = Score(ms.MIoU)

	val, err := dataset.Load(ctx, st, data, "val")
	if err != nil {
		return nil, err
	}
	backend, err := model.NewBackend(o.Backend)
	if err != nil {
		return nil, err
	}
	e, err := model.NewEngine(backend, m, model.EngineOptions{})
	if err != nil {
		return nil, err
	}
	if res.Classification, err = Classify(ctx, e, st, val.Records, m.Manifest.Classes); err != nil {
		return nil, err
	}
	// The labels and CAMs are large and re-made from the model in a
	// minute; the model and the metrics stay.
	for _, d := range []string{lc.Out, sc.Out} {
		if err := os.RemoveAll(d); err != nil {
			return nil, err
		}
	}
	res.WallSeconds = time.Since(began).Seconds()
	return res, nil
}

// configHash is a short sha256 of what a run's result depends on apart
// from its seed and file locations: the arm's training configuration, the
// dataset's (with its variant), labeling's and evaluation's.
func configHash(o Options, tc config.Train, gen string) (string, error) {
	sy := o.Synth
	sy.Generator, sy.Seed, sy.Out = gen, 0, ""
	// cam-time's budget is the l2g arm's time on the same seed.
	tc.Seed, tc.Out, tc.Resume, tc.TimeBudget = 0, "", false, ""
	lc := o.Label
	lc.Model, lc.Out = "", ""
	ec := o.Eval
	ec.Labels, ec.Report = "", ""
	b, err := json.Marshal(struct {
		Synth config.Synth
		Train config.Train
		Label config.Label
		Eval  config.Eval
	}{sy, tc, lc, ec})
	if err != nil {
		return "", fmt.Errorf("config hash: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

// trainedModel trains the arm's model (resuming an interrupted training
// from its checkpoint) unless the artifact exists, and loads it.
func trainedModel(ctx context.Context, st *storage.Store, o Options, tc config.Train, ds *dataset.Dataset) (*model.Model, error) {
	if _, err := os.Stat(tc.Out); errors.Is(err, fs.ErrNotExist) {
		tc.CheckpointEv = 200
		if _, err := os.Stat(tc.Out + ".ckpt"); err == nil {
			tc.Resume = true // an interrupted training continues
		}
		if _, err := trainer.Run(ctx, trainer.Options{Config: tc, Data: ds, Backend: o.Backend,
			MaxPixels: config.Default().Dataset.MaxPixels, Log: o.Log, Store: st, ProgressEvery: 30 * time.Second}); err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
	}
	data, err := os.ReadFile(tc.Out)
	if err != nil {
		return nil, err
	}
	return model.LoadModel(data)
}

// withLabels is the eval configuration for a labels directory, with its
// report in a sibling directory ("labels" -> "report").
func withLabels(e config.Eval, labels string) config.Eval {
	e.Labels = labels
	e.Report = filepath.Join(filepath.Dir(labels), "report"+strings.TrimPrefix(filepath.Base(labels), "labels"))
	return e
}

// LoadResults reads every result under out.
func LoadResults(out string) ([]Result, error) {
	var all []Result
	if _, err := os.Stat(out); errors.Is(err, fs.ErrNotExist) {
		return nil, nil // a study not started yet
	}
	err := filepath.WalkDir(out, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != ResultFile {
			return err
		}
		r, err := readResult(path)
		if err != nil {
			return err
		}
		all = append(all, *r)
		return nil
	})
	return all, err
}

func readResult(path string) (*Result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// Score is a figure that may be undefined (NaN), written as null.
type Score = eval.Score

// writeJSON writes v atomically (temporary file, rename).
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (o Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}
