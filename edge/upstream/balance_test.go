package upstream

import (
	"errors"
	"hash/fnv"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

func pickSeq(t *testing.T, p *Pool, n int) string {
	t.Helper()
	var b strings.Builder
	for range n {
		tg, err := p.Pick(nil, "", nil)
		if err != nil {
			t.Fatalf("Pick: %v", err)
		}
		b.WriteString(tg.URL.Hostname())
	}
	return b.String()
}

func TestRoundRobinSmoothWeighted(t *testing.T) {
	p := mustPool(t, Spec{Targets: []TargetSpec{
		{URL: mustURL(t, "http://a")}, // weight 0 means 1
		{URL: mustURL(t, "http://b"), Weight: 1},
		{URL: mustURL(t, "http://c"), Weight: 1},
	}}, nil, Options{})
	if got := pickSeq(t, p, 6); got != "abcabc" {
		t.Errorf("equal weights: got %q, want abcabc", got)
	}

	p = mustPool(t, Spec{Balancer: RoundRobin, Targets: []TargetSpec{
		{URL: mustURL(t, "http://a"), Weight: 5},
		{URL: mustURL(t, "http://b"), Weight: 1},
		{URL: mustURL(t, "http://c"), Weight: 1},
	}}, nil, Options{})
	// The sequence from nginx's ngx_http_upstream_get_peer for {5,1,1}.
	if got, want := pickSeq(t, p, 14), "aabacaa"+"aabacaa"; got != want {
		t.Errorf("weights 5,1,1: got %q, want %q", got, want)
	}
}

func TestRoundRobinSkipsUnavailable(t *testing.T) {
	p := mustPool(t, Spec{Targets: []TargetSpec{
		{URL: mustURL(t, "http://a"), Weight: 2},
		{URL: mustURL(t, "http://b"), Weight: 1},
		{URL: mustURL(t, "http://c"), Weight: 1},
	}}, nil, Options{})
	byHost(t, p, "b").st.down.Store(true)
	counts := map[string]int{}
	for range 300 {
		tg, err := p.Pick(nil, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		counts[tg.URL.Host]++
	}
	if counts["b"] != 0 || counts["a"] != 200 || counts["c"] != 100 {
		t.Errorf("counts = %v, want a:200 c:100 and no b", counts)
	}
}

func TestPickAvoidsTriedTargets(t *testing.T) {
	for _, kind := range []BalancerKind{RoundRobin, LeastRequests, ConsistentHash} {
		t.Run(string(kind), func(t *testing.T) {
			p := mustPool(t, Spec{Balancer: kind, Targets: targets(t, "http://a", "http://b", "http://c")}, nil, Options{})
			a, b, c := byHost(t, p, "a"), byHost(t, p, "b"), byHost(t, p, "c")
			for i := range 50 {
				ip := "192.0.2." + strconv.Itoa(i)
				got, err := p.Pick(nil, ip, []*Target{a, b})
				if err != nil || got != c {
					t.Fatalf("tried a,b: got %v, %v; want c", got, err)
				}
				// All available targets tried: reuse rather than fail.
				c.st.down.Store(true)
				got, err = p.Pick(nil, ip, []*Target{a, b})
				c.st.down.Store(false)
				if err != nil || (got != a && got != b) {
					t.Fatalf("all available tried: got %v, %v; want a or b", got, err)
				}
			}
		})
	}
}

func TestPickNoHealthyTarget(t *testing.T) {
	for _, kind := range []BalancerKind{RoundRobin, LeastRequests, ConsistentHash} {
		t.Run(string(kind), func(t *testing.T) {
			p := mustPool(t, Spec{Balancer: kind, Targets: targets(t, "http://a", "http://b")}, nil, Options{})
			for _, tg := range p.Targets() {
				tg.st.down.Store(true)
			}
			tg, err := p.Pick(nil, "192.0.2.1", p.Targets())
			if !errors.Is(err, ErrNoHealthyTarget) || tg != nil {
				t.Fatalf("got %v, %v; want ErrNoHealthyTarget", tg, err)
			}
		})
	}
}

func TestLeastRequestsPrefersLowInFlight(t *testing.T) {
	p := mustPool(t, Spec{Balancer: LeastRequests, Targets: targets(t, "http://a", "http://b")}, nil, Options{})
	a, b := byHost(t, p, "a"), byHost(t, p, "b")
	doneA := a.Begin()
	for range 100 {
		if got, _ := p.Pick(nil, "", nil); got != b {
			t.Fatalf("with a busy, picked %v", got)
		}
	}
	doneA(Success)

	// With three targets two are sampled, so the busiest can never win and
	// the idle one wins whenever it is sampled (2 times out of 3).
	p = mustPool(t, Spec{Balancer: LeastRequests, Targets: targets(t, "http://a", "http://b", "http://c")}, nil, Options{})
	a, b, c := byHost(t, p, "a"), byHost(t, p, "b"), byHost(t, p, "c")
	for range 5 {
		defer b.Begin()(Success)
	}
	for range 10 {
		defer c.Begin()(Success)
	}
	counts := map[*Target]int{}
	for range 3000 {
		tg, _ := p.Pick(nil, "", nil)
		counts[tg]++
	}
	if counts[c] != 0 {
		t.Errorf("busiest target picked %d times", counts[c])
	}
	if counts[a] < 1700 || counts[a] > 2300 {
		t.Errorf("idle target picked %d of 3000 times, want about 2000", counts[a])
	}
}

func TestLeastRequestsWeightAware(t *testing.T) {
	p := mustPool(t, Spec{Balancer: LeastRequests, Targets: []TargetSpec{
		{URL: mustURL(t, "http://a"), Weight: 4},
		{URL: mustURL(t, "http://b"), Weight: 1},
	}}, nil, Options{})
	// Requests that never finish: in-flight counts settle in proportion to
	// the weights.
	var dones []func(Outcome)
	for range 50 {
		tg, _ := p.Pick(nil, "", nil)
		dones = append(dones, tg.Begin())
	}
	a := byHost(t, p, "a").InFlight()
	if a < 38 || a > 42 {
		t.Errorf("weight-4 target holds %d of 50 requests, want about 40", a)
	}
	for _, d := range dones {
		d(Success)
	}
}

// Targets of different weights share requests by weight when idle: a
// weight-1 canary beside a weight-3 target gets its quarter even when
// requests come one at a time (Envoy's weighted least request), not only
// once the heavier target is busy.
func TestLeastRequestsWeightsWhenIdle(t *testing.T) {
	p := mustPool(t, Spec{Balancer: LeastRequests, Targets: []TargetSpec{
		{URL: mustURL(t, "http://a"), Weight: 3},
		{URL: mustURL(t, "http://b"), Weight: 1},
	}}, nil, Options{})
	counts := map[string]int{}
	for range 400 {
		tg, _ := p.Pick(nil, "", nil)
		done := tg.Begin()
		counts[tg.URL.Host]++
		done(Success)
	}
	if counts["a"] != 300 || counts["b"] != 100 {
		t.Errorf("one request at a time over weights 3 and 1: got %v, want a:300 b:100", counts)
	}
	// A busy heavy target gives way: with a holding 9 requests (three
	// times its weight) and b none, b is picked next.
	a := byHost(t, p, "a")
	for range 9 {
		defer a.Begin()(Success)
	}
	if tg, _ := p.Pick(nil, "", nil); tg.URL.Host != "b" {
		t.Fatalf("with a holding 9 requests and b none, picked %s", tg.URL.Host)
	}
	// Load is per unit of weight: a slow heavy target holding 3 per unit
	// loses to a light one holding 2 (w/(1+inFlight) would still pick a).
	b := byHost(t, p, "b")
	for range 2 {
		defer b.Begin()(Success)
	}
	for range 5 {
		if tg, _ := p.Pick(nil, "", nil); tg != b {
			t.Fatalf("with a holding 9 (3 per weight) and b 2, picked %s", tg.URL.Host)
		}
	}
}

func TestLeastRequestsSpreadsEvenly(t *testing.T) {
	p := mustPool(t, Spec{Balancer: LeastRequests, Targets: targets(t, "http://a", "http://b", "http://c")}, nil, Options{})
	counts := map[string]int{}
	for range 3000 {
		tg, _ := p.Pick(nil, "", nil)
		counts[tg.URL.Host]++
	}
	for h, n := range counts {
		if n < 800 || n > 1200 {
			t.Errorf("%s picked %d of 3000 times, want about 1000", h, n)
		}
	}
}

func hashPool(t *testing.T, urls []string, hashOn HashSource) *Pool {
	return mustPool(t, Spec{Balancer: ConsistentHash, HashOn: hashOn, Targets: targets(t, urls...)}, nil, Options{})
}

func headerReq(name, value string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if value != "" {
		r.Header.Set(name, value)
	}
	return r
}

func TestConsistentHashStableAndMinimalMovement(t *testing.T) {
	const n, keys = 10, 20000
	urls := hostURLs(n)
	src := HashSource{Kind: HashHeader, Name: "x-user"} // canonicalized by NewPool
	p := hashPool(t, urls, src)
	again := hashPool(t, urls, src) // an independent build must agree
	before := make([]string, keys)
	perTarget := map[string]int{}
	for k := range keys {
		r := headerReq("X-User", "user-"+strconv.Itoa(k))
		tg, err := p.Pick(r, "192.0.2.1", nil)
		if err != nil {
			t.Fatal(err)
		}
		before[k] = tg.key
		perTarget[tg.key]++
		if tg2, _ := p.Pick(r, "192.0.2.1", nil); tg2 != tg {
			t.Fatalf("key %d: picked %v then %v", k, tg, tg2)
		}
		if tg3, _ := again.Pick(r, "192.0.2.1", nil); tg3.key != tg.key {
			t.Fatalf("key %d: rebuilt ring picked %v, want %v", k, tg3, tg)
		}
	}
	for u, c := range perTarget {
		if share := float64(c) / keys; share < 0.05 || share > 0.16 {
			t.Errorf("%s owns %.3f of keys, want about 0.1", u, share)
		}
	}

	// Remove one target: only its keys may move.
	removed := urls[3]
	p2 := hashPool(t, append(append([]string{}, urls[:3]...), urls[4:]...), src)
	moved := 0
	for k := range keys {
		tg, _ := p2.Pick(headerReq("X-User", "user-"+strconv.Itoa(k)), "192.0.2.1", nil)
		if tg.key != before[k] {
			if before[k] != removed {
				t.Fatalf("key %d moved from %s to %s although %s was removed", k, before[k], tg.key, removed)
			}
			moved++
		}
	}
	if frac := float64(moved) / keys; frac < 0.05 || frac > 0.16 {
		t.Errorf("%.3f of keys moved, want about 1/%d", frac, n)
	}
}

func TestConsistentHashWeights(t *testing.T) {
	p := mustPool(t, Spec{Balancer: ConsistentHash, Targets: []TargetSpec{
		{URL: mustURL(t, "http://a"), Weight: 3},
		{URL: mustURL(t, "http://b"), Weight: 1},
	}}, nil, Options{})
	a := 0
	for k := range 10000 {
		tg, _ := p.Pick(nil, "key-"+strconv.Itoa(k), nil)
		if tg.URL.Host == "a" {
			a++
		}
	}
	if a < 7000 || a > 8000 {
		t.Errorf("weight-3 target owns %d of 10000 keys, want about 7500", a)
	}
}

func TestConsistentHashFallsBackToClientIP(t *testing.T) {
	urls := hostURLs(8)
	hdr := hashPool(t, urls, HashSource{Kind: HashHeader, Name: "X-Session"})
	cookie := hashPool(t, urls, HashSource{Kind: HashCookie, Name: "sid"})
	ip := hashPool(t, urls, HashSource{}) // default: client IP
	for k := range 200 {
		clientIP := "203.0.113." + strconv.Itoa(k)
		want, _ := ip.Pick(nil, clientIP, nil)

		// Header absent: the client IP decides.
		got, _ := hdr.Pick(headerReq("X-Session", ""), clientIP, nil)
		if got.key != want.key {
			t.Fatalf("header absent: got %v, want %v", got, want)
		}
		// Header present: the header value is the key, whatever the IP.
		got, _ = hdr.Pick(headerReq("X-Session", clientIP), "192.0.2.99", nil)
		if got.key != want.key {
			t.Fatalf("header present: got %v, want %v", got, want)
		}

		r := httptest.NewRequest(http.MethodGet, "/", nil)
		got, _ = cookie.Pick(r, clientIP, nil)
		if got.key != want.key {
			t.Fatalf("cookie absent: got %v, want %v", got, want)
		}
		r.AddCookie(&http.Cookie{Name: "sid", Value: clientIP})
		got, _ = cookie.Pick(r, "192.0.2.99", nil)
		if got.key != want.key {
			t.Fatalf("cookie present: got %v, want %v", got, want)
		}

		// No client IP from the caller: the host of RemoteAddr.
		r = httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = clientIP + ":43210"
		got, _ = ip.Pick(r, "", nil)
		if got.key != want.key {
			t.Fatalf("RemoteAddr fallback: got %v, want %v", got, want)
		}
	}
}

func TestConsistentHashWalksPastUnavailable(t *testing.T) {
	p := hashPool(t, hostURLs(5), HashSource{})
	const ip = "198.51.100.7"
	home, _ := p.Pick(nil, ip, nil)
	home.st.down.Store(true)
	away, err := p.Pick(nil, ip, nil)
	if err != nil || away == home {
		t.Fatalf("home down: got %v, %v", away, err)
	}
	// A retry that already tried home walks to the same next target.
	if got, _ := p.Pick(nil, ip, nil); got != away {
		t.Errorf("unstable while home is down: %v then %v", away, got)
	}
	home.st.down.Store(false)
	if got, _ := p.Pick(nil, ip, nil); got != home {
		t.Errorf("home back: got %v, want %v", got, home)
	}
	if got, _ := p.Pick(nil, ip, []*Target{home}); got != away {
		t.Errorf("home tried: got %v, want the next target on the ring %v", got, away)
	}
}

func TestHashIsFNV1a(t *testing.T) {
	for _, s := range []string{"", "a", "203.0.113.9", "http://10.0.0.1:8080#42"} {
		h := fnv.New64a()
		h.Write([]byte(s))
		want := mix64(h.Sum64())
		if got := hashString(s); got != want {
			t.Errorf("hashString(%q) = %x, want %x", s, got, want)
		}
		if got := hashBytes([]byte(s)); got != want {
			t.Errorf("hashBytes(%q) = %x, want %x", s, got, want)
		}
	}
	// Pin the value so an accidental change of the hash (which would remap
	// every sticky session on upgrade) fails loudly.
	if got, want := hashString("203.0.113.9"), uint64(0xebb68a453919e78e); got != want {
		t.Fatalf("hashString changed: got %#x, want %#x", got, want)
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	for _, kind := range []BalancerKind{RoundRobin, LeastRequests, ConsistentHash} {
		t.Run(string(kind), func(t *testing.T) {
			p := mustPool(t, Spec{Balancer: kind, Targets: targets(t, hostURLs(8)...)}, nil, Options{})
			tried := p.Targets()[:2]
			allocs := testing.AllocsPerRun(1000, func() {
				if _, err := p.Pick(nil, "192.0.2.1", tried); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("Pick allocates %.1f times per call", allocs)
			}
		})
	}
}

func BenchmarkPick(b *testing.B) {
	for _, kind := range []BalancerKind{RoundRobin, LeastRequests, ConsistentHash} {
		b.Run(string(kind), func(b *testing.B) {
			p := mustPool(b, Spec{Balancer: kind, Targets: targets(b, hostURLs(16)...)}, nil, Options{})
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					tg, err := p.Pick(nil, "192.0.2.1", nil)
					if err != nil {
						b.Fatal(err)
					}
					tg.Begin()(Success)
				}
			})
		})
	}
}

// A header field's lines are hashed as one list: combined by an
// intermediary, split, or spaced otherwise, a key keeps its target (an
// outside check saw two lines and their combined line go to two targets).
func TestConsistentHashHeaderLinesAsOneList(t *testing.T) {
	p := hashPool(t, hostURLs(10), HashSource{Kind: HashHeader, Name: "X-Key"})
	pick := func(lines ...string) string {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header["X-Key"] = lines
		tg, err := p.Pick(r, "192.0.2.1", nil)
		if err != nil {
			t.Fatal(err)
		}
		return tg.key
	}
	for k := range 50 {
		a, b := "1.1.1."+strconv.Itoa(k), "zzz"+strconv.Itoa(k)
		want := pick(a + ", " + b)
		for _, lines := range [][]string{{a, b}, {a + "," + b}, {a + " ,\t" + b}, {a, "", b}, {" " + a + ", ", b}} {
			if got := pick(lines...); got != want {
				t.Fatalf("lines %q went to %s; %q to %s", lines, got, a+", "+b, want)
			}
		}
	}
	if headerKey([]string{"a", "b"}) != "a, b" || headerKey([]string{"a"}) != "a" || headerKey([]string{" , "}) != "" {
		t.Errorf("headerKey: %q %q %q", headerKey([]string{"a", "b"}), headerKey([]string{"a"}), headerKey([]string{" , "}))
	}
}
