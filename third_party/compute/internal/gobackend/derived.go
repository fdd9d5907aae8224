// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package gobackend

import (
	"bytes"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/gomlx/compute/internal/gobackend/workerspool"
)

// DerivedCacheMaxBytes bounds the memory a backend's DerivedCache holds
// (the operands' copies and the derived values together).
const DerivedCacheMaxBytes = 512 << 20

// derivedSeenMax bounds how many operands seen once a DerivedCache
// remembers (a hash each); past it they are forgotten.
const derivedSeenMax = 4096

// DerivedCache keeps values an op derives from an operand that is usually
// the same from one execution to the next, such as a convolution's
// transformed kernel in inference, where the weights are the same
// parameter buffers every time, so that they are not derived again on
// every execution. An operand is known by its memory (its first element's
// address and length) and a key of the op's own (the shapes the
// derivation depends on).
//
// An operand in a frozen buffer (Buffer.Freeze: its holder promised not to
// write it) is kept the first time (or, kept before the freeze, is
// trusted from then on), and its kept values are used while the buffer
// stays in that freeze, without reading the operand. Any other
// operand is kept once it has been seen twice with the same bytes (a hash
// of them the first time), with a copy of its bytes, and its kept values
// are used only when its bytes equal that copy. Either way a result never
// depends on what the cache holds. Operands that change between
// executions (a kernel being trained, updated in place or at a new address
// every step) are never kept, and cost a hash.
//
// The zero value is ready to use; it is safe for concurrent use. Derived
// values handed out are never written again.
type DerivedCache struct {
	// Workers, when set (the backend sets its own), compare a large
	// operand with its kept copy in ranges on the free workers: that
	// comparison reads every weight of a model twice on each execution
	// (8% of a ResNet-18 inference at 128 px, batch 8), on one core
	// while the others wait for the op.
	Workers *workerspool.Pool

	mu      sync.Mutex
	seed    maphash.Seed
	entries map[derivedKey]*derivedEntry
	seen    map[derivedKey]uint64
	bytes   int
}

// derivedKey holds the operand's address as a number: the cache does not
// keep the operand alive, and an address reused by other memory is told
// apart by the bytes.
type derivedKey struct {
	addr uintptr
	n    int
	kind string
	dims [4]int
}

// derivedEntry is a kept derivation: valid while its operand's buffer
// is in the freeze numbered frozen (when not 0), or while the operand
// holds the bytes of source (when not nil).
type derivedEntry struct {
	frozen  uint64
	source  []byte
	derived []float32
}

// valid reports whether e's values were derived from the operand src in
// a buffer whose freeze number is frozen (0: not frozen), comparing bytes
// with equal where the freeze does not vouch for them.
func (e *derivedEntry) valid(frozen uint64, src []byte, equal func(a, b []byte) bool) bool {
	return frozen != 0 && e.frozen == frozen || e.source != nil && equal(e.source, src)
}

// Float32 returns the values derive writes (n of them) for the operand
// src, identified with kind and dims: the kept ones when they were derived
// from what src holds, else derived now into a slice from alloc (a new one
// when alloc is nil). frozen is the freeze number (Buffer.FrozenEpoch) of
// the buffer src is read in place from, 0 when it is not frozen or src is
// a copy. The values derived now are kept when src's buffer is frozen, or
// when src had the same bytes at the same address the time before. kept
// reports whether the cache holds the values (the caller must not write
// them); when it does not, they are in alloc's slice, which the caller
// owns again. With alloc, a kernel being trained (never kept) is derived
// into buffers the caller reuses instead of newly allocated, zeroed memory
// every step.
func (c *DerivedCache) Float32(src []float32, frozen uint64, kind string, dims [4]int, n int, alloc func(n int) []float32, derive func(dst []float32)) (values []float32, kept bool) {
	if alloc == nil {
		alloc = func(n int) []float32 { return make([]float32, n) }
	}
	if len(src) == 0 {
		out := alloc(n)[:n]
		derive(out)
		return out, false
	}
	key := derivedKey{addr: uintptr(unsafe.Pointer(&src[0])), n: len(src), kind: kind, dims: dims}
	srcBytes := unsafe.Slice((*byte)(unsafe.Pointer(&src[0])), 4*len(src))
	c.mu.Lock()
	e := c.entries[key]
	c.mu.Unlock()
	if e != nil && e.valid(frozen, srcBytes, c.equal) {
		if frozen != 0 && e.frozen != frozen {
			c.trust(key, e, frozen)
		}
		return e.derived, true
	}
	out := alloc(n)[:n]
	derive(out)

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.seed, c.entries, c.seen = maphash.MakeSeed(), map[derivedKey]*derivedEntry{}, map[derivedKey]uint64{}
	}
	var h uint64
	if frozen == 0 {
		h = maphash.Bytes(c.seed, srcBytes)
	}
	if old := c.entries[key]; old != nil {
		// Compared on this goroutine alone, not on the workers: c.mu is held.
		if old.valid(frozen, srcBytes, bytes.Equal) {
			return out, false // kept meanwhile by a concurrent caller: out is as good
		}
		delete(c.entries, key) // the operand changed at this address
		c.bytes -= len(old.source) + 4*len(old.derived)
		if frozen == 0 {
			c.seen[key] = h
			return out, false
		}
	}
	if frozen != 0 {
		// Kept without a copy of the operand: the freeze vouches for it.
		return out, c.keep(key, &derivedEntry{frozen: frozen, derived: out})
	}
	if prev, ok := c.seen[key]; ok && prev == h {
		delete(c.seen, key)
		return out, c.keep(key, &derivedEntry{source: bytes.Clone(srcBytes), derived: out})
	}
	if len(c.seen) >= derivedSeenMax {
		clear(c.seen)
	}
	c.seen[key] = h
	return out, false
}

// trust replaces e, found valid by its bytes for an operand now in the
// freeze numbered frozen, with an entry trusted for that freeze (and
// without the copy of the operand), unless e was replaced meanwhile.
// Entries are not changed in place: they are read without c.mu.
func (c *DerivedCache) trust(key derivedKey, e *derivedEntry, frozen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries[key] == e {
		c.entries[key] = &derivedEntry{frozen: frozen, derived: e.derived}
		c.bytes -= len(e.source)
	}
}

// keep adds e to the entries under key, unless it is larger than
// DerivedCacheMaxBytes, and reports whether it did. c.mu is held.
func (c *DerivedCache) keep(key derivedKey, e *derivedEntry) bool {
	size := len(e.source) + 4*len(e.derived)
	if size > DerivedCacheMaxBytes {
		return false
	}
	if c.bytes+size > DerivedCacheMaxBytes {
		// Full: entries of operands that are gone (an earlier model's
		// weights) cannot be told from live ones, so all go; the live
		// ones are kept again at their next executions.
		clear(c.entries)
		c.bytes = 0
	}
	c.entries[key] = e
	c.bytes += size
	return true
}

// derivedEqualMinRange is the smallest range of bytes equal compares on
// a worker of its own: below it, handing it over costs more.
const derivedEqualMinRange = 1 << 20

// equal reports whether a and b hold the same bytes, comparing ranges of
// them on c.Workers' free workers when they are large.
func (c *DerivedCache) equal(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	var differ atomic.Bool
	c.Workers.Ranges(len(a), derivedEqualMinRange, func(lo, hi int) {
		if !bytes.Equal(a[lo:hi], b[lo:hi]) {
			differ.Store(true)
		}
	})
	return !differ.Load()
}

// Clear drops everything the cache holds.
func (c *DerivedCache) Clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries, c.seen, c.bytes = nil, nil, 0
}
