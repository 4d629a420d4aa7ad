package router

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

type req struct {
	method, host, path string
	header             http.Header
	query              string
}

func (q req) build() *http.Request {
	m := q.method
	if m == "" {
		m = "GET"
	}
	return &http.Request{Method: m, Header: q.header, URL: &url.URL{RawQuery: q.query}}
}

// check runs the cases against a table built from routes; want is the
// expected route index, or -1 for no match. Every case is also checked
// against the reference matcher so the two specifications cannot drift.
func check(t *testing.T, routes []Route, cases []struct {
	name string
	req  req
	want int
}) {
	t.Helper()
	tbl, err := New(routes)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, c := range cases {
		r := c.req.build()
		res, ok := tbl.Match(r, c.req.host, c.req.path)
		got := -1
		if ok {
			got = res.Index
		}
		if got != c.want {
			t.Errorf("%s: %s %s%s: got route %d; want %d", c.name, r.Method, c.req.host, c.req.path, got, c.want)
		}
		ref, refOK := refMatch(routes, r, c.req.host, c.req.path)
		if !sameResult(res, ok, ref, refOK) {
			t.Errorf("%s: table and reference disagree: got %s; reference %s", c.name,
				fmtResult(res, ok, routes), fmtResult(ref, refOK, routes))
		}
	}
}

type cases = []struct {
	name string
	req  req
	want int
}

func TestPrefixBoundaries(t *testing.T) {
	routes := []Route{
		0: {Path: "/api", Kind: PathPrefix, Hosts: []string{"a.test"}},
		1: {Path: "/api/", Kind: PathPrefix, Hosts: []string{"b.test"}},
		2: {Path: "/", Kind: PathPrefix, Hosts: []string{"c.test"}},
		3: {Path: "/a/b", Kind: PathPrefix, Hosts: []string{"d.test"}},
	}
	check(t, routes, cases{
		{"/api matches itself", req{host: "a.test", path: "/api"}, 0},
		{"/api matches /api/", req{host: "a.test", path: "/api/"}, 0},
		{"/api matches below", req{host: "a.test", path: "/api/x/y"}, 0},
		{"/api not /apix", req{host: "a.test", path: "/apix"}, -1},
		{"/api not /ap", req{host: "a.test", path: "/ap"}, -1},
		{"/api/ not /api", req{host: "b.test", path: "/api"}, -1},
		{"/api/ matches /api/", req{host: "b.test", path: "/api/"}, 1},
		{"/api/ matches /api/x", req{host: "b.test", path: "/api/x"}, 1},
		{"/ matches root", req{host: "c.test", path: "/"}, 2},
		{"/ matches anything", req{host: "c.test", path: "/x/y/"}, 2},
		{"multi-segment prefix", req{host: "d.test", path: "/a/b/c"}, 3},
		{"multi-segment prefix not partial", req{host: "d.test", path: "/a/bc"}, -1},
		{"no path without slash", req{host: "c.test", path: "*"}, -1},
		{"no empty path", req{host: "c.test", path: ""}, -1},
	})
}

func TestPathPrecedence(t *testing.T) {
	routes := []Route{
		0:  {Path: "/", Kind: PathPrefix},
		1:  {Path: "/users", Kind: PathPrefix},
		2:  {Path: "/users/", Kind: PathPrefix},
		3:  {Path: "/users/{id}", Kind: PathTemplate},
		4:  {Path: "/users/me", Kind: PathExact},
		5:  {Path: "/users/{id}/posts/{post}", Kind: PathTemplate},
		6:  {Path: "/users/{id}/{rest...}", Kind: PathTemplate},
		7:  {Path: "/{any...}", Kind: PathTemplate},
		8:  {Path: "/users/me/{rest...}", Kind: PathTemplate},
		9:  {Path: "/{a}/me/x", Kind: PathTemplate},
		10: {Path: "/users/{id}/posts", Kind: PathTemplate},
		11: {Path: "/users/{id}/{tab}", Kind: PathTemplate},
	}
	check(t, routes, cases{
		{"exact beats template", req{path: "/users/me"}, 4},
		{"template beats prefix", req{path: "/users/42"}, 3},
		{"longer template by literal", req{path: "/users/42/posts/7"}, 5},
		{"literal beats catch-all at same position", req{path: "/users/42/posts"}, 10},
		{"param beats catch-all at same position", req{path: "/users/42/likes"}, 11},
		{"catch-all fallback", req{path: "/users/42/likes/1"}, 6},
		{"literal at segment 1 beats param at segment 1", req{path: "/users/me/x"}, 8},
		{"param beats catch-all at segment 0", req{path: "/orders/me/x"}, 9},
		{"root catch-all beats prefix", req{path: "/zzz"}, 7},
		{"template beats longer prefix", req{path: "/users/"}, 7},
		{"prefix /users when no template fits", req{path: "/users"}, 7},
		{"root prefix only for /", req{path: "/"}, 0},
	})
}

func TestPrefixLength(t *testing.T) {
	routes := []Route{
		0: {Path: "/", Kind: PathPrefix},
		1: {Path: "/a", Kind: PathPrefix},
		2: {Path: "/a/", Kind: PathPrefix},
		3: {Path: "/a/b", Kind: PathPrefix},
		4: {Path: "/a//", Kind: PathPrefix},
	}
	check(t, routes, cases{
		{"/a/b beats /a/", req{path: "/a/b/c"}, 3},
		{"/a/ beats /a", req{path: "/a/c"}, 2},
		{"/a for /a", req{path: "/a"}, 1},
		{"/a// is longest for /a//x", req{path: "/a//x"}, 4},
		{"/ for others", req{path: "/b"}, 0},
	})
}

func TestHostTiers(t *testing.T) {
	routes := []Route{
		0: {Path: "/", Kind: PathPrefix},
		1: {Path: "/", Kind: PathPrefix, Hosts: []string{"*.example.com"}},
		2: {Path: "/", Kind: PathPrefix, Hosts: []string{"*.b.example.com"}},
		3: {Path: "/", Kind: PathPrefix, Hosts: []string{"API.example.com."}},
		4: {Path: "/admin", Kind: PathExact, Hosts: []string{"*.b.example.com"}},
		5: {Path: "/only-exact", Kind: PathExact, Hosts: []string{"x.b.example.com"}},
		6: {Path: "/deep", Kind: PathExact},
		7: {Path: "/", Kind: PathPrefix, Hosts: []string{"[::1]"}},
	}
	check(t, routes, cases{
		{"exact host", req{host: "api.example.com", path: "/x"}, 3},
		{"exact host, upper case and port", req{host: "API.Example.COM:443", path: "/x"}, 3},
		{"exact host, trailing dot", req{host: "api.example.com.", path: "/x"}, 3},
		{"wildcard one label", req{host: "a.example.com", path: "/x"}, 1},
		{"wildcard several labels", req{host: "a.b.c.example.com", path: "/x"}, 1},
		{"wildcard does not match bare suffix", req{host: "example.com", path: "/x"}, 0},
		{"longest wildcard suffix first", req{host: "x.b.example.com", path: "/x"}, 2},
		{"longest wildcard, more specific path too", req{host: "y.b.example.com", path: "/admin"}, 4},
		{"exact host tier falls through to wildcard", req{host: "x.b.example.com", path: "/admin"}, 4},
		{"exact host tier wins when it matches", req{host: "x.b.example.com", path: "/only-exact"}, 5},
		{"host tier beats path specificity", req{host: "x.b.example.com", path: "/deep"}, 2},
		{"no-host tier last", req{host: "other.test", path: "/deep"}, 6},
		{"IPv6 literal with port", req{host: "[::1]:8080", path: "/"}, 7},
		{"empty host", req{host: "", path: "/z"}, 0},
	})
}

func TestConditions(t *testing.T) {
	routes := []Route{
		0: {Path: "/r", Kind: PathExact},
		1: {Path: "/r", Kind: PathExact, Methods: []string{"POST", "PUT"}},
		2: {Path: "/r", Kind: PathExact, Methods: []string{"POST"}, Headers: []HeaderMatch{{Name: "x-tenant", Exact: "acme"}}},
		3: {Path: "/r", Kind: PathExact, Query: []QueryMatch{{Name: "v", Exact: "2"}}, Headers: []HeaderMatch{{Name: "X-Debug", Present: true}}},
		4: {Path: "/r", Kind: PathExact, Query: []QueryMatch{{Name: "v", Prefix: "3"}}},
		5: {Path: "/r", Kind: PathExact, Headers: []HeaderMatch{{Name: "Accept", Regex: regexp.MustCompile(`^application/json`)}}},
		6: {Path: "/r", Kind: PathExact, Query: []QueryMatch{{Name: "v", Prefix: "3"}}}, // shadowed by 4
		7: {Path: "/only-post", Kind: PathExact, Methods: []string{"POST"}},
		8: {Path: "/q", Kind: PathExact, Query: []QueryMatch{{Name: "a b", Present: true}}},
		9: {Path: "/q", Kind: PathExact, Query: []QueryMatch{{Name: "x", Regex: regexp.MustCompile(`^[0-9]+$`)}}},
	}
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	check(t, routes, cases{
		{"no conditions", req{path: "/r"}, 0},
		{"method", req{method: "PUT", path: "/r"}, 1},
		{"method plus header beats method", req{method: "POST", path: "/r", header: hdr("X-Tenant", "acme")}, 2},
		{"header value mismatch", req{method: "POST", path: "/r", header: hdr("X-Tenant", "other")}, 1},
		{"any header value", req{method: "POST", path: "/r", header: hdr("X-Tenant", "other", "X-Tenant", "acme")}, 2},
		{"query plus header", req{path: "/r", query: "v=2", header: hdr("X-Debug", "")}, 3},
		{"query without header", req{path: "/r", query: "v=2"}, 0},
		{"declaration order on tie", req{path: "/r", query: "v=31"}, 4},
		{"query any value", req{path: "/r", query: "v=1&v=3"}, 4},
		{"query escaped", req{path: "/r", query: "%76=%33"}, 4},
		{"regex header", req{path: "/r", header: hdr("Accept", "application/json; q=1")}, 5},
		{"method mismatch", req{method: "GET", path: "/only-post"}, -1},
		{"query name with plus", req{path: "/q", query: "a+b"}, 8},
		{"query regex", req{path: "/q", query: "x=12"}, 9},
		{"query regex mismatch", req{path: "/q", query: "x=1a"}, -1},
		{"query semicolon ignored", req{path: "/q", query: "x=1;y=2"}, -1},
	})

	tbl, _ := New(routes)
	if res, ok := tbl.Match(nil, "h", "/r"); !ok || res.Index != 0 {
		t.Errorf("nil request: got %v %v; want route 0", res.Index, ok)
	}
	if _, ok := tbl.Match(&http.Request{}, "h", "/only-post"); ok {
		t.Errorf("empty method: got a match for a POST route; want none (empty means GET)")
	}
	many := "v=3" + strings.Repeat("&", maxQueryParams)
	if res, ok := tbl.Match(req{path: "/r", query: many}.build(), "h", "/r"); !ok || res.Index != 0 {
		t.Errorf("oversized query: got route %d; want 0 (query ignored like url.ParseQuery)", res.Index)
	}
}

func TestTemplateParams(t *testing.T) {
	routes := []Route{
		0: {Path: "/users/{id}", Kind: PathTemplate},
		1: {Path: "/files/{path...}", Kind: PathTemplate},
		2: {Path: "/{org}/repos/{repo}/tree/{ref...}", Kind: PathTemplate},
		3: {Path: "/users/{id}/", Kind: PathTemplate},
		4: {Path: "/static", Kind: PathTemplate},
	}
	tbl, err := New(routes)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		want int
		ps   Params
	}{
		{"/users/42", 0, Params{{"id", "42", 7}}},
		{"/users/a%2Fb", 0, Params{{"id", "a%2Fb", 7}}},
		{"/users/", -1, nil},
		{"/users/42/", 3, Params{{"id", "42", 7}}},
		{"/users//", -1, nil},
		{"/files/a", 1, Params{{"path", "a", 7}}},
		{"/files/a/b/c.txt", 1, Params{{"path", "a/b/c.txt", 7}}},
		{"/files/a/", 1, Params{{"path", "a/", 7}}},
		{"/files//x", 1, Params{{"path", "/x", 7}}},
		{"/files/", -1, nil},
		{"/files", -1, nil},
		{"/go/repos/net/tree/main/http", 2, Params{{"org", "go", 1}, {"repo", "net", 10}, {"ref", "main/http", 19}}},
		{"/static", 4, nil},
		{"/static/", -1, nil},
	}
	for _, tc := range tests {
		res, ok := tbl.Match(&http.Request{}, "", tc.path)
		got := -1
		if ok {
			got = res.Index
		}
		if got != tc.want {
			t.Errorf("%s: got route %d; want %d", tc.path, got, tc.want)
			continue
		}
		if len(res.Params) != len(tc.ps) {
			t.Errorf("%s: got params %v; want %v", tc.path, res.Params, tc.ps)
			continue
		}
		for i := range tc.ps {
			if res.Params[i] != tc.ps[i] {
				t.Errorf("%s: got params %v; want %v", tc.path, res.Params, tc.ps)
			}
		}
		for _, p := range tc.ps {
			if got := res.Params.Get(p.Name); got != p.Value {
				t.Errorf("%s: Params.Get(%q) = %q; want %q", tc.path, p.Name, got, p.Value)
			}
		}
	}
	if got := (Params{{Name: "a", Value: "1"}}).Get("b"); got != "" {
		t.Errorf("Get of missing param: got %q; want empty", got)
	}
}

func TestParseTemplate(t *testing.T) {
	tests := []struct {
		in      string
		vars    []string
		params  Params
		expand  string
		wantErr string
	}{
		{in: "/v1/users/{id}", vars: []string{"id"}, params: Params{{Name: "id", Value: "42"}}, expand: "/v1/users/42"},
		{in: "/", vars: nil, expand: "/"},
		{in: "/a//b/", vars: nil, expand: "/a//b/"},
		{in: "/{a}/{b_2}/x/{rest...}", vars: []string{"a", "b_2", "rest"},
			params: Params{{Name: "rest", Value: "r/s"}, {Name: "a", Value: "A"}, {Name: "b_2", Value: "B"}}, expand: "/A/B/x/r/s"},
		{in: "/u/{id}/{missing}", vars: []string{"id", "missing"}, params: Params{{Name: "id", Value: "1"}}, expand: "/u/1/"},
		{in: "/_/{_x9}", vars: []string{"_x9"}, params: Params{{Name: "_x9", Value: "ü"}}, expand: "/_/ü"},
		{in: "users", wantErr: "must start with '/'"},
		{in: "", wantErr: "must start with '/'"},
		{in: "/users/{id", wantErr: "whole segment"},
		{in: "/users/id}", wantErr: "whole segment"},
		{in: "/users/x{id}", wantErr: "whole segment"},
		{in: "/users/{id}x", wantErr: "whole segment"},
		{in: "/users/{}", wantErr: "invalid variable name"},
		{in: "/users/{...}", wantErr: "invalid variable name"},
		{in: "/users/{1id}", wantErr: "invalid variable name"},
		{in: "/users/{i-d}", wantErr: "invalid variable name"},
		{in: "/users/{id}/{id}", wantErr: `duplicate variable name "id"`},
		{in: "/users/{id}/{id...}", wantErr: `duplicate variable name "id"`},
		{in: "/files/{p...}/x", wantErr: "must be the last segment"},
		{in: "/files/{p...}/", wantErr: "must be the last segment"},
		{in: "/{a}{b}", wantErr: "whole segment"},
		{in: "/{{a}}", wantErr: "whole segment"},
	}
	for _, tc := range tests {
		tmpl, err := ParseTemplate(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.in) {
				t.Errorf("ParseTemplate(%q): got error %v; want one mentioning %q and the template", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTemplate(%q): got error %v; want nil", tc.in, err)
			continue
		}
		if got := tmpl.Vars(); strings.Join(got, ",") != strings.Join(tc.vars, ",") {
			t.Errorf("ParseTemplate(%q).Vars() = %q; want %q", tc.in, got, tc.vars)
		}
		if got := tmpl.Expand(tc.params); got != tc.expand {
			t.Errorf("ParseTemplate(%q).Expand(%v) = %q; want %q", tc.in, tc.params, got, tc.expand)
		}
		if got := tmpl.String(); got != tc.in {
			t.Errorf("String() = %q; want %q", got, tc.in)
		}
	}
}

func TestNewValidation(t *testing.T) {
	re := regexp.MustCompile("x")
	tests := []struct {
		route   Route
		wantErr string
	}{
		{Route{Path: "users"}, "must start with '/'"},
		{Route{Path: "", Kind: PathPrefix}, "must start with '/'"},
		{Route{Path: "/x", Kind: 7}, "unknown path kind PathKind(7)"},
		{Route{Path: "/u/{id", Kind: PathTemplate}, "whole segment"},
		{Route{Path: "/u/{a}/{a}", Kind: PathTemplate}, "duplicate variable"},
		{Route{Path: "/u/{a...}/b", Kind: PathTemplate}, "last segment"},
		{Route{Path: "/", Hosts: []string{"ex ample.com"}}, "invalid character"},
		{Route{Path: "/", Hosts: []string{"example.com:8080"}}, "port"},
		{Route{Path: "/", Hosts: []string{"*"}}, "leave Hosts empty"},
		{Route{Path: "/", Hosts: []string{"a.*.com"}}, `leading "*." label`},
		{Route{Path: "/", Hosts: []string{"*example.com"}}, `leading "*." label`},
		{Route{Path: "/", Hosts: []string{""}}, "empty host"},
		{Route{Path: "/", Hosts: []string{"a..com"}}, "1 to 63"},
		{Route{Path: "/", Hosts: []string{strings.Repeat("a", 64) + ".com"}}, "1 to 63"},
		{Route{Path: "/", Hosts: []string{strings.Repeat("a.", 127) + "com"}}, "longer than 253"},
		{Route{Path: "/", Hosts: []string{"[::1"}}, "IPv6"},
		{Route{Path: "/", Hosts: []string{"[1.2.3.4]"}}, "IPv6"},
		{Route{Path: "/", Hosts: []string{"*.[::1]"}}, "wildcard of an IP literal"},
		{Route{Path: "/", Methods: []string{"get"}}, "upper-case"},
		{Route{Path: "/", Methods: []string{""}}, "upper-case"},
		{Route{Path: "/", Methods: []string{"GE T"}}, "upper-case"},
		{Route{Path: "/", Headers: []HeaderMatch{{Name: "", Exact: "x"}}}, "invalid name"},
		{Route{Path: "/", Headers: []HeaderMatch{{Name: "X A", Exact: "x"}}}, "invalid name"},
		{Route{Path: "/", Headers: []HeaderMatch{{Name: "host", Exact: "x"}}}, "match on hosts instead"},
		{Route{Path: "/", Headers: []HeaderMatch{{Name: "X", Exact: "a", Prefix: "b"}}}, "only one"},
		{Route{Path: "/", Headers: []HeaderMatch{{Name: "X", Regex: re, Prefix: "b"}}}, "only one"},
		{Route{Path: "/", Headers: []HeaderMatch{{Name: "X"}}}, "no criterion"},
		{Route{Path: "/", Headers: []HeaderMatch{{Name: "X", Present: true, Exact: "a"}}}, "Present must be used alone"},
		{Route{Path: "/", Query: []QueryMatch{{Name: "", Exact: "x"}}}, "empty name"},
		{Route{Path: "/", Query: []QueryMatch{{Name: "q"}}}, "no criterion"},
		{Route{Path: "/", Query: []QueryMatch{{Name: "q", Present: true, Regex: re}}}, "Present must be used alone"},
	}
	for _, tc := range tests {
		// Put the bad route behind a good one so the index is checked too.
		tbl, err := New([]Route{{Path: "/ok"}, tc.route})
		var re *RouteError
		if tbl != nil || !errors.As(err, &re) || re.Index != 1 || !strings.Contains(err.Error(), tc.wantErr) ||
			!strings.Contains(err.Error(), "route 1:") {
			t.Errorf("New(%+v): got %v; want a route 1 error mentioning %q", tc.route, err, tc.wantErr)
		}
	}

	// Every invalid route is reported, not only the first.
	_, err := New([]Route{{Path: "a"}, {Path: "/"}, {Path: "/", Methods: []string{"get"}}})
	if err == nil || !strings.Contains(err.Error(), "route 0:") || !strings.Contains(err.Error(), "route 2:") ||
		strings.Contains(err.Error(), "route 1:") {
		t.Errorf("New with two bad routes: got %v; want errors for routes 0 and 2 only", err)
	}

	// Valid edge cases.
	valid := []Route{
		{Path: "/", Hosts: []string{"*.com", "EXAMPLE.com.", "example.com", "10.0.0.1", "[2001:DB8::1]", "svc_a.internal"}},
		{Path: "/x", Methods: []string{"GET", "GET", "M-SEARCH"}},
		{Path: "/{x}", Kind: PathTemplate, Headers: []HeaderMatch{{Name: "x-custom-id", Present: true}}},
	}
	tbl, err := New(valid)
	if err != nil {
		t.Fatalf("New(valid): %v", err)
	}
	if got := tbl.routes[0].Hosts; strings.Join(got, ",") != "*.com,example.com,10.0.0.1,[2001:db8::1],svc_a.internal" {
		t.Errorf("canonical hosts: got %q", got)
	}
	if got := tbl.routes[1].Methods; len(got) != 2 {
		t.Errorf("deduplicated methods: got %q; want [GET M-SEARCH]", got)
	}
	if got := tbl.routes[2].Headers[0].Name; got != "X-Custom-Id" {
		t.Errorf("canonical header name: got %q; want X-Custom-Id", got)
	}
	if valid[2].Headers[0].Name != "x-custom-id" {
		t.Errorf("New modified the caller's routes")
	}
}

func TestNormalizeHost(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com:8080", "example.com"},
		{"example.com.", "example.com"},
		{"Example.com.:80", "example.com"},
		{"[::1]:8080", "[::1]"},
		{"[::1]", "[::1]"},
		{"::1", "[::1]"},
		{"[0:0::1]:443", "[::1]"},
		{"[2001:DB8::A]", "[2001:db8::a]"},
		{"[::ffff:1.2.3.4]", "[::ffff:1.2.3.4]"},
		{"[not-an-ip]:80", "[not-an-ip]"},
		{"", ""},
	} {
		if got := normalizeHost(tc.in); got != tc.want {
			t.Errorf("normalizeHost(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestPathKindString(t *testing.T) {
	for k, want := range map[PathKind]string{PathExact: "PathExact", PathPrefix: "PathPrefix", PathTemplate: "PathTemplate", 9: "PathKind(9)"} {
		if got := k.String(); got != want {
			t.Errorf("PathKind(%d).String() = %q; want %q", uint8(k), got, want)
		}
	}
}

// TestMatchAllocations pins the zero-allocation promise for the common
// paths and the single allocation for captured parameters.
func TestMatchAllocations(t *testing.T) {
	routes := benchRoutes(1000)
	tbl, err := New(routes)
	if err != nil {
		t.Fatal(err)
	}
	r := &http.Request{Method: "GET", Header: http.Header{"X-Tenant": {"t1"}}, URL: &url.URL{RawQuery: "a=1&version=2"}}
	for _, tc := range []struct {
		host, path string
		want       float64
	}{
		{"svc3.example.com", "/svc3/health", 0},
		{"svc3.example.com", "/svc3/static/css/site.css", 0},
		{"edge7.example.com.:443", "/v2/anything", 0},
		// Lower-casing is the caller's job; the fallback has to copy.
		{"Edge7.Example.com:443", "/v2/anything", 1},
		{"svc3.example.com", "/svc3/users/42", 1},
		{"nowhere.test", "/nothing/here", 0},
	} {
		if _, ok := tbl.Match(r, tc.host, tc.path); !ok && tc.host != "nowhere.test" {
			t.Errorf("%s%s: no match", tc.host, tc.path)
		}
		got := testing.AllocsPerRun(100, func() { tbl.Match(r, tc.host, tc.path) })
		if got != tc.want {
			t.Errorf("%s%s: got %v allocs per Match; want %v", tc.host, tc.path, got, tc.want)
		}
	}
}

// TestConcurrentMatch gives the race detector something to look at: the
// table must be safe for concurrent readers.
func TestConcurrentMatch(t *testing.T) {
	routes := benchRoutes(300)
	tbl, err := New(routes)
	if err != nil {
		t.Fatal(err)
	}
	reqs := benchRequests(routes, 64)
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 500 {
				q := reqs[(i+g)%len(reqs)]
				got, ok := tbl.Match(q.r, q.host, q.path)
				want, wantOK := refMatch(routes, q.r, q.host, q.path)
				if !sameResult(got, ok, want, wantOK) {
					t.Errorf("%s%s: got %s; want %s", q.host, q.path, fmtResult(got, ok, routes), fmtResult(want, wantOK, routes))
					return
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

// HEAD is answered by GET routes (RFC 9110 9.3.2), never by other methods'.
func TestHeadMatchesGetRoutes(t *testing.T) {
	tbl, err := New([]Route{
		{Path: "/r", Kind: PathExact, Methods: []string{"GET"}, Value: "get"},
		{Path: "/w", Kind: PathExact, Methods: []string{"POST"}, Value: "post"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path string
		want         any
	}{
		{"HEAD", "/r", "get"},
		{"GET", "/r", "get"},
		{"HEAD", "/w", nil},
		{"POST", "/r", nil},
	} {
		r := httptest.NewRequest(tc.method, tc.path, nil)
		res, ok := tbl.Match(r, "example.com", tc.path)
		var got any
		if ok {
			got = res.Route.Value
		}
		if got != tc.want {
			t.Errorf("%s %s: got %v; want %v", tc.method, tc.path, got, tc.want)
		}
	}
}
