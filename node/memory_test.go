package node

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestShouldRelease(t *testing.T) {
	const mb = 1 << 20
	for _, c := range []struct {
		name                       string
		inFlight                   bool
		sinceLook, held, heldAfter uint64
		want                       bool
	}{
		{"quiet after a burst", false, 0, 60 * mb, 10 * mb, true},
		{"a request in flight", true, 0, 60 * mb, 10 * mb, false},
		{"still allocating", false, 5 * mb, 60 * mb, 10 * mb, false},
		{"not twice the last release's", false, 0, 60 * mb, 40 * mb, false},
		{"little held", false, 0, 15 * mb, 1 * mb, false},
	} {
		if got := shouldRelease(c.inFlight, c.sinceLook, c.held, c.heldAfter); got != c.want {
			t.Errorf("%s: shouldRelease = %v; want %v", c.name, got, c.want)
		}
	}
}

var garbageSink [][]byte

// A quiet node whose heap has more than doubled since its start collects
// its garbage and returns it to the OS at its next look, once; not while
// it is still allocating or a request is in flight.
func TestReleaseIdleMemory(t *testing.T) {
	// No collection but the ones asked for, so that the garbage below
	// stays until the release collects it.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	runtime.GC()
	var inFlight int64
	r := newMemoryReleaser(func() int64 { return inFlight })
	for range 64 {
		garbageSink = append(garbageSink, make([]byte, 1<<20))
	}
	garbageSink = nil
	_, before := heapNow()
	if before < 2*r.heldAfter || before < releaseMinHeap {
		t.Fatalf("heap held %d after 64 MiB of garbage, %d at the start", before, r.heldAfter)
	}
	if r.look() {
		t.Error("released while still allocating")
	}
	inFlight = 1
	if r.look() {
		t.Error("released with a request in flight")
	}
	inFlight = 0
	if !r.look() {
		t.Fatal("not released when quiet")
	}
	if _, after := heapNow(); after >= before/2 {
		t.Errorf("heap held %d after the release; want well under %d", after, before)
	}
	if r.look() {
		t.Error("released again with nothing new")
	}
}
