package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l2gflow/l2gflow/io/synth"
	"github.com/l2gflow/l2gflow/transforms"
)

// labelFixture writes 240 small images (the train split) and a briefly
// trained CAM model: a label job of seconds, for tests of how it runs.
func labelFixture(t *testing.T) (root, modelPath string) {
	t.Helper()
	dir := t.TempDir()
	root = filepath.Join(dir, "data")
	writeSynth(t, root, synth.Options{Images: 240, Size: 48, Classes: 3, Seed: 5, ValFraction: 0.0001, NoSaliencyFraction: 0.2})
	modelPath = filepath.Join(dir, "m.l2g")
	if code, out := cli(t, "train", "--data", root, "--method", "cam", "--steps", "2", "--image-size", "48", "--view-size", "32",
		"--views", "4", "--batch-size", "4", "--checkpoint-every", "0", "--out", modelPath); code != 0 {
		t.Fatalf("train: exit %d\n%s", code, out)
	}
	return root, modelPath
}

// TestInterruptSaysWhatHappened sends a label run Ctrl-C (SIGINT) once it
// has written some labels: it must exit 130 with one line saying how many
// labels it wrote and that the same command continues, without the
// runner's error lines; and the same command must then label the rest.
func TestInterruptSaysWhatHappened(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	root, modelPath := labelFixture(t)
	out := filepath.Join(t.TempDir(), "out")
	args := []string{"label", "--data", root, "--model", modelPath, "--out", out}
	c := startChild(t, args...)
	for countPNG(out) < 20 {
		select {
		case <-c.exited:
			t.Fatalf("the run ended before it could be interrupted:\n%s", c.out.String())
		case <-time.After(time.Millisecond):
		}
	}
	c.cmd.Process.Signal(syscall.SIGINT)
	code := c.wait()
	log := c.out.String()
	line := regexp.MustCompile(`l2gflow label: interrupted: (\d+) labels written to \S+; run the same command again to label the rest`).FindStringSubmatch(log)
	if code != 130 || line == nil {
		t.Fatalf("exit %d, want 130 and the interrupted line:\n%s", code, log)
	}
	if n, _ := strconv.Atoi(line[1]); n < 1 {
		t.Errorf("interrupted after %s labels", line[1])
	}
	for _, bad := range []string{"level=ERROR", "rpc error", "context canceled"} {
		if strings.Contains(log, bad) {
			t.Errorf("the interrupted run printed %q:\n%s", bad, log)
		}
	}
	if code, log := cli(t, args...); code != 0 || countPNG(out) != 240 {
		t.Fatalf("the same command again: exit %d, %d labels\n%s", code, countPNG(out), log)
	}
}

// TestIndexFlushedAsLabelsAreWritten kills an --incremental run (SIGKILL)
// after it has written some labels: the model's index must hold nearly all
// of them (written every 5 labels here), so that the next --incremental
// run relabels few.
func TestIndexFlushedAsLabelsAreWritten(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	root, modelPath := labelFixture(t)
	out := filepath.Join(t.TempDir(), "out")
	args := []string{"label", "--data", root, "--model", modelPath, "--out", out, "--incremental", "--index-flush-labels", "5"}
	c := startChild(t, args...)
	if !c.killWhen(t, func() bool { return countPNG(out) >= 100 }) {
		t.Fatalf("the run ended before 100 labels:\n%s", c.out.String())
	}
	before := countPNG(out)
	if code, log := cli(t, args...); code != 0 {
		t.Fatalf("incremental re-run: exit %d\n%s", code, log)
	}
	raw, err := os.ReadFile(filepath.Join(out, transforms.RunFile))
	if err != nil {
		t.Fatal(err)
	}
	var rec transforms.RunRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	// The re-run labels the images without a label, and relabels those
	// whose label the killed run had written but not yet indexed.
	relabelled := rec.Counts.LabelsWritten - int64(240-before)
	t.Logf("killed after %d labels; the re-run wrote %d, relabelling %d", before, rec.Counts.LabelsWritten, relabelled)
	if relabelled > 20 {
		t.Errorf("the re-run relabelled %d images the killed run had labelled (index written every 5 labels)", relabelled)
	}
}

// TestNoTemporaryFilesLeft: a label job on prism, run as l2gflow runs
// (runProcess), leaves nothing in the temporary directory; the same job
// without runProcess's directory leaves Beam's placeholder file there,
// which is what the directory is for.
func TestNoTemporaryFilesLeft(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	root, modelPath := labelFixture(t)
	left := func(direct bool) []string {
		tmp := t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp, childEnv+"="+strings.Join([]string{"label", "--model", modelPath,
			"--data", root, "--out", filepath.Join(t.TempDir(), "labels")}, "\n"))
		if direct {
			cmd.Env = append(cmd.Env, childDirectEnv+"=1")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("label: %v\n%s", err, out)
		}
		entries, err := os.ReadDir(tmp)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	if names := left(true); !slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, "beamloopbackworker-") }) {
		t.Fatalf("without runProcess the job left %v: Beam no longer leaves its placeholder, and this test proves nothing", names)
	}
	if names := left(false); len(names) != 0 {
		t.Errorf("the job left %v in the temporary directory", names)
	}
}
