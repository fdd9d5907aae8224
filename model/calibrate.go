package model

import (
	"context"
	"fmt"

	"github.com/l2gflow/l2gflow/io/artifact"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
)

// ThresholdCandidates are the background thresholds Calibrate chooses
// from: eval's fine sweep range and beyond it at both ends, so that a
// choice at an end of the list means the agreement was still rising there
// (which Calibrate reports).
var ThresholdCandidates = []float64{0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}

// CalibrationImages is how many training images with a saliency map
// Calibrate uses at most.
const CalibrationImages = 200

// SaliencyForeground is the saliency value (of 255) from which a pixel
// counts as salient foreground in calibration.
const SaliencyForeground = 128

// MinAgreement is the agreement (intersection over union of the labels'
// foreground and the salient pixels, over the calibration images) below
// which Calibrate warns that the model's maps do not match the objects.
// Trained models of the synthetic benchmarks agree 0.37-0.66 (CAM and L2G,
// mIoU 44-78); a model after one training step, 0.17.
const MinAgreement = 0.3

// Calibrate chooses a model's background threshold from data a user has,
// without ground truth: on up to CalibrationImages records with a
// saliency map, each image's CAM is fused as labeling fuses it (views from
// opts, reading and resolution from fo), and for each candidate threshold
// the foreground it gives (a tagged class's score above the threshold) is
// compared with the salient pixels (saliency >= SaliencyForeground); the
// candidate with the largest intersection over union, summed over the
// images, is chosen. Saliency maps are imperfect, but their errors (missed
// parts, bleeding into the background) pull the choice both ways, and a
// CAM threshold matters far more: a peaked CAM wants a low one, a diffuse
// CAM a high one. The result carries warnings when the best candidate is
// at an end of the list (the agreement still rising: the maps are not
// what the rule expects, e.g. inverted) or its agreement is below
// MinAgreement. It returns nil when no record has a readable saliency map
// of its image's size. Records' ground truth is never read.
func Calibrate(ctx context.Context, e *Engine, st *storage.Store, recs []dataset.Record, opts ViewOptions, fo FuseOptions, maxPixels int) (*artifact.Threshold, error) {
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
		cam, err := e.CAM(img, r.Tags, opts, fo)
		if err != nil {
			return nil, fmt.Errorf("calibration, %s: %w", r.ID, err)
		}
		addAgreement(cam, sal, inter, union)
		used++
	}
	if used == 0 {
		return nil, nil
	}
	t := chooseThreshold(inter, union)
	t.Images = used
	if fo.Reading != ReadNormalized {
		t.Reading = fo.Reading
	}
	return t, nil
}

// chooseThreshold picks the candidate of ThresholdCandidates with the best
// agreement (intersection over union) and adds the warnings Calibrate
// documents.
func chooseThreshold(inter, union []float64) *artifact.Threshold {
	t := &artifact.Threshold{Candidates: append([]float64(nil), ThresholdCandidates...)}
	best, at := -1.0, 0
	for i, c := range ThresholdCandidates {
		iou := 0.0
		if union[i] > 0 {
			iou = inter[i] / union[i]
		}
		t.IoU = append(t.IoU, iou)
		if iou > best {
			best, at, t.Value = iou, i, c
		}
	}
	switch at {
	case 0:
		t.Warnings = append(t.Warnings, fmt.Sprintf("the agreement with the saliency maps is still rising at the lowest threshold tried (%g): the maps are weak everywhere but on the most discriminative parts, or the saliency maps cover much of the background", t.Value))
	case len(ThresholdCandidates) - 1:
		t.Warnings = append(t.Warnings, fmt.Sprintf("the agreement with the saliency maps is still rising at the highest threshold tried (%g): the maps are high over the background (inverted or diffuse), so labels will hold much background", t.Value))
	}
	if best < MinAgreement {
		t.Warnings = append(t.Warnings, fmt.Sprintf("at its best threshold the labels agree with the saliency maps on only %.0f%% of their union (intersection over union; below %.0f%%): the maps do not find the objects", 100*best, 100*MinAgreement))
	}
	return t
}

// addAgreement adds, for each candidate, the intersection and union of
// the fused CAM's foreground and the salient pixels of one image.
func addAgreement(cam *Fused, sal *imagefile.Gray, inter, union []float64) {
	k := len(cam.Tags)
	cam.ScanRows(func(y int, row []float32) {
		for x := range cam.W {
			var top float32
			for i := range k {
				top = max(top, row[x*k+i])
			}
			salient := sal.Pix[y*cam.W+x] >= SaliencyForeground
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
	})
}
