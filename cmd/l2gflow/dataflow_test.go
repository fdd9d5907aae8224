package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/storage/gcstest"
	"github.com/l2gflow/l2gflow/io/synth"
	"github.com/l2gflow/l2gflow/model"
)

// TestDataflowDryRun builds the labeling job for Dataflow offline
// (--dry_run): no network, the bucket is the in-process emulator and the
// metadata server a dead address. The printed job must hold the six
// labeling stages and the options given.
func TestDataflowDryRun(t *testing.T) {
	gcstest.Start(t, "df")
	ctx := context.Background()
	st := storage.New()
	defer st.Close()
	if _, err := synth.Write(ctx, st, "gs://df/data", synth.Options{Images: 12, Size: 64, Classes: 3, Seed: 2}); err != nil {
		t.Fatal(err)
	}
	ds, err := dataset.Load(ctx, st, "gs://df/data", "train")
	if err != nil {
		t.Fatal(err)
	}
	tc := config.Default().Train
	tc.Out, tc.Method, tc.Steps, tc.ImageSize, tc.ViewSize, tc.CheckpointEv = "gs://df/m.l2g", "cam", 1, 64, 48, 0
	if _, err := model.Train(ctx, model.TrainOptions{Config: tc, Data: ds, Store: st}); err != nil {
		t.Fatal(err)
	}
	worker := filepath.Join(t.TempDir(), "worker")
	os.WriteFile(worker, []byte("stand-in worker binary"), 0o755)
	// Beam's flags are process-wide: put them back afterwards.
	for _, name := range []string{"runner", "dry_run", "project", "region", "staging_location", "temp_location",
		"worker_machine_type", "max_num_workers", "worker_binary", "sdk_container_image"} {
		f := flag.CommandLine.Lookup(name)
		if f == nil {
			t.Fatalf("Beam flag --%s is not registered", name)
		}
		old := f.Value.String()
		t.Cleanup(func() { flag.CommandLine.Set(name, old) })
	}
	// Beam's Dataflow runner logs the job on the process's stderr.
	logFile, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = logFile
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"label", "--runner", "dataflow", "--dry_run",
		"--project", "my-project", "--region", "europe-west4",
		"--staging_location", "gs://df/staging", "--temp_location", "gs://df/tmp",
		"--worker_machine_type", "n2-highcpu-8", "--max_num_workers", "17",
		"--worker_binary", worker, "--sdk_container_image", "apache/beam_go_sdk:2.77.0",
		"--model", "gs://df/m.l2g", "--data", "gs://df/data", "--split", "train", "--out", "gs://df/labels",
		"--verbose"}, &stdout, &stderr)
	os.Stderr = saved
	logFile.Close()
	beamLog, _ := os.ReadFile(logFile.Name())
	log := stderr.String() + string(beamLog)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, log)
	}
	for _, want := range []string{"Dry-run", "Load", "CropViews", "Saliency", "InferCAMs", "FuseLabels", "WriteLabels",
		"my-project", "europe-west4", "n2-highcpu-8", "17", "gs://df/tmp", "apache/beam_go_sdk:2.77.0"} {
		if !strings.Contains(log, want) {
			t.Errorf("the dry-run job does not mention %q", want)
		}
	}
	if !strings.Contains(stdout.String(), "dry run: no job was run") || strings.Contains(stdout.String(), "labels written") {
		t.Errorf("a dry run must not claim labels: %q", stdout.String())
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), log)
	}
	// Nothing was labelled.
	if l, _ := st.List(ctx, "gs://df/labels", "*.png"); len(l) != 0 {
		t.Errorf("a dry run wrote labels: %v", l)
	}
}

func TestWorkerMode(t *testing.T) {
	for args, want := range map[string]bool{
		"--worker=true --id=1 --logging_endpoint=x": true,
		"-worker --control_endpoint=y":              true,
		"label --model m":                           false,
		"":                                          false,
		"--help":                                    false,
	} {
		if got := workerMode(strings.Fields(args)); got != want {
			t.Errorf("workerMode(%q) = %v, want %v", args, got, want)
		}
	}
}
