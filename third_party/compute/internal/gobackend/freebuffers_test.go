// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package gobackend

import (
	"runtime"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
)

// TestFreeBuffers: buffers given back are reused for the same size, the
// byte limit holds, the size asked for least recently gives way first, and
// a disabled cache keeps nothing.
func TestFreeBuffers(t *testing.T) {
	buf := func(n int) *Buffer { return &Buffer{RawBytes: make([]byte, n)} }
	tests := []struct {
		name  string
		limit int
		run   func(t *testing.T, f *FreeBuffers)
	}{
		{"reuse of the same size", 1 << 10, func(t *testing.T, f *FreeBuffers) {
			if f.get(64) != nil {
				t.Fatal("empty cache returned a buffer")
			}
			b := buf(64)
			if !f.put(b) {
				t.Fatal("put under the limit refused")
			}
			if got := f.get(128); got != nil {
				t.Fatal("a buffer of another size was returned")
			}
			if got := f.get(64); got != b {
				t.Fatalf("get(64) = %p, want the buffer put (%p)", got, b)
			}
			if f.Bytes() != 0 {
				t.Fatalf("Bytes() = %d after taking the only buffer", f.Bytes())
			}
		}},
		{"limit holds, least recently used size evicted", 256, func(t *testing.T, f *FreeBuffers) {
			old, recent := buf(100), buf(100)
			f.put(old)
			f.put(buf(50))
			f.get(50) // size 50 used after size 100
			f.put(buf(50))
			f.put(recent) // 100+50+100 = 250: fits
			if f.Bytes() != 250 {
				t.Fatalf("Bytes() = %d, want 250", f.Bytes())
			}
			f.get(100) // takes recent; size 100 is now the most recently used
			f.put(buf(60))
			f.put(buf(60)) // 100+50+60+60 > 256: size 50, used longest ago, goes
			if f.Bytes() != 220 {
				t.Fatalf("Bytes() = %d, want 220", f.Bytes())
			}
			if f.get(50) != nil {
				t.Fatal("the least recently used size was not evicted")
			}
			if f.get(100) != old {
				t.Fatal("a more recently used size was evicted")
			}
		}},
		{"larger than the limit", 100, func(t *testing.T, f *FreeBuffers) {
			if f.put(buf(101)) {
				t.Fatal("a buffer above the limit was kept")
			}
		}},
		{"only its own size in the cache and no room", 100, func(t *testing.T, f *FreeBuffers) {
			f.put(buf(60))
			if f.put(buf(60)) {
				t.Fatal("kept beyond the limit")
			}
			if f.Bytes() != 60 {
				t.Fatalf("Bytes() = %d, want 60", f.Bytes())
			}
		}},
		{"disabled", -1, func(t *testing.T, f *FreeBuffers) {
			if f.put(buf(8)) || f.get(8) != nil {
				t.Fatal("a disabled cache kept a buffer")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, &FreeBuffers{Limit: tc.limit})
		})
	}
}

// TestFinalizeKeepsStorage: a finalized buffer's storage serves the next
// buffer of its size, through a new handle, so that the finalized handle
// stays finalized; storage shared with a clone is never reused.
func TestFinalizeKeepsStorage(t *testing.T) {
	b := newDefaultBackend()
	shape := shapes.Make(dtypes.Float32, 1000)
	first, err := b.GetBuffer(shape)
	if err != nil {
		t.Fatal(err)
	}
	storage := &first.RawBytes[0]
	if err := first.Finalize(); err != nil {
		t.Fatal(err)
	}
	if err := first.Finalize(); err == nil {
		t.Fatal("a second Finalize of the same handle succeeded")
	}
	second, err := b.GetBuffer(shape)
	if err != nil {
		t.Fatal(err)
	}
	if &second.RawBytes[0] != storage {
		t.Fatal("the finalized storage was not reused")
	}
	if second == first {
		t.Fatal("the finalized handle was handed out again")
	}
	if err := first.Finalize(); err == nil {
		t.Fatal("Finalize of a stale handle succeeded after its storage was reused")
	}

	clone := second.shallowClone()
	if err := clone.Finalize(); err != nil {
		t.Fatal(err)
	}
	third, err := b.GetBuffer(shape)
	if err != nil {
		t.Fatal(err)
	}
	if &third.RawBytes[0] == storage {
		t.Fatal("storage shared with a live buffer was reused")
	}
	runtime.KeepAlive(second)
}

// TestFreeBuffersConfig: the free_buffers_mb option sets the limit, a
// negative value disables the cache and a non-number is an error.
func TestFreeBuffersConfig(t *testing.T) {
	for _, tc := range []struct {
		config  string
		want    int
		wantErr bool
	}{
		{"", 0, false},
		{"free_buffers_mb=64", 64 << 20, false},
		{"free_buffers_mb=-1", -1, false},
		{"free_buffers_mb=lots", 0, true},
	} {
		be, err := New(tc.config)
		if (err != nil) != tc.wantErr {
			t.Fatalf("New(%q) error %v, want error %v", tc.config, err, tc.wantErr)
		}
		if err != nil {
			continue
		}
		if got := be.(*Backend).FreeBuffers.Limit; got != tc.want {
			t.Errorf("New(%q): limit %d, want %d", tc.config, got, tc.want)
		}
	}
}
