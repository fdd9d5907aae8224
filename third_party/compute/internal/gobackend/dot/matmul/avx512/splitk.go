// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

//go:build amd64 && goexperiment.simd

package avx512

import (
	"sync"

	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/dot"
	"github.com/gomlx/compute/internal/gobackend/dot/matmul"
)

// splitKMaxChunks bounds the contracting-axis chunks of a split-K product.
const splitKMaxChunks = 8

// splitKChunks is the number of contracting-axis chunks a float32 matrix
// multiplication is split into, or 1 to keep the split of the output
// (rows, columns) that FeedWorkItems makes.
//
// The output split has little to share when the output is small and the
// contracting axis long, as in the weight gradient of an early convolution
// layer ([Cout, N*H*W] x [N*H*W, K*K*Cin]: e.g. [16, 32768] x [32768, 36]):
// the rows are split in two at most, and every worker packs the whole rhs.
// Splitting the contracting axis instead gives every worker a part of the
// rhs to pack and multiply, at the cost of one [M, N] partial sum a chunk.
//
// The chunks depend on the operands' shapes alone, never on the number of
// workers, and their partial sums are added in chunk order: the result is
// the same to the bit whatever the backend's parallelism (with one worker
// the chunks run one after the other).
func splitKChunks(layout dot.Layout, batchSize, lhsCrossSize, rhsCrossSize, contractingSize int, params *matmul.CacheParams) int {
	if batchSize != 1 || layout != dot.LayoutNonTransposed {
		return 1
	}
	if lhsCrossSize*rhsCrossSize > 128*1024 || contractingSize < 8*max(lhsCrossSize, rhsCrossSize) {
		return 1
	}
	chunks := min(splitKMaxChunks, contractingSize/(2*params.PanelContractingSize))
	return max(1, chunks)
}

// avx512SplitKFloat32 multiplies lhs [M, K] by rhs [K, N] (LayoutNonTransposed,
// no batch) into output [M, N] with the contracting axis split into chunks
// run on the backend's workers: each chunk's lhs columns are copied to a
// contiguous [M, chunk] matrix (M is small here), its rhs rows are a
// contiguous part of rhs already, and the partial products are added into
// output at the end, in chunk order. Scratch space comes from
// matmul.GetBuffer, which never fails, so the output is always defined.
func avx512SplitKFloat32(backend *gobackend.Backend, lhs, rhs, output []float32, M, N, K, chunks int, params matmul.CacheParams) {
	// Chunk boundaries on multiples of the contracting panel.
	step := (K + chunks - 1) / chunks
	step = (step + params.PanelContractingSize - 1) / params.PanelContractingSize * params.PanelContractingSize
	n := (K + step - 1) / step
	partials := make([][]float32, n) // partials[0] is output itself
	refs := make([]*gobackend.Buffer, n)
	var wg sync.WaitGroup
	run := func(c int) {
		defer wg.Done()
		k0, k1 := c*step, min(K, (c+1)*step)
		kLen := k1 - k0
		out := output
		if c > 0 {
			refs[c], out, _ = GetBuffer[float32](backend, M*N)
			out = out[:M*N]
		}
		lhsRef, lhsChunk, _ := GetBuffer[float32](backend, M*kLen)
		packedLHSRef, packedLHS, _ := GetBuffer[float32](backend, params.LHSPanelCrossSize*params.PanelContractingSize)
		packedRHSRef, packedRHS, _ := GetBuffer[float32](backend, params.PanelContractingSize*params.RHSPanelCrossSize)
		packedOutputRef, packedOutput, _ := GetBuffer[float32](backend, params.LHSPanelCrossSize*params.RHSPanelCrossSize)
		const maxAccumPanels = 64
		accumRef, accum, _ := GetBuffer[float32](backend, maxAccumPanels*params.LHSPanelCrossSize*params.RHSPanelCrossSize)
		defer func() {
			for _, ref := range []*gobackend.Buffer{lhsRef, packedLHSRef, packedRHSRef, packedOutputRef, accumRef} {
				ReleaseBuffer(ref)
			}
		}()
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
		partials[c] = out
	}
	for c := 1; c < n; c++ {
		wg.Add(1)
		if !backend.Workers.StartIfAvailable(func() { run(c) }) {
			run(c)
		}
	}
	wg.Add(1)
	run(0)
	wg.Wait()
	for c := 1; c < n; c++ {
		for i, v := range partials[c] {
			output[i] += v
		}
		ReleaseBuffer(refs[c])
	}
}
