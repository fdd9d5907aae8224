// Package pipetest is the TestMain of packages whose tests run Beam
// pipelines.
package pipetest

import (
	"os"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
)

// Main runs a package's tests like ptest.Main (flags parsed, beam.Init
// done) with TMPDIR pointed at a directory of the test process, removed
// when the tests end. Beam's runner leaves an empty placeholder file in
// the temporary directory for every local job it runs (runnerlib.Execute
// in loopback mode) and never removes it; without this every test run
// would leave hundreds of them in /tmp. The l2gflow command does the same
// for its own runs (cmd/l2gflow runProcess).
func Main(m *testing.M) {
	os.Exit(WithPrivateTempDir(func() int { return ptest.MainRet(m) }))
}

// WithPrivateTempDir runs run with TMPDIR set to a new directory, removes
// that directory with all it holds, restores TMPDIR and returns run's
// result. If the directory cannot be made, run uses the system's one.
func WithPrivateTempDir(run func() int) int {
	dir, err := os.MkdirTemp("", "l2gflow-test-")
	if err != nil {
		return run()
	}
	defer os.RemoveAll(dir)
	old, had := os.LookupEnv("TMPDIR")
	os.Setenv("TMPDIR", dir)
	defer func() {
		if had {
			os.Setenv("TMPDIR", old)
		} else {
			os.Unsetenv("TMPDIR")
		}
	}()
	return run()
}
