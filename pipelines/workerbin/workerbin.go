// Package workerbin chooses the binary a Beam job's workers run. Beam's Go
// SDK (2.77) never takes the running program as the workers' binary: unless
// --worker_binary is given, it cross-compiles the program from its source,
// which needs a Go toolchain and the source tree. A Dataflow Flex Template
// launcher image, a scheduled job on a plain VM and a release binary have
// neither, so l2gflow names itself as the worker binary whenever it can
// serve as one.
package workerbin

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/options/jobopts"
)

// ErrWrongArch is returned (wrapped) when the workers need a binary of
// another architecture than the running one and none was given.
var ErrWrongArch = errors.New("the workers need a binary of another architecture")

// Choice is what Use decided.
type Choice struct {
	// Binary is the worker binary the job stages ("" when the runner
	// runs the stages in this process).
	Binary string
	// Self is set when Binary is the running executable.
	Self bool
}

// workersNeedBinary reports whether a runner's workers run a binary of
// their own: always on Dataflow; on portable runners (prism, universal)
// unless their environment is loopback; never on the direct runner.
func workersNeedBinary(runner string) bool {
	switch strings.ToLower(runner) {
	case "dataflow":
		return true
	case "direct", "":
		return false
	}
	env := strings.ToLower(*jobopts.EnvironmentType)
	return env != "" && env != "loopback"
}

// WorkerArch is the architecture of a runner's workers: arm64 for
// Dataflow's Tau T2A machine types, amd64 for other Dataflow machines, and
// this machine's for local runners.
func WorkerArch(runner, machineType string) string {
	if strings.ToLower(runner) != "dataflow" {
		return runtime.GOARCH
	}
	if strings.HasPrefix(strings.ToLower(machineType), "t2a") {
		return "arm64"
	}
	return "amd64"
}

// Use sets Beam's --worker_binary to the running executable when the
// runner's workers run a binary, none was given, and this executable can
// be it (a linux build of the workers' architecture). It returns what the
// job will stage and a function that puts the flag back. When the workers
// need another architecture it fails, naming the make target that builds
// one; on other systems (a developer's Mac) it leaves Beam to
// cross-compile, as Beam does by default.
func Use(runner string) (Choice, func(), error) {
	restore := func() {}
	if !workersNeedBinary(runner) {
		return Choice{}, restore, nil
	}
	f := flag.Lookup("worker_binary")
	if f == nil {
		return Choice{}, restore, errors.New("the Beam flag --worker_binary is not registered")
	}
	if given := f.Value.String(); given != "" {
		return Choice{Binary: given}, restore, nil
	}
	machine := ""
	if m := flag.Lookup("worker_machine_type"); m != nil {
		machine = m.Value.String()
	}
	arch := WorkerArch(runner, machine)
	if runtime.GOOS != "linux" {
		return Choice{}, restore, nil
	}
	if runtime.GOARCH != arch {
		return Choice{}, restore, fmt.Errorf("%w: %s workers are %s and this l2gflow is linux/%s; build the workers' binary with make worker-%s and pass it with --worker_binary",
			ErrWrongArch, machine, arch, runtime.GOARCH, arch)
	}
	self, err := os.Executable()
	if err != nil {
		return Choice{}, restore, fmt.Errorf("find the running executable to stage as the worker binary: %w", err)
	}
	if err := f.Value.Set(self); err != nil {
		return Choice{}, restore, err
	}
	return Choice{Binary: self, Self: true}, func() { f.Value.Set("") }, nil
}
