package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/apache/beam/sdks/v2/go/container/tools"
	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/util/grpcx"
)

// runAsWorker serves a Beam runner when the process was started as its
// worker (ok true), and returns the exit code.
func runAsWorker(args []string) (code int, ok bool) {
	switch {
	case workerMode(args):
		// Started as the worker harness (by a boot program, e.g. on
		// Dataflow, with --worker and endpoint flags): serve, then exit.
		flag.Parse()
		beam.Init()
		return 0, true
	case bootMode(args):
		if err := boot(context.Background(), args); err != nil {
			fmt.Fprintf(os.Stderr, "l2gflow worker boot: %v\n", err)
			return 1, true
		}
		return 0, true // not reached: boot replaces the process
	}
	return 0, false
}

// workerMode reports whether the process was started as a Beam worker
// harness: no command, and a --worker flag (how a boot program starts
// the worker binary, on Dataflow for example).
func workerMode(args []string) bool {
	return startedWith(args, "worker")
}

// bootMode reports whether the process was started as a runner's
// process environment: no command, and --provision_endpoint (prism's
// PROCESS environment starts its command with --id and
// --provision_endpoint, the contract of Beam's container boot programs).
func bootMode(args []string) bool {
	return startedWith(args, "provision_endpoint")
}

func startedWith(args []string, name string) bool {
	if len(args) == 0 || !strings.HasPrefix(args[0], "-") {
		return false
	}
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// boot does what Beam's Go container boot program does, for a worker
// started as a process environment: it asks the runner's provision
// service for the worker's endpoints and the pipeline options, then
// replaces the process by this same binary in worker mode. (The boot
// program also fetches the worker binary from the runner's artifact
// service; this binary is the worker, so there is nothing to fetch.)
func boot(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("boot", flag.ContinueOnError)
	id := fs.String("id", "", "worker id")
	provision := fs.String("provision_endpoint", "", "provision service endpoint")
	semiPersist := fs.String("semi_persist_dir", os.TempDir(), "scratch directory")
	fs.String("logging_endpoint", "", "ignored: from the provision service")
	fs.String("artifact_endpoint", "", "ignored: from the provision service")
	fs.String("control_endpoint", "", "ignored: from the provision service")
	if err := fs.Parse(args); err != nil {
		return err
	}
	workerID := strings.Trim(*id, `'"`)
	info, err := tools.ProvisionInfo(grpcx.WriteWorkerID(ctx, workerID), *provision)
	if err != nil {
		return fmt.Errorf("provision service %s: %w", *provision, err)
	}
	logging, control := info.GetLoggingEndpoint().GetUrl(), info.GetControlEndpoint().GetUrl()
	if logging == "" || control == "" {
		return fmt.Errorf("provision service %s gave no logging or control endpoint", *provision)
	}
	options, err := tools.ProtoToJSON(info.GetPipelineOptions())
	if err != nil {
		return fmt.Errorf("pipeline options: %w", err)
	}
	f, err := os.CreateTemp(*semiPersist, "l2gflow-pipeline-options-*.json")
	if err != nil {
		return err
	}
	if _, err := f.WriteString(options); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	env := append(os.Environ(), "PIPELINE_OPTIONS_FILE="+f.Name())
	if caps := info.GetRunnerCapabilities(); len(caps) > 0 {
		env = append(env, "RUNNER_CAPABILITIES="+strings.Join(caps, " "))
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	argv := []string{self, "--worker=true", "--id=" + workerID, "--logging_endpoint=" + logging,
		"--control_endpoint=" + control, "--semi_persist_dir=" + *semiPersist}
	return syscall.Exec(self, argv, env)
}
