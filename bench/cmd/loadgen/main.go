// Command loadgen is Meridian's lean HTTP load generator.
//
// It keeps -c keep-alive connections to one URL and sends GET requests over
// them for -warmup + -d, recording latencies of the requests sent after the
// warmup in an HDR histogram. For HTTP/1.1 (plain, or over TLS with -tls) it
// does not use net/http's client: requests are pre-built bytes and responses
// are parsed by a minimal reader that discards the body (Content-Length,
// chunked, or close-delimited).
//
// -h2 uses net/http's Transport (HTTP/2 only, one Transport and so one TCP
// connection per -c) and -h3 quic-go's HTTP/3 client (one UDP socket and one
// QUIC connection per -c); in both, each connection has exactly one stream
// in flight, so -c means the same number of concurrent requests in every
// protocol. -handshakes opens a new connection (full TLS handshake, session
// resumption disabled) for every request and reports handshakes/s.
//
// With -rate 0 (default) every connection runs a closed loop: send, wait for
// the response, send again. With -rate R the R requests/s are spread evenly
// over the connections on a fixed schedule and latency is measured from each
// request's intended send time, not from when it was actually sent (the
// coordinated-omission correction used by wrk2): a stalled server is charged
// for the requests it delayed.
//
// The run is always bounded: every socket operation has a deadline at the
// end of the run and a watchdog exits the process shortly after it.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/bench/hdr"
)

// Result is the -json output.
type Result struct {
	URL         string  `json:"url"`
	Connections int     `json:"connections"`
	Proto       string  `json:"proto"`      // "h1", "tls" (HTTP/1.1 over TLS), "h2" or "h3"
	Handshakes  bool    `json:"handshakes"` // -handshakes: a new connection (full TLS handshake) per request
	Mode        string  `json:"mode"`       // "closed" or "rate"
	TargetRate  float64 `json:"target_rate,omitempty"`
	WarmupS     float64 `json:"warmup_s"`
	DurationS   float64 `json:"duration_s"` // measured window
	Requests    int64   `json:"requests"`   // completed in the measured window
	RPS         float64 `json:"rps"`
	// HandshakesPerS is, with -handshakes, the completed (full TLS
	// handshake + request + response) exchanges per second (= rps).
	HandshakesPerS float64   `json:"handshakes_per_s,omitempty"`
	TLSResumed     int64     `json:"tls_resumed,omitempty"` // requests on resumed TLS sessions (should stay 0)
	Errors         int64     `json:"errors"`
	Non2xx         int64     `json:"non_2xx"`
	Reconnects     int64     `json:"reconnects"`
	ErrorSample    string    `json:"error_sample,omitempty"`
	LatencyNS      LatencyNS `json:"latency_ns"`
	GoMaxProcs     int       `json:"gomaxprocs"`
	StartedAt      time.Time `json:"started_at"`
}

// LatencyNS holds latency statistics in nanoseconds.
type LatencyNS struct {
	Mean int64 `json:"mean"`
	P50  int64 `json:"p50"`
	P90  int64 `json:"p90"`
	P99  int64 `json:"p99"`
	P999 int64 `json:"p99_9"`
	Max  int64 `json:"max"`
}

type config struct {
	target     *target
	proto      proto
	tlsCfg     *tls.Config // nil for protoH1
	handshakes bool        // new connection per request
	conns      int
	duration   time.Duration
	warmup     time.Duration
	rate       float64
	start      time.Time
	measureAt  time.Time // start + warmup
	end        time.Time // measureAt + duration
	maxLatency time.Duration
}

// workerStats is owned by one worker goroutine until it returns.
type workerStats struct {
	hist       *hdr.Histogram
	requests   int64
	errors     int64
	non2xx     int64
	reconnects int64
	resumed    int64
	firstErr   error
}

func main() {
	var (
		rawURL     = flag.String("url", "", "target URL (http:// or https://; must be loopback unless -allow-non-loopback)")
		useTLS     = flag.Bool("tls", false, "HTTP/1.1 over TLS (lean client); implied by an https:// URL without -h2/-h3")
		useH2      = flag.Bool("h2", false, "HTTP/2 over TLS (net/http Transport, one TCP connection per -c, one stream in flight each)")
		useH3      = flag.Bool("h3", false, "HTTP/3 over QUIC (quic-go, one QUIC connection per -c, one stream in flight each)")
		handshakes = flag.Bool("handshakes", false, "every request on a new connection with a full TLS handshake (no session resumption); reports handshakes/s")
		caFile     = flag.String("cacert", "", "PEM file with the CA certificate(s) to verify the server with (default: system roots)")
		insecure   = flag.Bool("insecure", false, "do not verify the server certificate")
		conns      = flag.Int("c", 64, "number of keep-alive connections")
		duration   = flag.Duration("d", 10*time.Second, "measured duration")
		warmup     = flag.Duration("warmup", 2*time.Second, "warmup before measuring (not recorded)")
		rate       = flag.Float64("rate", 0, "total requests/s over all connections; 0 = closed loop")
		jsonOut    = flag.Bool("json", false, "print the result as JSON")
		probe      = flag.Bool("probe", false, "send one request and exit 0 if the response is 2xx (readiness check)")
		probeTO    = flag.Duration("probe-timeout", time.Second, "timeout for -probe")
		allowNonLB = flag.Bool("allow-non-loopback", false, "allow targets that are not loopback addresses")
	)
	flag.Parse()
	if *rawURL == "" {
		fatalf("-url is required")
	}
	t, err := parseTarget(*rawURL)
	if err != nil {
		fatalf("bad -url: %v", err)
	}
	if !*allowNonLB {
		if err := checkLoopback(t.host, 2*time.Second); err != nil {
			fatalf("refusing target: %v", err)
		}
	}
	p := protoH1
	switch {
	case btoi(*useTLS)+btoi(*useH2)+btoi(*useH3) > 1:
		fatalf("-tls, -h2 and -h3 are mutually exclusive")
	case *useH2:
		p = protoH2
	case *useH3:
		p = protoH3
	case *useTLS || t.https:
		p = protoTLS
	}
	if (p != protoH1 || *handshakes) && !t.https {
		fatalf("%v", errNoTLS)
	}
	if p == protoH1 && (*caFile != "" || *insecure) {
		fatalf("-cacert and -insecure need an https:// URL")
	}
	cfg := &config{target: t, proto: p, handshakes: *handshakes}
	if p != protoH1 {
		if cfg.tlsCfg, err = tlsConfig(t.host, *caFile, *insecure); err != nil {
			fatalf("tls: %v", err)
		}
	}
	if *probe {
		os.Exit(runProbe(cfg, *probeTO))
	}
	if *conns < 1 || *conns > 10000 {
		fatalf("-c must be in 1..10000")
	}
	if *duration <= 0 || *warmup < 0 {
		fatalf("-d must be > 0 and -warmup >= 0")
	}
	if *rate < 0 {
		fatalf("-rate must be >= 0")
	}

	cfg.conns, cfg.duration, cfg.warmup, cfg.rate = *conns, *duration, *warmup, *rate
	cfg.maxLatency = max(time.Minute, cfg.warmup+cfg.duration+10*time.Second)
	cfg.start = time.Now()
	cfg.measureAt = cfg.start.Add(cfg.warmup)
	cfg.end = cfg.measureAt.Add(cfg.duration)

	// Watchdog: whatever happens, never outlive the run by much.
	go func() {
		time.Sleep(time.Until(cfg.end) + 10*time.Second)
		fmt.Fprintln(os.Stderr, "loadgen: watchdog: workers did not stop, exiting")
		os.Exit(3)
	}()

	stats := make([]*workerStats, cfg.conns)
	var wg sync.WaitGroup
	for i := range cfg.conns {
		stats[i] = &workerStats{hist: newHist(cfg)}
		wg.Go(func() {
			if cfg.rate > 0 {
				runOpen(cfg, i, stats[i])
			} else {
				runClosed(cfg, stats[i])
			}
		})
	}
	wg.Wait()

	res := summarize(cfg, stats)
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fatalf("encode: %v", err)
		}
	} else {
		printText(res)
	}
	if res.Requests == 0 {
		os.Exit(1)
	}
}

func newHist(cfg *config) *hdr.Histogram { return hdr.NewLatency(cfg.maxLatency) }

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", args...)
	os.Exit(2)
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// runProbe sends one request over a new connection of cfg's protocol.
func runProbe(cfg *config, timeout time.Duration) int {
	cfg.end = time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), cfg.end)
	defer cancel()
	cn, err := newConnector(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: probe: %v\n", err)
		return 1
	}
	defer cn.close()
	status, _, err := oneShot(cfg, cn)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: probe: %v\n", err)
		return 1
	}
	if status < 200 || status > 299 {
		fmt.Fprintf(os.Stderr, "loadgen: probe: status %d\n", status)
		return 1
	}
	return 0
}

// noteError counts an error that happened inside the measured window.
func (s *workerStats) noteError(cfg *config, err error) {
	now := time.Now()
	if now.Before(cfg.measureAt) || !now.Before(cfg.end) {
		return // warmup errors and errors caused by the end-of-run deadline don't count
	}
	s.errors++
	if s.firstErr == nil {
		s.firstErr = err
	}
}

// connect dials, retrying with a short backoff until the end of the run.
func connect(cfg *config, cn connector, s *workerStats) conn {
	for time.Now().Before(cfg.end) {
		c, err := cn.dial(cfg.end)
		if err == nil {
			return c
		}
		s.noteError(cfg, fmt.Errorf("dial: %w", err))
		time.Sleep(min(20*time.Millisecond, time.Until(cfg.end)))
	}
	return nil
}

// workerConnector sets up the worker's connector; nil if it cannot (the
// error is counted).
func workerConnector(cfg *config, s *workerStats) (connector, context.CancelFunc) {
	ctx, cancel := context.WithDeadline(context.Background(), cfg.end)
	cn, err := newConnector(ctx, cfg)
	if err != nil {
		cancel()
		s.errors++
		if s.firstErr == nil {
			s.firstErr = fmt.Errorf("setup: %w", err)
		}
		return nil, nil
	}
	return cn, func() {
		cn.close()
		cancel()
	}
}

// oneShot is one -handshakes request: a new connection (full TLS
// handshake), one request, close.
func oneShot(cfg *config, cn connector) (status int, resumed bool, err error) {
	c, err := cn.dial(cfg.end)
	if err != nil {
		return 0, false, fmt.Errorf("dial: %w", err)
	}
	defer c.close()
	status, _, err = c.roundTrip()
	return status, c.resumed(), err
}

// record counts one completed request whose latency is done - from, if it
// was sent (or scheduled) after the warmup and completed before the end.
func (s *workerStats) record(cfg *config, from, done time.Time, status int, resumed bool) {
	if from.Before(cfg.measureAt) || !done.Before(cfg.end) {
		return
	}
	s.hist.Record(int64(done.Sub(from)))
	s.requests++
	if status < 200 || status > 299 {
		s.non2xx++
	}
	if resumed {
		s.resumed++
	}
}

// failed notes a failed request; the caller drops the connection.
func (s *workerStats) failed(cfg *config, err error, done time.Time) {
	s.noteError(cfg, err)
	if done.Before(cfg.end) { // not the end-of-run deadline
		s.reconnects++
		time.Sleep(time.Millisecond) // don't spin on a failing server
	}
}

// runClosed sends requests back to back on one connection (with
// -handshakes: each on a new connection, latency including the handshake).
func runClosed(cfg *config, s *workerStats) {
	cn, stop := workerConnector(cfg, s)
	if cn == nil {
		return
	}
	defer stop()
	if cfg.handshakes {
		for {
			sent := time.Now()
			if !sent.Before(cfg.end) {
				return
			}
			status, resumed, err := oneShot(cfg, cn)
			done := time.Now()
			if err != nil {
				s.failed(cfg, err, done)
				continue
			}
			s.record(cfg, sent, done, status, resumed)
		}
	}
	var c conn
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	for {
		if c == nil {
			if c = connect(cfg, cn, s); c == nil {
				return
			}
		}
		sent := time.Now()
		if !sent.Before(cfg.end) {
			return
		}
		status, keepAlive, err := c.roundTrip()
		done := time.Now()
		if err != nil {
			c.close()
			c = nil
			s.failed(cfg, err, done)
			continue
		}
		s.record(cfg, sent, done, status, false)
		if !keepAlive {
			c.close()
			c = nil
			s.reconnects++
		}
	}
}

// runOpen sends requests on a fixed schedule: connection i of n sends at
// start + (i/n + k) * interval for k = 0, 1, 2, ... with interval = n/rate.
// Latency is measured from the scheduled time. If the connection is behind
// schedule (previous response late), the next request goes out immediately
// and its latency includes the time it waited for its turn.
func runOpen(cfg *config, i int, s *workerStats) {
	interval := time.Duration(float64(time.Second) * float64(cfg.conns) / cfg.rate)
	if interval <= 0 {
		interval = 1
	}
	next := cfg.start.Add(time.Duration(int64(interval) * int64(i) / int64(cfg.conns)))
	cn, stop := workerConnector(cfg, s)
	if cn == nil {
		return
	}
	defer stop()
	var c conn
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	for next.Before(cfg.end) {
		if c == nil && !cfg.handshakes {
			if c = connect(cfg, cn, s); c == nil {
				return
			}
		}
		if wait := time.Until(next); wait > 0 {
			time.Sleep(wait)
		}
		intended := next
		var (
			status            int
			keepAlive, resumd bool
			err               error
		)
		if cfg.handshakes {
			status, resumd, err = oneShot(cfg, cn)
			keepAlive = true
		} else {
			status, keepAlive, err = c.roundTrip()
		}
		done := time.Now()
		if err != nil {
			// Retry the same scheduled request on a new connection: its
			// latency keeps growing from the intended time.
			if c != nil {
				c.close()
				c = nil
			}
			s.failed(cfg, err, done)
			if !done.Before(cfg.end) {
				return
			}
			continue
		}
		next = next.Add(interval)
		s.record(cfg, intended, done, status, resumd)
		if !keepAlive {
			c.close()
			c = nil
			s.reconnects++
		}
	}
}

func summarize(cfg *config, stats []*workerStats) *Result {
	h := hdr.NewLatency(cfg.maxLatency)
	res := &Result{
		URL:         cfg.target.url,
		Connections: cfg.conns,
		Proto:       cfg.proto.String(),
		Handshakes:  cfg.handshakes,
		Mode:        "closed",
		WarmupS:     cfg.warmup.Seconds(),
		DurationS:   cfg.duration.Seconds(),
		GoMaxProcs:  runtime.GOMAXPROCS(0),
		StartedAt:   cfg.start.UTC(),
	}
	if cfg.rate > 0 {
		res.Mode, res.TargetRate = "rate", cfg.rate
	}
	for _, s := range stats {
		if err := h.Merge(s.hist); err != nil {
			fatalf("merge: %v", err)
		}
		res.Requests += s.requests
		res.Errors += s.errors
		res.Non2xx += s.non2xx
		res.Reconnects += s.reconnects
		res.TLSResumed += s.resumed
		if res.ErrorSample == "" && s.firstErr != nil {
			res.ErrorSample = s.firstErr.Error()
		}
	}
	res.RPS = float64(res.Requests) / cfg.duration.Seconds()
	if cfg.handshakes {
		res.HandshakesPerS = res.RPS
	}
	res.LatencyNS = LatencyNS{
		Mean: int64(h.Mean()),
		P50:  h.ValueAtQuantile(0.50),
		P90:  h.ValueAtQuantile(0.90),
		P99:  h.ValueAtQuantile(0.99),
		P999: h.ValueAtQuantile(0.999),
		Max:  h.Max(),
	}
	return res
}

func fmtDur(ns int64) string {
	d := time.Duration(ns)
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
	}
}

func printText(r *Result) {
	mode := "closed loop"
	if r.Mode == "rate" {
		mode = fmt.Sprintf("fixed rate %.0f req/s (latency from intended send time)", r.TargetRate)
	}
	fmt.Printf("target      %s (%s)\n", r.URL, protoName(r))
	fmt.Printf("load        %d connections, %s measured after %s warmup, %s\n",
		r.Connections, time.Duration(r.DurationS*float64(time.Second)), time.Duration(r.WarmupS*float64(time.Second)), mode)
	fmt.Printf("requests    %d   errors %d   non-2xx %d   reconnects %d\n", r.Requests, r.Errors, r.Non2xx, r.Reconnects)
	fmt.Printf("req/s       %.1f\n", r.RPS)
	if r.Handshakes {
		fmt.Printf("handshakes  %.1f/s (new connection + full TLS handshake per request; %d resumed)\n", r.HandshakesPerS, r.TLSResumed)
	}
	l := r.LatencyNS
	fmt.Printf("latency     mean %s  p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
		fmtDur(l.Mean), fmtDur(l.P50), fmtDur(l.P90), fmtDur(l.P99), fmtDur(l.P999), fmtDur(l.Max))
	if r.ErrorSample != "" {
		fmt.Printf("first error %s\n", r.ErrorSample)
	}
}

func protoName(r *Result) string {
	name := map[string]string{"h1": "HTTP/1.1", "tls": "HTTP/1.1 over TLS", "h2": "HTTP/2", "h3": "HTTP/3"}[r.Proto]
	if r.Handshakes {
		name += ", new connection per request"
	}
	return name
}
