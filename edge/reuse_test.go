package edge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Tests of the state the gateway reuses from one request to the next: the
// pooled call (exchange, outbound header edits, URL, request), the HTTP/1
// server's per-connection request and response header maps and the map it
// lends to the upstream response, the upstream response-header deadline
// left in place between exchanges, and the disconnect-watch timer that
// stays armed across requests. Every request carries values of its own
// (header names included) so that anything left over from another request
// shows, over real loopback connections and real backends, under -race.

// reuseEcho is what reuseEchoHandler saw of a request.
type reuseEcho struct {
	ID      string      `json:"id"`
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	Query   string      `json:"query"`
	Proto   int         `json:"proto"`
	CL      int64       `json:"cl"`
	TE      []string    `json:"te"`
	Header  http.Header `json:"header"`
	Trailer http.Header `json:"trailer"`
	BodyLen int         `json:"body_len"`
	BodySHA string      `json:"body_sha"`
}

// reuseEchoHandler answers with a JSON description of the request (in the
// X-Echo-Json header for HEAD), and with response fields of the request's
// own: X-Echo-Id, X-Echo-Multi and the field X-Want-Resp names. With
// chunked=1 in the query the answer is chunked with a trailer.
func reuseEchoHandler(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	id := r.Header.Get("X-Reuse-Id")
	js, _ := json.Marshal(reuseEcho{
		ID: id, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Proto: r.ProtoMajor,
		CL: r.ContentLength, TE: r.TransferEncoding, Header: r.Header, Trailer: r.Trailer,
		BodyLen: len(body), BodySHA: sha(body),
	})
	h := w.Header()
	h.Set("X-Echo-Id", id)
	h["X-Echo-Multi"] = []string{id + "-1", id + "-2"}
	if name := r.Header.Get("X-Want-Resp"); name != "" {
		h.Set(name, id)
	}
	h.Set("Content-Type", "application/json")
	if r.Method == http.MethodHead {
		h.Set("X-Echo-Json", string(js))
		return
	}
	if r.URL.Query().Get("chunked") == "1" {
		h.Set("Trailer", "X-Echo-Trailer")
		w.WriteHeader(http.StatusOK)
		half := len(js) / 2
		w.Write(js[:half])
		w.(http.Flusher).Flush()
		w.Write(js[half:])
		h.Set("X-Echo-Trailer", id)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(js)))
	w.Write(js)
}

// reuseSpec is one request with values of its own.
type reuseSpec struct {
	id, tag   string
	n         int
	method    string
	body      []byte // nil: no body
	chunked   bool   // the body goes without a length
	trailer   bool   // a chunked body ends with the X-Sent-Trailer trailer
	chunkResp bool   // the backend answers chunked, with a trailer
	odd       bool   // carries X-Odd, which other requests do not
	hop       bool   // raw requests: a field listed in Connection
}

// The request shapes the specs cycle through.
const (
	kindGet = iota
	kindGetChunkedResp
	kindHead
	kindPostLength
	kindPostChunked
	kindPutLength // idempotent with a body: retried with the body replayed
)

// numReuseKinds is how many kinds a pipelined batch has: all but PUT.
const numReuseKinds = kindPostChunked + 1

func newReuseSpec(prefix string, client, n, kind int) *reuseSpec {
	s := &reuseSpec{
		id:     fmt.Sprintf("%s%d-%d-%08x", prefix, client, n, rand.Uint32()),
		tag:    fmt.Sprintf("%s%dx%d", prefix, client, n),
		n:      n,
		method: http.MethodGet,
		odd:    n%2 == 1,
	}
	body := func(size int) []byte {
		b := []byte(strings.Repeat(s.id+";", size/len(s.id)+1))
		return b[:size]
	}
	switch kind {
	case kindGetChunkedResp:
		s.chunkResp = true
	case kindHead:
		s.method = http.MethodHead
	case kindPostLength:
		s.method = http.MethodPost
		s.body = body(100 + rand.IntN(20000))
		s.chunkResp = n%3 == 0
	case kindPostChunked:
		s.method = http.MethodPost
		s.body = body(1 + rand.IntN(20000))
		s.chunked = true
		s.trailer = n%2 == 0
	case kindPutLength:
		s.method = http.MethodPut
		s.body = body(100 + rand.IntN(2000))
	}
	return s
}

func (s *reuseSpec) path() string { return "/echo/" + s.id }

func (s *reuseSpec) query() string {
	q := "q=" + s.id + "&n=" + strconv.Itoa(s.n)
	if s.chunkResp {
		q += "&chunked=1"
	}
	return q
}

func (s *reuseSpec) reqField() string  { return textproto.CanonicalMIMEHeaderKey("X-Req-" + s.tag) }
func (s *reuseSpec) respField() string { return textproto.CanonicalMIMEHeaderKey("X-Resp-" + s.tag) }
func (s *reuseSpec) hopField() string  { return textproto.CanonicalMIMEHeaderKey("X-Hop-" + s.tag) }

// header is the request's own fields.
func (s *reuseSpec) header() http.Header {
	h := http.Header{
		"X-Reuse-Id":   {s.id},
		"X-Request-Id": {s.id},
		s.reqField():   {s.id},
		"X-Multi":      {s.id + "-a", s.id + "-b"},
		"X-Want-Resp":  {s.respField()},
	}
	if s.odd {
		h["X-Odd"] = []string{s.id}
	}
	return h
}

// request builds the request for a net/http client.
func (s *reuseSpec) request(base string) *http.Request {
	var body io.Reader
	if s.body != nil {
		if s.chunked {
			body = io.NopCloser(bytes.NewReader(s.body)) // no length known
		} else {
			body = bytes.NewReader(s.body)
		}
	}
	req, err := http.NewRequest(s.method, base+s.path()+"?"+s.query(), body)
	if err != nil {
		panic(err)
	}
	if s.chunked {
		req.ContentLength = -1
	}
	for k, v := range s.header() {
		req.Header[k] = v
	}
	if s.trailer {
		req.Trailer = http.Header{"X-Sent-Trailer": {s.id}}
	}
	return req
}

// raw is the request as bytes on an HTTP/1.1 connection.
func (s *reuseSpec) raw(host string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s?%s HTTP/1.1\r\nHost: %s\r\n", s.method, s.path(), s.query(), host)
	for k, vs := range s.header() {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	if s.hop {
		fmt.Fprintf(&b, "Connection: keep-alive, %s\r\n%s: secret\r\n", s.hopField(), s.hopField())
	}
	switch {
	case s.body == nil:
		b.WriteString("\r\n")
	case s.chunked:
		if s.trailer {
			b.WriteString("Trailer: X-Sent-Trailer\r\n")
		}
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		half := len(s.body) / 2
		for _, part := range [][]byte{s.body[:half], s.body[half:]} {
			if len(part) > 0 {
				fmt.Fprintf(&b, "%x\r\n%s\r\n", len(part), part)
			}
		}
		b.WriteString("0\r\n")
		if s.trailer {
			fmt.Fprintf(&b, "X-Sent-Trailer: %s\r\n", s.id)
		}
		b.WriteString("\r\n")
	default:
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(s.body))
		b.Write(s.body)
	}
	return b.String()
}

// reuseWant is what a path through the gateway adds.
type reuseWant struct {
	host    string // the Host the client sent: X-Forwarded-Host
	reqVia  string // the Via the backend sees
	respVia string // the Via the client sees
	proto   int    // the HTTP major version the backend sees
}

// check verifies that an answer is this request's echo and this
// request's alone.
func (s *reuseSpec) check(resp *http.Response, body []byte, want reuseWant) error {
	var errs []string
	fail := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	eq := func(what string, got, want []string) {
		if !slices.Equal(got, want) {
			fail("%s = %q; want %q", what, got, want)
		}
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: status %d; want 200 (body %.300q)", s.method, s.id, resp.StatusCode, body)
	}
	eq("response X-Echo-Id", resp.Header["X-Echo-Id"], []string{s.id})
	eq("response X-Echo-Multi", resp.Header["X-Echo-Multi"], []string{s.id + "-1", s.id + "-2"})
	eq("response "+s.respField(), resp.Header[s.respField()], []string{s.id})
	for k, v := range resp.Header {
		if strings.HasPrefix(k, "X-Resp-") && k != s.respField() {
			fail("response has %s: %q, a field of another request's response", k, v)
		}
	}
	eq("response Via", resp.Header["Via"], []string{want.respVia})
	var js []byte
	if s.method == http.MethodHead {
		if len(body) != 0 {
			fail("HEAD answer has a body of %d bytes", len(body))
		}
		js = []byte(resp.Header.Get("X-Echo-Json"))
	} else {
		js = body
		if v := resp.Header["X-Echo-Json"]; v != nil {
			fail("response has X-Echo-Json (a HEAD answer's field): %.100q", v)
		}
	}
	if s.chunkResp && s.method != http.MethodHead {
		eq("response trailer X-Echo-Trailer", resp.Trailer["X-Echo-Trailer"], []string{s.id})
	} else if v := resp.Trailer["X-Echo-Trailer"]; v != nil {
		fail("response has trailer X-Echo-Trailer %q, another response's", v)
	}
	var e reuseEcho
	if err := json.Unmarshal(js, &e); err != nil {
		fail("echo %.300q: %v", js, err)
	} else {
		if e.ID != s.id || e.Method != s.method || e.Path != s.path() || e.Query != s.query() {
			fail("backend saw %s %s?%s (id %s); want %s %s?%s", e.Method, e.Path, e.Query, e.ID, s.method, s.path(), s.query())
		}
		if e.Proto != want.proto {
			fail("backend saw HTTP/%d; want HTTP/%d", e.Proto, want.proto)
		}
		if e.BodyLen != len(s.body) || e.BodySHA != sha(s.body) {
			fail("backend got a body of %d bytes (sha %.12s); want %d (sha %.12s)", e.BodyLen, e.BodySHA, len(s.body), sha(s.body))
		}
		switch {
		case s.body == nil:
			if e.CL > 0 {
				fail("backend saw Content-Length %d on a request without a body", e.CL)
			}
		case s.chunked:
			if e.CL != -1 {
				fail("backend saw Content-Length %d; want -1 (unknown length)", e.CL)
			}
		default:
			if e.CL != int64(len(s.body)) {
				fail("backend saw Content-Length %d; want %d", e.CL, len(s.body))
			}
		}
		h := e.Header
		eq("backend X-Reuse-Id", h["X-Reuse-Id"], []string{s.id})
		eq("backend X-Request-Id", h["X-Request-Id"], []string{s.id})
		eq("backend X-Multi", h["X-Multi"], []string{s.id + "-a", s.id + "-b"})
		eq("backend "+s.reqField(), h[s.reqField()], []string{s.id})
		for k, v := range h {
			if strings.HasPrefix(k, "X-Req-") && k != s.reqField() {
				fail("backend saw %s: %q, a field of another request", k, v)
			}
			if strings.HasPrefix(k, "X-Hop-") {
				fail("backend saw %s: %q, a field the request's Connection listed (or another request's)", k, v)
			}
		}
		if s.odd {
			eq("backend X-Odd", h["X-Odd"], []string{s.id})
		} else if v := h["X-Odd"]; v != nil {
			fail("backend saw X-Odd %q on a request without it", v)
		}
		eq("backend X-Forwarded-For", h["X-Forwarded-For"], []string{"127.0.0.1"})
		eq("backend X-Forwarded-Proto", h["X-Forwarded-Proto"], []string{"http"})
		eq("backend X-Forwarded-Host", h["X-Forwarded-Host"], []string{want.host})
		eq("backend Via", h["Via"], []string{want.reqVia})
		if f := h["Forwarded"]; len(f) != 1 || !strings.HasPrefix(f[0], "for=127.0.0.1;proto=http") {
			fail("backend Forwarded = %q; want one for=127.0.0.1;proto=http...", f)
		}
		if tp := h["Traceparent"]; len(tp) != 1 {
			fail("backend Traceparent = %q; want one", tp)
		}
		if s.trailer {
			eq("backend trailer X-Sent-Trailer", e.Trailer["X-Sent-Trailer"], []string{s.id})
		} else if v := e.Trailer["X-Sent-Trailer"]; v != nil {
			fail("backend saw trailer X-Sent-Trailer %q on a request that sent none", v)
		}
	}
	if len(errs) > 0 {
		what := s.method + " " + s.path()
		if s.chunked {
			what += " (chunked body)"
		}
		return fmt.Errorf("%s:\n\t%s", what, strings.Join(errs, "\n\t"))
	}
	return nil
}

// reuseErrors collects failures from many goroutines and reports the
// first few.
type reuseErrors struct {
	mu   sync.Mutex
	errs []error
}

func (r *reuseErrors) add(err error) {
	if err == nil {
		return
	}
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

func (r *reuseErrors) report(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, err := range r.errs {
		if i == 10 {
			t.Errorf("... and %d more failures", len(r.errs)-i)
			break
		}
		t.Error(err)
	}
}

// reuseH2CClient speaks HTTP/2 with prior knowledge over one connection.
func reuseH2CClient(t *testing.T) *http.Client {
	t.Helper()
	c := newH2CClient(t)
	c.Timeout = 10 * time.Second
	return c
}

// sendSpec sends s with c and checks the answer.
func sendSpec(c *http.Client, base string, s *reuseSpec, want reuseWant) error {
	resp, err := c.Do(s.request(base))
	if err != nil {
		return fmt.Errorf("%s %s: %v", s.method, s.path(), err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("%s %s: reading the body: %v", s.method, s.path(), err)
	}
	return s.check(resp, body, want)
}

// runReuseClients runs len(clients) goroutines, each sending perClient
// requests of every kind in turn with its client, and returns the
// requests sent.
func runReuseClients(clients []*http.Client, base, prefix string, perClient int, want reuseWant, kinds []int, errs *reuseErrors) []*reuseSpec {
	var mu sync.Mutex
	var all []*reuseSpec
	var wg sync.WaitGroup
	for ci, c := range clients {
		wg.Go(func() {
			for n := range perClient {
				s := newReuseSpec(prefix, ci, n, kinds[(ci+n)%len(kinds)])
				mu.Lock()
				all = append(all, s)
				mu.Unlock()
				errs.add(sendSpec(c, base, s, want))
			}
		})
	}
	wg.Wait()
	return all
}

// runReusePipelined opens conns raw connections and on each writes batches
// of requests of every kind in one write, then reads the answers in
// order.
func runReusePipelined(addr, prefix string, conns, batches int, want reuseWant, errs *reuseErrors) []*reuseSpec {
	var mu sync.Mutex
	var all []*reuseSpec
	var wg sync.WaitGroup
	for ci := range conns {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				errs.add(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			n := 0
			for range batches {
				var specs []*reuseSpec
				var buf strings.Builder
				for k := range numReuseKinds {
					s := newReuseSpec(prefix, ci, n, (k+ci)%numReuseKinds)
					s.hop = n%3 == 0
					n++
					specs = append(specs, s)
					buf.WriteString(s.raw(want.host))
				}
				mu.Lock()
				all = append(all, specs...)
				mu.Unlock()
				if _, err := io.WriteString(c, buf.String()); err != nil {
					errs.add(fmt.Errorf("pipelined connection %d: write: %v", ci, err))
					return
				}
				for _, s := range specs {
					resp, err := http.ReadResponse(br, &http.Request{Method: s.method})
					if err != nil {
						errs.add(fmt.Errorf("pipelined %s %s: %v", s.method, s.path(), err))
						return
					}
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil {
						errs.add(fmt.Errorf("pipelined %s %s: body: %v", s.method, s.path(), err))
						return
					}
					if resp.Close {
						errs.add(fmt.Errorf("pipelined %s %s: the answer closes the connection", s.method, s.path()))
						return
					}
					errs.add(s.check(resp, body, want))
				}
			}
		})
	}
	wg.Wait()
	return all
}

// reuseLog is an slog handler keeping the access log's records.
type reuseLog struct {
	mu   sync.Mutex
	recs []map[string]any
}

func (l *reuseLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *reuseLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *reuseLog) WithGroup(string) slog.Handler            { return l }

func (l *reuseLog) Handle(_ context.Context, r slog.Record) error {
	m := map[string]any{}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.Any()
		return true
	})
	l.mu.Lock()
	l.recs = append(l.recs, m)
	l.mu.Unlock()
	return nil
}

func (l *reuseLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs)
}

// reset forgets the records kept so far.
func (l *reuseLog) reset() {
	l.mu.Lock()
	l.recs = nil
	l.mu.Unlock()
}

// verify checks that every request has exactly one record, with its own
// path, method and status and the number of attempts it took.
func (l *reuseLog) verify(t *testing.T, specs []*reuseSpec, attempts int) {
	t.Helper()
	// The record is written as the handler ends, which may be just after
	// the client has the whole answer; missing ones are reported below.
	for deadline := time.Now().Add(2 * time.Second); l.count() < len(specs) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	byID := map[string][]map[string]any{}
	for _, r := range l.recs {
		id, _ := r["request_id"].(string)
		byID[id] = append(byID[id], r)
	}
	bad := 0
	for _, s := range specs {
		recs := byID[s.id]
		var err string
		switch {
		case len(recs) != 1:
			err = fmt.Sprintf("%d records; want 1", len(recs))
		case recs[0]["path"] != s.path() || recs[0]["method"] != s.method || recs[0]["status"] != int64(200):
			err = fmt.Sprintf("record path=%v method=%v status=%v; want %s %s 200", recs[0]["path"], recs[0]["method"], recs[0]["status"], s.path(), s.method)
		case attempts > 1 && recs[0]["attempts"] != int64(attempts):
			err = fmt.Sprintf("record attempts=%v; want %d", recs[0]["attempts"], attempts)
		case attempts == 1 && recs[0]["attempts"] != nil:
			err = fmt.Sprintf("record attempts=%v; want none (one attempt)", recs[0]["attempts"])
		case recs[0]["error"] != nil:
			err = fmt.Sprintf("record error=%v; want none", recs[0]["error"])
		}
		if err != "" {
			if bad++; bad <= 10 {
				t.Errorf("access log for %s: %s", s.id, err)
			}
		}
	}
	if len(l.recs) != len(specs) {
		t.Errorf("access log has %d records; want %d (one per request)", len(l.recs), len(specs))
	}
}

func withReuseLog() (gatewaySetup, *reuseLog) {
	l := &reuseLog{}
	return gatewaySetup{opts: Options{AccessLog: slog.New(l)}}, l
}

// Many keep-alive HTTP/1.1 clients at once, and pipelined batches on raw
// connections, each request with header names, values, path and query of
// its own, with and without bodies (Content-Length and chunked, with
// trailers), HEAD among them: each gets exactly its own echo and its own
// response fields, and the access log one record each. Anything a request
// leaves in the connection's header maps, the map lent to the upstream
// response or a pooled call shows up in another's answer.
func TestReuseConcurrentKeepAliveNoCrossTalk(t *testing.T) {
	be := newBackend(t, reuseEchoHandler)
	setup, log := withReuseLog()
	gw := startGatewayWith(t, setup, oneRoute(be.URL, ""))
	var errs reuseErrors
	clients := make([]*http.Client, 12)
	for i := range clients {
		clients[i] = newClient(t)
	}
	kinds := []int{kindGet, kindPostLength, kindGetChunkedResp, kindHead, kindPostChunked, kindGet}
	specs := runAll(
		func() []*reuseSpec {
			return runReuseClients(clients, gw.url, "k", 24, reuseWant{host: gw.addr, reqVia: "1.1 meridian", respVia: "1.1 meridian", proto: 1}, kinds, &errs)
		},
		func() []*reuseSpec {
			return runReusePipelined(gw.addr, "p", 4, 4, reuseWant{host: "x", reqVia: "1.1 meridian", respVia: "1.1 meridian", proto: 1}, &errs)
		},
	)
	checkReuse(t, &errs, log, specs)
}

// runAll runs the senders at once and gathers the requests they sent.
func runAll(runs ...func() []*reuseSpec) []*reuseSpec {
	var (
		specs []*reuseSpec
		wg    sync.WaitGroup
		mu    sync.Mutex
	)
	for _, run := range runs {
		wg.Go(func() {
			s := run()
			mu.Lock()
			specs = append(specs, s...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return specs
}

// checkReuse reports the senders' errors and, if there were none, checks
// that each request has its one access-log record.
func checkReuse(t *testing.T, errs *reuseErrors, log *reuseLog, specs []*reuseSpec) {
	t.Helper()
	errs.report(t)
	if t.Failed() {
		return
	}
	log.verify(t, specs, 1)
}

// The same over HTTP/2 with prior knowledge: many streams at once on one
// client connection, to an HTTP/1.1 upstream. Each stream's call comes
// from the pool while others are in flight.
func TestReuseH2CClientToHTTP1Upstream(t *testing.T) {
	be := newBackend(t, reuseEchoHandler)
	setup, log := withReuseLog()
	gw := startGatewayWith(t, setup, oneRoute(be.URL, ""))
	h2 := reuseH2CClient(t)
	clients := make([]*http.Client, 32)
	for i := range clients {
		clients[i] = h2 // one connection, many streams
	}
	var errs reuseErrors
	kinds := []int{kindGet, kindPostLength, kindHead, kindPostChunked, kindGetChunkedResp}
	specs := runReuseClients(clients, gw.url, "h", 8, reuseWant{host: gw.addr, reqVia: "2 meridian", respVia: "1.1 meridian", proto: 1}, kinds, &errs)
	checkReuse(t, &errs, log, specs)
}

// An h2c service: the gateway materializes the outbound header map from
// its edits for net/http's transport, for HTTP/1.1 clients (whose request
// header map is the connection's, reused) and HTTP/2 clients at once.
func TestReuseH2CUpstream(t *testing.T) {
	be := newH2CBackend(t, reuseEchoHandler)
	setup, log := withReuseLog()
	gw := startGatewayWith(t, setup, oneRouteService(be.URL, "    protocol: h2c"))
	h1 := make([]*http.Client, 8)
	for i := range h1 {
		h1[i] = newClient(t)
	}
	h2c := reuseH2CClient(t)
	h2 := make([]*http.Client, 16)
	for i := range h2 {
		h2[i] = h2c
	}
	kinds := []int{kindGet, kindPostLength, kindHead, kindPostChunked, kindGetChunkedResp}
	var errs reuseErrors
	specs := runAll(
		func() []*reuseSpec {
			return runReuseClients(h1, gw.url, "a", 15, reuseWant{host: gw.addr, reqVia: "1.1 meridian", respVia: "2 meridian", proto: 2}, kinds, &errs)
		},
		func() []*reuseSpec {
			return runReuseClients(h2, gw.url, "b", 8, reuseWant{host: gw.addr, reqVia: "2 meridian", respVia: "2 meridian", proto: 2}, kinds, &errs)
		},
		func() []*reuseSpec {
			return runReusePipelined(gw.addr, "c", 2, 3, reuseWant{host: "x", reqVia: "1.1 meridian", respVia: "2 meridian", proto: 2}, &errs)
		},
	)
	checkReuse(t, &errs, log, specs)
}

// A backend answers the first attempt of every request 503 with fields of
// its own, and the second an Early Hints response and then the echo. The
// map the connection lends to the upstream response is filled by each of
// these heads in turn: the client must see the final response's fields
// only, never the 503's or the 103's.
func TestReuseRetryRefillsResponseHeader(t *testing.T) {
	var seen sync.Map // id -> *atomic.Int32
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Reuse-Id")
		v, _ := seen.LoadOrStore(id, new(atomic.Int32))
		h := w.Header()
		if v.(*atomic.Int32).Add(1) == 1 {
			io.Copy(io.Discard, r.Body)
			h.Set("X-Attempt", "1")
			h.Set("X-First-Only", id)
			h.Set("Set-Cookie", "first="+id)
			h["X-Echo-Multi"] = []string{"first-1", "first-2", "first-3"}
			if name := r.Header.Get("X-Want-Resp"); name != "" {
				h.Set(name, "first")
			}
			h.Set("X-Resp-First-Attempt", id)
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "try again")
			return
		}
		h.Set("Link", "</early/"+id+">; rel=preload")
		h.Set("X-Early-Only", id)
		w.WriteHeader(http.StatusEarlyHints)
		h.Del("Link")
		h.Del("X-Early-Only")
		h.Set("X-Attempt", "2")
		reuseEchoHandler(w, r)
	})
	setup, log := withReuseLog()
	gw := startGatewayWith(t, setup, oneRouteService(be.URL, `    retries:
      attempts: 2
      on: ["503"]
      backoff: {base: 1ms, max: 1ms}
      budget: {ratio: 1, min_per_second: 10000}`))
	clients := make([]*http.Client, 8)
	for i := range clients {
		clients[i] = newClient(t)
	}
	want := reuseWant{host: gw.addr, reqVia: "1.1 meridian", respVia: "1.1 meridian", proto: 1}
	var errs reuseErrors
	var mu sync.Mutex
	var specs []*reuseSpec
	var wg sync.WaitGroup
	kinds := []int{kindGet, kindPutLength, kindHead, kindGetChunkedResp}
	for ci, c := range clients {
		wg.Go(func() {
			for n := range 12 {
				s := newReuseSpec("r", ci, n, kinds[(ci+n)%len(kinds)])
				mu.Lock()
				specs = append(specs, s)
				mu.Unlock()
				resp, err := c.Do(s.request(gw.url))
				if err != nil {
					errs.add(err)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					errs.add(err)
					continue
				}
				errs.add(s.check(resp, body, want))
				var extra []string
				if v := resp.Header["X-Attempt"]; !slices.Equal(v, []string{"2"}) {
					extra = append(extra, fmt.Sprintf("X-Attempt = %q; want [\"2\"] (the final response's alone)", v))
				}
				for _, k := range []string{"X-First-Only", "Set-Cookie", "Link", "X-Early-Only"} {
					if v := resp.Header[k]; v != nil {
						extra = append(extra, fmt.Sprintf("%s = %q, a field of an earlier head (503 or 103)", k, v))
					}
				}
				if len(extra) > 0 {
					errs.add(fmt.Errorf("%s %s:\n\t%s", s.method, s.path(), strings.Join(extra, "\n\t")))
				}
			}
		})
	}
	wg.Wait()
	errs.report(t)
	for _, s := range specs {
		v, ok := seen.Load(s.id)
		if !ok || v.(*atomic.Int32).Load() != 2 {
			n := int32(0)
			if ok {
				n = v.(*atomic.Int32).Load()
			}
			t.Errorf("%s %s reached the backend %d times; want 2", s.method, s.id, n)
		}
	}
	if t.Failed() {
		return
	}
	log.verify(t, specs, 2)
}

// An upstream answers before it has read a request body (an early 413):
// the gateway's body writer may still be reading the client's body when
// the request ends and the next one on the connection begins. The next
// requests on that client connection (or, if the answer said it closes,
// on a new one) get their own answers.
func TestReuseEarlyAnswerThenMoreRequests(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if id, ok := strings.CutPrefix(r.URL.Path, "/early/"); ok {
			w.Header().Set("X-Early-Id", id)
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			io.WriteString(w, "early "+id)
			return // the body is left unread
		}
		reuseEchoHandler(w, r)
	})
	gw := startGateway(t, oneRoute(be.URL, "    limits:\n      max_request_body: 64MiB\n"))
	want := reuseWant{host: gw.addr, reqVia: "1.1 meridian", respVia: "1.1 meridian", proto: 1}
	var errs reuseErrors
	early := func(resp *http.Response, body []byte, id string) error {
		if resp.StatusCode != http.StatusRequestEntityTooLarge || string(body) != "early "+id || !slices.Equal(resp.Header["X-Early-Id"], []string{id}) {
			return fmt.Errorf("early %s: got %d %q X-Early-Id %q; want 413 %q with its own id", id, resp.StatusCode, body, resp.Header["X-Early-Id"], "early "+id)
		}
		for k := range resp.Header {
			if strings.HasPrefix(k, "X-Resp-") || strings.HasPrefix(k, "X-Echo-") {
				return fmt.Errorf("early %s: the answer has %s, another response's field", id, k)
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	// net/http clients: a large body (the gateway gives up the
	// connection), a small one (it may keep it) and a chunked one, each
	// followed by requests that must get their own echoes.
	for ci := range 4 {
		wg.Go(func() {
			c := newClient(t)
			for round := range 4 {
				id := fmt.Sprintf("e%d-%d-%08x", ci, round, rand.Uint32())
				size := []int{1 << 20, 100 << 10, 300 << 10, 20 << 10}[(ci+round)%4]
				var body io.Reader = bytes.NewReader(make([]byte, size))
				chunked := round%2 == 1
				if chunked {
					body = io.NopCloser(body)
				}
				req, _ := http.NewRequest(http.MethodPost, gw.url+"/early/"+id, body)
				if chunked {
					req.ContentLength = -1
				}
				req.Header.Set("X-Reuse-Id", id)
				resp, err := c.Do(req)
				if err != nil {
					errs.add(fmt.Errorf("early %s (%d bytes): %v", id, size, err))
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					err = early(resp, b, id)
				}
				errs.add(err)
				for n, kind := range []int{kindGet, kindPostLength, kindHead, kindGetChunkedResp} {
					errs.add(sendSpec(c, gw.url, newReuseSpec("f", ci, round*10+n, kind), want))
				}
			}
		})
	}
	// Raw connections: the early request's small body and the next
	// request go in one write, so the next request waits in the buffer
	// while the gateway's body writer may still read the body before it.
	var kept, closed atomic.Int32
	for ci := range 4 {
		wg.Go(func() {
			for round := range 5 {
				c, err := net.DialTimeout("tcp", gw.addr, 5*time.Second)
				if err != nil {
					errs.add(err)
					return
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				id := fmt.Sprintf("g%d-%d-%08x", ci, round, rand.Uint32())
				size := []int{64 << 10, 4 << 20, 8 << 10, 200 << 10}[(ci+round)%4]
				next := newReuseSpec("n", ci, round, []int{kindGet, kindPostLength, kindPostChunked}[round%3])
				next.hop = true
				// Written while the answer is read: the answer may come
				// before the body is all sent.
				wrote := make(chan error, 1)
				go func() {
					_, err := io.WriteString(c, fmt.Sprintf("POST /early/%s HTTP/1.1\r\nHost: x\r\nX-Reuse-Id: %s\r\nContent-Length: %d\r\n\r\n%s", id, id, size, strings.Repeat("z", size))+next.raw("x"))
					wrote <- err
				}()
				resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
				if err != nil {
					errs.add(fmt.Errorf("raw early %s: %v", id, err))
					c.Close()
					<-wrote
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					err = early(resp, b, id)
				}
				errs.add(err)
				if resp.Close {
					closed.Add(1)
					// The gateway reads and drops what is still coming for a
					// moment before it closes; once all is written, the
					// half-close ends that at once.
					if err := <-wrote; err != nil {
						t.Logf("raw early %s: writing after an answer that closes: %v", id, err)
					}
					c.(*net.TCPConn).CloseWrite()
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					if n, _ := io.Copy(io.Discard, br); n > 0 {
						errs.add(fmt.Errorf("raw early %s: %d bytes after an answer that closes the connection", id, n))
					}
					c.Close()
					continue
				}
				kept.Add(1)
				if err := <-wrote; err != nil {
					errs.add(fmt.Errorf("raw early %s: the answer keeps the connection, but writing the rest failed: %v", id, err))
					c.Close()
					continue
				}
				resp, err = http.ReadResponse(br, &http.Request{Method: next.method})
				if err != nil {
					errs.add(fmt.Errorf("raw: the request after early %s on a connection kept alive: %v", id, err))
					c.Close()
					continue
				}
				b, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					errs.add(fmt.Errorf("raw: the request after early %s: body: %v", id, err))
				} else {
					errs.add(next.check(resp, b, reuseWant{host: "x", reqVia: "1.1 meridian", respVia: "1.1 meridian", proto: 1}))
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	t.Logf("raw connections after an early answer: %d kept, %d closed", kept.Load(), closed.Load())
	errs.report(t)
}

// A response-header timeout of 200ms, with answers whose heads come at
// once or within it but whose bodies trickle in for longer, over many
// requests on pooled upstream connections: the deadline left in place
// after a head must neither cut a slow body nor fail a later head that
// arrives in time; a head that does not arrive in time is a 504.
func TestReuseResponseHeaderDeadlineAcrossRequests(t *testing.T) {
	const piece = 512
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		id := q.Get("id")
		wait := func(d time.Duration) bool {
			tm := time.NewTimer(d) // the backend's pace is the scenario
			defer tm.Stop()
			select {
			case <-tm.C:
				return true
			case <-r.Context().Done():
				return false
			}
		}
		w.Header().Set("X-Id", id)
		switch q.Get("mode") {
		case "late":
			if wait(700 * time.Millisecond) {
				io.WriteString(w, "late "+id)
			}
		case "near":
			if wait(80 * time.Millisecond) {
				io.WriteString(w, "near "+id)
			}
		case "trickle", "trickle-chunked":
			chunk := strings.Repeat(id[:1], piece)
			if q.Get("mode") == "trickle" {
				w.Header().Set("Content-Length", strconv.Itoa(4*piece))
			}
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			for range 4 {
				if !wait(90 * time.Millisecond) {
					return
				}
				io.WriteString(w, chunk)
				w.(http.Flusher).Flush()
			}
		default:
			io.WriteString(w, "fast "+id)
		}
	})
	gw := startGateway(t, oneRouteService(be.URL, "    timeouts: {response_header: 200ms}"))
	// request sends one request and checks a 200 with its own body.
	request := func(c *http.Client, mode, id string) error {
		resp, err := c.Get(gw.url + "/d?mode=" + mode + "&id=" + id)
		if err != nil {
			return fmt.Errorf("%s %s: %v", mode, id, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := mode + " " + id
		if strings.HasPrefix(mode, "trickle") {
			want = strings.Repeat(id[:1], 4*piece)
		}
		if err != nil || resp.StatusCode != 200 || string(body) != want || resp.Header.Get("X-Id") != id {
			return fmt.Errorf("%s %s: got %d, %d body bytes %.60q (read error %v, X-Id %q); want 200, %d bytes %.60q", mode, id, resp.StatusCode, len(body), body, err, resp.Header.Get("X-Id"), len(want), want)
		}
		return nil
	}
	var errs reuseErrors
	var wg sync.WaitGroup
	seq := []string{"trickle", "fast", "fast", "near", "near", "trickle-chunked", "fast", "near"}
	for ci := range 6 {
		wg.Go(func() {
			c := newClient(t)
			for n, mode := range seq[ci%2:] {
				errs.add(request(c, mode, fmt.Sprintf("%c%d-%d", 'a'+ci, ci, n)))
			}
		})
	}
	wg.Wait()
	errs.report(t)

	// One at a time, so that each request gets the connection the one
	// before used: heads within the timeout one after the other, and a
	// late head after a slow body, which must still time out.
	c := newClient(t)
	for n, mode := range []string{"fast", "near", "near", "near", "near", "trickle"} {
		if err := request(c, mode, fmt.Sprintf("s-%d", n)); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	resp, body := get(t, c, gw.url+"/d?mode=late&id=late")
	elapsed := time.Since(start)
	checkProblem(t, resp, body, http.StatusGatewayTimeout, "http_response_timeout")
	if elapsed < 150*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("the late head was given up after %v; want about the 200ms timeout", elapsed)
	}
	if err := request(c, "fast", "after-late"); err != nil {
		t.Errorf("after the timeout: %v", err)
	}
}

// Requests longer than the disconnect watch's delay (50ms), short ones,
// idle gaps in which the watch's timer (armed across requests) fires with
// no request in flight, and pipelined pairs, on several keep-alive
// connections; meanwhile clients leave in the middle of a request, one on
// a fresh connection and one after requests of its own. The backend's
// request is canceled for those that left, and never for the others.
func TestReuseDisconnectWatchAcrossRequests(t *testing.T) {
	var mu sync.Mutex
	outcomes := map[string]string{}
	entered := make(chan string, 8)
	canceled := make(chan string, 8)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		if strings.HasPrefix(id, "leave") {
			entered <- id
		}
		outcome := "done"
		if d > 0 {
			tm := time.NewTimer(d) // the request's length is the scenario
			select {
			case <-tm.C:
			case <-r.Context().Done():
				outcome = "canceled"
			}
			tm.Stop()
		}
		mu.Lock()
		outcomes[id] = outcome
		mu.Unlock()
		if outcome == "canceled" {
			canceled <- id
			return
		}
		io.WriteString(w, id+" "+outcome)
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	reqLine := func(id string, d time.Duration) string {
		return fmt.Sprintf("GET /w?id=%s&d=%s HTTP/1.1\r\nHost: x\r\nX-Req-%s: v\r\n\r\n", id, d, id)
	}
	expect := func(br *bufio.Reader, id string) error {
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
		if err != nil {
			return fmt.Errorf("%s: %v", id, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(body) != id+" done" || resp.Close {
			return fmt.Errorf("%s: got %d %q (err %v, close %v); want 200 %q on a kept connection", id, resp.StatusCode, body, err, resp.Close, id+" done")
		}
		return nil
	}
	var errs reuseErrors
	var stayed []string
	var smu sync.Mutex
	var wg sync.WaitGroup
	for ci := range 4 {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", gw.addr, 5*time.Second)
			if err != nil {
				errs.add(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			for n := range 10 {
				id := fmt.Sprintf("s%dx%d", ci, n)
				var ids []string
				switch (n + ci) % 4 {
				case 0: // longer than the watch's delay
					ids = []string{id}
					io.WriteString(c, reqLine(id, 80*time.Millisecond))
				case 1: // short, right after
					ids = []string{id}
					io.WriteString(c, reqLine(id, 0))
				case 2: // short, after an idle gap in which the timer fires
					time.Sleep(70 * time.Millisecond) // the gap is the scenario
					ids = []string{id}
					io.WriteString(c, reqLine(id, 0))
				case 3: // a long one with a short one pipelined behind it
					ids = []string{id + "a", id + "b"}
					io.WriteString(c, reqLine(ids[0], 70*time.Millisecond)+reqLine(ids[1], 0))
				}
				smu.Lock()
				stayed = append(stayed, ids...)
				smu.Unlock()
				for _, id := range ids {
					if err := expect(br, id); err != nil {
						errs.add(err)
						return
					}
				}
			}
		})
	}
	// leave sends a request that would take long, waits for the backend
	// to have it, and hangs up.
	leave := func(c net.Conn, id string) {
		io.WriteString(c, reqLine(id, 5*time.Second))
		select {
		case got := <-entered:
			if got != id {
				errs.add(fmt.Errorf("backend entered %s; want %s", got, id))
			}
		case <-time.After(5 * time.Second):
			errs.add(fmt.Errorf("%s never reached the backend", id))
		}
		c.Close()
	}
	var left []string
	// One at a time, so that each leaver's entry is its own.
	wg.Go(func() {
		c, err := net.DialTimeout("tcp", gw.addr, 5*time.Second)
		if err != nil {
			errs.add(err)
			return
		}
		leave(c, "leave-fresh")
		left = append(left, "leave-fresh")
		c, err = net.DialTimeout("tcp", gw.addr, 5*time.Second)
		if err != nil {
			errs.add(err)
			return
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for n, d := range []time.Duration{0, 80 * time.Millisecond, 0} {
			id := fmt.Sprintf("before-leave-%d", n)
			smu.Lock()
			stayed = append(stayed, id)
			smu.Unlock()
			io.WriteString(c, reqLine(id, d))
			if err := expect(br, id); err != nil {
				errs.add(err)
				c.Close()
				return
			}
		}
		leave(c, "leave-after-requests")
		left = append(left, "leave-after-requests")
	})
	wg.Wait()
	errs.report(t)
	got := map[string]bool{}
	deadline := time.After(3 * time.Second)
	for len(got) < len(left) {
		select {
		case id := <-canceled:
			got[id] = true
		case <-deadline:
			t.Fatalf("backend requests canceled: %v; want %v (the clients left)", got, left)
		}
	}
	for _, id := range left {
		if !got[id] {
			t.Errorf("%s: the backend's request was not canceled after the client left", id)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range stayed {
		if o := outcomes[id]; o != "done" {
			t.Errorf("%s: backend outcome %q; want done (its client stayed)", id, o)
		}
	}
	for id, o := range outcomes {
		if o == "canceled" && !strings.HasPrefix(id, "leave") {
			t.Errorf("%s was canceled; its client stayed", id)
		}
	}
}

// A bodyless request that reached the upstream on a pooled connection the
// upstream then closed without a byte of answer is sent again on a new
// connection only if that is safe: an idempotent method, or one with an
// idempotency key (as net/http's Transport does). A POST is not sent twice.
func TestStaleConnectionResendsOnlyReplayableRequests(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	addr := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		key := req.Method + " " + req.URL.Path
		mu.Lock()
		seen[key]++
		n := seen[key]
		mu.Unlock()
		if req.URL.Path != "/warm" && n == 1 {
			return false // read, then closed unanswered: as a stale connection looks
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	gw := startGateway(t, oneRoute("http://"+addr, ""))
	for _, tc := range []struct {
		method, path, extra string
		status, sent        int
	}{
		{"POST", "/post", "", http.StatusBadGateway, 1},
		{"POST", "/keyed", "Idempotency-Key: k1\r\n", 200, 2},
		{"POST", "/empty-key", "Idempotency-Key: \r\n", http.StatusBadGateway, 1},
		{"POST", "/second-key", "Idempotency-Key: \r\nIdempotency-Key: k3\r\n", 200, 2},
		{"GET", "/get", "", 200, 2},
		{"DELETE", "/delete", "", 200, 2},
	} {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "GET /warm HTTP/1.1\r\nHost: x\r\n\r\n") // a pooled connection to reuse
		if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != 200 {
			t.Fatalf("warm-up: %d", resp.StatusCode)
		}
		h1Write(t, c, tc.method+" "+tc.path+" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"+tc.extra+"\r\n")
		resp, _ := readResponse(t, br, tc.method)
		mu.Lock()
		sent := seen[tc.method+" "+tc.path]
		mu.Unlock()
		if resp.StatusCode != tc.status || sent != tc.sent {
			t.Errorf("%s %s: status %d, sent upstream %d times; want %d, %d", tc.method, tc.path, resp.StatusCode, sent, tc.status, tc.sent)
		}
		c.Close()
	}
}

// TestBytesBeyondTheResponseCloseTheConnection: an upstream that sends more
// than its response says (a second, unasked response; a Content-Length
// too small) must not have those bytes taken for the answer to the next
// request sent on the connection, whether they came into the read buffer
// with the response or stayed in the socket (a body read straight into the
// caller's buffer reads no further than its length).
func TestBytesBeyondTheResponseCloseTheConnection(t *testing.T) {
	for _, c := range []struct {
		name string
		size int
		tail string
	}{
		{"unasked response, small body", 10, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"},
		{"unasked response, large body", 70000, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"},
		{"length too small, large body", 70000, "12345678"},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := rawKeepAlive(t, func(w net.Conn, req *http.Request) bool {
				if req.Header.Get("X-First") == "" {
					// A later request: its own answer.
					io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
					return true
				}
				body := strings.Repeat("b", c.size)
				// The answer and what follows it in one write.
				io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(c.size)+"\r\n\r\n"+body+c.tail)
				return true
			})
			tg := startGateway(t, fmt.Sprintf(`
services:
  - name: s
    targets: [{url: "http://%s"}]
routes:
  - {name: r, match: {path_prefix: /}, service: s}
`, up))
			for i := 0; i < 5; i++ {
				req, _ := http.NewRequest("GET", "http://"+tg.addr+"/first", nil)
				req.Header.Set("X-First", "1")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if len(b) != c.size {
					t.Fatalf("first answer: %d bytes; want %d", len(b), c.size)
				}
				resp, err = http.Get("http://" + tg.addr + "/next")
				if err != nil {
					t.Fatal(err)
				}
				b, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "good" {
					t.Fatalf("round %d: the next request got %d %q; want 200 \"good\" (its own answer)", i, resp.StatusCode, b)
				}
			}
		})
	}
}

// Bytes that come while a connection sits in the pool, after its answer was
// read whole, belong to no request: a second answer sent late, a body
// after the answer to a HEAD or a 304. The next request must not take them
// for its own answer (whose answer would then go to the request after it,
// and so on, each client getting another's). The upstream says when the
// late bytes are in the gateway's socket; the next request comes soon
// after, well before a pooled connection's idle look (aliveCheckAfter).
func TestLateBytesInThePoolAreNobodysAnswer(t *testing.T) {
	for _, c := range []struct{ name, first, late string }{
		{"second answer", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nmine", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"},
		{"body after a 304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\n", "EVIL"},
		{"body after a 204", "HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sent := make(chan struct{}, 1)
			up := rawKeepAlive(t, func(w net.Conn, req *http.Request) bool {
				if req.Header.Get("X-First") == "" {
					io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
					return true
				}
				io.WriteString(w, c.first)
				go func() {
					time.Sleep(20 * time.Millisecond) // after the gateway has pooled the connection
					io.WriteString(w, c.late)
					sent <- struct{}{}
				}()
				return true
			})
			tg := startGateway(t, oneRoute("http://"+up, ""))
			client := newClient(t)
			for i := 0; i < 5; i++ {
				req, _ := http.NewRequest("GET", "http://"+tg.addr+"/first", nil)
				req.Header.Set("X-First", "1")
				resp, _ := do(t, client, req)
				if resp.StatusCode >= 500 {
					t.Fatalf("first request: %d", resp.StatusCode)
				}
				recv(t, sent, "the late bytes")
				// Let loopback deliver them (the write has returned; the
				// gateway's socket holds them when its queue says so).
				waitFor(t, 5*time.Second, "the late bytes to arrive", func() bool { return pooledBytesWaiting(tg.g) })
				resp, b := get(t, client, "http://"+tg.addr+"/next")
				if resp.StatusCode != 200 || string(b) != "good" {
					t.Fatalf("round %d: the next request got %d %q; want 200 \"good\" (its own answer)", i, resp.StatusCode, b)
				}
			}
		})
	}
}

// pooledBytesWaiting reports whether a connection in one of g's HTTP/1
// pools has bytes waiting in its socket.
func pooledBytesWaiting(g *Gateway) bool {
	g.tmu.Lock()
	defer g.tmu.Unlock()
	for _, t := range g.transports {
		h1, ok := t.(*h1Transport)
		if !ok {
			continue
		}
		h1.mu.Lock()
		for _, list := range h1.idle {
			for _, pc := range list.conns {
				if n, _ := recvQueued(pc.conn); n > 0 {
					h1.mu.Unlock()
					return true
				}
			}
		}
		h1.mu.Unlock()
	}
	return false
}

// A 1xx that announces a body (Content-Length) leaves the framing in
// doubt, as a 204 that does: the connection it came on is not reused,
// though the final answer after it is well framed. Each connection here
// answers one request, then reads and drops whatever comes (a second
// request on it would wait out its response header timeout).
func TestInterimAnnouncingABodyClosesTheConnection(t *testing.T) {
	var conns atomic.Int32
	up := rawUpstream(t, func(c net.Conn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 102 Processing\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		io.Copy(io.Discard, br)
	})
	tg := startGateway(t, fmt.Sprintf(`
services:
  - name: s
    targets: [{url: "http://%s"}]
    timeouts: {response_header: 2s}
routes:
  - {name: r, match: {path_prefix: /}, service: s}
`, up))
	for i := 0; i < 3; i++ {
		resp, body := get(t, http.DefaultClient, "http://"+tg.addr+"/x")
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("request %d: %d %q; want 200 \"ok\"", i, resp.StatusCode, body)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("%d upstream connections for 3 requests; want 3 (none reused after the 1xx)", n)
	}
}
