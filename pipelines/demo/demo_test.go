package demo

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/l2gflow/l2gflow/pipelines/pipetest"
)

func TestMain(m *testing.M) { pipetest.Main(m) }

func TestDemoRunsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: trains or runs whole jobs (make test-short)")
	}
	out := t.TempDir()
	o := Defaults(out)
	o.Synth.Images, o.Synth.Size, o.Synth.Classes = 40, 64, 3
	o.Train.ImageSize, o.Train.ViewSize, o.Train.Epochs = 64, 48, 1
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 2 || res.Rows[0].Method != "l2g" || res.Rows[1].Method != "cam" {
		t.Fatalf("rows %+v", res.Rows)
	}
	for _, r := range res.Rows {
		if math.IsNaN(r.MIoU) || r.MIoU <= 0 || r.Epochs != 1 || r.LabelImgPerS <= 0 || r.TrainSeconds <= 0 ||
			r.Threshold <= 0 || r.ThresholdFrom != "model" {
			t.Errorf("row %+v (want labels written at the model's calibrated threshold)", r)
		}
		if _, err := os.Stat(r.Report); err != nil {
			t.Errorf("report: %v", err)
		}
	}
	table, err := os.ReadFile(filepath.Join(out, "summary.md"))
	if err != nil || !strings.Contains(string(table), "| l2g |") || !strings.Contains(string(table), "| cam |") {
		t.Errorf("summary.md: %v\n%s", err, table)
	}
}
