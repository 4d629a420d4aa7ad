package upstream

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestNewPoolValidation(t *testing.T) {
	ok := func() []TargetSpec { return targets(t, "http://a:8080") }
	tests := []struct {
		name string
		spec Spec
		want string // substring of the error
	}{
		{"no service", Spec{Targets: ok()}, "service name is empty"},
		{"no targets", Spec{Service: "s"}, "no targets"},
		{"nil URL", Spec{Service: "s", Targets: []TargetSpec{{}}}, "URL is nil"},
		{"bad scheme", Spec{Service: "s", Targets: targets(t, "ftp://a")}, `scheme "ftp" is not supported`},
		{"no scheme", Spec{Service: "s", Targets: targets(t, "a:8080")}, "is not supported"},
		{"no host", Spec{Service: "s", Targets: targets(t, "http:///x")}, "no host"},
		{"negative weight", Spec{Service: "s", Targets: []TargetSpec{{URL: mustURL(t, "http://a"), Weight: -1}}}, "weight -1"},
		{"huge weight", Spec{Service: "s", Targets: []TargetSpec{{URL: mustURL(t, "http://a"), Weight: MaxWeight + 1}}}, "out of range"},
		{"duplicate URL", Spec{Service: "s", Targets: targets(t, "http://a", "http://b", "http://a")}, "targets 0 and 2 have the same URL"},
		{"duplicate, path / added", Spec{Service: "s", Targets: targets(t, "http://a:1", "http://a:1/")}, "targets 0 (http://a:1) and 1 (http://a:1/) are the same destination"},
		{"duplicate, default port named", Spec{Service: "s", Targets: targets(t, "https://a/", "https://a:443")}, "are the same destination"},
		{"duplicate, host in capitals", Spec{Service: "s", Targets: targets(t, "http://Api.Example:8080/v1", "http://api.example:8080/v1")}, "are the same destination"},
		{"bad balancer", Spec{Service: "s", Targets: ok(), Balancer: "random"}, `unknown balancer "random"`},
		{"bad hash kind", Spec{Service: "s", Targets: ok(), Balancer: ConsistentHash, HashOn: HashSource{Kind: "query"}}, `unknown hash source "query"`},
		{"hash header without name", Spec{Service: "s", Targets: ok(), Balancer: ConsistentHash, HashOn: HashSource{Kind: HashHeader}}, "needs a header name"},
		{"hash cookie without name", Spec{Service: "s", Targets: ok(), Balancer: ConsistentHash, HashOn: HashSource{Kind: HashCookie}}, "needs a cookie name"},
		{"relative health path", Spec{Service: "s", Targets: ok(), HealthCheck: &HealthCheckSpec{Path: "healthz"}}, "must start with /"},
		{"negative interval", Spec{Service: "s", Targets: ok(), HealthCheck: &HealthCheckSpec{Interval: -time.Second}}, "must not be negative"},
		{"fragment in health path", Spec{Service: "s", Targets: ok(), HealthCheck: &HealthCheckSpec{Path: "/h?x=1#frag"}}, "has a fragment"},
		{"huge threshold", Spec{Service: "s", Targets: ok(), HealthCheck: &HealthCheckSpec{UnhealthyThreshold: 1e12}}, "at most 1000"},
		{"huge consecutive failures", Spec{Service: "s", Targets: ok(), Outlier: &OutlierSpec{ConsecutiveFailures: 1001}}, "at most 1000"},
		{"negative threshold", Spec{Service: "s", Targets: ok(), HealthCheck: &HealthCheckSpec{HealthyThreshold: -1}}, "thresholds must not be negative"},
		{"status range", Spec{Service: "s", Targets: ok(), HealthCheck: &HealthCheckSpec{ExpectStatusMin: 400}}, "400..399 is invalid"},
		{"negative outlier", Spec{Service: "s", Targets: ok(), Outlier: &OutlierSpec{ConsecutiveFailures: -1}}, "must not be negative"},
		{"max below base", Spec{Service: "s", Targets: ok(), Outlier: &OutlierSpec{BaseEjection: time.Minute, MaxEjection: time.Second}}, "shorter than base"},
		{"ejection percent", Spec{Service: "s", Targets: ok(), Outlier: &OutlierSpec{MaxEjectionPercent: 101}}, "percent 101"},
		{"negative max concurrent", Spec{Service: "s", Targets: ok(), MaxConcurrent: -1}, "max concurrent -1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPool(tc.spec, nil, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewPool error = %v, want it to contain %q", err, tc.want)
			}
			if p != nil {
				t.Error("pool returned with an error")
			}
		})
	}
}

func TestNewPoolDefaults(t *testing.T) {
	u := mustURL(t, "https://a:8443/base")
	p := mustPool(t, Spec{
		Targets:     []TargetSpec{{URL: u, Region: "eu-west"}},
		HealthCheck: &HealthCheckSpec{},
		Outlier:     &OutlierSpec{BaseEjection: 10 * time.Minute},
	}, nil, Options{})
	u.Host = "mutated" // the pool keeps its own copy
	tg := p.Targets()[0]
	if tg.Weight != 1 || tg.URL.Host != "a:8443" || tg.Region != "eu-west" || p.balancer != RoundRobin {
		t.Errorf("target %+v, balancer %q", tg, p.balancer)
	}
	wantHC := HealthCheckSpec{Path: "/", Interval: DefaultHealthInterval, Timeout: DefaultHealthTimeout,
		HealthyThreshold: DefaultHealthyThreshold, UnhealthyThreshold: DefaultUnhealthyThreshold,
		ExpectStatusMin: 200, ExpectStatusMax: 399}
	if *p.health != wantHC {
		t.Errorf("health defaults = %+v, want %+v", *p.health, wantHC)
	}
	// MaxEjection defaults to at least BaseEjection.
	wantO := OutlierSpec{ConsecutiveFailures: DefaultConsecutiveFailures, BaseEjection: 10 * time.Minute,
		MaxEjection: 10 * time.Minute, MaxEjectionPercent: DefaultMaxEjectionPercent}
	if *p.outlier != wantO {
		t.Errorf("outlier defaults = %+v, want %+v", *p.outlier, wantO)
	}
	if got := healthURL(tg, p.health.Path); got != "https://a:8443/" {
		t.Errorf("health URL = %q", got)
	}
	if st := p.Status()[0]; st.URL != "https://a:8443/base" || st.Healthy || !st.Pending || st.Ejected || st.Weight != 1 {
		t.Errorf("status = %+v", st)
	}
}

func TestStatusRedactsPassword(t *testing.T) {
	p := mustPool(t, Spec{Targets: targets(t, "http://user:secret@a")}, nil, Options{})
	if got := p.Status()[0].URL; strings.Contains(got, "secret") {
		t.Errorf("Status URL leaks the password: %q", got)
	}
}

func TestReloadKeepsTargetState(t *testing.T) {
	clock := newFakeClock()
	outlier := &OutlierSpec{ConsecutiveFailures: 1, BaseEjection: time.Minute, MaxEjectionPercent: 100}
	old := mustPool(t, Spec{
		Targets: targets(t, "http://a", "http://b", "http://c", "http://gone"),
		Outlier: outlier,
	}, nil, Options{Now: clock.Now})
	old.Start()
	oa, ob, oc := byHost(t, old, "a"), byHost(t, old, "b"), byHost(t, old, "c")
	fail(oa, 1) // ejected
	doneB := ob.Begin()
	oc.st.down.Store(true) // as if health checks had taken it down

	newSpec := Spec{
		Targets: []TargetSpec{
			{URL: mustURL(t, "http://a")},
			{URL: mustURL(t, "http://b"), Weight: 3}, // same URL, new weight
			{URL: mustURL(t, "http://c")},
			{URL: mustURL(t, "http://new")},
		},
		Outlier: outlier,
	}
	p := mustPool(t, newSpec, old, Options{Now: clock.Now})
	a, b, c, n := byHost(t, p, "a"), byHost(t, p, "b"), byHost(t, p, "c"), byHost(t, p, "new")
	if a != oa || c != oc {
		t.Error("unchanged targets are not shared by pointer")
	}
	if b == ob || b.Weight != 3 || b.st != ob.st {
		t.Error("re-weighted target must be a new descriptor over the old state")
	}
	if a.Available(clock.Now()) || c.Available(clock.Now()) || !n.Available(clock.Now()) {
		t.Error("ejection and health state not carried over, or new target not healthy")
	}
	if b.InFlight() != 1 {
		t.Errorf("in-flight on b = %d, want 1 carried over", b.InFlight())
	}

	// Hand over: the old pool is stopped, its running request finishes.
	p.Start()
	old.Stop()
	doneB(Success)
	if b.InFlight() != 0 {
		t.Errorf("in-flight on b = %d after the old request finished", b.InFlight())
	}
	if _, err := old.Pick(nil, "", nil); err != nil {
		t.Errorf("old pool unusable after Stop: %v", err)
	}
	clock.Advance(time.Minute)
	if !a.Available(clock.Now()) {
		t.Error("carried ejection did not expire")
	}
}

func TestReloadHandsPolicyToNewPool(t *testing.T) {
	clock := newFakeClock()
	old := mustPool(t, Spec{Targets: targets(t, "http://a", "http://b"),
		Outlier: &OutlierSpec{ConsecutiveFailures: 100, MaxEjectionPercent: 100}}, nil, Options{Now: clock.Now})
	old.Start()
	p := mustPool(t, Spec{Targets: targets(t, "http://a", "http://b"),
		Outlier: &OutlierSpec{ConsecutiveFailures: 2, MaxEjectionPercent: 100}}, old, Options{Now: clock.Now})
	a := byHost(t, old, "a")

	fail(a, 2) // the new pool is not started yet: the old policy rules
	if !a.Available(clock.Now()) {
		t.Fatal("new policy applied before the new pool started")
	}
	p.Start()
	old.Stop()
	fail(a, 2) // a request picked from the old pool, judged by the new policy
	if a.Available(clock.Now()) {
		t.Fatal("new policy not applied after Start")
	}
}

func TestReloadHealthChecks(t *testing.T) {
	var ev healthEvents
	hc := &HealthCheckSpec{UnhealthyThreshold: 1, Interval: time.Hour}
	old := mustPool(t, Spec{Targets: targets(t, "http://a", "http://b"), HealthCheck: hc}, nil, Options{})
	a, b := byHost(t, old, "a"), byHost(t, old, "b")
	old.recordCheck(a, errTest)
	if a.Available(time.Now()) {
		t.Fatal("check result not recorded")
	}
	if b.Available(time.Now()) {
		t.Fatal("b is available before its first check")
	}

	// Checks switched off: nothing could bring a back, so it is healthy
	// again once the new pool takes over.
	p := mustPool(t, Spec{Targets: targets(t, "http://a", "http://b")}, old, Options{OnHealthChange: ev.record})
	if a.Available(time.Now()) {
		t.Fatal("state changed before the new pool started")
	}
	p.Start()
	old.Stop()
	if !a.Available(time.Now()) {
		t.Fatal("target left down although health checks are disabled")
	}
	if !b.Available(time.Now()) {
		t.Fatal("target left awaiting a first check that will never come")
	}
	if got := ev.list(); len(got) != 1 || got[0] != "svc a up" {
		t.Errorf("health events = %q", got)
	}
	// Results from the old pool's checkers no longer count.
	old.recordCheck(a, errTest)
	if !a.Available(time.Now()) {
		t.Fatal("a stale checker changed the target")
	}
}

var errTest = errors.New("probe failed")

func TestReloadRejectsOtherService(t *testing.T) {
	old := mustPool(t, Spec{Service: "one", Targets: targets(t, "http://a")}, nil, Options{})
	if _, err := NewPool(Spec{Service: "two", Targets: targets(t, "http://a")}, old, Options{}); err == nil {
		t.Fatal("accepted the previous pool of another service")
	}
}

func TestAcquireRelease(t *testing.T) {
	p := mustPool(t, Spec{Targets: targets(t, "http://a"), MaxConcurrent: 2}, nil, Options{})
	first, second := p.Acquire(), p.Acquire()
	if !first || !second {
		t.Fatal("refused below the limit")
	}
	if p.Acquire() {
		t.Fatal("admitted above the limit")
	}
	p.Release()
	if !p.Acquire() {
		t.Fatal("refused after a release")
	}
	p.Release()
	p.Release()
	if p.InFlight() != 0 {
		t.Fatalf("InFlight = %d", p.InFlight())
	}

	unlimited := mustPool(t, Spec{Targets: targets(t, "http://a")}, nil, Options{})
	for range 1000 {
		if !unlimited.Acquire() {
			t.Fatal("unlimited pool refused")
		}
	}
	if unlimited.InFlight() != 1000 {
		t.Fatalf("InFlight = %d, want 1000", unlimited.InFlight())
	}
}

func TestAcquireConcurrent(t *testing.T) {
	const limit = 5
	p := mustPool(t, Spec{Targets: targets(t, "http://a"), MaxConcurrent: limit}, nil, Options{})
	var active, peak, admitted atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 500 {
				if !p.Acquire() {
					continue
				}
				admitted.Add(1)
				n := active.Add(1)
				for {
					m := peak.Load()
					if n <= m || peak.CompareAndSwap(m, n) {
						break
					}
				}
				active.Add(-1)
				p.Release()
			}
		})
	}
	wg.Wait()
	if peak.Load() > limit {
		t.Errorf("peak concurrency %d exceeds the limit %d", peak.Load(), limit)
	}
	if admitted.Load() == 0 || p.InFlight() != 0 {
		t.Errorf("admitted %d, InFlight %d at the end", admitted.Load(), p.InFlight())
	}
}

func TestConcurrencyLimitSpansReload(t *testing.T) {
	old := mustPool(t, Spec{Targets: targets(t, "http://a"), MaxConcurrent: 2}, nil, Options{})
	old.Acquire()
	old.Acquire()
	p := mustPool(t, Spec{Targets: targets(t, "http://a"), MaxConcurrent: 3}, old, Options{})
	if p.InFlight() != 2 {
		t.Fatalf("InFlight of the new pool = %d, want the 2 still running on the old one", p.InFlight())
	}
	if !p.Acquire() || p.Acquire() {
		t.Fatal("new limit of 3 not applied to the shared count")
	}
	old.Release()
	old.Release()
	p.Release()
	if p.InFlight() != 0 {
		t.Fatalf("InFlight = %d", p.InFlight())
	}
}

// TestConcurrentUse exercises every path at once for the race detector.
func TestConcurrentUse(t *testing.T) {
	clock := newFakeClock()
	for _, kind := range []BalancerKind{RoundRobin, LeastRequests, ConsistentHash} {
		t.Run(string(kind), func(t *testing.T) {
			p := mustPool(t, Spec{
				Balancer:      kind,
				Targets:       targets(t, hostURLs(6)...),
				Outlier:       &OutlierSpec{ConsecutiveFailures: 3, BaseEjection: time.Millisecond, MaxEjectionPercent: 50},
				MaxConcurrent: 8,
			}, nil, Options{Now: clock.Now})
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := range 300 {
						if !p.Acquire() {
							continue
						}
						var tried []*Target
						for range 2 { // a request and its retry
							tg, err := p.Pick(nil, "192.0.2."+strconv.Itoa(g), tried)
							if err != nil {
								break
							}
							tried = append(tried, tg)
							done := tg.Begin()
							if rand.IntN(4) == 0 {
								done(Failure)
							} else {
								done(Success)
								break
							}
						}
						p.Release()
						if i%50 == 0 {
							clock.Advance(time.Millisecond)
							_ = p.Status()
						}
					}
				})
			}
			wg.Wait()
			if p.InFlight() != 0 {
				t.Errorf("InFlight = %d", p.InFlight())
			}
			for _, st := range p.Status() {
				if st.InFlight != 0 {
					t.Errorf("%s: InFlight = %d", st.URL, st.InFlight)
				}
			}
		})
	}
}
