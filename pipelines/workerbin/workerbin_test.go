package workerbin

import (
	"errors"
	"flag"
	"os"
	"runtime"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/options/jobopts"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/dataflow" // --worker_machine_type
)

func setFlag(t *testing.T, name, value string) {
	t.Helper()
	f := flag.Lookup(name)
	if f == nil {
		t.Fatalf("flag %s not registered", name)
	}
	old := f.Value.String()
	f.Value.Set(value)
	t.Cleanup(func() { f.Value.Set(old) })
}

func TestUse(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the running executable is a worker binary only on linux")
	}
	self, _ := os.Executable()
	tests := []struct {
		name, runner, env, machine, given string
		want                              Choice
		err                               error
	}{
		{name: "prism loopback", runner: "prism", env: "loopback"},
		{name: "direct", runner: "direct"},
		{name: "prism, workers as processes", runner: "prism", env: "PROCESS", want: Choice{Binary: self, Self: true}},
		{name: "dataflow", runner: "dataflow", machine: "n2-highcpu-8", want: Choice{Binary: self, Self: true}},
		{name: "dataflow, binary given", runner: "dataflow", given: "/opt/worker", want: Choice{Binary: "/opt/worker"}},
		{name: "dataflow on arm", runner: "dataflow", machine: "t2a-standard-8", err: ErrWrongArch},
	}
	if runtime.GOARCH == "arm64" {
		tests[len(tests)-1] = struct {
			name, runner, env, machine, given string
			want                              Choice
			err                               error
		}{name: "dataflow on amd64 from arm", runner: "dataflow", machine: "n2-standard-8", err: ErrWrongArch}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setFlag(t, "environment_type", tc.env)
			setFlag(t, "worker_machine_type", tc.machine)
			setFlag(t, "worker_binary", tc.given)
			got, restore, err := Use(tc.runner)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("Use(%s) = %+v, %v; want %+v, %v", tc.runner, got, err, tc.want, tc.err)
			}
			if got.Self && *jobopts.WorkerBinary != self {
				t.Errorf("--worker_binary = %q, want %q", *jobopts.WorkerBinary, self)
			}
			restore()
			if *jobopts.WorkerBinary != tc.given {
				t.Errorf("after restore --worker_binary = %q, want %q", *jobopts.WorkerBinary, tc.given)
			}
		})
	}
}
