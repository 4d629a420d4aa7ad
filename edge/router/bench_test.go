package router

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
)

// benchRoutes builds a realistic table of n routes: n/10 services, each on
// its own host with exact, template, catch-all and prefix routes, some with
// method, header or query conditions, plus per-service routes in the
// wildcard and any-host tiers.
func benchRoutes(n int) []Route {
	routes := make([]Route, 0, n)
	for i := range n {
		s := i / 10
		host := []string{fmt.Sprintf("svc%d.example.com", s)}
		var r Route
		switch i % 10 {
		case 0:
			r = Route{Hosts: host, Path: fmt.Sprintf("/svc%d/health", s), Methods: []string{"GET", "HEAD"}}
		case 1:
			r = Route{Hosts: host, Path: fmt.Sprintf("/svc%d/users/{id}", s), Kind: PathTemplate}
		case 2:
			r = Route{Hosts: host, Path: fmt.Sprintf("/svc%d/users/{id}/orders/{order}", s), Kind: PathTemplate}
		case 3:
			r = Route{Hosts: host, Path: fmt.Sprintf("/svc%d/static/", s), Kind: PathPrefix}
		case 4:
			r = Route{Hosts: host, Path: fmt.Sprintf("/svc%d/version", s), Headers: []HeaderMatch{{Name: "X-Tenant", Exact: "t1"}}}
		case 5:
			r = Route{Hosts: host, Path: fmt.Sprintf("/svc%d/files/{path...}", s), Kind: PathTemplate}
		case 6:
			r = Route{Path: fmt.Sprintf("/svc%d/", s), Kind: PathPrefix}
		case 7:
			r = Route{Hosts: host, Path: fmt.Sprintf("/svc%d/users/me", s), Methods: []string{"GET"}}
		case 8:
			r = Route{Hosts: host, Path: fmt.Sprintf("/svc%d/users/{id}", s), Kind: PathTemplate,
				Query: []QueryMatch{{Name: "version", Exact: "2"}}}
		case 9:
			r = Route{Hosts: []string{"*.example.com"}, Path: fmt.Sprintf("/v%d/", s), Kind: PathPrefix}
		}
		r.Value = i
		routes = append(routes, r)
	}
	return routes
}

type benchReq struct {
	r          *http.Request
	host, path string
}

// benchRequests returns n requests spread over the services of routes,
// cycling through exact, template, catch-all, prefix, wildcard, any-host
// and missing routes.
func benchRequests(routes []Route, n int) []benchReq {
	services := max(len(routes)/10, 1)
	get := &http.Request{Method: "GET", Header: http.Header{"X-Tenant": {"t1"}}, URL: &url.URL{RawQuery: "a=1&version=2"}}
	post := &http.Request{Method: "POST", Header: http.Header{}, URL: &url.URL{}}
	reqs := make([]benchReq, n)
	for i := range reqs {
		s := (i * 7919) % services // spread over the table, not just the first service
		host := fmt.Sprintf("svc%d.example.com", s)
		var q benchReq
		switch i % 8 {
		case 0:
			q = benchReq{get, host, fmt.Sprintf("/svc%d/health", s)}
		case 1:
			q = benchReq{post, host, fmt.Sprintf("/svc%d/users/%d", s, i)}
		case 2:
			q = benchReq{get, host, fmt.Sprintf("/svc%d/users/%d/orders/9", s, i)}
		case 3:
			q = benchReq{get, host, fmt.Sprintf("/svc%d/static/js/app.js", s)}
		case 4:
			q = benchReq{get, host, fmt.Sprintf("/svc%d/files/a/b/c.txt", s)}
		case 5:
			q = benchReq{get, "gateway.example.com:443", fmt.Sprintf("/v%d/anything", s)}
		case 6:
			q = benchReq{post, "other.test", fmt.Sprintf("/svc%d/x", s)}
		case 7:
			q = benchReq{get, host, "/missing/path"}
		}
		reqs[i] = q
	}
	return reqs
}

var benchSizes = []int{100, 1000, 10000}

// BenchmarkMatch measures Table.Match over a mix of request kinds. The
// time per lookup should stay roughly flat as the table grows.
func BenchmarkMatch(b *testing.B) {
	for _, n := range benchSizes {
		routes := benchRoutes(n)
		tbl, err := New(routes)
		if err != nil {
			b.Fatal(err)
		}
		reqs := benchRequests(routes, 1024)
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				q := reqs[i%len(reqs)]
				tbl.Match(q.r, q.host, q.path)
				i++
			}
		})
	}
}

// BenchmarkMatchKind breaks the 10000-route case down by request kind;
// only the template kinds allocate (their Params slice).
func BenchmarkMatchKind(b *testing.B) {
	routes := benchRoutes(10000)
	tbl, err := New(routes)
	if err != nil {
		b.Fatal(err)
	}
	reqs := benchRequests(routes, 8)
	for i, name := range []string{"exact", "template", "template2", "prefix", "catchall", "wildcard", "anyhost", "miss"} {
		q := reqs[i]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tbl.Match(q.r, q.host, q.path)
			}
		})
	}
}

// BenchmarkLinearScan runs the reference matcher, a naive scan over every
// route, on the same workload for contrast.
func BenchmarkLinearScan(b *testing.B) {
	for _, n := range benchSizes {
		routes := benchRoutes(n)
		reqs := benchRequests(routes, 1024)
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				q := reqs[i%len(reqs)]
				refMatch(routes, q.r, q.host, q.path)
				i++
			}
		})
	}
}

// BenchmarkNew measures compiling a table, which happens once per config.
func BenchmarkNew(b *testing.B) {
	for _, n := range benchSizes {
		routes := benchRoutes(n)
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := New(routes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestBenchWorkload checks that the benchmark workload exercises what it
// claims to, and agrees with the reference, so the numbers mean something.
func TestBenchWorkload(t *testing.T) {
	routes := benchRoutes(1000)
	tbl, err := New(routes)
	if err != nil {
		t.Fatal(err)
	}
	reqs := benchRequests(routes, 16)
	wantKind := []int{0, 1, 2, 3, 5, 9, 6, -1}
	for i, q := range reqs {
		got, ok := tbl.Match(q.r, q.host, q.path)
		want, wantOK := refMatch(routes, q.r, q.host, q.path)
		if !sameResult(got, ok, want, wantOK) {
			t.Errorf("%s%s: got %s; want %s", q.host, q.path, fmtResult(got, ok, routes), fmtResult(want, wantOK, routes))
		}
		kind := -1
		if ok {
			kind = got.Index % 10
		}
		if kind != wantKind[i%8] {
			t.Errorf("request %d %s%s: got route kind %d; want %d", i, q.host, q.path, kind, wantKind[i%8])
		}
	}
}
