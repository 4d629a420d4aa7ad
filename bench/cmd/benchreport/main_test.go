package main

import (
	"math"
	"testing"
)

func result(rps float64, p99 int64) *loadResult {
	r := &loadResult{RPS: rps}
	r.LatencyNS.P99 = p99
	return r
}

// versus divides Meridian's row by each peer's of the same proto and conns,
// and nothing else: not the baselines, not failed rows, not other conns.
func TestVersus(t *testing.T) {
	rows := []Row{
		{Proto: "h1", Target: "direct", Conns: 64, OK: true, Result: result(50000, 1e6)},
		{Proto: "h1", Target: "nginx", Conns: 64, OK: true, Result: result(30000, 4e6)},
		{Proto: "h1", Target: "caddy", Conns: 64, OK: false},
		{Proto: "h1", Target: "nginx", Conns: 256, OK: true, Result: result(20000, 30e6)},
		{Proto: "h1", Target: "meridian", Conns: 64, OK: true, Result: result(24000, 6e6)},
		{Proto: "h1", Target: "meridian", Conns: 256, OK: true, Result: result(25000, 24e6)},
		{Proto: "h1", Target: "meridian-bare", Conns: 64, OK: true, Result: result(27000, 5e6)},
		{Proto: "tls", Target: "direct-tls", Conns: 64, OK: true, Result: result(40000, 1e6)},
		{Proto: "tls", Target: "caddy-tls", Conns: 64, OK: true, Result: result(10000, 8e6)},
		{Proto: "tls", Target: "meridian-tls", Conns: 64, OK: true, Result: result(20000, 4e6)},
	}
	cpu := func(v float64) *float64 { return &v }
	rows[1].ProxyCPUus, rows[4].ProxyCPUus = cpu(10), cpu(15) // nginx and meridian at 64
	rows[5].ProxyCPUus = cpu(12)                              // meridian at 256; nginx's unmeasured
	got := versus(rows)
	want := []Versus{
		{"h1", 64, "nginx", 0.8, 1.5, 1.5, "meridian"},
		{"h1", 256, "nginx", 1.25, 0.8, 0, "meridian"},
		{"h1", 64, "nginx", 0.9, 1.25, 0, "meridian-bare"}, // not against "meridian"
		{"tls", 64, "caddy-tls", 2, 0.5, 0, "meridian-tls"},
	}
	if len(got) != len(want) {
		t.Fatalf("versus = %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Proto != w.Proto || g.Conns != w.Conns || g.Peer != w.Peer || g.Meridian != w.Meridian ||
			math.Abs(g.RPSRatio-w.RPSRatio) > 1e-9 || math.Abs(g.P99Ratio-w.P99Ratio) > 1e-9 ||
			math.Abs(g.CPURatio-w.CPURatio) > 1e-9 {
			t.Errorf("versus[%d] = %+v, want %+v", i, g, w)
		}
	}
}

// CPU per request comes from the runs TSV's columns divided by the run's
// requests; a baseline has no proxy CPU, and a run without the columns has
// none at all.
func TestCPUPerRequest(t *testing.T) {
	r := result(1000, 1)
	r.Requests = 2000
	r.targetCPU, r.backendCPU = 30000, 20000
	p, b := cpuPerRequest("meridian", r)
	if p == nil || b == nil || *p != 15 || *b != 10 {
		t.Fatalf("meridian: proxy %v backend %v; want 15 and 10", p, b)
	}
	if p, b := cpuPerRequest("direct", r); p != nil || b == nil || *b != 10 {
		t.Fatalf("direct: proxy %v backend %v; want none and 10", p, b)
	}
	r.targetCPU, r.backendCPU = -1, -1
	if p, b := cpuPerRequest("nginx", r); p != nil || b != nil {
		t.Fatalf("unmeasured: proxy %v backend %v; want none", p, b)
	}
}
