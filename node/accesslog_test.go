package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
)

// sink records each Write it gets; failFirst makes its first n fail.
type sink struct {
	mu        sync.Mutex
	writes    [][]byte
	failFirst int
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failFirst > 0 {
		s.failFirst--
		return 0, errors.New("disk full")
	}
	s.writes = append(s.writes, bytes.Clone(p))
	return len(p), nil
}

func (s *sink) snapshot() (writes int, all string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, w := range s.writes {
		b.Write(w)
	}
	return len(s.writes), b.String()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Lines wait in the buffer, then go out together within the interval,
// with no further write to push them.
func TestFlushingWriterBatchesLines(t *testing.T) {
	var s sink
	f := newFlushingWriter(&s, 50*time.Millisecond)
	defer f.Close()
	var want strings.Builder
	for i := range 100 {
		line := fmt.Sprintf("line %d\n", i)
		want.WriteString(line)
		if _, err := io.WriteString(f, line); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := s.snapshot(); n != 0 {
		t.Fatalf("%d writes right after 100 lines; want them buffered", n)
	}
	waitFor(t, "the timer's flush", func() bool { n, _ := s.snapshot(); return n > 0 })
	n, all := s.snapshot()
	if n != 1 || all != want.String() {
		t.Fatalf("%d writes of %q; want 1 of the 100 lines", n, all)
	}
	// An idle writer arms the timer again for the next line.
	io.WriteString(f, "later\n")
	waitFor(t, "the second flush", func() bool { n, _ := s.snapshot(); return n == 2 })
}

// Concurrent writers of lines up to twice the buffer size: every line
// arrives whole, in a write of whole lines, and Close leaves none behind.
func TestFlushingWriterKeepsLinesWhole(t *testing.T) {
	var s sink
	f := newFlushingWriter(&s, time.Hour) // only size and Close flush here
	var (
		mu   sync.Mutex
		sent []string
		wg   sync.WaitGroup
	)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := range 60 {
				size := rng.IntN(300)
				if rng.IntN(20) == 0 {
					size = rng.IntN(2 * accessLogBuffer)
				}
				line := fmt.Sprintf("g%d-%d:", g, i) + strings.Repeat("x", size) + "\n"
				if _, err := io.WriteString(f, line); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				sent = append(sent, line)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(f, "after close\n"); err == nil {
		t.Error("a write after Close succeeded")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var got []string
	for i, w := range s.writes {
		if len(w) == 0 || w[len(w)-1] != '\n' {
			t.Fatalf("write %d ends mid-line", i)
		}
		for l := range strings.SplitAfterSeq(string(w), "\n") {
			if l != "" {
				got = append(got, l)
			}
		}
	}
	slices.Sort(got)
	slices.Sort(sent)
	if !slices.Equal(got, sent) {
		t.Fatalf("got %d lines; sent %d (or some differ)", len(got), len(sent))
	}
	if len(s.writes) >= len(sent) {
		t.Errorf("%d writes for %d lines: not batched", len(s.writes), len(sent))
	}
}

// A failed write loses what was buffered then, not what comes after.
func TestFlushingWriterRecoversFromAFailedWrite(t *testing.T) {
	s := sink{failFirst: 1}
	f := newFlushingWriter(&s, time.Hour)
	io.WriteString(f, "lost\n")
	if err := f.Flush(); err == nil {
		t.Fatal("Flush to a failing writer succeeded")
	}
	io.WriteString(f, "kept\n")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, all := s.snapshot(); all != "kept\n" {
		t.Fatalf("got %q; want the line written after the failure", all)
	}
}

// accessLines returns the access log records in buf.
func accessLines(t *testing.T, buf *testutil.SyncBuffer) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("access log line %q: %v", l, err)
		}
		recs = append(recs, m)
	}
	return recs
}

// Through a node: with the default interval lines come within a second
// or at the drain; flush_interval: 0 writes each at once.
func TestAccessLogFlushInterval(t *testing.T) {
	be := backend(t, "ok")
	for _, tc := range []struct {
		name, setting string
		drainOnly     bool // lines may only show at the drain
	}{
		{"default", "", false},
		{"long", "flush_interval: 1h", true},
		{"zero", "flush_interval: 0s", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			content := strings.Replace(nodeFile(dir, be.URL), "access_log: {enabled: false}", "access_log: {"+tc.setting+"}", 1)
			f, err := ParseFile([]byte(content))
			if err != nil {
				t.Fatal(err)
			}
			var buf testutil.SyncBuffer
			n, err := New(f, Options{ConfigPath: filepath.Join(dir, "m.yaml"), Logger: slog.New(slog.DiscardHandler), AccessLogWriter: &buf})
			if err != nil {
				t.Fatal(err)
			}
			if err := n.Start(f, []byte(content)); err != nil {
				t.Fatal(err)
			}
			c := &http.Client{Timeout: 5 * time.Second}
			for i := range 3 {
				if code, _ := get(t, c, fmt.Sprintf("http://%s/r%d", n.ProxyAddr(), i)); code != 200 {
					t.Fatalf("request %d: %d", i, code)
				}
			}
			if tc.drainOnly {
				if got := len(accessLines(t, &buf)); got != 0 {
					t.Errorf("%d lines before the drain with an hour's interval; want them buffered", got)
				}
			} else {
				waitFor(t, "three access log lines", func() bool { return len(accessLines(t, &buf)) == 3 })
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := n.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			recs := accessLines(t, &buf)
			if len(recs) != 3 {
				t.Fatalf("%d lines after the drain; want 3", len(recs))
			}
			for i, r := range recs {
				if r["path"] != fmt.Sprintf("/r%d", i) || r["status"] != float64(200) {
					t.Errorf("line %d = %v", i, r)
				}
			}
		})
	}
	_, err := ParseFile([]byte("node:\n  access_log: {flush_interval: -1s}\n"))
	if err == nil || !strings.Contains(err.Error(), "access_log.flush_interval") {
		t.Errorf("negative flush_interval: err = %v; want one naming the field", err)
	}
}

// accessLogHandler must write what slog's JSON handler writes, byte for
// byte, for the records the gateway logs and for hostile strings.
func TestAccessLogHandlerMatchesSlogJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	pieces := []string{"a", "/path", `"`, `\`, "\n", "\r", "\t", "\x00", "\x1f", "\x7f", "<>&", "é", "\u2028", "\u2029", "\xff", "\xe2\x82", "日本", " ", "%20", "\U0001F600"}
	str := func() string {
		var b strings.Builder
		for range rng.IntN(6) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	floats := []float64{0, math.Copysign(0, -1), 1, 0.001, 1.5, 123.456, 1e-7, 1.234e-9, 1e20, 1e21, 3.3e25, -2.5e-8, 1234567.125}
	base := time.Date(2026, 11, 26, 1, 2, 3, 456789000, time.UTC)
	for i := range 3000 {
		var attrs []slog.Attr
		for range rng.IntN(18) {
			k := str()
			switch rng.IntN(6) {
			case 0, 1:
				attrs = append(attrs, slog.String(k, str()))
			case 2:
				attrs = append(attrs, slog.Int64(k, rng.Int64()-rng.Int64()))
			case 3:
				attrs = append(attrs, slog.Float64(k, floats[rng.IntN(len(floats))]*float64(rng.IntN(1000)+1)/7))
			case 4:
				attrs = append(attrs, slog.Bool(k, rng.IntN(2) == 0))
			case 5:
				attrs = append(attrs, slog.Uint64(k, rng.Uint64()))
			}
		}
		if rng.IntN(50) == 0 {
			attrs = append(attrs, slog.Any("group", []int{1, 2})) // takes the fallback
		}
		tm := base.Add(time.Duration(rng.Int64N(int64(365 * 24 * time.Hour))))
		if rng.IntN(30) == 0 {
			tm = time.Time{}
		}
		if rng.IntN(10) == 0 {
			tm = tm.In(time.FixedZone("x", 3600+1800))
		}
		level := []slog.Level{slog.LevelInfo, slog.LevelWarn, slog.LevelError, slog.LevelInfo + 2}[rng.IntN(4)]
		msg := str()
		var want, got bytes.Buffer
		for _, w := range []struct {
			h   slog.Handler
			out *bytes.Buffer
		}{{slog.NewJSONHandler(&want, nil), &want}, {newAccessLogHandler(&got), &got}} {
			r := slog.NewRecord(tm, level, msg, 0)
			r.AddAttrs(attrs...)
			if err := w.h.Handle(context.Background(), r); err != nil {
				t.Fatal(err)
			}
		}
		if got.String() != want.String() {
			t.Fatalf("case %d:\n got %s\nwant %s", i, got.String(), want.String())
		}
	}
}

type failWriter struct{ fail atomic.Bool }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.fail.Load() {
		return 0, errors.New("no space left on device")
	}
	return len(p), nil
}

// Lost lines held back by the report's rate limit are said once it allows,
// even when writes recover meanwhile, and at Close (an outside check saw
// the last batch of a full disk never said).
func TestLossWatchSaysEveryLoss(t *testing.T) {
	var logs testutil.SyncBuffer
	fw := &failWriter{}
	fw.fail.Store(true)
	l := &lossWatch{w: fw, lost: prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}), log: slog.New(slog.NewJSONHandler(&logs, nil)), every: 200 * time.Millisecond}
	said := func() (n int) {
		for line := range strings.SplitSeq(logs.String(), "\n") {
			var rec struct{ Lines int }
			if json.Unmarshal([]byte(line), &rec) == nil {
				n += rec.Lines
			}
		}
		return n
	}
	l.Write([]byte("a\nb\nc\n"))
	if said() != 3 {
		t.Fatalf("first loss: said %d lines; want 3 at once\n%s", said(), logs.String())
	}
	l.Write([]byte("d\ne\n")) // within the limit: held
	if said() != 3 {
		t.Errorf("said %d lines within the limit; want the 2 held", said())
	}
	fw.fail.Store(false) // the disk has room again
	l.Write([]byte("f\n"))
	deadline := time.Now().Add(10 * time.Second)
	for said() != 5 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if said() != 5 {
		t.Fatalf("the 2 held lines were never said\n%s", logs.String())
	}
	fw.fail.Store(true)
	l.Write([]byte("g\n")) // held again (the last report was just now)
	l.Close()
	if said() != 6 {
		t.Errorf("Close did not say the held line\n%s", logs.String())
	}
	l.Write([]byte("h\n")) // after Close: said at once
	if said() != 7 {
		t.Errorf("a loss after Close was not said at once\n%s", logs.String())
	}
}
