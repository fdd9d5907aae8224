package transforms

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

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

// Load reads and decodes a record's image (for a record of the layout,
// trying the other image extensions when the .jpg does not exist). A
// missing, unreadable or too large image gives a dead letter.
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
	img, err := imagefile.DecodeRGB(data, s.Opts.MaxPixels)
	if err != nil {
		return nil, &DeadLetter{ID: rec.ID, Stage: StageLoad, Reason: fmt.Sprintf("%s: %v", read, err)}, nil
	}
	t.W, t.H, t.Pix = img.W, img.H, img.Pix
	return t, nil, nil
}

// MakeViews lists the image's inference views.
func (s *Stages) MakeViews(t *Task) {
	t.Views = s.Opts.Views.Views(t.H, t.W)
}

// LookupSaliency attaches the image's saliency map when the background
// rule needs it. A map that does not exist, cannot be decoded or has
// another size is reported in SalStatus (the documented fallback follows
// in fusion); a refused read is a configuration error and a storage fault
// that outlasts the retries fails the bundle: neither may change a label.
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
	g, err := imagefile.DecodeGray(data, s.Opts.MaxPixels)
	switch {
	case err != nil:
		t.SalStatus = SalUnreadable
	case g.W != t.W || g.H != t.H:
		t.SalStatus = SalWrongSize
	default:
		t.SalStatus, t.Sal = SalOK, g.Pix
	}
	return nil
}

// Infer runs the views of a group of images through the engine together
// (views of one bucket share batches across images) and stores each
// image's CAMs. A group whose inference fails gives every image of it a
// dead letter naming the cause; an engine that cannot be loaded is an
// error.
func (s *Stages) Infer(ctx context.Context, tasks []*Task) ([]*Task, []DeadLetter, model.InferStats, error) {
	e, err := s.Engine(ctx)
	if err != nil {
		return nil, nil, model.InferStats{}, err
	}
	src := &groupSource{}
	var dead []DeadLetter
	var ok []*Task
	for _, t := range tasks {
		if err := checkViews(t); err != nil {
			dead = append(dead, DeadLetter{ID: t.Rec.ID, Stage: StageInfer, Reason: err.Error()})
			continue
		}
		norm := e.Normalize(&imagefile.RGB{W: t.W, H: t.H, Pix: t.Pix})
		for _, v := range t.Views {
			src.views = append(src.views, sourceView{img: norm, spec: v})
		}
		ok = append(ok, t)
	}
	if len(ok) == 0 {
		return nil, dead, model.InferStats{}, nil
	}
	cams, stats, err := e.InferFrom(src)
	if err != nil {
		for _, t := range ok {
			dead = append(dead, DeadLetter{ID: t.Rec.ID, Stage: StageInfer, Reason: err.Error()})
		}
		return nil, dead, stats, nil
	}
	for _, t := range ok {
		t.Kernels = e.Kernels()
		t.CAMs = make([]maps.Map, len(t.Views))
		for i := range t.Views {
			t.CAMs[i] = *cams[0]
			cams = cams[1:]
		}
	}
	return ok, dead, stats, nil
}

// sourceView is one view of a group: the image it is cut from and how.
type sourceView struct {
	img  *maps.Map
	spec model.ViewSpec
}

// groupSource hands a group's views to the engine, each cut straight into
// its place in the batch input when the batch is filled.
type groupSource struct{ views []sourceView }

func (g *groupSource) Len() int              { return len(g.views) }
func (g *groupSource) Size(i int) (int, int) { return g.views[i].spec.InH, g.views[i].spec.InW }
func (g *groupSource) Fill(i int, dst []float32, stride int) {
	model.PrepareViewInto(g.views[i].img, g.views[i].spec, dst, stride)
}

// checkViews refuses views that do not fit their image (a task assembled
// by hand, or a view list of another image), which would otherwise read
// outside it.
func checkViews(t *Task) error {
	if t.W <= 0 || t.H <= 0 || len(t.Pix) != 3*t.W*t.H {
		return fmt.Errorf("image %dx%d holds %d bytes", t.W, t.H, len(t.Pix))
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

// Fuse combines an image's view CAMs into its label: each view restored to
// image coordinates (on every core), added in view order so that sums are
// the same to the bit on every run, then the background rule.
func (s *Stages) Fuse(t *Task) (Label, *DeadLetter) {
	lab, err := fuse(t, s.Opts.Fuse)
	if err != nil {
		return Label{}, &DeadLetter{ID: t.Rec.ID, Stage: StageFuse, Reason: err.Error()}
	}
	return lab, nil
}

func fuse(t *Task, o FuseOptions) (lab Label, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("fusion panicked: %v", r)
		}
	}()
	if len(t.CAMs) == 0 || len(t.CAMs) != len(t.Views) {
		return Label{}, fmt.Errorf("%d CAMs for %d views", len(t.CAMs), len(t.Views))
	}
	for i, v := range t.Views {
		if v.Index != i {
			return Label{}, fmt.Errorf("view %d in place %d", v.Index, i)
		}
	}
	restored := make([]*maps.Map, len(t.CAMs))
	panics := make([]error, len(t.CAMs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i := range t.CAMs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer func() {
				if r := recover(); r != nil {
					panics[i] = fmt.Errorf("view %d: %v", i, r)
				}
			}()
			restored[i] = model.RestoreView(&t.CAMs[i], t.Views[i], t.H, t.W)
		}()
	}
	wg.Wait()
	if err := errors.Join(panics...); err != nil {
		return Label{}, err
	}
	f := model.NewFuser(t.H, t.W, o.Classes, o.LocalCombine)
	for i, v := range t.Views {
		if err := f.Add(v, restored[i]); err != nil {
			return Label{}, err
		}
	}
	fused := f.Result(t.Rec.Tags)
	lab = Label{ID: t.Rec.ID, Rule: string(o.Background), SalStatus: t.SalStatus, Views: len(t.Views), Retries: t.Retries,
		Kernels: t.Kernels}
	var g *imagefile.Gray
	if o.Background == BackgroundSaliency && t.SalStatus == SalOK {
		sal := &imagefile.Gray{W: t.W, H: t.H, Pix: t.Sal}
		g, err = maps.SaliencyLabels(fused, t.Rec.Tags, sal, float32(o.SaliencyThreshold), float32(o.CAMThreshold))
	} else {
		if o.Background == BackgroundSaliency {
			if o.SaliencyFallback == FallbackSkip {
				return Label{}, fmt.Errorf("%w (%s)", ErrNoSaliency, t.SalStatus)
			}
			lab.Rule = RuleFallback
		}
		g, err = maps.ThresholdLabels(fused, t.Rec.Tags, float32(o.BgThreshold))
	}
	if err != nil {
		return Label{}, err
	}
	if lab.PNG, err = imagefile.EncodeLabel(g); err != nil {
		return Label{}, err
	}
	if o.KeepCAMs {
		lab.CAM = EncodeMap(fused)
	}
	return lab, nil
}

// Write writes a label (and its CAM, if kept) atomically. Writing the same
// label twice gives the same bytes, so a retried bundle is harmless. Any
// failure is an error: the bundle fails and is retried.
func (s *Stages) Write(ctx context.Context, lab Label) (Written, error) {
	ctx = counting(ctx, &lab.Retries)
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
		Kernels: lab.Kernels}, nil
}
