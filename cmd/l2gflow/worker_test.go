package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/l2gflow/l2gflow/io/synth"
)

// TestProcessEnvironment labels a small set on prism with its SDK workers
// started as separate processes from this binary (prism's PROCESS
// environment, through the boot step), as Dataflow runs its workers: DoFns
// are serialised, registered and set up in another process, and the
// model is loaded there. The labels must be those of the default
// (loopback) run, byte for byte.
func TestProcessEnvironment(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "data")
	writeSynth(t, root, synth.Options{Images: 12, Size: 48, Classes: 3, Seed: 6, NoSaliencyFraction: 0.3})
	modelPath := filepath.Join(dir, "m.l2g")
	if code, out := cli(t, "train", "--data", root, "--split", "train", "--out", modelPath, "--method", "cam",
		"--steps", "3", "--image-size", "48", "--view-size", "32"); code != 0 {
		t.Fatalf("train: exit %d\n%s", code, out)
	}
	config, _ := json.Marshal(map[string]string{"command": self})
	outs := map[string]string{"loopback": filepath.Join(dir, "loopback"), "process": filepath.Join(dir, "process")}
	for mode, out := range outs {
		args := []string{"label", "--model", modelPath, "--data", root, "--split", "train", "--out", out, "--background", "saliency"}
		if mode == "process" {
			args = append(args, "--environment_type", "PROCESS", "--environment_config", string(config))
		}
		code, log := cli(t, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s", mode, code, log)
		}
		if !strings.Contains(log, "labels written") {
			t.Errorf("%s: %s", mode, log)
		}
	}
	a, b := pngLabels(t, outs["loopback"]), pngLabels(t, outs["process"])
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("%d labels from loopback workers, %d from worker processes", len(a), len(b))
	}
	for id, data := range a {
		if !bytes.Equal(data, b[id]) {
			t.Errorf("%s: the worker processes' label differs", id)
		}
	}
	if _, err := os.Stat(filepath.Join(outs["process"], "_run.json")); err != nil {
		t.Errorf("the job's run record: %v", err)
	}
}
