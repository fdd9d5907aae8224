package model

import (
	"fmt"
	"os"
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

// BackendName is the backend configuration a run uses: cfg, or the
// default when empty.
func BackendName(cfg string) string {
	if cfg == "" {
		return DefaultBackend
	}
	return cfg
}
