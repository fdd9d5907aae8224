package transforms

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/l2gflow/l2gflow/io/artifact"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
)

// Outcome kinds.
const (
	OutcomeLabelled = "labelled"
	OutcomeFailed   = "failed"
	OutcomeSkipped  = "skipped"   // a label (of this model, when incremental) exists
	OutcomeInfer    = "inference" // a group's inference statistics
	OutcomeRun      = "run"       // one a run, so that the count always has an input
)

// Outcome is what happened to one image (or, for OutcomeInfer, to one
// inference group): the run's counts are the sum of its outcomes.
type Outcome struct {
	Kind      string
	ID        string
	Stage     string // failed: the stage
	Rule      string // labelled: the background rule applied
	SalStatus string
	Views     int
	Retries   int
	Infer     model.InferStats
	Kernels   string // labelled: the kernel set of its CAMs
	// Pixels and Millis are a labelled image's size and the time spent on
	// it (its share of its inference group's, its fusion and writing).
	Pixels int
	Millis float64
}

// labelledOutcome is the outcome of a label written.
func labelledOutcome(w Written) Outcome {
	return Outcome{Kind: OutcomeLabelled, ID: w.ID, Rule: w.Rule, SalStatus: w.SalStatus, Views: w.Views, Retries: w.Retries,
		Kernels: w.Kernels, Pixels: w.Pixels, Millis: w.Millis}
}

// Dist summarises a distribution of values: how many, their sum, the
// smallest and the largest.
type Dist struct {
	Count int64   `json:"count"`
	Sum   float64 `json:"sum"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
}

// Add counts one value.
func (d *Dist) Add(v float64) {
	if d.Count == 0 || v < d.Min {
		d.Min = v
	}
	if d.Count == 0 || v > d.Max {
		d.Max = v
	}
	d.Count++
	d.Sum += v
}

// Merge adds another summary.
func (d *Dist) Merge(o Dist) {
	if o.Count == 0 {
		return
	}
	if d.Count == 0 || o.Min < d.Min {
		d.Min = o.Min
	}
	if d.Count == 0 || o.Max > d.Max {
		d.Max = o.Max
	}
	d.Count += o.Count
	d.Sum += o.Sum
}

// Mean is the values' mean (0 for none).
func (d Dist) Mean() float64 {
	if d.Count == 0 {
		return 0
	}
	return d.Sum / float64(d.Count)
}

// Counts are a run's numbers. They are exact: the sum of every image's
// outcome, not runner metrics.
type Counts struct {
	Listed          int64 `json:"listed"`           // records read from the list
	SkippedExisting int64 `json:"skipped_existing"` // labels already present (not --overwrite)
	Submitted       int64 `json:"submitted"`        // records sent through the stages
	ImagesRead      int64 `json:"images_read"`
	ViewsInferred   int64 `json:"views_inferred"`
	LabelsWritten   int64 `json:"labels_written"`
	SaliencyMissing int64 `json:"saliency_missing"`
	SaliencyBad     int64 `json:"saliency_unusable"`
	Fallback        int64 `json:"saliency_fallback"`
	// Failed counts dead letters per stage.
	Failed      map[string]int64 `json:"failed"`
	DeadLetters int64            `json:"dead_letters"`
	// StorageRetries are the retries spent on images' own files.
	StorageRetries int64            `json:"storage_retries"`
	Inference      model.InferStats `json:"inference"`
	// KernelSets counts the labels by the kernel set their CAMs were
	// computed with (model.KernelSet): labels are the same to the bit
	// within one set, within float tolerance across sets.
	KernelSets map[string]int64 `json:"kernel_sets"`
	// ImageMillis and ImageMegapixels describe the labelled images: the
	// time spent on each and their sizes (the figures of the job's
	// distributions, from its own outcomes).
	ImageMillis     Dist `json:"image_millis"`
	ImageMegapixels Dist `json:"image_megapixels"`
}

// Add counts one outcome.
func (c *Counts) Add(o Outcome) {
	if c.Failed == nil {
		c.Failed = map[string]int64{}
	}
	c.StorageRetries += int64(o.Retries)
	switch o.Kind {
	case OutcomeSkipped:
		c.Listed++
		c.SkippedExisting++
	case OutcomeLabelled:
		c.Listed++
		c.Submitted++
		c.ImagesRead++
		c.LabelsWritten++
		c.ViewsInferred += int64(o.Views)
		c.ImageMillis.Add(o.Millis)
		c.ImageMegapixels.Add(float64(o.Pixels) / 1e6)
		if o.Kernels != "" {
			if c.KernelSets == nil {
				c.KernelSets = map[string]int64{}
			}
			c.KernelSets[o.Kernels]++
		}
		if o.Rule == RuleFallback {
			c.Fallback++
		}
		switch o.SalStatus {
		case SalNone, SalMissing:
			c.SaliencyMissing++
		case SalUnreadable, SalWrongSize:
			c.SaliencyBad++
		}
	case OutcomeFailed:
		c.Listed++
		c.DeadLetters++
		c.Failed[o.Stage]++
		if o.Stage != StageList {
			c.Submitted++
		}
		if o.Stage != StageLoad && o.Stage != StageList {
			c.ImagesRead++
		}
	case OutcomeInfer:
		c.Inference.Add(o.Infer)
	}
}

// Merge adds other's counts to c.
func (c *Counts) Merge(o Counts) {
	if c.Failed == nil {
		c.Failed = map[string]int64{}
	}
	c.Listed += o.Listed
	c.SkippedExisting += o.SkippedExisting
	c.Submitted += o.Submitted
	c.ImagesRead += o.ImagesRead
	c.ViewsInferred += o.ViewsInferred
	c.LabelsWritten += o.LabelsWritten
	c.SaliencyMissing += o.SaliencyMissing
	c.SaliencyBad += o.SaliencyBad
	c.Fallback += o.Fallback
	for k, v := range o.Failed {
		c.Failed[k] += v
	}
	c.ImageMillis.Merge(o.ImageMillis)
	c.ImageMegapixels.Merge(o.ImageMegapixels)
	for k, v := range o.KernelSets {
		if c.KernelSets == nil {
			c.KernelSets = map[string]int64{}
		}
		c.KernelSets[k] += v
	}
	c.DeadLetters += o.DeadLetters
	c.StorageRetries += o.StorageRetries
	c.Inference.Add(o.Inference)
}

// ModelInfo identifies the model used.
type ModelInfo struct {
	URI      string             `json:"uri"`
	SHA256   string             `json:"sha256"`
	Manifest *artifact.Manifest `json:"manifest"`
}

// RunRecord is written by the job's last step to OUT/_runs/<run>.json and
// OUT/_run.json: what was run, with what, and what came of it.
type RunRecord struct {
	RunID       string    `json:"run_id"`
	Started     time.Time `json:"started"`
	Finished    time.Time `json:"finished"`
	DurationSec float64   `json:"duration_sec"`
	Runner      string    `json:"runner"`
	// Job is the runner's job id, when it has one (Dataflow).
	Job      string    `json:"job,omitempty"`
	Producer string    `json:"producer"`
	Model    ModelInfo `json:"model"`
	// Dataset and Config are the launcher's configuration (as JSON, so
	// that this package need not know its types).
	Dataset json.RawMessage `json:"dataset,omitempty"`
	Config  json.RawMessage `json:"config,omitempty"`
	// Mode is how existing labels were treated: overwrite, skip-existing
	// or incremental.
	Mode string `json:"mode"`
	// Threshold is the threshold rule's background threshold and where it
	// came from ("model": calibrated at training on saliency maps;
	// "fixed": the configuration).
	Threshold ThresholdUsed `json:"threshold"`
	Counts    Counts        `json:"counts"`
	// MemoryBudget is the memory budget of the process that wrote the
	// record (on a local runner, the one that labelled).
	MemoryBudget MemoryBudgetUsed `json:"memory_budget"`
	// Platform is the machine of the job's last step (a worker): its CPU,
	// vector features and kernel set. Counts.KernelSets says which kernel
	// sets computed the labels.
	Platform model.Platform `json:"platform"`
	// Buckets are the inference engine's bucket options.
	Buckets         model.BucketOptions `json:"buckets"`
	PaddingOverhead float64             `json:"padding_overhead"`
	ImagesPerS      float64             `json:"images_per_sec"`
	// MaxFailures is the limit given, and FailureLimit what it came to
	// for this run's images (-1: none).
	MaxFailures  string `json:"max_failures,omitempty"`
	FailureLimit int64  `json:"failure_limit"`
	// TooManyFailures is set when the dead letters exceeded the limit:
	// the job then failed after writing its records.
	TooManyFailures bool `json:"too_many_failures,omitempty"`
	// ErrorsFile lists this run's dead letters, one JSON object a line.
	ErrorsFile  string       `json:"errors_file"`
	DeadLetters []DeadLetter `json:"dead_letters,omitempty"`
}

// MemoryBudgetUsed is a process's memory budget: its size, where the
// figure came from, and the most bytes held at once.
type MemoryBudgetUsed struct {
	Bytes    int64  `json:"bytes"`
	Source   string `json:"source"`
	PeakHeld int64  `json:"peak_held"`
}

// maxDeadLettersInRecord bounds the dead letters copied into the run
// record (all are in its errors file).
const maxDeadLettersInRecord = 100

// ThresholdUsed is the background threshold a run labelled with.
type ThresholdUsed struct {
	Value  float64 `json:"value"`
	Source string  `json:"source"`
	Images int     `json:"calibration_images,omitempty"`
	// CAMThreshold is the saliency rule's class-score floor:
	// label.cam_threshold, or the model's threshold when Source is "model"
	// and it is lower.
	CAMThreshold float64 `json:"cam_threshold"`
	// Reason says in words why this threshold was used (for people
	// reading the record and the report).
	Reason string `json:"reason,omitempty"`
	// Warnings are the model's calibration warnings (see model.Calibrate):
	// the labels may not be trusted.
	Warnings []string `json:"warnings,omitempty"`
}

// RunOptions configure a run's bookkeeping (RecordRun and the in-process
// path): plain data, carried by DoFns as JSON.
type RunOptions struct {
	Out      string
	RunID    string
	ModelSHA string
	Storage  storage.Options
	// MaxFailures fails the run when its dead letters exceed a count
	// ("10"), a fraction ("0.01") or a percentage ("1%") of the submitted
	// images; "" is no limit.
	MaxFailures string
	// MemoryBudget is the labeling's memory budget setting (see
	// ProcessBudget), recorded with the run.
	MemoryBudget int64
	// IndexFlushLabels and IndexFlushEvery bound how many labels and how
	// long the model's index holds before it is written as a part
	// (defaults 50 and 30 seconds): an interrupted run's next
	// --incremental relabels at most that many.
	IndexFlushLabels int
	IndexFlushEvery  time.Duration
	// Record is the run record's start: everything known at launch.
	Record RunRecord
}

// ErrTooManyFailures is returned (wrapped) when a run's dead letters
// exceed RunOptions.MaxFailures; the records are written first.
var ErrTooManyFailures = errors.New("too many failed images")

// FailureLimit parses a MaxFailures value for a run of submitted images
// (ok false: no limit).
func FailureLimit(spec string, submitted int64) (limit int64, ok bool, err error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return 0, false, nil
	}
	if p, isPct := strings.CutSuffix(spec, "%"); isPct {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f < 0 || f > 100 {
			return 0, false, fmt.Errorf("max failures %q: want a count, a fraction or a percentage", spec)
		}
		return int64(math.Floor(f / 100 * float64(submitted))), true, nil
	}
	if strings.Contains(spec, ".") {
		f, err := strconv.ParseFloat(spec, 64)
		if err != nil || f < 0 || f > 1 {
			return 0, false, fmt.Errorf("max failures %q: a fraction must be in [0, 1]", spec)
		}
		return int64(math.Floor(f * float64(submitted))), true, nil
	}
	n, err := strconv.ParseInt(spec, 10, 64)
	if err != nil || n < 0 {
		return 0, false, fmt.Errorf("max failures %q: want a count, a fraction or a percentage", spec)
	}
	return n, true, nil
}

// RunErrorsDir is where a run's dead-letter parts go.
func RunErrorsDir(out, runID string) string { return storage.Join(out, ErrorsDir, runID) }

// RunIndexDir is where a run's index parts go for a model.
func RunIndexDir(out, modelSHA, runID string) string {
	return storage.Join(out, IndexDir, modelSHA, runID)
}

// RunRecordURI is a run's own record.
func RunRecordURI(out, runID string) string { return storage.Join(out, RunsDir, runID+".json") }

// partWriter gathers lines and writes them as part files under dir, named
// by a random id: every bundle attempt writes its own parts, so retries
// and concurrent runs never write to the same object. A part is written
// when it holds maxLines lines (default partLines) or its first line is
// older than every (0: no age limit), and at flush.
type partWriter struct {
	dir, ext string
	maxLines int
	every    time.Duration
	buf      bytes.Buffer
	lines    int
	first    time.Time
}

// partLines is how many lines a part holds at most by default.
const partLines = 10000

// indexParts is a writer of a run's parts of the model's index, flushed as
// the run options say.
func indexParts(o RunOptions) partWriter {
	p := partWriter{dir: RunIndexDir(o.Out, o.ModelSHA, o.RunID), ext: ".txt", maxLines: o.IndexFlushLabels, every: o.IndexFlushEvery}
	if p.maxLines <= 0 {
		p.maxLines = 50
	}
	if p.every <= 0 {
		p.every = 30 * time.Second
	}
	return p
}

func (p *partWriter) add(ctx context.Context, st *storage.Store, line []byte) error {
	if p.lines == 0 {
		p.first = time.Now()
	}
	p.buf.Write(line)
	p.buf.WriteByte('\n')
	p.lines++
	limit := p.maxLines
	if limit <= 0 {
		limit = partLines
	}
	if p.lines >= limit || (p.every > 0 && time.Since(p.first) >= p.every) {
		return p.flush(ctx, st)
	}
	return nil
}

func (p *partWriter) flush(ctx context.Context, st *storage.Store) error {
	if p.lines == 0 {
		return nil
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	uri := storage.Join(p.dir, hex.EncodeToString(id[:])+p.ext)
	if err := st.WriteFile(ctx, uri, p.buf.Bytes()); err != nil {
		return err
	}
	p.buf.Reset()
	p.lines = 0
	return nil
}

// FinishRun is a run's last step, the same for a Beam job and the
// in-process path: it merges the run's dead-letter parts (duplicates from
// retried bundles removed) into OUT/_errors.jsonl and the run's own
// errors file, writes the run record to OUT/_runs/<run>.json and
// OUT/_run.json, and returns ErrTooManyFailures (wrapped) when the dead
// letters exceed the limit. Running it twice gives the same files.
func FinishRun(ctx context.Context, st *storage.Store, o RunOptions, c Counts) (*RunRecord, error) {
	rec := o.Record
	rec.RunID = o.RunID
	dead, err := readDeadLetters(ctx, st, RunErrorsDir(o.Out, o.RunID))
	if err != nil {
		return nil, err
	}
	// The parts are the truth for dead letters (a retried bundle's outcome
	// may have been counted by a failed attempt's parts too).
	c.DeadLetters = int64(len(dead))
	if c.Failed == nil {
		c.Failed = map[string]int64{}
	}
	rec.Counts = c
	rec.Platform = model.CurrentPlatform(nil)
	rec.Finished = time.Now().UTC()
	if !rec.Started.IsZero() {
		rec.DurationSec = rec.Finished.Sub(rec.Started).Seconds()
	}
	if rec.DurationSec > 0 {
		rec.ImagesPerS = float64(c.LabelsWritten) / rec.DurationSec
	}
	rec.PaddingOverhead = c.Inference.PaddingOverhead()
	rec.MaxFailures = o.MaxFailures
	limit, limited, err := FailureLimit(o.MaxFailures, c.Submitted)
	if err != nil {
		return nil, err
	}
	rec.FailureLimit = -1
	if limited {
		rec.FailureLimit = limit
		rec.TooManyFailures = c.DeadLetters > limit
	}
	var b bytes.Buffer
	for _, d := range dead {
		line, _ := json.Marshal(d)
		b.Write(line)
		b.WriteByte('\n')
	}
	runErrors := storage.Join(o.Out, ErrorsDir, o.RunID+".jsonl")
	for _, uri := range []string{runErrors, storage.Join(o.Out, ErrorsFile)} {
		if err := st.WriteFile(ctx, uri, b.Bytes()); err != nil {
			return nil, err
		}
	}
	rec.ErrorsFile = runErrors
	rec.DeadLetters = dead[:min(len(dead), maxDeadLettersInRecord)]
	if err := mergeIndexParts(ctx, st, RunIndexDir(o.Out, o.ModelSHA, o.RunID)); err != nil {
		return nil, fmt.Errorf("merge the model's index parts: %w", err)
	}
	budget := ProcessBudget(o.MemoryBudget)
	rec.MemoryBudget = MemoryBudgetUsed{Bytes: budget.Total(), Source: budget.Source(), PeakHeld: budget.Peak()}
	raw, _ := json.MarshalIndent(rec, "", "  ")
	raw = append(raw, '\n')
	for _, uri := range []string{RunRecordURI(o.Out, o.RunID), storage.Join(o.Out, RunFile)} {
		if err := st.WriteFile(ctx, uri, raw); err != nil {
			return nil, err
		}
	}
	if rec.TooManyFailures {
		return &rec, fmt.Errorf("%w: %d dead letters, more than the %d allowed (max failures %s); see %s",
			ErrTooManyFailures, c.DeadLetters, limit, o.MaxFailures, runErrors)
	}
	return &rec, nil
}

// mergedIndexPart is the name of a run's merged index part.
const mergedIndexPart = "merged.txt"

// mergeIndexParts replaces a run's index parts (written as labels were)
// by one part of the ids sorted, each once: the merged part is written
// before the others are removed, so an interruption leaves duplicates at
// worst, never a lost id.
func mergeIndexParts(ctx context.Context, st *storage.Store, dir string) error {
	parts, err := st.List(ctx, dir, "*.txt")
	if err != nil || len(parts) == 0 {
		return err
	}
	seen := map[string]bool{}
	for _, p := range parts {
		raw, err := st.ReadFile(ctx, p, 1<<30)
		if err != nil {
			return err
		}
		for _, id := range strings.Fields(string(raw)) {
			seen[id] = true
		}
	}
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	merged := storage.Join(dir, mergedIndexPart)
	if err := st.WriteFile(ctx, merged, []byte(strings.Join(ids, "\n")+"\n")); err != nil {
		return err
	}
	for _, p := range parts {
		if storage.Base(p) == mergedIndexPart {
			continue
		}
		if err := st.Remove(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// readDeadLetters reads a run's dead-letter parts, sorted by id and stage,
// each (id, stage) once.
func readDeadLetters(ctx context.Context, st *storage.Store, dir string) ([]DeadLetter, error) {
	parts, err := st.List(ctx, dir, "*.jsonl")
	if err != nil {
		return nil, err
	}
	seen := map[[2]string]bool{}
	dead := []DeadLetter{}
	for _, p := range parts {
		raw, err := st.ReadFile(ctx, p, 1<<30)
		if err != nil {
			return nil, err
		}
		for _, line := range bytes.Split(raw, []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			var d DeadLetter
			if err := json.Unmarshal(line, &d); err != nil {
				return nil, fmt.Errorf("dead letters %s: %w", p, err)
			}
			if k := [2]string{d.ID, d.Stage}; !seen[k] {
				seen[k] = true
				dead = append(dead, d)
			}
		}
	}
	slices.SortFunc(dead, func(a, b DeadLetter) int {
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return strings.Compare(a.Stage, b.Stage)
	})
	return dead, nil
}

// deadLetterLine renders a dead letter for its part file, its reason
// redacted of any credentials (signed URLs, user info) a failing path or
// error carried: every dead letter of both paths is written here.
func deadLetterLine(d DeadLetter) []byte {
	d.Reason = storage.Redact(d.Reason)
	raw, _ := json.Marshal(d)
	return raw
}
