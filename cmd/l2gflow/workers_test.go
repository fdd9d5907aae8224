package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/l2gflow/l2gflow/io/artifact"
	"github.com/l2gflow/l2gflow/io/synth"
)

// runChild runs l2gflow with args in a separate process (the test binary,
// see TestMain) with env added, and returns its exit code and output.
func runChild(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "TMPDIR="+t.TempDir()), env...)
	cmd.Env = append(cmd.Env, childEnv+"="+strings.Join(args, "\n"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

// TestSameResultsForAnyWorkerCount trains the tiny L2G model for 20 steps
// and labels images with a ResNet-18 model with GOMAXPROCS 1, 2, 3 and 8
// (the backend's workers follow it): the weights and the labels must be
// the same to the bit.
func TestSameResultsForAnyWorkerCount(t *testing.T) {
	if testing.Short() {
		t.Skip("trains four times in processes of their own")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "data")
	writeSynth(t, root, synth.Options{Images: 10, Size: 64, Classes: 3, Seed: 12, NoSaliencyFraction: 0.2})
	r18 := filepath.Join(dir, "r18.l2g")
	if code, out := cli(t, "train", "--data", root, "--backbone", "resnet18", "--output-stride", "16", "--method", "cam",
		"--steps", "2", "--image-size", "64", "--view-size", "48", "--batch-size", "4", "--checkpoint-every", "0", "--out", r18); code != 0 {
		t.Fatalf("train resnet18: exit %d\n%s", code, out)
	}
	weights := map[int]string{}
	labels := map[int]map[string][]byte{}
	counts := []int{1, 2, 3, 8}
	for _, n := range counts {
		env := []string{fmt.Sprintf("GOMAXPROCS=%d", n)}
		tiny := filepath.Join(dir, fmt.Sprintf("tiny-%d.l2g", n))
		if code, out := runChild(t, env, "train", "--data", root, "--method", "l2g", "--steps", "20", "--image-size", "64",
			"--view-size", "48", "--views", "4", "--batch-size", "4", "--checkpoint-every", "0", "--out", tiny); code != 0 {
			t.Fatalf("GOMAXPROCS=%d train: exit %d\n%s", n, code, out)
		}
		raw, err := os.ReadFile(tiny)
		if err != nil {
			t.Fatal(err)
		}
		m, _, err := artifact.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		weights[n] = m.WeightsSHA256
		out := filepath.Join(dir, fmt.Sprintf("labels-%d", n))
		if code, log := runChild(t, env, "label", "--model", r18, "--data", root, "--out", out, "--in-process"); code != 0 {
			t.Fatalf("GOMAXPROCS=%d label: exit %d\n%s", n, code, log)
		}
		labels[n] = pngLabels(t, out)
	}
	for _, n := range counts[1:] {
		if weights[n] != weights[1] {
			t.Errorf("20 training steps: weights sha256 %s with GOMAXPROCS=%d, %s with 1", weights[n][:12], n, weights[1][:12])
		}
		if len(labels[n]) == 0 || len(labels[n]) != len(labels[1]) {
			t.Fatalf("GOMAXPROCS=%d: %d labels, %d with 1", n, len(labels[n]), len(labels[1]))
		}
		for id, b := range labels[1] {
			if !bytes.Equal(labels[n][id], b) {
				t.Errorf("ResNet-18 label of %s differs with GOMAXPROCS=%d", id, n)
			}
		}
	}
}
