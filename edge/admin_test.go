package edge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/edge/config"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// newAdminServer serves g's admin API on a loopback httptest server.
func newAdminServer(t *testing.T, g *Gateway, o AdminOptions) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(g.AdminHandler(o))
	t.Cleanup(s.Close)
	return s
}

// swapControl is a small Control: it parses, compiles and swaps, as the
// node does on a single machine.
type swapControl struct {
	g     *Gateway
	mu    sync.Mutex
	ready bool
}

func (c *swapControl) Apply(ctx context.Context, raw []byte, o ApplyOptions) (*Snapshot, error) {
	ifVersion := o.IfVersion
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.g.Current()
	var version uint64
	if cur != nil {
		version = cur.Version
	}
	if ifVersion != 0 && ifVersion != version {
		return nil, ErrVersionConflict
	}
	doc, err := config.Parse(raw)
	if err != nil {
		c.g.RecordRejected()
		return nil, err
	}
	s, err := c.g.Compile(doc, CompileInput{Version: version + 1, Raw: raw, Prev: cur})
	if err != nil {
		c.g.RecordRejected()
		return nil, err
	}
	c.g.Swap(s)
	return s, nil
}

func (c *swapControl) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}

func adminRequest(t *testing.T, method, url, token, body string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(t, http.DefaultClient, req)
}

func TestAdminConfigAndAuth(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "v") })
	// Comments and layout must come back byte for byte.
	raw := "# the document as written\n" + oneRoute(be.URL, "") + "\n# end\n"
	gw := startGateway(t, raw)
	ctl := &swapControl{g: gw.g, ready: true}
	const token = "s3cret"
	closed := newAdminServer(t, gw.g, AdminOptions{Control: ctl, Token: token})
	open := newAdminServer(t, gw.g, AdminOptions{Control: ctl, Token: token, OpenReads: true})

	t.Run("GET /config returns the raw document", func(t *testing.T) {
		resp, body := adminRequest(t, "GET", closed.URL+"/config", token, "")
		if resp.StatusCode != 200 {
			t.Fatalf("status = %d; want 200 (%s)", resp.StatusCode, body)
		}
		if string(body) != raw {
			t.Errorf("body = %q; want the raw document %q", body, raw)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/yaml" {
			t.Errorf("Content-Type = %q; want application/yaml", ct)
		}
		snap := gw.g.Current()
		if got, want := resp.Header.Get("ETag"), `"`+snap.Hash+`"`; got != want {
			t.Errorf("ETag = %q; want %q", got, want)
		}
		if got := resp.Header.Get("Meridian-Config-Version"); got != "1" {
			t.Errorf("Meridian-Config-Version = %q; want 1", got)
		}
	})
	t.Run("reads need the token unless open", func(t *testing.T) {
		for _, path := range []string{"/config", "/config/version", "/routes", "/upstreams", "/metrics"} {
			resp, _ := adminRequest(t, "GET", closed.URL+path, "", "")
			if resp.StatusCode != 401 {
				t.Errorf("GET %s without token: %d; want 401", path, resp.StatusCode)
			}
			if resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("GET %s: no WWW-Authenticate challenge", path)
			}
			resp, _ = adminRequest(t, "GET", closed.URL+path, "wrong", "")
			if resp.StatusCode != 401 {
				t.Errorf("GET %s with a wrong token: %d; want 401", path, resp.StatusCode)
			}
			resp, body := adminRequest(t, "GET", open.URL+path, "", "")
			if resp.StatusCode != 200 {
				t.Errorf("GET %s with open reads: %d; want 200 (%s)", path, resp.StatusCode, body)
			}
		}
	})
	t.Run("open reads only from loopback names (DNS rebinding)", func(t *testing.T) {
		send := func(host, origin, token string) int {
			t.Helper()
			req, err := http.NewRequest("GET", open.URL+"/config", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = host
			for o := range strings.SplitSeq(origin, "|") { // several Origin fields
				if o != "" {
					req.Header.Add("Origin", o)
				}
			}
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, _ := do(t, http.DefaultClient, req)
			return resp.StatusCode
		}
		for _, tc := range []struct {
			host, origin, token string
			want                int
		}{
			{"127.0.0.1:9901", "", "", 200},
			{"localhost:9901", "http://localhost:9901", "", 200},
			{"LOCALHOST.", "", "", 200},
			{"app.localhost:80", "", "", 200},
			{"[::1]:9901", "http://[::1]:9901", "", 200},
			{"127.8.9.10", "", "", 200},
			{"evil.example:9901", "", "", 403},
			{"evil.example:9901", "http://evil.example:9901", "", 403},
			{"127.0.0.1:9901", "http://evil.example", "", 403},
			{"127.0.0.1:9901", "null", "", 403},
			{"localhost.evil.example", "", "", 403},
			{"10.0.0.1", "", "", 403},
			{"127.0.0.1:9901", "http://localhost|http://evil.example", "", 403},
			// The token opens reads from anywhere, as on a listener
			// that is not on loopback; a wrong one is said to be.
			{"evil.example:9901", "http://evil.example:9901", token, 200},
			{"127.0.0.1:9901", "", "not-the-token", 401},
		} {
			if got := send(tc.host, tc.origin, tc.token); got != tc.want {
				t.Errorf("GET /config Host %q Origin %q token %q: %d; want %d", tc.host, tc.origin, tc.token, got, tc.want)
			}
		}
		// HTTP/1.0 lets a request leave Host out: it names no loopback
		// host either.
		c, err := net.Dial("tcp", strings.TrimPrefix(open.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /config HTTP/1.0\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET /config without Host: %v, %v; want 403", resp, err)
		}
	})
	t.Run("known paths answer other methods with 405 and Allow", func(t *testing.T) {
		for _, tc := range []struct{ method, path, allow string }{
			{"DELETE", "/config", "GET, HEAD, PUT"},
			{"POST", "/config", "GET, HEAD, PUT"},
			{"PUT", "/routes", "GET, HEAD"},
			{"POST", "/healthz", "GET, HEAD"},
			{"DELETE", "/debug/pprof/heap", "GET, HEAD"},
		} {
			resp, body := adminRequest(t, tc.method, closed.URL+tc.path, token, "")
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != tc.allow {
				t.Errorf("%s %s: %d, Allow %q (%s); want 405 with Allow %q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Allow"), body, tc.allow)
			}
		}
		if resp, _ := adminRequest(t, "GET", closed.URL+"/nope", token, ""); resp.StatusCode != 404 {
			t.Errorf("GET /nope: %d; want 404", resp.StatusCode)
		}
	})
	t.Run("unclean paths get a problem, not ServeMux's redirect", func(t *testing.T) {
		for _, tc := range []struct{ path, clean string }{
			{"//config", "/config"},
			{"/routes/../config", "/config"},
			{"/./upstreams", "/upstreams"},
			{"/debug//pprof/", "/debug/pprof/"},
			// A trailing slash on an endpoint, and pprof's index without
			// its own.
			{"/config/", "/config"},
			{"/healthz/", "/healthz"},
			{"/debug/pprof", "/debug/pprof/"},
		} {
			req, _ := http.NewRequest("GET", closed.URL+tc.path, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultTransport.RoundTrip(req) // no redirects followed
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/problem+json" ||
				resp.Header.Get("Location") != "" || !strings.Contains(string(body), tc.clean+"?") {
				t.Errorf("GET %s: %d %s Location %q %s; want a 404 problem naming %s", tc.path, resp.StatusCode,
					resp.Header.Get("Content-Type"), resp.Header.Get("Location"), body, tc.clean)
			}
		}
	})
	t.Run("the auth scheme is case-insensitive", func(t *testing.T) {
		req, _ := http.NewRequest("GET", closed.URL+"/config/version", nil)
		req.Header.Set("Authorization", "bearer "+token)
		if resp, body := do(t, http.DefaultClient, req); resp.StatusCode != 200 {
			t.Errorf("Authorization: bearer ...: %d %s; want 200", resp.StatusCode, body)
		}
		req.Header.Set("Authorization", "Basic "+token)
		if resp, _ := do(t, http.DefaultClient, req); resp.StatusCode != 401 {
			t.Errorf("Authorization: Basic ...: %d; want 401", resp.StatusCode)
		}
	})
	t.Run("refused credentials are said for what they are", func(t *testing.T) {
		for _, tc := range []struct{ auth, detail, challenge string }{
			{"Bearer not-the-token", "not the admin token", `error="invalid_token"`},
			{"Basic YTpi", `takes a bearer token`, `realm="meridian-admin"`},
			{"Bearer", "gives no token", `error="invalid_request"`},
			{"", "writes need the admin bearer token", `realm="meridian-admin"`},
		} {
			for _, srv := range []*httptest.Server{closed, open} {
				req, _ := http.NewRequest("PUT", srv.URL+"/config", strings.NewReader(raw))
				if tc.auth != "" {
					req.Header.Set("Authorization", tc.auth)
				}
				resp, body := do(t, http.DefaultClient, req)
				ch := resp.Header.Get("WWW-Authenticate")
				if resp.StatusCode != 401 || !strings.Contains(string(body), tc.detail) || !strings.Contains(ch, tc.challenge) ||
					(tc.challenge == `realm="meridian-admin"` && strings.Contains(ch, "error=")) {
					t.Errorf("PUT with Authorization %q: %d %s %q; want 401 saying %q, challenge %q", tc.auth, resp.StatusCode, body, ch, tc.detail, tc.challenge)
				}
			}
		}
		// On an open read, the same words.
		req, _ := http.NewRequest("GET", open.URL+"/config", nil)
		req.Header.Set("Authorization", "Basic YTpi")
		if resp, body := do(t, http.DefaultClient, req); resp.StatusCode != 401 || !strings.Contains(string(body), `takes a bearer token`) {
			t.Errorf("open GET with Basic: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("PUT needs the token even with open reads", func(t *testing.T) {
		resp, _ := adminRequest(t, "PUT", open.URL+"/config", "", raw)
		if resp.StatusCode != 401 {
			t.Errorf("PUT without token: %d; want 401", resp.StatusCode)
		}
		resp, _ = adminRequest(t, "PUT", open.URL+"/config", "nope", raw)
		if resp.StatusCode != 401 {
			t.Errorf("PUT with a wrong token: %d; want 401", resp.StatusCode)
		}
		noToken := newAdminServer(t, gw.g, AdminOptions{Control: ctl, OpenReads: true})
		resp, _ = adminRequest(t, "PUT", noToken.URL+"/config", "", raw)
		if resp.StatusCode != 401 {
			t.Errorf("PUT with no token configured: %d; want 401", resp.StatusCode)
		}
		if v := gw.g.Current().Version; v != 1 {
			t.Errorf("version = %d after refused writes; want 1", v)
		}
	})
	t.Run("PUT applies and routes change", func(t *testing.T) {
		be2 := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "v2") })
		raw2 := oneRoute(be2.URL, "")
		resp, body := adminRequest(t, "PUT", closed.URL+"/config?if_version=1", token, raw2)
		if resp.StatusCode != 200 {
			t.Fatalf("PUT: %d %s; want 200", resp.StatusCode, body)
		}
		if got := resp.Header.Get("Meridian-Config-Version"); got != "2" {
			t.Errorf("Meridian-Config-Version = %q; want 2", got)
		}
		_, got := get(t, newClient(t), gw.url+"/")
		if string(got) != "v2" {
			t.Errorf("proxied body = %q; want v2 from the new config", got)
		}
		resp, _ = adminRequest(t, "PUT", closed.URL+"/config?if_version=1", token, raw2)
		if resp.StatusCode != 409 {
			t.Errorf("PUT with a stale if_version: %d; want 409", resp.StatusCode)
		}
		// Parameters are checked, not ignored.
		for _, q := range []string{"?allow_emtpy=true", "?if_version=", "?if_version=1&if_version=2", "?allow_empty=maybe", "?allow_empty=true;x=1", "?allow_empty=true&allow_empty=false"} {
			if resp, body := adminRequest(t, "PUT", closed.URL+"/config"+q, token, raw2); resp.StatusCode != 400 {
				t.Errorf("PUT /config%s: %d %s; want 400", q, resp.StatusCode, body)
			}
		}
		if v := gw.g.Current().Version; v != 2 {
			t.Errorf("version = %d after refused parameters; want 2", v)
		}
		for _, q := range []string{"?format=json;x=1", "?foo=1", "?format=json&format=json"} {
			if resp, body := adminRequest(t, "GET", closed.URL+"/config"+q, token, ""); resp.StatusCode != 400 {
				t.Errorf("GET /config%s: %d %s; want 400", q, resp.StatusCode, body)
			}
		}
		if !ifMatch(`"x", "`+gw.g.Current().Hash+`"`, gw.g.Current().Hash) || ifMatch(`W/"`+gw.g.Current().Hash+`"`, gw.g.Current().Hash) || !ifMatch(" * ", "h") {
			t.Error("If-Match: want a list to match by any strong tag, and a weak tag never")
		}
		resp, body = adminRequest(t, "PUT", closed.URL+"/config", token, "services: []\nroutes:\n  - name: x\n    service: missing\n")
		if resp.StatusCode != 422 {
			t.Errorf("PUT of an invalid document: %d; want 422 (%s)", resp.StatusCode, body)
		}
		if v := gw.g.Current().Version; v != 2 {
			t.Errorf("version = %d after a refused document; want 2", v)
		}
		resp, body = adminRequest(t, "GET", closed.URL+"/config", token, "")
		if resp.StatusCode != 200 || string(body) != raw2 {
			t.Errorf("GET /config after PUT = %q; want %q", body, raw2)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		get(t, newClient(t), gw.url+"/metrics-probe")
		resp, body := adminRequest(t, "GET", open.URL+"/metrics", "", "")
		if resp.StatusCode != 200 {
			t.Fatalf("status = %d", resp.StatusCode)
		}
		for _, want := range []string{
			`meridian_requests_total{code="2xx",method="GET",route="r"}`,
			`meridian_config_version 2`,
			`meridian_config_applies_total{result="rejected"} 1`,
			`meridian_upstream_target_healthy{region="",service="svc",target="`,
			`meridian_connections_open `,
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("metrics lack %q", want)
			}
		}
	})
	t.Run("GET /config?format=json can be applied again", func(t *testing.T) {
		// Durations, anchors and merge keys, comments: the JSON view
		// keeps what was written, so PUT takes it back as the same
		// document (same hash).
		raw3 := fmt.Sprintf(`# durations as written
services:
  - name: svc
    timeouts: &timeouts {connect: 2s, total: 1m30s}
    health_check: {path: /healthz, interval: 5s}
    targets: [{url: %q, weight: 3}]
  - name: other
    timeouts: {<<: *timeouts, response_header: 750ms}
    targets: [{url: %[1]q}]
routes:
  - name: r
    match: {path_prefix: /}
    service: svc
    request_headers: {set: {X-Num: "0x10", X-Date: 2001-12-14}}
`, be.URL)
		resp, body := adminRequest(t, "PUT", closed.URL+"/config", token, raw3)
		if resp.StatusCode != 200 {
			t.Fatalf("PUT: %d %s", resp.StatusCode, body)
		}
		hash := gw.g.Current().Hash
		resp, js := adminRequest(t, "GET", closed.URL+"/config?format=json", token, "")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !json.Valid(js) {
			t.Fatalf("GET ?format=json: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), js)
		}
		for _, want := range []string{`"connect": "2s"`, `"response_header": "750ms"`, `"interval": "5s"`, `"weight": 3`, `"X-Date": "2001-12-14"`} {
			if !strings.Contains(string(js), want) {
				t.Errorf("JSON view lacks %s:\n%s", want, js)
			}
		}
		if resp, _ := adminRequest(t, "GET", closed.URL+"/config?format=xml", token, ""); resp.StatusCode != 400 {
			t.Errorf("GET ?format=xml: %d; want 400", resp.StatusCode)
		}
		resp, body = adminRequest(t, "PUT", closed.URL+"/config", token, string(js))
		if resp.StatusCode != 200 {
			t.Fatalf("PUT of the JSON view: %d %s", resp.StatusCode, body)
		}
		if got := gw.g.Current().Hash; got != hash {
			t.Errorf("hash after applying the JSON view = %s; want %s (the same document)", got, hash)
		}
		resp, body = adminRequest(t, "GET", closed.URL+"/config", token, "")
		if resp.StatusCode != 200 || string(body) != string(js) {
			t.Errorf("GET /config after the JSON PUT = %q; want the JSON as applied", body)
		}
	})
}

// YAML in flow style starts with '{' too: GET /config names it YAML, and
// only real JSON application/json.
func TestAdminConfigContentType(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "v") })
	gw := startGateway(t, oneRoute(be.URL, ""))
	const token = "s3cret"
	closed := newAdminServer(t, gw.g, AdminOptions{Control: &swapControl{g: gw.g, ready: true}, Token: token})
	t.Run("GET /config names YAML in flow style as YAML", func(t *testing.T) {
		for _, tc := range []struct{ doc, ct string }{
			{fmt.Sprintf("{services: [{name: s, targets: [{url: %q}]}], routes: [{name: r, service: s}]}\n", be.URL), "application/yaml"},
			{fmt.Sprintf(`{"services": [{"name": "s", "targets": [{"url": %q}]}], "routes": [{"name": "r", "service": "s"}]}`, be.URL), "application/json"},
		} {
			if resp, body := adminRequest(t, "PUT", closed.URL+"/config", token, tc.doc); resp.StatusCode != 200 {
				t.Fatalf("PUT: %d %s", resp.StatusCode, body)
			}
			resp, body := adminRequest(t, "GET", closed.URL+"/config", token, "")
			if ct := resp.Header.Get("Content-Type"); ct != tc.ct || string(body) != tc.doc {
				t.Errorf("GET /config of %q: %s %q; want %s and the document", tc.doc, ct, body, tc.ct)
			}
		}
	})
}

// If-Match over several lines is one list; an empty one matches nothing.
func TestAdminIfMatchLines(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {})
	doc := oneRoute(be.URL, "")
	gw := startGateway(t, doc)
	const token = "s3cret"
	s := newAdminServer(t, gw.g, AdminOptions{Control: &swapControl{g: gw.g, ready: true}, Token: token})
	put := func(lines ...string) int {
		req, _ := http.NewRequest(http.MethodPut, s.URL+"/config", strings.NewReader(doc))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header["If-Match"] = lines
		resp, _ := do(t, http.DefaultClient, req)
		return resp.StatusCode
	}
	if code := put(`"abc"`, `"`+gw.g.Current().Hash+`"`); code != 200 {
		t.Errorf("If-Match over two lines naming the ETag: %d; want 200", code)
	}
	if code := put(""); code != http.StatusPreconditionFailed {
		t.Errorf("empty If-Match: %d; want 412", code)
	}
}

// GET /config answers 304 to a poller whose copy is current (If-None-Match,
// compared weakly), and the document to one whose copy is stale.
func TestAdminConfigIfNoneMatch(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {})
	gw := startGateway(t, oneRoute(be.URL, ""))
	s := newAdminServer(t, gw.g, AdminOptions{Control: &swapControl{g: gw.g, ready: true}, Token: "t"})
	hash := gw.g.Current().Hash
	// Each representation has a tag of its own: the YAML's does not stand
	// for the JSON, nor the other way round.
	for q, tags := range map[string][2]string{
		"":             {`"` + hash + `"`, `"` + hash + `-json"`},
		"?format=json": {`"` + hash + `-json"`, `"` + hash + `"`},
	} {
		tag, other := tags[0], tags[1]
		for _, tc := range []struct {
			inm  []string
			want int
		}{
			{[]string{tag}, http.StatusNotModified},
			{[]string{"W/" + tag}, http.StatusNotModified},
			{[]string{`"old"`, tag}, http.StatusNotModified},
			{[]string{`"old", ` + tag}, http.StatusNotModified},
			{[]string{"*"}, http.StatusNotModified},
			{[]string{`"old"`}, http.StatusOK},
			{[]string{other}, http.StatusOK},
			{nil, http.StatusOK},
		} {
			req, _ := http.NewRequest(http.MethodGet, s.URL+"/config"+q, nil)
			req.Header["If-None-Match"] = tc.inm
			req.Header.Set("Authorization", "Bearer t")
			resp, body := do(t, http.DefaultClient, req)
			if resp.StatusCode != tc.want || resp.Header.Get("ETag") != tag {
				t.Errorf("If-None-Match %q%s: %d ETag %s; want %d and ETag %s", tc.inm, q, resp.StatusCode, resp.Header.Get("ETag"), tc.want, tag)
			}
			if (tc.want == http.StatusNotModified) != (len(body) == 0) {
				t.Errorf("If-None-Match %q%s: body of %d bytes with %d", tc.inm, q, len(body), resp.StatusCode)
			}
		}
	}
	// Either tag names the applied document to If-Match.
	for _, tag := range []string{`"` + hash + `"`, `"` + hash + `-json"`} {
		cur := gw.g.Current()
		req, _ := http.NewRequest(http.MethodPut, s.URL+"/config", bytes.NewReader(cur.Raw))
		req.Header.Set("Authorization", "Bearer t")
		req.Header.Set("If-Match", `"`+cur.Hash+strings.TrimPrefix(tag, `"`+hash))
		if resp, body := do(t, http.DefaultClient, req); resp.StatusCode != http.StatusOK {
			t.Errorf("PUT with If-Match %s: %d %s; want 200", tag, resp.StatusCode, body)
		}
	}
}

func TestAdminReadiness(t *testing.T) {
	g := New(Options{})
	defer g.Close()
	ctl := &swapControl{g: g}
	s := newAdminServer(t, g, AdminOptions{Control: ctl, Token: "t"})

	resp, _ := adminRequest(t, "GET", s.URL+"/healthz", "", "")
	if resp.StatusCode != 200 {
		t.Errorf("/healthz = %d; want 200", resp.StatusCode)
	}
	resp, body := adminRequest(t, "GET", s.URL+"/readyz", "", "")
	if resp.StatusCode != 503 {
		t.Errorf("/readyz with no snapshot = %d; want 503 (%s)", resp.StatusCode, body)
	}
	resp, _ = adminRequest(t, "GET", s.URL+"/config", "t", "")
	if resp.StatusCode != 404 {
		t.Errorf("/config with no snapshot = %d; want 404", resp.StatusCode)
	}

	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {})
	resp, body = adminRequest(t, "PUT", s.URL+"/config", "t", oneRoute(be.URL, ""))
	if resp.StatusCode != 200 {
		t.Fatalf("PUT = %d %s", resp.StatusCode, body)
	}
	resp, _ = adminRequest(t, "GET", s.URL+"/readyz", "", "")
	if resp.StatusCode != 503 {
		t.Errorf("/readyz while the control is not ready = %d; want 503", resp.StatusCode)
	}
	ctl.mu.Lock()
	ctl.ready = true
	ctl.mu.Unlock()
	resp, _ = adminRequest(t, "GET", s.URL+"/readyz", "", "")
	if resp.StatusCode != 200 {
		t.Errorf("/readyz when configured and ready = %d; want 200", resp.StatusCode)
	}
	resp, body = adminRequest(t, "GET", s.URL+"/config/version", "t", "")
	var vi versionInfo
	if err := json.Unmarshal(body, &vi); resp.StatusCode != 200 || err != nil || vi.Version != 1 || vi.Routes != 1 || vi.Services != 1 {
		t.Errorf("/config/version = %s (%v); want version 1 with 1 route and 1 service", body, err)
	}
	resp, body = adminRequest(t, "GET", s.URL+"/routes", "t", "")
	var routes []RouteInfo
	if err := json.Unmarshal(body, &routes); resp.StatusCode != 200 || err != nil || len(routes) != 1 || routes[0].Name != "r" || routes[0].Service != "svc" {
		t.Errorf("/routes = %s (%v)", body, err)
	}
	resp, _ = adminRequest(t, "GET", s.URL+"/nope", "t", "")
	if resp.StatusCode != 404 {
		t.Errorf("/nope = %d; want 404", resp.StatusCode)
	}
}

// Until a snapshot is installed the proxy answers 503.
func TestNoSnapshotIs503(t *testing.T) {
	gw := startGateway(t, "")
	resp, body := get(t, newClient(t), gw.url+"/")
	checkProblem(t, resp, body, http.StatusServiceUnavailable, "proxy_configuration_error")
}

// The access log shows the path as the client spelled it: decoded,
// /a%2Fb and /a/b (or %3F and a query) would read alike. So does a
// refused request's line, and the lane's.
func TestAccessLogPathAsSent(t *testing.T) {
	var buf syncBuffer
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	gw := startGatewayWith(t, gatewaySetup{opts: Options{AccessLog: slog.New(slog.NewJSONHandler(&buf, nil))}}, oneRoute(be.URL, ""))
	for i, target := range []string{"/a/p%2Fq%20r", "/a/%41b", "/a/x%3Fy?q=1", "/a/plain", "/a/%zz"} {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "GET "+target+" HTTP/1.1\r\nHost: h\r\nX-Request-Id: p"+strconv.Itoa(i)+"\r\nConnection: close\r\n\r\n")
		readResponse(t, br, http.MethodGet)
		c.Close()
	}
	waitFor(t, 5*time.Second, "five log lines", func() bool { return len(buf.records(t)) == 5 })
	recs := buf.records(t)
	for i, want := range []string{"/a/p%2Fq%20r", "/a/%41b", "/a/x%3Fy", "/a/plain"} {
		if got := recs["p"+strconv.Itoa(i)]["path"]; got != want {
			t.Errorf("request %d: logged path %q; want %q", i, got, want)
		}
	}
	refused := 0
	for _, rec := range recs { // its request id is the answer's
		if rec["status"] == float64(400) {
			refused++
			if rec["path"] != "/a/%zz" {
				t.Errorf("the refused request: logged path %q; want %q", rec["path"], "/a/%zz")
			}
		}
	}
	if refused != 1 {
		t.Errorf("%d lines with status 400; want 1 (/a/%%zz)", refused)
	}
}

// The access log records what went out, including the size of the
// gateway's own problem bodies.
func TestAccessLog(t *testing.T) {
	var buf syncBuffer
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "12345") })
	gw := startGatewayWith(t, gatewaySetup{opts: Options{AccessLog: slog.New(slog.NewJSONHandler(&buf, nil))}}, fmt.Sprintf(`
services:
  - name: svc
    targets: [{url: %s}]
routes:
  - name: api
    match: {hosts: [api.example], path_prefix: /}
    service: svc
`, be.URL))
	c := newClient(t)
	req, _ := http.NewRequest(http.MethodGet, gw.url+"/ok", nil)
	req.Host = "api.example"
	req.Header.Set("X-Request-Id", "req-ok")
	do(t, c, req)
	req, _ = http.NewRequest(http.MethodGet, gw.url+"/missing", nil)
	req.Host = "other.example"
	req.Header.Set("X-Request-Id", "req-404")
	resp, probBody := do(t, c, req)
	if resp.StatusCode != 404 {
		t.Fatalf("status = %d; want 404", resp.StatusCode)
	}

	var recs map[string]map[string]any
	waitFor(t, 5*time.Second, "two access log records", func() bool {
		recs = buf.records(t)
		return len(recs) >= 2
	})
	for _, tc := range []struct {
		id       string
		route    string
		status   float64
		bytesOut int
	}{
		{"req-ok", "api", 200, len("12345")},
		{"req-404", "", 404, len(probBody)},
	} {
		rec := recs[tc.id]
		if rec == nil {
			t.Errorf("no access log record for %s; have %v", tc.id, recs)
			continue
		}
		if rec["route"] != tc.route || rec["status"] != tc.status || rec["bytes_out"] != float64(tc.bytesOut) {
			t.Errorf("%s: route=%v status=%v bytes_out=%v; want route=%q status=%v bytes_out=%d",
				tc.id, rec["route"], rec["status"], rec["bytes_out"], tc.route, tc.status, tc.bytesOut)
		}
	}
	if rec := recs["req-ok"]; rec != nil && rec["target"] != strings.TrimPrefix(be.URL, "http://") {
		t.Errorf("target = %v; want %s", rec["target"], be.URL)
	}
}

// syncBuffer collects JSON log lines written from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// only returns the one access log record there is, what names it.
func (b *syncBuffer) only(t *testing.T, what string) map[string]any {
	t.Helper()
	recs := b.records(t)
	if len(recs) != 1 {
		t.Fatalf("access log: %v; want only %s", recs, what)
	}
	for _, rec := range recs {
		return rec
	}
	return nil
}

// records returns the access log records by request id.
func (b *syncBuffer) records(t *testing.T) map[string]map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]map[string]any{}
	for line := range strings.SplitSeq(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		id, _ := m["request_id"].(string)
		out[id] = m
	}
	return out
}

// metricValue scrapes the gateway's metrics and returns the value of one
// series, given as it appears in the exposition (name{labels}), or 0 if
// the series does not exist yet.
func metricValue(t *testing.T, g *Gateway, series string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	g.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.SplitSeq(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// meridian_requests_in_flight counts the requests being served: two held
// by the backend show as 2, and the gauge is back to 0 once they end.
func TestRequestsInFlightGauge(t *testing.T) {
	entered := make(chan struct{}, 2)
	release := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	done := make(chan struct{}, 2)
	for range 2 {
		go func() {
			defer func() { done <- struct{}{} }()
			resp, err := http.Get(gw.url + "/")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	recv(t, entered, "the first request at the backend")
	recv(t, entered, "the second request at the backend")
	if got := metricValue(t, gw.g, "meridian_requests_in_flight"); got != 2 {
		t.Errorf("in flight = %v while two requests wait; want 2", got)
	}
	close(release)
	recv(t, done, "the first request to end")
	recv(t, done, "the second request to end")
	// The gauge drops as the handler returns, which can be just after the
	// client has its answer.
	deadline := time.Now().Add(5 * time.Second)
	for metricValue(t, gw.g, "meridian_requests_in_flight") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("in flight = %v after both requests ended; want 0", metricValue(t, gw.g, "meridian_requests_in_flight"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A route's series appear at its first count and go when a reload removes
// the route (or its service): /metrics does not grow with every route ever
// applied.
func TestMetricsOfRemovedRoutesAreDeleted(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	doc := func(routes ...string) string {
		d := fmt.Sprintf("services:\n  - {name: s1, targets: [{url: %q}]}\n", be.URL)
		if slices.Contains(routes, "gone") {
			d += fmt.Sprintf("  - {name: s2, targets: [{url: %q}]}\n", be.URL)
		}
		d += "routes:\n"
		for _, r := range routes {
			svc := "s1"
			if r == "gone" {
				svc = "s2"
			}
			d += fmt.Sprintf("  - {name: %s, match: {path_prefix: /%s}, service: %s}\n", r, r, svc)
		}
		return d
	}
	gw := startGateway(t, doc("kept", "gone", "idle"))
	c := newClient(t)
	for _, p := range []string{"/kept", "/gone"} {
		if resp, _ := get(t, c, gw.url+p); resp.StatusCode != 200 {
			t.Fatalf("%s: %d", p, resp.StatusCode)
		}
	}
	scrape := func() string {
		rec := httptest.NewRecorder()
		gw.g.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	m := scrape()
	for _, want := range []string{`route="kept"`, `route="gone"`, `service="s2"`} {
		if !strings.Contains(m, want) {
			t.Fatalf("before the reload, /metrics lacks %s", want)
		}
	}
	if strings.Contains(m, `route="idle"`) {
		t.Error("a route never requested already has series")
	}
	var goneStats *routeStats
	for _, rt := range gw.g.Current().routes {
		if rt.name == "gone" {
			goneStats = rt.stats
		}
	}
	gw.g.Swap(compileDoc(t, gw.g, doc("kept", "idle"), 2, gw.g.Current()))
	// A request still running on the old snapshot ends after the reload,
	// with an error and a retry: its series must not come back.
	goneStats.observe("GET", 504, 0.1)
	gw.g.metrics.countError(goneStats, "http_response_timeout")
	gw.g.metrics.countService(gw.g.metrics.retries, "s2")
	m = scrape()
	if strings.Contains(m, `route="gone"`) || strings.Contains(m, `service="s2"`) {
		t.Errorf("after the reload, /metrics still has the removed route's or service's series:\n%s", m)
	}
	if got := metricValue(t, gw.g, `meridian_requests_total{code="2xx",method="GET",route="kept"}`); got != 1 {
		t.Errorf("kept route's count = %v; want 1 (kept across the reload)", got)
	}
	// Brought back, a route counts afresh.
	gw.g.Swap(compileDoc(t, gw.g, doc("kept", "gone"), 3, gw.g.Current()))
	if resp, _ := get(t, c, gw.url+"/gone"); resp.StatusCode != 200 {
		t.Fatalf("/gone: %d", resp.StatusCode)
	}
	if got := metricValue(t, gw.g, `meridian_requests_total{code="2xx",method="GET",route="gone"}`); got != 1 {
		t.Errorf("re-added route's count = %v; want 1", got)
	}
	if !strings.Contains(scrape(), `meridian_upstream_duration_seconds_count{service="s2"} 1`) {
		t.Error("re-added service's upstream histogram is missing or stale")
	}
}

// A route that keeps its name while its service goes and comes back
// counts upstream time in the service's new series, not in the one the
// reload deleted (which the route's last-used entry still points to).
func TestUpstreamSeriesOfAReturningService(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	doc := func(svc string) string {
		return fmt.Sprintf("services:\n  - {name: %s, targets: [{url: %q}]}\nroutes:\n  - {name: r, match: {path_prefix: /}, service: %s}\n", svc, be.URL, svc)
	}
	gw := startGateway(t, doc("a"))
	c := newClient(t)
	const series = `meridian_upstream_duration_seconds_count{service="a"}`
	for range 2 { // the second goes by the route's last-used entry
		if resp, _ := get(t, c, gw.url+"/"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if got := metricValue(t, gw.g, series); got != 2 {
		t.Fatalf("%s = %v; want 2", series, got)
	}
	gw.g.Swap(compileDoc(t, gw.g, doc("b"), 2, gw.g.Current())) // a's series deleted
	gw.g.Swap(compileDoc(t, gw.g, doc("a"), 3, gw.g.Current()))
	if resp, _ := get(t, c, gw.url+"/"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := metricValue(t, gw.g, series); got != 1 {
		t.Errorf("after service a came back, %s = %v; want 1 (a new series)", series, got)
	}
}

// The upstream time is a measure of the service: a request that got no
// response head (a refused connection, a client's body that stalled) is
// not in its histogram, on the lane or the general path.
func TestUpstreamTimeOnlyWithAResponseHead(t *testing.T) {
	gw := startGateway(t, fmt.Sprintf("services:\n  - {name: a, targets: [{url: %q}]}\nroutes:\n  - {name: r, match: {path_prefix: /}, service: a}\n", deadAddr(t)))
	c := newClient(t)
	for _, path := range []string{"/lane", "/general"} {
		req, _ := http.NewRequest("GET", gw.url+path, nil)
		if path == "/general" {
			req.Header.Set("Cookie", "a=b; c=d")
			req.Header.Add("Cookie", "e=f") // two cookie fields: not a lean request
		}
		if resp, _ := do(t, c, req); resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("%s: %d; want 502 (connection refused)", path, resp.StatusCode)
		}
	}
	if got := metricValue(t, gw.g, `meridian_requests_total{code="5xx",method="GET",route="r"}`); got != 2 {
		t.Fatalf("requests counted: %v; want 2", got)
	}
	if got := metricValue(t, gw.g, `meridian_upstream_duration_seconds_count{service="a"}`); got != 0 {
		t.Errorf("requests that got no response head in the upstream histogram: %v; want 0", got)
	}
}

// A refused PUT gets its answer at once, even while its body trickles in
// (net/http would read the rest of a small body first), and a declared
// length over the limit is refused before any of it is read.
func TestAdminRefusesWithoutWaitingForTheBody(t *testing.T) {
	gw := startGateway(t, oneRoute(deadAddr(t), ""))
	const token = "s3cret-token-0123456789"
	s := newAdminServer(t, gw.g, AdminOptions{Control: &swapControl{g: gw.g, ready: true}, Token: token})
	addr := strings.TrimPrefix(s.URL, "http://")
	for _, tc := range []struct {
		head string
		want int
	}{
		{"PUT /config HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nx", http.StatusUnauthorized},
		{"PUT /config HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + token + "\r\nContent-Length: 99999999999\r\n\r\nx", http.StatusRequestEntityTooLarge},
		{"PUT /nope HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nx", http.StatusNotFound},
		{"POST /config HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + token + "\r\nContent-Length: 100\r\n\r\nx", http.StatusMethodNotAllowed},
		{"PUT /config HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n", http.StatusUnauthorized},
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, tc.head)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: no answer while the body is pending: %v", tc.head, err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != tc.want || !resp.Close {
			t.Errorf("%q: %d, close %v; want %d and the connection closed", tc.head, resp.StatusCode, resp.Close, tc.want)
		}
		// And closed it is, at once: not held until a read timeout.
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("%q: after the answer, read %v; want the server's close (EOF)", tc.head, err)
		}
		conn.Close()
	}
}

// racingControl applies another document first, as a concurrent PUT that
// lands between the admin's precondition check and its own apply would.
type racingControl struct {
	*swapControl
	other string
}

func (c *racingControl) Apply(ctx context.Context, raw []byte, o ApplyOptions) (*Snapshot, error) {
	if _, err := c.swapControl.Apply(ctx, []byte(c.other), ApplyOptions{}); err != nil {
		return nil, err
	}
	return c.swapControl.Apply(ctx, raw, o)
}

// A PUT whose If-Match named the applied document when it was checked, but
// lost to another apply before its own, is a failed precondition (412), as
// if it had arrived a moment later, not a conflict over a version the
// client never named; one with if_version stays a 409.
func TestAdminIfMatchLosingARace(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {})
	doc := oneRoute(be.URL, "")
	gw := startGateway(t, doc)
	const token = "s3cret"
	ctl := &racingControl{swapControl: &swapControl{g: gw.g, ready: true}, other: doc + "# another document\n"}
	s := newAdminServer(t, gw.g, AdminOptions{Control: ctl, Token: token})
	put := func(query, ifMatch string) (int, string) {
		req, _ := http.NewRequest(http.MethodPut, s.URL+"/config"+query, strings.NewReader(doc))
		req.Header.Set("Authorization", "Bearer "+token)
		if ifMatch != "" {
			req.Header.Set("If-Match", ifMatch)
		}
		resp, body := do(t, http.DefaultClient, req)
		return resp.StatusCode, string(body)
	}
	cur := gw.g.Current()
	if code, body := put("", `"`+cur.Hash+`"`); code != http.StatusPreconditionFailed || !strings.Contains(body, "another document was applied meanwhile") || strings.Contains(body, "you named version") {
		t.Errorf("If-Match losing a race: %d %s; want 412 about the ETag", code, body)
	}
	cur = gw.g.Current()
	if code, body := put("?if_version="+strconv.FormatUint(cur.Version, 10), ""); code != http.StatusConflict {
		t.Errorf("if_version losing a race: %d %s; want 409", code, body)
	}
}

// gateControl is a swapControl whose Apply waits at a gate, counting the
// applies in progress at once.
type gateControl struct {
	*swapControl
	entered chan struct{}
	gate    chan struct{}
	in, max atomic.Int32
}

func (c *gateControl) Apply(ctx context.Context, raw []byte, o ApplyOptions) (*Snapshot, error) {
	n := c.in.Add(1)
	defer c.in.Add(-1)
	for m := c.max.Load(); n > m && !c.max.CompareAndSwap(m, n); m = c.max.Load() {
	}
	c.entered <- struct{}{}
	<-c.gate
	return c.swapControl.Apply(ctx, raw, o)
}

const gatedToken = "s3cret"

// gatedAdmin starts a gateway serving doc and an admin server whose applies
// wait at ctl's gate until openGate (which runs at the test's end too,
// before the server closes, whatever happened).
func gatedAdmin(t *testing.T) (doc string, gw *testGateway, s *httptest.Server, ctl *gateControl, openGate func()) {
	t.Helper()
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {})
	doc = oneRoute(be.URL, "")
	gw = startGateway(t, doc)
	ctl = &gateControl{swapControl: &swapControl{g: gw.g, ready: true}, entered: make(chan struct{}, 2), gate: make(chan struct{})}
	s = newAdminServer(t, gw.g, AdminOptions{Control: ctl, Token: gatedToken})
	var open sync.Once
	openGate = func() { open.Do(func() { close(ctl.gate) }) }
	t.Cleanup(openGate)
	return doc, gw, s, ctl, openGate
}

// PUTs of documents are read and applied one at a time: a second waits
// for the first, rather than parse its document beside it.
func TestAdminAppliesOneDocumentAtATime(t *testing.T) {
	doc, _, s, ctl, openGate := gatedAdmin(t)
	const token = gatedToken
	codes := make(chan int, 2)
	for i := range 2 {
		go func() {
			req, _ := http.NewRequest(http.MethodPut, s.URL+"/config", strings.NewReader(doc+fmt.Sprintf("# %d\n", i)))
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	<-ctl.entered // one is applying; the other must wait outside
	select {
	case <-ctl.entered:
		t.Fatal("a second PUT reached Apply while the first was in it")
	case <-time.After(200 * time.Millisecond):
	}
	openGate()
	<-ctl.entered
	for range 2 {
		if code := <-codes; code != http.StatusOK {
			t.Errorf("PUT: %d; want 200", code)
		}
	}
	if m := ctl.max.Load(); m != 1 {
		t.Errorf("%d applies at once; want 1", m)
	}
}

// A client that stalls its upload holds its own PUT only: another PUT is
// applied meanwhile, and the stalled one, cut off, is told it timed out
// rather than that its document was too large.
func TestAdminStalledUploadDoesNotHoldOthers(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {})
	doc := oneRoute(be.URL, "")
	gw := startGateway(t, doc)
	const token = "s3cret"
	s := newAdminServer(t, gw.g, AdminOptions{Control: &swapControl{g: gw.g, ready: true}, Token: token})
	stalled, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	fmt.Fprintf(stalled, "PUT /config HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer %s\r\nContent-Length: 100\r\n\r\n", token)
	time.Sleep(100 * time.Millisecond) // let the server take it up (the check is for a server that would wait on it)
	c := &http.Client{Timeout: 10 * time.Second}
	req, _ := http.NewRequest(http.MethodPut, s.URL+"/config", strings.NewReader(doc+"# another\n"))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("PUT beside a stalled upload: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT beside a stalled upload: %d; want 200", resp.StatusCode)
	}
	// The stalled one, cut off by its own deadline, is a timeout.
	stalled.(*net.TCPConn).CloseWrite()
	stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, _ := bufio.NewReader(stalled).ReadString('\n'); !strings.Contains(line, " 408 ") {
		t.Errorf("stalled upload cut short: %q; want a 408", line)
	}
}

// A client that leaves while it waits for its turn has nothing applied:
// nobody would be told.
func TestAdminPutOfAClientGoneWhileWaitingIsNotApplied(t *testing.T) {
	doc, gw, s, ctl, openGate := gatedAdmin(t)
	const token = gatedToken
	first := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPut, s.URL+"/config", strings.NewReader(doc+"# first\n"))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-ctl.entered // the first holds the turn
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, s.URL+"/config", strings.NewReader(doc+"# gone\n"))
		req.Header.Set("Authorization", "Bearer "+token)
		_, err := http.DefaultClient.Do(req)
		gone <- err
	}()
	time.Sleep(200 * time.Millisecond) // the second's body is sent and it waits
	cancel()
	<-gone
	time.Sleep(200 * time.Millisecond) // the server sees the hang-up
	openGate()
	if code := <-first; code != http.StatusOK {
		t.Fatalf("first PUT: %d", code)
	}
	select {
	case <-ctl.entered:
		t.Error("the PUT of a client that had left reached Apply")
	case <-time.After(500 * time.Millisecond):
	}
	if raw := string(gw.g.Current().Raw); strings.HasSuffix(raw, "# gone\n") {
		t.Error("the document of a client that had left was applied")
	}
}

// A document sent as a form (curl -d, which also takes the line breaks out
// of the file it reads) is refused with a word on how to send it; JSON,
// which survives that, is still taken.
func TestAdminFormBodyHint(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {})
	gw := startGateway(t, oneRoute(be.URL, ""))
	const token = "s3cret"
	s := newAdminServer(t, gw.g, AdminOptions{Control: &swapControl{g: gw.g, ready: true}, Token: token})
	put := func(ct, doc string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, s.URL+"/config", strings.NewReader(doc))
		req.Header.Set("Authorization", "Bearer "+token)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, body := do(t, http.DefaultClient, req)
		return resp.StatusCode, string(body)
	}
	doc := fmt.Sprintf(`{"services": [{"name": "s", "targets": [{"url": %q}]}], "routes": [{"name": "r", "service": "s"}]}`, be.URL)
	// What curl -d @gateway.yaml sends: the lines run together.
	flat := strings.ReplaceAll(oneRoute(be.URL, ""), "\n", "")
	for _, ct := range []string{"application/x-www-form-urlencoded", "multipart/form-data; boundary=x"} {
		code, body := put(ct, flat)
		if code != http.StatusUnprocessableEntity || !strings.Contains(body, "--data-binary") {
			t.Errorf("%s, lines run together: %d %s; want 422 naming --data-binary", ct, code, body)
		}
	}
	if code, body := put("application/yaml", flat); code != http.StatusUnprocessableEntity || strings.Contains(body, "--data-binary") {
		t.Errorf("application/yaml, lines run together: %d %s; want 422 without the form hint", code, body)
	}
	// What curl --data-binary sends: the same type, the lines kept.
	if code, body := put("application/x-www-form-urlencoded", "routes: [{name: x, service: nope}]\n"); code != http.StatusUnprocessableEntity || strings.Contains(body, "--data-binary") {
		t.Errorf("a form with its lines: %d %s; want 422 without the form hint", code, body)
	}
	// One-line JSON, as --data-binary sends it: nothing lost, no hint.
	if code, body := put("application/x-www-form-urlencoded", `{"routes":[{"name":"x","service":"nope"}]}`); code != http.StatusUnprocessableEntity || strings.Contains(body, "--data-binary") {
		t.Errorf("one-line JSON as a form: %d %s; want 422 without the form hint", code, body)
	}
	if code, body := put("", ""); code != http.StatusUnprocessableEntity || strings.Contains(body, "--data-binary") {
		t.Errorf("empty body without a type: %d %s; want 422 without the form hint", code, body)
	}
	// What curl --data-binary @empty.yaml sends: an empty form; nothing
	// was taken out of it. Refused as the others are.
	if code, body := put("application/x-www-form-urlencoded", ""); code != http.StatusUnprocessableEntity || strings.Contains(body, "--data-binary") ||
		!strings.Contains(body, "running configuration is unchanged") || !strings.Contains(body, `"errors"`) {
		t.Errorf("empty form: %d %s; want 422 without the form hint, with the errors and the word that nothing changed", code, body)
	}
	// A content coding is not taken (RFC 9110 15.5.16).
	req, _ := http.NewRequest(http.MethodPut, s.URL+"/config", strings.NewReader("\x1f\x8b"))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Encoding", "gzip")
	if resp, body := do(t, http.DefaultClient, req); resp.StatusCode != http.StatusUnsupportedMediaType || resp.Header.Get("Accept-Encoding") != "identity" {
		t.Errorf("gzip-coded document: %d %s (Accept-Encoding %q); want 415 with Accept-Encoding: identity", resp.StatusCode, body, resp.Header.Get("Accept-Encoding"))
	}
	// Codings in two fields are one list (RFC 9110 5.3).
	req, _ = http.NewRequest(http.MethodPut, s.URL+"/config", strings.NewReader("\x1f\x8b"))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header["Content-Encoding"] = []string{"identity", "gzip"}
	if resp, body := do(t, http.DefaultClient, req); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("gzip in a second Content-Encoding field: %d %s; want 415", resp.StatusCode, body)
	}
	// Authorization has one value: two fields, the right token in one,
	// are not taken.
	req, _ = http.NewRequest(http.MethodPut, s.URL+"/config", strings.NewReader(doc))
	req.Header["Authorization"] = []string{"Bearer " + token, "Bearer wrong"}
	if resp, body := do(t, http.DefaultClient, req); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("two Authorization fields: %d %s; want 401", resp.StatusCode, body)
	}
	// The largest version is the store's "none yet": not a version.
	req, _ = http.NewRequest(http.MethodPut, s.URL+"/config?if_version=18446744073709551615", strings.NewReader(doc))
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, body := do(t, http.DefaultClient, req); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("if_version=2^64-1: %d %s; want 400", resp.StatusCode, body)
	}
	if code, body := put("application/x-www-form-urlencoded", doc); code != http.StatusOK {
		t.Errorf("JSON sent as a form: %d %s; want 200", code, body)
	}
}

// Only the document has a strong ETag: answers that change under the same
// document (a target's health, when it was applied) name its version only.
func TestAdminETagOnlyForTheDocument(t *testing.T) {
	gw := startGateway(t, oneRoute(deadAddr(t), ""))
	s := newAdminServer(t, gw.g, AdminOptions{Control: &swapControl{g: gw.g, ready: true}, OpenReads: true})
	for path, tagged := range map[string]bool{"/config": true, "/upstreams": false, "/config/version": false} {
		resp, _ := get(t, http.DefaultClient, s.URL+path)
		if got := resp.Header.Get("ETag") != ""; got != tagged || resp.Header.Get("Meridian-Config-Version") == "" {
			t.Errorf("GET %s: ETag %q, version %q; want an ETag: %v, and the version", path, resp.Header.Get("ETag"), resp.Header.Get("Meridian-Config-Version"), tagged)
		}
	}
}

// outcomeControl answers every apply with a cluster's outcome that no
// single node can make happen at will: committed but not served here yet,
// or lost with a leader.
type outcomeControl struct {
	*swapControl
	notServed bool
}

func (c *outcomeControl) Apply(ctx context.Context, raw []byte, o ApplyOptions) (*Snapshot, error) {
	if c.notServed {
		return &Snapshot{Version: 7, Hash: "abc"}, fmt.Errorf("%w: version 7 is committed", ErrNotServedYet)
	}
	return nil, fmt.Errorf("%w: leadership changed", ErrOutcomeUnknown)
}

// A write the cluster committed but this node does not serve yet is a 202
// with its version, not a 503 that says nothing changed (which invites
// sending it again); a write whose outcome was lost is a 503 that says so,
// with no Retry-After.
func TestAdminClusterWriteOutcomes(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {})
	doc := oneRoute(be.URL, "")
	gw := startGateway(t, doc)
	for _, tc := range []struct {
		notServed  bool
		code       int
		want       string
		retryAfter string
	}{
		{true, http.StatusAccepted, `"version": 7`, ""},
		{false, http.StatusServiceUnavailable, "read GET /config/version before sending it again", ""},
	} {
		s := newAdminServer(t, gw.g, AdminOptions{Control: &outcomeControl{swapControl: &swapControl{g: gw.g, ready: true}, notServed: tc.notServed}, Token: "t"})
		resp, body := adminRequest(t, http.MethodPut, s.URL+"/config", "t", doc)
		if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.want) || resp.Header.Get("Retry-After") != tc.retryAfter {
			t.Errorf("not served %v: %d %s (Retry-After %q); want %d with %q, Retry-After %q", tc.notServed, resp.StatusCode, body, resp.Header.Get("Retry-After"), tc.code, tc.want, tc.retryAfter)
		}
		if tc.notServed && (!strings.Contains(string(body), `"served": false`) || !strings.Contains(string(body), "committed")) {
			t.Errorf("202 body %s; want served false and the detail", body)
		}
		if tc.notServed && (resp.Header.Get("ETag") != "" || resp.Header.Get("Meridian-Config-Version") != "") {
			t.Errorf("202 with ETag %q, version %q; want neither (the node does not serve that version yet)", resp.Header.Get("ETag"), resp.Header.Get("Meridian-Config-Version"))
		}
	}
}
