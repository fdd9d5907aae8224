package model

import (
	"fmt"

	"github.com/gomlx/compute"
	_ "github.com/gomlx/compute/gobackend" // the pure-Go backend
)

// DefaultBackend is the GoMLX backend configuration used unless told
// otherwise: the pure-Go backend on every core.
const DefaultBackend = "go:parallelism=-1"

// NewBackend opens a GoMLX backend from a configuration string such as
// "go:parallelism=-1". Other backends (e.g. XLA with a GPU plugin) work
// when the binary is built with them.
func NewBackend(config string) (compute.Backend, error) {
	if config == "" {
		config = DefaultBackend
	}
	b, err := compute.NewWithConfig(config)
	if err != nil {
		return nil, fmt.Errorf("GoMLX backend %q: %w", config, err)
	}
	return b, nil
}
