package node

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// accessLogBuffer is the size of the access log's buffer: a burst of
// lines goes out in one write, not one write per request.
const accessLogBuffer = 64 << 10

// flushingWriter buffers whole writes (slog writes a record at once) and
// writes them out when the buffer fills, at most interval after the
// first line buffered, and on Close, so that an access log costs a write
// per batch rather than per request (Envoy's file access logs flush every
// second the same way). A write larger than the buffer goes straight
// through, after what was buffered. Nothing runs while nothing waits: the
// flush timer is armed by the first line into an empty buffer.
type flushingWriter struct {
	mu       sync.Mutex
	w        io.Writer
	bw       *bufio.Writer
	interval time.Duration
	timer    *time.Timer
	armed    bool
	closed   bool
}

func newFlushingWriter(w io.Writer, interval time.Duration) *flushingWriter {
	return &flushingWriter{w: w, bw: bufio.NewWriterSize(w, accessLogBuffer), interval: interval}
}

// Write buffers p whole: if it does not fit, what is buffered goes out
// first, so that a line is never split across two writes.
func (f *flushingWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, io.ErrClosedPipe
	}
	if len(p) > f.bw.Available() && f.bw.Buffered() > 0 {
		f.flushLocked()
	}
	n, err := f.bw.Write(p)
	if err != nil {
		f.bw.Reset(f.w) // see flushLocked
		return n, err
	}
	if f.bw.Buffered() > 0 && !f.armed {
		f.armed = true
		if f.timer == nil {
			f.timer = time.AfterFunc(f.interval, f.timerFlush)
		} else {
			f.timer.Reset(f.interval)
		}
	}
	return n, nil
}

func (f *flushingWriter) timerFlush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed = false
	if !f.closed {
		f.flushLocked()
	}
}

// Flush writes out what is buffered.
func (f *flushingWriter) Flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flushLocked()
}

func (f *flushingWriter) flushLocked() error {
	if f.bw.Buffered() == 0 {
		return nil
	}
	err := f.bw.Flush()
	if err != nil {
		// A bufio.Writer that failed stays failed; start afresh, so that
		// a passing problem (a full disk freed) loses only what was
		// buffered then.
		f.bw.Reset(f.w)
	}
	return err
}

// Close writes out what is left; writes after it fail.
func (f *flushingWriter) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	if f.timer != nil {
		f.timer.Stop()
	}
	return f.flushLocked()
}
