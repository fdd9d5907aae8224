package workerspool

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomlx/compute/support/testutil"
	"github.com/gomlx/compute/support/xsync"
)

func TestPool_Saturate(t *testing.T) {
	// Test saturation.
	pool := New()
	wantTasks := 5
	pool.SetMaxParallelism(wantTasks)

	var count atomic.Int32
	doneNewTasks := xsync.NewLatch()
	doneTest := xsync.NewLatch()

	go func() {
		pool.Saturate(func() {
			got := count.Add(1)
			runtime.Gosched()
			if int(got) == wantTasks {
				doneNewTasks.Trigger()
				return
			}
			doneNewTasks.Wait()
		})
		doneTest.Trigger()
	}()

	select {
	case <-doneTest.WaitChan():
		// Success
	case <-time.After(100 * time.Millisecond):
		t.Fatal("Timeout before all tasks were executed.")
	}
	if int(count.Load()) != wantTasks {
		t.Fatalf("Expected %d tasks, got %d", wantTasks, count.Load())
	}

	// Test No Parallelism
	pool.SetMaxParallelism(0)
	count.Store(0)
	pool.Saturate(func() { count.Add(1) })
	if ok, diff := testutil.IsEqual(int32(1), count.Load()); !ok {
		t.Errorf("Pool with parallelism 0 result mismatch:\n%s", diff)
	}

	// Test Unlimited
	pool.SetMaxParallelism(-1)
	wantUnlimited := runtime.GOMAXPROCS(0)
	var started atomic.Int32
	doneUnlimited := xsync.NewLatch()
	doneTestUnlimited := xsync.NewLatch()

	go func() {
		pool.Saturate(func() {
			got := started.Add(1)
			runtime.Gosched()
			if int(got) == wantUnlimited {
				doneUnlimited.Trigger()
				return
			}
			doneUnlimited.Wait()
		})
		doneTestUnlimited.Trigger()
	}()

	select {
	case <-doneTestUnlimited.WaitChan():
		// Success
	case <-time.After(100 * time.Millisecond):
		t.Fatal("Timeout before all unlimited tasks were executed.")
	}

	if runtime.GOMAXPROCS(0) > 1 && started.Load() <= 1 {
		t.Errorf("Expected more than 1 started task for unlimited parallelism, got %d", started.Load())
	}
	if int(started.Load()) != wantUnlimited {
		t.Errorf("Expected started %d to match wantUnlimited %d", started.Load(), wantUnlimited)
	}
}

// TestRanges: the ranges cover [0, n) once each, with and without
// workers, on a nil Pool too.
func TestRanges(t *testing.T) {
	enabled := New()
	disabled := New()
	disabled.SetMaxParallelism(0)
	for _, tc := range []struct {
		name        string
		pool        *Pool
		n, minChunk int
	}{
		{"workers", enabled, 1000, 10},
		{"workers, n not a multiple", enabled, 1001, 7},
		{"below two chunks", enabled, 19, 10},
		{"disabled", disabled, 1000, 10},
		{"nil", nil, 1000, 10},
		{"empty", enabled, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := make([]atomic.Int32, tc.n)
			tc.pool.Ranges(tc.n, tc.minChunk, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					seen[i].Add(1)
				}
			})
			for i := range seen {
				if got := seen[i].Load(); got != 1 {
					t.Fatalf("index %d covered %d times", i, got)
				}
			}
		})
	}
}
