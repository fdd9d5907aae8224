package imagefile_test

import (
	"errors"
	"runtime"
	"testing"

	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/synth"
)

// TestBombRefusedWithoutAllocating decodes PNG headers declaring
// 100000 x 100000 pixels (30 GB as RGB): the limit refuses them from the
// header, before any pixel buffer exists.
func TestBombRefusedWithoutAllocating(t *testing.T) {
	bomb := synth.PNGHeaderOnly(100000, 100000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, err := imagefile.DecodeRGB(bomb, 0); !errors.Is(err, imagefile.ErrTooLarge) {
			t.Fatalf("error %v, want ErrTooLarge", err)
		}
		if _, err := imagefile.DecodeLabel(bomb, 0); !errors.Is(err, imagefile.ErrTooLarge) {
			t.Fatalf("label: error %v, want ErrTooLarge", err)
		}
	}
	runtime.ReadMemStats(&after)
	n := after.TotalAlloc - before.TotalAlloc
	t.Logf("refusing 20 bombs allocated %d bytes", n)
	if n > 4<<20 {
		t.Errorf("refusing 20 bombs allocated %d bytes", n)
	}
}
