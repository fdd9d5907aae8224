package study

import (
	"context"
	"fmt"
	"slices"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
)

// Classification is how well a model's image logits name the classes of
// a split: per class, average precision (ranking) and F1 at logit 0
// (probability 0.5, the multi-label loss's decision).
type Classification struct {
	Images   int          `json:"images"`
	MAP      float64      `json:"map"`
	MacroF1  float64      `json:"macro_f1"`
	PerClass []ClassScore `json:"per_class"`
}

// ClassScore is one class's classification quality.
type ClassScore struct {
	Name      string  `json:"name"`
	Positives int     `json:"positives"`
	AP        float64 `json:"ap"`
	F1        float64 `json:"f1"`
}

// Classify scores the engine's image logits on recs against their tags.
// Classes with no positive image are left out of the means.
func Classify(ctx context.Context, e *model.Engine, st *storage.Store, recs []dataset.Record, classes []string) (Classification, error) {
	scores := make([][]float64, len(classes))
	truth := make([][]bool, len(classes))
	for _, r := range recs {
		if err := ctx.Err(); err != nil {
			return Classification{}, err
		}
		data, err := st.ReadFile(ctx, r.Image, 512<<20)
		if err != nil {
			return Classification{}, fmt.Errorf("classify %s: %w", r.ID, err)
		}
		img, err := imagefile.DecodeRGB(data, 0)
		if err != nil {
			return Classification{}, fmt.Errorf("classify %s: %w", r.ID, err)
		}
		logits, err := e.Logits(img)
		if err != nil {
			return Classification{}, fmt.Errorf("classify %s: %w", r.ID, err)
		}
		for c := range classes {
			scores[c] = append(scores[c], logits[c])
			truth[c] = append(truth[c], slices.Contains(r.Tags, c))
		}
	}
	out := Classification{Images: len(recs)}
	n := 0
	for c, name := range classes {
		cs := ClassScore{Name: name, AP: AveragePrecision(scores[c], truth[c]), F1: f1At0(scores[c], truth[c])}
		for _, t := range truth[c] {
			if t {
				cs.Positives++
			}
		}
		out.PerClass = append(out.PerClass, cs)
		if cs.Positives > 0 {
			out.MAP += cs.AP
			out.MacroF1 += cs.F1
			n++
		}
	}
	if n > 0 {
		out.MAP /= float64(n)
		out.MacroF1 /= float64(n)
	}
	return out, nil
}

// AveragePrecision is the mean, over the positive items, of the precision
// of the ranking (by descending score) down to each of them; ties are
// ranked pessimistically (negatives first). 0 without positives.
func AveragePrecision(scores []float64, positive []bool) float64 {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case scores[a] > scores[b]:
			return -1
		case scores[a] < scores[b]:
			return 1
		case positive[a] == positive[b]:
			return 0
		case positive[b]:
			return -1
		default:
			return 1
		}
	})
	hits, sum := 0, 0.0
	for rank, i := range idx {
		if positive[i] {
			hits++
			sum += float64(hits) / float64(rank+1)
		}
	}
	if hits == 0 {
		return 0
	}
	return sum / float64(hits)
}

// f1At0 is the F1 score of deciding positive where the logit is > 0.
func f1At0(scores []float64, positive []bool) float64 {
	tp, fp, fn := 0, 0, 0
	for i, s := range scores {
		switch {
		case s > 0 && positive[i]:
			tp++
		case s > 0:
			fp++
		case positive[i]:
			fn++
		}
	}
	if tp == 0 {
		return 0
	}
	return 2 * float64(tp) / float64(2*tp+fp+fn)
}
