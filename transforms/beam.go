package transforms

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
)

// MetricsNamespace holds every l2gflow metric.
const MetricsNamespace = "l2gflow"

// Metric names.
const (
	MetricImagesRead      = "images_read"
	MetricFailedPrefix    = "failed_" // + stage
	MetricSaliencyMissing = "saliency_missing"
	MetricSaliencyBad     = "saliency_unusable"
	MetricViews           = "views_inferred"
	MetricBatchLatency    = "inference_batch_ms"
	MetricBatchSize       = "inference_batch_size"
	MetricLabels          = "labels_written"
	MetricFallback        = "saliency_fallback"
	MetricStorageRetries  = "storage_retries"
)

// counted returns ctx under which storage retries increment the
// storage_retries metric.
func counted(ctx context.Context) context.Context {
	c := beam.NewCounter(MetricsNamespace, MetricStorageRetries)
	return storage.WithRetryHook(ctx, func(string, string, error) { c.Inc(ctx, 1) })
}

func init() {
	beam.RegisterType(reflect.TypeOf((*dataset.Record)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*Image)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*View)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*ImageMeta)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*ViewCAM)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*Label)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*DeadLetter)(nil)).Elem())

	register.DoFn4x0[context.Context, dataset.Record, func(Image), func(DeadLetter)](&loadFn{})
	register.DoFn2x0[Image, func(View)](&viewsFn{})
	register.DoFn3x0[context.Context, Image, func(string, ImageMeta)](&saliencyFn{})
	register.DoFn4x0[context.Context, View, func(string, ViewCAM), func(DeadLetter)](&inferFn{})
	register.DoFn6x0[context.Context, string, func(*ImageMeta) bool, func(*ViewCAM) bool, func(Label), func(DeadLetter)](&fuseFn{})
	register.DoFn3x0[context.Context, Label, func(DeadLetter)](&writeFn{})
	register.DoFn2x1[context.Context, DeadLetter, error](&deadLetterFn{})
	register.Emitter1[Image]()
	register.Emitter1[View]()
	register.Emitter1[Label]()
	register.Emitter1[DeadLetter]()
	register.Emitter2[string, ImageMeta]()
	register.Emitter2[string, ViewCAM]()
	register.Iter1[*ImageMeta]()
	register.Iter1[*ViewCAM]()
}

func failed(stage string) beam.Counter {
	return beam.NewCounter(MetricsNamespace, MetricFailedPrefix+stage)
}

// --- Load ---

type loadFn struct {
	MaxPixels int
}

func (f *loadFn) ProcessElement(ctx context.Context, rec dataset.Record, emit func(Image), dead func(DeadLetter)) {
	img, err := LoadImage(counted(ctx), SharedStore(), rec, f.MaxPixels)
	if err != nil {
		failed(StageLoad).Inc(ctx, 1)
		dead(DeadLetter{ID: rec.ID, Stage: StageLoad, Reason: err.Error()})
		return
	}
	beam.NewCounter(MetricsNamespace, MetricImagesRead).Inc(ctx, 1)
	emit(img)
}

// Load reshuffles the records (so that work spreads over bundles and
// workers) and decodes their images. It returns the images and the dead
// letters of records that could not be read.
func Load(s beam.Scope, records beam.PCollection, maxPixels int) (images, dead beam.PCollection) {
	s = s.Scope("Load")
	return beam.ParDo2(s, &loadFn{MaxPixels: maxPixels}, beam.Reshuffle(s, records))
}

// --- Views ---

type viewsFn struct {
	// Options is model.ViewOptions as JSON (DoFn fields must be simple).
	Options string
	opts    model.ViewOptions
}

func (f *viewsFn) Setup() error { return json.Unmarshal([]byte(f.Options), &f.opts) }

func (f *viewsFn) ProcessElement(img Image, emit func(View)) {
	for _, v := range MakeViews(img, f.opts) {
		emit(v)
	}
}

// CropViews emits each image's inference views as separate elements.
func CropViews(s beam.Scope, images beam.PCollection, opts model.ViewOptions) beam.PCollection {
	s = s.Scope("CropViews")
	raw, _ := json.Marshal(opts)
	return beam.ParDo(s, &viewsFn{Options: string(raw)}, images)
}

// --- Saliency ---

type saliencyFn struct {
	Needed    bool
	MaxPixels int
}

func (f *saliencyFn) ProcessElement(ctx context.Context, img Image, emit func(string, ImageMeta)) {
	meta := LookupSaliency(counted(ctx), SharedStore(), img, f.Needed, f.MaxPixels)
	switch meta.SalStatus {
	case SalNone, SalMissing:
		beam.NewCounter(MetricsNamespace, MetricSaliencyMissing).Inc(ctx, 1)
	case SalUnreadable, SalWrongSize:
		beam.NewCounter(MetricsNamespace, MetricSaliencyBad).Inc(ctx, 1)
	}
	emit(meta.ID, meta)
}

// LookupSaliencyMaps turns images into keyed metadata for fusion, with the
// saliency map attached when the background rule needs one.
func LookupSaliencyMaps(s beam.Scope, images beam.PCollection, needed bool, maxPixels int) beam.PCollection {
	s = s.Scope("Saliency")
	return beam.ParDo(s, &saliencyFn{Needed: needed, MaxPixels: maxPixels}, images)
}

// --- Inference ---

type inferFn struct {
	Model   string // artifact URI
	Backend string
	// Engine is model.EngineOptions as JSON (DoFn fields must be simple).
	Engine string
	opts   model.EngineOptions

	engine  *model.Engine
	pending map[string][]View // by input shape

	// Batches run on a small pool of goroutines, so that one bundle keeps
	// every core busy whatever number of bundles the runner gives the
	// stage; results are emitted from the DoFn's own goroutine.
	slots    chan struct{}
	inflight sync.WaitGroup
	mu       sync.Mutex
	done     []inferResult
}

type inferResult struct {
	views   []View
	cams    []ViewCAM
	err     error
	elapsed time.Duration
}

func (f *inferFn) Setup(ctx context.Context) error {
	if err := json.Unmarshal([]byte(f.Engine), &f.opts); err != nil {
		return err
	}
	e, err := LoadEngine(ctx, f.Model, f.Backend, f.opts)
	if err != nil {
		return err
	}
	f.engine = e
	return nil
}

func (f *inferFn) StartBundle(ctx context.Context, emit func(string, ViewCAM), dead func(DeadLetter)) {
	f.pending = map[string][]View{}
	f.slots = make(chan struct{}, runtime.GOMAXPROCS(0))
}

func (f *inferFn) ProcessElement(ctx context.Context, v View, emit func(string, ViewCAM), dead func(DeadLetter)) {
	b, err := f.engine.Buckets().For(v.Spec.InH, v.Spec.InW)
	if err != nil {
		failed(StageInfer).Inc(ctx, 1)
		dead(DeadLetter{ID: v.ID, Stage: StageInfer, Reason: fmt.Sprintf("view %d: %v", v.Spec.Index, err)})
		return
	}
	k := fmt.Sprintf("%dx%d", b.H, b.W)
	f.pending[k] = append(f.pending[k], v)
	if len(f.pending[k]) >= b.Batch {
		f.submit(k)
	}
	f.drain(ctx, emit, dead)
}

// submit starts a batch on the pool (waiting for a free slot).
func (f *inferFn) submit(k string) {
	views := f.pending[k]
	delete(f.pending, k)
	if len(views) == 0 {
		return
	}
	f.slots <- struct{}{}
	f.inflight.Add(1)
	go func() {
		defer f.inflight.Done()
		start := time.Now()
		cams, err := InferViews(f.engine, views)
		f.mu.Lock()
		f.done = append(f.done, inferResult{views: views, cams: cams, err: err, elapsed: time.Since(start)})
		f.mu.Unlock()
		<-f.slots
	}()
}

// drain emits the finished batches.
func (f *inferFn) drain(ctx context.Context, emit func(string, ViewCAM), dead func(DeadLetter)) {
	f.mu.Lock()
	done := f.done
	f.done = nil
	f.mu.Unlock()
	for _, r := range done {
		if r.err != nil {
			failed(StageInfer).Inc(ctx, int64(len(r.views)))
			for _, v := range r.views {
				dead(DeadLetter{ID: v.ID, Stage: StageInfer, Reason: fmt.Sprintf("view %d: %v", v.Spec.Index, r.err)})
			}
			continue
		}
		beam.NewDistribution(MetricsNamespace, MetricBatchLatency).Update(ctx, r.elapsed.Milliseconds())
		beam.NewDistribution(MetricsNamespace, MetricBatchSize).Update(ctx, int64(len(r.views)))
		beam.NewCounter(MetricsNamespace, MetricViews).Inc(ctx, int64(len(r.views)))
		for _, c := range r.cams {
			emit(c.ID, c)
		}
	}
}

func (f *inferFn) FinishBundle(ctx context.Context, emit func(string, ViewCAM), dead func(DeadLetter)) {
	for k := range f.pending {
		f.submit(k)
	}
	f.inflight.Wait()
	f.drain(ctx, emit, dead)
}

// InferCAMs runs the model on the views in batches of views of one
// bucket. The model is loaded once per worker process and shared by all
// bundles. CAMs leave the stage zstd-compressed, keyed by image id.
func InferCAMs(s beam.Scope, views beam.PCollection, modelURI, backend string, engine model.EngineOptions) (cams, dead beam.PCollection) {
	s = s.Scope("InferCAMs")
	raw, _ := json.Marshal(engine)
	return beam.ParDo2(s, &inferFn{Model: modelURI, Backend: backend, Engine: string(raw)}, views)
}

// --- Fusion ---

type fuseFn struct {
	Classes int
	Options string // FuseOptions as JSON
	opts    FuseOptions
}

func (f *fuseFn) Setup() error { return json.Unmarshal([]byte(f.Options), &f.opts) }

func (f *fuseFn) ProcessElement(ctx context.Context, id string, metas func(*ImageMeta) bool, camIter func(*ViewCAM) bool,
	emit func(Label), dead func(DeadLetter)) {
	var meta ImageMeta
	found := false
	var m ImageMeta
	for metas(&m) {
		meta, found = m, true
	}
	var cams []ViewCAM
	var c ViewCAM
	for camIter(&c) {
		cams = append(cams, c)
	}
	if !found {
		return // the image failed earlier; its dead letter is already out
	}
	lab, err := Fuse(meta, cams, f.Classes, f.opts)
	if err != nil {
		failed(StageFuse).Inc(ctx, 1)
		dead(DeadLetter{ID: id, Stage: StageFuse, Reason: err.Error()})
		return
	}
	if lab.Rule == "threshold(fallback)" {
		beam.NewCounter(MetricsNamespace, MetricFallback).Inc(ctx, 1)
	}
	emit(lab)
}

// FuseLabels groups each image's CAMs with its metadata, fuses them and
// applies the background rule.
func FuseLabels(s beam.Scope, metas, cams beam.PCollection, classes int, opts FuseOptions) (labels, dead beam.PCollection) {
	s = s.Scope("FuseLabels")
	raw, _ := json.Marshal(opts)
	grouped := beam.CoGroupByKey(s, metas, cams)
	return beam.ParDo2(s, &fuseFn{Classes: classes, Options: string(raw)}, grouped)
}

// --- Write ---

// written counts labels written by this process, for progress reports.
var written atomic.Int64

// WrittenInProcess is the number of labels this process has written.
func WrittenInProcess() int64 { return written.Load() }

// CountWritten records a label written outside the pipeline (the
// in-process path), for progress reports.
func CountWritten() { written.Add(1) }

type writeFn struct {
	Out string
}

func (f *writeFn) ProcessElement(ctx context.Context, lab Label, dead func(DeadLetter)) {
	if err := WriteLabel(counted(ctx), SharedStore(), f.Out, lab); err != nil {
		failed(StageWrite).Inc(ctx, 1)
		dead(DeadLetter{ID: lab.ID, Stage: StageWrite, Reason: err.Error()})
		return
	}
	beam.NewCounter(MetricsNamespace, MetricLabels).Inc(ctx, 1)
	if n := written.Add(1); n%500 == 0 {
		log.Infof(ctx, "l2gflow: %d labels written by this worker", n)
	}
}

// WriteLabels writes each label as OUT/<id>.png (atomically).
func WriteLabels(s beam.Scope, labels beam.PCollection, out string) beam.PCollection {
	s = s.Scope("WriteLabels")
	return beam.ParDo(s, &writeFn{Out: out}, labels)
}

// --- Dead letters ---

type deadLetterFn struct {
	Out string
}

func (f *deadLetterFn) ProcessElement(ctx context.Context, d DeadLetter) error {
	return WriteDeadLetter(counted(ctx), SharedStore(), f.Out, d)
}

// DeadLetterURI is where one dead letter is kept until the run merges them
// into ErrorsFile; the name is fixed per image and stage, so retries do not
// duplicate it.
func DeadLetterURI(out string, d DeadLetter) string {
	return storage.Join(out, ErrorsDir, d.Stage+"-"+d.ID+".json")
}

// WriteDeadLetter stores one dead letter, its reason redacted of any
// credentials (signed URLs, user info) a failing path or error carried:
// every dead letter of both the pipeline and the in-process path is
// written here.
func WriteDeadLetter(ctx context.Context, st *storage.Store, out string, d DeadLetter) error {
	d.Reason = storage.Redact(d.Reason)
	raw, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return st.WriteFile(ctx, DeadLetterURI(out, d), raw)
}

// WriteDeadLetters stores the dead letters of every stage.
func WriteDeadLetters(s beam.Scope, out string, dead ...beam.PCollection) {
	s = s.Scope("DeadLetters")
	beam.ParDo0(s, &deadLetterFn{Out: out}, beam.Flatten(s, dead...))
}
