package eval

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/synth"
	"github.com/l2gflow/l2gflow/model/maps"
	"github.com/l2gflow/l2gflow/pipelines/pipetest"
	"github.com/l2gflow/l2gflow/transforms"
)

func TestMain(m *testing.M) { pipetest.Main(m) }

func TestSweepPicksTheRightThreshold(t *testing.T) {
	dir := t.TempDir()
	st := storage.New()
	defer st.Close()
	ctx := context.Background()
	// GT: left half class 1 (label 1), right half background. CAM of
	// class 0: 0.3 on the left, 0.2 on the right. Thresholds 0.2 and 0.25
	// separate them exactly; 0.2 comes first.
	gt := imagefile.NewGray(4, 2)
	cam := maps.New(2, 4, 2)
	for y := 0; y < 2; y++ {
		for x := 0; x < 4; x++ {
			v := float32(0.2)
			if x < 2 {
				gt.Pix[y*4+x] = 1
				v = 0.3
			}
			cam.Pix[(y*4+x)*2] = v
		}
	}
	gtPNG, _ := imagefile.EncodeLabel(gt)
	labPNG, _ := imagefile.EncodeLabel(imagefile.NewGray(4, 2))
	st.WriteFile(ctx, filepath.Join(dir, "gt.png"), gtPNG)
	st.WriteFile(ctx, filepath.Join(dir, "lab.png"), labPNG)
	st.WriteFile(ctx, filepath.Join(dir, "a.cam"), transforms.EncodeMap(cam))
	ec := config.Default().Eval
	ec.SweepFrom, ec.SweepTo, ec.SweepStep = 0.05, 0.5, 0.05
	th := Thresholds(ec)
	if len(th) != 10 || th[0] != 0.05 || th[9] != 0.5 {
		t.Fatalf("thresholds %v", th)
	}
	sum, err := DirectItems(ctx, st, []Item{{ID: "a", Label: filepath.Join(dir, "lab.png"), GT: filepath.Join(dir, "gt.png"),
		CAM: filepath.Join(dir, "a.cam"), Tags: []int{0}}}, 3, th)
	if err != nil {
		t.Fatal(err)
	}
	m := Summarize(sum, []string{"x", "y"}, th)
	if m.Best == nil || m.Best.Threshold != 0.2 || m.Best.MIoU != 1 {
		t.Errorf("best = %+v, want threshold 0.2 with mIoU 1", m.Best)
	}
	if m.Sweep[0].MIoU >= 1 || m.Sweep[9].MIoU >= 1 {
		t.Errorf("sweep ends should be imperfect: %+v", m.Sweep)
	}
	// The all-background label: background IoU 0.5, class 1 IoU 0.
	if math.Abs(float64(m.MIoU)-0.25) > 1e-12 {
		t.Errorf("mIoU of the stored label = %v, want 0.25", m.MIoU)
	}
}

// writeLabels makes labels from the ground truth with some noise, and
// CAMs, for every record but the first (missing label); the second gets
// an unreadable label.
func writeLabels(t *testing.T, st *storage.Store, ds *dataset.Dataset, out string) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	for i, rec := range ds.Records {
		if i == 0 {
			continue
		}
		uri := filepath.Join(out, rec.ID+".png")
		if i == 1 {
			st.WriteFile(ctx, uri, []byte("broken"))
			continue
		}
		raw, err := os.ReadFile(rec.GT)
		if err != nil {
			continue // the record without ground truth
		}
		gt, _ := imagefile.DecodeLabel(raw, 0)
		cam := maps.New(gt.H, gt.W, len(ds.Classes))
		for p, v := range gt.Pix {
			if r.IntN(10) == 0 {
				gt.Pix[p] = 0
			}
			if r.IntN(50) == 0 {
				gt.Pix[p] = imagefile.Ignore
			}
			if v != 0 && v != imagefile.Ignore {
				cam.Pix[p*cam.C+int(v)-1] = 0.1 + 0.8*r.Float32()
			}
		}
		png, _ := imagefile.EncodeLabel(gt)
		st.WriteFile(ctx, uri, png)
		st.WriteFile(ctx, transforms.CAMURI(out, rec.ID), transforms.EncodeMap(cam))
	}
}

func TestPipelineAgreesWithDirect(t *testing.T) {
	st := storage.New()
	defer st.Close()
	ctx := context.Background()
	root, out, report := t.TempDir(), t.TempDir(), t.TempDir()
	if _, err := synth.Write(ctx, st, root, synth.Options{Images: 24, Size: 48, Classes: 3, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	ds, _ := dataset.Load(ctx, st, root, "train")
	// One record with a label but without ground truth.
	writeLabels(t, st, ds, out)
	noGT := ds.Records[len(ds.Records)-1]
	os.Remove(noGT.GT)

	e := config.Default().Eval
	e.Labels, e.Report = out, report
	d := config.Default().Dataset
	d.Root = root
	m, err := Run(ctx, Options{Dataset: d, Eval: e})
	if err != nil {
		t.Fatal(err)
	}
	src, info, err := dataset.OpenSource(ctx, st, root, "train", "")
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Direct(ctx, st, src, out, 4, Thresholds(e))
	if err != nil {
		t.Fatal(err)
	}
	direct := Summarize(sum, info.Classes, Thresholds(e))
	if !reflect.DeepEqual(m.Confusion, direct.Confusion) || m.MIoU != direct.MIoU || !reflect.DeepEqual(m.Sweep, direct.Sweep) ||
		!reflect.DeepEqual(m.Worst, direct.Worst) || m.IgnoredPixels != direct.IgnoredPixels || !reflect.DeepEqual(m.Samples, direct.Samples) {
		t.Errorf("pipeline and direct computation differ:\n%+v\n%+v", m, direct)
	}
	if len(m.MissingLabels) != 1 || m.MissingLabels[0] != ds.Records[0].ID || len(m.MissingGT) != 1 || m.MissingGT[0] != noGT.ID ||
		m.MissingLabelCount != 1 || m.MissingGTCount != 1 || m.Listed != len(ds.Records) {
		t.Errorf("missing labels %v, missing GT %v", m.MissingLabels, m.MissingGT)
	}
	if len(m.Errors) != 1 || m.Errors[0].ID != ds.Records[1].ID {
		t.Errorf("errors %+v, want the broken label", m.Errors)
	}
	if m.Scored != int64(len(ds.Records)-3) || m.IgnoredPixels == 0 || m.Best == nil || m.SweepImages != m.Scored {
		t.Errorf("scored %d ignored %d best %+v sweep images %d", m.Scored, m.IgnoredPixels, m.Best, m.SweepImages)
	}
	var onDisk Metrics
	raw, err := os.ReadFile(filepath.Join(report, "metrics.json"))
	if err != nil || json.Unmarshal(raw, &onDisk) != nil || onDisk.MIoU != m.MIoU {
		t.Errorf("metrics.json: %v", err)
	}
}
