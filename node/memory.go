package node

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Memory after a burst.
//
// cmd/meridian runs the collector at GOGC=400: a proxy's heap is small and
// short-lived, and collecting less often saves a lot of CPU under load.
// The price shows after a burst: the garbage it left (the heap may reach
// five times what is live) is collected only when the heap next grows to
// its goal or by the runtime's forced collection every two minutes, and
// freed memory goes back to the OS slowly after that. An outside check saw
// an idle node at 70 MiB of RSS for two minutes after 2000 connections
// came and went, and at 168 MiB after a few rounds of mixed traffic, for
// 5 MiB live. nginx is back at its baseline as soon as the connections
// close.
//
// So the node looks every few seconds: when it is quiet (under quietAlloc
// bytes allocated since the last look) and its heap holds more than
// releaseMinHeap bytes from the OS, and more than twice what it held after
// its last release (or at its start), it collects (twice, for what
// sync.Pools held) and returns the freed memory at once
// (debug.FreeOSMemory). Quiet is judged by allocation alone: a node with
// a WebSocket or an event stream open always has a request in flight, and
// allocates next to nothing for it. What the last collection found live is
// no guide either: it may have run at a burst's peak. Under load the node
// is never quiet, and a node that serves a request now and then takes long
// to double its heap, so this runs about once per burst.
//
// A release made while the memory was still in use (a quiet node with a
// thousand streams waiting on a slow upstream allocates next to nothing)
// sets the mark high, and the heap then held only seldom doubles it again
// after those requests end, whatever of it became garbage: nothing tells
// without a collection. So a quiet node holding more than releaseMinHeap
// also releases once releaseAgainAfter has passed since its last release:
// a collection a minute at most while quiet, where the runtime forces one
// every two minutes anyway.

// idleMemoryLook is how often the node looks.
const idleMemoryLook = 5 * time.Second

// releaseMinHeap is the heap below which a quiet node's memory is left to
// the runtime.
const releaseMinHeap = 16 << 20

// quietAlloc is what a quiet node allocates at most between two looks.
const quietAlloc = 1 << 20

// releaseAgainAfter is how long after a release a quiet node holding more
// than releaseMinHeap releases again, its heap doubled or not.
const releaseAgainAfter = time.Minute

var heapSamples = []metrics.Sample{
	{Name: "/gc/heap/allocs:bytes"},
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/memory/classes/heap/free:bytes"},
	{Name: "/memory/classes/heap/unused:bytes"},
}

// heapNow returns the bytes allocated so far and the heap's bytes held
// from the OS (objects, live or not yet collected, and free memory not
// returned).
func heapNow() (allocs, held uint64) {
	s := make([]metrics.Sample, len(heapSamples))
	copy(s, heapSamples)
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() == metrics.KindUint64 {
			return s[i].Value.Uint64()
		}
		return 0
	}
	return v(0), v(1) + v(2) + v(3)
}

// shouldRelease is the policy above, given the bytes allocated since the
// last look, the heap held now and after the last release, and the time
// since that release.
func shouldRelease(sinceLook, held, heldAfter uint64, sinceRelease time.Duration) bool {
	return sinceLook < quietAlloc && held > releaseMinHeap && (held > 2*heldAfter || sinceRelease >= releaseAgainAfter)
}

// memoryReleaser is the policy's state: the allocations at the last look,
// the heap held after the last release (or at the start), and when that
// was.
type memoryReleaser struct {
	lastLook, heldAfter uint64
	releasedAt          time.Time
}

func newMemoryReleaser() *memoryReleaser {
	r := &memoryReleaser{releasedAt: time.Now()}
	r.lastLook, r.heldAfter = heapNow()
	return r
}

// look releases memory if the policy says so, and reports whether it did.
func (r *memoryReleaser) look() bool {
	allocs, held := heapNow()
	release := shouldRelease(allocs-r.lastLook, held, r.heldAfter, time.Since(r.releasedAt))
	if release {
		// Two collections: what sync.Pools held (buffers of connections
		// gone) survives the first one as the pools' victims.
		runtime.GC()
		debug.FreeOSMemory()
		allocs, r.heldAfter = heapNow()
		r.releasedAt = time.Now()
	}
	r.lastLook = allocs
	return release
}

// releaseIdleMemory looks every interval until stop closes.
func releaseIdleMemory(stop <-chan struct{}, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	r := newMemoryReleaser()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			r.look()
		}
	}
}
