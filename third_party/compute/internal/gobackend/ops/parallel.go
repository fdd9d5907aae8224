// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops

import (
	"sync"

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
	if backend == nil || backend.Workers == nil || !backend.Workers.IsEnabled() || n < 2*minChunk {
		fn(0, n)
		return
	}
	chunks := min(n/minChunk, 2*backend.Workers.AdjustedMaxParallelism())
	if chunks < 2 {
		fn(0, n)
		return
	}
	step := (n + chunks - 1) / chunks
	var wg sync.WaitGroup
	for lo := step; lo < n; lo += step {
		hi := min(n, lo+step)
		wg.Add(1)
		task := func() {
			defer wg.Done()
			fn(lo, hi)
		}
		// Never wait for a worker (the caller may be one): run the range
		// here when none is free.
		if !backend.Workers.StartIfAvailable(task) {
			task()
		}
	}
	fn(0, min(n, step)) // the first range on this goroutine
	wg.Wait()
}
