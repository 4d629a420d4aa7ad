package router

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// The generators draw from small vocabularies on purpose: with few hosts,
// segments and header values, random routes overlap heavily, so most
// requests have several candidates and the precedence rules are exercised
// rather than trivially satisfied.

var (
	genRouteHosts = []string{"a.com", "b.a.com", "x.b.a.com", "c.org", "A.Com", "*.a.com", "*.b.a.com", "*.org", "*.com", "*.x.b.a.com."}
	genReqHosts   = []string{"a.com", "b.a.com", "x.b.a.com", "y.x.b.a.com", "c.org", "d.c.org", "other.net", "A.COM:8080", "a.com.", "", "q.a.com", ".a.com"}
	genRouteSegs  = []string{"a", "b", "c", "a", "b", ""}
	genReqSegs    = []string{"a", "b", "c", "d", "", "a", "b"}
	genMethods    = []string{"GET", "POST", "PUT", ""}
	genRegexOne   = regexp.MustCompile(`^1`)
	genRegexTwo   = regexp.MustCompile(`2$`)
	genHeaders    = []HeaderMatch{
		{Name: "X-A", Exact: "1"},
		{Name: "x-a", Prefix: "1"},
		{Name: "X-A", Regex: genRegexTwo},
		{Name: "x-b", Present: true},
		{Name: "X-B", Exact: "yes"},
	}
	genQuery = []QueryMatch{
		{Name: "q", Exact: "1"},
		{Name: "q", Present: true},
		{Name: "q", Prefix: "x"},
		{Name: "q", Regex: genRegexOne},
		{Name: "r", Present: true},
	}
	genRawQueries = []string{"", "q=1", "q=x1&q=2", "q=%31", "q", "q=1;x", "q=%zz&q=1", "Q=1", "r=&q=x", "%71=1", "q=+1", "r"}
)

func pick[T any](rng *rand.Rand, s []T) T { return s[rng.IntN(len(s))] }

func genSegs(rng *rand.Rand, vocab []string, min, max int) []string {
	n := min + rng.IntN(max-min+1)
	segs := make([]string, n)
	for i := range segs {
		segs[i] = pick(rng, vocab)
	}
	return segs
}

func genRoute(rng *rand.Rand) Route {
	var r Route
	for range rng.IntN(3) {
		r.Hosts = append(r.Hosts, pick(rng, genRouteHosts))
	}
	r.Kind = PathKind(rng.IntN(3))
	switch r.Kind {
	case PathExact:
		r.Path = "/" + strings.Join(genSegs(rng, genRouteSegs, 1, 3), "/")
	case PathPrefix:
		r.Path = "/" + strings.Join(genSegs(rng, genRouteSegs, 0, 2), "/")
		if rng.IntN(2) == 0 && r.Path != "/" {
			r.Path += "/"
		}
	case PathTemplate:
		segs := genSegs(rng, genRouteSegs, 1, 4)
		for i := range segs {
			switch rng.IntN(3) {
			case 0:
				segs[i] = fmt.Sprintf("{p%d}", i)
			case 1:
				if i == len(segs)-1 {
					segs[i] = "{rest...}"
				}
			}
		}
		r.Path = "/" + strings.Join(segs, "/")
	}
	if rng.IntN(3) == 0 {
		r.Methods = []string{pick(rng, genMethods[:3])}
		if rng.IntN(3) == 0 {
			r.Methods = append(r.Methods, pick(rng, genMethods[:3]))
		}
	}
	for range rng.IntN(3) / 2 * (1 + rng.IntN(2)) {
		r.Headers = append(r.Headers, pick(rng, genHeaders))
	}
	if rng.IntN(4) == 0 {
		r.Query = append(r.Query, pick(rng, genQuery))
	}
	return r
}

func genRequest(rng *rand.Rand) (r *http.Request, host, path string) {
	r = &http.Request{
		Method: pick(rng, genMethods),
		Header: http.Header{},
		URL:    &url.URL{RawQuery: pick(rng, genRawQueries)},
	}
	for _, v := range []string{"1", "12", "2", "x"} {
		if rng.IntN(3) == 0 {
			r.Header.Add("X-A", v)
		}
	}
	if rng.IntN(3) == 0 {
		r.Header.Add("X-B", pick(rng, []string{"yes", "no", ""}))
	}
	path = "/" + strings.Join(genSegs(rng, genReqSegs, 1, 4), "/")
	return r, pick(rng, genReqHosts), path
}

func sameResult(got Result, gotOK bool, want Result, wantOK bool) bool {
	if gotOK != wantOK {
		return false
	}
	if !gotOK {
		return true
	}
	if got.Index != want.Index || len(got.Params) != len(want.Params) {
		return false
	}
	for i := range got.Params {
		if got.Params[i] != want.Params[i] {
			return false
		}
	}
	return true
}

func fmtResult(r Result, ok bool, routes []Route) string {
	if !ok {
		return "no match"
	}
	rt := routes[r.Index]
	return fmt.Sprintf("route %d {hosts %q %v %q methods %v headers %d query %d} params %v",
		r.Index, rt.Hosts, rt.Kind, rt.Path, rt.Methods, len(rt.Headers), len(rt.Query), r.Params)
}

// TestMatchAgreesWithReference compares Table.Match with the linear
// reference matcher on random route sets and requests.
func TestMatchAgreesWithReference(t *testing.T) {
	const tables, routesPer, requestsPer = 400, 30, 60
	var matched, withParams int
	var hostTiers [3]int
	for seed := range uint64(tables) {
		rng := rand.New(rand.NewPCG(seed, 0x6d65726964696e))
		routes := make([]Route, routesPer)
		for i := range routes {
			routes[i] = genRoute(rng)
		}
		tbl, err := New(routes)
		if err != nil {
			t.Fatalf("seed %d: New: %v", seed, err)
		}
		for range requestsPer {
			r, host, path := genRequest(rng)
			got, gotOK := tbl.Match(r, host, path)
			want, wantOK := refMatch(routes, r, host, path)
			if !sameResult(got, gotOK, want, wantOK) {
				t.Fatalf("seed %d: Match(%s host=%q path=%q headers=%v query=%q):\ngot  %s\nwant %s",
					seed, r.Method, host, path, r.Header, r.URL.RawQuery,
					fmtResult(got, gotOK, routes), fmtResult(want, wantOK, routes))
			}
			if gotOK {
				matched++
				if len(got.Params) > 0 {
					withParams++
				}
				tier, _, _ := refHost(routes[got.Index].Hosts, normalizeHost(host))
				hostTiers[tier]++
				if got.Route != &tbl.routes[got.Index] {
					t.Fatalf("seed %d: Result.Route does not point at the table's route %d", seed, got.Index)
				}
			}
		}
	}
	// Guard against a generator that stopped producing interesting cases:
	// the comparison is only meaningful if matches of every kind happen.
	total := tables * requestsPer
	if matched < total/4 || withParams < total/20 || hostTiers[0] == 0 || hostTiers[1] == 0 || hostTiers[2] == 0 {
		t.Fatalf("generator too weak: %d/%d matched, %d with params, host tiers %v", matched, total, withParams, hostTiers)
	}
	t.Logf("%d requests, %d matched, %d with params, host tiers (exact, wildcard, any) %v", total, matched, withParams, hostTiers)
}
