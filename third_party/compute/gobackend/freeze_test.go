// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package gobackend

import (
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
)

// TestFreeze: Freeze freezes a buffer of this backend until it is
// finalized.
func TestFreeze(t *testing.T) {
	buf, err := backend.BufferFromFlatData(0, []float32{1, 2, 3}, shapes.Make(dtypes.Float32, 3))
	if err != nil {
		t.Fatal(err)
	}
	if Frozen(buf) {
		t.Fatal("a new buffer is frozen")
	}
	if !Freeze(buf) || !Frozen(buf) {
		t.Fatal("Freeze did not freeze a buffer of the Go backend")
	}
	if err := buf.Finalize(); err != nil {
		t.Fatal(err)
	}
	if Frozen(buf) {
		t.Fatal("a finalized buffer is still frozen")
	}
	if Freeze(nil) || Frozen(nil) {
		t.Fatal("Freeze or Frozen accepted a nil buffer")
	}
}
