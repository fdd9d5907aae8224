// Command l2gflow turns image-level tags into pixel-level pseudo labels
// with L2G: synth makes a benchmark, train trains the classifiers, label
// runs the Beam labeling pipeline, eval scores labels, demo runs it all.
//
// Exit status: 0 on success; 2 on usage, configuration and input-list
// errors (a bad line of a tag list or manifest, a missing list, a label
// folder without labels); 1 on failure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	beamlog "github.com/apache/beam/sdks/v2/go/pkg/beam/log"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/pipelines/eval"
)

// Version is the l2gflow release.
const Version = "0.1.0-dev"

// command is one subcommand. bind registers its flags, writing straight
// into the configuration that the file (if any) already filled, so that
// flags override file values and file values override defaults.
type command struct {
	name     string
	summary  string
	usage    string
	sections config.Section
	// beamFlags adds Beam's own flags (--runner, --project, ...) to the
	// command's flags.
	beamFlags bool
	bind      func(fs *flag.FlagSet, cfg *config.Config)
	run       func(ctx context.Context, env *cmdEnv) error
}

// cmdEnv is what a running command gets.
type cmdEnv struct {
	cfg    *config.Config
	args   []string // positional arguments left after the flags
	stdout io.Writer
	stderr io.Writer
}

// usageError marks errors that should exit with status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func commands() []*command {
	return []*command{synthCommand(), trainCommand(), labelCommand(), evalCommand(), demoCommand(), studyCommand(), benchCommand(), versionCommand()}
}

func main() {
	if exitCode, ok := runAsWorker(os.Args[1:]); ok {
		os.Exit(exitCode)
	}
	os.Exit(runProcess(withDefaultArgs(os.Args[1:], os.Getenv(defaultArgsEnv))))
}

// runProcess runs a command line as the l2gflow process: with its own
// temporary directory, removed at exit. Beam's runner leaves a file in the
// temporary directory on every local job it runs (an empty placeholder
// for the worker binary, runnerlib.Execute in loopback mode) and never
// removes it; scheduled runs would pile them up in /tmp. Pointing TMPDIR
// at a directory of this process, before anything else runs, collects
// those and any other temporary file of the run, including those of
// worker processes it starts.
func runProcess(args []string) int {
	dir, err := os.MkdirTemp("", "l2gflow-")
	if err != nil {
		return runWithSignals(args) // the system's temporary directory then
	}
	defer os.RemoveAll(dir)
	os.Setenv("TMPDIR", dir)
	return runWithSignals(args)
}

// runWithSignals runs a command line on the process's output, cancelled
// by Ctrl-C (SIGINT) or SIGTERM, and returns the exit status.
func runWithSignals(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, os.Stdout, os.Stderr)
}

// defaultArgsEnv names arguments put before a command line that starts
// with a flag: a Dataflow Flex Template launcher runs the binary with
// --name=value parameters only, and its image sets the command here
// (flex/Dockerfile: "label --runner=dataflow --async").
const defaultArgsEnv = "L2GFLOW_DEFAULT_ARGS"

func withDefaultArgs(args []string, defaults string) []string {
	if defaults == "" || (len(args) > 0 && !strings.HasPrefix(args[0], "-")) {
		return args
	}
	return append(strings.Fields(defaults), args...)
}

func topUsage(w io.Writer) {
	fmt.Fprintf(w, "l2gflow %s: pseudo segmentation labels from image tags (L2G)\n\nUsage: l2gflow <command> [flags]\n\nCommands:\n", Version)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'l2gflow <command> --help' for a command's flags. Every command takes\n--config FILE (YAML; see config/example.yaml); flags override the file.\n")
}

// run executes one command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// Nothing l2gflow prints may show credentials (signed URLs, user
	// info, tokens) that reached it in a path or an error.
	rout, rerr := newRedactingWriter(stdout), newRedactingWriter(stderr)
	defer rout.Flush()
	defer rerr.Flush()
	stdout, stderr = rout, rerr
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		topUsage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	var cmd *command
	for _, c := range commands() {
		if c.name == args[0] {
			cmd = c
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "l2gflow: unknown command %q\n\n", args[0])
		topUsage(stderr)
		return 2
	}
	// Beam keeps its options in process-wide flags, and runners change
	// them (prism sets environment_type): put them back afterwards, so
	// that a command leaves the next one in this process as it found it.
	saved := map[string]string{}
	flag.VisitAll(func(f *flag.Flag) { saved[f.Name] = f.Value.String() })
	defer flag.VisitAll(func(f *flag.Flag) {
		if v := saved[f.Name]; f.Value.String() != v {
			f.Value.Set(v)
		}
	})
	// Commands point the default logger at their output, and a prism job's
	// in-process worker points Beam's logger at its (then closed) log
	// stream: restore both.
	defer slog.SetDefault(slog.Default())
	defer beamlog.SetLogger(&beamlog.Structural{})
	err := runCommand(ctx, cmd, args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(interruptedError)):
		fmt.Fprintf(stderr, "l2gflow %s: %v\n", cmd.name, err)
		return 130
	case errors.As(err, new(usageError)), dataset.IsInputError(err), errors.Is(err, eval.ErrNoLabels):
		fmt.Fprintf(stderr, "l2gflow %s: %v\n", cmd.name, err)
		return 2
	default:
		fmt.Fprintf(stderr, "l2gflow %s: %v\n", cmd.name, err)
		return 1
	}
}

// printFlags prints the defaults of the flags of fs that keep() accepts.
func printFlags(w io.Writer, fs *flag.FlagSet, keep func(string) bool) {
	part := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	part.SetOutput(w)
	fs.VisitAll(func(f *flag.Flag) {
		if keep(f.Name) {
			part.Var(f.Value, f.Name, f.Usage)
		}
	})
	part.PrintDefaults()
}

// configPath finds --config/-config in args without parsing the rest, so
// that the file can be loaded before the flags that override it.
func configPath(args []string) string {
	for i, a := range args {
		if a == "--" {
			break
		}
		for _, p := range []string{"--config", "-config"} {
			if a == p && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, p+"="); ok {
				return v
			}
		}
	}
	return ""
}

func runCommand(ctx context.Context, cmd *command, args []string, stdout, stderr io.Writer) error {
	path := configPath(args)
	cfg, err := config.Load(path)
	if err != nil {
		return usageError{err}
	}
	fs := flag.NewFlagSet("l2gflow "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("config", path, "YAML configuration `file`; flags override its values")
	if cmd.bind != nil {
		cmd.bind(fs, &cfg)
	}
	own := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { own[f.Name] = true })
	if cmd.beamFlags {
		// Beam registers its flags on the global flag set; share their
		// values so that Beam sees what the user gave.
		flag.CommandLine.VisitAll(func(f *flag.Flag) {
			if fs.Lookup(f.Name) == nil {
				fs.Var(f.Value, f.Name, f.Usage)
			}
		})
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: l2gflow %s %s\n\n%s\n\nFlags:\n", cmd.name, cmd.usage, cmd.summary)
		printFlags(stderr, fs, func(name string) bool { return own[name] })
		if cmd.beamFlags {
			fmt.Fprintf(stderr, "\nBeam pipeline options (--runner, and Dataflow's --project, --region, ...):\n")
			printFlags(stderr, fs, func(name string) bool { return !own[name] })
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if err := cfg.Validate(cmd.sections); err != nil {
		where := "configuration"
		if path != "" {
			where = path
		}
		return usagef("invalid %s:\n  %s", where, strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	return cmd.run(ctx, &cmdEnv{cfg: &cfg, args: fs.Args(), stdout: stdout, stderr: stderr})
}

func versionCommand() *command {
	return &command{
		name:    "version",
		summary: "print the l2gflow version and the commit it was built from",
		run: func(ctx context.Context, env *cmdEnv) error {
			fmt.Fprintf(env.stdout, "l2gflow %s (commit %s, %s)\n", Version, buildCommit(), runtime.Version())
			return nil
		},
	}
}

// commit is the source commit, set by the Makefile's build
// (-ldflags "-X main.commit=..."); a "-dirty" suffix marks uncommitted
// changes.
var commit string

// buildCommit is the commit the binary was built from: the linker's
// value, else the VCS stamp of a plain "go build", else "unknown".
func buildCommit() string {
	if commit != "" {
		return commit
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if rev != "" {
			return rev[:min(12, len(rev))] + dirty
		}
	}
	return "unknown"
}

// producer names this build in the records it writes (model manifests,
// run records): the version and the commit.
func producer() string { return "l2gflow " + Version + " (" + buildCommit() + ")" }
