package maps

import (
	"fmt"

	"github.com/l2gflow/l2gflow/io/imagefile"
)

// CAM readings: how a fused CAM becomes class scores.
const (
	// ReadNormalized is the reference's reading: the views' class maps
	// summed, ReLU, each class divided by its maximum over the image.
	ReadNormalized = "normalized"
	// ReadSoftmax reads the maps as the transfer trained them: the views'
	// raw maps averaged, then per pixel a softmax over the image's tagged
	// classes and the background channel.
	ReadSoftmax = "softmax"
)

// Readings lists the CAM readings.
var Readings = []string{ReadNormalized, ReadSoftmax}

// ThresholdLabels is the reference's background rule: each pixel takes the
// argmax over [background = bgThr, the CAMs of the tagged classes], ties
// going to the background. cams has one channel per foreground class
// (normalised to [0, 1]); the label of class k is k+1, background 0.
func ThresholdLabels(cams *Map, tags []int, bgThr float32) (*imagefile.Gray, error) {
	if err := checkTags(cams, tags); err != nil {
		return nil, err
	}
	out := imagefile.NewGray(cams.W, cams.H)
	for p := 0; p < cams.H*cams.W; p++ {
		out.Pix[p] = ThresholdPixel(cams.Pix[p*cams.C:(p+1)*cams.C], tags, tags, bgThr)
	}
	return out, nil
}

// ThresholdPixel is ThresholdLabels' rule for one pixel: scores[chans[i]]
// is its score of class tags[i].
func ThresholdPixel(scores []float32, chans, tags []int, bgThr float32) uint8 {
	best, label := bgThr, uint8(0)
	for i, t := range tags {
		if v := scores[chans[i]]; v > best {
			best, label = v, uint8(t+1)
		}
	}
	return label
}

// SaliencyLabels is the saliency background rule (as clovaai/WSSS-BED): a
// pixel is salient when sal/255 > salThr; the background score is 1 off
// the salient region and 0 on it; class scores below camThr count as 0;
// the argmax wins, ties going to the background; salient pixels left as
// background are marked 255 (ignore).
func SaliencyLabels(cams *Map, tags []int, sal *imagefile.Gray, salThr, camThr float32) (*imagefile.Gray, error) {
	if err := checkTags(cams, tags); err != nil {
		return nil, err
	}
	if sal.W != cams.W || sal.H != cams.H {
		return nil, fmt.Errorf("saliency %dx%d for a %dx%d map", sal.W, sal.H, cams.W, cams.H)
	}
	out := imagefile.NewGray(cams.W, cams.H)
	for p := 0; p < cams.H*cams.W; p++ {
		out.Pix[p] = SaliencyPixel(cams.Pix[p*cams.C:(p+1)*cams.C], tags, tags, float32(sal.Pix[p])/255 > salThr, camThr)
	}
	return out, nil
}

// SaliencyPixel is SaliencyLabels' rule for one pixel: scores[chans[i]] is
// its score of class tags[i]; salient says whether it is in the salient
// region.
func SaliencyPixel(scores []float32, chans, tags []int, salient bool, camThr float32) uint8 {
	best, label := float32(1), uint8(0)
	if salient {
		best = 0
	}
	for i, t := range tags {
		v := scores[chans[i]]
		if v < camThr {
			v = 0
		}
		if v > best {
			best, label = v, uint8(t+1)
		}
	}
	if label == 0 && salient {
		label = imagefile.Ignore
	}
	return label
}

func checkTags(cams *Map, tags []int) error {
	if err := cams.Check(); err != nil {
		return err
	}
	for _, t := range tags {
		if t < 0 || t >= cams.C || t >= 254 {
			return fmt.Errorf("tag %d outside the %d CAM channels", t, cams.C)
		}
	}
	return nil
}
