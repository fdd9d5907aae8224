package transforms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"strings"
	"sync"
	"time"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
	"github.com/l2gflow/l2gflow/model/maps"
)

// Stages does the work of each labeling stage. The Beam DoFns and the
// in-process path call the same methods in the same order.
//
// Errors are sorted by what they mean: bad data (a corrupt or missing
// image, a view the network cannot take) gives a dead letter and the job
// goes on; anything else (a storage fault still failing after the
// retries, a refused access, a model that cannot be loaded) is returned
// as an error, which fails the bundle so that the runner retries it, and
// never changes or drops a label.
type Stages struct {
	Opts  LabelOptions
	Store *storage.Store

	engineMu sync.Mutex
	engine   *model.Engine
	// mem, when set, is the memory budget instead of the process's.
	mem *Budget
}

// NewStages returns the stages for opts, with their own storage client.
func NewStages(opts LabelOptions) *Stages {
	return &Stages{Opts: opts, Store: storage.NewWith(opts.Storage)}
}

// Close releases the storage client.
func (s *Stages) Close() error { return s.Store.Close() }

// Engine returns the process's inference engine for the options' model
// (loaded on first use, see LoadEngine).
func (s *Stages) Engine(ctx context.Context) (*model.Engine, error) {
	s.engineMu.Lock()
	defer s.engineMu.Unlock()
	if s.engine != nil {
		return s.engine, nil
	}
	e, err := LoadEngine(ctx, s.Store, s.Opts.Model, s.Opts.Backend, s.Opts.Engine)
	if err != nil {
		return nil, err
	}
	s.engine = e
	return e, nil
}

// counting returns ctx under which the store's retries add to *n.
func counting(ctx context.Context, n *int) context.Context {
	var mu sync.Mutex
	return storage.WithRetryHook(ctx, func(string, string, error) { mu.Lock(); *n++; mu.Unlock() })
}

// dataError reports whether a storage error reading an image's own file
// is about the data (the object does not exist, is over the size limit,
// or its URI is of a scheme l2gflow does not read) rather than the
// storage: retrying cannot help.
func dataError(err error) bool {
	return errors.Is(err, storage.ErrNotExist) || errors.Is(err, storage.ErrTooLarge) || errors.Is(err, storage.ErrUnsupportedScheme)
}

// maxImageBytes bounds an image file read.
const maxImageBytes = 512 << 20

// Load reads a record's image file (for a record of the layout, trying
// the other image extensions when the .jpg does not exist) and checks its
// header: format, displayed size, the pixel limit. The file is decoded
// only when the image is inferred (Infer), under the memory budget. A
// missing, empty, unreadable or too large image gives a dead letter
// naming the file.
func (s *Stages) Load(ctx context.Context, rec dataset.Record) (*Task, *DeadLetter, error) {
	t := &Task{Rec: rec}
	ctx = counting(ctx, &t.Retries)
	uris := []string{rec.Image}
	if rec.Probe {
		base := strings.TrimSuffix(rec.Image, dataset.ImageExtensions[0])
		for _, ext := range dataset.ImageExtensions[1:] {
			uris = append(uris, base+ext)
		}
	}
	var data []byte
	var err error
	read := uris[0] // the file that was read, or failed
	for _, uri := range uris {
		read = uri
		if data, err = s.Store.ReadFile(ctx, uri, maxImageBytes); !errors.Is(err, storage.ErrNotExist) {
			break
		}
	}
	if err != nil {
		switch {
		case errors.Is(err, storage.ErrNotExist) && len(uris) > 1:
			return nil, &DeadLetter{ID: rec.ID, Stage: StageLoad, Reason: fmt.Sprintf("%s: file does not exist (nor with %s)",
				rec.Image, strings.Join(dataset.ImageExtensions[1:], ", "))}, nil
		case dataError(err):
			return nil, &DeadLetter{ID: rec.ID, Stage: StageLoad, Reason: err.Error()}, nil
		}
		return nil, nil, fmt.Errorf("image %s: %w", rec.ID, err)
	}
	_, w, h, err := imagefile.Probe(data, s.Opts.MaxPixels)
	if err != nil {
		return nil, &DeadLetter{ID: rec.ID, Stage: StageLoad, Reason: fmt.Sprintf("%s: %v", read, err)}, nil
	}
	t.W, t.H, t.File, t.Read = w, h, data, read
	return t, nil, nil
}

// MakeViews lists the image's inference views.
func (s *Stages) MakeViews(t *Task) {
	t.Views = s.Opts.Views.Views(t.H, t.W)
}

// LookupSaliency reads the image's saliency map when the background rule
// needs it and checks its header (Fuse decodes it). A map that does not
// exist, cannot be read as an image or has another size is reported in
// SalStatus (the documented fallback follows in fusion); a refused read is
// a configuration error and a storage fault that outlasts the retries
// fails the bundle: neither may change a label.
func (s *Stages) LookupSaliency(ctx context.Context, t *Task) error {
	switch {
	case s.Opts.Fuse.Background != BackgroundSaliency:
		t.SalStatus = SalNotNeeded
		return nil
	case t.Rec.Saliency == "":
		t.SalStatus = SalNone
		return nil
	}
	data, err := s.Store.ReadFile(counting(ctx, &t.Retries), t.Rec.Saliency, maxImageBytes)
	switch {
	case errors.Is(err, storage.ErrNotExist) && t.Rec.Probe:
		t.SalStatus = SalNone // the layout has no map for this image
		return nil
	case errors.Is(err, storage.ErrNotExist):
		t.SalStatus = SalMissing
		return nil
	case errors.Is(err, storage.ErrTooLarge):
		t.SalStatus = SalUnreadable
		return nil
	case storage.Denied(err):
		return fmt.Errorf("saliency map of %s: access refused, check the job's permissions: %w", t.Rec.ID, err)
	case err != nil:
		return fmt.Errorf("saliency map of %s: %w", t.Rec.ID, err)
	}
	// Saliency maps are read as stored (any EXIF orientation ignored).
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	switch {
	case err != nil || len(data) == 0 || int64(cfg.Width)*int64(cfg.Height) > int64(maxPixelsOr(s.Opts.MaxPixels)):
		t.SalStatus = SalUnreadable
	case cfg.Width != t.W || cfg.Height != t.H:
		t.SalStatus = SalWrongSize
	default:
		t.SalStatus, t.SalFile = SalOK, data
	}
	return nil
}

func maxPixelsOr(n int) int {
	if n <= 0 {
		return imagefile.DefaultMaxPixels
	}
	return n
}

// inferBytes is what inferring an image holds a pixel: its decoding (a
// JPEG's YCbCr planes, a PNG's RGBA, its EXIF turn) and the 8-bit RGB it
// keeps while its views are cut.
const inferBytes = 12

// fuseBytes is what fusing an image holds a pixel: its saliency map, its
// label and the label's encoding.
const fuseBytes = 3

// inferNeed is the budget an image's inference takes.
func inferNeed(t *Task) int64 { return int64(t.W)*int64(t.H)*inferBytes + 4<<20 }

// fuseNeed is the budget an image's fusion takes: its full-resolution
// bytes and the working map (the image's tagged classes and a background
// channel, and a copy).
func (s *Stages) fuseNeed(t *Task) int64 {
	wh, ww := model.WorkSize(t.H, t.W, s.Opts.Fuse.WorkPixels)
	return int64(t.W)*int64(t.H)*fuseBytes + 8*int64(wh)*int64(ww)*int64(len(t.Rec.Tags)+1) + 2<<20
}

// budget is the process's memory budget for the options.
func (s *Stages) budget() *Budget {
	if s.mem != nil {
		return s.mem
	}
	return ProcessBudget(s.Opts.MemoryBudget)
}

// Infer runs the views of a group of images through the engine together
// (views of one bucket share batches across images) and stores each
// image's CAMs. The group is run in parts of at most GroupPixels image
// pixels whose memory fits the process's budget, each part taking its
// share of the budget before its images are decoded and giving it back
// once their views are inferred (the decoded pixels are dropped then). An
// image that cannot be decoded gives a dead letter at stage load. When a
// part's inference fails, its images are inferred one by one, so that only
// an image that fails alone gets a dead letter (naming the cause). An
// engine that cannot be loaded is an error.
func (s *Stages) Infer(ctx context.Context, tasks []*Task) ([]*Task, []DeadLetter, model.InferStats, error) {
	e, err := s.Engine(ctx)
	if err != nil {
		return nil, nil, model.InferStats{}, err
	}
	b := s.budget()
	var dead []DeadLetter
	var ok []*Task
	var stats model.InferStats
	var part []*Task
	var partPixels int
	var partNeed int64
	runPart := func() error {
		if len(part) == 0 {
			return nil
		}
		done, d, st, err := s.inferPart(ctx, e, b, part, partNeed)
		ok, dead = append(ok, done...), append(dead, d...)
		stats.Add(st)
		part, partPixels, partNeed = nil, 0, 0
		return err
	}
	for _, t := range tasks {
		if err := checkViews(t); err != nil {
			dead = append(dead, DeadLetter{ID: t.Rec.ID, Stage: StageInfer, Reason: err.Error()})
			continue
		}
		px, need := t.W*t.H, inferNeed(t)
		if len(part) > 0 && (partPixels+px > s.Opts.groupPixels() || partNeed+need > b.Total()) {
			if err := runPart(); err != nil {
				return nil, nil, stats, err
			}
		}
		part, partPixels, partNeed = append(part, t), partPixels+px, partNeed+need
	}
	if err := runPart(); err != nil {
		return nil, nil, stats, err
	}
	return ok, dead, stats, nil
}

// inferPart decodes and infers one part of a group under the budget.
func (s *Stages) inferPart(ctx context.Context, e *model.Engine, b *Budget, part []*Task, need int64) ([]*Task, []DeadLetter, model.InferStats, error) {
	done, err := b.StartInference(ctx)
	if err != nil {
		return nil, nil, model.InferStats{}, err
	}
	defer done()
	took, err := b.Acquire(ctx, need)
	if err != nil {
		return nil, nil, model.InferStats{}, err
	}
	defer b.Release(took)
	start := time.Now()
	var dead []DeadLetter
	var decoded []*Task
	for _, t := range part {
		img, err := imagefile.DecodeRGB(t.File, s.Opts.MaxPixels)
		t.File = nil
		switch {
		case err != nil:
			dead = append(dead, DeadLetter{ID: t.Rec.ID, Stage: StageLoad, Reason: fmt.Sprintf("%s: %v", t.Read, err)})
			continue
		case img.W != t.W || img.H != t.H:
			dead = append(dead, DeadLetter{ID: t.Rec.ID, Stage: StageLoad, Reason: fmt.Sprintf("%s: decodes to %dx%d, its header says %dx%d", t.Read, img.W, img.H, t.W, t.H)})
			continue
		}
		t.Pix = img.Pix
		decoded = append(decoded, t)
	}
	var ok []*Task
	var stats model.InferStats
	infer := func(ts []*Task) error {
		st, err := s.inferViews(e, ts)
		stats.Add(st)
		return err
	}
	if err := infer(decoded); err != nil && len(decoded) > 1 {
		// One image can make a group fail (a view the network cannot
		// take, a fault in its data): infer them one by one.
		for _, t := range decoded {
			if err := infer([]*Task{t}); err != nil {
				dead = append(dead, DeadLetter{ID: t.Rec.ID, Stage: StageInfer, Reason: err.Error()})
				continue
			}
			ok = append(ok, t)
		}
	} else if err != nil {
		dead = append(dead, DeadLetter{ID: decoded[0].Rec.ID, Stage: StageInfer, Reason: err.Error()})
	} else {
		ok = decoded
	}
	for _, t := range part {
		t.Pix = nil
	}
	if len(ok) > 0 {
		share := float64(time.Since(start).Milliseconds()) / float64(len(ok))
		for _, t := range ok {
			t.Millis += share
		}
	}
	return ok, dead, stats, nil
}

// inferViews runs the views of decoded images through the engine and
// stores each image's CAMs, or returns the error of the group.
func (s *Stages) inferViews(e *model.Engine, tasks []*Task) (stats model.InferStats, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("inference panicked: %v", r)
		}
	}()
	if inferFault != nil {
		if err := inferFault(tasks); err != nil {
			return stats, err
		}
	}
	src := &groupSource{e: e}
	for _, t := range tasks {
		img := &imagefile.RGB{W: t.W, H: t.H, Pix: t.Pix}
		for _, v := range t.Views {
			src.views = append(src.views, sourceView{img: img, spec: v})
		}
	}
	cams, stats, err := e.InferFrom(src)
	if err != nil {
		return stats, err
	}
	for _, t := range tasks {
		t.Kernels = e.Kernels()
		t.CAMs = make([]maps.Map, len(t.Views))
		for i := range t.Views {
			t.CAMs[i] = *cams[0]
			cams = cams[1:]
		}
	}
	return stats, nil
}

// inferFault, when set (by tests only), is asked before a group's
// inference and fails it with its error: how the tests make an image that
// poisons its group.
var inferFault func(tasks []*Task) error

// sourceView is one view of a group: the image it is cut from and how.
type sourceView struct {
	img  *imagefile.RGB
	spec model.ViewSpec
}

// groupSource hands a group's views to the engine, each cut straight from
// its image's 8-bit pixels into its place in the batch input when the
// batch is filled.
type groupSource struct {
	e     *model.Engine
	views []sourceView
}

func (g *groupSource) Len() int              { return len(g.views) }
func (g *groupSource) Size(i int) (int, int) { return g.views[i].spec.InH, g.views[i].spec.InW }
func (g *groupSource) Fill(i int, dst []float32, stride int) {
	g.e.PrepareViewFromRGB(g.views[i].img, g.views[i].spec, dst, stride)
}

// checkViews refuses views that do not fit their image (a task assembled
// by hand, or a view list of another image), which would otherwise read
// outside it.
func checkViews(t *Task) error {
	if t.W <= 0 || t.H <= 0 {
		return fmt.Errorf("image of size %dx%d", t.W, t.H)
	}
	for _, v := range t.Views {
		switch {
		case v.InH <= 0 || v.InW <= 0:
			return fmt.Errorf("view %d has no input size", v.Index)
		case v.Local && (v.Y0 < 0 || v.X0 < 0 || v.Size <= 0 || v.Y0+v.Size > t.H || v.X0+v.Size > t.W):
			return fmt.Errorf("view %d: crop %d+%d, %d+%d outside the %dx%d image", v.Index, v.Y0, v.Size, v.X0, v.Size, t.W, t.H)
		}
	}
	return nil
}

// ErrNoSaliency is the cause of a dead letter from the saliency rule's
// "skip" fallback.
var ErrNoSaliency = errors.New("no usable saliency map")

// Fuse combines an image's view CAMs into its label: each view accumulated
// in view order straight into one map of the image's tagged classes at a
// bounded working resolution (model.Fuse), then the background rule, read
// at full resolution a row at a time.
// Its share of the memory budget is taken for the time it runs.
func (s *Stages) Fuse(ctx context.Context, t *Task) (Label, *DeadLetter, error) {
	b := s.budget()
	took, err := b.Acquire(ctx, s.fuseNeed(t))
	if err != nil {
		return Label{}, nil, err
	}
	defer b.Release(took)
	start := time.Now()
	lab, err := fuse(t, s.Opts.Fuse, s.Opts.MaxPixels)
	if err != nil {
		return Label{}, &DeadLetter{ID: t.Rec.ID, Stage: StageFuse, Reason: err.Error()}, nil
	}
	lab.Millis += float64(time.Since(start).Milliseconds())
	return lab, nil, nil
}

// modelFuse is the model's part of FuseOptions.
func (o FuseOptions) modelFuse() model.FuseOptions {
	return model.FuseOptions{Reading: o.Reading, LocalCombine: o.LocalCombine, WorkPixels: o.WorkPixels}
}

func fuse(t *Task, o FuseOptions, maxPixels int) (lab Label, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("fusion panicked: %v", r)
		}
	}()
	cams := make([]*maps.Map, len(t.CAMs))
	for i := range t.CAMs {
		cams[i] = &t.CAMs[i]
	}
	fused, err := model.Fuse(cams, t.Views, t.H, t.W, o.Classes, t.Rec.Tags, o.modelFuse())
	if err != nil {
		return Label{}, err
	}
	lab = Label{ID: t.Rec.ID, Rule: string(o.Background), SalStatus: t.SalStatus, Views: len(t.Views), Retries: t.Retries,
		Kernels: t.Kernels, Pixels: t.W * t.H, Millis: t.Millis}
	var sal *imagefile.Gray
	if t.SalStatus == SalOK {
		if sal, err = imagefile.DecodeGray(t.SalFile, maxPixels); err != nil || sal.W != t.W || sal.H != t.H {
			sal, lab.SalStatus = nil, SalUnreadable
		}
		t.SalFile = nil
	}
	var g *imagefile.Gray
	if o.Background == BackgroundSaliency && sal != nil {
		g, err = fused.LabelSaliency(sal, float32(o.SaliencyThreshold), float32(o.CAMThreshold))
	} else {
		if o.Background == BackgroundSaliency {
			if o.SaliencyFallback == FallbackSkip {
				return Label{}, fmt.Errorf("%w (%s)", ErrNoSaliency, lab.SalStatus)
			}
			lab.Rule = RuleFallback
		}
		g = fused.LabelThreshold(float32(o.BgThreshold))
	}
	if err != nil {
		return Label{}, err
	}
	if lab.PNG, err = imagefile.EncodeLabel(g); err != nil {
		return Label{}, err
	}
	if o.KeepCAMs {
		lab.CAM = EncodeFused(fused)
	}
	return lab, nil
}

// Write writes a label (and its CAM, if kept) atomically. Writing the same
// label twice gives the same bytes, so a retried bundle is harmless. Any
// failure is an error: the bundle fails and is retried.
func (s *Stages) Write(ctx context.Context, lab Label) (Written, error) {
	ctx = counting(ctx, &lab.Retries)
	start := time.Now()
	if lab.CAM != nil {
		if err := s.Store.WriteFile(ctx, CAMURI(s.Opts.Out, lab.ID), lab.CAM); err != nil {
			return Written{}, fmt.Errorf("label of %s: %w", lab.ID, err)
		}
	}
	uri := LabelURI(s.Opts.Out, lab.ID)
	if err := s.Store.WriteFile(ctx, uri, lab.PNG); err != nil {
		return Written{}, fmt.Errorf("label of %s: %w", lab.ID, err)
	}
	return Written{ID: lab.ID, URI: uri, Rule: lab.Rule, SalStatus: lab.SalStatus, Views: lab.Views, Retries: lab.Retries,
		Kernels: lab.Kernels, Pixels: lab.Pixels, Millis: lab.Millis + float64(time.Since(start).Milliseconds())}, nil
}
