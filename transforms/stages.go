// Package transforms holds the labeling stages: plain Go functions that do
// each stage's work, the Beam DoFns and composite transforms that run them
// in a pipeline, and the element types passed between them. The in-process
// path (pipelines/label.RunInProcess) calls the same functions, so both
// give the same labels.
package transforms

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
	"github.com/l2gflow/l2gflow/model/maps"
)

// Stage names, as recorded in dead letters and metrics.
const (
	StageLoad     = "load"
	StageViews    = "views"
	StageSaliency = "saliency"
	StageInfer    = "infer"
	StageFuse     = "fuse"
	StageWrite    = "write"
)

// Image is a decoded image with its tags.
type Image struct {
	ID       string
	Tags     []int
	W, H     int
	Pix      []byte // RGB, row-major
	Saliency string // URI of the saliency map, "" if none
}

// View is one inference view of an image; it carries the image itself so
// that the inference stage prepares the view exactly as the in-process
// path does.
type View struct {
	ID   string
	Spec model.ViewSpec
	W, H int
	Pix  []byte
}

// Saliency statuses of ImageMeta.
const (
	SalOK         = "ok"
	SalNone       = "none"       // the dataset has no saliency map for the image
	SalMissing    = "missing"    // listed but the object does not exist
	SalUnreadable = "unreadable" // could not be read or decoded
	SalWrongSize  = "wrong_size" // not the image's size
	SalNotNeeded  = "not_needed" // the background rule does not use saliency
)

// ImageMeta is what fusion needs to know of an image besides its CAMs.
type ImageMeta struct {
	ID        string
	Tags      []int
	W, H      int
	Sal       []byte // W*H saliency values when SalStatus is SalOK
	SalStatus string
}

// ViewCAM is a view's foreground CAM, zstd-compressed little-endian
// float32 values H x W x C.
type ViewCAM struct {
	ID      string
	Spec    model.ViewSpec
	H, W, C int
	Data    []byte
}

// Label is an image's pseudo label, ready to write.
type Label struct {
	ID  string
	PNG []byte // VOC palette PNG
	// CAM is the fused CAM (EncodeMap), kept when asked for threshold sweeps.
	CAM []byte
	// Rule is the background rule applied ("threshold", "saliency", or
	// "threshold(fallback)" when saliency was unusable).
	Rule string
}

// DeadLetter records an image that a stage could not handle.
type DeadLetter struct {
	ID     string `json:"id"`
	Stage  string `json:"stage"`
	Reason string `json:"reason"`
}

// zstd coders: EncodeAll and DecodeAll are safe for concurrent use, so one
// of each serves the process.
var (
	zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	zdec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(1<<30))
)

// EncodeMap compresses a float map: a 12-byte header (H, W, C) and the
// values, zstd-compressed.
func EncodeMap(m *maps.Map) []byte {
	raw := make([]byte, 12+4*len(m.Pix))
	binary.LittleEndian.PutUint32(raw[0:], uint32(m.H))
	binary.LittleEndian.PutUint32(raw[4:], uint32(m.W))
	binary.LittleEndian.PutUint32(raw[8:], uint32(m.C))
	for i, v := range m.Pix {
		binary.LittleEndian.PutUint32(raw[12+4*i:], math.Float32bits(v))
	}
	return zenc.EncodeAll(raw, nil)
}

// DecodeMap reverses EncodeMap.
func DecodeMap(data []byte) (*maps.Map, error) {
	raw, err := zdec.DecodeAll(data, nil)
	if err != nil {
		return nil, fmt.Errorf("decompress map: %w", err)
	}
	if len(raw) < 12 {
		return nil, errors.New("map: short header")
	}
	h, w, c := int(binary.LittleEndian.Uint32(raw[0:])), int(binary.LittleEndian.Uint32(raw[4:])), int(binary.LittleEndian.Uint32(raw[8:]))
	if h <= 0 || w <= 0 || c <= 0 || len(raw) != 12+4*h*w*c {
		return nil, fmt.Errorf("map: %d bytes for %dx%dx%d", len(raw), h, w, c)
	}
	m := maps.New(h, w, c)
	for i := range m.Pix {
		m.Pix[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[12+4*i:]))
	}
	return m, nil
}

// LoadImage reads and decodes a record's image.
func LoadImage(ctx context.Context, st *storage.Store, rec dataset.Record, maxPixels int) (Image, error) {
	data, err := st.ReadFile(ctx, rec.Image, 512<<20)
	if err != nil {
		return Image{}, err
	}
	img, err := imagefile.DecodeRGB(data, maxPixels)
	if err != nil {
		return Image{}, fmt.Errorf("%s: %w", rec.Image, err)
	}
	return Image{ID: rec.ID, Tags: slices.Clone(rec.Tags), W: img.W, H: img.H, Pix: img.Pix, Saliency: rec.Saliency}, nil
}

// MakeViews lists an image's inference views.
func MakeViews(img Image, opts model.ViewOptions) []View {
	specs := opts.Views(img.H, img.W)
	out := make([]View, len(specs))
	for i, s := range specs {
		out[i] = View{ID: img.ID, Spec: s, W: img.W, H: img.H, Pix: img.Pix}
	}
	return out
}

// LookupSaliency attaches the image's saliency map when the background
// rule needs it. A missing, unreadable or wrongly sized map is reported in
// SalStatus, never as an error.
func LookupSaliency(ctx context.Context, st *storage.Store, img Image, needed bool, maxPixels int) ImageMeta {
	meta := ImageMeta{ID: img.ID, Tags: img.Tags, W: img.W, H: img.H}
	switch {
	case !needed:
		meta.SalStatus = SalNotNeeded
		return meta
	case img.Saliency == "":
		meta.SalStatus = SalNone
		return meta
	}
	data, err := st.ReadFile(ctx, img.Saliency, 512<<20)
	if errors.Is(err, storage.ErrNotExist) {
		meta.SalStatus = SalMissing
		return meta
	}
	if err != nil {
		meta.SalStatus = SalUnreadable
		return meta
	}
	g, err := imagefile.DecodeGray(data, maxPixels)
	switch {
	case err != nil:
		meta.SalStatus = SalUnreadable
	case g.W != img.W || g.H != img.H:
		meta.SalStatus = SalWrongSize
	default:
		meta.SalStatus, meta.Sal = SalOK, g.Pix
	}
	return meta
}

// InferViews runs views of any sizes through the engine, which pads each
// to its bucket and batches views of one bucket together; a view's CAM
// does not depend on its batch or padding.
func InferViews(e *model.Engine, views []View) ([]ViewCAM, error) {
	inputs := make([]*maps.Map, len(views))
	for i, v := range views {
		rgb := &imagefile.RGB{W: v.W, H: v.H, Pix: v.Pix}
		inputs[i] = model.PrepareView(e.Normalize(rgb), v.Spec)
	}
	cams, err := e.Infer(inputs)
	if err != nil {
		return nil, err
	}
	out := make([]ViewCAM, len(views))
	for i, c := range cams {
		out[i] = ViewCAM{ID: views[i].ID, Spec: views[i].Spec, H: c.H, W: c.W, C: c.C, Data: EncodeMap(c)}
	}
	return out, nil
}

// FuseOptions configure fusion and the background rule.
type FuseOptions struct {
	Background        string // "threshold" or "saliency"
	BgThreshold       float64
	SaliencyThreshold float64
	CAMThreshold      float64
	// SaliencyFallback for images without a usable saliency map under the
	// saliency rule: "threshold" (use the threshold rule) or "skip"
	// (dead-letter the image).
	SaliencyFallback string
	LocalCombine     string // "sum" or "max"
	KeepCAMs         bool
}

// ErrNoSaliency is returned by Fuse for an image skipped by the saliency
// fallback.
var ErrNoSaliency = errors.New("no usable saliency map")

// Fuse combines an image's view CAMs (any order: they are sorted by view
// index first) into its label.
func Fuse(meta ImageMeta, cams []ViewCAM, classes int, o FuseOptions) (Label, error) {
	if len(cams) == 0 {
		return Label{}, errors.New("no CAMs")
	}
	slices.SortFunc(cams, func(a, b ViewCAM) int { return a.Spec.Index - b.Spec.Index })
	for i := 1; i < len(cams); i++ {
		if cams[i].Spec.Index == cams[i-1].Spec.Index {
			return Label{}, fmt.Errorf("view %d twice", cams[i].Spec.Index)
		}
	}
	// A label from some of the views would differ from the one a clean run
	// gives: refuse it (the failed views have their own dead letters).
	if want := cams[0].Spec.Of; want > 0 && len(cams) != want {
		return Label{}, fmt.Errorf("only %d of %d views inferred", len(cams), want)
	}
	combine := maps.Sum
	if o.LocalCombine == "max" {
		combine = maps.Max
	}
	// Decoding and resizing the views is most of the work: do it on every
	// core (the Beam runner gives fusion fewer bundles than cores), then
	// add the results in view order, so that sums are bit-identical.
	restored := make([]*maps.Map, len(cams))
	errs := make([]error, len(cams))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, c := range cams {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			m, err := DecodeMap(c.Data)
			if err != nil {
				errs[i] = fmt.Errorf("view %d: %w", c.Spec.Index, err)
				return
			}
			restored[i] = model.RestoreView(m, c.Spec, meta.H, meta.W)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Label{}, err
	}
	f := model.NewFuser(meta.H, meta.W, classes, combine)
	for i, c := range cams {
		if err := f.Add(c.Spec, restored[i]); err != nil {
			return Label{}, err
		}
	}
	fused := f.Result(meta.Tags)
	lab := Label{ID: meta.ID, Rule: o.Background}
	var g *imagefile.Gray
	var err error
	if o.Background == "saliency" && meta.SalStatus == SalOK {
		sal := &imagefile.Gray{W: meta.W, H: meta.H, Pix: meta.Sal}
		g, err = maps.SaliencyLabels(fused, meta.Tags, sal, float32(o.SaliencyThreshold), float32(o.CAMThreshold))
	} else {
		if o.Background == "saliency" {
			if o.SaliencyFallback == "skip" {
				return Label{}, fmt.Errorf("%w (%s)", ErrNoSaliency, meta.SalStatus)
			}
			lab.Rule = "threshold(fallback)"
		}
		g, err = maps.ThresholdLabels(fused, meta.Tags, float32(o.BgThreshold))
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

// Output layout under the label prefix.
const (
	ErrorsDir   = "_errors" // one JSON object per dead letter, merged into ErrorsFile
	ErrorsFile  = "_errors.jsonl"
	RunFile     = "_run.json"
	CAMsDir     = "_cams" // fused CAMs, <id>.cam (EncodeMap)
	LabelSuffix = ".png"
)

// LabelURI is where an image's label goes.
func LabelURI(out, id string) string { return storage.Join(out, id+LabelSuffix) }

// CAMURI is where an image's fused CAM goes.
func CAMURI(out, id string) string { return storage.Join(out, CAMsDir, id+".cam") }

// idIn returns the id of uri when it is dir/<id><suffix>.
func idIn(dir, uri, suffix string) (string, bool) {
	if strings.TrimSuffix(storage.Dir(uri), "/") != strings.TrimSuffix(dir, "/") || !strings.HasSuffix(uri, suffix) {
		return "", false
	}
	return strings.TrimSuffix(storage.Base(uri), suffix), true
}

// LabelID returns the image id of uri when it is a label, OUT/<id>.png
// (not an object in a sub-folder), as found by listing OUT.
func LabelID(out, uri string) (string, bool) { return idIn(out, uri, LabelSuffix) }

// CAMID returns the image id of uri when it is a stored fused CAM,
// OUT/_cams/<id>.cam.
func CAMID(out, uri string) (string, bool) { return idIn(storage.Join(out, CAMsDir), uri, ".cam") }

// WriteLabel writes a label (and its CAM, if kept) atomically. Writing the
// same label twice gives the same bytes, so retries are harmless.
func WriteLabel(ctx context.Context, st *storage.Store, out string, lab Label) error {
	if lab.CAM != nil {
		if err := st.WriteFile(ctx, CAMURI(out, lab.ID), lab.CAM); err != nil {
			return err
		}
	}
	return st.WriteFile(ctx, LabelURI(out, lab.ID), lab.PNG)
}

// engines caches loaded models per process: a Beam worker runs many DoFn
// instances (Setup is per instance), and a model should be read, checked
// and compiled once per process, then shared by all bundles. This and the
// storage client below are the package's only process-wide state.
var engines = struct {
	sync.Mutex
	m map[string]*engineEntry
}{m: map[string]*engineEntry{}}

type engineEntry struct {
	once sync.Once
	e    *model.Engine
	err  error
}

// LoadEngine returns the process's engine for a model URI, backend and
// engine options, loading it on first use.
func LoadEngine(ctx context.Context, uri, backend string, opts model.EngineOptions) (*model.Engine, error) {
	key := fmt.Sprintf("%s\x00%s\x00%+v", uri, backend, opts)
	engines.Lock()
	ent, ok := engines.m[key]
	if !ok {
		ent = &engineEntry{}
		engines.m[key] = ent
	}
	engines.Unlock()
	ent.once.Do(func() {
		var data []byte
		data, ent.err = SharedStore().ReadFile(ctx, uri, 0)
		if ent.err != nil {
			ent.err = fmt.Errorf("model: %w", ent.err)
			return
		}
		var m *model.Model
		if m, ent.err = model.LoadModel(data); ent.err != nil {
			ent.err = fmt.Errorf("model %s: %w", uri, ent.err)
			return
		}
		b, err := model.NewBackend(backend)
		if err != nil {
			ent.err = err
			return
		}
		ent.e, ent.err = model.NewEngine(b, m, opts)
	})
	return ent.e, ent.err
}

var sharedStore = sync.OnceValue(storage.New)

// SharedStore is the process's storage client (GCS clients are costly).
func SharedStore() *storage.Store { return sharedStore() }
