package eval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/direct" // --runner direct
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"  // the default

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/pipelines/workerbin"
	"github.com/l2gflow/l2gflow/transforms"
)

// Item is one image to score.
type Item struct {
	ID       string `json:"id"`
	Label    string `json:"label"`              // label PNG URI
	GT       string `json:"gt,omitempty"`       // ground truth URI ("" when the record has none)
	CAM      string `json:"cam,omitempty"`      // fused CAM URI (may not exist)
	Image    string `json:"image,omitempty"`    // for the report's samples
	Saliency string `json:"saliency,omitempty"` // for the report's samples
	Tags     []int  `json:"tags"`
	// Probe is set for records of the layout: the image may have another
	// extension than Image's.
	Probe bool `json:"probe,omitempty"`
}

// ItemOf is the item to score for a dataset record and a label prefix.
func ItemOf(r dataset.Record, labels string) Item {
	return Item{ID: r.ID, Label: transforms.LabelURI(labels, r.ID), GT: r.GT, CAM: transforms.CAMURI(labels, r.ID),
		Image: r.Image, Saliency: r.Saliency, Tags: r.Tags, Probe: r.Probe}
}

// Reasons an image is not scored.
const (
	MissingLabel = "label"
	MissingGT    = "gt"
)

// ImageEval is one image's contribution.
type ImageEval struct {
	Item    Item
	Conf    []int64 // K*K
	Ignored int64
	Scored  int64
	Sweep   []int64 // T*K*K, empty without a CAM
	MIoU    Score
	// Hist counts the label's pixels by value: K classes (background
	// first), then the ignore label. Set whenever the label was read,
	// with or without ground truth.
	Hist    []int64
	Missing string // MissingLabel or MissingGT, when there is nothing to score
	Err     string // reason, when the image could not be scored
}

// ImageScore is an image's own mean IoU.
type ImageScore struct {
	ID   string `json:"id"`
	MIoU Score  `json:"miou"`
}

// Score is a figure that may be undefined (NaN): metrics.json writes it as
// null, so that the file is always valid JSON.
type Score float64

// MarshalJSON writes NaN and infinities as null.
func (s Score) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(s))
}

// UnmarshalJSON reads null as NaN.
func (s *Score) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*s = Score(math.NaN())
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*s = Score(f)
	return nil
}

// ErrNoLabels is returned (wrapped) when no listed image has a label under
// the labels prefix: most likely the wrong folder.
var ErrNoLabels = errors.New("no labels found")

// Thresholds of the label description's flags: an image with tags whose
// label has less than NoForegroundShare of its pixels in a class is
// flagged "all background"; one with more than MostlyForegroundShare
// "almost all foreground".
const (
	NoForegroundShare     = 0.01
	MostlyForegroundShare = 0.95
	// CoverageBins is the number of bins of the per-image foreground
	// share histogram (0-10%, ..., 90-100%).
	CoverageBins = 10
)

// Sum is the combined result of all images.
type Sum struct {
	K, T        int
	Conf        []int64
	Ignored     int64
	Scored      int64
	Sweep       []int64
	SweepImages int64
	Images      int64
	Listed      int64
	Worst       []ImageScore // the lowest image mIoUs, ascending
	Errors      []transforms.DeadLetter
	// Described counts the images whose label was read (with or without
	// ground truth); LabelHist sums their ImageEval.Hist, ClassImages
	// counts for each label value the images that hold it, Coverage the
	// images by foreground share (CoverageBins bins).
	Described   int64
	LabelHist   []int64
	ClassImages []int64
	Coverage    []int64
	// NoForeground and MostlyForeground list (at most MissingKept, the
	// first by id) the flagged images; the counts are all.
	NoForeground, MostlyForeground           []string
	NoForegroundCount, MostlyForegroundCount int64
	// MissingLabels and MissingGT list (at most MissingKept, the first by
	// id) the images without a label or ground truth; the counts are all.
	MissingLabels, MissingGT          []string
	MissingLabelCount, MissingGTCount int64
	// Samples are the items of the first SamplesKept scored images by id
	// and of the worst ones, for the report.
	Samples []Item
}

// Kept list sizes of a Sum.
const (
	WorstKept   = 8
	MissingKept = 1000
	SamplesKept = 16
	// FlaggedSamples is the number of flagged images (see
	// NoForegroundShare) whose items are kept for the report.
	FlaggedSamples = 4
)

func init() {
	beam.RegisterType(reflect.TypeOf((*Item)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*ImageEval)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*Sum)(nil)).Elem())
	register.DoFn2x0[dataset.Record, func(Item)](&itemFn{})
	register.DoFn3x1[context.Context, Item, func(ImageEval), error](&scoreFn{})
	register.Emitter1[Item]()
	register.Combiner3[*Sum, ImageEval, *Sum](&sumFn{})
	register.DoFn2x1[context.Context, *Sum, error](&saveSumFn{})
	register.Emitter1[ImageEval]()
}

// Thresholds lists the sweep's background thresholds.
func Thresholds(e config.Eval) []float64 {
	var out []float64
	for i := 0; ; i++ {
		t := e.SweepFrom + float64(i)*e.SweepStep
		if t > e.SweepTo+1e-9 {
			return out
		}
		out = append(out, math.Round(t*1e6)/1e6)
	}
}

// ScoreImage reads an image's label, ground truth and (if stored) fused CAM
// and scores them. A missing label or ground truth is reported in
// Missing, an unreadable file in Err; the error is for storage faults
// (which fail a pipeline's bundle, for the runner to retry).
func ScoreImage(ctx context.Context, st *storage.Store, it Item, k int, thresholds []float64) (ImageEval, error) {
	out := ImageEval{Item: it}
	fail := func(err error) (ImageEval, error) {
		out.Err = err.Error()
		out.Conf, out.Sweep, out.Hist = nil, nil, nil
		return out, nil
	}
	// read returns nil, nil for an object that does not exist.
	read := func(uri string, limit int64) ([]byte, error) {
		data, err := st.ReadFile(ctx, uri, limit)
		switch {
		case errors.Is(err, storage.ErrNotExist):
			return nil, nil
		case errors.Is(err, storage.ErrTooLarge):
			return nil, fmt.Errorf("%s: %w", uri, err)
		case err != nil:
			return nil, &storageFault{err}
		}
		return data, nil
	}
	readLabel := func(uri string, missing string) (*imagefile.Gray, error) {
		data, err := read(uri, 256<<20)
		if err != nil {
			return nil, err
		}
		if data == nil {
			out.Missing = missing
			return nil, nil
		}
		g, err := imagefile.DecodeLabel(data, 0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", uri, err)
		}
		return g, nil
	}
	lab, err := readLabel(it.Label, MissingLabel)
	if lab == nil && err == nil {
		return out, nil
	}
	if sf := (*storageFault)(nil); errors.As(err, &sf) {
		return out, sf.err
	} else if err != nil {
		return fail(err)
	}
	if out.Hist, err = labelHist(lab, k); err != nil {
		return fail(fmt.Errorf("%s: %w", it.Label, err))
	}
	if it.GT == "" {
		out.Missing = MissingGT
		return out, nil
	}
	gt, err := readLabel(it.GT, MissingGT)
	if gt == nil && err == nil {
		return out, nil
	}
	if sf := (*storageFault)(nil); errors.As(err, &sf) {
		return out, sf.err
	} else if err != nil {
		return fail(err)
	}
	c := NewConfusion(k)
	if err := c.Add(gt, lab); err != nil {
		return fail(fmt.Errorf("%s: %w", it.Label, err))
	}
	out.Conf, out.Ignored, out.Scored, out.MIoU = c.M, c.Ignored, c.Scored, Score(c.MeanIoU())
	if it.CAM == "" {
		return out, nil
	}
	data, err := read(it.CAM, 1<<30)
	if sf := (*storageFault)(nil); errors.As(err, &sf) {
		return out, sf.err
	} else if err != nil {
		return fail(err)
	}
	if data == nil {
		return out, nil // no stored CAM: no sweep for this image
	}
	cam, err := transforms.DecodeFused(data, it.Tags)
	if err != nil {
		return fail(fmt.Errorf("%s: %w", it.CAM, err))
	}
	if cam.H != gt.H || cam.W != gt.W {
		return fail(fmt.Errorf("%s: CAM of a %dx%d image for a %dx%d one", it.CAM, cam.W, cam.H, gt.W, gt.H))
	}
	for _, tag := range cam.Tags {
		if tag >= k-1 {
			return fail(fmt.Errorf("%s: class %d, but there are %d", it.CAM, tag, k-1))
		}
	}
	for _, t := range thresholds {
		l := cam.LabelThreshold(float32(t))
		sc := NewConfusion(k)
		if err := sc.Add(gt, l); err != nil {
			return fail(err)
		}
		out.Sweep = append(out.Sweep, sc.M...)
	}
	return out, nil
}

// labelHist counts a label's pixels by value: k classes, then the ignore
// label. Any other value is an error.
func labelHist(lab *imagefile.Gray, k int) ([]int64, error) {
	h := make([]int64, k+1)
	for _, v := range lab.Pix {
		switch {
		case v == imagefile.Ignore:
			h[k]++
		case int(v) < k:
			h[v]++
		default:
			return nil, fmt.Errorf("label value %d, but there are only %d classes with background", v, k)
		}
	}
	return h, nil
}

// foregroundShare is the share of a label's pixels in a class.
func foregroundShare(h []int64) float64 {
	var fg, all int64
	for i, n := range h {
		all += n
		if i > 0 && i < len(h)-1 {
			fg += n
		}
	}
	if all == 0 {
		return 0
	}
	return float64(fg) / float64(all)
}

// storageFault marks a read that failed for the storage's sake.
type storageFault struct{ err error }

func (e *storageFault) Error() string { return e.err.Error() }

// NewSum starts an empty result.
func NewSum(k, t int) *Sum {
	return &Sum{K: k, T: t, Conf: make([]int64, k*k), Sweep: make([]int64, t*k*k),
		LabelHist: make([]int64, k+1), ClassImages: make([]int64, k+1), Coverage: make([]int64, CoverageBins)}
}

// AddImage merges one image into the sum.
func (s *Sum) AddImage(e ImageEval) {
	s.Listed++
	id := e.Item.ID
	switch {
	case e.Missing == MissingLabel:
		s.MissingLabelCount++
		s.MissingLabels = keepFirst(append(s.MissingLabels, id), MissingKept)
		return
	case e.Err != "":
		s.Errors = append(s.Errors, transforms.DeadLetter{ID: id, Stage: "eval", Reason: storage.Redact(e.Err)})
		return
	}
	s.describe(e)
	s.Samples = append(s.Samples, e.Item)
	if e.Missing == MissingGT {
		s.MissingGTCount++
		s.MissingGT = keepFirst(append(s.MissingGT, id), MissingKept)
		s.keepSamples()
		return
	}
	s.Images++
	for i, v := range e.Conf {
		s.Conf[i] += v
	}
	s.Ignored += e.Ignored
	s.Scored += e.Scored
	if len(e.Sweep) == len(s.Sweep) && len(e.Sweep) > 0 {
		s.SweepImages++
		for i, v := range e.Sweep {
			s.Sweep[i] += v
		}
	}
	if !math.IsNaN(float64(e.MIoU)) {
		s.Worst = keepWorst(append(s.Worst, ImageScore{ID: id, MIoU: e.MIoU}))
	}
	s.keepSamples()
}

// describe adds an image's label to the description of the labels.
func (s *Sum) describe(e ImageEval) {
	if len(e.Hist) != len(s.LabelHist) {
		return
	}
	s.Described++
	for i, n := range e.Hist {
		s.LabelHist[i] += n
		if n > 0 {
			s.ClassImages[i]++
		}
	}
	fg := foregroundShare(e.Hist)
	s.Coverage[min(CoverageBins-1, int(fg*CoverageBins))]++
	switch {
	case fg < NoForegroundShare && len(e.Item.Tags) > 0:
		s.NoForegroundCount++
		s.NoForeground = keepFirst(append(s.NoForeground, e.Item.ID), MissingKept)
	case fg > MostlyForegroundShare:
		s.MostlyForegroundCount++
		s.MostlyForeground = keepFirst(append(s.MostlyForeground, e.Item.ID), MissingKept)
	}
}

// keepFirst sorts ids and keeps the first n.
func keepFirst(ids []string, n int) []string {
	slices.Sort(ids)
	return ids[:min(len(ids), n)]
}

// keepSamples keeps the items of the first SamplesKept ids, of the worst
// images and of the first FlaggedSamples flagged ones.
func (s *Sum) keepSamples() {
	worst := map[string]bool{}
	for _, w := range s.Worst {
		worst[w.ID] = true
	}
	for _, ids := range [][]string{s.NoForeground, s.MostlyForeground} {
		for _, id := range ids[:min(len(ids), FlaggedSamples)] {
			worst[id] = true
		}
	}
	slices.SortFunc(s.Samples, func(a, b Item) int { return strings.Compare(a.ID, b.ID) })
	s.Samples = slices.CompactFunc(s.Samples, func(a, b Item) bool { return a.ID == b.ID })
	kept := s.Samples[:0]
	for i, it := range s.Samples {
		if i < SamplesKept || worst[it.ID] {
			kept = append(kept, it)
		}
	}
	s.Samples = kept
}

// Merge adds another partial sum.
func (s *Sum) Merge(o *Sum) {
	s.Images += o.Images
	for i, v := range o.Conf {
		s.Conf[i] += v
	}
	for i, v := range o.Sweep {
		s.Sweep[i] += v
	}
	s.SweepImages += o.SweepImages
	s.Ignored += o.Ignored
	s.Scored += o.Scored
	s.Worst = keepWorst(append(s.Worst, o.Worst...))
	s.Errors = append(s.Errors, o.Errors...)
	s.Listed += o.Listed
	s.MissingLabelCount += o.MissingLabelCount
	s.MissingGTCount += o.MissingGTCount
	s.MissingLabels = keepFirst(append(s.MissingLabels, o.MissingLabels...), MissingKept)
	s.MissingGT = keepFirst(append(s.MissingGT, o.MissingGT...), MissingKept)
	s.Described += o.Described
	addInts(s.LabelHist, o.LabelHist)
	addInts(s.ClassImages, o.ClassImages)
	addInts(s.Coverage, o.Coverage)
	s.NoForegroundCount += o.NoForegroundCount
	s.MostlyForegroundCount += o.MostlyForegroundCount
	s.NoForeground = keepFirst(append(s.NoForeground, o.NoForeground...), MissingKept)
	s.MostlyForeground = keepFirst(append(s.MostlyForeground, o.MostlyForeground...), MissingKept)
	s.Samples = append(s.Samples, o.Samples...)
	s.keepSamples()
}

// addInts adds b into a, element by element (a sum decoded from JSON may
// lack a slice that is empty).
func addInts(a, b []int64) {
	for i := range min(len(a), len(b)) {
		a[i] += b[i]
	}
}

// keepWorst sorts ascending by mIoU (ties by id, so merges in any order
// agree) and keeps WorstKept.
func keepWorst(v []ImageScore) []ImageScore {
	sort.Slice(v, func(i, j int) bool {
		if v[i].MIoU != v[j].MIoU {
			return v[i].MIoU < v[j].MIoU
		}
		return v[i].ID < v[j].ID
	})
	if len(v) > WorstKept {
		v = v[:WorstKept]
	}
	return v
}

// normalize puts order-dependent parts in a canonical order.
func (s *Sum) normalize() {
	sort.Slice(s.Errors, func(i, j int) bool { return s.Errors[i].ID < s.Errors[j].ID })
}

type itemFn struct{ Labels string }

func (f *itemFn) ProcessElement(r dataset.Record, emit func(Item)) { emit(ItemOf(r, f.Labels)) }

type scoreFn struct {
	K          int
	Thresholds []float64
	Storage    storage.Options
	st         *storage.Store
}

func (f *scoreFn) Setup()    { f.st = storage.NewWith(f.Storage) }
func (f *scoreFn) Teardown() { f.st.Close() }

func (f *scoreFn) ProcessElement(ctx context.Context, it Item, emit func(ImageEval)) error {
	e, err := ScoreImage(ctx, f.st, it, f.K, f.Thresholds)
	if err != nil {
		return err
	}
	emit(e)
	return nil
}

type sumFn struct {
	K, T int
}

func (f *sumFn) CreateAccumulator() *Sum           { return NewSum(f.K, f.T) }
func (f *sumFn) AddInput(s *Sum, e ImageEval) *Sum { s.AddImage(e); return s }
func (f *sumFn) MergeAccumulators(a, b *Sum) *Sum  { a.Merge(b); return a }
func (f *sumFn) ExtractOutput(s *Sum) *Sum         { s.normalize(); return s }

type saveSumFn struct {
	URI     string
	Storage storage.Options
}

func (f *saveSumFn) ProcessElement(ctx context.Context, s *Sum) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return err
	}
	st := storage.NewWith(f.Storage)
	defer st.Close()
	return st.WriteFile(ctx, f.URI, raw)
}

// Build adds the evaluation to a pipeline: the dataset's list read by the
// job, each image's label, ground truth and stored CAM scored in
// parallel, combined into one Sum, saved as JSON at sumURI.
func Build(s beam.Scope, src dataset.Source, labels string, k int, thresholds []float64, sumURI string, so storage.Options) {
	s = s.Scope("Evaluate")
	records, _ := transforms.ReadRecords(s, src) // the launcher checked every line
	items := beam.Reshuffle(s, beam.ParDo(s, &itemFn{Labels: labels}, records))
	scores := beam.ParDo(s, &scoreFn{K: k, Thresholds: thresholds, Storage: so}, items)
	sum := beam.Combine(s, &sumFn{K: k, T: len(thresholds)}, scores)
	beam.ParDo0(s, &saveSumFn{URI: sumURI, Storage: so}, sum)
}

// Options configure an evaluation.
type Options struct {
	Dataset   config.Dataset
	Eval      config.Eval
	Runner    string // Beam runner; "" = prism
	InProcess bool   // compute directly, without Beam
	Log       io.Writer
	Storage   storage.Options
}

// SweepPoint is the mIoU at one background threshold.
type SweepPoint struct {
	Threshold float64 `json:"threshold"`
	MIoU      Score   `json:"miou"`
}

// LabelStats describe the labels themselves, with or without ground
// truth: what a user without ground truth can check.
type LabelStats struct {
	// Images is the number of labels read; Pixels their pixels.
	Images int64 `json:"images"`
	Pixels int64 `json:"pixels"`
	// Classes are the label values' shares of the pixels and the images
	// holding them, background first.
	Classes []ClassShare `json:"classes"`
	// ForegroundShare and IgnoredShare are the shares of all pixels in a
	// class and marked 255.
	ForegroundShare float64 `json:"foreground_share"`
	IgnoredShare    float64 `json:"ignored_share"`
	// Coverage counts the images by foreground share, in bins of 10%.
	Coverage []CoverageBin `json:"coverage"`
	// NoForeground lists images with tags whose label is (almost) all
	// background; MostlyForeground images labelled almost all foreground.
	NoForeground     FlaggedImages `json:"no_foreground"`
	MostlyForeground FlaggedImages `json:"mostly_foreground"`
}

// ClassShare is one label value's share of the labels.
type ClassShare struct {
	Name   string  `json:"name"`
	Pixels int64   `json:"pixels"`
	Share  float64 `json:"share"`
	Images int64   `json:"images"`
}

// CoverageBin counts the images whose foreground share is in [From, To).
type CoverageBin struct {
	From   float64 `json:"from"`
	To     float64 `json:"to"`
	Images int64   `json:"images"`
}

// FlaggedImages are the images a description flags, and the rule.
type FlaggedImages struct {
	Rule  string   `json:"rule"`
	Count int64    `json:"count"`
	IDs   []string `json:"ids"` // the first 1,000 by id
}

// ClassMetrics are one class's published numbers.
type ClassMetrics struct {
	Name       string   `json:"name"`
	IoU        *float64 `json:"iou"` // null when the class occurs nowhere
	Precision  *float64 `json:"precision"`
	Recall     *float64 `json:"recall"`
	GTPixels   int64    `json:"gt_pixels"`
	PredPixels int64    `json:"pred_pixels"`
}

// Metrics is metrics.json.
type Metrics struct {
	Created time.Time      `json:"created"`
	Labels  string         `json:"labels"`
	Dataset config.Dataset `json:"dataset"`
	Runner  string         `json:"runner"`
	Listed  int            `json:"images_listed"`
	Scored  int64          `json:"images_scored"`
	// MissingLabels and MissingGT list the first 1,000 (by id) images
	// without a label or ground truth; the counts are of all.
	MissingLabels     []string                `json:"missing_labels"`
	MissingGT         []string                `json:"missing_gt"`
	MissingLabelCount int64                   `json:"missing_label_count"`
	MissingGTCount    int64                   `json:"missing_gt_count"`
	Errors            []transforms.DeadLetter `json:"errors"`
	// GroundTruth is set when at least one image was scored against its
	// ground truth; without, MIoU and the per-class scores are null and
	// Description describes the labels.
	GroundTruth bool  `json:"ground_truth"`
	MIoU        Score `json:"miou"`
	// Description describes the labels themselves (every label read).
	Description   LabelStats     `json:"label_stats"`
	Classes       []ClassMetrics `json:"classes"`
	IgnoredPixels int64          `json:"ignored_pixels"` // labelled 255, scored as background
	ScoredPixels  int64          `json:"scored_pixels"`
	IgnoredShare  float64        `json:"ignored_share"`
	Sweep         []SweepPoint   `json:"sweep,omitempty"`
	SweepImages   int64          `json:"sweep_images"`
	Best          *SweepPoint    `json:"best,omitempty"`
	Worst         []ImageScore   `json:"worst"`
	// Run is the label run record (model hash, thresholds, split, rule).
	Run json.RawMessage `json:"label_run,omitempty"`
	// SumConfusion is the raw confusion matrix, rows ground truth.
	Confusion [][]int64 `json:"confusion"`
	// Samples are the images the report shows (the first by id and the
	// worst).
	Samples []Item `json:"samples"`
}

func ptr(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}

// Run evaluates the labels and writes REPORT/metrics.json (and returns the
// metrics; the report page is written by WriteReport). The dataset's list
// is checked here and read again by the job (or the in-process path),
// which finds each image's label, ground truth and CAM by reading them.
func Run(ctx context.Context, o Options) (*Metrics, error) {
	st := storage.NewWith(o.Storage)
	defer st.Close()
	src, info, err := dataset.OpenSource(ctx, st, o.Dataset.Root, o.Dataset.Split, o.Dataset.Manifest)
	if err != nil {
		return nil, err
	}
	k := len(info.Classes) + 1
	thresholds := Thresholds(o.Eval)
	runner := o.Runner
	if runner == "" {
		runner = "prism"
	}
	if o.InProcess {
		runner = "in-process"
	}
	if o.Log != nil {
		fmt.Fprintf(o.Log, "eval: %d images listed in %s; labels %s; runner %s\n", info.Listed, src.List, o.Eval.Labels, runner)
	}
	var sum *Sum
	if o.InProcess {
		if sum, err = Direct(ctx, st, src, o.Eval.Labels, k, thresholds); err != nil {
			return nil, err
		}
	} else {
		_, restore, err := workerbin.Use(runner)
		if err != nil {
			return nil, err
		}
		defer restore()
		sumURI := storage.Join(o.Eval.Report, "_eval_sum.json")
		p, s := beam.NewPipelineWithRoot()
		Build(s, src, o.Eval.Labels, k, thresholds, sumURI, o.Storage)
		if _, err := beam.Run(ctx, runner, p); err != nil {
			return nil, fmt.Errorf("eval pipeline on %s: %w", runner, err)
		}
		raw, err := st.ReadFile(ctx, sumURI, 1<<30)
		if err != nil {
			return nil, fmt.Errorf("eval result: %w", err)
		}
		sum = &Sum{}
		if err := json.Unmarshal(raw, sum); err != nil {
			return nil, fmt.Errorf("eval result: %w", err)
		}
		if err := st.Remove(ctx, sumURI); err != nil {
			return nil, err
		}
	}
	m := Summarize(sum, info.Classes, thresholds)
	m.Created, m.Labels, m.Dataset, m.Runner = time.Now().UTC(), o.Eval.Labels, o.Dataset, runner
	if o.Log != nil {
		fmt.Fprintf(o.Log, "eval: %d images scored, %d without a label, %d without ground truth, %d unreadable\n",
			m.Scored, m.MissingLabelCount, m.MissingGTCount, len(m.Errors))
	}
	if sum.Described == 0 && len(m.Errors) == 0 && m.Listed > 0 {
		return nil, fmt.Errorf("%w under %s: none of the %d images listed in %s has a label there (is it the folder label --out wrote?)",
			ErrNoLabels, o.Eval.Labels, m.Listed, src.List)
	}
	if raw, err := st.ReadFile(ctx, storage.Join(o.Eval.Labels, transforms.RunFile), 64<<20); err == nil {
		m.Run = raw
	} else if !errors.Is(err, storage.ErrNotExist) {
		return nil, err
	}
	raw, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("metrics.json: %w", err)
	}
	if err := st.WriteFile(ctx, storage.Join(o.Eval.Report, "metrics.json"), append(raw, '\n')); err != nil {
		return nil, err
	}
	return m, nil
}

func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

// Direct computes the sum without Beam, reading the list as the pipeline
// does.
func Direct(ctx context.Context, st *storage.Store, src dataset.Source, labels string, k int, thresholds []float64) (*Sum, error) {
	s := NewSum(k, len(thresholds))
	err := transforms.EachRecord(ctx, st, src, func(r dataset.Record, d *transforms.DeadLetter) error {
		if d != nil {
			return nil // checked at start; the pipeline drops such lines too
		}
		e, err := ScoreImage(ctx, st, ItemOf(r, labels), k, thresholds)
		if err != nil {
			return err
		}
		s.AddImage(e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.normalize()
	return s, nil
}

// DirectItems scores the given items without Beam.
func DirectItems(ctx context.Context, st *storage.Store, items []Item, k int, thresholds []float64) (*Sum, error) {
	s := NewSum(k, len(thresholds))
	for _, it := range items {
		e, err := ScoreImage(ctx, st, it, k, thresholds)
		if err != nil {
			return nil, err
		}
		s.AddImage(e)
	}
	s.normalize()
	return s, nil
}

// Summarize turns a sum into metrics.
func Summarize(s *Sum, classes []string, thresholds []float64) *Metrics {
	c := &Confusion{K: s.K, M: s.Conf, Ignored: s.Ignored, Scored: s.Scored}
	scores, miou := c.Scores()
	m := &Metrics{Scored: s.Images, MIoU: Score(miou), GroundTruth: s.Images > 0, IgnoredPixels: s.Ignored, ScoredPixels: s.Scored,
		Worst: s.Worst, Errors: s.Errors, SweepImages: s.SweepImages, Listed: int(s.Listed),
		MissingLabels: nonNil(s.MissingLabels), MissingGT: nonNil(s.MissingGT),
		MissingLabelCount: s.MissingLabelCount, MissingGTCount: s.MissingGTCount, Samples: s.Samples}
	if m.Samples == nil {
		m.Samples = []Item{}
	}
	if m.Errors == nil {
		m.Errors = []transforms.DeadLetter{}
	}
	if s.Scored > 0 {
		m.IgnoredShare = float64(s.Ignored) / float64(s.Scored)
	}
	names := append([]string{"background"}, classes...)
	for i, sc := range scores {
		m.Classes = append(m.Classes, ClassMetrics{Name: names[i], IoU: ptr(sc.IoU), Precision: ptr(sc.Precision),
			Recall: ptr(sc.Recall), GTPixels: sc.GTPixels, PredPixels: sc.PredPixels})
	}
	for g := 0; g < s.K; g++ {
		m.Confusion = append(m.Confusion, slices.Clone(s.Conf[g*s.K:(g+1)*s.K]))
	}
	m.Description = describeLabels(s, names)
	if s.SweepImages > 0 {
		kk := s.K * s.K
		for i, t := range thresholds {
			sc := &Confusion{K: s.K, M: s.Sweep[i*kk : (i+1)*kk]}
			p := SweepPoint{Threshold: t, MIoU: Score(sc.MeanIoU())}
			m.Sweep = append(m.Sweep, p)
			if m.Best == nil || p.MIoU > m.Best.MIoU {
				best := p
				m.Best = &best
			}
		}
	}
	return m
}

// describeLabels turns a sum's label counts into LabelStats.
func describeLabels(s *Sum, names []string) LabelStats {
	d := LabelStats{Images: s.Described,
		NoForeground: FlaggedImages{Rule: fmt.Sprintf("images with tags, under %g%% of their pixels in a class", 100*NoForegroundShare),
			Count: s.NoForegroundCount, IDs: nonNil(s.NoForeground)},
		MostlyForeground: FlaggedImages{Rule: fmt.Sprintf("over %g%% of their pixels in a class", 100*MostlyForegroundShare),
			Count: s.MostlyForegroundCount, IDs: nonNil(s.MostlyForeground)}}
	for _, n := range s.LabelHist {
		d.Pixels += n
	}
	share := func(n int64) float64 {
		if d.Pixels == 0 {
			return 0
		}
		return float64(n) / float64(d.Pixels)
	}
	for i, name := range names {
		if i >= len(s.LabelHist)-1 {
			break
		}
		d.Classes = append(d.Classes, ClassShare{Name: name, Pixels: s.LabelHist[i], Share: share(s.LabelHist[i]), Images: s.ClassImages[i]})
		if i > 0 {
			d.ForegroundShare += share(s.LabelHist[i])
		}
	}
	if k := len(s.LabelHist) - 1; k >= 0 {
		d.IgnoredShare = share(s.LabelHist[k])
	}
	for i, n := range s.Coverage {
		d.Coverage = append(d.Coverage, CoverageBin{From: float64(i) / CoverageBins, To: float64(i+1) / CoverageBins, Images: n})
	}
	return d
}

// PrintTable writes the console summary.
func PrintTable(w io.Writer, m *Metrics) {
	if !m.GroundTruth {
		printDescription(w, m)
		return
	}
	fmt.Fprintf(w, "%-14s %7s %9s %7s\n", "class", "IoU", "precision", "recall")
	f := func(p *float64) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprintf("%.1f", 100**p)
	}
	for _, c := range m.Classes {
		fmt.Fprintf(w, "%-14s %7s %9s %7s\n", c.Name, f(c.IoU), f(c.Precision), f(c.Recall))
	}
	fmt.Fprintf(w, "mIoU %.2f over %d images (%.2f%% of scored pixels labelled ignore, scored as background)\n",
		100*m.MIoU, m.Scored, 100*m.IgnoredShare)
	if m.Best != nil {
		fmt.Fprintf(w, "threshold sweep over %d images with stored CAMs: best mIoU %.2f at background threshold %.2f\n",
			m.SweepImages, 100*m.Best.MIoU, m.Best.Threshold)
	}
	if n := m.MissingLabelCount + m.MissingGTCount + int64(len(m.Errors)); n > 0 {
		fmt.Fprintf(w, "not scored: %d without a label, %d without ground truth, %d unreadable (listed in metrics.json)\n",
			m.MissingLabelCount, m.MissingGTCount, len(m.Errors))
	}
}

// printDescription writes the console summary of labels without ground
// truth.
func printDescription(w io.Writer, m *Metrics) {
	d := m.Description
	fmt.Fprintf(w, "no ground truth: %d labels described (not scored)\n", d.Images)
	fmt.Fprintf(w, "%-14s %8s %7s\n", "class", "pixels", "images")
	for _, c := range d.Classes {
		fmt.Fprintf(w, "%-14s %7.1f%% %7d\n", c.Name, 100*c.Share, c.Images)
	}
	fmt.Fprintf(w, "foreground %.1f%% of the pixels, ignore %.1f%%; %d images with tags labelled all background, %d almost all foreground\n",
		100*d.ForegroundShare, 100*d.IgnoredShare, d.NoForeground.Count, d.MostlyForeground.Count)
	if n := m.MissingLabelCount + int64(len(m.Errors)); n > 0 {
		fmt.Fprintf(w, "not described: %d without a label, %d unreadable (listed in metrics.json)\n", m.MissingLabelCount, len(m.Errors))
	}
}
