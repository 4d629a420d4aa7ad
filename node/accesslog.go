package node

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// logFile is the access log's file, which ReopenLogs opens anew at its
// path (after logrotate moved it away), as nginx does on SIGUSR1.
type logFile struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

func openLogFile(path string) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	return &logFile{path: path, f: f}, nil
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

// reopen opens the path anew and writes there from now on; if that fails,
// the open file is kept.
func (l *logFile) reopen() error {
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	return old.Close()
}

func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// lossWatch passes writes to the access log's destination and notices
// those that fail (a full disk, a closed pipe, a file made unwritable):
// the lines they held are counted (meridian_access_log_lines_lost_total)
// and said in the node's log, at most once per lossReportEvery, as nginx
// logs its failed access log writes. Losses held back by that limit are
// said when it allows (a timer, so that they are said even when writes
// recover meanwhile: an outside check saw the last batch never said), or
// at Close. Serving goes on either way.
type lossWatch struct {
	w       io.Writer
	lost    prometheus.Counter
	log     *slog.Logger
	every   time.Duration // lossReportEvery unless set (tests)
	mu      sync.Mutex
	last    time.Time   // of the last report
	unsaid  int         // lines lost since it
	lastErr error       // the last failure unsaid
	timer   *time.Timer // to say what is unsaid
	closed  bool
}

const lossReportEvery = 10 * time.Second

func (l *lossWatch) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	if err == nil {
		return n, nil
	}
	lines := bytes.Count(p[min(max(n, 0), len(p)):], []byte{'\n'})
	l.lost.Add(float64(lines))
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unsaid += lines
	l.lastErr = err
	every := l.every
	if every <= 0 {
		every = lossReportEvery
	}
	switch now := time.Now(); {
	case l.closed || now.Sub(l.last) >= every:
		l.reportLocked(now)
	case l.timer == nil:
		l.timer = time.AfterFunc(l.last.Add(every).Sub(now), l.reportHeld)
	}
	return n, err
}

func (l *lossWatch) reportHeld() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timer = nil
	if !l.closed {
		l.reportLocked(time.Now())
	}
}

func (l *lossWatch) reportLocked(now time.Time) {
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	if l.unsaid > 0 {
		l.log.Error("access log write failed; lines lost", "err", l.lastErr, "lines", l.unsaid)
	}
	l.last, l.unsaid, l.lastErr = now, 0, nil
}

// Close says what is unsaid and stops the timer; later losses are said at
// once.
func (l *lossWatch) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reportLocked(time.Now())
	l.closed = true
}

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

// accessLogHandler is a slog.Handler for the access log that writes the
// same JSON lines as slog.NewJSONHandler(w, nil), but without its
// generality: one pass over the record into a pooled buffer, strings,
// integers, floats and booleans encoded directly (slog's handler
// marshals each float with encoding/json). A record with other kinds of
// values, and handlers derived with WithAttrs or WithGroup, go through
// slog's own JSON handler.
type accessLogHandler struct {
	w        io.Writer
	fallback slog.Handler
}

func newAccessLogHandler(w io.Writer) *accessLogHandler {
	return &accessLogHandler{w: w, fallback: slog.NewJSONHandler(w, nil)}
}

func (h *accessLogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *accessLogHandler) WithAttrs(as []slog.Attr) slog.Handler { return h.fallback.WithAttrs(as) }

func (h *accessLogHandler) WithGroup(name string) slog.Handler { return h.fallback.WithGroup(name) }

var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func (h *accessLogHandler) Handle(ctx context.Context, r slog.Record) error {
	simple := true
	r.Attrs(func(a slog.Attr) bool {
		switch a.Value.Kind() {
		case slog.KindString, slog.KindInt64, slog.KindUint64, slog.KindBool:
			simple = a.Key != "" // slog drops empty attributes
		case slog.KindFloat64:
			f := a.Value.Float64()
			simple = a.Key != "" && !math.IsNaN(f) && !math.IsInf(f, 0) // JSON has no NaN
		default:
			simple = false
		}
		return simple
	})
	if t := r.Time; !simple || t.Year() < 0 || t.Year() > 9999 {
		return h.fallback.Handle(ctx, r)
	}
	bp := lineBufs.Get().(*[]byte)
	b := (*bp)[:0]
	if !r.Time.IsZero() {
		b = append(b, `{"time":"`...)
		b = r.Time.AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","level":`...)
	} else {
		b = append(b, `{"level":`...)
	}
	b = appendJSONString(b, r.Level.String())
	b = append(b, `,"msg":`...)
	b = appendJSONString(b, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b = append(b, ',')
		b = appendJSONString(b, a.Key)
		b = append(b, ':')
		switch v := a.Value; v.Kind() {
		case slog.KindString:
			b = appendJSONString(b, v.String())
		case slog.KindInt64:
			b = strconv.AppendInt(b, v.Int64(), 10)
		case slog.KindUint64:
			b = strconv.AppendUint(b, v.Uint64(), 10)
		case slog.KindFloat64:
			b = appendJSONFloat(b, v.Float64())
		case slog.KindBool:
			b = strconv.AppendBool(b, v.Bool())
		}
		return true
	})
	b = append(b, "}\n"...)
	_, err := h.w.Write(b)
	if cap(b) <= 64<<10 {
		*bp = b
		lineBufs.Put(bp)
	}
	return err
}

// appendJSONFloat formats a finite f as encoding/json does (which slog's
// JSON handler calls).
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 to e-9, as encoding/json does.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendJSONString quotes s as slog's JSON handler does: ", \ and control
// characters escaped, invalid UTF-8 as U+FFFD, U+2028 and U+2029 escaped,
// HTML characters as they are.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
