package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/l2gflow/l2gflow/io/artifact"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/synth"
	"github.com/l2gflow/l2gflow/pipelines/pipetest"
)

// childEnv makes the test binary run the l2gflow command line given in it
// (arguments separated by newlines) instead of the tests: the crash tests
// start it as a child process and kill it.
const childEnv = "L2GFLOW_TEST_CHILD_ARGS"

// childDirectEnv makes a child run its command without runProcess (its
// own temporary directory), as a control.
const childDirectEnv = "L2GFLOW_TEST_CHILD_DIRECT"

func TestMain(m *testing.M) {
	// Started by prism as a worker process (TestProcessEnvironment): this
	// test binary holds the same registrations as l2gflow.
	if code, ok := runAsWorker(os.Args[1:]); ok {
		os.Exit(code)
	}
	if args := os.Getenv(childEnv); args != "" {
		if os.Getenv(childDirectEnv) != "" {
			os.Exit(runWithSignals(strings.Split(args, "\n")))
		}
		os.Exit(runProcess(strings.Split(args, "\n")))
	}
	os.Exit(pipetest.WithPrivateTempDir(m.Run))
}

// child is a running l2gflow process.
type child struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

// startChild starts l2gflow with args as a separate process.
func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// A SIGKILLed child cannot remove its private temporary directory
	// (runProcess); the test's own directory takes it.
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir(), childEnv+"="+strings.Join(args, "\n"))
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, out: out, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(c.exited) }()
	return c
}

// killWhen SIGKILLs the child as soon as cond holds (polled every
// millisecond); it reports false if the child ended first.
func (c *child) killWhen(t *testing.T, cond func() bool) bool {
	t.Helper()
	deadline := time.After(3 * time.Minute)
	for {
		select {
		case <-c.exited:
			return false
		case <-deadline:
			c.cmd.Process.Kill()
			t.Fatalf("the kill condition never held; output:\n%s", c.out.String())
		case <-time.After(time.Millisecond):
		}
		if cond() {
			c.cmd.Process.Signal(syscall.SIGKILL)
			<-c.exited
			return true
		}
	}
}

// wait waits for the child and returns its exit code.
func (c *child) wait() int {
	<-c.exited
	return c.cmd.ProcessState.ExitCode()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// watchLabels checks, until stop is closed, that every label file that
// appears at a final path is a complete PNG label. It returns the number
// of files checked and the first incomplete one seen.
func watchLabels(dir string, stop <-chan struct{}) func() (int, string) {
	var mu sync.Mutex
	checked := map[string]bool{}
	bad := ""
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			files, _ := filepath.Glob(filepath.Join(dir, "*.png"))
			for _, f := range files {
				mu.Lock()
				seen := checked[f]
				mu.Unlock()
				if seen {
					continue
				}
				data, err := os.ReadFile(f)
				if err != nil {
					continue // replaced between the listing and the read
				}
				if _, err := imagefile.DecodeLabel(data, 0); err != nil {
					mu.Lock()
					if bad == "" {
						bad = fmt.Sprintf("%s (%d bytes): %v", f, len(data), err)
					}
					mu.Unlock()
				}
				mu.Lock()
				checked[f] = true
				mu.Unlock()
			}
			time.Sleep(500 * time.Microsecond)
		}
	}()
	return func() (int, string) {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return len(checked), bad
	}
}

func countPNG(dir string) int {
	files, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	return len(files)
}

// TestLabelSurvivesSIGKILL kills `l2gflow label` at several points (before
// any label, during inference and fusion of a chunk, in the middle of its
// writes), re-runs it each time, and checks that the final labels are
// byte-identical to an uninterrupted run and that no partial file was
// ever visible at a final path.
func TestLabelSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "data")
	writeSynth(t, root, synth.Options{Images: 300, Size: 48, Classes: 3, Seed: 8, NoSaliencyFraction: 0.2})
	modelPath := filepath.Join(dir, "m.l2g")
	if code, out := cli(t, "train", "--data", root, "--method", "cam", "--steps", "3", "--image-size", "48", "--view-size", "32",
		"--views", "4", "--batch-size", "4", "--checkpoint-every", "0", "--out", modelPath); code != 0 {
		t.Fatalf("train: exit %d\n%s", code, out)
	}
	label := func(out string) []string {
		return []string{"label", "--data", root, "--model", modelPath, "--out", out, "--batch-size", "4"}
	}
	ref := filepath.Join(dir, "ref")
	if code, out := cli(t, label(ref)...); code != 0 {
		t.Fatalf("reference run: exit %d\n%s", code, out)
	}
	want := pngLabels(t, ref)

	out := filepath.Join(dir, "crash")
	stop := make(chan struct{})
	result := watchLabels(out, stop)
	// Kill points: as soon as the job has started (model loaded, no label
	// yet), then at growing numbers of labels on disk, each reached by a
	// re-run that skips what is there.
	points := []struct {
		name string
		cond func() bool
	}{
		{"while the first job runs", func() bool { return true }},
		{"after 20 labels", func() bool { return countPNG(out) >= 20 }},
		{"after 100 labels", func() bool { return countPNG(out) >= 100 }},
		{"after 170 labels", func() bool { return countPNG(out) >= 170 }},
	}
	for i, p := range points {
		c := startChild(t, label(out)...)
		if i == 0 {
			// Let it load the model and start the first job.
			time.Sleep(300 * time.Millisecond)
		}
		before := countPNG(out)
		if !c.killWhen(t, p.cond) {
			t.Logf("%s: the run ended before the kill (%d labels)", p.name, countPNG(out))
			continue
		}
		t.Logf("killed %s: %d labels on disk (had %d)", p.name, countPNG(out), before)
	}
	c := startChild(t, label(out)...)
	if code := c.wait(); code != 0 {
		t.Fatalf("final re-run: exit %d\n%s", code, c.out.String())
	}
	close(stop)
	checked, bad := result()
	if bad != "" {
		t.Errorf("a partial label was visible at its final path: %s", bad)
	}
	if temps, _ := filepath.Glob(filepath.Join(out, ".*.tmp-*")); len(temps) > 0 {
		t.Errorf("temporary files left after the final run: %v", temps)
	}
	got := pngLabels(t, out)
	if len(got) != len(want) {
		t.Fatalf("%d labels after the crashes, %d in the uninterrupted run", len(got), len(want))
	}
	for id, b := range want {
		if !bytes.Equal(got[id], b) {
			t.Errorf("%s differs from the uninterrupted run", id)
		}
	}
	t.Logf("%d label files checked while they appeared; output of the last run:\n%s", checked, c.out.String())
}

// TestTrainResumesAfterSIGKILL kills `l2gflow train` after it has written
// checkpoints, resumes it, and checks it continued from the last complete
// checkpoint and ended with the weights of an uninterrupted run.
func TestTrainResumesAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "data")
	writeSynth(t, root, synth.Options{Images: 40, Size: 48, Classes: 3, Seed: 9})
	train := func(out string, extra ...string) []string {
		return append([]string{"train", "--data", root, "--method", "cam", "--steps", "60", "--image-size", "48", "--view-size", "32",
			"--views", "4", "--batch-size", "4", "--checkpoint-every", "5", "--out", out}, extra...)
	}
	ref := filepath.Join(dir, "ref.l2g")
	if code, out := cli(t, train(ref)...); code != 0 {
		t.Fatalf("uninterrupted run: exit %d\n%s", code, out)
	}
	out := filepath.Join(dir, "m.l2g")
	ckpt := out + ".ckpt"
	c := startChild(t, train(out)...)
	var first time.Time
	killed := c.killWhen(t, func() bool {
		fi, err := os.Stat(ckpt)
		if err != nil {
			return false
		}
		if first.IsZero() {
			first = fi.ModTime()
		}
		return fi.ModTime().After(first) // a second checkpoint was written
	})
	if !killed {
		t.Fatalf("training ended before the kill:\n%s", c.out.String())
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a model artifact exists after the kill")
	}
	c = startChild(t, train(out, "--resume")...)
	if code := c.wait(); code != 0 {
		t.Fatalf("resume: exit %d\n%s", code, c.out.String())
	}
	m := regexp.MustCompile(`resuming from \S+ at step (\d+)`).FindStringSubmatch(c.out.String())
	if m == nil {
		t.Fatalf("the resumed run does not say where it resumed:\n%s", c.out.String())
	}
	step, _ := strconv.Atoi(m[1])
	if step < 10 || step%5 != 0 {
		t.Errorf("resumed at step %d, want a checkpoint step >= 10", step)
	}
	a, b := readWeights(t, ref), readWeights(t, out)
	for name, va := range a {
		vb := b[name]
		for i := range va {
			if d := math.Abs(float64(va[i] - vb[i])); d > 1e-4*(1+math.Abs(float64(va[i]))) {
				t.Fatalf("%s[%d]: %g after kill and resume, %g uninterrupted", name, i, vb[i], va[i])
			}
		}
	}
}

func readWeights(t *testing.T, path string) map[string][]float32 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, ts, err := artifact.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for _, x := range ts {
		out[x.Name] = x.Data
	}
	return out
}
