package node

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestShouldRelease(t *testing.T) {
	const mb = 1 << 20
	for _, c := range []struct {
		name                       string
		sinceLook, held, heldAfter uint64
		sinceRelease               time.Duration
		want                       bool
	}{
		{"quiet after a burst", 0, 60 * mb, 10 * mb, 5 * time.Second, true},
		{"still allocating", 5 * mb, 60 * mb, 10 * mb, 5 * time.Second, false},
		{"not twice the last release's", 0, 60 * mb, 40 * mb, 5 * time.Second, false},
		{"little held", 0, 15 * mb, 1 * mb, 5 * time.Second, false},
		// A release made while a stall held the memory set the mark
		// high; once it passes, the heap no longer doubles it.
		{"a minute after a release at a stall", 0, 130 * mb, 120 * mb, time.Minute, true},
		{"a minute after, still allocating", 5 * mb, 130 * mb, 120 * mb, time.Minute, false},
		{"a minute after, little held", 0, 15 * mb, 1 * mb, time.Minute, false},
	} {
		if got := shouldRelease(c.sinceLook, c.held, c.heldAfter, c.sinceRelease); got != c.want {
			t.Errorf("%s: shouldRelease = %v; want %v", c.name, got, c.want)
		}
	}
}

var garbageSink [][]byte

// A quiet node whose heap has more than doubled since its start collects
// its garbage and returns it to the OS at its next look, once; not while
// it is still allocating.
func TestReleaseIdleMemory(t *testing.T) {
	// No collection but the ones asked for, so that the garbage below
	// stays until the release collects it.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	runtime.GC()
	r := newMemoryReleaser()
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
