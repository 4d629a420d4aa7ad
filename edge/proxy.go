package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meridian-gw/meridian/edge/router"
	"github.com/meridian-gw/meridian/edge/upstream"
)

// exchange is the state of one proxied request, for the access log and
// metrics.
type exchange struct {
	start time.Duration // monoNow at the start
	// end, if set, is the monoNow that record takes for the end: the
	// lane's reading when the upstream's whole answer came, which its
	// writing to the client's buffer follows at once (one clock read
	// fewer per request).
	end time.Duration
	// lean: the answer came plain to a lean request (h1lean.go); its
	// fields are in lean.respHead.
	lean        *outHeader
	reqID       string
	traceID     string
	clientIP    netip.Addr
	clientIPStr string // clientIP's text, or "" when unknown
	trusted     bool   // the peer is one of the trusted proxies
	// origin is the client's address as trusted proxies forwarded it
	// (X-Forwarded-For), when the peer is one of them and it differs.
	origin      string
	host        string
	route       *route
	target      string
	status      int
	bytesIn     int64
	bytesOut    int64
	upstreamDur time.Duration
	// upstreamHead: an attempt got a response head (the upstream time is
	// only observed then: a refused connection or a client's stalled
	// body is no measure of the service).
	upstreamHead bool
	attempts     int
	retriedOn    string // why each retried attempt failed, comma-separated
	// retryRefused: the retry budget refused a retry the policy allowed.
	retryRefused bool
	errKind      string
	errDetail    string // the cause behind errKind, for the log only
	finished     bool
}

// identify fills what every answer's log line and metrics need: the start
// (the HTTP/1 server's reading when there is one), the client's request id
// when sane, and the host.
func (x *exchange) identify(r *http.Request) {
	if rc, ok := r.Context().(*requestContext); ok && rc.start != 0 {
		x.start = rc.start
	} else {
		x.start = monoNow()
	}
	// A request id is made only when something needs one (requestID):
	// with no access log, no problem answer and request_id off, none is.
	if id := firstValue(r.Header, "X-Request-Id"); validRequestID(id) && !headerHasToken(r.Header, "Connection", "x-request-id") {
		// (Named in Connection, it is the client's hop-by-hop field,
		// dropped: as if not sent, RFC 9110 7.6.1.)
		x.reqID = id
	}
	x.host = normalizeHost(r.Host)
}

// ServeHTTP proxies one request: identify it, match a route, pick a target,
// forward, and stream the answer back. Everything it needs comes from the
// snapshot loaded at its start, so a reload never changes a request midway.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	snap := g.snap.Load()
	c := calls.Get().(*call)
	x := &c.x
	x.identify(r)
	g.metrics.inFlightN.Add(1)
	g.identifyClient(x, r)
	// One deferred call and one return, so that the compiler inlines it
	// (an open-coded defer): serve's many returns would make each of its
	// defers a record on the stack and a walk of them at the end. It runs
	// on a panic too (http.ErrAbortHandler cuts a response short).
	defer g.done(r, c)
	g.serve(w, r, c, snap)
}

// done ends a request: its log line and metrics, then the call's reuse.
func (g *Gateway) done(r *http.Request, c *call) {
	g.finish(r, &c.x)
	g.metrics.inFlightN.Add(-1)
	c.release()
}

// serve is ServeHTTP's work, with the request's call and snapshot.
func (g *Gateway) serve(w http.ResponseWriter, r *http.Request, c *call, snap *Snapshot) {
	reqIn := r // the server's own, whose Trailer it may set (HTTP/3)
	x := &c.x

	if g.opts.MaxHeaderCount > 0 {
		n := 0
		if rc, ok := r.Context().(*requestContext); ok && rc.parsed {
			n = rc.headerValues // counted by the HTTP/1 parser
		} else {
			for _, v := range r.Header {
				n += len(v)
			}
		}
		if n > g.opts.MaxHeaderCount {
			g.fail(w, r, x, &proxyError{status: http.StatusRequestHeaderFieldsTooLarge, title: "Request Header Fields Too Large",
				detail: "the request has " + strconv.Itoa(n) + " header fields; the limit is " + strconv.Itoa(g.opts.MaxHeaderCount), close: true})
			return
		}
	}
	if g.opts.Underscores == UnderscoresAllow || g.opts.Underscores == "" {
		// Allowed, but for the spellings of the fields the gateway
		// frames, writes or guards (underscoreGuarded).
		for k := range r.Header {
			if strings.IndexByte(k, '_') >= 0 && underscoreGuarded(k) {
				delete(r.Header, k)
			}
		}
	}
	if u := g.opts.Underscores; u == UnderscoresDrop || u == UnderscoresReject {
		refused := "" // the first by name: the same answer every time
		for k := range r.Header {
			if strings.IndexByte(k, '_') < 0 {
				continue
			}
			if u == UnderscoresReject {
				if refused == "" || k < refused {
					refused = k
				}
				continue
			}
			delete(r.Header, k)
		}
		if refused != "" {
			g.fail(w, r, x, &proxyError{status: http.StatusBadRequest, title: "Bad Request",
				detail: "header field " + strconv.Quote(refused) + " has an underscore in its name, which this gateway refuses"})
			return
		}
	}
	if snap == nil {
		g.fail(w, r, x, &proxyError{status: http.StatusServiceUnavailable, proxyStatus: "proxy_configuration_error", title: "Service Unavailable", detail: "no configuration is loaded yet"})
		return
	}
	if r.Method == http.MethodConnect {
		// CONNECT asks for a tunnel to the authority it names: a forward
		// proxy's job. Relayed, it would reach the upstream as a request
		// with no path, and a client that took the answer for an open
		// tunnel would send bytes that are not HTTP.
		g.fail(w, r, x, &proxyError{status: http.StatusNotImplemented, title: "Not Implemented",
			detail: "CONNECT is not supported: this is a reverse proxy, not a forward proxy", close: true})
		return
	}
	if r.ProtoMajor >= 2 && !validHost(r.Host) { // HTTP/1's parser checked it (h1server.go)
		g.fail(w, r, x, &proxyError{status: http.StatusBadRequest, title: "Bad Request",
			detail: "the Host is not a valid host[:port] (RFC 9112 3.2)", close: true})
		return
	}
	if r.ProtoMajor >= 2 && !validPseudoPath(r.Method, r.RequestURI) { // HTTP/1's parser checked its target
		// :path is an absolute path and query, or * for OPTIONS (RFC
		// 9113 8.3.1, RFC 9114 4.3.1). A space would reach the upstream
		// in its request line, where it ends the target; a URI's
		// authority would be dropped while :authority routes.
		g.fail(w, r, x, &proxyError{status: http.StatusBadRequest, title: "Bad Request",
			detail: "the request's :path must be an absolute path and query without spaces or control characters (RFC 9113 8.3.1, RFC 9114 4.3.1)", close: true})
		return
	}
	if strings.IndexByte(r.RequestURI, '#') >= 0 {
		// A fragment is the client's own business and is never sent
		// (RFC 9112 3.2): forwarded, the upstream would read a
		// different path, or query, than the one routed.
		g.fail(w, r, x, &proxyError{status: http.StatusBadRequest, title: "Bad Request",
			detail: "the request target has a fragment ('#'), which clients do not send", close: true})
		return
	}
	path := r.URL.Path
	if path == "" {
		path = "/"
	}
	if strings.IndexByte(path, 0) >= 0 {
		// %00: a NUL reaching a backend written in C ends its path
		// early (nginx refuses it too).
		g.fail(w, r, x, &proxyError{status: http.StatusBadRequest, title: "Bad Request", detail: "the path holds an encoded NUL (%00)", close: true})
		return
	}
	if path[0] != '/' {
		g.fail(w, r, x, &proxyError{status: http.StatusBadRequest, title: "Bad Request", detail: "the request target must be an absolute path"})
		return
	}
	clean := removeDotSegments(path)
	mr := r
	if snap.table.ReadsHeaders() {
		mr = routeView(r, x.trusted)
	}
	m, ok := snap.table.Match(mr, x.host, clean)
	if !ok {
		g.fail(w, r, x, &proxyError{status: http.StatusNotFound, title: "Not Found", detail: "no route matches " + r.Method + " " + x.host + clean})
		return
	}
	rt := m.Route.Value.(*route)
	x.route = rt
	if r.Method == http.MethodTrace && !rt.allowTrace {
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		g.fail(w, r, x, &proxyError{status: http.StatusMethodNotAllowed, title: "Method Not Allowed",
			detail: "TRACE is refused unless route " + rt.name + " lists it in match.methods"})
		return
	}

	maxFwd := ""
	if r.Method == http.MethodOptions || r.Method == http.MethodTrace {
		// Max-Forwards (RFC 9110 7.6.2): at 0 the gateway is the
		// recipient and answers itself; else it goes on one less.
		if n, ok := maxForwards(r.Header); ok {
			if n == 0 {
				g.answerMaxForwards(w, r, x, rt)
				return
			}
			maxFwd = strconv.FormatUint(n-1, 10)
		}
	}
	if r.ContentLength > rt.maxReqBody {
		g.fail(w, r, x, &proxyError{status: http.StatusRequestEntityTooLarge, title: "Content Too Large",
			detail: "the request body of " + strconv.FormatInt(r.ContentLength, 10) + " bytes exceeds the route's limit of " + strconv.FormatInt(rt.maxReqBody, 10), close: true})
		return
	}
	svc := rt.svc
	if !svc.pool.Acquire() {
		g.fail(w, r, x, &proxyError{status: http.StatusServiceUnavailable, proxyStatus: "connection_limit_reached", title: "Service Unavailable",
			detail: "service " + svc.name + " has reached its limit of concurrent requests"})
		return
	}
	defer svc.pool.Release()

	outURL := rt.upstreamURL(r.URL, path, clean, m.Params)

	// The outbound header: the inbound one seen through the edits below
	// (the call's, reused), never a copy of it. The inbound fields are
	// read through it too (a scan of a few costs less than lookups).
	oh := &c.oh
	host := r.Host
	if rt.hostRewrite != "" {
		host = rt.hostRewrite
	}
	var upType string
	if !g.leanHead(w, oh, r, x, rt, host, &outURL) {
		oh.reset(r.Header)
		if hasToken(oh.conn, "upgrade") && r.ProtoAtLeast(1, 1) {
			// An HTTP/1.0 request's Upgrade is ignored (RFC 9110 7.8),
			// and dropped with the other fields its Connection names: a
			// 101 is not for an HTTP/1.0 client (15.2).
			upType = upgradeType(r.Header)
		}
		// Two traceparent fields are invalid (W3C): a new trace, as for none.
		var reqTraceparent string
		if v := oh.inbound("Traceparent"); len(v) == 1 && oh.forwards("Traceparent") { // not if named in Connection
			reqTraceparent = v[0]
		}
		if maxFwd != "" {
			oh.set("Max-Forwards", maxFwd)
		}
		wantTrailers := hasToken(oh.inbound("Te"), "trailers")
		if wantTrailers {
			oh.set("Te", "trailers")
		}
		if upType != "" {
			oh.set("Connection", "Upgrade")
			oh.set("Upgrade", firstValue(r.Header, "Upgrade"))
		}
		g.setForwarded(oh, r, x, svc)
		// Only the gateway vouches for client certificates.
		oh.del("X-Forwarded-Client-Cert")
		if g.clientAuth.Load() {
			if st := tlsState(r); st != nil && len(st.VerifiedChains) > 0 {
				oh.set("X-Forwarded-Client-Cert", clientCertHeader(st.VerifiedChains[0][0]))
				r = r.WithContext(context.WithValue(r.Context(), clientCertKey{}, st.VerifiedChains[0][0]))
			}
		}
		if !svc.noRequestID {
			oh.set("X-Request-Id", x.requestID())
		}
		if !svc.noTraceparent {
			tp, tid, kept := traceparent(reqTraceparent)
			x.traceID = tid
			oh.set("Traceparent", tp)
			if !kept {
				oh.del("Tracestate")
			}
		} else if tid, _, ok := parseTraceparent(reqTraceparent); ok {
			x.traceID = tid // the client's trace, passed on as it came
		}
		if !svc.noVia {
			oh.add("Via", g.via(r.ProtoMajor, r.ProtoMinor))
		}
		if !rt.reqOps.empty() {
			rt.reqOps.applyOut(oh)
		}
	}

	ctx := r.Context()
	if svc.total > 0 {
		if rc, ok := ctx.(*requestContext); ok {
			// The HTTP/1 server's request: its total as the span lane
			// makes it (a dozen allocations fewer than WithTimeout), the
			// timer armed at once (the disconnect watch does not look at
			// every request).
			tc := &totalContext{}
			tc.begin(rc, monoNow()+svc.total)
			tc.arm()
			ctx = tc
			defer tc.end()
		} else {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, svc.total)
			defer cancel()
		}
	}

	var body *countingBody
	var trailer http.Header
	if rb := requestBody(r); rb != nil {
		body = &countingBody{rc: http.MaxBytesReader(w, rb, rt.maxReqBody), idle: g.opts.ReadBodyTimeout, src: r.Body}
		if l, ok := rb.(interface{ lend() }); ok {
			l.lend() // to the upstream transport (unreadBodyForcesClose)
		}
		if len(r.Trailer) > 0 {
			// The client's trailers go on as its head announced them,
			// less the fields a trailer cannot carry or the gateway
			// writes itself (a backend that merges trailers into the
			// head would believe a forged X-Forwarded-For), at most
			// MaxHeaderCount values: the body copies them over at its
			// end (quic-go gives the request a new Trailer map when they
			// arrive, the other servers fill the one announced).
			trailer = forwardableTrailers(r.Trailer, oh.conn)
			body.trailerOf, body.trailer, body.maxTrailer = reqIn, trailer, g.opts.MaxHeaderCount
		}
	}
	if _, isH1 := svc.transport.(*h1Transport); upType != "" && !isH1 {
		// An upgrade is relayed over HTTP/1.1 only: an h2c service's
		// transport would refuse it, an h2 one send it over HTTP/1.1 if
		// the target offered that too.
		g.fail(w, r, x, &proxyError{status: http.StatusBadGateway, proxyStatus: "http_upgrade_failed", title: "Bad Gateway",
			detail: "service " + svc.name + " speaks HTTP/2 (protocol " + svc.tkey.protocol + "): an Upgrade (" + upType + ") is relayed only to an http1 service", close: r.ContentLength != 0})
		return
	}
	retry := svc.retry
	canRetry := retry != nil && idempotent(r.Method) && upType == ""
	var replay []byte
	if canRetry && body != nil {
		// Keep a small body so it can be sent again; a large or
		// unknown-length one is streamed and not retried.
		if r.ContentLength > 0 && r.ContentLength <= retryBufferLimit {
			// Read under the total timeout too: it expiring meanwhile
			// closes the body under the read.
			stop := context.AfterFunc(ctx, func() { body.Close() })
			buf, err := io.ReadAll(body)
			stop()
			if err != nil {
				if ctx.Err() == context.DeadlineExceeded {
					g.totalWhileClientSends(w, r, x, body, svc)
					return
				}
				g.bodyFailed(w, r, x, body, err)
				return
			}
			replay = buf
		} else {
			canRetry = false
		}
	}
	if retry != nil {
		retry.budget.request()
	}
	g.forward(w, r, c, rt, &upRequest{outURL: outURL, host: host, oh: oh, upType: upType, ctx: ctx,
		body: body, trailer: trailer, replay: replay, canRetry: canRetry})
}

// upRequest is what serve made of a request for its upstream, the input of
// forward.
type upRequest struct {
	outURL   url.URL // the path and query; each attempt adds its target
	host     string
	oh       *outHeader
	upType   string // the protocol of an upgrade asked for, or ""
	ctx      context.Context
	body     *countingBody
	trailer  http.Header
	replay   []byte // a small body kept to be sent again
	canRetry bool   // the service retries and the request may be retried
	// first is the attempt the span lane made (h1lane.go), taken as the
	// first: the exchange's target, attempts and upstream time count it
	// already.
	first *laneAttempt
}

// laneAttempt is the outcome of an attempt the span lane made.
type laneAttempt struct {
	t    *upstream.Target
	resp *http.Response
	err  error
	att  targetTurn
}

// forward makes the attempts at a request's upstream, a retry after each
// failure the service's policy and budget allow, and relays the answer or
// answers the last failure.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, c *call, rt *route, up *upRequest) {
	x, svc, ctx, oh, body, replay := &c.x, rt.svc, up.ctx, up.oh, up.body, up.replay
	retry, canRetry := svc.retry, up.canRetry

	// 103 Early Hints: the HTTP/1 transport gives them straight to the
	// HTTP/1 server's response when it gets that server's own context;
	// otherwise they come through a client trace, from whatever goroutine
	// the transport reads on, so they are relayed only while a round trip
	// is in progress (hints.pause).
	var hints *earlyHints
	via103 := "" // this hop's Via entry on a relayed 103 (RFC 9110 7.6.3: each message forwarded)
	if !svc.noVia {
		via103 = g.via11
		if svc.h2 {
			via103 = g.via(2, 0)
		}
	}
	rc, ok := ctx.(*requestContext)
	if !ok {
		rc, ok = ctx.Value(requestContextKey{}).(*requestContext) // under a total timeout
	}
	if !ok || rc.resp == nil || !isH1Transport(svc.transport) {
		hints = &earlyHints{w: w, paused: true, via: via103}
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got1xxResponse: hints.got})
	} else {
		rc.hintVia = via103
	}

	var tried []*upstream.Target
	var resp *http.Response
	var att targetTurn
	for attempt := 0; ; attempt++ {
		var t *upstream.Target
		var err error
		if f := up.first; attempt == 0 && f != nil {
			t, resp, err, att = f.t, f.resp, f.err, f.att
			tried = append(tried, t)
		} else {
			t, err = svc.pool.Pick(r, x.client(), tried)
			if err != nil {
				g.fail(w, r, x, &proxyError{status: http.StatusServiceUnavailable, proxyStatus: "destination_unavailable", title: "Service Unavailable",
					detail: "service " + svc.name + " has no healthy target"})
				return
			}
			tried = append(tried, t)
			x.target = t.URL.Host
			x.attempts = attempt + 1
			h1, isH1 := svc.transport.(*h1Transport)
			// Other transports may read the request after RoundTrip returns
			// (net/http's HTTP/2 encodes headers on its own goroutine), and
			// so may the body writer of an earlier attempt: they get a URL
			// and a header map of their own.
			u := &c.url
			if attempt > 0 || !isH1 {
				u = new(url.URL)
			}
			*u = up.outURL
			u.Scheme, u.Host = t.URL.Scheme, t.URL.Host
			if bp := strings.TrimSuffix(t.URL.Path, "/"); bp != "" {
				if u.RawPath != "" || t.URL.RawPath != "" {
					// Either part's own encoding ("/b%2Fse" in the
					// target's URL) is kept.
					u.RawPath = strings.TrimSuffix(t.URL.EscapedPath(), "/") + u.EscapedPath()
				}
				u.Path = bp + u.Path
			}
			// Built on the stack; the HTTP/1 transport takes it (or the
			// call's copy) with the context apart, others a WithContext copy.
			outv := http.Request{
				Method:     r.Method,
				URL:        u,
				Proto:      "HTTP/1.1",
				ProtoMajor: 1,
				ProtoMinor: 1,
				Host:       up.host,
				Trailer:    up.trailer,
			}
			switch {
			case replay != nil:
				outv.Body = replayBody{bytes.NewReader(replay)}
				outv.ContentLength = int64(len(replay))
			case body != nil:
				outv.Body = body
				outv.ContentLength = r.ContentLength
				if outv.ContentLength == 0 {
					outv.ContentLength = -1 // unknown length, e.g. chunked
				}
			}
			att = targetTurn{t: t, open: true}
			t.Start()
			upStart := monoNow()
			hints.resume()
			switch {
			case isH1 && (attempt == 0 || oh.isRaw) && outv.Body == nil:
				// Without a body no goroutine of the transport outlives the
				// exchange, so the call's Request can carry it, and the
				// header is written from its edits (or, on the lean path,
				// as made for every attempt).
				c.out = outv
				resp, err = h1.roundTrip(ctx, &c.out, oh, upStart)
			case svc.h2:
				outv.Header = oh.header(make(http.Header, len(r.Header)+len(oh.extra)))
				resp, err = h2RoundTrip(ctx, svc, &outv, body)
			default:
				outv.Header = oh.header(make(http.Header, len(r.Header)+len(oh.extra)))
				resp, err = svc.transport.RoundTrip(outv.WithContext(ctx))
			}
			hints.pause()
			x.upstreamDur += monoNow() - upStart
			x.upstreamHead = x.upstreamHead || err == nil
		}
		if err != nil {
			if body != nil && body.readErr() != nil {
				att.end(upstream.Success) // the client's body failed, not the target
				g.bodyFailed(w, r, x, body, body.readErr())
				return
			}
			if body != nil && ctx.Err() == context.DeadlineExceeded && body.inRead.Load() {
				// The total timeout expired while the transport waited
				// for the client's body: the client was too slow (or
				// stalled), not the target.
				att.end(upstream.Success)
				g.totalWhileClientSends(w, r, x, body, svc)
				return
			}
			if r.Context().Err() != nil {
				att.end(upstream.Success)
				if body != nil {
					x.bytesIn = body.n.Load() // what reached the upstream before the client left
				}
				g.requestCanceled(w, r, x)
				return
			}
			pe := classify(err, ctx)
			att.end(upstream.Failure)
			x.errKind = pe.proxyStatus
			if canRetry && attempt < retry.attempts && retry.retryError(pe) {
				if wait, fits := retryWait(ctx, retry, attempt+1); fits && g.allowRetry(svc, x, pe.proxyStatus) {
					if !sleepCtx(ctx, wait) {
						g.backoffCut(w, r, x, ctx)
						return
					}
					continue
				}
			}
			if body != nil {
				x.bytesIn = body.n.Load() // what reached the upstream before it failed
			}
			g.targetFailed(w, r, x, svc, t, pe)
			return
		}
		if canRetry && attempt < retry.attempts && retry.retryStatus(resp.StatusCode) {
			if wait, fits := retryWait(ctx, retry, attempt+1); fits && g.allowRetry(svc, x, strconv.Itoa(resp.StatusCode)) {
				dropAnswer(resp.Body)
				att.end(upstream.Failure)
				if !sleepCtx(ctx, wait) {
					g.backoffCut(w, r, x, ctx)
					return
				}
				continue
			}
		}
		x.errKind = "" // an earlier attempt's failure, retried: in retried_on
		break
	}
	if oh.leanResp && resp.Header == nil {
		x.lean = oh // a plain answer to a lean request (h1lean.go)
	}
	body.stopIdle()
	if _, isH1 := resp.Body.(*h1Body); !isH1 && oversizedHead(resp.Header) {
		// An HTTP/2 upstream's head (the HTTP/1 client stops reading at
		// the limit): refused alike, for this stream only.
		dropAnswer(resp.Body)
		att.end(upstream.Failure)
		g.fail(w, r, x, &proxyError{status: http.StatusBadGateway, proxyStatus: "http_response_header_section_size", title: "Bad Gateway",
			detail: "service " + svc.name + ": the upstream's response head is over the gateway's limits", cause: "target " + x.target + ": response head over " + strconv.Itoa(maxResponseHead>>10) + " KiB or " + strconv.Itoa(maxHeaderFields) + " fields"})
		return
	}
	g.relay(w, r, x, rt, resp, body, &att, up.upType, ctx)
}

// upstreamURL is the path and query a request goes upstream with: its
// route's rewrite, a prefix stripped, or as received (keeping the client's
// percent-encoding unless dot segments went). in is the request's URL,
// path its path ("/" for none), clean that without dot segments, params
// what the route's template captured.
func (rt *route) upstreamURL(in *url.URL, path, clean string, params router.Params) url.URL {
	outURL := url.URL{RawQuery: in.RawQuery}
	switch {
	case rt.rewritePath != nil:
		outURL.Path = rt.rewritePath.Expand(params)
		if in.RawPath != "" && clean == path && len(params) > 0 {
			// The client's own encoding of each captured value is kept,
			// as strip_prefix keeps it: "/files/{rest...}" forwards
			// "a%2Fb" as it came, not as the slash it decodes to.
			outURL.RawPath = rt.rewritePath.ExpandEscaped(escapedParams(in.RawPath, params))
		}
		if strings.HasPrefix(outURL.Path, "//") {
			// A value that began with a slash ("/files//evil.example")
			// must not reach the upstream as "//evil.example", which a
			// redirect there would take for another host. The raw form
			// loses the same leading bytes, however they were spelled.
			k := len(outURL.Path) - len(strings.TrimLeft(outURL.Path, "/"))
			if outURL.RawPath != "" {
				outURL.RawPath = "/" + outURL.RawPath[escapedIndex(outURL.RawPath, k):]
			}
			outURL.Path = "/" + outURL.Path[k:]
		}
	case rt.stripPrefix != "":
		p := strings.TrimPrefix(clean, rt.stripPrefix)
		if p == "" || p[0] != '/' {
			p = "/" + p
		}
		k := 0 // leading slashes
		for k < len(p) && p[k] == '/' {
			k++
		}
		if k > 1 {
			// "/api//evil.example/x" must not reach the upstream as
			// "//evil.example/x", which a redirect there would take
			// for another host.
			p = p[k-1:]
		}
		outURL.Path = p
		if in.RawPath != "" && clean == path {
			// The client's own encoding of the rest is kept: an encoded
			// slash ("/gitlab/projects/group%2Fname") is not a slash to
			// the upstream either. Collapsed leading slashes go from it
			// too, however they were spelled ("/api/%2Fx%2Fy" is
			// "/x%2Fy").
			// (url.URL ignores a RawPath that does not decode to Path.)
			rest := cutEscaped(in.RawPath, len(rt.stripPrefix))
			if k > 1 {
				rest = "/" + rest[escapedIndex(rest, k):]
			}
			if !strings.HasPrefix(rest, "/") {
				rest = "/" + rest
			}
			outURL.RawPath = rest
		}
	case clean != path:
		outURL.Path = clean
	default:
		outURL.Path, outURL.RawPath = in.Path, in.RawPath
	}
	if outURL.RawPath != "" {
		// A client's raw '"', '{' or byte above 127 makes its encoding
		// one url.URL refuses to send, and it would escape the decoded
		// path anew, encoded slashes becoming slashes: escape just those.
		outURL.RawPath = escapeRawPath(outURL.RawPath)
	}
	return outURL
}

// targetFailed answers a request whose last attempt, at t, failed with pe.
func (g *Gateway) targetFailed(w http.ResponseWriter, r *http.Request, x *exchange, svc *service, t *upstream.Target, pe *proxyError) {
	pe.detail = "service " + svc.name + ": " + pe.detail
	if pe.cause == "" {
		pe.cause = "target " + t.URL.Host
	} else {
		pe.cause = "target " + t.URL.Host + ": " + pe.cause
	}
	g.fail(w, r, x, pe)
}

// relay streams a response to the client: serve's last part, apart so
// that its two defers are open-coded (serve has too many returns).
func (g *Gateway) relay(w http.ResponseWriter, r *http.Request, x *exchange, rt *route, resp *http.Response, body *countingBody, att *targetTurn, upType string, ctx context.Context) {
	svc := rt.svc
	outcome := upstream.Success
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		outcome = upstream.Failure
	}
	defer func() { att.end(outcome) }()
	if body != nil {
		x.bytesIn = body.n.Load()
	}

	if resp.StatusCode == http.StatusSwitchingProtocols {
		g.serveUpgrade(w, r, resp, upType, x)
		return
	}
	defer resp.Body.Close()
	if rt.maxRespBody > 0 && resp.ContentLength > rt.maxRespBody {
		g.fail(w, r, x, &proxyError{status: http.StatusBadGateway, proxyStatus: "http_response_body_size", title: "Bad Gateway",
			detail: "the upstream response of " + strconv.FormatInt(resp.ContentLength, 10) + " bytes exceeds the route's limit of " + strconv.FormatInt(rt.maxRespBody, 10)})
		return
	}

	var flush, flushHead, copied bool
	var respConn []string // the upstream's Connection field: the trailers it names are not relayed
	var n int64
	var err error
	if lo := x.lean; lo != nil {
		// A plain answer to a lean request (h1lean.go): its head as
		// leanResponse made it, by its length, from the HTTP/1 server.
		via := ""
		if !svc.noVia {
			via = g.via11s[0]
		}
		x.status = resp.StatusCode
		rw := w.(*response)
		rw.writeLeanHead(resp.StatusCode, lo.respHead, lo.respDate, via, resp.ContentLength)
		if hb, ok := resp.Body.(*h1Body); ok {
			if p := hb.buffered(); p != nil {
				// The whole body came with the head: written from the
				// upstream connection's buffer, before the connection
				// goes back to the pool.
				m, werr := rw.Write(p)
				hb.consumeBuffered()
				n, copied = int64(m), true
				if werr != nil {
					err = &clientWriteError{werr}
				}
			}
		}
	} else {
		flush, flushHead, respConn = g.relayHead(w, r, x, rt, resp, body)
	}
	lateFlushed := false
	if !copied {
		n, lateFlushed, err = copyBody(w, r.ProtoMajor, resp.Body, flush, flushHead, rt.maxRespBody, g.opts.SendTimeout, svc.read, body)
	}
	x.bytesOut = n
	if body != nil {
		x.bytesIn = body.n.Load()
	}
	if err != nil {
		// The status line is gone; all that is left is to cut the
		// stream so the client sees it is incomplete rather than
		// mistaking it for a whole response.
		var cwe *clientWriteError
		clientSide := errors.As(err, &cwe)
		switch {
		case errors.Is(err, errResponseTooLarge):
			x.errKind = "http_response_body_size"
		case errors.Is(err, errTrailersTooLarge):
			x.errKind, x.errDetail = "http_response_header_section_size", "target "+x.target+": trailers over the head's limits"
			outcome = upstream.Failure
		case clientSide && isTimeout(cwe.err):
			// The client stopped reading: not the target's fault.
			x.errKind = "client_send_timeout"
		case g.cut.Load():
			x.errKind = "drain_timeout"
		case clientSide || r.Context().Err() != nil:
			x.errKind = "client_canceled"
			if n == 0 && !flushHead && !lateFlushed && !clientSide {
				// Nothing reached the client (the head waits for the
				// body's first bytes): it left before the answer.
				x.status = 499
			}
		case body.overLimit() >= 0:
			// The client was still sending when its body passed the
			// route's limit, after the answer had begun (a stream): the
			// gateway cut it, where before an answer it says 413.
			x.errKind = "http_request_error"
			x.errDetail = "the request body exceeds the route's limit of " + strconv.FormatInt(body.overLimit(), 10) + " bytes"
		case body != nil && body.readErr() != nil:
			// The client's own body failed (it left mid-stream, say) and
			// the transport ended the exchange for it: not the target's
			// doing, whatever error the response's read then got.
			x.errKind = "client_canceled"
			x.errDetail = "reading the request body: " + body.readErr().Error()
		default:
			pe := &proxyError{status: http.StatusBadGateway, proxyStatus: "http_response_incomplete", title: "Bad Gateway",
				detail: "service " + svc.name + ": the upstream's response ended before its body",
				cause:  "target " + x.target + ": " + err.Error()}
			if ctx.Err() == context.DeadlineExceeded {
				// The service's total timeout expired while the body
				// was coming: a timeout, said as before the head.
				pe = classify(ctx.Err(), ctx)
				pe.detail = "service " + svc.name + ": " + pe.detail
				pe.cause = "target " + x.target
			} else if errors.Is(err, errChunked) {
				pe = &proxyError{status: http.StatusBadGateway, proxyStatus: "http_protocol_error", title: "Bad Gateway",
					detail: "service " + svc.name + ": the upstream's response body broke its chunked framing",
					cause:  "target " + x.target + ": " + err.Error()}
			} else if errors.Is(err, errReadTimeout) {
				pe = &proxyError{status: http.StatusGatewayTimeout, proxyStatus: "http_response_timeout", title: "Gateway Timeout",
					detail: "service " + svc.name + ": the upstream sent nothing more of its response body for " + svc.read.String(),
					cause:  "target " + x.target + ": " + err.Error()}
			} else if errors.Is(err, errSendTimeout) {
				// It answered, then took none of the rest of the body.
				pe = &proxyError{status: http.StatusGatewayTimeout, proxyStatus: "connection_write_timeout", title: "Gateway Timeout",
					detail: "service " + svc.name + ": the upstream took none of the request body in time",
					cause:  "target " + x.target + ": " + err.Error()}
			}
			x.errKind = pe.proxyStatus
			x.errDetail = pe.cause
			outcome = upstream.Failure
			if rw, ok := w.(retracter); ok && n == 0 && rw.retract() {
				// Nothing has reached the client yet: it can still
				// be told what happened.
				g.fail(w, r, x, pe)
				return
			}
			if r.ProtoMajor >= 2 && !flushHead && !(flush && n > 0) && !lateFlushed && heldBack(r.ProtoMajor, n) {
				// Nothing flushed, and too little written to overflow
				// the server's buffer: the HTTP/2 or HTTP/3 server
				// never sent the head, and the reset below is all the
				// client gets, which the log should not call the
				// upstream's status (nor count the bytes it dropped).
				x.status = pe.status
				x.bytesOut = 0
			}
		}
		att.end(outcome)
		g.finish(r, x) // before the panic unwinds; finish runs once
		panic(http.ErrAbortHandler)
	}
	if _, isH1 := resp.Body.(*h1Body); !isH1 && oversizedHead(resp.Trailer) {
		// An HTTP/2 upstream's trailers, over the limits the HTTP/1
		// client applies while reading them: the response is cut, as it
		// would be from an HTTP/1 upstream.
		x.errKind, x.errDetail = "http_response_header_section_size", "target "+x.target+": trailers over the head's limits"
		att.end(upstream.Failure)
		g.finish(r, x)
		panic(http.ErrAbortHandler)
	}
	// TrailerPrefix marks a trailer whether or not it was announced; a
	// bare key would be taken for a late change to a header of the same
	// name and dropped.
	if len(resp.Trailer) > 0 {
		dropResponseTrailers(resp.Trailer, respConn)
		wh := w.Header()
		for k, v := range resp.Trailer {
			wh[http.TrailerPrefix+k] = v
		}
	}
}

// relayHead writes the head of an upstream's answer (relay's, but for a
// plain answer to a lean request) and reports how its body is to be
// copied: flushed as it comes, and the head at once.
func (g *Gateway) relayHead(w http.ResponseWriter, r *http.Request, x *exchange, rt *route, resp *http.Response, body *countingBody) (flush, flushHead bool, conn []string) {
	svc := rt.svc
	conn = resp.Header["Connection"] // before the hop-by-hop fields go: the trailers it names go too
	wh := w.Header()
	if a, ok := w.(headerAdopter); ok && len(wh) == 0 {
		// The upstream's map is this request's alone: it becomes the
		// response's, rather than be copied field by field. Our HTTP/1
		// parser noted whether the head had hop-by-hop fields at all.
		if b, ok := resp.Body.(*h1Body); !ok || !b.hopFree {
			dropHopFields(resp.Header)
		}
		a.adoptHeader(resp.Header)
		wh = resp.Header
	} else {
		copyEndToEnd(wh, resp.Header)
	}
	if !svc.noVia {
		if vs := wh["Via"]; len(vs) == 0 && resp.ProtoMajor == 1 && resp.ProtoMinor == 1 {
			// Shared by every response, never written through: its
			// capacity is its length, so an append makes a copy.
			wh["Via"] = g.via11s
		} else {
			wh["Via"] = append(vs, g.via(resp.ProtoMajor, resp.ProtoMinor))
		}
	}
	if len(resp.Trailer) > 0 {
		dropResponseTrailers(resp.Trailer, conn)
	}
	if len(resp.Trailer) > 0 {
		if r.ProtoMajor == 1 {
			// Trailers need chunked coding towards an HTTP/1.1
			// client: a length (an HTTP/2 upstream's) would rule them
			// out.
			delete(wh, "Content-Length")
		}
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		wh["Trailer"] = []string{strings.Join(names, ", ")}
	}
	if !rt.respOps.empty() {
		rt.respOps.apply(wh)
	}
	if r.ProtoMajor >= 2 {
		if _, ok := wh["Content-Type"]; !ok {
			// net/http's HTTP/2 server and quic-go would guess a type
			// from the first bytes: an upload served without one (and
			// nosniff) would turn into HTML. Present but empty, the
			// field stops the guess and is not sent.
			wh["Content-Type"] = nil
		}
	}
	sse := strings.HasPrefix(firstValue(resp.Header, "Content-Type"), "text/event-stream")
	flush = resp.ContentLength == -1 || sse
	// A streamed response's head goes out at once, before any of its
	// body, when the client may be waiting for it: its own body is still
	// coming (a bidirectional stream, such as gRPC's, whose client sends
	// its next message on seeing the head), or the response is an event
	// stream (EventSource opens on the head). Otherwise the head waits to
	// share a write with the body's first bytes.
	bodyComing := body != nil && !body.eof.Load()
	flushHead = flush && (sse || bodyComing)
	if flushHead && bodyComing && r.ProtoMajor == 1 {
		// The HTTP/1 server decides to close a connection whose request
		// body was left unread only when the response ends, too late for
		// a head already sent: say it now.
		wh["Connection"] = []string{"close"}
	}
	x.status = resp.StatusCode
	w.WriteHeader(resp.StatusCode)
	return flush, flushHead, conn
}

// heldBack reports whether n bytes of a response body, written without a
// flush, are still held back with the head by the server of an HTTP/2 or
// HTTP/3 request (major): net/http's HTTP/2 server buffers a handler's
// writes in 4 KiB, flushed when a write overflows it (so 4096 bytes stay),
// quic-go's HTTP/3 server keeps a body while it is under 4 KiB. A handler
// that aborts then has sent nothing.
func heldBack(major int, n int64) bool {
	if major == 2 {
		return n <= 4<<10
	}
	return n < 4<<10
}

// oversizedHead reports whether a response header is over the limits the
// HTTP/1 client applies while reading (maxResponseHead, maxHeaderFields),
// counted as HPACK does: name, value and 32 bytes per field.
func oversizedHead(h http.Header) bool {
	size, fields := 0, 0
	for k, vs := range h {
		for _, v := range vs {
			size += len(k) + len(v) + 32
			fields++
		}
	}
	return size > maxResponseHead || fields > maxHeaderFields
}

// allowRetry asks the service's retry budget for a retry after a failure
// (reason: a Proxy-Status error or a status code) and counts the answer:
// a retry adds the reason to the access log's retried_on, a refusal sets
// retry_budget_exhausted.
func (g *Gateway) allowRetry(svc *service, x *exchange, reason string) bool {
	if !svc.retry.budget.allow() {
		x.retryRefused = true
		g.metrics.countService(g.metrics.retryOverflow, svc.name)
		return false
	}
	if x.retriedOn == "" {
		x.retriedOn = reason
	} else {
		x.retriedOn += "," + reason
	}
	g.metrics.countService(g.metrics.retries, svc.name)
	return true
}

// setForwarded writes Forwarded (RFC 7239) and X-Forwarded-For/Proto/Host.
// Headers from a trusted proxy are extended; from anyone else they are
// replaced, so a client cannot forge its address.
func (g *Gateway) setForwarded(o *outHeader, r *http.Request, x *exchange, svc *service) {
	proto := "http"
	if isTLS(r) {
		proto = "https"
	}
	trusted := x.trusted
	ip := "unknown"
	if x.clientIPStr != "" {
		ip = x.clientIPStr
	}
	switch {
	case svc.noXForwarded:
		// None reaches these targets, whoever sent it.
		o.del("X-Forwarded-For")
		o.del("X-Forwarded-Proto")
		o.del("X-Forwarded-Host")
		for _, k := range spoofableForwarding {
			o.del(k)
		}
	case trusted:
		if prior := o.get("X-Forwarded-For"); len(prior) > 0 {
			o.set("X-Forwarded-For", strings.Join(prior, ", ")+", "+ip)
		} else {
			o.set("X-Forwarded-For", ip)
		}
		if len(o.get("X-Forwarded-Proto")) == 0 {
			o.set("X-Forwarded-Proto", proto)
		}
		if len(o.get("X-Forwarded-Host")) == 0 && r.Host != "" {
			o.set("X-Forwarded-Host", r.Host)
		}
	default:
		// The client's own are replaced (set drops them), and the
		// other forwarding fields some frameworks read are dropped.
		for _, k := range spoofableForwarding {
			o.del(k)
		}
		o.set("X-Forwarded-For", ip)
		o.set("X-Forwarded-Proto", proto)
		if r.Host != "" {
			o.set("X-Forwarded-Host", r.Host)
		} else {
			o.del("X-Forwarded-Host")
		}
	}
	if !trusted || svc.noForwarded {
		o.del("Forwarded")
	} else {
		// A trusted proxy's are kept, unless one is malformed: it would
		// spoil the whole field (validForwarded), ours appended included.
		for _, v := range o.get("Forwarded") {
			if !validForwarded(v) {
				o.del("Forwarded")
				break
			}
		}
	}
	if svc.noForwarded {
		return
	}
	node := "unknown"
	if x.clientIP.IsValid() {
		node = ip
		if x.clientIP.Is6() {
			node = `"[` + ip + `]"`
		}
	}
	var b strings.Builder
	b.Grow(len(node) + len(r.Host) + 30)
	b.WriteString("for=")
	b.WriteString(node)
	b.WriteString(";proto=")
	b.WriteString(proto)
	if r.Host != "" {
		b.WriteString(";host=")
		writeForwardedValue(&b, r.Host)
	}
	o.add("Forwarded", b.String())
}

// spoofableForwarding are forwarding fields the gateway does not write
// but frameworks read (Spring and ASP.NET take X-Forwarded-Port and
// -Prefix, many apps X-Real-IP; client-address helpers such as Rails'
// remote_ip or django-ipware try X-Client-IP, True-Client-IP, CDN fields;
// IIS rewrites by X-Rewrite-URL; Rack and others take the scheme from
// X-Forwarded-Scheme, X-Url-Scheme or Front-End-Https; apps behind
// proxies that pass client certificates read them, and the verdict on
// them, from X-Client-Cert, SSL-Client-Cert, X-SSL-Client-Verify or
// Traefik's X-Forwarded-Tls-Client-Cert; Java helpers take the client from
// Proxy-Client-IP or WL-Proxy-Client-IP; Envoy trusts X-Envoy-Internal): from a
// client that is not a trusted proxy they are dropped, as Traefik does,
// rather than vouched for.
var spoofableForwarding = []string{"X-Real-Ip", "X-Forwarded-Port", "X-Forwarded-Prefix", "X-Forwarded-Server", "X-Forwarded-Ssl", "X-Original-Url", "X-Original-Forwarded-For",
	"X-Client-Ip", "True-Client-Ip", "X-Cluster-Client-Ip", "Cf-Connecting-Ip", "Fastly-Client-Ip", "X-Rewrite-Url",
	"X-Forwarded-Scheme", "X-Forwarded-Protocol", "X-Url-Scheme", "Front-End-Https", "X-Original-Host", "X-Host", "Client-Ip",
	"X-Forwarded", "Forwarded-For", "X-Envoy-External-Address", "X-Client-Cert", "Ssl-Client-Cert", "X-Ssl-Client-Cert", "X-Forwarded-Tls-Client-Cert",
	"X-Forwarded-Uri", "X-Forwarded-Method", "X-Original-Uri", "X-Scheme", "X-Forwarded-Path", "X-Forwarded-Https", "X-Forwarded-Client-Ip", "X-Real-Port",
	"X-Ssl-Client-Verify", "Ssl-Client-Verify", "X-Client-Verify", "X-Ssl-Client-S-Dn", "X-Client-Dn", "X-Arr-Clientcert", "X-Arr-Ssl",
	"Proxy-Client-Ip", "Wl-Proxy-Client-Ip", "X-Originating-Ip", "X-Remote-Ip", "X-Remote-Addr", "X-Proxyuser-Ip", "X-Envoy-Internal"}

// forwardedClient is the client address trusted proxies report in
// X-Forwarded-For (the field's lines, in order): the rightmost entry that
// is not itself a trusted proxy, walking from the right as nginx's
// real_ip_recursive does, or the leftmost if all are. An entry that is not
// an address stops the walk at the last one trusted before it; "" if there
// is none. An entry may carry a port ("203.0.113.7:41234", "[::1]:80").
func (g *Gateway) forwardedClient(xff []string) string {
	found := ""
	for i := len(xff) - 1; i >= 0; i-- {
		line := xff[i]
		for line != "" {
			var e string
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				line, e = line[:j], line[j+1:]
			} else {
				line, e = "", line
			}
			e = strings.TrimSpace(e)
			if e == "" {
				continue
			}
			a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(e, "["), "]"))
			if err != nil {
				ap, err := netip.ParseAddrPort(e) // some balancers add the port
				if err != nil {
					return found
				}
				a = ap.Addr()
			}
			a = a.Unmap()
			found = a.String()
			if !g.opts.TrustedProxies.contains(a) {
				return found
			}
		}
	}
	return found
}

// identifyClient fills in the peer's address and, when the peer is a
// trusted proxy, the client it forwarded (for balancing and the log of
// every answer, the gateway's own included).
func (g *Gateway) identifyClient(x *exchange, r *http.Request) {
	if rc, ok := r.Context().(*requestContext); ok && rc.parsed {
		x.clientIP, x.clientIPStr = rc.peer, rc.peerStr // parsed once per connection
	} else {
		x.clientIP, x.clientIPStr = clientAddr(r.RemoteAddr)
	}
	x.trusted = g.trustedPeer(x.clientIP)
	if x.trusted {
		if xff := r.Header["X-Forwarded-For"]; len(xff) > 0 {
			x.origin = g.forwardedClient(xff)
		}
	}
}

// trustedPeer reports whether the peer at a is one of the trusted proxies.
func (g *Gateway) trustedPeer(a netip.Addr) bool {
	return a.IsValid() && len(g.opts.TrustedProxies) > 0 && g.opts.TrustedProxies.contains(a)
}

// requestID is the request's id: the client's X-Request-Id when sane, else
// one made on first use and kept for the rest of the exchange.
func (x *exchange) requestID() string {
	if x.reqID == "" {
		x.reqID = newID()
	}
	return x.reqID
}

// client is the client's address for balancing and the access log: the
// one trusted proxies forwarded, else the peer's.
func (x *exchange) client() string {
	if x.origin != "" {
		return x.origin
	}
	return x.clientIPStr
}

// targetTurn is one request's turn at a target: Start counted it in flight,
// end reports its outcome once.
type targetTurn struct {
	t    *upstream.Target
	open bool
}

func (a *targetTurn) end(o upstream.Outcome) {
	if a.open {
		a.open = false
		a.t.Finish(o)
	}
}

// headerAdopter is a ResponseWriter that can take a header map the
// handler owns as its own (the HTTP/1 server's response).
type headerAdopter interface {
	adoptHeader(h http.Header)
}

// call is what ServeHTTP needs for one request and may reuse for the
// next once the request is done: the exchange, the outbound header's
// edits, URL and request.
type call struct {
	x   exchange
	oh  outHeader
	url url.URL
	out http.Request
}

var calls = sync.Pool{New: func() any { return new(call) }}

// maxPooledEdits bounds the edit lists kept for reuse.
const maxPooledEdits = 64

// release puts the call back in the pool. Nothing a transport may still
// read is in it: see the round trip in ServeHTTP.
func (c *call) release() {
	if cap(c.oh.extra) > maxPooledEdits || cap(c.oh.drop) > maxPooledEdits || cap(c.oh.fields) > 4*maxPooledEdits || cap(c.oh.raw) > 16<<10 || cap(c.oh.respHead) > 16<<10 {
		return
	}
	c.x = exchange{}
	c.oh.reset(nil)
	if c.oh.leanHR.resp.Request != nil { // used: its pointers dropped
		c.oh.leanHR = h1Response{}
	}
	c.url = url.URL{}
	c.out = http.Request{}
	calls.Put(c)
}

// drop puts back a call taken for a request the span lane then leaves to
// the general path: only its URL and request were set (serveLaneWith).
func (c *call) drop() {
	c.url = url.URL{}
	c.out = http.Request{}
	calls.Put(c)
}

// clientAddr parses a request's RemoteAddr into the client's address
// (IPv4-mapped addresses unmapped) and its text, or the zero Addr and "".
func clientAddr(remote string) (netip.Addr, string) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}, ""
	}
	if a := ap.Addr(); a.Is4() {
		// "a.b.c.d:port": the address's text is already there.
		return a, remote[:strings.LastIndexByte(remote, ':')]
	}
	a := ap.Addr().Unmap()
	return a, a.String()
}

// via is this hop's Via entry for a message received in HTTP/major.minor.
func (g *Gateway) via(major, minor int) string {
	switch {
	case major == 1 && minor == 1:
		return g.via11 // the common case, built once
	case major == 1 && minor == 0:
		return g.via10
	}
	return protoVersion(major, minor) + " " + g.opts.ProxyName
}

// protoVersion is the received-protocol of a Via entry (RFC 9110 7.6.3).
func protoVersion(major, minor int) string {
	switch {
	case major == 1 && minor == 1:
		return "1.1"
	case major == 1 && minor == 0:
		return "1.0"
	case major == 2:
		return "2"
	case major == 3:
		return "3"
	}
	return strconv.Itoa(major) + "." + strconv.Itoa(minor)
}

// idempotent methods may be retried (RFC 9110 section 9.2.2).
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

func (p *retryPolicy) retryError(pe *proxyError) bool {
	switch pe.proxyStatus {
	case "connection_refused", "connection_timeout", "dns_error", "dns_timeout", "destination_ip_unroutable":
		return p.onConnect
	case "http_response_timeout":
		return p.onTimeout && pe.detail != totalTimeoutDetail
	case "connection_terminated", "http_protocol_error", "http_response_incomplete":
		return p.onReset // a response that broke off (a head cut short, here) is retried as a reset one
	}
	return false
}

const totalTimeoutDetail = "the service's total timeout expired"

// noConnection reports whether an exchange failed before it had a
// connection to send on (a DNS lookup or a dial failed).
func noConnection(err error) bool {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	return errors.As(err, &dnsErr) || errors.As(err, &opErr) && opErr.Op == "dial"
}

// classify turns a round-trip error into what the client is told, and
// what only the access log is (cause: socket errors name addresses, TLS
// errors internal names, a malformed response its bytes).
func classify(err error, ctx context.Context) *proxyError {
	if ctx.Err() == context.DeadlineExceeded || deadlinePassed(ctx) {
		// The second: a dial bounded by the total's deadline fails on
		// it a moment before the context's timer ends the context.
		return &proxyError{status: http.StatusGatewayTimeout, proxyStatus: "http_response_timeout", title: "Gateway Timeout", detail: totalTimeoutDetail}
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		if dnsErr.IsTimeout {
			return &proxyError{status: http.StatusGatewayTimeout, proxyStatus: "dns_timeout", title: "Gateway Timeout", detail: "DNS lookup timed out"}
		}
		return &proxyError{status: http.StatusBadGateway, proxyStatus: "dns_error", title: "Bad Gateway", detail: "DNS lookup failed: " + dnsErr.Err}
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return &proxyError{status: http.StatusBadGateway, proxyStatus: "tls_certificate_error", title: "Bad Gateway", detail: "the upstream's certificate is not trusted", cause: certErr.Err.Error()}
	}
	var alert tls.AlertError
	var recErr tls.RecordHeaderError
	if errors.As(err, &alert) || errors.As(err, &recErr) {
		return &proxyError{status: http.StatusBadGateway, proxyStatus: "tls_protocol_error", title: "Bad Gateway", detail: "TLS with the upstream failed", cause: err.Error()}
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "remote error" {
		// An alert the upstream sent (crypto/tls's own type for it is
		// unexported): no application protocol, a certificate it wants.
		return &proxyError{status: http.StatusBadGateway, proxyStatus: "tls_protocol_error", title: "Bad Gateway", detail: "TLS with the upstream failed", cause: err.Error()}
	}
	if errors.Is(err, errHandshakeTimeout) || strings.Contains(err.Error(), "net/http: TLS handshake timeout") {
		// The handshake is part of connecting (as Envoy counts it), and
		// bounded by the connect timeout.
		return &proxyError{status: http.StatusGatewayTimeout, proxyStatus: "connection_timeout", title: "Gateway Timeout", detail: "connecting timed out (the TLS handshake)", cause: err.Error()}
	}
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		if opErr.Timeout() {
			return &proxyError{status: http.StatusGatewayTimeout, proxyStatus: "connection_timeout", title: "Gateway Timeout", detail: "connecting timed out", cause: err.Error()}
		}
		return &proxyError{status: http.StatusBadGateway, proxyStatus: "connection_refused", title: "Bad Gateway", detail: "connection refused", cause: err.Error()}
	}
	var big *responseHeadTooLargeError
	if errors.As(err, &big) {
		return &proxyError{status: http.StatusBadGateway, proxyStatus: "http_response_header_section_size", title: "Bad Gateway", detail: "the upstream's response head is over the gateway's limits", cause: err.Error()}
	}
	var bad *badResponseError
	if errors.As(err, &bad) {
		return &proxyError{status: http.StatusBadGateway, proxyStatus: "http_protocol_error", title: "Bad Gateway", detail: "the upstream's response is malformed", cause: err.Error()}
	}
	if errors.Is(err, errUpgradeBeforeBody) {
		return &proxyError{status: http.StatusBadGateway, proxyStatus: "http_upgrade_failed", title: "Bad Gateway", detail: "the upstream switched protocols before it took the request's body", cause: err.Error()}
	}
	if errors.Is(err, errSendTimeout) {
		return &proxyError{status: http.StatusGatewayTimeout, proxyStatus: "connection_write_timeout", title: "Gateway Timeout", detail: "the upstream took none of the request body in time"}
	}
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		return &proxyError{status: http.StatusGatewayTimeout, proxyStatus: "http_response_timeout", title: "Gateway Timeout", detail: "no response headers in time", cause: err.Error()}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		// Part of a head came, then the connection ended (RFC 9209:
		// incomplete, where connection_terminated is before any of it).
		return &proxyError{status: http.StatusBadGateway, proxyStatus: "http_response_incomplete", title: "Bad Gateway", detail: "the upstream closed the connection in the middle of its response head", cause: err.Error()}
	}
	return &proxyError{status: http.StatusBadGateway, proxyStatus: "connection_terminated", title: "Bad Gateway", detail: "the connection to the upstream failed before a response", cause: err.Error()}
}

// h2RoundTrip is one attempt on an HTTP/2 service, within bounds that
// net/http's own retries of a request the upstream did not take (a
// GOAWAY before its stream, a REFUSED_STREAM) would otherwise not keep:
// at most h2DialsPerAttempt new connections (an upstream that sends
// GOAWAY on each new connection had one GET open 46,000 connections in
// 15 s), and the response head within the response header timeout
// however many times the transport tries (each try restarted it).
//
// A request body the upstream takes none of for the send timeout (no flow
// control window granted, say) ends the attempt too, as on HTTP/1.1: it
// held the request, and the client's connection, until the upstream went
// away.
func h2RoundTrip(ctx context.Context, svc *service, out *http.Request, body *countingBody) (*http.Response, error) {
	budget := &dialBudget{}
	budget.left.Store(h2DialsPerAttempt)
	rctx, cancel := context.WithCancelCause(context.WithValue(ctx, dialBudgetKey{}, budget))
	// The head is waited for from the end of the request body, as
	// net/http's ResponseHeaderTimeout counts (a gRPC client stream runs
	// as long as it likes), over all of the transport's tries.
	hw := &headWait{d: svc.tkey.responseHeader, cancel: cancel}
	hw.armF = hw.arm
	streamed := body != nil && out.Body == body
	var sw *sendWatch
	if streamed {
		body.onEOF.Store(&hw.armF)
		if d := svc.tkey.send; d > 0 {
			sw = &sendWatch{b: body, d: d, cancel: cancel}
			sw.start()
		}
	} else {
		hw.arm()
	}
	resp, err := svc.transport.RoundTrip(out.WithContext(rctx))
	hw.stop()
	if err != nil {
		sw.stop()
		if cause := context.Cause(rctx); (cause == errH2HeadTimeout || cause == errSendTimeout) && ctx.Err() == nil {
			err = cause
		}
		cancel(nil)
		return nil, err
	}
	// The send watch goes on while the body is still being sent: an
	// upstream that answers at once and then takes none of it held the
	// request for good, its client gone or not.
	end := func() { sw.stop(); cancel(nil) }
	if resp.Body == http.NoBody || resp.Body == nil {
		end() // a whole answer: what is left of the body is not sent
		return resp, nil
	}
	// The body is read under rctx: it ends with the body. Past the head,
	// net/http's HTTP/2 client no longer watches the context: a send
	// timeout closes the body, which ends the stream.
	inner := resp.Body
	sw.afterHead(func() { inner.Close() })
	resp.Body = &cancelOnClose{ReadCloser: inner, ctx: rctx, cancel: end}
	return resp, nil
}

// headWait cancels an attempt whose response head has not come d after it
// was armed (at the end of the request body, or at once without one).
type headWait struct {
	d      time.Duration
	cancel context.CancelCauseFunc
	armF   func() // arm, made once for countingBody.onEOF

	mu   sync.Mutex
	t    *time.Timer
	done bool
}

func (h *headWait) arm() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done || h.d <= 0 || h.t != nil {
		return
	}
	h.t = time.AfterFunc(h.d, func() { h.cancel(errH2HeadTimeout) })
}

func (h *headWait) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.done = true
	if h.t != nil {
		h.t.Stop()
	}
}

// errHandshakeTimeout: an upstream's TLS handshake did not end within the
// connect timeout (the HTTP/1 client's; net/http says it in words).
var errHandshakeTimeout = timeoutError("the TLS handshake with the upstream timed out")

// sendWatch ends an HTTP/2 attempt whose upstream takes none of the
// request body for d: the transport neither reads more of it nor waits
// for the client (which the read body timeout judges), and it has not
// ended.
type sendWatch struct {
	b      *countingBody
	d      time.Duration
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	t       *time.Timer
	last    int64         // the body's bytes read when progress was last seen
	since   time.Duration // monoNow then
	stopped bool
	abort   func() // past the head: ends the stream (afterHead)
}

// afterHead sets what ends the stream once the head has come; a nil
// watch does nothing.
func (w *sendWatch) afterHead(abort func()) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.abort = abort
}

// sendWatchTicks: the watch looks d/sendWatchTicks apart, so that it
// fires within a quarter of d after d without progress.
const sendWatchTicks = 4

func (w *sendWatch) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last, w.since = w.b.n.Load(), monoNow()
	w.t = time.AfterFunc(w.d/sendWatchTicks, w.check)
}

func (w *sendWatch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.b.eof.Load() {
		return
	}
	now := monoNow()
	if n := w.b.n.Load(); n != w.last || w.b.inRead.Load() {
		w.last, w.since = n, now
	} else if now-w.since >= w.d {
		w.cancel(errSendTimeout)
		if w.abort != nil {
			go w.abort() // outside mu: the close ends the watch too
		}
		return
	}
	w.t.Reset(w.d / sendWatchTicks)
}

// stop ends the watch; a nil watch is none.
func (w *sendWatch) stop() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.t != nil {
		w.t.Stop()
	}
}

// h2DialsPerAttempt is how many new connections one attempt on an HTTP/2
// service may open.
const h2DialsPerAttempt = 3

// dialBudget is an attempt's count of new connections left (the context
// value dialBudgetKey, which the HTTP/2 transports' dialer looks at).
type dialBudget struct{ left atomic.Int32 }

type dialBudgetKey struct{}

// errTooManyDials: the attempt's new connections were all spent.
var errTooManyDials = errors.New("the upstream closed each new connection before it took the request (HTTP/2 GOAWAY)")

// errH2HeadTimeout: no response head within the response header timeout,
// over all of the transport's tries.
var errH2HeadTimeout = timeoutError("no response head within the response header timeout")

// timeoutError is an error that says it is a timeout.
type timeoutError string

func (e timeoutError) Error() string { return string(e) }
func (e timeoutError) Timeout() bool { return true }

// cancelOnClose calls cancel when the body is closed; a read that fails
// because the send watch ended the attempt says so.
type cancelOnClose struct {
	io.ReadCloser
	ctx    context.Context
	cancel func()
}

func (b *cancelOnClose) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && context.Cause(b.ctx) == errSendTimeout {
		err = errSendTimeout
	}
	return n, err
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// retryWait draws the wait before retry n and says whether it ends before
// the request's total timeout. A wait the deadline would cut only turns
// the upstream's own answer (a 503 back in a millisecond, say) into a 504
// blaming the upstream's timing (an outside check: a 2 s backoff under a
// 300 ms total timeout answered every request so): that answer, or that
// error, is what the client gets instead.
func retryWait(ctx context.Context, p *retryPolicy, n int) (time.Duration, bool) {
	d := p.backoff(n)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return d, false
	}
	return d, true
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// dropAnswer ends an answer that is not relayed (retried, or refused).
// Its body is read to its end only when all of it is in the connection's
// buffer already, which keeps the connection pooled; otherwise the body is
// closed (the HTTP/1 connection with it, an HTTP/2 stream reset), as
// Envoy resets what it retries: reading on would wait on the upstream (an
// outside check saw each retry of a 503 whose body stalled wait out the
// whole read timeout first).
func dropAnswer(rc io.ReadCloser) {
	if b, ok := rc.(*h1Body); ok {
		if b.buffered() != nil {
			b.consumeBuffered()
			return
		}
		if b.chunkedBuffered() {
			// Read from the buffer alone: the connection stays pooled
			// (an error in its framing closes it, as a read would).
			io.Copy(io.Discard, b)
			if !b.done {
				b.Close()
			}
			return
		}
	}
	rc.Close()
}

// totalWhileClientSends answers a request whose service's total timeout
// expired while its body was still arriving: the client's doing.
func (g *Gateway) totalWhileClientSends(w http.ResponseWriter, r *http.Request, x *exchange, body *countingBody, svc *service) {
	x.bytesIn = body.n.Load()
	g.fail(w, r, x, &proxyError{status: http.StatusRequestTimeout, title: "Request Timeout",
		detail: "the request body was still arriving when the service's total timeout (" + svc.total.String() + ") expired", close: true})
	x.errKind = "client_body_timeout"
}

// requestCanceled ends a request whose own context was canceled while it
// waited for an upstream: by the client leaving (499), or by the drain's
// deadline, which the client can still be told of, and try elsewhere.
func (g *Gateway) requestCanceled(w http.ResponseWriter, r *http.Request, x *exchange) {
	if g.cut.Load() {
		g.fail(w, r, x, &proxyError{status: http.StatusServiceUnavailable, title: "Service Unavailable",
			detail: "the node is shutting down and its drain deadline has passed; retry on another node", close: true})
		x.errKind = "drain_timeout"
		return
	}
	g.clientGone(x)
}

// backoffCut ends a request whose wait before a retry was cut short: by
// its own cancellation (requestCanceled), or by the service's total
// timeout.
func (g *Gateway) backoffCut(w http.ResponseWriter, r *http.Request, x *exchange, ctx context.Context) {
	if r.Context().Err() != nil {
		g.requestCanceled(w, r, x)
		return
	}
	pe := classify(ctx.Err(), ctx)
	if rt := x.route; rt != nil && rt.svc != nil {
		pe.detail = "service " + rt.svc.name + ": " + pe.detail
	}
	pe.cause = "while waiting to retry, after target " + x.target + " failed"
	g.fail(w, r, x, pe)
}

// deadlinePassed reports whether ctx has a deadline and it has passed.
func deadlinePassed(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// bodyFailed answers a request whose own body could not be read.
func (g *Gateway) bodyFailed(w http.ResponseWriter, r *http.Request, x *exchange, body *countingBody, err error) {
	x.bytesIn = body.n.Load()
	if body.expired.Load() {
		g.fail(w, r, x, &proxyError{status: http.StatusRequestTimeout, title: "Request Timeout",
			detail: "the client sent no part of the request body for " + g.opts.ReadBodyTimeout.String(), close: true})
		x.errKind = "client_body_timeout"
		return
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		g.fail(w, r, x, &proxyError{status: http.StatusRequestEntityTooLarge, title: "Content Too Large",
			detail: "the request body exceeds the route's limit of " + strconv.FormatInt(mbe.Limit, 10) + " bytes", close: true})
		return
	}
	if r.Context().Err() != nil || connectionLost(err) {
		// The client left (or reset the connection): nobody to answer.
		g.clientGone(x)
		return
	}
	// Malformed or cut short (the client closed its side early): a 400 it
	// may still read.
	g.fail(w, r, x, &proxyError{status: http.StatusBadRequest, title: "Bad Request", detail: "reading the request body failed: " + err.Error(), close: true})
}

// clientGone records a request whose client connection went before the
// answer: 499 (nginx's "client closed request"), or, when a drain's
// deadline cut it, 503 drain_timeout: the gateway's doing, not the
// client's.
func (g *Gateway) clientGone(x *exchange) {
	if g.cut.Load() {
		x.status = http.StatusServiceUnavailable
		x.errKind = "drain_timeout"
		return
	}
	x.status = 499
	x.errKind = "client_canceled"
}

// countingBody counts the request body bytes read and remembers a read
// error, to tell the client's faults from the upstream's.
//
// The upstream transport may go on reading it on its own goroutine after
// RoundTrip has returned (an upstream that answered before reading the
// whole body), so the count and the error are safe for concurrent use.
type countingBody struct {
	rc  io.ReadCloser
	n   atomic.Int64
	mu  sync.Mutex
	err error
	// closed: the upstream transport closed the body (its stream was
	// reset, say); a read failing after that is not the client's doing.
	closed bool
	// trailerOf's Trailer is copied into trailer (the outgoing request's)
	// at the end of the body: see ServeHTTP.
	trailerOf  *http.Request
	trailer    http.Header
	maxTrailer int // values copied at most (0: no limit)

	// The read timeout (Options.ReadBodyTimeout): a read that waits this
	// long for the client has the client's body closed under it (src, the
	// server's own body, whose Close interrupts a blocked Read on every
	// protocol), and expired is set. Off once the response has begun.
	idle    time.Duration
	src     io.Closer
	eof     atomic.Bool  // the body has been read to its end
	endAt   atomic.Int64 // monoNow when it was
	idleOff atomic.Bool  // read without the lock by Read; set under it
	expired atomic.Bool
	// onEOF, if set, is called once the body has been read to its end
	// (an HTTP/2 attempt's head wait starts then: h2RoundTrip).
	onEOF atomic.Pointer[func()]
	// inRead: a read of the client's body is in progress, or was cut
	// short by Close (the transport gave up on the body while it waited
	// for the client).
	inRead  atomic.Bool
	timerMu sync.Mutex
	timer   *time.Timer // created by the first read; guarded by timerMu
	waiting bool        // a read is in progress; guarded by timerMu
	mark    int64       // src's progress when the timer was armed
	// since is monoNow when the current wait began (a read, or progress
	// seen by the timer): a firing sooner than idle after it is one a
	// Stop came too late for, meant for an earlier read.
	since time.Duration
}

// progresser is a body that counts the bytes its connection has received,
// framing included (the HTTP/1 server's: a chunked body's size lines are
// read within one Read, and are the client's progress too).
type progresser interface{ progress() int64 }

func (b *countingBody) Read(p []byte) (int, error) {
	if b.idle > 0 && !b.idleOff.Load() {
		b.armIdle()
		defer b.disarmIdle()
	}
	b.inRead.Store(true)
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	if err == io.EOF {
		b.endAt.Store(int64(monoNow()))
		b.eof.Store(true)
		if f := b.onEOF.Swap(nil); f != nil {
			(*f)()
		}
	}
	cut := false
	if err != nil && err != io.EOF {
		b.mu.Lock()
		if cut = b.closed; !cut {
			b.err = err
		}
		b.mu.Unlock()
	}
	if !cut {
		b.inRead.Store(false)
	}
	if err == io.EOF && b.trailerOf != nil {
		n := 0
		for k, v := range b.trailerOf.Trailer {
			if _, announced := b.trailer[k]; !announced || len(v) == 0 {
				continue // not announced, or not to be forwarded
			}
			if b.maxTrailer > 0 && n+len(v) > b.maxTrailer {
				continue // over the head's limit of values
			}
			n += len(v)
			b.trailer[k] = v
		}
	}
	return n, err
}

// requestBody returns the body to forward, or nil when the request has
// none. HTTP/2 and HTTP/3 servers give every request a Body, even one whose
// headers ended the stream; sent on as is, it would reach an HTTP/1.1
// upstream as an empty chunked body, which on a GET some servers refuse as
// a smuggling attempt (RFC 9110 9.3.1). net/http's HTTP/2 server sets
// ContentLength 0 exactly when there is no body (the headers ended the
// stream, or content-length: 0). quic-go's HTTP/3 server sets -1 whatever
// follows, so for methods that rarely have a body one byte is probed, as
// net/http's client does: an immediate end means none; anything else, or
// no answer within bodyProbeWait, is streamed as the body.
func requestBody(r *http.Request) io.ReadCloser {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	if r.ProtoMajor < 2 {
		return r.Body // Meridian's HTTP/1 server gives NoBody when there is none
	}
	switch {
	case r.ContentLength == 0:
		return nil
	case r.ContentLength > 0 || !usuallyBodiless(r.Method):
		return r.Body
	}
	return probeBody(r.Body, bodyProbeWait)
}

// bodyProbeWait is how long probeBody waits for the first byte or the end.
const bodyProbeWait = 200 * time.Millisecond

func usuallyBodiless(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

type probeResult struct {
	b   byte
	n   int
	err error
}

// probeBody reads one byte of rc, waiting at most wait: nil if rc ended at
// once, else a body that gives the probed byte first (or, if the read is
// still pending, waits for it on first Read).
func probeBody(rc io.ReadCloser, wait time.Duration) io.ReadCloser {
	ch := make(chan probeResult, 1)
	go func() {
		var buf [1]byte
		n, err := rc.Read(buf[:])
		ch <- probeResult{buf[0], n, err}
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case pr := <-ch:
		if pr.n == 0 && pr.err == io.EOF {
			return nil
		}
		return &probedBody{rc: rc, first: pr, have: true}
	case <-t.C:
		return &probedBody{rc: rc, pending: ch}
	}
}

// probedBody is a body whose first byte probeBody read.
type probedBody struct {
	rc      io.ReadCloser
	pending chan probeResult // the probe's read, if it had not returned
	first   probeResult
	have    bool // first holds the probe's result, not yet delivered
}

func (b *probedBody) Read(p []byte) (int, error) {
	if b.pending != nil {
		b.first, b.have = <-b.pending, true
		b.pending = nil
	}
	if b.have {
		b.have = false
		if b.first.n == 1 {
			if len(p) == 0 {
				b.have = true
				return 0, nil
			}
			p[0] = b.first.b
			return 1, b.first.err
		}
		if b.first.err != nil {
			return 0, b.first.err
		}
	}
	return b.rc.Read(p)
}

func (b *probedBody) Close() error { return b.rc.Close() }

func (b *countingBody) armIdle() {
	b.timerMu.Lock()
	defer b.timerMu.Unlock()
	b.waiting = true
	b.since = monoNow()
	if p, ok := b.src.(progresser); ok {
		b.mark = p.progress()
	}
	if b.timer == nil {
		b.timer = time.AfterFunc(b.idle, b.idleExpired)
		return
	}
	b.timer.Reset(b.idle)
}

func (b *countingBody) disarmIdle() {
	b.timerMu.Lock()
	b.waiting = false
	if b.timer != nil {
		b.timer.Stop()
	}
	b.timerMu.Unlock()
}

func (b *countingBody) idleExpired() {
	b.timerMu.Lock()
	if b.idleOff.Load() || !b.waiting || b.expired.Load() {
		b.timerMu.Unlock()
		return
	}
	now := monoNow()
	if now-b.since < b.idle {
		// The firing of an earlier wait, which had begun before the
		// read that ended it stopped the timer: the timer is set again
		// for this one.
		b.timerMu.Unlock()
		return
	}
	if p, ok := b.src.(progresser); ok {
		if n := p.progress(); n != b.mark {
			// Bytes came (a chunk's framing, say) without a read
			// returning: the client is not idle.
			b.mark = n
			b.since = now
			b.timer.Reset(b.idle)
			b.timerMu.Unlock()
			return
		}
	}
	b.expired.Store(true)
	b.timerMu.Unlock()
	b.src.Close() // interrupts the blocked read; not under the lock
}

// stopIdle ends the read timeout: the response has begun, and what the
// client's body does from now on is between it and the upstream.
func (b *countingBody) stopIdle() {
	if b == nil || b.idle == 0 {
		return
	}
	b.timerMu.Lock()
	b.idleOff.Store(true)
	if b.timer != nil {
		b.timer.Stop()
	}
	b.timerMu.Unlock()
}

// readErr returns the error reading the client's body, if any.
// overLimit is the route's body limit if the body's read failed by
// passing it, else -1 (also for a nil b).
func (b *countingBody) overLimit() int64 {
	if b == nil {
		return -1
	}
	var mbe *http.MaxBytesError
	if errors.As(b.readErr(), &mbe) {
		return mbe.Limit
	}
	return -1
}

func (b *countingBody) readErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// atHand reports whether a read would return at once (bodyAtHand), as
// the client's body tells.
func (b *countingBody) atHand() bool { return bodyAtHand(b.src) }

// replayBody is a request body kept in memory to be sent again: always at
// hand.
type replayBody struct{ *bytes.Reader }

func (replayBody) Close() error { return nil }
func (replayBody) atHand() bool { return true }

func (b *countingBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return b.rc.Close()
}

var errResponseTooLarge = errors.New("upstream response exceeds the route's limit")

// connectionLost reports whether err is the client's connection failing
// (reset, closed), as opposed to a malformed or truncated body.
func connectionLost(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// retracter is a ResponseWriter that can take back a head it has not sent
// (the HTTP/1 server's; net/http's HTTP/2 and quic-go's cannot).
type retracter interface{ retract() bool }

// clientWriteError is a failure to write to the client (gone, or not
// reading: the send timeout), as opposed to one reading the upstream.
type clientWriteError struct{ err error }

func (e *clientWriteError) Error() string { return "writing to the client: " + e.err.Error() }
func (e *clientWriteError) Unwrap() error { return e.err }

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody streams the upstream body to the client. With flush set (an
// unknown-length or event-stream response) every chunk is flushed at once
// so that streams are not held back by buffering. Otherwise what has been
// written waits in the server's buffer for more, to share its writes,
// but not for an upstream that has gone quiet: once body bytes are held,
// and the next read may wait for the upstream, they are flushed (the head
// with them) if it waits longer than quietFlush (lateFlush). The head
// alone waits for the first body byte: a failure or a timeout before any
// (an upstream that closes or stalls after its head) finds nothing sent,
// and is answered with a 502 or 504 instead of a cut response; so does
// one that comes at once after some. It reports, besides the bytes
// written and the error, whether such a flush happened.
//
// A read of an HTTP/2 upstream's body that may wait waits readTimeout at
// most (0: without bound), counted from the end of the request body
// (reqBody, nil if none) when that comes later: then the stream is reset
// and errReadTimeout returned. (An HTTP/1 body's connection keeps the
// same bound itself: h1Conn.Read, which returns errReadTimeout.)
//
// Over HTTP/2 and HTTP/3 each write gets a deadline of sendTimeout (pushed
// forward when older than an eighth of it), so a stream whose client grants
// no more flow-control credit is reset rather than wait forever, and a read
// of the upstream that may wait clears it; the HTTP/1 server keeps its own
// (see serverConn.Write).
func copyBody(w http.ResponseWriter, proto int, src io.Reader, flush, flushHead bool, limit int64, sendTimeout, readTimeout time.Duration, reqBody *countingBody) (int64, bool, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var rc *http.ResponseController
	if flush {
		rc = http.NewResponseController(w)
	}
	if flushHead {
		if err := rc.Flush(); err != nil {
			return 0, false, &clientWriteError{err}
		}
	}
	_, h1 := w.(*response)
	r2 := proto == 2
	var wdlAt time.Duration // monoNow when the write deadline was pushed
	var written int64
	var late *lateFlush
	var watch *readWatch
	held := false // body bytes written since the last flush wait in the buffer
	defer func() {
		if late != nil {
			late.stop()
		}
		if watch != nil {
			watch.disarm()
		}
	}()
	for {
		waits := !readsAtOnce(src)
		if held && !flush && waits {
			if late == nil {
				var st time.Duration
				if !h1 {
					st = sendTimeout
				}
				late = newLateFlush(w, st)
			}
			late.arm()
		}
		if waits && wdlAt != 0 {
			// Over HTTP/2 a write deadline that passes resets the
			// stream, a write pending or not (net/http): none stands
			// while the upstream is silent, whose silence is the read
			// timeout's, not the client's.
			rc.SetWriteDeadline(time.Time{})
			wdlAt = 0
		}
		if waits && readTimeout > 0 && !isH1Body(src) {
			if watch == nil {
				watch = newReadWatch(src, readTimeout, reqBody)
			}
			watch.arm()
		}
		n, rerr := src.Read(buf)
		if watch != nil {
			watch.disarm()
		}
		if late != nil {
			fired, err := late.disarm()
			if err != nil {
				return written, true, &clientWriteError{err}
			}
			if fired {
				held = false
			}
		}
		if n > 0 {
			if limit > 0 && written+int64(n) > limit {
				return written, late.flushed(), errResponseTooLarge
			}
			for p := buf[:n]; len(p) > 0; {
				// Over HTTP/2 and HTTP/3 a write returns once all of it
				// has passed flow control, and the deadline is pushed
				// only between writes: written whole (32 KiB), a reader
				// taking less than that each send timeout, steadily,
				// was cut. Over HTTP/2 in frames' sizes (16 KiB), which
				// costs nothing (the frames are the same); not over
				// HTTP/3, where smaller writes cost quic-go's sender a
				// fifth of a large download's speed (an outside check).
				k := len(p)
				if !h1 && sendTimeout > 0 {
					if r2 {
						k = min(k, streamWritePiece)
					}
					if now := monoNow(); wdlAt == 0 || now-wdlAt > sendTimeout/8 {
						if rc == nil {
							rc = http.NewResponseController(w)
						}
						rc.SetWriteDeadline(monoBase.Add(now + sendTimeout))
						wdlAt = now
					}
				}
				m, werr := w.Write(p[:k])
				written += int64(m)
				if werr != nil {
					return written, late.flushed(), &clientWriteError{werr}
				}
				p = p[k:]
			}
			held = true
			if flush {
				if err := rc.Flush(); err != nil {
					return written, false, &clientWriteError{err}
				}
			}
		}
		if rerr == io.EOF {
			return written, late.flushed(), nil
		}
		if rerr != nil {
			if watch != nil && watch.cut() {
				rerr = errReadTimeout
			}
			return written, late.flushed(), rerr
		}
	}
}

// streamWritePiece is the most copyBody writes at once over HTTP/2 (a
// frame's default size): the progress the send timeout waits for.
const streamWritePiece = 16 << 10

// errReadTimeout: the upstream sent nothing of its response body for the
// service's read timeout (copyBody).
var errReadTimeout = errors.New("the upstream sent nothing more of its response body for the read timeout")

// readWatch cuts an HTTP/2 upstream's body whose next bytes are late
// (copyBody): armed before a read that may wait, its timer closes the
// body (resets the stream; net/http's HTTP/2 body may be closed while it
// is read), which ends the read. The request body's end counts as the
// upstream's last sign: while it is still coming (a stream whose
// upstream answers each piece of it waits for the client) the watch
// waits on.
type readWatch struct {
	t   *time.Timer
	d   time.Duration
	src io.Reader
	req *countingBody
	mu  sync.Mutex
	// armed during a read, due when it is up (monoNow): a timer that
	// fires before (set for an earlier read) waits on.
	armed bool
	due   time.Duration
	fired bool
}

func newReadWatch(src io.Reader, d time.Duration, req *countingBody) *readWatch {
	w := &readWatch{d: d, src: src, req: req}
	w.t = time.AfterFunc(time.Hour, w.fire)
	w.t.Stop()
	return w
}

func (w *readWatch) arm() {
	w.mu.Lock()
	w.armed, w.due = true, monoNow()+w.d
	w.mu.Unlock()
	w.t.Reset(w.d)
}

func (w *readWatch) disarm() {
	w.mu.Lock()
	w.armed = false
	w.mu.Unlock()
	w.t.Stop()
}

// cut reports whether the watch cut the body.
func (w *readWatch) cut() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fired
}

func (w *readWatch) fire() {
	w.mu.Lock()
	if !w.armed {
		w.mu.Unlock()
		return
	}
	now := monoNow()
	if rb := w.req; rb != nil {
		if !rb.eof.Load() {
			w.due = now + w.d
		} else if end := time.Duration(rb.endAt.Load()) + w.d; end > w.due {
			w.due = end
		}
	}
	if now < w.due {
		w.t.Reset(w.due - now)
		w.mu.Unlock()
		return
	}
	w.armed, w.fired = false, true
	w.mu.Unlock()
	if c, ok := w.src.(io.Closer); ok {
		c.Close()
	}
}

func isH1Body(src io.Reader) bool {
	_, ok := src.(*h1Body)
	return ok
}

// quietFlush is how long a response's bytes wait in the server's buffer
// for more while the upstream sends nothing (copyBody).
const quietFlush = 50 * time.Millisecond

// readsAtOnce reports whether a read of the body will not wait for the
// upstream: an HTTP/1 body of known length with bytes buffered, or ended.
// Other bodies may wait.
func readsAtOnce(src io.Reader) bool {
	b, ok := src.(*h1Body)
	return ok && b.readsAtOnce()
}

// lateFlush flushes a response from a timer while the goroutine copying
// its body waits for the upstream (copyBody): armed before such a read,
// disarmed after it. The flush and the copier's writes never overlap: the
// timer flushes only while armed, under mu, and the copier writes only
// after disarming, under mu.
type lateFlush struct {
	rc *http.ResponseController
	// sendTimeout (0: none) bounds the flush over HTTP/2 and HTTP/3, as
	// the copier's writes are bounded: a client that grants the stream
	// no flow-control credit would hold it, and the copier waiting on
	// mu, for ever. (The HTTP/1 server bounds its own writes.)
	sendTimeout time.Duration
	t           *time.Timer
	mu          sync.Mutex
	armed       bool
	err         error // the timer's flush's
	// fired: the timer flushed during the last read; any: ever.
	fired, any bool
}

func newLateFlush(w http.ResponseWriter, sendTimeout time.Duration) *lateFlush {
	l := &lateFlush{rc: http.NewResponseController(w), sendTimeout: sendTimeout}
	l.t = time.AfterFunc(time.Hour, l.fire)
	l.t.Stop()
	return l
}

func (l *lateFlush) arm() {
	l.mu.Lock()
	l.armed, l.fired = true, false
	l.mu.Unlock()
	l.t.Reset(quietFlush)
}

func (l *lateFlush) fire() {
	l.mu.Lock()
	if l.armed {
		l.armed = false
		l.fired, l.any = true, true
		if l.sendTimeout > 0 {
			l.rc.SetWriteDeadline(time.Now().Add(l.sendTimeout))
		}
		l.err = l.rc.Flush()
		if l.sendTimeout > 0 && l.err == nil {
			// None stands while the upstream is silent (see copyBody).
			l.rc.SetWriteDeadline(time.Time{})
		}
	}
	l.mu.Unlock()
}

// disarm ends the wait; it reports whether the timer flushed meanwhile,
// and that flush's error.
func (l *lateFlush) disarm() (fired bool, err error) {
	l.mu.Lock()
	l.armed = false
	fired, err = l.fired, l.err
	l.err = nil
	l.mu.Unlock()
	return fired, err
}

// stop ends the timer for good: no flush comes after it returns.
func (l *lateFlush) stop() {
	l.disarm()
	l.t.Stop()
}

// flushed reports whether a late flush happened (nil: none made).
func (l *lateFlush) flushed() bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.any
}

// earlyHints relays an upstream's 103 responses that arrive through a
// client trace (see ServeHTTP), a few at most, while not paused.
type earlyHints struct {
	w      http.ResponseWriter
	via    string // this hop's Via entry, "" for none
	mu     sync.Mutex
	paused bool
	n      int
}

func isH1Transport(rt http.RoundTripper) bool {
	_, ok := rt.(*h1Transport)
	return ok
}

func (e *earlyHints) resume() {
	if e != nil {
		e.mu.Lock()
		e.paused = false
		e.mu.Unlock()
	}
}

// pause stops relaying; once it returns, no relay is writing.
func (e *earlyHints) pause() {
	if e != nil {
		e.mu.Lock()
		e.paused = true
		e.mu.Unlock()
	}
}

func (e *earlyHints) got(code int, mh textproto.MIMEHeader) error {
	if code != http.StatusEarlyHints {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.paused || e.n >= maxEarlyHints {
		return nil
	}
	e.n++
	if oversizedHead(http.Header(mh)) {
		// An HTTP/1.1 upstream's transport refuses such a head; an
		// HTTP/2 one's passes it up to its own, larger, limit. Not
		// relayed: the final answer goes on.
		return nil
	}
	h := http.Header(mh).Clone()
	dropHopFields(h)
	if e.via != "" {
		h["Via"] = append(h["Via"], e.via)
	}
	if rw, ok := e.w.(*response); ok {
		rw.relayInformational(code, h)
		return nil
	}
	// net/http's HTTP/2 server and quic-go send an informational
	// response with the fields of the response's header map, and keep
	// them: the hints go in alone, out, and the map is put back as it was
	// (it may hold fields for the final response already, Alt-Svc say).
	wh := e.w.Header()
	saved := maps.Clone(wh)
	clear(wh)
	maps.Copy(wh, h)
	e.w.WriteHeader(code)
	clear(wh)
	maps.Copy(wh, saved)
	return nil
}

// cutEscaped returns what follows the first n decoded bytes of the
// percent-encoded path escaped.
// escapeRawPath percent-encodes the bytes of a raw path that are neither
// allowed in a path (RFC 3986 pchar, '/', and the '[' ']' url.URL lets
// pass) nor part of an escape, keeping the rest as it is: the result
// decodes to what raw does, and url.URL sends it unchanged.
func escapeRawPath(raw string) string {
	i := 0
	for i < len(raw) && rawPathByteOK[raw[i]] {
		i++
	}
	if i == len(raw) {
		return raw
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, i, len(raw)+16)
	copy(b, raw)
	for ; i < len(raw); i++ {
		if c := raw[i]; rawPathByteOK[c] {
			b = append(b, c)
		} else {
			b = append(b, '%', hex[c>>4], hex[c&15])
		}
	}
	return string(b)
}

// rawPathByteOK marks the bytes net/url's EscapedPath accepts in a RawPath
// (its validEncoded for a path): '%' among them, the escapes being checked
// when the path was parsed.
var rawPathByteOK = func() (t [256]bool) {
	t = pathByteAsIs
	for _, c := range []byte("%!'()*[]") {
		t[c] = true
	}
	return t
}()

func cutEscaped(escaped string, n int) string {
	return escaped[escapedIndex(escaped, n):]
}

// escapedIndex returns where, in escaped, the byte that decodes to the
// n-th byte of its decoding starts: each %XX triplet decodes to one byte.
func escapedIndex(escaped string, n int) int {
	i := 0
	for ; n > 0 && i < len(escaped); n-- {
		if escaped[i] == '%' && i+2 < len(escaped) {
			i += 3
		} else {
			i++
		}
	}
	return i
}

// escapedParams returns ps with each value as rawPath spells it: ps were
// captured from rawPath's decoding, each at its offset Off.
func escapedParams(rawPath string, ps router.Params) router.Params {
	out := make(router.Params, len(ps))
	for i, p := range ps {
		from := escapedIndex(rawPath, p.Off)
		to := from + escapedIndex(rawPath[from:], len(p.Value))
		out[i] = router.Param{Name: p.Name, Value: rawPath[from:to], Off: from}
	}
	return out
}

// removeDotSegments resolves "." and ".." segments of a path (RFC 3986
// section 5.2.4) so that routes and upstreams see the same resource: a
// request for /public/../admin must not match /public and then reach
// /admin. Other characters, repeated slashes and a trailing slash stay.
func removeDotSegments(p string) string {
	if !strings.Contains(p, "/.") {
		return p
	}
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

// normalizeHost lower-cases a Host header and strips the port and a
// trailing dot.
func normalizeHost(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// maxForwards is a request's Max-Forwards, if it has one well-formed
// (1*DIGIT, one field line; others are forwarded as they came).
func maxForwards(h http.Header) (uint64, bool) {
	vs := h["Max-Forwards"]
	if len(vs) != 1 {
		return 0, false
	}
	v := strings.TrimSpace(vs[0])
	if v == "" || len(v) > 19 || strings.TrimLeft(v, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil
}

// answerMaxForwards answers an OPTIONS or TRACE request whose Max-Forwards
// is 0, as its final recipient (RFC 9110 9.3.7, 9.3.8): OPTIONS with the
// route's methods, TRACE (on a route that takes it) with the request as
// received, less its content and its credentials.
func (g *Gateway) answerMaxForwards(w http.ResponseWriter, r *http.Request, x *exchange, rt *route) {
	h := w.Header()
	var body []byte
	if r.Method == http.MethodTrace {
		b := []byte(r.Method + " " + r.RequestURI + " " + r.Proto + "\r\nHost: " + r.Host + "\r\n")
		for _, k := range slices.Sorted(maps.Keys(r.Header)) {
			if k == "Authorization" || k == "Proxy-Authorization" || k == "Cookie" {
				continue // sensitive: not reflected (RFC 9110 9.3.8)
			}
			for _, v := range r.Header[k] {
				b = append(append(append(append(b, k...), ": "...), v...), "\r\n"...)
			}
		}
		body = append(b, "\r\n"...)
		h.Set("Content-Type", "message/http")
	} else {
		allow := rt.allow
		if allow == "" {
			allow = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
		}
		h.Set("Allow", allow)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	n, _ := w.Write(body)
	x.status, x.bytesOut = http.StatusOK, int64(n)
}
