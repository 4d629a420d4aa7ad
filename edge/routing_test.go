package edge

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/edge/config"
)

func routingDoc(echoURL, adminURL string) string {
	return fmt.Sprintf(`
services:
  - name: echo
    targets: [{url: %s}]
  - name: based
    targets: [{url: %s/base/}]
  - name: based-escaped
    targets: [{url: %s/b%%2Fse/}]
  - name: admin
    targets: [{url: %s}]
routes:
  - name: users
    match: {path: "/api/users/{id}", methods: [GET]}
    service: echo
    rewrite: {path: "/users/{id}/profile"}
  - name: files
    match: {path: "/files/{rest...}"}
    service: echo
    rewrite: {path: "/blobs/{rest...}"}
  - name: root
    match: {path: "/root/{rest...}"}
    service: echo
    rewrite: {path: "/{rest...}"}
  - name: lit
    match: {path: "/lit/{rest...}"}
    service: echo
    rewrite: {path: "/a b/ü/{rest...}"}
  - name: dbl
    match: {path: "/dbl/{rest...}"}
    service: echo
    rewrite: {path: "//{rest...}"}
  - name: strip
    match: {path_prefix: /svc/}
    service: echo
    rewrite: {strip_prefix: true, host: internal.example:8443}
  - name: based
    match: {path_prefix: /based}
    service: based
  - name: based-escaped
    match: {path_prefix: /besc}
    service: based-escaped
  - name: headers
    match:
      path_prefix: /hdr
      headers: [{name: X-Tenant, exact: blue}]
      query: [{name: v, prefix: "2"}]
    service: echo
    request_headers:
      set: {X-Set: set-value, X-Replace: new}
      add: {X-Add: added}
      remove: [X-Remove]
    response_headers:
      set: {X-Resp-Set: rs}
      add: {X-Backend-Header: second}
      remove: [X-Drop-Me]
  - name: public
    match: {path_prefix: /public, hosts: [www.example.com, "*.cdn.example"]}
    service: echo
  - name: admin
    match: {path_prefix: /admin, hosts: [admin.internal]}
    service: admin
`, echoURL, echoURL, echoURL, adminURL)
}

func TestRoutingEndToEnd(t *testing.T) {
	var adminHits hitCounter
	admin := newBackend(t, func(w http.ResponseWriter, r *http.Request) { adminHits.inc(); io.WriteString(w, "ADMIN") })
	gw := startGateway(t, routingDoc(newEchoBackend(t), admin.URL))
	c := newClient(t)
	for _, tc := range []struct {
		name       string
		method     string
		host       string
		target     string
		wantPath   string
		wantURI    string
		wantHost   string
		wantStatus int
		raw        bool // target sent as it is (its '"', '|' and bytes above 127 unescaped)
	}{
		{name: "template rewrite", target: "/api/users/42?x=1", wantPath: "/users/42/profile", wantURI: "/users/42/profile?x=1"},
		{name: "template method mismatch", method: "POST", target: "/api/users/42", wantStatus: 404},
		{name: "template extra segment", target: "/api/users/42/more", wantStatus: 404},
		{name: "catch-all template", target: "/files/a/b/c.txt", wantPath: "/blobs/a/b/c.txt"},
		{name: "catch-all template keeps an encoded slash", target: "/files/group%2Fname/x%20y?q=1", wantPath: "/blobs/group/name/x y", wantURI: "/blobs/group%2Fname/x%20y?q=1"},
		{name: "template keeps the client's encoding", target: "/api/users/caf%c3%a9", wantPath: "/users/café/profile", wantURI: "/users/caf%c3%a9/profile"},
		{name: "template after dot segments forwards the decoded path", target: "/files/a/../b%2Fc", wantURI: "/blobs/b/c"},
		{name: "template leaves no leading //", target: "/root//evil.example/x", wantURI: "/evil.example/x"},
		{name: "template: an encoded leading // is collapsed, the rest kept", target: "/root/%2Fevil.example/x%2Fy", wantURI: "/evil.example/x%2Fy"},
		{name: "template: escaped literals keep the value's encoding", target: "/lit/q%2Fr", wantPath: "/a b/ü/q/r", wantURI: "/a%20b/%C3%BC/q%2Fr"},
		{name: "template: a leading empty literal is collapsed, the value's encoding kept", target: "/dbl/q%2Fr", wantURI: "/q%2Fr"},
		{name: "strip prefix", target: "/svc/x/y?q=1", wantPath: "/x/y", wantURI: "/x/y?q=1", wantHost: "internal.example:8443"},
		{name: "strip prefix to root", target: "/svc/", wantPath: "/", wantHost: "internal.example:8443"},
		{name: "strip prefix leaves no leading //", target: "/svc//evil.example/x", wantPath: "/evil.example/x", wantURI: "/evil.example/x", wantHost: "internal.example:8443"},
		{name: "strip prefix keeps an encoded slash", target: "/svc/projects/group%2Fname?x=1", wantPath: "/projects/group/name", wantURI: "/projects/group%2Fname?x=1", wantHost: "internal.example:8443"},
		{name: "strip prefix keeps the client's encoding", target: "/%73vc/a%20b/c%2fd", wantPath: "/a b/c/d", wantURI: "/a%20b/c%2fd", wantHost: "internal.example:8443"},
		{name: "strip prefix: an encoded leading // is collapsed and decoded", target: "/svc/%2Fevil.example/x", wantPath: "/evil.example/x", wantURI: "/evil.example/x", wantHost: "internal.example:8443"},
		{name: "encoded NUL refused", host: "www.example.com", target: "/public/a%00b", wantStatus: 400},
		{name: "target base path", target: "/based/thing", wantPath: "/base/based/thing"},
		{name: "target base path keeps its encoding", target: "/besc/plain", wantPath: "/b/se/besc/plain", wantURI: "/b%2Fse/besc/plain"},
		{name: "target base path and request path keep theirs", target: "/besc/a%2fb", wantURI: "/b%2Fse/besc/a%2fb"},
		{name: "strip prefix: leading // collapsed, the rest's encoding kept", target: "/svc//a%2Fb", wantPath: "/a/b", wantURI: "/a%2Fb", wantHost: "internal.example:8443"},
		{name: "strip prefix: encoded leading slashes collapsed, the rest's encoding kept", target: "/svc/%2F%2Fa%2Fb%22", wantPath: "/a/b\"", wantURI: "/a%2Fb%22", wantHost: "internal.example:8443"},
		{name: "host match exact", host: "www.example.com", target: "/public/a", wantPath: "/public/a", wantHost: "www.example.com"},
		{name: "host match case and port", host: "WWW.Example.COM:8080", target: "/public/a", wantPath: "/public/a"},
		{name: "host wildcard", host: "img.cdn.example", target: "/public/a", wantPath: "/public/a"},
		{name: "host mismatch", host: "evil.example", target: "/public/a", wantStatus: 404},
		{name: "dot segment stays inside prefix", host: "www.example.com", target: "/public/./a/../b", wantPath: "/public/b", wantURI: "/public/b"},
		{name: "percent-encoding kept", host: "www.example.com", target: "/public/a%2Fb", wantURI: "/public/a%2Fb"},
		{name: "raw bytes escaped, the client's escapes kept", host: "www.example.com", target: "/public/a%2Fb\"c|\xc3\xa9?q=\"", raw: true, wantPath: "/public/a/b\"c|\u00e9", wantURI: "/public/a%2Fb%22c%7C%C3%A9?q=\""},
		{name: "raw bytes after strip prefix", target: "/svc/g%2Fn/{x}", raw: true, wantPath: "/g/n/{x}", wantURI: "/g%2Fn/%7Bx%7D", wantHost: "internal.example:8443"},
		{name: "raw bytes in a template value", target: "/files/g%2Fn/a\"b", raw: true, wantPath: "/blobs/g/n/a\"b", wantURI: "/blobs/g%2Fn/a%22b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			req, _ := http.NewRequest(method, gw.url+"/", nil)
			if tc.raw {
				p, q, _ := strings.Cut(tc.target, "?")
				req.URL.Opaque, req.URL.RawQuery = p, q
			} else {
				req, _ = http.NewRequest(method, gw.url+tc.target, nil)
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			if tc.wantStatus != 0 {
				resp, body := do(t, c, req)
				checkProblem(t, resp, body, tc.wantStatus, "")
				return
			}
			_, e := echo(t, c, req)
			if tc.wantPath != "" && e.Path != tc.wantPath {
				t.Errorf("backend path = %q; want %q", e.Path, tc.wantPath)
			}
			if tc.wantURI != "" && e.RequestURI != tc.wantURI {
				t.Errorf("backend request URI = %q; want %q", e.RequestURI, tc.wantURI)
			}
			if tc.wantHost != "" && e.Host != tc.wantHost {
				t.Errorf("backend Host = %q; want %q", e.Host, tc.wantHost)
			}
			if tc.wantHost == "" && tc.host != "" && e.Host != tc.host {
				t.Errorf("backend Host = %q; want the client's %q", e.Host, tc.host)
			}
		})
	}
	if n := adminHits.get(); n != 0 {
		t.Errorf("admin backend hits = %d; want 0", n)
	}
}

func TestRouteHeaderOps(t *testing.T) {
	gw := startGateway(t, routingDoc(newEchoBackend(t), "http://127.0.0.1:1"))
	c := newClient(t)

	req, _ := http.NewRequest(http.MethodGet, gw.url+"/hdr?v=2.1", nil)
	req.Header.Set("X-Tenant", "blue")
	req.Header.Set("X-Remove", "gone")
	req.Header.Set("X-Replace", "old")
	req.Header.Set("X-Add", "client")
	resp, e := echo(t, c, req)
	for name, want := range map[string][]string{
		"X-Set":     {"set-value"},
		"X-Replace": {"new"},
		"X-Add":     {"client", "added"},
		"X-Remove":  nil,
	} {
		if got := e.Header.Values(name); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("request header %s = %q; want %q", name, got, want)
		}
	}
	for name, want := range map[string][]string{
		"X-Resp-Set":       {"rs"},
		"X-Backend-Header": {"kept", "second"},
		"X-Drop-Me":        nil,
	} {
		if got := resp.Header.Values(name); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("response header %s = %q; want %q", name, got, want)
		}
	}

	for _, tc := range []struct {
		name, tenant, query string
	}{
		{"header mismatch", "red", "v=2"},
		{"header missing", "", "v=2"},
		{"query mismatch", "blue", "v=1"},
		{"query missing", "blue", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, gw.url+"/hdr?"+tc.query, nil)
			if tc.tenant != "" {
				req.Header.Set("X-Tenant", tc.tenant)
			}
			resp, body := do(t, c, req)
			checkProblem(t, resp, body, 404, "")
		})
	}
}

// Dot segments are resolved before matching, so a request cannot climb
// out of the route it matched (/public/../admin must not reach admin
// through the public route, nor match it).
func TestDotSegmentsCannotEscapeRoute(t *testing.T) {
	var adminHits hitCounter
	admin := newBackend(t, func(w http.ResponseWriter, r *http.Request) { adminHits.inc(); io.WriteString(w, "ADMIN") })
	gw := startGateway(t, routingDoc(newEchoBackend(t), admin.URL))
	for _, target := range []string{
		"/public/../admin",
		"/public/../admin/",
		"/public/%2e%2e/admin",
		"/public/%2E%2E/admin/secret",
		"/public/./../admin",
		"/public/a/../../admin",
	} {
		t.Run(target, func(t *testing.T) {
			// A raw connection, so that no client library cleans the path.
			c := dialGateway(t, gw.addr)
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n", target)
			resp, body := readResponse(t, bufio.NewReader(c), http.MethodGet)
			checkProblem(t, resp, body, http.StatusNotFound, "")
		})
	}
	// With the admin host the cleaned path does reach admin: the route
	// matched is the one the upstream path belongs to.
	c := dialGateway(t, gw.addr)
	fmt.Fprintf(c, "GET /public/../admin HTTP/1.1\r\nHost: admin.internal\r\nConnection: close\r\n\r\n")
	resp, body := readResponse(t, bufio.NewReader(c), http.MethodGet)
	if resp.StatusCode != 200 || string(body) != "ADMIN" {
		t.Errorf("got %d %q; want 200 ADMIN", resp.StatusCode, body)
	}
	if n := adminHits.get(); n != 1 {
		t.Errorf("admin hits = %d; want 1", n)
	}
}

func TestRemoveDotSegments(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/", "/"},
		{"/a/b", "/a/b"},
		{"/a/./b", "/a/b"},
		{"/a/../b", "/b"},
		{"/../a", "/a"},
		{"/a/..", "/"},
		{"/a/b/..", "/a/"},
		{"/a/.", "/a/"},
		{"/a//b/../c", "/a//c"},
		{"/a/.b/..c", "/a/.b/..c"},
		{"/public/../admin", "/admin"},
		{"/./", "/"},
	} {
		if got := removeDotSegments(tc.in); got != tc.want {
			t.Errorf("removeDotSegments(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestNormalizeHost(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com:8080", "example.com"},
		{"example.com.", "example.com"},
		{"[::1]:80", "::1"},
		{"[::1]", "::1"},
		{"127.0.0.1:9", "127.0.0.1"},
		{"", ""},
	} {
		if got := normalizeHost(tc.in); got != tc.want {
			t.Errorf("normalizeHost(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestConsistentHashBalancer(t *testing.T) {
	hitsBy := map[string]*hitCounter{"a": {}, "b": {}, "c": {}}
	var urls []any
	for _, name := range []string{"a", "b", "c"} {
		hc := hitsBy[name]
		be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { hc.inc(); io.WriteString(w, name) })
		urls = append(urls, be.URL)
	}
	gw := startGateway(t, fmt.Sprintf(`
services:
  - name: svc
    balancer: {policy: consistent_hash, hash_on: "header:X-User"}
    targets: [{url: %s}, {url: %s}, {url: %s}]
routes:
  - name: r
    match: {}
    service: svc
`, urls...))
	c := newClient(t)
	seen := map[string]string{}
	for round := range 3 {
		for i := range 20 {
			user := fmt.Sprintf("user-%d", i)
			req, _ := http.NewRequest(http.MethodGet, gw.url+"/", nil)
			req.Header.Set("X-User", user)
			_, body := do(t, c, req)
			if round == 0 {
				seen[user] = string(body)
			} else if seen[user] != string(body) {
				t.Errorf("%s went to %s, earlier to %s; want the same target every time", user, body, seen[user])
			}
		}
	}
	used := map[string]bool{}
	for _, v := range seen {
		used[v] = true
	}
	if len(used) < 2 {
		t.Errorf("20 users hashed onto %d target(s); want them spread", len(used))
	}
}

func TestHeadAndExpectContinue(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Length", fmt.Sprint(len(b)+len("got ")))
		w.Header().Set("X-Method", r.Method)
		if r.Method != http.MethodHead {
			fmt.Fprintf(w, "got %s", b)
		}
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	c := newClient(t)

	req, _ := http.NewRequest(http.MethodHead, gw.url+"/", nil)
	resp, body := do(t, c, req)
	if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("X-Method") != "HEAD" || resp.ContentLength != 4 {
		t.Errorf("HEAD: %d, %d body bytes, X-Method %q, Content-Length %d; want 200, 0, HEAD, 4",
			resp.StatusCode, len(body), resp.Header.Get("X-Method"), resp.ContentLength)
	}
	// The keep-alive connection stays usable after a HEAD.
	resp, body = get(t, c, gw.url+"/")
	if resp.StatusCode != 200 || string(body) != "got " {
		t.Errorf("GET after HEAD: %d %q; want 200 \"got \"", resp.StatusCode, body)
	}

	// Expect: 100-continue on a raw connection: the gateway asks for the
	// body, forwards it, and answers.
	conn := dialGateway(t, gw.addr)
	io.WriteString(conn, "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("first line = %q, %v; want 100 Continue", line, err)
	}
	if l, _ := br.ReadString('\n'); l != "\r\n" {
		t.Fatalf("after 100 Continue: %q", l)
	}
	io.WriteString(conn, "hello")
	resp, body = readResponse(t, br, http.MethodPut)
	if resp.StatusCode != 200 || string(body) != "got hello" {
		t.Errorf("PUT with Expect: %d %q; want 200 \"got hello\"", resp.StatusCode, body)
	}
}

// Routes match IPv6 literals, written bare or bracketed, whatever form the
// request's Host gives the same address in.
func TestIPv6RouteHosts(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	gw := startGateway(t, `
services: [{name: s, targets: [{url: "`+be.URL+`"}]}]
routes:
  - {name: loop, match: {hosts: ["::1"], path_prefix: /}, service: s}
  - {name: doc, match: {hosts: ["[2001:db8::a]"], path_prefix: /}, service: s}
`)
	for host, want := range map[string]int{
		"[::1]": 200, "[::1]:8080": 200, "[0:0::1]": 200, "[2001:DB8:0::a]:1": 200,
		"[::2]": 404, "example.com": 404, "[::1.2.3.4]": 404,
	} {
		req, _ := http.NewRequest("GET", gw.url+"/", nil)
		req.Host = host
		resp, _ := do(t, http.DefaultClient, req)
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
}

// Compile reports every error it finds, not only the first: two services
// whose TLS files are missing and two routes whose hosts do not parse.
func TestCompileReportsEveryError(t *testing.T) {
	doc, err := config.Parse([]byte(`
services:
  - {name: a, protocol: h2, targets: [{url: "https://127.0.0.1:1"}], tls: {ca_file: /nonexistent/ca1.pem}}
  - {name: b, protocol: h2, targets: [{url: "https://127.0.0.1:2"}], tls: {ca_file: /nonexistent/ca2.pem}}
routes:
  - {name: r1, match: {hosts: ["[::1"], path_prefix: /x}, service: a}
  - {name: r2, match: {path_prefix: /ok}, service: b}
  - {name: r3, match: {hosts: ["[fe80::1"], path_prefix: /y}, service: b}
`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Options{}).Compile(doc, CompileInput{Version: 1})
	var es config.Errors
	if !errors.As(err, &es) {
		t.Fatalf("Compile: %v; want config.Errors", err)
	}
	var paths []string
	for _, e := range es {
		paths = append(paths, e.Path)
	}
	want := []string{"services[0].tls.ca_file", "services[1].tls.ca_file", "routes[0].match", "routes[2].match"}
	if !slices.Equal(paths, want) {
		t.Errorf("errors at %q; want %q", paths, want)
	}
}

// Header matches do not see what a client that is not a trusted proxy
// cannot set (forwarding fields the gateway replaces or drops), nor the
// fields a client names in Connection (dropped before the upstream): the
// route they would select is not met by a client's word.
func TestHeaderMatchesSeeTheRequestAsForwarded(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "upstream") })
	doc := fmt.Sprintf(`
services: [{name: be, targets: [{url: %q}]}]
routes:
  - {name: public, service: be, match: {path_prefix: /i}}
  - {name: internal, service: be, match: {path_prefix: /i, headers: [{name: X-Real-IP, exact: 10.0.0.1}]}}
  - {name: xff, service: be, match: {path_prefix: /i, headers: [{name: X-Forwarded-For, prefix: "10."}]}}
  - {name: hop, service: be, match: {path_prefix: /i, headers: [{name: X-Hop, exact: "1"}]}}
  - {name: ws, service: be, match: {path_prefix: /i, headers: [{name: Upgrade, exact: websocket}]}}
  - {name: h2c, service: be, match: {path_prefix: /i, headers: [{name: Upgrade, exact: h2c}]}}
`, be.URL)
	for _, trusted := range []bool{false, true} {
		var setup gatewaySetup
		if trusted {
			setup.opts.TrustedProxies = trustedProxies{netip.MustParsePrefix("127.0.0.0/8")}
		}
		logged := &syncBuffer{}
		setup.opts.AccessLog = slog.New(slog.NewJSONHandler(logged, nil))
		gw := startGatewayWith(t, setup, doc)
		for i, tc := range []struct {
			fields              [][2]string
			untrusted, viaProxy string // the route that answers
		}{
			{[][2]string{{"X-Real-IP", "10.0.0.1"}}, "public", "internal"},
			{[][2]string{{"X-Forwarded-For", "10.1.2.3"}}, "public", "xff"},
			{[][2]string{{"X-Hop", "1"}}, "hop", "hop"},
			{[][2]string{{"X-Hop", "1"}, {"Connection", "X-Hop"}}, "public", "public"},
			{[][2]string{{"X-Hop", "1"}, {"Connection", "keep-alive"}}, "hop", "hop"},
			// An Upgrade that is not relayed: to h2c (forwarded plain), or
			// one Connection does not name.
			{[][2]string{{"Upgrade", "h2c"}, {"Connection", "Upgrade, HTTP2-Settings"}, {"HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA"}}, "public", "public"},
			{[][2]string{{"Upgrade", "websocket"}}, "public", "public"},
			{[][2]string{{"Upgrade", "websocket"}, {"Connection", "Upgrade"}}, "ws", "ws"},
		} {
			for _, lane := range []bool{true, false} {
				req, _ := http.NewRequest(http.MethodGet, gw.url+"/i", nil)
				for _, f := range tc.fields {
					req.Header.Add(f[0], f[1])
				}
				if !lane {
					req.Header.Set("Te", "trailers") // the general path's
				}
				id := fmt.Sprintf("case-%v-%d-%v", trusted, i, lane)
				req.Header.Set("X-Request-Id", id)
				if resp, body := do(t, newClient(t), req); resp.StatusCode != 200 {
					t.Fatalf("%s: %d %s", id, resp.StatusCode, body)
				}
				want := tc.untrusted
				if trusted {
					want = tc.viaProxy
				}
				waitFor(t, 5*time.Second, "the log line", func() bool { return logged.records(t)[id] != nil })
				if got := logged.records(t)[id]["route"]; got != want {
					t.Errorf("%s (fields %v, trusted %v, lane %v): route %v; want %s", id, tc.fields, trusted, lane, got, want)
				}
			}
		}
	}
}
