// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops

import (
	"sync"
	"sync/atomic"

	"github.com/gomlx/compute/internal/gobackend"
)

// parallelMinElements is the smallest number of elements a memory-bound
// op (a binary op, a gather's copies) splits across workers: below it, the
// hand-off to a worker costs more than the copy.
const parallelMinElements = 32 * 1024

// parallelRanges calls fn over a split of [0, n) into contiguous ranges, run
// on the backend's free workers when n is large enough (at least minChunk per
// range) and the workers are enabled, else fn(0, n) on the calling
// goroutine. It returns when every range is done.
func parallelRanges(backend *gobackend.Backend, n, minChunk int, fn func(lo, hi int)) {
	if backend == nil {
		fn(0, n)
		return
	}
	backend.Workers.Ranges(n, minChunk, fn)
}

// workerCount is how many goroutines the backend's workers allow to run
// at once (the caller included): 1 when they are disabled.
func workerCount(backend *gobackend.Backend) int {
	if backend == nil || backend.Workers == nil || !backend.Workers.IsEnabled() {
		return 1
	}
	return max(1, backend.Workers.AdjustedMaxParallelism())
}

// parallelPull runs work on as many goroutines as the backend's workers
// allow (the calling goroutine included, at most n), and returns when all
// are done, with the first error a call of work returned. Each call of
// work takes items by calling next until it returns false: the items are
// handed out one at a time, so a goroutine that is slowed (by the machine,
// or by starting late) takes fewer of them. Use it for compute-bound loops
// of many equal items, where the static split of parallelRanges leaves one
// goroutine with a range more to do (with 25 items and 4 ranges of 7, two
// cores finish at 14 instead of 12.5).
func parallelPull(backend *gobackend.Backend, n int, work func(next func() (int, bool)) error) error {
	var taken atomic.Int64
	next := func() (int, bool) {
		i := int(taken.Add(1) - 1)
		return i, i < n
	}
	var firstErr error
	var mu sync.Mutex
	run := func() {
		if err := work(next); err != nil {
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}
	}
	var wg sync.WaitGroup
	for range min(n, workerCount(backend)) - 1 {
		wg.Add(1)
		task := func() {
			defer wg.Done()
			run()
		}
		// Never wait for a worker (the caller may be one): the caller takes
		// the items a missing goroutine would have.
		if !backend.Workers.StartIfAvailable(task) {
			wg.Done()
			break
		}
	}
	run()
	wg.Wait()
	return firstErr
}
