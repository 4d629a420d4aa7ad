package main

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestReadResponse(t *testing.T) {
	const next = "HTTP/1.1 299 Next\r\nContent-Length: 0\r\n\r\n"
	cases := []struct {
		name      string
		in        string
		status    int
		keepAlive bool
		wantErr   bool
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + next, 200, true, false},
		{"lowercase headers", "HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\nabc" + next, 404, true, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: y\r\n\r\n" + next, 200, true, false},
		{"connection close", "HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno", 503, false, false},
		{"http/1.0 default close", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, false, false},
		{"http/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok" + next, 200, true, false},
		{"close delimited", "HTTP/1.1 200 OK\r\n\r\nbody until eof", 200, false, false},
		{"no body 204", "HTTP/1.1 204 No Content\r\n\r\n" + next, 204, true, false},
		{"interim 100", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx" + next, 201, true, false},
		{"no reason phrase", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n" + next, 200, true, false},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 1\n\nx" + next, 200, true, false},
		{"garbage", "SMTP ready\r\n\r\n", 0, false, true},
		{"bad status", "HTTP/1.1 2x0 OK\r\n\r\n", 0, false, true},
		{"truncated body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0, false, true},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, false, true},
		{"bad content-length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 0, false, true},
		{"eof", "", 0, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(c.in))
			status, ka, err := readResponse(br)
			if c.wantErr {
				if err == nil {
					t.Fatalf("expected error, got status %d", status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if status != c.status || ka != c.keepAlive {
				t.Fatalf("got status %d keepAlive %v, want %d %v", status, ka, c.status, c.keepAlive)
			}
			if ka {
				// The body must have been consumed exactly: the next
				// response parses.
				st, _, err := readResponse(br)
				if err != nil || st != 299 {
					t.Fatalf("next response: status %d err %v", st, err)
				}
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	tg, err := parseTarget("http://127.0.0.1:18000/a/b?x=1")
	if err != nil {
		t.Fatal(err)
	}
	want := "GET /a/b?x=1 HTTP/1.1\r\nHost: 127.0.0.1:18000\r\n"
	if !strings.HasPrefix(string(tg.req), want) || !strings.HasSuffix(string(tg.req), "\r\n\r\n") {
		t.Fatalf("request %q", tg.req)
	}
	if tg.hostport != "127.0.0.1:18000" {
		t.Fatalf("hostport %q", tg.hostport)
	}
	if tg, _ := parseTarget("http://localhost"); tg.hostport != "localhost:80" || !strings.HasPrefix(string(tg.req), "GET / ") {
		t.Fatalf("default port/path: %q %q", tg.hostport, tg.req)
	}
	if tg, _ := parseTarget("https://localhost/x"); tg.hostport != "localhost:443" || !tg.https {
		t.Fatalf("https default port: %q", tg.hostport)
	}
	for _, bad := range []string{"ftp://127.0.0.1/", "127.0.0.1:80", "http:///x"} {
		if _, err := parseTarget(bad); err == nil {
			t.Errorf("parseTarget(%q): expected error", bad)
		}
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, h := range []string{"127.0.0.1", "::1", "127.3.4.5"} {
		if err := checkLoopback(h, time.Second); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	for _, h := range []string{"10.0.0.1", "192.168.1.1", "8.8.8.8"} {
		if err := checkLoopback(h, time.Second); err == nil {
			t.Errorf("%s: expected refusal", h)
		}
	}
}

// End to end against a local net/http server: closed loop and fixed rate.
func TestRunAgainstServer(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		if r.URL.Path == "/chunked" {
			w.Write([]byte("part one "))
			w.(http.Flusher).Flush()
			w.Write([]byte("part two"))
			return
		}
		if n%10 == 0 {
			w.WriteHeader(http.StatusTeapot)
		}
		w.Write([]byte(strings.Repeat("x", 1024)))
	}))
	defer srv.Close()

	for _, tc := range []struct {
		path string
		rate float64
	}{{"/", 0}, {"/chunked", 0}, {"/", 400}} {
		tg, err := parseTarget(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		cfg := &config{target: tg, conns: 4, duration: 300 * time.Millisecond, warmup: 100 * time.Millisecond, rate: tc.rate, maxLatency: time.Minute}
		cfg.start = time.Now()
		cfg.measureAt = cfg.start.Add(cfg.warmup)
		cfg.end = cfg.measureAt.Add(cfg.duration)
		stats := make([]*workerStats, cfg.conns)
		done := make(chan struct{})
		for i := range stats {
			stats[i] = &workerStats{hist: newHist(cfg)}
			go func() {
				defer func() { done <- struct{}{} }()
				if cfg.rate > 0 {
					runOpen(cfg, i, stats[i])
				} else {
					runClosed(cfg, stats[i])
				}
			}()
		}
		for range stats {
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("workers did not stop at the end of the run")
			}
		}
		res := summarize(cfg, stats)
		if res.Requests == 0 || res.Errors != 0 {
			t.Fatalf("%s rate=%v: requests %d errors %d (%s)", tc.path, tc.rate, res.Requests, res.Errors, res.ErrorSample)
		}
		if tc.path == "/" && res.Non2xx == 0 {
			t.Errorf("expected some non-2xx responses to be counted")
		}
		if tc.rate > 0 {
			// 400 req/s for 0.3s: at most about 120 requests.
			if res.Requests > 130 { // a ceiling, not a speed test
				t.Errorf("fixed rate: %d requests in 0.3s at 400/s", res.Requests)
			}
		}
		l := res.LatencyNS
		if !(l.P50 > 0 && l.P50 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
			t.Errorf("inconsistent latencies %+v", l)
		}
	}
}

// A server that accepts but stalls must not hang the load generator, and in
// fixed-rate mode the stall must show up in latency (coordinated omission).
func TestStallIsBoundedAndCharged(t *testing.T) {
	var stalled atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if stalled.CompareAndSwap(false, true) {
			time.Sleep(150 * time.Millisecond)
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	tg, _ := parseTarget(srv.URL)
	cfg := &config{target: tg, conns: 1, duration: 400 * time.Millisecond, rate: 200, maxLatency: time.Minute}
	cfg.start = time.Now()
	cfg.measureAt = cfg.start
	cfg.end = cfg.start.Add(cfg.duration)
	s := &workerStats{hist: newHist(cfg)}
	runOpen(cfg, 0, s)
	if time.Since(cfg.end) > time.Second {
		t.Fatalf("run overran its end by %v", time.Since(cfg.end))
	}
	// The first request took 150ms; the ~30 requests scheduled during the
	// stall queue behind it and must be charged from their intended time, so
	// p50 stays small but more than 5% of requests see > 50ms.
	over := s.hist.Count() - countBelow(s, 50*time.Millisecond)
	if s.hist.Max() < int64(140*time.Millisecond) || over < 5 {
		t.Fatalf("stall not charged: max %v, %d of %d requests over 50ms",
			time.Duration(s.hist.Max()), over, s.hist.Count())
	}
}

func countBelow(s *workerStats, d time.Duration) int64 {
	// Binary search the quantile at which latency reaches d.
	lo, hi := 0.0, 1.0
	for range 40 {
		mid := (lo + hi) / 2
		if s.hist.ValueAtQuantile(mid) < int64(d) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return int64(lo * float64(s.hist.Count()))
}
