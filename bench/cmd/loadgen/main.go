// Command loadgen is Meridian's lean HTTP/1.1 load generator.
//
// It keeps -c keep-alive connections to one URL and sends GET requests over
// them for -warmup + -d, recording latencies of the requests sent after the
// warmup in an HDR histogram. It does not use net/http's client: requests are
// pre-built bytes and responses are parsed by a minimal reader that discards
// the body (Content-Length, chunked, or close-delimited).
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
	URL         string    `json:"url"`
	Connections int       `json:"connections"`
	Mode        string    `json:"mode"` // "closed" or "rate"
	TargetRate  float64   `json:"target_rate,omitempty"`
	WarmupS     float64   `json:"warmup_s"`
	DurationS   float64   `json:"duration_s"` // measured window
	Requests    int64     `json:"requests"`   // completed in the measured window
	RPS         float64   `json:"rps"`
	Errors      int64     `json:"errors"`
	Non2xx      int64     `json:"non_2xx"`
	Reconnects  int64     `json:"reconnects"`
	ErrorSample string    `json:"error_sample,omitempty"`
	LatencyNS   LatencyNS `json:"latency_ns"`
	GoMaxProcs  int       `json:"gomaxprocs"`
	StartedAt   time.Time `json:"started_at"`
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
	firstErr   error
}

func main() {
	var (
		rawURL     = flag.String("url", "", "target URL (http:// only; must be loopback unless -allow-non-loopback)")
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
	if *probe {
		os.Exit(runProbe(t, *probeTO))
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

	cfg := &config{
		target:   t,
		conns:    *conns,
		duration: *duration,
		warmup:   *warmup,
		rate:     *rate,
	}
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

func runProbe(t *target, timeout time.Duration) int {
	c, err := dial(t, time.Now().Add(timeout))
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: probe: %v\n", err)
		return 1
	}
	defer c.close()
	status, _, err := c.roundTrip(t.req)
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
func connect(cfg *config, s *workerStats) *client {
	for time.Now().Before(cfg.end) {
		c, err := dial(cfg.target, cfg.end)
		if err == nil {
			return c
		}
		s.noteError(cfg, fmt.Errorf("dial: %w", err))
		time.Sleep(min(20*time.Millisecond, time.Until(cfg.end)))
	}
	return nil
}

// runClosed sends requests back to back on one connection.
func runClosed(cfg *config, s *workerStats) {
	var c *client
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	for {
		if c == nil {
			if c = connect(cfg, s); c == nil {
				return
			}
		}
		sent := time.Now()
		if !sent.Before(cfg.end) {
			return
		}
		status, keepAlive, err := c.roundTrip(cfg.target.req)
		done := time.Now()
		if err != nil {
			s.noteError(cfg, err)
			c.close()
			c = nil
			if done.Before(cfg.end) { // not the end-of-run deadline
				s.reconnects++
				time.Sleep(time.Millisecond) // don't spin on a failing server
			}
			continue
		}
		if !sent.Before(cfg.measureAt) && done.Before(cfg.end) {
			s.hist.Record(int64(done.Sub(sent)))
			s.requests++
			if status < 200 || status > 299 {
				s.non2xx++
			}
		}
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
	var c *client
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	for next.Before(cfg.end) {
		if c == nil {
			if c = connect(cfg, s); c == nil {
				return
			}
		}
		if wait := time.Until(next); wait > 0 {
			time.Sleep(wait)
		}
		intended := next
		status, keepAlive, err := c.roundTrip(cfg.target.req)
		done := time.Now()
		if err != nil {
			// Retry the same scheduled request on a new connection: its
			// latency keeps growing from the intended time.
			s.noteError(cfg, err)
			c.close()
			c = nil
			if done.Before(cfg.end) { // not the end-of-run deadline
				s.reconnects++
				time.Sleep(time.Millisecond) // don't spin on a failing server
			}
			continue
		}
		next = next.Add(interval)
		if !intended.Before(cfg.measureAt) && done.Before(cfg.end) {
			s.hist.Record(int64(done.Sub(intended)))
			s.requests++
			if status < 200 || status > 299 {
				s.non2xx++
			}
		}
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
		if res.ErrorSample == "" && s.firstErr != nil {
			res.ErrorSample = s.firstErr.Error()
		}
	}
	res.RPS = float64(res.Requests) / cfg.duration.Seconds()
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
	fmt.Printf("target      %s\n", r.URL)
	fmt.Printf("load        %d connections, %s measured after %s warmup, %s\n",
		r.Connections, time.Duration(r.DurationS*float64(time.Second)), time.Duration(r.WarmupS*float64(time.Second)), mode)
	fmt.Printf("requests    %d   errors %d   non-2xx %d   reconnects %d\n", r.Requests, r.Errors, r.Non2xx, r.Reconnects)
	fmt.Printf("req/s       %.1f\n", r.RPS)
	l := r.LatencyNS
	fmt.Printf("latency     mean %s  p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
		fmtDur(l.Mean), fmtDur(l.P50), fmtDur(l.P90), fmtDur(l.P99), fmtDur(l.P999), fmtDur(l.Max))
	if r.ErrorSample != "" {
		fmt.Printf("first error %s\n", r.ErrorSample)
	}
}
