package main

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// allocEnv makes TestPeakRSSChild hold that many MB.
const allocEnv = "L2GFLOW_TEST_ALLOC_MB"

// TestTimedRunPeakIsTheChilds: the peak memory timedRun reports is the
// child's own, not that of the larger process it was started from (the
// wait status's Maxrss reports the parent's high-water mark for a child
// smaller than its parent).
func TestTimedRunPeakIsTheChilds(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc on this system")
	}
	parent := make([]byte, 600<<20)
	for i := 0; i < len(parent); i += 4096 {
		parent[i] = 1
	}
	t.Setenv(allocEnv, "64")
	_, peak, err := timedRun(context.Background(), os.Args[0], "-test.run=^TestPeakRSSChild$")
	runtime.KeepAlive(parent)
	if err != nil {
		t.Fatal(err)
	}
	if peak < 64 || peak > 400 {
		t.Fatalf("peak %.0f MB for a child holding 64 MB, started from a process holding 600 MB", peak)
	}
}

// TestPeakRSSChild is TestTimedRunPeakIsTheChilds's child: it holds the
// memory allocEnv asks for a moment, and is skipped otherwise.
func TestPeakRSSChild(t *testing.T) {
	mb, _ := strconv.Atoi(os.Getenv(allocEnv))
	if mb <= 0 {
		t.Skip("the child of TestTimedRunPeakIsTheChilds")
	}
	b := make([]byte, mb<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	time.Sleep(200 * time.Millisecond)
	runtime.KeepAlive(b)
}
