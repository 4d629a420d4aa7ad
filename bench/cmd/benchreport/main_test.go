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
		{Proto: "tls", Target: "direct-tls", Conns: 64, OK: true, Result: result(40000, 1e6)},
		{Proto: "tls", Target: "caddy-tls", Conns: 64, OK: true, Result: result(10000, 8e6)},
		{Proto: "tls", Target: "meridian-tls", Conns: 64, OK: true, Result: result(20000, 4e6)},
	}
	got := versus(rows)
	want := []Versus{
		{"h1", 64, "nginx", 0.8, 1.5},
		{"h1", 256, "nginx", 1.25, 0.8},
		{"tls", 64, "caddy-tls", 2, 0.5},
	}
	if len(got) != len(want) {
		t.Fatalf("versus = %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Proto != w.Proto || g.Conns != w.Conns || g.Peer != w.Peer ||
			math.Abs(g.RPSRatio-w.RPSRatio) > 1e-9 || math.Abs(g.P99Ratio-w.P99Ratio) > 1e-9 {
			t.Errorf("versus[%d] = %+v, want %+v", i, g, w)
		}
	}
}
