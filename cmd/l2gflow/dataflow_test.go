package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/l2gflow/l2gflow/io/storage"
)

// TestDataflowDryRun builds the labeling job for Dataflow offline
// (--dry_run): no network, the bucket is the in-process emulator and the
// metadata server a dead address. The printed job must hold the six
// labeling stages and the options given.
func TestDataflowDryRun(t *testing.T) {
	worker := dataflowFixture(t, "df")
	ctx := context.Background()
	st := storage.New()
	defer st.Close()
	var stdout, stderr bytes.Buffer
	var code int
	// Beam's Dataflow runner logs the job on the process's stderr.
	beamLog := withStderr(t, func() {
		code = run(ctx, []string{"label", "--runner", "dataflow", "--dry_run",
			"--project", "my-project", "--region", "europe-west4",
			"--staging_location", "gs://df/staging", "--temp_location", "gs://df/tmp",
			"--worker_machine_type", "n2-highcpu-8", "--max_num_workers", "17",
			"--worker_binary", worker, "--sdk_container_image", "apache/beam_go_sdk:2.77.0",
			"--model", "gs://df/m.l2g", "--data", "gs://df/data", "--split", "train", "--out", "gs://df/labels",
			"--verbose"}, &stdout, &stderr)
	})
	log := stderr.String() + beamLog
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
