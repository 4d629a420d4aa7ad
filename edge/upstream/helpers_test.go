package upstream

import (
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeClock is a hand-driven clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return u
}

// targets builds weight-1 target specs for the given URLs.
func targets(t testing.TB, urls ...string) []TargetSpec {
	t.Helper()
	out := make([]TargetSpec, len(urls))
	for i, u := range urls {
		out[i] = TargetSpec{URL: mustURL(t, u)}
	}
	return out
}

// hosts returns n target URLs http://h0:80 ... for ring tests.
func hostURLs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "http://10.0.0." + strconv.Itoa(i+1) + ":8080"
	}
	return out
}

func mustPool(t testing.TB, spec Spec, prev *Pool, opts Options) *Pool {
	t.Helper()
	if spec.Service == "" {
		spec.Service = "svc"
	}
	p, err := NewPool(spec, prev, opts)
	if err != nil {
		t.Fatalf("NewPool: %v", err)
	}
	t.Cleanup(p.Stop)
	return p
}

// byHost returns the target of p whose URL host is host.
func byHost(t testing.TB, p *Pool, host string) *Target {
	t.Helper()
	for _, tg := range p.Targets() {
		if tg.URL.Host == host {
			return tg
		}
	}
	t.Fatalf("no target with host %q", host)
	return nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fail reports n Failure outcomes for tg.
func fail(tg *Target, n int) {
	for range n {
		tg.Begin()(Failure)
	}
}
