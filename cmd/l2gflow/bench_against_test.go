package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestBenchAgainstPairsTwoBinaries runs `bench --against` with the built
// command against a copy of itself: both sides label in every round, and
// the two write the same labels.
func TestBenchAgainstPairsTwoBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: trains or runs whole jobs (make test-short)")
	}
	dir := t.TempDir()
	bin, other := filepath.Join(dir, "l2gflow"), filepath.Join(dir, "l2gflow-base")
	buildL2gflow(t, bin)
	buildL2gflow(t, other)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "--against", other, "--images", "12", "--size", "48", "--rounds", "2",
		"--out", filepath.Join(dir, "out"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench --against: %v\n%s", err, out.String())
	}
	rows := regexp.MustCompile(`(?m)^(this|other)\s+[12]\s+\d+\s`).FindAllString(out.String(), -1)
	if len(rows) != 4 {
		t.Errorf("%d timed runs, want 2 sides x 2 rounds:\n%s", len(rows), out.String())
	}
	if !regexp.MustCompile(`paired ratio \d+\.\d\dx \(rounds [0-9.]+-[0-9.]+\); labels: [1-9]\d* identical, 0 differ`).MatchString(out.String()) {
		t.Errorf("summary line missing or labels differ:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "bench-against.json")); err != nil {
		t.Error(err)
	}
}

func TestCompareLabelDirs(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	write := func(dir, name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(a, "same.png", "x")
	write(b, "same.png", "x")
	write(a, "changed.png", "x")
	write(b, "changed.png", "y")
	write(a, "missing.png", "x")
	write(b, "extra.png", "x")
	same, differ, err := compareLabelDirs(a, b)
	if err != nil || same != 1 || differ != 2 {
		t.Errorf("same %d, differ %d, err %v; want 1, 2", same, differ, err)
	}
}
