package model

import (
	"context"
	"fmt"

	"github.com/l2gflow/l2gflow/io/artifact"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model/maps"
)

// ThresholdCandidates are the background thresholds Calibrate chooses
// from (a subset of eval's fine sweep).
var ThresholdCandidates = []float64{0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4}

// CalibrationImages is how many training images with a saliency map
// Calibrate uses at most.
const CalibrationImages = 200

// SaliencyForeground is the saliency value (of 255) from which a pixel
// counts as salient foreground in calibration.
const SaliencyForeground = 128

// Calibrate chooses a model's background threshold from data a user has,
// without ground truth: on up to CalibrationImages records with a
// saliency map, each image's CAM is fused as labeling fuses it (views from
// opts), and for each candidate threshold the foreground it gives (a
// tagged class's normalised CAM above the threshold) is compared with the
// salient pixels (saliency >= SaliencyForeground); the candidate with the
// largest intersection over union, summed over the images, is chosen.
// Saliency maps are imperfect, but their errors (missed parts, bleeding
// into the background) pull the choice both ways, and a CAM threshold
// matters far more: a peaked CAM wants a low one, a diffuse CAM a high
// one. It returns nil when no record has a readable saliency map of its
// image's size. Records' ground truth is never read.
func Calibrate(ctx context.Context, e *Engine, st *storage.Store, recs []dataset.Record, opts ViewOptions, maxPixels int) (*artifact.Threshold, error) {
	inter := make([]float64, len(ThresholdCandidates))
	union := make([]float64, len(ThresholdCandidates))
	used := 0
	for _, r := range recs {
		if used >= CalibrationImages {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if r.Saliency == "" || len(r.Tags) == 0 {
			continue
		}
		salData, err := st.ReadFile(ctx, r.Saliency, 256<<20)
		if err != nil {
			continue // calibration uses the maps that can be read
		}
		sal, err := imagefile.DecodeGray(salData, maxPixels)
		if err != nil {
			continue
		}
		imgData, err := st.ReadFile(ctx, r.Image, 512<<20)
		if err != nil {
			continue
		}
		img, err := imagefile.DecodeRGB(imgData, maxPixels)
		if err != nil || img.W != sal.W || img.H != sal.H {
			continue
		}
		cam, err := e.CAM(img, r.Tags, opts)
		if err != nil {
			return nil, fmt.Errorf("calibration, %s: %w", r.ID, err)
		}
		addAgreement(cam, r.Tags, sal, inter, union)
		used++
	}
	if used == 0 {
		return nil, nil
	}
	t := &artifact.Threshold{Images: used, Candidates: append([]float64(nil), ThresholdCandidates...)}
	best := -1.0
	for i, c := range ThresholdCandidates {
		iou := 0.0
		if union[i] > 0 {
			iou = inter[i] / union[i]
		}
		t.IoU = append(t.IoU, iou)
		if iou > best {
			best, t.Value = iou, c
		}
	}
	return t, nil
}

// addAgreement adds, for each candidate, the intersection and union of
// the CAM's foreground and the salient pixels of one image.
func addAgreement(cam *maps.Map, tags []int, sal *imagefile.Gray, inter, union []float64) {
	for p := 0; p < cam.H*cam.W; p++ {
		var top float32
		for _, t := range tags {
			top = max(top, cam.Pix[p*cam.C+t])
		}
		salient := sal.Pix[p] >= SaliencyForeground
		for i, c := range ThresholdCandidates {
			fg := float64(top) > c
			if fg && salient {
				inter[i]++
			}
			if fg || salient {
				union[i]++
			}
		}
	}
}
