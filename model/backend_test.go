package model

import (
	"strings"
	"testing"
)

func TestTrainingBackendConfig(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "go:parallelism=-1,free_buffers_mb=4096"},
		{"go:parallelism=-1", "go:parallelism=-1,free_buffers_mb=4096"},
		{"go", "go:free_buffers_mb=4096"},
		{"go:", "go:free_buffers_mb=4096"},
		{"go:parallelism=2,free_buffers_mb=64", "go:parallelism=2,free_buffers_mb=64"}, // the user's choice stays
		{"xla:cpu", "xla:cpu"},                                                         // not the Go backend's option
	} {
		if got := TrainingBackendConfig(tc.in); got != tc.want {
			t.Errorf("TrainingBackendConfig(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// The training configuration is one the Go backend accepts, and a backend
// not compiled in is an error, not a panic.
func TestNewBackend(t *testing.T) {
	b, err := NewTrainingBackend("go:parallelism=1")
	if err != nil {
		t.Fatalf("NewTrainingBackend: %v", err)
	}
	b.Finalize()
	for _, cfg := range []string{"xla:cpu", "nosuch", "go:free_buffers_mb=lots"} {
		if _, err := NewBackend(cfg); err == nil || !strings.Contains(err.Error(), cfg) {
			t.Errorf("NewBackend(%q) = %v, want an error naming it", cfg, err)
		}
	}
}
