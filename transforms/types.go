// Package transforms is l2gflow's labeling as Beam transforms: one
// composite transform a stage (Load, CropViews, LookupSaliency, InferCAMs,
// FuseLabels, WriteLabels), the whole chain as LabelImages, the reading of
// a dataset's list inside the pipeline (ReadRecords, SelectPending), and
// the run's bookkeeping done by the job itself (RecordRun: dead letters,
// the model's index, counts and the run record).
//
// An image travels through the stages as one element (a Task) carrying
// its pixels, then its views, then their CAMs, so that a runner fuses the
// stages into one with no shuffle after the initial Reshuffle. The work of
// each stage is a plain method of Stages, which the in-process path
// (RunInProcess) calls in the same order, so both give the same labels and
// the same records.
package transforms

import (
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
	"github.com/l2gflow/l2gflow/model/maps"
)

// Stage names, as recorded in dead letters.
const (
	StageList     = "list" // a line of the tag list or manifest (checked at launch; seen only if it changed since)
	StageLoad     = "load"
	StageViews    = "views"
	StageSaliency = "saliency"
	StageInfer    = "infer"
	StageFuse     = "fuse"
	StageWrite    = "write"
)

// Background is the rule that turns an image's fused CAM into its label.
type Background string

// Background rules.
const (
	// BackgroundThreshold labels a pixel background where no tagged
	// class's normalised CAM exceeds a threshold (the reference's rule).
	BackgroundThreshold Background = "threshold"
	// BackgroundSaliency takes background from the binarised saliency
	// map, drops weak class scores, and marks salient pixels left as
	// background with the ignore label 255 (WSSS-BED's rule).
	BackgroundSaliency Background = "saliency"
)

// SaliencyFallback is what the saliency rule does for an image without a
// usable saliency map.
type SaliencyFallback string

// Saliency fallbacks.
const (
	FallbackThreshold SaliencyFallback = "threshold" // label it by the threshold rule
	FallbackSkip      SaliencyFallback = "skip"      // dead-letter it
)

// RuleFallback is the Rule of a label made by the threshold rule because
// the saliency rule had no usable map.
const RuleFallback = "threshold(fallback)"

// Saliency statuses of a Task.
const (
	SalOK         = "ok"
	SalNone       = "none"       // the dataset has no saliency map for the image
	SalMissing    = "missing"    // listed but the object does not exist
	SalUnreadable = "unreadable" // could not be decoded
	SalWrongSize  = "wrong_size" // not the image's size
	SalNotNeeded  = "not_needed" // the background rule does not use saliency
)

// Task is one image on its way through the labeling stages.
type Task struct {
	Rec dataset.Record
	// W and H are the image's displayed size, from its header (Load).
	W, H int
	// File is the image file (Load), and Read its URI; Pix its RGB pixels,
	// row-major, only while the image is inferred (Infer decodes the file
	// and drops both after inference).
	File []byte
	Read string
	Pix  []byte
	// Views are the image's inference views (CropViews).
	Views []model.ViewSpec
	// SalStatus and SalFile (the saliency map's file, its header checked,
	// when SalOK) come from LookupSaliency; Fuse decodes it.
	SalStatus string
	SalFile   []byte
	// Millis is the time spent on the image so far, in milliseconds (its
	// share of its inference group's, then its fusion and writing).
	Millis float64
	// CAMs holds each view's foreground CAM, in view order (InferCAMs).
	CAMs []maps.Map
	// Retries counts the storage retries spent on this image.
	Retries int
	// Kernels is the kernel set its CAMs were computed with
	// (model.KernelSet).
	Kernels string
}

// Label is an image's pseudo label, ready to write.
type Label struct {
	ID  string
	PNG []byte // VOC palette PNG
	// CAM is the fused CAM (EncodeFused), kept when asked for threshold
	// sweeps.
	CAM []byte
	// Rule is the background rule applied: "threshold", "saliency", or
	// RuleFallback.
	Rule      string
	SalStatus string
	Views     int
	Retries   int
	Kernels   string
	// Pixels is the image's size in pixels; Millis as Task.Millis.
	Pixels int
	Millis float64
}

// Written is a label on storage: the output of WriteLabels.
type Written struct {
	ID        string
	URI       string
	Rule      string
	SalStatus string
	Views     int
	Retries   int
	Kernels   string
	Pixels    int
	Millis    float64
}

// DeadLetter records an image that a stage could not label: bad data (a
// corrupt or missing image, a view the network cannot take), never a
// passing storage fault, which fails the bundle for the runner to retry.
type DeadLetter struct {
	ID     string `json:"id"`
	Stage  string `json:"stage"`
	Reason string `json:"reason"`
}

// FuseOptions configure fusion and the background rule.
type FuseOptions struct {
	Classes           int // foreground classes of the model
	Background        Background
	BgThreshold       float64
	SaliencyThreshold float64
	CAMThreshold      float64
	SaliencyFallback  SaliencyFallback
	LocalCombine      maps.Combine
	// Reading and WorkPixels: see model.FuseOptions.
	Reading    string
	WorkPixels int
	KeepCAMs   bool
}

// LabelOptions configure LabelImages and the in-process path. They are
// plain data: DoFns carry them as JSON and build everything else (storage
// clients, the model) in their Setup.
type LabelOptions struct {
	// Out is the output prefix (local or gs://) for <id>.png labels.
	Out string
	// Model is the model artifact URI; Backend the GoMLX backend.
	Model   string
	Backend string
	Engine  model.EngineOptions
	Views   model.ViewOptions
	Fuse    FuseOptions
	// MaxPixels refuses larger images from their header.
	MaxPixels int
	Storage   storage.Options
	// Group is how many images' views the inference stage batches
	// together (default 16), and GroupPixels the most image pixels a
	// group holds (default DefaultGroupPixels; an image larger than that
	// is a group of its own): views of one bucket share batches across the
	// images of a group.
	Group       int
	GroupPixels int
	// MemoryBudget is the worker process's memory budget for images in
	// bytes (0: from the memory available, see ProcessBudget).
	MemoryBudget int64
}

// DefaultGroupPixels bounds an inference group's image pixels: 16
// megapixels, a few phone photos or a thousand thumbnails.
const DefaultGroupPixels = 16_000_000

func (o LabelOptions) group() int {
	if o.Group <= 0 {
		return 16
	}
	return o.Group
}

func (o LabelOptions) groupPixels() int {
	if o.GroupPixels <= 0 {
		return DefaultGroupPixels
	}
	return o.GroupPixels
}

// Output layout under the label prefix.
const (
	ErrorsDir   = "_errors" // dead-letter parts of each run, _errors/<run>/<part>.jsonl
	ErrorsFile  = "_errors.jsonl"
	RunFile     = "_run.json"
	RunsDir     = "_runs"  // one run record a run: _runs/<run>.json
	IndexDir    = "_index" // ids each run labelled, by model: _index/<sha256>/<run>/<part>.txt
	CAMsDir     = "_cams"  // fused CAMs, <id>.cam (EncodeFused)
	LabelSuffix = ".png"
)
