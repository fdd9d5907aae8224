// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package ops

import (
	"sync"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/internal/gobackend/dot"
	"github.com/gomlx/compute/shapes"
)

// im2colChunkBytes is the target size of one chunk of the im2col matrix:
// small enough to stay in the caches between being written and being
// packed by the matrix multiplication, which reads it right after.
const im2colChunkBytes = 1 << 20

// im2colMinChunkRows is the fewest output positions a chunk holds: the
// matrix multiplication of a chunk re-reads the (pre-packed) kernel, which
// must be amortised over enough rows.
const im2colMinChunkRows = 256

// execConvGeneralIm2col executes a float32 2D convolution in the
// channels-last layouts (input [N, H, W, Cin], kernel [KH, KW, Cin, Cout],
// output [N, Ho, Wo, Cout]; any strides, paddings and kernel dilations; no
// input dilation or grouping) as matrix multiplications: the output's rows
// are taken in chunks, each chunk's im2col matrix [rows, KH*KW*Cin] is
// written (zeros where a window leaves the input) and multiplied by the
// kernel seen as [KH*KW*Cin, Cout] with the registered DotGeneral
// implementation. The kernel is packed once for all chunks.
//
// The direct loop of execConvGeneral is 20-40x slower than the matrix
// multiplication on this layout. ok is false when the convolution is not
// of this kind (the caller then runs the direct loop).
func execConvGeneralIm2col(backend *gobackend.Backend, node *gobackend.Node, inputs []*gobackend.Buffer) (output *gobackend.Buffer, ok bool, err error) {
	input, kernel := inputs[0], inputs[1]
	params := node.Data.(*convNode)
	g, ok := im2colGeometryFor(input.RawShape, kernel.RawShape, node.Shape, params)
	if !ok {
		return nil, false, nil
	}
	impl := dot.FindRegisteredImplementation(dot.LayoutNonTransposed, dtypes.Float32, dtypes.Float32)
	if impl == nil {
		return nil, false, nil
	}
	output, err = backend.GetBuffer(node.Shape)
	if err != nil {
		return nil, true, err
	}
	if backend.NoOps {
		return output, true, nil
	}
	in := input.Flat.([]float32)
	out := output.Flat.([]float32)
	kernelFlat, releaseKernel, err := g.kernelMatrix(backend, kernel.Flat.([]float32))
	if err != nil {
		backend.PutBuffer(output)
		return nil, true, err
	}
	defer releaseKernel()
	if g.kernelInPlace() {
		g.kernelFrozen = kernel.FrozenEpoch()
	}
	run := g.convMatrix
	if g.inDilH > 1 || g.inDilW > 1 {
		run = g.convPhases
	}
	if err := run(backend, impl, in, kernelFlat, out); err != nil {
		backend.PutBuffer(output)
		return nil, true, err
	}
	return output, true, nil
}

// convMatrix runs the convolution with the fastest of the paths that take
// it: Winograd, the row-major tiles over kernel blocks (large kernels) or
// over chunks of rows, or packed im2col products (where the build has no
// tile kernel).
func (g *im2colGeometry) convMatrix(backend *gobackend.Backend, impl *dot.ImplementationRegistration, in, kernelFlat, out []float32) error {
	tile := dot.Float32Tile8x32
	switch {
	case tile != nil && convWinograd != nil && g.winogradEligible():
		return convWinograd(g, backend, tile, in, kernelFlat, out)
	case dot.Float32Tile8x32Strided != nil && g.cout%32 == 0 && g.kernelBlocksPay():
		return g.convKernelBlocks(backend, dot.Float32Tile8x32Strided, kernelBlocksPack(g.n*g.ho*g.wo), in, kernelFlat, out)
	case tile != nil:
		return g.convRowMajor(backend, tile, in, kernelFlat, out)
	default:
		return g.convPacked(backend, impl, in, kernelFlat, out)
	}
}

// convPhases runs an input-dilated convolution (a strided convolution's
// input gradient) as one undilated convolution per phase of the output
// grid. With input dilation s, the output rows y of one phase (y mod s)
// only meet input rows, not the zeros between them, through the kernel
// rows ky with (y - padTop + ky*dilation) a multiple of s: an arithmetic
// progression of taps, so each phase is a plain convolution of the
// undilated input with that part of the kernel (and a kernel dilation
// and padding of its own). The im2col of the dilated input would be mostly
// zeros (3/4 of it for stride 2), which made the input gradient of strided
// layers slower than the graph-level scatter-add.
func (g *im2colGeometry) convPhases(backend *gobackend.Backend, impl *dot.ImplementationRegistration, in, kernelFlat, out []float32) error {
	sh, sw := g.inDilH, g.inDilW
	for ry := range min(sh, g.ho) {
		kys, q0y, dy := phaseTaps(ry, g.padTop, g.kh, g.dilateH, sh)
		for rx := range min(sw, g.wo) {
			kxs, q0x, dx := phaseTaps(rx, g.padLeft, g.kw, g.dilateW, sw)
			hoP, woP := (g.ho-ry+sh-1)/sh, (g.wo-rx+sw-1)/sw
			if len(kys) == 0 || len(kxs) == 0 {
				scatterPhase(backend, g, out, nil, ry, rx, hoP, woP)
				continue
			}
			sub := im2colGeometry{
				n: g.n, h: g.h, w: g.w, cin: g.cin,
				kh: len(kys), kw: len(kxs), cout: g.cout,
				ho: hoP, wo: woP,
				strideH: 1, strideW: 1,
				padTop: -q0y, padLeft: -q0x,
				dilateH: dy, dilateW: dx,
				inDilH: 1, inDilW: 1,
			}
			size := sub.kh * sub.kw * g.cin * g.cout
			bufs, err := backend.GetBuffer(shapes.Make(dtypes.Float32, size+g.n*hoP*woP*g.cout))
			if err != nil {
				return err
			}
			flat := bufs.Flat.([]float32)
			subKernel, subOut := flat[:size], flat[size:]
			for i, ky := range kys {
				for j, kx := range kxs {
					tap := (ky*g.kw + kx) * g.cin * g.cout
					copy(subKernel[(i*sub.kw+j)*g.cin*g.cout:], kernelFlat[tap:tap+g.cin*g.cout])
				}
			}
			err = sub.convMatrix(backend, impl, in, subKernel, subOut)
			if err == nil {
				scatterPhase(backend, g, out, subOut, ry, rx, hoP, woP)
			}
			backend.PutBuffer(bufs)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// phaseTaps returns, for the output phase r of an axis with input dilation
// s, padding pad, kernel size k and kernel dilation d, the kernel taps that
// meet input values (an arithmetic progression), the input index offset q0
// of the first one (output j of the phase reads input j + q0 + i*step
// through tap i) and that step.
func phaseTaps(r, pad, k, d, s int) (taps []int, q0, step int) {
	for t := range k {
		if v := r - pad + t*d; v%s == 0 {
			if len(taps) == 0 {
				q0 = v / s
			} else if len(taps) == 1 {
				step = v/s - q0
			}
			taps = append(taps, t)
		}
	}
	if step == 0 {
		step = 1
	}
	return taps, q0, step
}

// scatterPhase copies a phase's outputs ([N, hoP, woP, Cout], or zeros when
// nil) to their places in out (rows ry + s*j, columns rx + s*i), a range of
// the phase's rows per worker.
func scatterPhase(backend *gobackend.Backend, g *im2colGeometry, out, phase []float32, ry, rx, hoP, woP int) {
	parallelRanges(backend, g.n*hoP, max(1, parallelMinElements/max(1, woP*g.cout)), func(lo, hi int) {
		for row := lo; row < hi; row++ {
			b, j := row/hoP, row%hoP
			y := ry + g.inDilH*j
			for i := range woP {
				x := rx + g.inDilW*i
				dst := out[((b*g.ho+y)*g.wo+x)*g.cout : ((b*g.ho+y)*g.wo+x+1)*g.cout]
				if phase == nil {
					clear(dst)
					continue
				}
				copy(dst, phase[((b*hoP+j)*woP+i)*g.cout:])
			}
		}
	})
}

// convWinograd is im2colGeometry.convWinograd where the build has it (the
// simd experiment), else nil.
var convWinograd func(g *im2colGeometry, backend *gobackend.Backend,
	tile func(lhs []float32, lhsStride int, rhs []float32, out []float32, outStride int, k int, accumulate bool),
	in, kernel, out []float32) error

// winogradMinChannels is the fewest input and output channels the
// Winograd path takes: with fewer, the transforms (memory-bound) cost more
// than the multiplications they save.
const winogradMinChannels = 64

// winogradMaxKernel is the largest Cin*Cout the Winograd path takes:
// ResNet's 3x3 layers up to 512x512 channels. Their transformed kernel
// (16*4*Cin*Cout bytes, up to 16 MB) comes from L3 for every chunk of
// tiles; with the tile kernel and the kernel-block path as they are now
// the products still beat the im2col path's (l2gflow's workloads, paired
// rounds, limit 128x128 -> 512x512: ResNet-18 inference at 224 px 27.4 ->
// 21.1 ms an image, at 128 px 9.1 -> 7.8, ResNet-50 65 -> 59.5, the
// ResNet-18 training step at 224 px 793 -> 700 ms, ResNet-50's 2035 ->
// 1868 ms; 256x256 alone gained a third of that). Larger kernels are
// unmeasured and stay on the im2col path.
const winogradMaxKernel = 512 * 512

// winogradChunkBytes is the target size of one chunk's transformed input
// ([16, tiles, Cin] values) per worker.
const winogradChunkBytes = 1 << 20

// winogradEligible reports whether the convolution is a 3x3 kernel with
// stride 1, the same kernel dilation on both axes, no input dilation, and
// enough channels (Cout a multiple of 32) for the Winograd path.
func (g *im2colGeometry) winogradEligible() bool {
	return g.kh == 3 && g.kw == 3 && g.strideH == 1 && g.strideW == 1 && g.inDilH == 1 && g.inDilW == 1 &&
		g.dilateH == g.dilateW && g.cout%32 == 0 && g.cin >= winogradMinChannels && g.cout >= winogradMinChannels &&
		g.cin*g.cout <= winogradMaxKernel
}

// convPacked is the convolution as chunks of im2col rows, each written by
// the workers and multiplied by the kernel with the registered DotGeneral
// implementation impl (which packs both operands; the kernel once, for
// all chunks).
func (g *im2colGeometry) convPacked(backend *gobackend.Backend, impl *dot.ImplementationRegistration, in, kernelFlat, out []float32) error {
	k := g.kh * g.kw * g.cin
	m := g.n * g.ho * g.wo
	chunkRows := max(im2colMinChunkRows, im2colChunkBytes/(4*k))
	chunkRows = min(m, (chunkRows+31)/32*32)
	colsBuf, err := backend.GetBuffer(shapes.Make(dtypes.Float32, chunkRows*k))
	if err != nil {
		return err
	}
	defer backend.PutBuffer(colsBuf)
	cols := colsBuf.Flat.([]float32)

	// The kernel is the same for every chunk: packed on the first one,
	// released at the end.
	rhsCache := &dot.PackedMatrixCache{}
	defer func() {
		if ref, isBuf := rhsCache.Buffer.(*gobackend.Buffer); isBuf && ref != nil {
			backend.PutBuffer(ref)
		}
	}()
	kernelBuf := &gobackend.Buffer{Flat: kernelFlat}
	for r0 := 0; r0 < m; r0 += chunkRows {
		rows := min(chunkRows, m-r0)
		chunk := cols[:rows*k]
		parallelRanges(backend, rows, max(1, parallelMinElements/k), func(lo, hi int) {
			g.fill(in, chunk, k, r0, lo, hi, 0)
		})
		nodeData := &dot.NodeData{
			InputDType: dtypes.Float32, OutputDType: dtypes.Float32,
			Layout:    dot.LayoutNonTransposed,
			BatchSize: 1, LHSCrossSize: rows, RHSCrossSize: g.cout, ContractingSize: k,
			PackedRHSCache: rhsCache,
		}
		dot.CallRegisteredImplementation(backend, impl,
			&gobackend.Buffer{Flat: chunk}, kernelBuf, &gobackend.Buffer{Flat: out[r0*g.cout : (r0+rows)*g.cout]},
			nodeData)
	}
	return nil
}

// rowMajorBlockK is the contracting block of convRowMajor: a 32-column
// strip of the kernel over one block (64 KB) stays in L2, and a tile's 8
// lhs rows over it (16 KB) in L1.
const rowMajorBlockK = 512

// rowMajorChunkBytes is the most im2col values (in bytes, over one
// contracting block) of one worker's chunk in convRowMajor.
const rowMajorChunkBytes = 256 << 10

// kernelBlocksMinBytes is the smallest kernel ([KH*KW*Cin, Cout] float32
// values) that convKernelBlocks takes: smaller ones stay in L2 across
// convRowMajor's chunks of rows.
const kernelBlocksMinBytes = 1 << 20

// kernelBlocksMinColumns is the fewest output columns each worker's group
// has in convKernelBlocks: every worker writes the im2col values of all
// the rows, which must be amortised over enough columns.
const kernelBlocksMinColumns = 128

// kernelBlocksWorkers is the number of column groups kernelBlocksPay
// plans for. The choice of path depends on the shapes alone (the paths
// add a product's terms in other orders), so that results do not depend
// on the backend's parallelism.
const kernelBlocksWorkers = 2

// kernelBlocksPay reports whether convKernelBlocks takes the convolution
// (Cout a multiple of 32): a kernel too large for L2 and enough output
// channels for kernelBlocksWorkers groups.
func (g *im2colGeometry) kernelBlocksPay() bool {
	return 4*g.kh*g.kw*g.cin*g.cout >= kernelBlocksMinBytes && g.cout >= kernelBlocksMinColumns*kernelBlocksWorkers
}

// kernelBlocksPackMinRows is the fewest output positions for which
// convKernelBlocks packs the kernel into strips of 32 columns first, as
// convRowMajor does, instead of reading its columns in place. Read in
// place, a strip's rows are Cout*4 bytes apart: with Cout 1024 or 2048
// (ResNet-50's last stages) a block of them maps to few cache sets and is
// evicted from L2 between the chunks of rows that re-read it, once per
// kernelBlocksChunkRows rows. Packing costs a read and a write of the
// kernel per execution, which pays once the kernel is read often enough:
// with ResNet-18's 8x8 layers at 128 px (512 rows, 4 chunks) it made that
// layer about 12% slower; with ResNet-50's 14x14 layers at 224 px (1568
// rows) the 1x1 convolution to 2048 channels went from about 96 to 160-175
// GFLOP/s (per-layer timings in l2gflow's ResNet-50 inference, batch 8,
// 2 cores). Packing does not change the order in which terms are added.
const kernelBlocksPackMinRows = 8 * kernelBlocksChunkRows

// kernelBlocksPack reports whether convKernelBlocks packs the kernel of a
// convolution of m output positions (see kernelBlocksPackMinRows).
func kernelBlocksPack(m int) bool { return m >= kernelBlocksPackMinRows }

// kernelBlocksChunkRows is how many rows of one contracting block's im2col
// convKernelBlocks writes and multiplies at a time (at most 256 KB).
const kernelBlocksChunkRows = 128

// convKernelBlocks is the convolution for Cout a multiple of 32 with a large
// kernel (ResNet's 8x8 and 14x14 layers of 256 and 512 channels): each
// worker takes a group of the output columns, and walks the contracting axis
// in equal blocks of at most rowMajorBlockK steps; for each block it
// writes the block's im2col values for the rows a chunk at a time and
// multiplies them 8 rows by 32 columns at a time, accumulating into the
// output. Without pack (few rows: kernelBlocksPack) the tile reads the
// kernel's columns in place (dot.Float32Tile8x32Strided: packing would
// copy every weight on every execution; in a ResNet-18 inference at 128
// px, batch 8, 3 alternating rounds, 9.71 -> 9.13 ms an image); with it,
// from strips packed once per execution (packKernelStrips), which the
// chunks of rows re-read from L2. convRowMajor instead packs the whole
// kernel (which comes from memory: with few rows, as at 8x8, packing it
// took a fifth of the time) and re-reads it for every chunk of rows. Measured per
// layer, batch 8, best of 20 alternating with convRowMajor (GFLOP/s):
// 8x8x512-512 234 -> 296, dilation 2 240 -> 323, 8x8x256-256 170 -> 192,
// 14x14x512-512 264 -> 291, 16x16x128-256 stride 2 243 -> 263; the 7x7 stem
// (36 against 169) and 56x56x64-128 stride 2 (229 against 282) are why it is
// not used for small kernels. In a ResNet-18 inference (per-layer timings
// against the unchanged stem) the 8x8 layers at 128 px gained 5-15%, the
// 14x14 layers at 224 px nothing measurable.
func (g *im2colGeometry) convKernelBlocks(backend *gobackend.Backend,
	tile func(lhs []float32, lhsStride int, rhs []float32, rhsStride int, out []float32, outStride int, k int, accumulate bool),
	pack bool, in, kernel, out []float32) error {
	k := g.kh * g.kw * g.cin
	m := g.n * g.ho * g.wo
	strips := g.cout / 32
	groups := max(1, min(workerCount(backend), strips))
	blocks := (k + rowMajorBlockK - 1) / rowMajorBlockK
	blockK := (k + blocks - 1) / blocks
	chunkRows := kernelBlocksChunkRows
	identity := g.isIdentity()
	numTiles := (m + 7) / 8
	full := m / 8 * 8 // rows in whole tiles; the rest go through last and tail
	rhsAt := func(k0, s int) ([]float32, int) { return kernel[k0*g.cout+32*s:], g.cout }
	if pack {
		packed, release, err := packKernelStrips(backend, kernel, k, g.cout)
		if err != nil {
			return err
		}
		defer release()
		rhsAt = func(k0, s int) ([]float32, int) { return packed[(s*k+k0)*32:], 32 }
	}
	return parallelPull(backend, groups, func(next func() (int, bool)) error {
		colsSize := chunkRows * blockK
		buf, err := backend.GetBuffer(shapes.Make(dtypes.Float32, colsSize+8*blockK+8*g.cout))
		if err != nil {
			return err
		}
		defer backend.PutBuffer(buf)
		flat := buf.Flat.([]float32)
		cols := flat[:colsSize]
		last, tail := flat[colsSize:colsSize+8*blockK], flat[colsSize+8*blockK:]
		started := make([]bool, numTiles) // a tile's first block writes, the later ones add
		skip := make([]bool, chunkRows/8)
		for grp, ok := next(); ok; grp, ok = next() {
			s0, s1 := grp*strips/groups, (grp+1)*strips/groups
			clear(started)
			for k0 := 0; k0 < k; k0 += blockK {
				kLen := min(blockK, k-k0)
				for r0 := 0; r0 < m; r0 += chunkRows {
					rows := min(chunkRows, m-r0)
					nt := (rows + 7) / 8
					lhs, stride := cols, kLen
					if identity {
						lhs, stride = in[r0*k+k0:], k
					} else {
						g.fill(in, cols, kLen, r0, 0, rows, k0)
					}
					if chunkFull := rows / 8 * 8; chunkFull < rows {
						// The last tile has fewer than 8 rows: copied into a
						// zero-padded tile, whose outputs go to tail.
						for r := range rows - chunkFull {
							copy(last[r*kLen:(r+1)*kLen], lhs[(chunkFull+r)*stride:(chunkFull+r)*stride+kLen])
						}
						clear(last[(rows-chunkFull)*kLen : 8*kLen])
					}
					g.markPaddingTiles(skip, r0, rows, k0, kLen, identity)
					for s := s0; s < s1; s++ {
						rhs, rhsStride := rhsAt(k0, s)
						for i := range nt {
							if skip[i] {
								continue
							}
							if r0+8*i < full {
								tile(lhs[8*i*stride:], stride, rhs, rhsStride, out[(r0+8*i)*g.cout+32*s:], g.cout, kLen, started[r0/8+i])
							} else {
								tile(last, kLen, rhs, rhsStride, tail[32*s:], g.cout, kLen, started[r0/8+i])
							}
						}
					}
					for i := range nt {
						started[r0/8+i] = started[r0/8+i] || !skip[i]
					}
				}
			}
			for t := range numTiles {
				if started[t] {
					continue
				}
				// Every window in the padding: zero outputs.
				dst, n := out[8*t*g.cout:], min(8, m-8*t)
				if 8*t >= full {
					dst = tail
				}
				for r := range n {
					clear(dst[r*g.cout+32*s0 : r*g.cout+32*s1])
				}
			}
			for r := range m - full {
				row := (full + r) * g.cout
				copy(out[row+32*s0:row+32*s1], tail[r*g.cout+32*s0:r*g.cout+32*s1])
			}
		}
		return nil
	})
}

// convRowMajor is the convolution with the tile kernel: the workers take
// chunks of output rows one at a time; each writes its chunk's im2col rows
// and multiplies them in place, in blocks of the contracting axis, 8 rows
// by 32 columns at a time (dot.Float32Tile8x32), by the kernel packed once
// into strips of 32 columns. Not packing the im2col rows matters most when
// Cout is small (each value is then used for few multiply-adds, and packing
// it costs about as much as using it), but measured faster than the packed
// path for every ResNet layer, up to Cout 2048. When Cout is not a multiple
// of 32, the last strip is padded with zero columns and its tiles written
// to a scratch buffer, from which Cout's columns are copied: even with most
// of the strip's work wasted this beat the packed path (Cout 3 at 32x32
// with 64 channels 3.6 -> 15 GFLOP/s, a 7-class 1x1 head 6 -> 15, 16
// channels 35 -> 65, 48 channels 72 -> 135). A 1x1 convolution with stride
// 1 and no padding multiplies the input rows themselves.
func (g *im2colGeometry) convRowMajor(backend *gobackend.Backend,
	tile func(lhs []float32, lhsStride int, rhs []float32, out []float32, outStride int, k int, accumulate bool),
	in, kernel, out []float32) error {
	k := g.kh * g.kw * g.cin
	m := g.n * g.ho * g.wo
	fullStrips := g.cout / 32
	rem := g.cout - 32*fullStrips // columns of a last, partial strip
	strips := (g.cout + 31) / 32
	packed, release, err := packKernelStrips(backend, kernel, k, g.cout)
	if err != nil {
		return err
	}
	defer release()
	// Chunks: at most rowMajorChunkBytes of a contracting block, and at
	// least 4 per worker, which take them one at a time.
	workers := workerCount(backend)
	chunkRows := min(rowMajorChunkBytes/(4*min(k, rowMajorBlockK)), (m+4*workers-1)/(4*workers))
	chunkRows = max(8, (chunkRows+7)/8*8)
	numChunks := (m + chunkRows - 1) / chunkRows
	identity := g.isIdentity()
	partLen := 0
	if rem > 0 {
		partLen = chunkRows * 32
	}
	return parallelPull(backend, numChunks, func(next func() (int, bool)) error {
		colsBuf, err := backend.GetBuffer(shapes.Make(dtypes.Float32, chunkRows*k+8*g.cout+partLen))
		if err != nil {
			return err
		}
		defer backend.PutBuffer(colsBuf)
		flat := colsBuf.Flat.([]float32)
		cols, tail := flat[:chunkRows*k], flat[chunkRows*k:chunkRows*k+8*g.cout]
		// part holds each tile's 8 x 32 outputs of the partial strip, whose
		// columns past Cout are dropped when copied out.
		part := flat[chunkRows*k+8*g.cout:]
		skip := make([]bool, chunkRows/8)
		started := make([]bool, chunkRows/8)
		for c, ok := next(); ok; c, ok = next() {
			r0 := c * chunkRows
			rows := min(chunkRows, m-r0)
			full := rows / 8 * 8
			nt := (rows + 7) / 8
			lhs, last := cols, cols[full*k:]
			if identity {
				lhs = in[r0*k : (r0+rows)*k]
				copy(last, lhs[full*k:])
			} else {
				g.fill(in, cols, k, r0, 0, rows, 0)
			}
			if full < rows {
				// The last strip has fewer than 8 rows: zero the missing
				// ones; its tiles go to the tail buffer.
				clear(last[(rows-full)*k : 8*k])
			}
			clear(started[:nt])
			for k0 := 0; k0 < k; k0 += rowMajorBlockK {
				kLen := min(rowMajorBlockK, k-k0)
				g.markPaddingTiles(skip, r0, rows, k0, kLen, identity)
				for s := range strips {
					rhs := packed[(s*k+k0)*32:]
					for i := range nt {
						if skip[i] {
							continue
						}
						src := lhs[8*i*k+k0:]
						if 8*i >= full {
							src = last[k0:]
						}
						switch {
						case s == fullStrips:
							tile(src, k, rhs, part[8*i*32:], 32, kLen, started[i])
						case 8*i < full:
							tile(src, k, rhs, out[(r0+8*i)*g.cout+32*s:], g.cout, kLen, started[i])
						default:
							tile(src, k, rhs, tail[32*s:], g.cout, kLen, started[i])
						}
					}
				}
				for i := range nt {
					started[i] = started[i] || !skip[i]
				}
			}
			for i := range nt {
				dst := tail
				if 8*i < full {
					dst = out[(r0+8*i)*g.cout : (r0+8*i+8)*g.cout]
				}
				if !started[i] { // every window in the padding
					clear(dst[:8*g.cout])
					continue
				}
				if rem > 0 {
					for r := range 8 {
						copy(dst[r*g.cout+32*fullStrips:(r+1)*g.cout], part[(8*i+r)*32:(8*i+r)*32+rem])
					}
				}
			}
			if full < rows {
				copy(out[(r0+full)*g.cout:(r0+rows)*g.cout], tail[:(rows-full)*g.cout])
			}
		}
		return nil
	})
}

// packKernelStrips copies the kernel [k, cout] into strips of 32 columns
// (strip s is [k][32], at s*k*32, so that a block of its contracting steps
// is contiguous), on the backend's workers, into a buffer of the backend's
// that release gives back. A partial last strip is padded with zero
// columns.
func packKernelStrips(backend *gobackend.Backend, kernel []float32, k, cout int) (packed []float32, release func(), err error) {
	fullStrips := cout / 32
	rem := cout - 32*fullStrips
	strips := (cout + 31) / 32
	packedBuf, err := backend.GetBuffer(shapes.Make(dtypes.Float32, k*32*strips))
	if err != nil {
		return nil, nil, err
	}
	packed = packedBuf.Flat.([]float32)
	// The 32 values are copied as an array (a call of copy per 128 bytes
	// made the whole convolution 5-10% slower).
	parallelRanges(backend, strips, 1, func(lo, hi int) {
		for s := lo; s < hi; s++ {
			dst := packed[s*k*32 : (s+1)*k*32]
			src := kernel[32*s:]
			if s == fullStrips {
				for i := range k {
					copy(dst[i*32:i*32+rem], src[i*cout:i*cout+rem])
					clear(dst[i*32+rem : (i+1)*32])
				}
				continue
			}
			for i := range k {
				*(*[32]float32)(dst[i*32:]) = *(*[32]float32)(src[i*cout:])
			}
		}
	})
	return packed, func() { backend.PutBuffer(packedBuf) }, nil
}

// markPaddingTiles sets skip[i] for each tile of 8 rows of the rows rows
// from output position r0: whether the tile's windows all miss the input
// over the contracting columns [k0, k0+kLen), so that multiplying it would
// add zeros (see paddingOnly). A 1x1 stride-1 convolution (identity) has
// none.
func (g *im2colGeometry) markPaddingTiles(skip []bool, r0, rows, k0, kLen int, identity bool) {
	for i := range (rows + 7) / 8 {
		skip[i] = !identity && g.paddingOnly(r0+8*i, min(8, rows-8*i), k0/g.cin, (k0+kLen-1)/g.cin)
	}
}

// paddingOnly reports whether, for the n output positions from pos, every
// kernel tap in [t0, t1] (taps in [KH, KW] order) reads outside the input
// (or, with input dilation, between its values): their im2col values are
// all zeros. At small spatial sizes many are (ResNet's dilated 8x8 layers
// at 128 px: 31% of the im2col).
func (g *im2colGeometry) paddingOnly(pos, n, t0, t1 int) bool {
	for p := pos; p < pos+n; p++ {
		ox, oy := p%g.wo, (p/g.wo)%g.ho
		for t := t0; t <= t1; t++ {
			_, inY := undilated(oy*g.strideH-g.padTop+(t/g.kw)*g.dilateH, g.h, g.inDilH)
			_, inX := undilated(ox*g.strideW-g.padLeft+(t%g.kw)*g.dilateW, g.w, g.inDilW)
			if inY && inX {
				return false
			}
		}
	}
	return true
}

// isIdentity reports whether the convolution's im2col matrix is its input:
// a 1x1 kernel, stride 1, no padding, no dilations.
func (g *im2colGeometry) isIdentity() bool {
	return g.kh == 1 && g.kw == 1 && g.strideH == 1 && g.strideW == 1 && g.padTop == 0 && g.padLeft == 0 &&
		g.ho == g.h && g.wo == g.w && g.inDilH == 1 && g.inDilW == 1
}

// im2colGeometry is a 2D channels-last convolution's sizes.
type im2colGeometry struct {
	n, h, w, cin     int
	kh, kw, cout     int
	ho, wo           int
	strideH, strideW int
	padTop, padLeft  int
	dilateH, dilateW int
	inDilH, inDilW   int  // input dilations (a strided convolution's input gradient)
	kernelSwapped    bool // kernel is [KH, KW, Cout, Cin] (a convolution's input gradient)
	kernelReversed   bool // kernel's taps are read in reverse order (convKernelReverseFusion)
	// kernelFrozen is the kernel buffer's freeze number
	// (Buffer.FrozenEpoch) when the product reads the kernel in place,
	// else 0: values derived from it may then be kept on that promise.
	kernelFrozen uint64
}

// im2colGeometryFor returns the geometry of a convolution that
// execConvGeneralIm2col runs, or ok false.
func im2colGeometryFor(inShape, kernelShape, outShape shapes.Shape, p *convNode) (g im2colGeometry, ok bool) {
	if inShape.DType != dtypes.Float32 || kernelShape.DType != dtypes.Float32 || outShape.DType != dtypes.Float32 ||
		inShape.Rank() != 4 || kernelShape.Rank() != 4 || outShape.Rank() != 4 ||
		p.channelGroupCount != 1 || p.batchGroupCount != 1 {
		return g, false
	}
	a := p.axes
	swapped := a.KernelInputChannels == 3 && a.KernelOutputChannels == 2
	if a.InputBatch != 0 || a.InputChannels != 3 || len(a.InputSpatial) != 2 || a.InputSpatial[0] != 1 || a.InputSpatial[1] != 2 ||
		!(swapped || a.KernelInputChannels == 2 && a.KernelOutputChannels == 3) ||
		len(a.KernelSpatial) != 2 || a.KernelSpatial[0] != 0 || a.KernelSpatial[1] != 1 ||
		a.OutputBatch != 0 || a.OutputChannels != 3 || len(a.OutputSpatial) != 2 || a.OutputSpatial[0] != 1 || a.OutputSpatial[1] != 2 {
		return g, false
	}
	d, kd, od := inShape.Dimensions, kernelShape.Dimensions, outShape.Dimensions
	g = im2colGeometry{
		n: d[0], h: d[1], w: d[2], cin: d[3],
		kh: kd[0], kw: kd[1], cout: kd[3],
		ho: od[1], wo: od[2],
		strideH: 1, strideW: 1, dilateH: 1, dilateW: 1, inDilH: 1, inDilW: 1,
		kernelSwapped: swapped, kernelReversed: p.kernelReversed,
	}
	kernelIn := kd[2]
	if swapped {
		g.cout, kernelIn = kd[2], kd[3]
	}
	if len(p.strides) == 2 {
		g.strideH, g.strideW = p.strides[0], p.strides[1]
	}
	if len(p.paddings) == 2 {
		g.padTop, g.padLeft = p.paddings[0][0], p.paddings[1][0]
		if p.paddings[0][0] < 0 || p.paddings[0][1] < 0 || p.paddings[1][0] < 0 || p.paddings[1][1] < 0 {
			return g, false
		}
	}
	if len(p.kernelDilations) == 2 {
		g.dilateH, g.dilateW = p.kernelDilations[0], p.kernelDilations[1]
	}
	if p.hasInputDilations {
		if len(p.inputDilations) != 2 {
			return g, false
		}
		g.inDilH, g.inDilW = p.inputDilations[0], p.inputDilations[1]
	}
	if kernelIn != g.cin || od[0] != g.n || od[3] != g.cout || g.n*g.ho*g.wo == 0 || g.cin == 0 || g.cout == 0 {
		return g, false
	}
	return g, true
}

// kernelMatrix returns the kernel as the [KH*KW*Cin, Cout] row-major matrix
// of the product: the kernel itself, or a copy with each tap's matrix
// transposed when it is stored [KH, KW, Cout, Cin], and the taps in
// reverse order when kernelReversed (reversing both spatial axes reverses
// the order of the KH*KW taps).
func (g *im2colGeometry) kernelMatrix(backend *gobackend.Backend, kernel []float32) (matrix []float32, release func(), err error) {
	if g.kernelInPlace() {
		return kernel, func() {}, nil
	}
	buf, err := backend.GetBuffer(shapes.Make(dtypes.Float32, len(kernel)))
	if err != nil {
		return nil, nil, err
	}
	m := buf.Flat.([]float32)
	size := g.cin * g.cout
	taps := g.kh * g.kw
	for tap := range taps {
		src := tap
		if g.kernelReversed {
			src = taps - 1 - tap
		}
		if g.kernelSwapped {
			// [Cout, Cin] -> [Cin, Cout]
			transpose2D(backend, kernel[src*size:(src+1)*size], m[tap*size:(tap+1)*size], g.cout, g.cin)
		} else {
			copy(m[tap*size:(tap+1)*size], kernel[src*size:(src+1)*size])
		}
	}
	return m, func() { backend.PutBuffer(buf) }, nil
}

// kernelInPlace reports whether kernelMatrix returns the kernel itself
// (stored [KH, KW, Cin, Cout], taps in order) rather than a copy.
func (g *im2colGeometry) kernelInPlace() bool {
	return !g.kernelSwapped && !g.kernelReversed
}

// undilated maps index i of an input axis of n values dilated by dil (dil-1
// zeros between neighbours) to the index of its value, or ok false when i
// falls outside the axis or on one of the zeros.
func undilated(i, n, dil int) (idx int, ok bool) {
	if i < 0 || i > (n-1)*dil {
		return 0, false
	}
	if dil > 1 {
		if i%dil != 0 {
			return 0, false
		}
		i /= dil
	}
	return i, true
}

// fill writes rows [lo, hi) of a block of width columns of the im2col
// matrix, from column c0, into dst (rows width values apart): row r is
// output position r0+r, the matrix's columns the kernel's taps in
// [KH, KW, Cin] order. With c0 0 and width KH*KW*Cin, it writes whole rows.
func (g *im2colGeometry) fill(in, dst []float32, width, r0, lo, hi, c0 int) {
	g.fillStrided(in, dst, width, width, r0, lo, hi, c0)
}

// fillStrided is fill with dst's rows stride values apart (at least width).
func (g *im2colGeometry) fillStrided(in, dst []float32, width, stride, r0, lo, hi, c0 int) {
	c1 := c0 + width
	rowCols := g.kw * g.cin // one kernel row's columns
	// The rows are taken a run of output positions of one output row at a
	// time: the run's image, output row and, per kernel row, input row are
	// worked out once (per position, the divisions and checks cost more
	// than copying a few channels, as in a 3-channel stem).
	for r := lo; r < hi; {
		pos := r0 + r
		ox0 := pos % g.wo
		oy := (pos / g.wo) % g.ho
		b := pos / (g.wo * g.ho)
		n := min(hi-r, g.wo-ox0) // positions in the run
		// The run's positions whose kernel row lies inside the input
		// (dilateW and inDilW 1): [inLo, inHi).
		inLo, inHi := n, n
		if last := g.w - g.kw + g.padLeft; g.dilateW == 1 && g.inDilW == 1 && last >= 0 {
			// ox*strideW - padLeft >= 0 and <= w - kw.
			inLo = min(n, max(0, (g.padLeft-ox0*g.strideW+g.strideW-1)/g.strideW))
			inHi = max(inLo, min(n, last/g.strideW-ox0+1))
		}
		for ky := c0 / rowCols; ky <= (c1-1)/rowCols; ky++ {
			// The block's columns of kernel row ky: [lo, hi).
			lo, hi := max(c0, ky*rowCols), min(c1, (ky+1)*rowCols)
			iy, ok := undilated(oy*g.strideH-g.padTop+ky*g.dilateH, g.h, g.inDilH)
			if !ok {
				for j := range n {
					clear(dst[(r+j)*stride+lo-c0 : (r+j)*stride+hi-c0])
				}
				continue
			}
			base := (b*g.h + iy) * g.w
			for j := range n {
				row := dst[(r+j)*stride : (r+j)*stride+width]
				ix0 := (ox0+j)*g.strideW - g.padLeft
				if j >= inLo && j < inHi {
					// The kernel row's taps are adjacent and all inside: one run.
					start := (base+ix0)*g.cin - ky*rowCols
					copy(row[lo-c0:hi-c0], in[start+lo:start+hi])
					continue
				}
				for kx := (lo - ky*rowCols) / g.cin; ky*rowCols+kx*g.cin < hi; kx++ {
					tlo, thi := max(lo, ky*rowCols+kx*g.cin), min(hi, ky*rowCols+(kx+1)*g.cin)
					ix, ok := undilated(ix0+kx*g.dilateW, g.w, g.inDilW)
					if !ok {
						clear(row[tlo-c0 : thi-c0])
						continue
					}
					start := (base+ix)*g.cin - ky*rowCols - kx*g.cin
					copy(row[tlo-c0:thi-c0], in[start+tlo:start+thi])
				}
			}
		}
		r += n
	}
}

// execConvKernelGradIm2col executes the convolution that GoMLX's autodiff
// builds for the kernel gradient of a channels-last float32 2D
// convolution (x [N, H, W, Cin] convolved with dy [N, Ho, Wo, Cout] into
// [KH, KW, Cin, Cout], with x's batch and channel axes swapped in the axes
// configuration, and the forward stride and dilation exchanged) as one
// matrix product: dW[(ky, kx, ci), co] = sum over output positions of
// im2col(x)[pos, (ky, kx, ci)] * dy[pos, co]: with the strided tile kernel
// as tiles of im2col blocks (kernelGradTiles), else as dy^T [Cout, P] x
// im2col [P, KH*KW*Cin] by the registered DotGeneral (which splits the long
// contracting axis across workers), then transposed. ok is false when the
// convolution is not of this kind.
func execConvKernelGradIm2col(backend *gobackend.Backend, node *gobackend.Node, inputs []*gobackend.Buffer) (output *gobackend.Buffer, ok bool, err error) {
	x, dy := inputs[0], inputs[1]
	p := node.Data.(*convNode)
	a := p.axes
	xs, ds, os := x.RawShape, dy.RawShape, node.Shape
	if xs.DType != dtypes.Float32 || ds.DType != dtypes.Float32 || os.DType != dtypes.Float32 ||
		xs.Rank() != 4 || ds.Rank() != 4 || os.Rank() != 4 ||
		p.channelGroupCount != 1 || p.batchGroupCount != 1 || p.hasInputDilations ||
		a.InputBatch != 3 || a.InputChannels != 0 || len(a.InputSpatial) != 2 || a.InputSpatial[0] != 1 || a.InputSpatial[1] != 2 ||
		a.KernelInputChannels != 0 || a.KernelOutputChannels != 3 || len(a.KernelSpatial) != 2 || a.KernelSpatial[0] != 1 || a.KernelSpatial[1] != 2 ||
		a.OutputBatch != 2 || a.OutputChannels != 3 || len(a.OutputSpatial) != 2 || a.OutputSpatial[0] != 0 || a.OutputSpatial[1] != 1 {
		return nil, false, nil
	}
	xd, dd, od := xs.Dimensions, ds.Dimensions, os.Dimensions
	// The forward convolution: its stride is this one's kernel dilation,
	// its dilation this one's stride, its padding this one's start padding.
	g := im2colGeometry{
		n: xd[0], h: xd[1], w: xd[2], cin: xd[3],
		kh: od[0], kw: od[1], cout: dd[3],
		ho: dd[1], wo: dd[2],
		strideH: 1, strideW: 1, dilateH: 1, dilateW: 1, inDilH: 1, inDilW: 1,
	}
	if len(p.kernelDilations) == 2 {
		g.strideH, g.strideW = p.kernelDilations[0], p.kernelDilations[1]
	}
	if len(p.strides) == 2 {
		g.dilateH, g.dilateW = p.strides[0], p.strides[1]
	}
	if len(p.paddings) == 2 {
		g.padTop, g.padLeft = p.paddings[0][0], p.paddings[1][0]
	}
	if g.padTop < 0 || g.padLeft < 0 || dd[0] != g.n || od[2] != g.cin || od[3] != g.cout || g.n*g.ho*g.wo == 0 {
		return nil, false, nil
	}
	tile := dot.Float32Tile8x32Strided
	impl := dot.FindRegisteredImplementation(dot.LayoutNonTransposed, dtypes.Float32, dtypes.Float32)
	if impl == nil && tile == nil {
		return nil, false, nil
	}
	output, err = backend.GetBuffer(os)
	if err != nil {
		return nil, true, err
	}
	if backend.NoOps {
		return output, true, nil
	}
	if tile != nil {
		if err := g.kernelGradTiles(backend, tile, x.Flat.([]float32), dy.Flat.([]float32), output.Flat.([]float32)); err != nil {
			backend.PutBuffer(output)
			return nil, true, err
		}
		return output, true, nil
	}
	k := g.kh * g.kw * g.cin
	positions := g.n * g.ho * g.wo
	bufs := make([]*gobackend.Buffer, 0, 3)
	defer func() {
		for _, b := range bufs {
			backend.PutBuffer(b)
		}
	}()
	get := func(n int) ([]float32, error) {
		b, err := backend.GetBuffer(shapes.Make(dtypes.Float32, n))
		if err != nil {
			return nil, err
		}
		bufs = append(bufs, b)
		return b.Flat.([]float32), nil
	}
	cols, err := get(positions * k)
	if err != nil {
		backend.PutBuffer(output)
		return nil, true, err
	}
	dyT, err := get(g.cout * positions)
	if err != nil {
		backend.PutBuffer(output)
		return nil, true, err
	}
	prod, err := get(g.cout * k)
	if err != nil {
		backend.PutBuffer(output)
		return nil, true, err
	}
	in := x.Flat.([]float32)
	dyFlat := dy.Flat.([]float32)
	parallelRanges(backend, positions, max(1, parallelMinElements/k), func(lo, hi int) {
		g.fill(in, cols, k, 0, lo, hi, 0)
	})
	transpose2D(backend, dyFlat, dyT, positions, g.cout) // dy^T [Cout, P]
	nodeData := &dot.NodeData{
		InputDType: dtypes.Float32, OutputDType: dtypes.Float32,
		Layout:    dot.LayoutNonTransposed,
		BatchSize: 1, LHSCrossSize: g.cout, RHSCrossSize: k, ContractingSize: positions,
	}
	dot.CallRegisteredImplementation(backend, impl, &gobackend.Buffer{Flat: dyT}, &gobackend.Buffer{Flat: cols},
		&gobackend.Buffer{Flat: prod}, nodeData)
	transpose2D(backend, prod, output.Flat.([]float32), g.cout, k)
	return output, true, nil
}

// kernelGradBlockRows is how many output positions kernelGradTiles takes
// at a time: the contracting length of each tile product.
const kernelGradBlockRows = 256

// kernelGradItems is about how many work items kernelGradTiles makes
// (column blocks times segments of output positions). It is a constant,
// not a multiple of the worker count: each segment is summed apart, so the
// segments, and with them the rounding of the result, depend on the shapes
// alone, whatever the backend's parallelism.
const kernelGradItems = 16

// kernelGradBlockCols is about how many im2col columns kernelGradTiles
// writes at a time (with kernelGradBlockRows rows, 256 KB: in L2 while its
// tiles read it, with the block's columns of the sums).
const kernelGradBlockCols = 256

// kernelGradTiles computes a convolution's kernel gradient,
// dW^T [Cout, K] = dy^T [Cout, P] x im2col(x) [P, K], without the whole
// im2col matrix. dy is transposed first (the tiles' lhs rows, read in
// place). The work items are blocks of at most kernelGradBlockCols
// im2col columns times segments of output positions (one segment when
// the column blocks are enough to keep the workers busy): an item writes
// its positions' im2col rows kernelGradBlockRows at a time, a block of
// columns, and adds each 8 x 32 tile of the product to its segment's sums
// of those columns, reading the 32 im2col columns in place
// (dot.Float32Tile8x32Strided). The segments' sums are added and
// transposed into out ([KH, KW, Cin, Cout]). The product of the whole
// matrices (the fallback) writes and packs the im2col matrix in memory
// (for 48 images of 12 x 12 x 96 values, 24 MB).
func (g *im2colGeometry) kernelGradTiles(backend *gobackend.Backend,
	tile func(lhs []float32, lhsStride int, rhs []float32, rhsStride int, out []float32, outStride int, k int, accumulate bool),
	in, dy, out []float32) error {
	k := g.kh * g.kw * g.cin
	positions := g.n * g.ho * g.wo
	kPad := (k + 31) / 32 * 32
	groups := (g.cout + 7) / 8 // of 8 lhs rows
	coutPad := groups * 8
	// Column blocks of about kernelGradBlockCols, of equal widths (a
	// narrow last block would cost a whole block's im2col walk for a few
	// columns).
	colBlocks := max(1, (kPad+kernelGradBlockCols/2)/kernelGradBlockCols)
	blockCols := ((kPad+colBlocks-1)/colBlocks + 31) / 32 * 32
	colBlocks = (k + blockCols - 1) / blockCols
	rowBlocks := (positions + kernelGradBlockRows - 1) / kernelGradBlockRows
	workers := workerCount(backend)
	segments := min(rowBlocks, max(1, (kernelGradItems+colBlocks-1)/colBlocks))
	segBlocks := (rowBlocks + segments - 1) / segments // row blocks per segment
	segments = (rowBlocks + segBlocks - 1) / segBlocks
	// The rows of an im2col block are an odd number of cache lines apart:
	// at a multiple of 1 KB, a strip's 256 rows of 128 bytes would fall in
	// a few of L1's sets and be read again from L2 by every tile.
	colsStride := blockCols + 16

	bufs := make([]*gobackend.Buffer, 0, 2+2*workers)
	var mu sync.Mutex
	defer func() {
		for _, b := range bufs {
			backend.PutBuffer(b)
		}
	}()
	get := func(n int) ([]float32, error) {
		b, err := backend.GetBuffer(shapes.Make(dtypes.Float32, n))
		if err != nil {
			return nil, err
		}
		mu.Lock()
		bufs = append(bufs, b)
		mu.Unlock()
		return b.Flat.([]float32), nil
	}
	dyT, err := get(coutPad * positions)
	if err != nil {
		return err
	}
	transpose2D(backend, dy, dyT[:g.cout*positions], positions, g.cout)
	clear(dyT[g.cout*positions:])
	sums, err := get(segments * coutPad * kPad)
	if err != nil {
		return err
	}
	err = parallelPull(backend, colBlocks*segments, func(next func() (int, bool)) error {
		var cols []float32
		for item, ok := next(); ok; item, ok = next() {
			if cols == nil {
				var err error
				if cols, err = get(kernelGradBlockRows*colsStride + 32); err != nil {
					return err
				}
				// The last strip of the last column block, when narrower
				// than 32 columns, reads past its last row: zeros (its sums
				// past K are dropped).
				clear(cols[kernelGradBlockRows*colsStride:])
			}
			cb, seg := item%colBlocks, item/colBlocks
			c0 := cb * blockCols
			width := min(blockCols, k-c0)
			sum := sums[seg*coutPad*kPad : (seg+1)*coutPad*kPad]
			for rb := seg * segBlocks; rb < min(rowBlocks, (seg+1)*segBlocks); rb++ {
				p0 := rb * kernelGradBlockRows
				rows := min(kernelGradBlockRows, positions-p0)
				g.fillStrided(in, cols, width, colsStride, p0, 0, rows, c0)
				first := rb == seg*segBlocks
				for s := 0; s < width; s += 32 {
					// Past width, a narrower last strip reads the next row's
					// first values (or the zeros after the last row) into
					// sums past K.
					for i := range groups {
						tile(dyT[8*i*positions+p0:], positions, cols[s:], colsStride, sum[8*i*kPad+c0+s:], kPad, rows, !first)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// out[i, co] is the sum over segments of sums[seg][co, i].
	if transposeSegmentSums(backend, sums, segments, coutPad, kPad, g.cout, k, out) {
		return nil
	}
	parallelRanges(backend, (k+15)/16, max(1, parallelMinElements/(16*g.cout*segments)), func(lo, hi int) {
		for i0 := 16 * lo; i0 < min(k, 16*hi); i0 += 16 {
			i1 := min(k, i0+16)
			for co := range g.cout {
				for i := i0; i < i1; i++ {
					v := sums[co*kPad+i]
					for seg := 1; seg < segments; seg++ {
						v += sums[(seg*coutPad+co)*kPad+i]
					}
					out[i*g.cout+co] = v
				}
			}
		}
	})
	return nil
}
