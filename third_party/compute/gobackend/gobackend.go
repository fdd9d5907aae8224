// Package gobackend implements a native Go [compute.Backend]: very portable (including WASM) but not very fast.
//
// It only implements the most popular dtypes and operations.
// But generally, it's easy to add new ops: just open an issue in GoMLX.
//
// This package is simply a thin wrapper around internal/gobackend.
package gobackend

import (
	"sync"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/internal/gobackend"

	// Registers all the ops.
	_ "github.com/gomlx/compute/internal/gobackend/defaultpkgs"
)

// BackendName to be used in GOMLX_BACKEND to specify this backend.
const BackendName = "go"

// GetBackend returns a singleton Go backend, created with the default configuration.
// The backend is only created at the first call of the function.
//
// The singleton is never destroyed.
var GetBackend = sync.OnceValue(func() compute.Backend {
	backend, err := New("")
	if err != nil {
		panic(err)
	}
	return backend
})

// New constructs a new Go Backend.
// There are no configurations, the string is simply ignored.
func New(config string) (compute.Backend, error) {
	return gobackend.New(config)
}

// KernelSet names the family of compute kernels this process runs: "avx512"
// (AVX-512 kernels: the convolutions' tile kernel, Winograd, the AVX-512
// matrix products), "avx2" (AVX2 matrix products; convolutions as packed
// im2col products) or "portable" (Go without architecture-specific
// kernels: other CPUs, builds without GOEXPERIMENT=simd, or both disabled
// with GOMLX_GO_SIMD_AVX512 / GOMLX_GO_SIMD_AVX2 or GODEBUG=cpu.avx512f=off).
// The families round floating-point sums differently, so results agree
// across machines of one family, and within a tolerance across families.
func KernelSet() string {
	return gobackend.KernelSet()
}

// Freeze declares that buf's values stay as they are until it is finalized
// or donated to an execution: its holder will not write them, neither
// through a slice from its Data or NewSharedBuffer nor in any other way.
// Ops may then keep what they derive from it, such as a convolution's
// transformed kernel, and use it without reading buf again on every
// execution, as they must for a buffer that is not frozen. Model weights
// used for inference are the intended use. It reports whether buf is a
// buffer of this backend (others are left as they are).
func Freeze(buf compute.Buffer) bool {
	b, ok := buf.(*gobackend.Buffer)
	if ok {
		b.Freeze()
	}
	return ok
}

// Frozen reports whether buf is a buffer of this backend in a freeze
// (Freeze) that has not ended.
func Frozen(buf compute.Buffer) bool {
	b, ok := buf.(*gobackend.Buffer)
	return ok && b.FrozenEpoch() != 0
}
