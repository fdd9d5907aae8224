package pipetest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWithPrivateTempDirCollectsAndRemovesFiles(t *testing.T) {
	before := os.TempDir()
	var dir string
	code := WithPrivateTempDir(func() int {
		dir = os.TempDir()
		// What Beam's loopback runner does on every job.
		f, err := os.CreateTemp("", "beamloopbackworker-*")
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if filepath.Dir(f.Name()) != dir {
			t.Errorf("temporary file %s not under the private directory %s", f.Name(), dir)
		}
		return 3
	})
	if code != 3 {
		t.Errorf("exit code %d, want run's 3", code)
	}
	if dir == before || !strings.HasPrefix(filepath.Base(dir), "l2gflow-test-") {
		t.Errorf("run saw TMPDIR %q, want a new l2gflow-test-* directory (was %q)", dir, before)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("private directory %s still there after the run (stat: %v)", dir, err)
	}
	if got := os.TempDir(); got != before {
		t.Errorf("TMPDIR after the run %q, want it restored to %q", got, before)
	}
}
