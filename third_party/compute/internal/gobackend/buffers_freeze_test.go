// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package gobackend

import (
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
)

// TestBufferFreeze: each freeze takes a new number, and a buffer is no
// longer frozen once the backend may write its storage: an alias of it,
// the buffer put back, finalized, or its handle or storage handed out
// again.
func TestBufferFreeze(t *testing.T) {
	b := newDefaultBackend()
	shape := shapes.Make(dtypes.Float32, 1024)
	get := func() *Buffer {
		t.Helper()
		buf, err := b.GetBuffer(shape)
		if err != nil {
			t.Fatal(err)
		}
		return buf
	}
	buf := get()
	if buf.FrozenEpoch() != 0 {
		t.Fatalf("a new buffer is frozen (%d)", buf.FrozenEpoch())
	}
	buf.Freeze()
	first := buf.FrozenEpoch()
	buf.Freeze()
	if first == 0 || buf.FrozenEpoch() == first {
		t.Fatalf("freeze numbers %d then %d, want two different, not 0", first, buf.FrozenEpoch())
	}
	if c := buf.shallowClone(); c.FrozenEpoch() != 0 {
		t.Errorf("an alias of a frozen buffer is frozen (%d)", c.FrozenEpoch())
	}
	for _, tc := range []struct {
		name    string
		release func(*Buffer)
	}{
		{"put back", b.PutBuffer},
		{"finalized", func(buf *Buffer) { _ = buf.Finalize() }},
	} {
		buf := get()
		buf.Freeze()
		tc.release(buf)
		if buf.FrozenEpoch() != 0 {
			t.Errorf("%s: the released buffer is still frozen", tc.name)
		}
		if again := get(); again.FrozenEpoch() != 0 {
			t.Errorf("%s: a buffer handed out again is frozen (%d)", tc.name, again.FrozenEpoch())
		}
	}
	var nilBuf *Buffer
	if nilBuf.FrozenEpoch() != 0 {
		t.Error("a nil buffer is frozen")
	}
}
