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
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/direct" // --runner direct
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"  // the default

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model/maps"
	"github.com/l2gflow/l2gflow/transforms"
)

// Item is one image to score.
type Item struct {
	ID    string
	Label string // label PNG URI
	GT    string // ground truth URI
	CAM   string // fused CAM URI ("" when not stored)
	Tags  []int
}

// ImageEval is one image's contribution.
type ImageEval struct {
	ID      string
	Conf    []int64 // K*K
	Ignored int64
	Scored  int64
	Sweep   []int64 // T*K*K, empty without a CAM
	MIoU    float64
	Err     string // reason, when the image could not be scored
}

// ImageScore is an image's own mean IoU.
type ImageScore struct {
	ID   string  `json:"id"`
	MIoU float64 `json:"miou"`
}

// Sum is the combined result of all images.
type Sum struct {
	K, T        int
	Conf        []int64
	Ignored     int64
	Scored      int64
	Sweep       []int64
	SweepImages int64
	Images      int64
	Worst       []ImageScore // the lowest image mIoUs, ascending
	Errors      []transforms.DeadLetter
}

// WorstKept is how many worst images the sum keeps.
const WorstKept = 8

func init() {
	beam.RegisterType(reflect.TypeOf((*Item)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*ImageEval)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*Sum)(nil)).Elem())
	register.DoFn3x0[context.Context, Item, func(ImageEval)](&scoreFn{})
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
// and scores them. Failures are returned in Err, not as errors.
func ScoreImage(ctx context.Context, st *storage.Store, it Item, k int, thresholds []float64) ImageEval {
	out := ImageEval{ID: it.ID}
	fail := func(err error) ImageEval { out.Err = err.Error(); out.Conf, out.Sweep = nil, nil; return out }
	read := func(uri string) (*imagefile.Gray, error) {
		data, err := st.ReadFile(ctx, uri, 256<<20)
		if err != nil {
			return nil, err
		}
		g, err := imagefile.DecodeLabel(data, 0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", uri, err)
		}
		return g, nil
	}
	gt, err := read(it.GT)
	if err != nil {
		return fail(err)
	}
	lab, err := read(it.Label)
	if err != nil {
		return fail(err)
	}
	c := NewConfusion(k)
	if err := c.Add(gt, lab); err != nil {
		return fail(fmt.Errorf("%s: %w", it.Label, err))
	}
	out.Conf, out.Ignored, out.Scored, out.MIoU = c.M, c.Ignored, c.Scored, c.MeanIoU()
	if it.CAM == "" {
		return out
	}
	data, err := st.ReadFile(ctx, it.CAM, 1<<30)
	if err != nil {
		return fail(err)
	}
	cam, err := transforms.DecodeMap(data)
	if err != nil {
		return fail(fmt.Errorf("%s: %w", it.CAM, err))
	}
	if cam.H != gt.H || cam.W != gt.W || cam.C != k-1 {
		return fail(fmt.Errorf("%s: CAM %dx%dx%d for a %dx%d image with %d classes", it.CAM, cam.W, cam.H, cam.C, gt.W, gt.H, k-1))
	}
	for _, t := range thresholds {
		l, err := maps.ThresholdLabels(cam, it.Tags, float32(t))
		if err != nil {
			return fail(err)
		}
		sc := NewConfusion(k)
		if err := sc.Add(gt, l); err != nil {
			return fail(err)
		}
		out.Sweep = append(out.Sweep, sc.M...)
	}
	return out
}

// NewSum starts an empty result.
func NewSum(k, t int) *Sum {
	return &Sum{K: k, T: t, Conf: make([]int64, k*k), Sweep: make([]int64, t*k*k)}
}

// AddImage merges one image into the sum.
func (s *Sum) AddImage(e ImageEval) {
	if e.Err != "" {
		s.Errors = append(s.Errors, transforms.DeadLetter{ID: e.ID, Stage: "eval", Reason: storage.Redact(e.Err)})
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
	if !math.IsNaN(e.MIoU) {
		s.Worst = keepWorst(append(s.Worst, ImageScore{ID: e.ID, MIoU: e.MIoU}))
	}
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

type scoreFn struct {
	K          int
	Thresholds []float64
}

func (f *scoreFn) ProcessElement(ctx context.Context, it Item, emit func(ImageEval)) {
	emit(ScoreImage(ctx, transforms.SharedStore(), it, f.K, f.Thresholds))
}

type sumFn struct {
	K, T int
}

func (f *sumFn) CreateAccumulator() *Sum           { return NewSum(f.K, f.T) }
func (f *sumFn) AddInput(s *Sum, e ImageEval) *Sum { s.AddImage(e); return s }
func (f *sumFn) MergeAccumulators(a, b *Sum) *Sum  { a.Merge(b); return a }
func (f *sumFn) ExtractOutput(s *Sum) *Sum         { s.normalize(); return s }

type saveSumFn struct {
	URI string
}

func (f *saveSumFn) ProcessElement(ctx context.Context, s *Sum) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return transforms.SharedStore().WriteFile(ctx, f.URI, raw)
}

// Build adds the evaluation to a pipeline: items are scored in parallel
// and combined into one Sum, saved as JSON at sumURI.
func Build(s beam.Scope, items []Item, k int, thresholds []float64, sumURI string) {
	s = s.Scope("Evaluate")
	col := beam.Reshuffle(s, beam.CreateList(s, items))
	scores := beam.ParDo(s, &scoreFn{K: k, Thresholds: thresholds}, col)
	sum := beam.Combine(s, &sumFn{K: k, T: len(thresholds)}, scores)
	beam.ParDo0(s, &saveSumFn{URI: sumURI}, sum)
}

// Options configure an evaluation.
type Options struct {
	Dataset   config.Dataset
	Eval      config.Eval
	Runner    string // Beam runner; "" = prism
	InProcess bool   // compute directly, without Beam
	Log       io.Writer
}

// SweepPoint is the mIoU at one background threshold.
type SweepPoint struct {
	Threshold float64 `json:"threshold"`
	MIoU      float64 `json:"miou"`
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
	Created       time.Time               `json:"created"`
	Labels        string                  `json:"labels"`
	Dataset       config.Dataset          `json:"dataset"`
	Runner        string                  `json:"runner"`
	Listed        int                     `json:"images_listed"`
	Scored        int64                   `json:"images_scored"`
	MissingLabels []string                `json:"missing_labels"`
	MissingGT     []string                `json:"missing_gt"`
	Errors        []transforms.DeadLetter `json:"errors"`
	MIoU          float64                 `json:"miou"`
	Classes       []ClassMetrics          `json:"classes"`
	IgnoredPixels int64                   `json:"ignored_pixels"` // labelled 255, scored as background
	ScoredPixels  int64                   `json:"scored_pixels"`
	IgnoredShare  float64                 `json:"ignored_share"`
	Sweep         []SweepPoint            `json:"sweep,omitempty"`
	SweepImages   int64                   `json:"sweep_images"`
	Best          *SweepPoint             `json:"best,omitempty"`
	Worst         []ImageScore            `json:"worst"`
	// Run is the label run record (model hash, thresholds, split, rule).
	Run json.RawMessage `json:"label_run,omitempty"`
	// SumConfusion is the raw confusion matrix, rows ground truth.
	Confusion [][]int64 `json:"confusion"`
}

func ptr(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}

// Plan lists the items to score, and the ids without a label or ground
// truth. It lists the label prefix once (labels and stored CAMs).
func Plan(ctx context.Context, st *storage.Store, ds *dataset.Dataset, labels string) (items []Item, missingLabel, missingGT []string, err error) {
	uris, err := st.List(ctx, labels, "*")
	if err != nil {
		return nil, nil, nil, err
	}
	have, haveCAM := map[string]string{}, map[string]string{}
	for _, u := range uris {
		if id, ok := transforms.LabelID(labels, u); ok {
			have[id] = u
		} else if id, ok := transforms.CAMID(labels, u); ok {
			haveCAM[id] = u
		}
	}
	for _, r := range ds.Records {
		switch {
		case r.GT == "":
			missingGT = append(missingGT, r.ID)
		case have[r.ID] == "":
			missingLabel = append(missingLabel, r.ID)
		default:
			items = append(items, Item{ID: r.ID, Label: have[r.ID], GT: r.GT, CAM: haveCAM[r.ID], Tags: r.Tags})
		}
	}
	return items, missingLabel, missingGT, nil
}

// Run evaluates the labels and writes REPORT/metrics.json (and returns the
// metrics; the report page is written by WriteReport).
func Run(ctx context.Context, o Options) (*Metrics, *dataset.Dataset, error) {
	st := transforms.SharedStore()
	ds, err := dataset.Open(ctx, st, o.Dataset.Root, o.Dataset.Split, o.Dataset.Manifest)
	if err != nil {
		return nil, nil, err
	}
	items, missLab, missGT, err := Plan(ctx, st, ds, o.Eval.Labels)
	if err != nil {
		return nil, nil, err
	}
	k := len(ds.Classes) + 1
	thresholds := Thresholds(o.Eval)
	runner := o.Runner
	if runner == "" {
		runner = "prism"
	}
	if o.InProcess {
		runner = "in-process"
	}
	if o.Log != nil {
		fmt.Fprintf(o.Log, "eval: %d images listed, %d with labels and ground truth, %d missing labels, %d missing ground truth; runner %s\n",
			len(ds.Records), len(items), len(missLab), len(missGT), runner)
	}
	var sum *Sum
	if len(items) == 0 {
		sum = NewSum(k, len(thresholds))
	} else if o.InProcess {
		sum = Direct(ctx, st, items, k, thresholds)
	} else {
		sumURI := storage.Join(o.Eval.Report, "_eval_sum.json")
		p, s := beam.NewPipelineWithRoot()
		Build(s, items, k, thresholds, sumURI)
		if _, err := beam.Run(ctx, runner, p); err != nil {
			return nil, nil, fmt.Errorf("eval pipeline on %s: %w", runner, err)
		}
		raw, err := st.ReadFile(ctx, sumURI, 1<<30)
		if err != nil {
			return nil, nil, fmt.Errorf("eval result: %w", err)
		}
		sum = &Sum{}
		if err := json.Unmarshal(raw, sum); err != nil {
			return nil, nil, fmt.Errorf("eval result: %w", err)
		}
		if err := st.Remove(ctx, sumURI); err != nil {
			return nil, nil, err
		}
	}
	m := Summarize(sum, ds.Classes, thresholds)
	m.Created, m.Labels, m.Dataset, m.Runner = time.Now().UTC(), o.Eval.Labels, o.Dataset, runner
	m.Listed, m.MissingLabels, m.MissingGT = len(ds.Records), nonNil(missLab), nonNil(missGT)
	if raw, err := st.ReadFile(ctx, storage.Join(o.Eval.Labels, transforms.RunFile), 64<<20); err == nil {
		m.Run = raw
	} else if !errors.Is(err, storage.ErrNotExist) {
		return nil, nil, err
	}
	raw, _ := json.MarshalIndent(m, "", "  ")
	if err := st.WriteFile(ctx, storage.Join(o.Eval.Report, "metrics.json"), append(raw, '\n')); err != nil {
		return nil, nil, err
	}
	return m, ds, nil
}

func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

// Direct computes the sum without Beam, in item order.
func Direct(ctx context.Context, st *storage.Store, items []Item, k int, thresholds []float64) *Sum {
	s := NewSum(k, len(thresholds))
	for _, it := range items {
		s.AddImage(ScoreImage(ctx, st, it, k, thresholds))
	}
	s.normalize()
	return s
}

// Summarize turns a sum into metrics.
func Summarize(s *Sum, classes []string, thresholds []float64) *Metrics {
	c := &Confusion{K: s.K, M: s.Conf, Ignored: s.Ignored, Scored: s.Scored}
	scores, miou := c.Scores()
	m := &Metrics{Scored: s.Images, MIoU: miou, IgnoredPixels: s.Ignored, ScoredPixels: s.Scored,
		Worst: s.Worst, Errors: s.Errors, SweepImages: s.SweepImages}
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
	if s.SweepImages > 0 {
		kk := s.K * s.K
		for i, t := range thresholds {
			sc := &Confusion{K: s.K, M: s.Sweep[i*kk : (i+1)*kk]}
			p := SweepPoint{Threshold: t, MIoU: sc.MeanIoU()}
			m.Sweep = append(m.Sweep, p)
			if m.Best == nil || p.MIoU > m.Best.MIoU {
				best := p
				m.Best = &best
			}
		}
	}
	return m
}

// PrintTable writes the console summary.
func PrintTable(w io.Writer, m *Metrics) {
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
	if n := len(m.MissingLabels) + len(m.MissingGT) + len(m.Errors); n > 0 {
		fmt.Fprintf(w, "not scored: %d without a label, %d without ground truth, %d unreadable (listed in metrics.json)\n",
			len(m.MissingLabels), len(m.MissingGT), len(m.Errors))
	}
}
