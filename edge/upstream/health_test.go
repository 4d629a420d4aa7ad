package upstream

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/testutil"
)

// flipServer is a real HTTP server whose health-check status can be
// changed while it runs; it records what the checker sent.
type flipServer struct {
	*httptest.Server
	status atomic.Int32
	hits   atomic.Int64

	mu       sync.Mutex
	lastHost string
	lastURI  string
	lastUA   string
}

func newFlipServer(t *testing.T) *flipServer {
	t.Helper()
	s := &flipServer{}
	s.status.Store(http.StatusOK)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.lastHost, s.lastURI, s.lastUA = r.Host, r.RequestURI, r.UserAgent()
		s.mu.Unlock()
		s.hits.Add(1)
		if st := int(s.status.Load()); st >= 300 && st < 400 {
			w.Header().Set("Location", "http://192.0.2.1/elsewhere")
			w.WriteHeader(st)
			return
		}
		w.WriteHeader(int(s.status.Load()))
		_, _ = w.Write([]byte("status page"))
	}))
	t.Cleanup(s.Close)
	return s
}

// healthEvents collects OnHealthChange calls.
type healthEvents struct {
	mu     sync.Mutex
	events []string
}

func (h *healthEvents) record(service string, tg *Target, healthy bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	state := "down"
	if healthy {
		state = "up"
	}
	h.events = append(h.events, service+" "+tg.URL.Host+" "+state)
}

func (h *healthEvents) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}

// checkOnce drives one health check of tg by hand.
func checkOnce(p *Pool, tg *Target) {
	p.recordCheck(tg, p.probe(context.Background(), healthURL(tg, p.health.Path)))
}

func TestHealthCheckThresholds(t *testing.T) {
	srv := newFlipServer(t)
	clock := newFakeClock()
	var ev healthEvents
	p := mustPool(t, Spec{
		Service: "api",
		Targets: targets(t, srv.URL),
		HealthCheck: &HealthCheckSpec{
			Path: "/healthz", HealthyThreshold: 2, UnhealthyThreshold: 3, Timeout: 5 * time.Second,
		},
	}, nil, Options{Now: clock.Now, OnHealthChange: ev.record})
	tg := p.Targets()[0]
	host := tg.URL.Host

	// A new target awaits its first check, but serves while no other
	// target can; one pass brings it in, whatever healthy_threshold.
	if tg.Available(clock.Now()) || !p.Status()[0].Pending || p.Status()[0].Healthy {
		t.Fatalf("a new target: %+v; want it pending its first check", p.Status()[0])
	}
	if got, err := p.Pick(nil, "", nil); err != nil || got != tg {
		t.Fatalf("Pick with the only target pending: %v, %v; want it", got, err)
	}
	checkOnce(p, tg)
	if !tg.Available(clock.Now()) || !p.Status()[0].Healthy || p.Status()[0].Pending {
		t.Fatalf("after one passing first check: %+v; want it healthy", p.Status()[0])
	}
	srv.status.Store(http.StatusServiceUnavailable)
	for i := 1; i <= 2; i++ {
		checkOnce(p, tg)
		if !p.Status()[0].Healthy {
			t.Fatalf("down after %d failures, threshold is 3", i)
		}
	}
	clock.Advance(time.Second)
	checkOnce(p, tg)
	st := p.Status()[0]
	if st.Healthy || tg.Available(clock.Now()) {
		t.Fatal("still healthy after 3 failures")
	}
	if !strings.Contains(st.LastError, "503") || !st.LastCheck.Equal(clock.Now()) {
		t.Errorf("status = %+v, want LastError about 503 and LastCheck now", st)
	}
	if _, err := p.Pick(nil, "", nil); err != ErrNoHealthyTarget {
		t.Errorf("Pick with the only target down: %v", err)
	}

	srv.status.Store(http.StatusOK)
	checkOnce(p, tg)
	if p.Status()[0].Healthy {
		t.Fatal("up after 1 success, threshold is 2")
	}
	checkOnce(p, tg)
	st = p.Status()[0]
	if !st.Healthy || st.LastError != "" {
		t.Fatalf("status after 2 successes = %+v, want healthy without error", st)
	}
	// A failure streak interrupted by a success starts over.
	srv.status.Store(http.StatusInternalServerError)
	checkOnce(p, tg)
	checkOnce(p, tg)
	srv.status.Store(http.StatusOK)
	checkOnce(p, tg)
	srv.status.Store(http.StatusInternalServerError)
	checkOnce(p, tg)
	checkOnce(p, tg)
	if !p.Status()[0].Healthy {
		t.Fatal("interrupted failure streak took the target down")
	}

	want := []string{"api " + host + " down", "api " + host + " up"}
	if got := ev.list(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("health events = %q, want %q", got, want)
	}
}

func TestHealthCheckRequest(t *testing.T) {
	srv := newFlipServer(t)
	p := mustPool(t, Spec{
		Targets:     targets(t, srv.URL+"/api/v1"), // the base path is replaced by the check path
		HealthCheck: &HealthCheckSpec{Path: "/status?deep=1", Host: "api.internal"},
	}, nil, Options{})
	checkOnce(p, p.Targets()[0])
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.lastURI != "/status?deep=1" || srv.lastHost != "api.internal" || srv.lastUA != healthCheckUserAgent {
		t.Errorf("check request: uri %q host %q user agent %q", srv.lastURI, srv.lastHost, srv.lastUA)
	}
}

func TestHealthCheckExpectedStatus(t *testing.T) {
	srv := newFlipServer(t)
	srv.status.Store(http.StatusFound)
	spec := func(min, max int) Spec {
		return Spec{Targets: targets(t, srv.URL), HealthCheck: &HealthCheckSpec{
			UnhealthyThreshold: 1, ExpectStatusMin: min, ExpectStatusMax: max,
		}}
	}
	// Default 200..399: a redirect is a live server; it is not followed.
	p := mustPool(t, spec(0, 0), nil, Options{})
	checkOnce(p, p.Targets()[0])
	if st := p.Status()[0]; !st.Healthy || st.LastError != "" {
		t.Errorf("302 with default range: %+v", st)
	}
	if hits := srv.hits.Load(); hits != 1 {
		t.Errorf("server saw %d requests, want 1 (redirect must not be followed)", hits)
	}
	p = mustPool(t, spec(200, 204), nil, Options{})
	checkOnce(p, p.Targets()[0])
	if st := p.Status()[0]; st.Healthy || !strings.Contains(st.LastError, "302") {
		t.Errorf("302 with range 200..204: %+v", st)
	}
}

func TestHealthCheckTimeoutAndRefused(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer slow.Close()
	defer close(release)

	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close() // nothing listens there any more

	p := mustPool(t, Spec{
		Targets:     targets(t, slow.URL, closedURL),
		HealthCheck: &HealthCheckSpec{Timeout: 50 * time.Millisecond, UnhealthyThreshold: 1},
	}, nil, Options{})
	for _, tg := range p.Targets() {
		checkOnce(p, tg)
	}
	for _, st := range p.Status() {
		if st.Healthy || st.LastError == "" {
			t.Errorf("%s: %+v, want down with an error", st.URL, st)
		}
	}
}

// A target added by a reload stays out until its first check passes while
// the others serve, and one failing its first check is down at once (it
// does not wait for unhealthy_threshold failures).
func TestNewTargetAwaitsFirstCheck(t *testing.T) {
	good, bad := newFlipServer(t), newFlipServer(t)
	bad.status.Store(http.StatusServiceUnavailable)
	hc := &HealthCheckSpec{Path: "/healthz", HealthyThreshold: 2, UnhealthyThreshold: 3, Timeout: 5 * time.Second}
	var ev healthEvents
	old := mustPool(t, Spec{Service: "api", Targets: targets(t, good.URL), HealthCheck: hc}, nil, Options{OnHealthChange: ev.record})
	g := old.Targets()[0]
	checkOnce(old, g)
	p := mustPool(t, Spec{Service: "api", Targets: targets(t, good.URL, bad.URL), HealthCheck: hc}, old, Options{OnHealthChange: ev.record})
	b := byHost(t, p, bad.Listener.Addr().String())
	if !g.Available(time.Now()) {
		t.Fatal("a target kept by the reload lost its health")
	}
	for range 20 {
		if got, _ := p.Pick(nil, "", nil); got != g {
			t.Fatalf("picked %v while the new target awaits its first check", got)
		}
	}
	checkOnce(p, b)
	if st := p.Status()[1]; st.Healthy || st.Pending || st.LastError == "" {
		t.Fatalf("after a failing first check: %+v; want down at once", st)
	}
	if got := ev.list(); len(got) != 1 || !strings.HasSuffix(got[0], " down") {
		t.Errorf("health events = %q; want one down for the new target", got)
	}
}

func TestHealthCheckLoopAndStop(t *testing.T) {
	srvA, srvB := newFlipServer(t), newFlipServer(t)
	baseline := runtime.NumGoroutine()

	var ev healthEvents
	p, err := NewPool(Spec{
		Service: "api",
		Targets: targets(t, srvA.URL, srvB.URL),
		HealthCheck: &HealthCheckSpec{
			Interval: 10 * time.Millisecond, Timeout: time.Second,
			HealthyThreshold: 2, UnhealthyThreshold: 2,
		},
	}, nil, Options{OnHealthChange: ev.record})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	p.Start() // idempotent
	a := byHost(t, p, srvA.Listener.Addr().String())

	// The first check runs at once, not after an interval.
	waitFor(t, 5*time.Second, "first checks", func() bool {
		return srvA.hits.Load() > 0 && srvB.hits.Load() > 0
	})

	srvA.status.Store(http.StatusServiceUnavailable)
	waitFor(t, 5*time.Second, "target A down", func() bool { return !p.Status()[0].Healthy })
	for range 20 {
		if tg, err := p.Pick(nil, "", nil); err != nil || tg == a {
			t.Fatalf("Pick with A down: %v, %v", tg, err)
		}
	}
	srvA.status.Store(http.StatusOK)
	waitFor(t, 5*time.Second, "target A up", func() bool { return p.Status()[0].Healthy })
	if got := ev.list(); len(got) != 2 || !strings.HasSuffix(got[0], " down") || !strings.HasSuffix(got[1], " up") {
		t.Errorf("health events = %q, want down then up for A", got)
	}

	p.Stop()
	p.Stop() // idempotent
	hits := srvA.hits.Load()
	waitFor(t, 5*time.Second, "goroutines back to baseline", func() bool {
		return runtime.NumGoroutine() <= baseline
	})
	if now := srvA.hits.Load(); now != hits {
		t.Errorf("checks continued after Stop: %d -> %d", hits, now)
	}
	p.Start() // no effect after Stop
	if n := runtime.NumGoroutine(); n > baseline {
		t.Errorf("Start after Stop started goroutines: %d > %d", n, baseline)
	}
}

func TestStopWithoutStart(t *testing.T) {
	p, err := NewPool(Spec{Service: "svc", Targets: targets(t, "http://a"), HealthCheck: &HealthCheckSpec{}}, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p.Stop()
	p.Stop()
	// Stopping does not break requests still using the pool.
	if _, err := p.Pick(nil, "", nil); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentStop(t *testing.T) {
	srv := newFlipServer(t)
	p, err := NewPool(Spec{Service: "svc", Targets: targets(t, srv.URL),
		HealthCheck: &HealthCheckSpec{Interval: 5 * time.Millisecond}}, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(p.Stop)
	}
	wg.Wait()
}

// Reloads faster than a check keep one checker per target: no check at
// once per reload, none abandoned, and a target added by the first reload
// gets its first result while reloads keep coming (an outside check saw
// ten reloads send ten overlapping checks to one target, and a new target
// never checked while they went on).
func TestHealthCheckerSurvivesReloads(t *testing.T) {
	var running, most, hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		hits.Add(1)
		time.Sleep(150 * time.Millisecond)
	}))
	defer srv.Close()
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(150 * time.Millisecond)
	}))
	defer srv2.Close()
	baseline := runtime.NumGoroutine()
	hc := &HealthCheckSpec{Path: "/hz", Interval: time.Hour, Timeout: 5 * time.Second}
	p, err := NewPool(Spec{Service: "api", Targets: targets(t, srv.URL), HealthCheck: hc}, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	for i := range 20 {
		urls := []string{srv.URL}
		if i > 0 {
			urls = append(urls, srv2.URL) // added by the first reload
		}
		next, err := NewPool(Spec{Service: "api", Targets: targets(t, urls...), HealthCheck: hc}, p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		next.Start()
		p.Stop()
		p = next
		time.Sleep(30 * time.Millisecond) // a reload every 30 ms, a check 150 ms
	}
	st := p.Status()
	waitFor(t, 5*time.Second, "the new target's first result", func() bool {
		st = p.Status()
		return len(st) == 2 && !st[1].LastCheck.IsZero()
	})
	if h, m := hits.Load(), most.Load(); h != 1 || m != 1 {
		t.Errorf("%d checks (at most %d at once) of a target over 20 reloads and an interval of an hour; want 1", h, m)
	}
	// Another spec: a new checker, its first check at once; the old one
	// ends (no goroutine left once the last pool stops).
	hc2 := *hc
	hc2.Interval = 2 * time.Hour
	next, err := NewPool(Spec{Service: "api", Targets: targets(t, srv.URL), HealthCheck: &hc2}, p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	next.Start()
	p.Stop()
	p = next
	waitFor(t, 5*time.Second, "a check by the new spec's checker", func() bool { return hits.Load() == 2 })
	p.Stop()
	waitFor(t, 5*time.Second, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= baseline })
}

// A checker handed on while its probe ran over HTTP/2 on the old pool's
// transport leaves no connection there: it closes once the probe ends
// (an outside check counted one more per reload, held for the idle
// timeout).
func TestHandedOnH2CheckLeavesNoConnection(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(100 * time.Millisecond)
	}))
	var pr http.Protocols
	pr.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &pr
	open := testutil.CountConns(srv)
	srv.Start()
	defer srv.Close()
	hc := &HealthCheckSpec{Path: "/hz", Interval: 20 * time.Millisecond, Timeout: 5 * time.Second}
	spec := Spec{Service: "api", Targets: targets(t, srv.URL), HealthCheck: hc}
	p, err := NewPool(spec, nil, Options{Protocol: "h2c"})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	for range 10 {
		time.Sleep(50 * time.Millisecond) // a probe in flight most of the time
		next, err := NewPool(spec, p, Options{Protocol: "h2c"})
		if err != nil {
			t.Fatal(err)
		}
		next.Start()
		p.Stop()
		p = next
	}
	waitFor(t, 5*time.Second, "one connection to the target, the current pool's", func() bool { return open.Load() <= 1 })
	p.Stop()
}
