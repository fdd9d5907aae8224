// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package gobackend

import "sync"

// DefaultFreeBuffersLimit is the default byte limit of FreeBuffers.
const DefaultFreeBuffersLimit = 256 << 20

// FreeBuffers keeps buffers given back by PutBuffer for reuse by GetBuffer,
// up to Limit bytes in all, across garbage collections.
//
// The sync.Pool behind each buffer size drops whatever it holds once it
// has sat through two collections. A program that runs graphs of many
// shapes (inference on images of different sizes) comes back to a size
// after more than that, so most of its large intermediate buffers were
// allocated (and zeroed) anew, and the allocation rate kept the collector
// busy. FreeBuffers keeps them instead; when a buffer does not fit under
// Limit, the size least recently asked for gives up its buffers first,
// and a buffer larger than Limit goes to the sync.Pool as before.
//
// The zero value is ready: it uses DefaultFreeBuffersLimit. A negative
// Limit disables it (every buffer goes to the sync.Pools).
type FreeBuffers struct {
	// Limit is the most bytes held; 0 means DefaultFreeBuffersLimit. Set it
	// before the backend runs anything.
	Limit int

	mu     sync.Mutex
	bySize map[int]*freeList
	bytes  int
	clock  uint64
}

// freeList holds the free buffers of one bucketed size.
type freeList struct {
	bufs    []*Buffer
	lastUse uint64 // FreeBuffers.clock at the last get or put of this size
}

func (f *FreeBuffers) limit() int {
	if f.Limit == 0 {
		return DefaultFreeBuffersLimit
	}
	return f.Limit
}

// get returns a free buffer of exactly size bytes, or nil.
func (f *FreeBuffers) get(size int) *Buffer {
	if f.limit() < 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clock++
	list := f.bySize[size]
	if list == nil {
		return nil // put makes the size's list
	}
	list.lastUse = f.clock
	n := len(list.bufs)
	if n == 0 {
		return nil
	}
	buf := list.bufs[n-1]
	list.bufs[n-1] = nil
	list.bufs = list.bufs[:n-1]
	f.bytes -= size
	return buf
}

// put keeps buf for a later get and reports whether it did.
func (f *FreeBuffers) put(buf *Buffer) bool {
	size := len(buf.RawBytes)
	limit := f.limit()
	if limit < 0 || size > limit {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clock++
	if f.bySize == nil {
		f.bySize = make(map[int]*freeList)
	}
	list := f.bySize[size]
	if list == nil {
		list = &freeList{}
		f.bySize[size] = list
	}
	list.lastUse = f.clock
	for f.bytes+size > limit {
		victim := f.leastRecentlyUsed(list)
		if victim == nil {
			return false
		}
		for _, b := range victim.bufs {
			f.bytes -= len(b.RawBytes)
		}
		clear(victim.bufs)
		victim.bufs = victim.bufs[:0]
	}
	list.bufs = append(list.bufs, buf)
	f.bytes += size
	return true
}

// leastRecentlyUsed returns the non-empty list other than keep used
// longest ago, or nil when there is none.
func (f *FreeBuffers) leastRecentlyUsed(keep *freeList) *freeList {
	var victim *freeList
	for _, l := range f.bySize {
		if l == keep || len(l.bufs) == 0 {
			continue
		}
		if victim == nil || l.lastUse < victim.lastUse {
			victim = l
		}
	}
	return victim
}

// Bytes returns the bytes held.
func (f *FreeBuffers) Bytes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bytes
}

// Clear drops every buffer held.
func (f *FreeBuffers) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bySize = nil
	f.bytes = 0
}
