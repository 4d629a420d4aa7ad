package edge

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/textproto"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoed is what an echo backend saw of a forwarded request.
type echoed struct {
	Method     string      `json:"method"`
	Host       string      `json:"host"`
	Path       string      `json:"path"`
	RawPath    string      `json:"raw_path"`
	RequestURI string      `json:"request_uri"`
	Query      string      `json:"query"`
	Header     http.Header `json:"header"`
}

// newEchoBackend answers every request with a JSON description of it.
// The response carries hop-by-hop headers the gateway must drop.
func newEchoBackend(t *testing.T) string {
	t.Helper()
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Connection", "X-Resp-Hop")
		h.Set("X-Resp-Hop", "secret")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("X-Backend-Header", "kept")
		h.Set("X-Drop-Me", "x")
		json.NewEncoder(w).Encode(echoed{
			Method: r.Method, Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath,
			RequestURI: r.RequestURI, Query: r.URL.RawQuery, Header: r.Header,
		})
	})
	return be.URL
}

// echo sends req through the gateway and decodes what the backend saw.
func echo(t *testing.T, c *http.Client, req *http.Request) (*http.Response, echoed) {
	t.Helper()
	resp, body := do(t, c, req)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: status %d; want 200 (%s)", req.Method, req.URL, resp.StatusCode, body)
	}
	var e echoed
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("echo body %q: %v", body, err)
	}
	return resp, e
}

func TestHopByHopHeadersRemoved(t *testing.T) {
	gw := startGateway(t, oneRoute(newEchoBackend(t), ""))
	req, _ := http.NewRequest(http.MethodGet, gw.url+"/h", nil)
	req.Header.Set("Connection", "keep-alive, X-Hop-Listed")
	req.Header.Set("X-Hop-Listed", "must not pass")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Authorization", "Basic c2VjcmV0")
	req.Header.Set("Proxy-Connection", "keep-alive")
	req.Header.Set("Te", "gzip")
	req.Header.Set("Upgrade", "something")                       // without Connection: upgrade
	req.Header.Set("Http2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA") // unlisted in Connection: dropped all the same
	req.Header.Set("X-End-To-End", "kept")
	resp, e := echo(t, newClient(t), req)
	for _, name := range []string{"X-Hop-Listed", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te", "Upgrade", "Trailer", "Http2-Settings"} {
		if v, ok := e.Header[name]; ok {
			t.Errorf("backend saw %s: %q; want it removed", name, v)
		}
	}
	if c := e.Header.Get("Connection"); c != "" {
		t.Errorf("backend saw Connection %q; want none", c)
	}
	if got := e.Header.Get("X-End-To-End"); got != "kept" {
		t.Errorf("backend saw X-End-To-End %q; want kept", got)
	}
	for _, name := range []string{"X-Resp-Hop", "Keep-Alive"} {
		if v := resp.Header.Get(name); v != "" {
			t.Errorf("client saw response header %s: %q; want it removed", name, v)
		}
	}
	if got := resp.Header.Get("X-Backend-Header"); got != "kept" {
		t.Errorf("client saw X-Backend-Header %q; want kept", got)
	}
	// Alone (a request the lean path would take), too.
	req, _ = http.NewRequest(http.MethodGet, gw.url+"/h", nil)
	req.Header.Set("Http2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA")
	if _, e = echo(t, newClient(t), req); e.Header.Get("Http2-Settings") != "" {
		t.Errorf("backend saw Http2-Settings %q; want it removed", e.Header.Get("Http2-Settings"))
	}
}

func TestForwardedHeaders(t *testing.T) {
	url := newEchoBackend(t)
	for _, tc := range []struct {
		name      string
		trusted   bool
		wantXFF   string
		wantFwd   []string
		wantProto string
		wantXFH   string
		fwdIn     string // the client's Forwarded; for=203.0.113.7 if ""
	}{
		{"untrusted client replaces", false, "127.0.0.1", []string{`for=127.0.0.1;proto=http;host="HOST"`}, "http", "HOST", ""},
		{"trusted proxy extends", true, "203.0.113.7, 127.0.0.1", []string{"for=203.0.113.7", `for=127.0.0.1;proto=http;host="HOST"`}, "https", "public.example", ""},
		{"trusted proxy's quoted and listed kept", true, "203.0.113.7, 127.0.0.1", []string{`for="[2001:db8::1]:80";proto=https, for=_hidden;by=x`, `for=127.0.0.1;proto=http;host="HOST"`}, "https", "public.example", `for="[2001:db8::1]:80";proto=https, for=_hidden;by=x`},
		// An open quote would swallow the element the gateway appends
		// once the lines are joined.
		{"trusted proxy's malformed dropped", true, "203.0.113.7, 127.0.0.1", []string{`for=127.0.0.1;proto=http;host="HOST"`}, "https", "public.example", `for=1.2.3.4;;;garbage"unterminated`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var setup gatewaySetup
			if tc.trusted {
				setup.opts.TrustedProxies = trustedProxies{netip.MustParsePrefix("127.0.0.0/8")}
			}
			gw := startGatewayWith(t, setup, oneRoute(url, ""))
			req, _ := http.NewRequest(http.MethodGet, gw.url+"/f", nil)
			req.Header.Set("X-Forwarded-For", "203.0.113.7")
			req.Header.Set("X-Forwarded-Proto", "https")
			req.Header.Set("X-Forwarded-Host", "public.example")
			if tc.fwdIn == "" {
				tc.fwdIn = "for=203.0.113.7"
			}
			req.Header.Set("Forwarded", tc.fwdIn)
			req.Header.Set("X-Forwarded-Port", "8443")
			req.Header.Set("X-Forwarded-Prefix", "/admin")
			req.Header.Set("X-Real-Ip", "203.0.113.7")
			spoofable := []string{"X-Client-Ip", "True-Client-Ip", "X-Cluster-Client-Ip", "Cf-Connecting-Ip", "Fastly-Client-Ip", "X-Rewrite-Url",
				"X-Forwarded-Scheme", "X-Url-Scheme", "Front-End-Https", "X-Host", "Client-Ip", "X-Envoy-External-Address", "Ssl-Client-Cert", "X-Forwarded-Tls-Client-Cert",
				"X-Ssl-Client-Verify", "Wl-Proxy-Client-Ip", "X-Envoy-Internal", "X-Forwarded-Uri"}
			for _, k := range spoofable {
				req.Header.Set(k, "203.0.113.7")
			}
			_, e := echo(t, newClient(t), req)
			// Fields the gateway does not write but frameworks read pass
			// only from a trusted proxy.
			for _, k := range append([]string{"X-Forwarded-Port", "X-Forwarded-Prefix", "X-Real-Ip"}, spoofable...) {
				if got := e.Header.Get(k); (got != "") != tc.trusted {
					t.Errorf("%s = %q; want it only from a trusted proxy", k, got)
				}
			}
			if got := e.Header.Get("X-Forwarded-For"); got != tc.wantXFF {
				t.Errorf("X-Forwarded-For = %q; want %q", got, tc.wantXFF)
			}
			if got := e.Header.Get("X-Forwarded-Proto"); got != tc.wantProto {
				t.Errorf("X-Forwarded-Proto = %q; want %q", got, tc.wantProto)
			}
			if got, want := e.Header.Get("X-Forwarded-Host"), strings.ReplaceAll(tc.wantXFH, "HOST", gw.addr); got != want {
				t.Errorf("X-Forwarded-Host = %q; want %q", got, want)
			}
			var want []string
			for _, f := range tc.wantFwd {
				want = append(want, strings.ReplaceAll(f, "HOST", gw.addr))
			}
			if got := e.Header["Forwarded"]; strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("Forwarded = %q; want %q", got, want)
			}
		})
	}
}

// Behind trusted proxies the client is the rightmost X-Forwarded-For
// entry that is not one of them (nginx's real_ip_recursive).
func TestForwardedClient(t *testing.T) {
	g := New(Options{TrustedProxies: trustedProxies{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}})
	for _, tc := range []struct {
		xff  []string
		want string
	}{
		{[]string{"203.0.113.7"}, "203.0.113.7"},
		{[]string{"198.51.100.1, 203.0.113.7, 10.0.0.2"}, "203.0.113.7"},  // the client can prepend anything
		{[]string{"198.51.100.1", "203.0.113.7,10.1.1.1"}, "203.0.113.7"}, // several lines are one list
		{[]string{"10.0.0.3, 10.0.0.2"}, "10.0.0.3"},                      // all trusted: the leftmost
		{[]string{"2001:db8::1, ::1"}, "2001:db8::1"},
		{[]string{"[2001:db8::2]"}, "2001:db8::2"},
		{[]string{"::ffff:203.0.113.9"}, "203.0.113.9"},
		{[]string{"203.0.113.7, garbage, 10.0.0.2"}, "10.0.0.2"}, // stops at what is not an address
		{[]string{"203.0.113.7:41234, [2001:db8::3]:80"}, "2001:db8::3"},
		{[]string{"unknown"}, ""},
		{[]string{" , "}, ""},
	} {
		if got := g.forwardedClient(tc.xff); got != tc.want {
			t.Errorf("forwardedClient(%q) = %q; want %q", tc.xff, got, tc.want)
		}
	}
}

// Hashing on client_ip behind a trusted load balancer spreads the clients
// it forwards, and the access log names them (with the balancer as peer);
// from an untrusted peer the forwarded address is ignored.
func TestClientIPThroughTrustedProxy(t *testing.T) {
	var backends []string
	hitsBy := map[string]*hitCounter{}
	for range 4 {
		h := &hitCounter{}
		be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { h.inc() })
		backends = append(backends, be.URL)
		hitsBy[be.URL] = h
	}
	doc := fmt.Sprintf(`
services:
  - name: svc
    balancer: {policy: consistent_hash, hash_on: client_ip}
    targets: [{url: %s}, {url: %s}, {url: %s}, {url: %s}]
routes: [{name: r, match: {path_prefix: /}, service: svc}]
`, backends[0], backends[1], backends[2], backends[3])
	for _, trusted := range []bool{true, false} {
		t.Run(fmt.Sprint("trusted=", trusted), func(t *testing.T) {
			for _, h := range hitsBy {
				h.mu.Lock()
				h.n = 0
				h.mu.Unlock()
			}
			var logBuf syncBuffer
			setup := gatewaySetup{opts: Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))}}
			if trusted {
				setup.opts.TrustedProxies = trustedProxies{netip.MustParsePrefix("127.0.0.0/8")}
			}
			gw := startGatewayWith(t, setup, doc)
			c := newClient(t)
			for i := range 40 {
				req, _ := http.NewRequest(http.MethodGet, gw.url+"/", nil)
				req.Header.Set("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i))
				req.Header.Set("X-Request-Id", fmt.Sprintf("c-%d", i))
				if resp, _ := do(t, c, req); resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
			}
			used := 0
			for _, h := range hitsBy {
				if h.get() > 0 {
					used++
				}
			}
			if trusted && used < 3 {
				t.Errorf("40 forwarded clients hashed onto %d of 4 targets; want them spread", used)
			}
			if !trusted && used != 1 {
				t.Errorf("one untrusted peer hashed onto %d targets; want 1 (forwarded addresses ignored)", used)
			}
			// An answer the gateway makes itself (TRACE's 405 here)
			// names the same client.
			req, _ := http.NewRequest(http.MethodTrace, gw.url+"/", nil)
			req.Header.Set("X-Forwarded-For", "203.0.113.99")
			req.Header.Set("X-Request-Id", "early")
			if resp, _ := do(t, c, req); resp.StatusCode != http.StatusMethodNotAllowed {
				t.Fatalf("TRACE: status %d; want 405", resp.StatusCode)
			}
			waitFor(t, 5*time.Second, "the access log record", func() bool { return logBuf.records(t)["early"] != nil })
			if early := logBuf.records(t)["early"]; trusted && early["client"] != "203.0.113.99" {
				t.Errorf("the gateway's own 400 logged client %v; want the forwarded 203.0.113.99", early["client"])
			}
			waitFor(t, 5*time.Second, "the access log record", func() bool { return logBuf.records(t)["c-7"] != nil })
			rec := logBuf.records(t)["c-7"]
			if trusted && (rec["client"] != "203.0.113.7" || !strings.HasPrefix(fmt.Sprint(rec["peer"]), "127.0.0.1:")) {
				t.Errorf("logged client %v, peer %v; want 203.0.113.7 through 127.0.0.1", rec["client"], rec["peer"])
			}
			if !trusted && (!strings.HasPrefix(fmt.Sprint(rec["client"]), "127.0.0.1:") || rec["peer"] != nil) {
				t.Errorf("logged client %v, peer %v; want the untrusted peer alone", rec["client"], rec["peer"])
			}
		})
	}
}

func TestViaHeaders(t *testing.T) {
	gw := startGatewayWith(t, gatewaySetup{opts: Options{ProxyName: "edge-1"}}, oneRoute(newEchoBackend(t), ""))
	for _, tc := range []struct {
		name    string
		client  *http.Client
		wantReq string
	}{
		{"http1", newClient(t), "1.1 edge-1"},
		{"h2c", newH2CClient(t), "2 edge-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, gw.url+"/v", nil)
			req.Header.Set("Via", "1.0 upstream-proxy")
			resp, e := echo(t, tc.client, req)
			if got := strings.Join(e.Header.Values("Via"), ", "); got != "1.0 upstream-proxy, "+tc.wantReq {
				t.Errorf("request Via = %q; want %q", got, "1.0 upstream-proxy, "+tc.wantReq)
			}
			if got := resp.Header.Get("Via"); got != "1.1 edge-1" {
				t.Errorf("response Via = %q; want \"1.1 edge-1\" (the backend spoke HTTP/1.1)", got)
			}
		})
	}
}

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestRequestID(t *testing.T) {
	gw := startGateway(t, oneRoute(newEchoBackend(t), ""))
	c := newClient(t)
	for _, tc := range []struct {
		name string
		in   string
		keep bool
	}{
		{"valid is kept", "abc-123_XYZ:/.", true},
		{"128 chars is kept", strings.Repeat("a", 128), true},
		{"absent is generated", "", false},
		{"too long is replaced", strings.Repeat("a", 129), false},
		{"quote is replaced", `a"b`, false},
		{"space is replaced", "a b", false},
		{"non-ASCII is replaced", "ä", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, gw.url+"/id", nil)
			if tc.in != "" {
				req.Header.Set("X-Request-Id", tc.in)
			}
			_, e := echo(t, c, req)
			got := e.Header.Values("X-Request-Id")
			if len(got) != 1 {
				t.Fatalf("backend saw X-Request-Id %q; want exactly one", got)
			}
			if tc.keep {
				if got[0] != tc.in {
					t.Errorf("X-Request-Id = %q; want %q kept", got[0], tc.in)
				}
			} else if !hex32.MatchString(got[0]) {
				t.Errorf("X-Request-Id = %q; want a generated 32-hex-digit id", got[0])
			}
		})
	}
}

var traceparentRE = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$`)

func TestTraceparent(t *testing.T) {
	gw := startGateway(t, oneRoute(newEchoBackend(t), ""))
	c := newClient(t)
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	for _, tc := range []struct {
		name      string
		in        string
		keepTrace bool
		wantFlags string
	}{
		{"valid keeps trace and flags", "00-" + traceID + "-" + parentID + "-00", true, "00"},
		{"sampled", "00-" + traceID + "-" + parentID + "-01", true, "01"},
		{"absent", "", false, "01"},
		{"upper case is invalid", "00-" + strings.ToUpper(traceID) + "-" + parentID + "-01", false, "01"},
		{"zero trace id", "00-00000000000000000000000000000000-" + parentID + "-01", false, "01"},
		{"zero parent id", "00-" + traceID + "-0000000000000000-01", false, "01"},
		{"version ff", "ff-" + traceID + "-" + parentID + "-01", false, "01"},
		{"version 00 with extra field", "00-" + traceID + "-" + parentID + "-01-xyz", false, "01"},
		{"future version with extra field", "01-" + traceID + "-" + parentID + "-01-xyz", true, "01"},
		{"garbage", "hello", false, "01"},
		{"reserved flags are zeroed", "00-" + traceID + "-" + parentID + "-03", true, "01"},
		{"reserved flags, not sampled", "00-" + traceID + "-" + parentID + "-fe", true, "00"},
		{"two are invalid", "00-" + traceID + "-" + parentID + "-01|00-" + traceID + "-" + parentID + "-01", false, "01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, gw.url+"/t", nil)
			if tc.in != "" {
				req.Header["Traceparent"] = strings.Split(tc.in, "|")
			}
			req.Header.Set("Tracestate", "vendor=abc")
			_, e := echo(t, c, req)
			// tracestate goes with the trace it belongs to (W3C 3.3).
			if got := e.Header.Get("Tracestate"); (got == "vendor=abc") != tc.keepTrace {
				t.Errorf("tracestate = %q; want it kept only with the incoming trace", got)
			}
			got := e.Header.Get("Traceparent")
			m := traceparentRE.FindStringSubmatch(got)
			if m == nil {
				t.Fatalf("traceparent = %q; want a valid version 00 value", got)
			}
			if m[2] == parentID || m[2] == "0000000000000000" {
				t.Errorf("parent id = %s; want a new non-zero span id", m[2])
			}
			if tc.keepTrace && m[1] != traceID {
				t.Errorf("trace id = %s; want %s kept", m[1], traceID)
			}
			if !tc.keepTrace && (m[1] == traceID || m[1] == strings.Repeat("0", 32)) {
				t.Errorf("trace id = %s; want a new one", m[1])
			}
			if m[3] != tc.wantFlags {
				t.Errorf("flags = %s; want %s", m[3], tc.wantFlags)
			}
		})
	}
}

// A header carried more than once must be counted field by field.
func TestTooManyHeaderFields(t *testing.T) {
	var hits hitCounter
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { hits.inc() })
	gw := startGatewayWith(t, gatewaySetup{opts: Options{MaxHeaderCount: 20}}, oneRoute(be.URL, ""))
	c := newClient(t)
	req, _ := http.NewRequest(http.MethodGet, gw.url+"/", nil)
	for range 25 {
		req.Header.Add("X-Repeated", "v")
	}
	resp, body := do(t, c, req)
	checkProblem(t, resp, body, http.StatusRequestHeaderFieldsTooLarge, "")
	if hits.get() != 0 {
		t.Errorf("backend hits = %d; want 0", hits.get())
	}
	req, _ = http.NewRequest(http.MethodGet, gw.url+"/", nil)
	for range 15 {
		req.Header.Add("X-Repeated", "v")
	}
	if resp, _ := do(t, c, req); resp.StatusCode != 200 {
		t.Errorf("status with 15+ fields = %d; want 200", resp.StatusCode)
	}
}

// Forwarded and X-Forwarded-For name the client the same way whatever its
// address family: IPv6 quoted in brackets (RFC 7239 section 6),
// IPv4-mapped IPv6 as plain IPv4.
func TestForwardedClientAddressForms(t *testing.T) {
	g := New(Options{})
	for _, tc := range []struct {
		remote, xff, fwd string
	}{
		{"192.0.2.7:5555", "192.0.2.7", `for=192.0.2.7;proto=http;host=example.com`},
		{"[2001:db8::7]:5555", "2001:db8::7", `for="[2001:db8::7]";proto=http;host=example.com`},
		{"[::ffff:192.0.2.9]:5555", "192.0.2.9", `for=192.0.2.9;proto=http;host=example.com`},
		{"[fe80::1%eth0]:5555", "fe80::1%eth0", `for="[fe80::1%eth0]";proto=http;host=example.com`},
		{"not an address", "unknown", `for=unknown;proto=http;host=example.com`},
	} {
		r, _ := http.NewRequest(http.MethodGet, "http://example.com/", nil)
		r.RemoteAddr = tc.remote
		x := &exchange{}
		g.identifyClient(x, r)
		h := http.Header{"Forwarded": {"for=spoofed"}, "X-Forwarded-For": {"6.6.6.6"}}
		var o outHeader
		o.reset(h)
		g.setForwarded(&o, r, x, &service{})
		h = o.header(http.Header{})
		if got := h.Get("X-Forwarded-For"); got != tc.xff {
			t.Errorf("%s: X-Forwarded-For = %q; want %q", tc.remote, got, tc.xff)
		}
		if got := h["Forwarded"]; len(got) != 1 || got[0] != tc.fwd {
			t.Errorf("%s: Forwarded = %q; want [%q] (the client's own replaced)", tc.remote, got, tc.fwd)
		}
		if got := h.Get("X-Forwarded-Proto"); got != "http" {
			t.Errorf("%s: X-Forwarded-Proto = %q", tc.remote, got)
		}
	}
}

// Header fields with "_" in their names pass, are dropped, or refuse the
// request, as the node says; the gateway's own X-Forwarded-For is never
// shadowed by a client's X_Forwarded_For, under any policy.
func TestHeadersWithUnderscores(t *testing.T) {
	seen := make(chan http.Header, 1)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
	})
	for _, tc := range []struct {
		policy UnderscorePolicy
		status int
		passed bool
	}{
		{"", 200, true},
		{UnderscoresAllow, 200, true},
		{UnderscoresDrop, 200, false},
		{UnderscoresReject, 400, false},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			gw := startGatewayWith(t, gatewaySetup{opts: Options{Underscores: tc.policy}}, oneRoute(be.URL, ""))
			req, _ := http.NewRequest(http.MethodGet, gw.url+"/x", nil)
			req.Header["X_Forwarded_For"] = []string{"6.6.6.6"}
			req.Header["X_Custom"] = []string{"kept"}
			req.Header["Content_length"] = []string{"9"}
			req.Header["X-Ok"] = []string{"yes"}
			resp, body := do(t, newClient(t), req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%s); want %d", resp.StatusCode, body, tc.status)
			}
			if tc.status != 200 {
				checkProblem(t, resp, body, tc.status, "")
				if !strings.Contains(strings.ToLower(string(body)), "content_length") { // the first by name
					t.Errorf("the problem does not name the field: %s", body)
				}
				// With two, the answer names the first by name, every time.
				req.Header["A_first"] = []string{"1"}
				for range 8 {
					if _, body := do(t, newClient(t), req); !strings.Contains(string(body), `\"A_first\"`) {
						t.Fatalf("the problem does not name A_first: %s", body)
					}
				}
				return
			}
			h := recv(t, seen, "the upstream request")
			if got := h.Get("X_Custom") == "kept"; got != tc.passed {
				t.Errorf("upstream got X_Custom: %v; want %v", got, tc.passed)
			}
			// Another spelling of a field the gateway writes or frames
			// is dropped whatever the policy.
			if v, w := h.Get("X_Forwarded_For"), h.Get("Content_length"); v != "" || w != "" {
				t.Errorf("upstream got X_Forwarded_For %q, Content_length %q; want neither", v, w)
			}
			if h.Get("X-Ok") != "yes" || h.Get("X-Forwarded-For") != "127.0.0.1" {
				t.Errorf("upstream headers %v; want X-Ok and the gateway's X-Forwarded-For", h)
			}
		})
	}
}

// copyEndToEnd leaves exactly what removeHopHeaders leaves of a copy.
// copyEndToEnd and dropHopFields are one-pass forms of removeHopHeaders.
func TestCopyEndToEndMatchesRemoveHopHeaders(t *testing.T) {
	names := append([]string{"X-A", "X-B", "Content-Type", "Keep-Alive-Ish", "Tee", "Upgrades"}, hopHeaders...)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		src := http.Header{}
		for range rng.IntN(8) {
			src[names[rng.IntN(len(names))]] = []string{"v"}
		}
		if rng.IntN(2) == 0 {
			src["Connection"] = []string{" x-a , " + strings.ToLower(names[rng.IntN(len(names))]), "close"}
		}
		want := src.Clone()
		removeHopHeaders(want)
		got := http.Header{}
		copyEndToEnd(got, src)
		if len(got) != len(want) {
			t.Fatalf("case %d: %v from %v; want %v", i, got, src, want)
		}
		for k := range want {
			if _, ok := got[k]; !ok {
				t.Fatalf("case %d: %v from %v; want %v", i, got, src, want)
			}
		}
		inPlace := src.Clone()
		dropHopFields(inPlace)
		if len(inPlace) != len(want) {
			t.Fatalf("case %d: dropHopFields left %v from %v; want %v", i, inPlace, src, want)
		}
		for k := range want {
			if _, ok := inPlace[k]; !ok {
				t.Fatalf("case %d: dropHopFields left %v from %v; want %v", i, inPlace, src, want)
			}
		}
	}
}

// outHeader's edits must give what the same operations give on a map
// copy of the inbound header, both as a map (other transports) and as the
// field lines the HTTP/1 transport writes.
func TestOutHeaderMatchesMapEdits(t *testing.T) {
	names := []string{"X-A", "X-B", "Via", "Forwarded", "X-Forwarded-For", "Te", "Keep-Alive", "Upgrade", "Accept"}
	rng := rand.New(rand.NewPCG(5, 6))
	var o outHeader // reused, as the proxy's pool does
	for i := range 3000 {
		in := http.Header{}
		for range rng.IntN(6) {
			k := names[rng.IntN(len(names))]
			in[k] = append(in[k], "in"+strconv.Itoa(rng.IntN(9)))
		}
		if rng.IntN(3) == 0 {
			in["Connection"] = []string{"x-b, close"}
		}
		if rng.IntN(4) == 0 { // past the count outHeader scans rather than looks up
			for j := range 17 {
				in["X-Fill-"+strconv.Itoa(j)] = []string{"in" + strconv.Itoa(j)}
			}
		}
		want := http.Header{}
		copyEndToEnd(want, in)
		o.reset(in)
		for range rng.IntN(8) {
			k, v := names[rng.IntN(len(names))], "v"+strconv.Itoa(rng.IntN(9))
			switch rng.IntN(3) {
			case 0:
				o.set(k, v)
				want[k] = []string{v}
			case 1:
				o.add(k, v)
				want[k] = append(want[k][:len(want[k]):len(want[k])], v)
			case 2:
				o.del(k)
				delete(want, k)
			}
			if got, w := o.get(k), want[k]; !slices.Equal(got, w) {
				t.Fatalf("case %d: get(%s) = %q; want %q", i, k, got, w)
			}
		}
		if got := o.header(http.Header{}); !reflect.DeepEqual(got, want) {
			t.Fatalf("case %d: header() = %v; want %v (from %v)", i, got, want, in)
		}
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		req := &http.Request{Method: "GET", URL: &url.URL{Path: "/"}, Host: "h"}
		if _, err := writeRequestHead(bw, req, &o); err != nil {
			t.Fatal(err)
		}
		bw.Flush()
		written, err := http.ReadRequest(bufio.NewReader(&buf))
		if err != nil {
			t.Fatalf("case %d: the written head does not parse: %v\n%s", i, err, buf.String())
		}
		if len(want) == 0 {
			want = http.Header{}
		}
		if !reflect.DeepEqual(written.Header, want) {
			t.Fatalf("case %d: wrote %v; want %v (from %v)", i, written.Header, want, in)
		}
		for k, vs := range in { // the inbound header is only read
			for _, v := range vs {
				if !strings.HasPrefix(v, "in") && k != "Connection" {
					t.Fatalf("case %d: inbound %s changed to %q", i, k, vs)
				}
			}
		}
	}
}

// Each hop-by-hop field an HTTP/1.1 upstream sends is dropped on its own,
// with no Connection field to point at it, on a keep-alive connection
// whose earlier and later responses have none (the parser's note that a
// head had no hop-by-hop field must be about that head alone).
func TestResponseHopFieldsDroppedOneByOne(t *testing.T) {
	hop := []string{"Keep-Alive: timeout=5", "Proxy-Connection: keep-alive", "Te: trailers",
		"Trailer: X-T", "Upgrade: websocket", "Proxy-Authenticate: Basic", "Proxy-Authorization: Basic eA==",
		"Connection: X-Listed\r\nX-Listed: secret"}
	addr := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		extra := ""
		if i, err := strconv.Atoi(strings.TrimPrefix(req.URL.Path, "/hop/")); err == nil && i < len(hop) {
			extra = hop[i] + "\r\n"
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: yes\r\n%s\r\nok", extra)
		return true
	})
	gw := startGateway(t, oneRoute("http://"+addr, ""))
	c := newClient(t)
	get := func(path string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, gw.url+path, nil)
		resp, body := do(t, c, req)
		if resp.StatusCode != 200 || string(body) != "ok" || resp.Header.Get("X-Kept") != "yes" {
			t.Fatalf("%s: %d %q, X-Kept %q", path, resp.StatusCode, body, resp.Header.Get("X-Kept"))
		}
		return resp
	}
	for i, f := range hop {
		get("/plain")
		resp := get("/hop/" + strconv.Itoa(i))
		for _, line := range strings.Split(f, "\r\n") {
			name, _, _ := strings.Cut(line, ":")
			if v, ok := resp.Header[name]; ok {
				t.Errorf("after %q the client saw %s: %q; want it dropped", f, name, v)
			}
		}
	}
}

func TestValidHost(t *testing.T) {
	for h, want := range map[string]bool{
		"":                      true, // left to the callers
		"api.example.com":       true,
		"API.Example.COM.":      true,
		"api.example.com:8080":  true,
		"api.example.com:":      true, // port = *DIGIT
		"127.0.0.1:80":          true,
		"[::1]":                 true,
		"[2001:db8::1]:443":     true,
		"xn--bcher-kva.example": true,
		"[::1":                  false,
		":80":                   false,
		":":                     false,
		"::1":                   false,
		"[::1]x":                false,
		"[127.0.0.1]":           false,
		"[fe80::1%eth0]":        false,
		"api.example.com:abc":   false,
		"a.example.com:1:80":    false,
		"x..example.com":        false,
		".x.example.com":        false,
		".":                     false,
		"a b":                   false,
		"a/b":                   false,
		"a@b":                   false,
		"a\x00b":                false,
	} {
		if got := validHost(h); got != want {
			t.Errorf("validHost(%q) = %v; want %v", h, got, want)
		}
	}
}

// An invalid Host or a fragment in the target gets a 400 and never reaches
// the upstream, over HTTP/1.1 and HTTP/2.
func TestInvalidHostAndFragmentRefused(t *testing.T) {
	var hits hitCounter
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { hits.inc() })
	gw := startGateway(t, oneRoute(be.URL, ""))
	for _, raw := range []string{
		"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: api.example.com:abc\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: api.example.com:80:80\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x..example.com\r\n\r\n",
		"GET http://x..example.com/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /public/a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /x?debug=1#frag HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		conn, err := net.Dial("tcp", gw.addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, raw)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%q: status %d; want 400", raw, resp.StatusCode)
		}
	}
	c := newH2CClient(t)
	req, _ := http.NewRequest(http.MethodGet, gw.url+"/", nil)
	req.Host = "x..example.com"
	if resp, _ := do(t, c, req); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("h2c with Host x..example.com: status %d; want 400", resp.StatusCode)
	}
	if hits.get() != 0 {
		t.Errorf("backend hits = %d; want 0", hits.get())
	}
}

// proxy_headers turns off, per service, the fields the gateway writes:
// what it would have written is absent, and so are a client's forwarding
// fields (nothing checked them), while a client's X-Request-Id, trace
// context and Via pass as they came. A service that keeps the defaults,
// beside it, still gets them all.
func TestProxyHeadersOff(t *testing.T) {
	url := newEchoBackend(t)
	var logBuf syncBuffer
	gw := startGatewayWith(t, gatewaySetup{opts: Options{ProxyName: "edge-1", AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))}}, fmt.Sprintf(`
services:
  - name: private
    targets: [{url: %s}]
    proxy_headers: {forwarded: false, x_forwarded: false, via: false, request_id: false, traceparent: false}
  - name: some
    targets: [{url: %s}]
    proxy_headers: {x_forwarded: false, traceparent: true}
  - name: all
    targets: [{url: %s}]
routes:
  - {name: private, match: {path_prefix: /private}, service: private}
  - {name: some, match: {path_prefix: /some}, service: some}
  - {name: all, match: {path_prefix: /all}, service: all}
`, url, url, url))
	c := newClient(t)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	send := func(path string, client bool) (*http.Response, echoed) {
		req, _ := http.NewRequest(http.MethodGet, gw.url+path, nil)
		if client {
			req.Header.Set("X-Forwarded-For", "203.0.113.7")
			req.Header.Set("X-Forwarded-Proto", "https")
			req.Header.Set("X-Forwarded-Host", "spoofed.example")
			req.Header.Set("Forwarded", "for=203.0.113.7")
			req.Header.Set("X-Real-Ip", "203.0.113.7")
			req.Header.Set("X-Request-Id", "client-id-1")
			req.Header.Set("Traceparent", tp)
			req.Header.Set("Tracestate", "k=v")
			req.Header.Set("Via", "1.0 client-proxy")
		}
		return echo(t, c, req)
	}
	forwarding := []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-Ip"}

	// Nothing of the gateway's own reaches the private service.
	resp, e := send("/private/a", false)
	for _, k := range append(forwarding, "Via", "X-Request-Id", "Traceparent", "Tracestate") {
		if v := e.Header.Values(k); len(v) > 0 {
			t.Errorf("private, no client fields: backend got %s %q; want none", k, v)
		}
	}
	if v := resp.Header.Values("Via"); len(v) > 0 {
		t.Errorf("private: client got response Via %q; want none", v)
	}
	// A client's forwarding fields are dropped; its id, trace and Via pass.
	resp, e = send("/private/b", true)
	for _, k := range forwarding {
		if v := e.Header.Values(k); len(v) > 0 {
			t.Errorf("private: backend got the client's %s %q; want none", k, v)
		}
	}
	for k, want := range map[string]string{"X-Request-Id": "client-id-1", "Traceparent": tp, "Tracestate": "k=v", "Via": "1.0 client-proxy"} {
		if got := strings.Join(e.Header.Values(k), ", "); got != want {
			t.Errorf("private: backend got %s %q; want the client's %q as it came", k, got, want)
		}
	}
	if v := resp.Header.Values("Via"); len(v) > 0 {
		t.Errorf("private: client got response Via %q; want none", v)
	}
	// The access log still names the request and the client's trace.
	waitFor(t, 5*time.Second, "the access log record", func() bool { return logBuf.records(t)["client-id-1"] != nil })
	if rec := logBuf.records(t)["client-id-1"]; rec["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("private: logged trace_id %v; want the client's", rec["trace_id"])
	}

	// Two traceparent fields are no trace (W3C): none is logged either.
	req2, _ := http.NewRequest(http.MethodGet, gw.url+"/private/c", nil)
	req2.Header["Traceparent"] = []string{tp, tp}
	req2.Header.Set("X-Request-Id", "two-traceparents")
	echo(t, c, req2)
	waitFor(t, 5*time.Second, "the access log record", func() bool { return logBuf.records(t)["two-traceparents"] != nil })
	if rec := logBuf.records(t)["two-traceparents"]; rec["trace_id"] != "" {
		t.Errorf("private, two traceparents: logged trace_id %v; want none", rec["trace_id"])
	}

	// Only X-Forwarded-* off: Forwarded, Via, an id and a trace are there.
	resp, e = send("/some/a", true)
	for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-Ip"} {
		if v := e.Header.Values(k); len(v) > 0 {
			t.Errorf("some: backend got %s %q; want none", k, v)
		}
	}
	if got, want := e.Header.Values("Forwarded"), []string{`for=127.0.0.1;proto=http;host="` + gw.addr + `"`}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("some: Forwarded = %q; want only the gateway's %q", got, want)
	}
	if got := e.Header.Get("Traceparent"); !strings.HasPrefix(got, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || got == tp {
		t.Errorf("some: traceparent %q; want the client's trace continued with the gateway's span", got)
	}
	if got := strings.Join(e.Header.Values("Via"), ", "); got != "1.0 client-proxy, 1.1 edge-1" {
		t.Errorf("some: request Via %q; want the gateway's added", got)
	}
	if got := resp.Header.Get("Via"); got != "1.1 edge-1" {
		t.Errorf("some: response Via %q; want the gateway's", got)
	}

	// The defaults, beside them.
	_, e = send("/all/a", false)
	for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Via", "X-Request-Id", "Traceparent"} {
		if len(e.Header.Values(k)) == 0 {
			t.Errorf("all: backend got no %s; want the gateway's", k)
		}
	}

	// A trusted proxy's forwarding fields do not reach them either.
	tgw := startGatewayWith(t, gatewaySetup{opts: Options{TrustedProxies: trustedProxies{netip.MustParsePrefix("127.0.0.0/8")}}}, fmt.Sprintf(`
services:
  - name: private
    targets: [{url: %s}]
    proxy_headers: {forwarded: false, x_forwarded: false}
routes: [{name: private, match: {path_prefix: /}, service: private}]
`, url))
	req, _ := http.NewRequest(http.MethodGet, tgw.url+"/t", nil)
	for _, k := range append(forwarding, "X-Forwarded-Port", "X-Forwarded-Prefix", "X-Original-Url") {
		req.Header.Set(k, "203.0.113.7")
	}
	_, e = echo(t, c, req)
	for _, k := range append(forwarding, "X-Forwarded-Port", "X-Forwarded-Prefix", "X-Original-Url") {
		if v := e.Header.Values(k); len(v) > 0 {
			t.Errorf("trusted client: backend got %s %q; want none", k, v)
		}
	}
}

func TestProblemFieldsAreWellFormed(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:                           `"plain"`,
		`say "hi" \ there`:                `"say \"hi\" \\ there"`,
		"to \xc3\xa9vil\xff\ttab\x7f end": `"to ??vil??tab? end"`,
	} {
		if got := sfString(in); got != want {
			t.Errorf("sfString(%q) = %s; want %s", in, got, want)
		}
	}
	r := httptest.NewRequest("GET", "/"+strings.Repeat("%41", 2000), nil)
	got := problemInstance(r)
	if len(got) > maxInstance+3 || !strings.HasSuffix(got, "%41...") {
		t.Errorf("instance of a 6 KB path: %d bytes ending %q; want at most %d, no escape cut", len(got), got[len(got)-8:], maxInstance+3)
	}
	if got := problemInstance(httptest.NewRequest("GET", "/a%20b", nil)); got != "/a%20b" {
		t.Errorf("instance = %q; want /a%%20b", got)
	}
}

func TestValidForwarded(t *testing.T) {
	for v, want := range map[string]bool{
		"for=192.0.2.43":                                    true,
		`for="[2001:db8:cafe::17]:4711"`:                    true,
		"for=192.0.2.43, for=198.51.100.17;by=203.0.113.60": true,
		`for=x;proto=http;host="a.example:8080"`:            true,
		`for="a\"b"`:                                        true,
		"for=a;":                                            true,
		"for=a ; proto=http":                                true,
		"":                                                  true,
		`for=1.2.3.4;;;garbage"unterminated`:                false,
		`for="open`:                                         false,
		"for":                                               false,
		"for=":                                              false,
		"=x":                                                false,
		"for=a b":                                           false,
		"for=\"a\x01\"":                                     false,
		"for=a,,for=b":                                      true,
	} {
		if got := validForwarded(v); got != want {
			t.Errorf("validForwarded(%q) = %v; want %v", v, got, want)
		}
	}
}

// The spoofable forwarding fields are deleted by their canonical names: one
// spelt otherwise would never match, and pass.
func TestSpoofableForwardingNamesAreCanonical(t *testing.T) {
	for _, k := range spoofableForwarding {
		if c := textproto.CanonicalMIMEHeaderKey(k); c != k {
			t.Errorf("%q is not canonical (%q)", k, c)
		}
	}
}

// Max-Forwards on OPTIONS and TRACE (RFC 9110 7.6.2): at 0 the gateway
// answers itself, else the upstream gets it one less; other methods and
// malformed values pass as they came.
func TestMaxForwards(t *testing.T) {
	var mu sync.Mutex
	var seen []string // method and Max-Forwards of each request upstream
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+strings.Join(r.Header["Max-Forwards"], "|"))
		mu.Unlock()
		io.WriteString(w, "upstream")
	})
	gw := startGateway(t, fmt.Sprintf(`
services: [{name: be, targets: [{url: %q}]}]
routes:
  - {name: any, service: be, match: {path_prefix: /}}
  - {name: traced, service: be, match: {path_prefix: /t, methods: [GET, TRACE, OPTIONS]}}
`, be.URL))
	for _, tc := range []struct {
		method, path, mf string
		status           int
		allow, body      string // of the gateway's own answer
	}{
		{"OPTIONS", "/a", "0", 200, "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS", ""},
		{"OPTIONS", "/t", "0", 200, "GET, TRACE, OPTIONS", ""},
		{"TRACE", "/t", "0", 200, "", "TRACE /t HTTP/1.1\r\nHost: HOST\r\nMax-Forwards: 0\r\nUser-Agent: Go-http-client/1.1\r\nX-Probe: 1\r\n\r\n"},
		{"OPTIONS", "/a", "3", 200, "", "upstream"},
		{"TRACE", "/t", "1", 200, "", "upstream"},
		{"OPTIONS", "/a", "x1", 200, "", "upstream"},
		{"GET", "/a", "0", 200, "", "upstream"},
	} {
		req, _ := http.NewRequest(tc.method, gw.url+tc.path, nil)
		req.Header.Set("Max-Forwards", tc.mf)
		req.Header.Set("X-Probe", "1")
		req.Header.Set("Authorization", "Bearer secret") // never reflected
		resp, body := do(t, newClient(t), req)
		want := strings.ReplaceAll(tc.body, "HOST", gw.addr)
		if resp.StatusCode != tc.status || string(body) != want || resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s Max-Forwards %s: %d %q Allow %q; want %d %q Allow %q", tc.method, tc.path, tc.mf, resp.StatusCode, body, resp.Header.Get("Allow"), tc.status, want, tc.allow)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"OPTIONS 2", "TRACE 0", "OPTIONS x1", "GET 0"}; strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Errorf("upstream saw %q; want %q", seen, want)
	}
}
