package model

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/gomlx/compute"
	_ "github.com/gomlx/compute/gobackend" // the pure-Go backend
)

// DefaultBackend is the GoMLX backend configuration used unless told
// otherwise: the pure-Go backend on every core (without parallelism=-1
// it keeps to about one core).
const DefaultBackend = "go:parallelism=-1"

// stdoutMu serialises the stdout swap in NewBackend.
var stdoutMu sync.Mutex

// NewBackend opens a GoMLX backend from a configuration string such as
// "go:parallelism=-1". Other backends (e.g. XLA with a GPU plugin) work
// when the binary is built with them.
func NewBackend(config string) (compute.Backend, error) {
	if config == "" {
		config = DefaultBackend
	}
	// compute.NewWithConfig panics on a backend not compiled in.
	name, _, _ := strings.Cut(config, ":")
	if known := compute.List(); !slices.Contains(known, name) {
		slices.Sort(known)
		return nil, fmt.Errorf("GoMLX backend %q: no backend %q in this binary (it has: %s)", config, name, strings.Join(known, ", "))
	}
	var b compute.Backend
	var err error
	if strings.Contains(config, "parallelism=") {
		// The Go backend prints its parallelism setting on stdout, which
		// is the CLI's output: send that line to the void.
		stdoutMu.Lock()
		saved := os.Stdout
		if null, nerr := os.OpenFile(os.DevNull, os.O_WRONLY, 0); nerr == nil {
			os.Stdout = null
			b, err = compute.NewWithConfig(config)
			os.Stdout = saved
			null.Close()
		} else {
			b, err = compute.NewWithConfig(config)
		}
		stdoutMu.Unlock()
	} else {
		b, err = compute.NewWithConfig(config)
	}
	if err != nil {
		return nil, fmt.Errorf("GoMLX backend %q: %w", config, err)
	}
	return b, nil
}

// TrainingFreeBuffersMB is the pure-Go backend's cache of free buffers
// (free_buffers_mb) for training, in megabytes. A training step frees and
// asks again for the same buffers every step, hundreds of megabytes of
// activations and gradients for a ResNet (about 1 GB for ResNet-50 at 224
// px, batch 8); the backend's default cache (256 MB, sized for labeling,
// where buffers of many image shapes would pile up in a larger one) let
// most of them go and allocated them anew, zeroed, every step. The cache
// holds only buffers a step freed, so with the fixed shapes of training it
// stays at the step's working set; this is its ceiling.
const TrainingFreeBuffersMB = 4096

// TrainingBackendConfig returns the backend configuration training uses
// for cfg: the pure-Go backend's with free_buffers_mb raised to
// TrainingFreeBuffersMB unless cfg sets it; other backends' unchanged.
func TrainingBackendConfig(cfg string) string {
	cfg = BackendName(cfg)
	name, opts, _ := strings.Cut(cfg, ":")
	if name != "go" || strings.Contains(opts, "free_buffers_mb=") {
		return cfg
	}
	opt := fmt.Sprintf("free_buffers_mb=%d", TrainingFreeBuffersMB)
	if opts == "" {
		return "go:" + opt
	}
	return cfg + "," + opt
}

// NewTrainingBackend opens the backend for training from cfg
// (TrainingBackendConfig).
func NewTrainingBackend(cfg string) (compute.Backend, error) {
	return NewBackend(TrainingBackendConfig(cfg))
}

// BackendName is the backend configuration a run uses: cfg, or the
// default when empty.
func BackendName(cfg string) string {
	if cfg == "" {
		return DefaultBackend
	}
	return cfg
}
