// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build amd64 && goexperiment.simd

package avx512

import (
	"sync"

	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/dot"
	"github.com/gomlx/compute/internal/gobackend/dot/matmul"
)

// splitKChunks is the number of contracting-axis chunks a float32 matrix
// multiplication is split into, one per worker, or 1 to keep the split of
// the output (rows, columns) that FeedWorkItems makes.
//
// The output split has little to share when the output is small and the
// contracting axis long, as in the weight gradient of an early convolution
// layer ([Cout, N*H*W] x [N*H*W, K*K*Cin]: e.g. [16, 32768] x [32768, 36]):
// the rows are split in two at most, and every worker packs the whole rhs.
// Splitting the contracting axis instead gives every worker a part of the
// rhs to pack and multiply, at the cost of one [M, N] partial sum a worker.
func splitKChunks(layout dot.Layout, batchSize, lhsCrossSize, rhsCrossSize, contractingSize, maxWorkers int, params *matmul.CacheParams) int {
	if maxWorkers <= 1 || batchSize != 1 || layout != dot.LayoutNonTransposed {
		return 1
	}
	if lhsCrossSize*rhsCrossSize > 128*1024 || contractingSize < 8*max(lhsCrossSize, rhsCrossSize) {
		return 1
	}
	chunks := min(maxWorkers, contractingSize/(2*params.PanelContractingSize))
	return max(1, chunks)
}

// avx512SplitKFloat32 multiplies lhs [M, K] by rhs [K, N] (LayoutNonTransposed,
// no batch) into output [M, N] with the contracting axis split into chunks
// run on the backend's workers: each chunk's lhs columns are copied to a
// contiguous [M, chunk] matrix (M is small here), its rhs rows are a
// contiguous part of rhs already, and the partial products are summed into
// output at the end.
func avx512SplitKFloat32(backend *gobackend.Backend, lhs, rhs, output []float32, M, N, K, chunks int, params matmul.CacheParams) {
	// Chunk boundaries on multiples of the contracting panel.
	step := (K + chunks - 1) / chunks
	step = (step + params.PanelContractingSize - 1) / params.PanelContractingSize * params.PanelContractingSize
	type part struct {
		ref *gobackend.Buffer
		out []float32
	}
	parts := make([]part, 0, chunks)
	var mu sync.Mutex
	var wg sync.WaitGroup
	failed := false
	run := func(k0, k1 int, first bool) {
		defer wg.Done()
		kLen := k1 - k0
		var out []float32
		var outRef *gobackend.Buffer
		if first {
			out = output
		} else {
			var ok bool
			outRef, out, ok = GetBuffer[float32](backend, M*N)
			if !ok {
				mu.Lock()
				failed = true
				mu.Unlock()
				return
			}
			out = out[:M*N]
		}
		lhsRef, lhsChunk, ok1 := GetBuffer[float32](backend, M*kLen)
		packedLHSRef, packedLHS, ok2 := GetBuffer[float32](backend, params.LHSPanelCrossSize*params.PanelContractingSize)
		packedRHSRef, packedRHS, ok3 := GetBuffer[float32](backend, params.PanelContractingSize*params.RHSPanelCrossSize)
		packedOutputRef, packedOutput, ok4 := GetBuffer[float32](backend, params.LHSPanelCrossSize*params.RHSPanelCrossSize)
		const maxAccumPanels = 64
		accumRef, accum, ok5 := GetBuffer[float32](backend, maxAccumPanels*params.LHSPanelCrossSize*params.RHSPanelCrossSize)
		defer func() {
			for _, ref := range []*gobackend.Buffer{lhsRef, packedLHSRef, packedRHSRef, packedOutputRef, accumRef} {
				if ref != nil {
					ReleaseBuffer(ref)
				}
			}
		}()
		if !(ok1 && ok2 && ok3 && ok4 && ok5) {
			mu.Lock()
			failed = true
			mu.Unlock()
			if outRef != nil {
				ReleaseBuffer(outRef)
			}
			return
		}
		for m := range M {
			copy(lhsChunk[m*kLen:(m+1)*kLen], lhs[m*K+k0:m*K+k1])
		}
		avx512LargeMatrixSliceFloat32(dot.LayoutNonTransposed,
			lhsChunk[:M*kLen], rhs[k0*N:k1*N], out,
			M, N, kLen,
			0, M, 0, N,
			params,
			packedLHS, packedRHS, packedOutput,
			accum,
			nil, nil,
		)
		if outRef != nil {
			mu.Lock()
			parts = append(parts, part{outRef, out})
			mu.Unlock()
		}
	}
	for k0 := step; k0 < K; k0 += step {
		wg.Add(1)
		task := func() { run(k0, min(K, k0+step), false) }
		if !backend.Workers.StartIfAvailable(task) {
			task()
		}
	}
	wg.Add(1)
	run(0, min(K, step), true)
	wg.Wait()
	if failed {
		// Out of buffers: GetBuffer has logged it; like the rest of the
		// large path, the output is left undefined.
		for _, p := range parts {
			ReleaseBuffer(p.ref)
		}
		return
	}
	for _, p := range parts {
		for i, v := range p.out {
			output[i] += v
		}
		ReleaseBuffer(p.ref)
	}
}
