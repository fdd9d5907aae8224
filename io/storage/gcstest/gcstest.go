// Package gcstest starts the in-process GCS emulator (fake-gcs-server) for
// tests and points the Google storage clients at it, so tests of gs:// paths
// need no credentials and no network.
package gcstest

import (
	"io"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"
)

// Start runs an emulator on a loopback port with the given buckets, sets
// STORAGE_EMULATOR_HOST (and a dead metadata host, so nothing looks for
// credentials) for the test, and stops it when the test ends. Clients must
// be created after Start.
func Start(t testing.TB, buckets ...string) *fakestorage.Server {
	t.Helper()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		Scheme:     "http",
		Host:       "127.0.0.1",
		PublicHost: "127.0.0.1",
		Writer:     io.Discard,
	})
	if err != nil {
		t.Fatalf("start GCS emulator: %v", err)
	}
	t.Cleanup(srv.Stop)
	for _, b := range buckets {
		srv.CreateBucket(b)
	}
	t.Setenv("STORAGE_EMULATOR_HOST", srv.URL())
	t.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	return srv
}
