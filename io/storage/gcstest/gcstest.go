// Package gcstest starts the in-process GCS emulator (fake-gcs-server) for
// tests and points the Google storage clients at it, so tests of gs:// paths
// need no credentials and no network.
package gcstest

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
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
		srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: b})
	}
	t.Setenv("STORAGE_EMULATOR_HOST", srv.URL())
	t.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	return srv
}

// Faults configures FaultyProxy.
type Faults struct {
	// FirstUnavailable answers the first this many requests with 503.
	FirstUnavailable int
	// CutEvery cuts the connection of every n-th request after those
	// (without a response); 0 never.
	CutEvery int
	// Unavailable, when set, answers 503 to every request it returns true
	// for (a fault that outlasts any retry budget while it lasts).
	Unavailable func(r *http.Request) bool
}

// FaultyProxy puts a fault-injecting reverse proxy in front of the
// emulator and points STORAGE_EMULATOR_HOST at it. It returns a function
// reporting how many requests were answered 503 and how many were cut.
func FaultyProxy(t testing.TB, srv *fakestorage.Server, f Faults) func() (unavailable, cut int64) {
	t.Helper()
	target, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	var n, unavailable, cut atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		switch {
		case f.Unavailable != nil && f.Unavailable(r):
			unavailable.Add(1)
			io.Copy(io.Discard, r.Body)
			http.Error(w, "injected fault", http.StatusServiceUnavailable)
			return
		case i <= int64(f.FirstUnavailable):
			unavailable.Add(1)
			io.Copy(io.Discard, r.Body)
			http.Error(w, "injected fault", http.StatusServiceUnavailable)
			return
		case f.CutEvery > 0 && (i-int64(f.FirstUnavailable))%int64(f.CutEvery) == 0:
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					cut.Add(1)
					conn.Close()
					return
				}
			}
		}
		// The emulator builds object URLs from the Host header.
		r.Host = target.Host
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	t.Setenv("STORAGE_EMULATOR_HOST", proxy.URL)
	return func() (int64, int64) { return unavailable.Load(), cut.Load() }
}
