package edge

// The span lane: a lean request served from its head's spans.
//
// Why: the lean path (h1lean.go) sends a lean request's head and relays a
// plain answer from spans, but every request still becomes an
// http.Request with its header map, URL and context, a response writer,
// and a pass through the general handler (Gateway.serve and relay). A
// scratch build that served the benchmark's requests without those cut
// the gateway's user time per request to 0.80x at 64 connections and 0.70x
// at 256 and raised its throughput 1.06x and 1.10x (make bench-ab), level
// with nginx at 64 connections (README, "Then (session 17)").
//
// What it serves: on an HTTP/1 connection of a plain listener whose
// handler is the gateway itself, or of a TLS listener with no
// client-certificate policies (tlsLane, which adds the listener's Alt-Svc
// as its handler does), a request the lean path would take (classifyLean:
// GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS, HTTP/1.1 or 1.0, no
// field the gateway interprets) on a lean route (route.lean), with a body
// only when it is whole in the connection's buffer and within the route's
// limit: sent with the head in one write, which a retry of an idempotent
// request (forward) writes again. Its header map
// is made only when a route of the table matches on headers or the
// balancer hashes on a header or cookie (laneHeader).
// Anything else, and any request the lane finds it cannot serve before it
// sends anything upstream, goes the general way as if the lane were not
// there.
//
// How: serveLane matches the route from the head's spans, picks a target,
// and sends the lean head (appendLeanRequestHead) with the request's own
// small state (requestState: its context, the disconnect watch) and no
// http.Request. A plain answer (leanResponse) whose body came whole with
// its head, or a HEAD's, is written straight to the connection's buffer
// in the order the HTTP/1 server writes it, and the exchange recorded as
// finish records it. Any other outcome (an error, another kind of answer, a
// status the service retries on, a body still coming, an answer over the
// route's limit, a 103 Early Hints) makes the request present: the
// http.Request is built from the kept head into the same state
// (buildRequestIn), the server's response begun, and the rest is the
// general path's own code (forward, from its first attempt's outcome: the
// retries, targetFailed, requestCanceled, relay) run as the server runs a
// handler (runResponse). A service's total timeout is a context under the
// request's, for the lane's attempt as for the general path's.
//
// TestLaneMatchesPresentPath compares the lane with the general path.

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/meridian-gw/meridian/edge/upstream"
)

// laneServed counts the requests the span lane took, lanePresented those of
// them it made present (for tests).
var laneServed, lanePresented pathCounter

// laneServer serves requests on the span lane (the gateway).
type laneServer interface {
	// serveLane serves the request whose head c.reqHead holds (rl its
	// request line) if it can, and reports whether it did and whether
	// the connection can take another request.
	serveLane(c *serverConn, rl requestLine) (served, keep bool)
}

// laneRequest is the request a connection serves on the lane.
type laneRequest struct {
	rl      requestLine
	close   bool  // an HTTP/1.0 request without keep-alive (leanRequest)
	bodyLen int64 // the body sent with the head (leanRequest)
	rs      *requestState
	present bool // made present (lanePresent): req and w are set
	req     *http.Request
	w       *response
}

// lanePresent makes the lane's request a present one: its http.Request
// built from the kept head into its state, and the server's response to
// it begun. Called at most once per request, on the serving goroutine
// (during the upstream exchange, for a 103).
func (c *serverConn) lanePresent() {
	l := &c.lane
	if l.present {
		return
	}
	req, _, perr := c.buildRequestIn(l.rl, l.rs, new(requestParts))
	if perr != nil {
		// The lane takes only heads buildRequest accepts.
		panic("edge: the span lane's request head does not build: " + perr.detail)
	}
	if l.bodyLen > 0 {
		// Its body went upstream with the head and left the buffer
		// (serveLaneWith): nothing is left to read, or to discard at the
		// end.
		req.Body = http.NoBody
		l.rs.bodyOpen.Store(false)
	}
	l.req, l.w, l.present = req, c.beginResponse(req, l.rs), true
	lanePresented.count()
}

// serveLane is the span lane of a plain listener whose handler is the
// gateway.
func (g *Gateway) serveLane(c *serverConn, rl requestLine) (served, keep bool) {
	return g.serveLaneWith(c, rl, "")
}

// tlsLane is the span lane of a TLS listener without client-certificate
// policies: the gateway's, with the Alt-Svc its handler adds to every
// answer (HTTP/3; "" for none).
type tlsLane struct {
	g      *Gateway
	altSvc string
}

func (l *tlsLane) serveLane(c *serverConn, rl requestLine) (served, keep bool) {
	return l.g.serveLaneWith(c, rl, l.altSvc)
}

// serveLaneWith is serveLane, with altSvc the Alt-Svc the listener's
// handler sets on each response before the gateway serves it.
func (g *Gateway) serveLaneWith(c *serverConn, rl requestLine, altSvc string) (served, keep bool) {
	if c.s.shutting.Load() || c.tls != nil && g.clientAuth.Load() {
		// X-Forwarded-Client-Cert is the general path's (leanHead).
		return false, false
	}
	hb := c.reqHead
	lr, ok := classifyLean(hb, rl, g.opts.MaxHeaderCount, g.opts.Underscores)
	if !ok {
		return false, false
	}
	snap := g.snap.Load()
	if snap == nil {
		return false, false
	}
	// The target and the Host in one string (the fields follow the
	// request line): one allocation.
	if int(lr.host[0]) < lr.target[1] {
		return false, false
	}
	span := string(hb.buf[lr.target[0]:lr.host[1]])
	target := span[:lr.target[1]-lr.target[0]]
	hostIn := span[int(lr.host[0])-lr.target[0]:]
	if !validHost(hostIn) {
		return false, false // the general path's 400
	}
	method := lr.methodName
	path, query, _ := strings.Cut(target, "?")
	host := normalizeHost(hostIn)
	// The request as the route table and the balancer read it, in the
	// call's own URL and request (set again for the upstream request
	// below): a pooled call was used by this P's last request and is
	// still in its cache, where this goroutine's stack, after 255 other
	// connections ran, is not (a struct of this size built on the stack
	// missed on every store; see bench/HISTORY.md, session 25).
	// Their fields are set one by one: a pooled call's are zero, and a
	// composite literal assigned to a heap object is built on the stack
	// first.
	cl := calls.Get().(*call)
	u, mr := &cl.url, &cl.out
	u.Path, u.RawQuery = path, query
	mr.Method, mr.URL, mr.Host, mr.RemoteAddr = method, u, hostIn, c.remote
	if !c.peerParsed {
		c.peer, c.peerStr = clientAddr(c.remote)
		c.peerParsed = true
	}
	trusted := g.trustedPeer(c.peer)
	if snap.table.ReadsHeaders() {
		if !c.laneHeader(mr) {
			cl.drop()
			return false, false
		}
		// As routes see it (routeView); the upstream's head is made
		// from the client's bytes, not from this map.
		mr.Header = routeView(mr, trusted).Header
	}
	m, ok := snap.table.Match(mr, host, path)
	if !ok {
		cl.drop()
		return false, false // the general path's 404
	}
	rt := m.Route.Value.(*route)
	svc := rt.svc
	h1, isH1 := svc.transport.(*h1Transport)
	if !rt.lean || !isH1 {
		cl.drop()
		return false, false
	}
	if lr.bodyLen > 0 && (lr.bodyLen > rt.maxReqBody || int64(c.br.Buffered()) < lr.bodyLen ||
		svc.retry != nil && idempotent(method) && lr.bodyLen > retryBufferLimit) {
		// A body the lane sends with the head: whole in the buffer
		// already, within the route's limit (else the present path's
		// 413), and, if a retry may send it again, one the present path
		// would keep to replay. It goes with the head in one write, and
		// a retry (forward) writes the same again: the head is made for
		// every attempt.
		cl.drop()
		return false, false
	}
	// The path upstream: the route's rewrite or strip (upTarget "" when
	// neither), as the general path makes it.
	upPath, upTarget := path, ""
	if rt.rewritePath != nil || rt.stripPrefix != "" {
		out := rt.upstreamURL(u, path, path, m.Params)
		if upTarget, ok = leanRewrite(rt, &out); !ok {
			cl.drop()
			return false, false
		}
		upPath = out.Path
	}
	if svc.pool.ReadsHeaders() && mr.Header == nil && !c.laneHeader(mr) {
		cl.drop()
		return false, false
	}
	// Through a trusted proxy the client is the one it forwarded, for the
	// balancer and the log (identifyClient).
	client, origin := c.peerStr, ""
	if trusted && lr.fwd&fwdFor != 0 {
		var xff []string
		for _, f := range hb.fields {
			if leanFieldKind(hb.buf[f.name[0]:f.name[1]]) == leanXFF {
				xff = append(xff, string(hb.buf[f.value[0]:f.value[1]]))
			}
		}
		if origin = g.forwardedClient(xff); origin != "" {
			client = origin
		}
	}
	if !svc.pool.Acquire() {
		cl.drop()
		return false, false // the general path's 503
	}
	t, err := svc.pool.Pick(mr, client, nil)
	if err != nil {
		svc.pool.Release()
		cl.drop()
		return false, false // the general path's 503
	}
	retry := svc.retry
	if retry != nil {
		retry.budget.request()
	}

	// Served here from now on. What ServeHTTP, serve and the HTTP/1
	// server's serveRequest do for a request, in their order.
	laneServed.count()
	start := monoNow()
	var rs *requestState
	if svc.total > 0 {
		ts := &timedState{}
		ts.requestState.total = &ts.total
		rs = &ts.requestState
		// Before startWatch: the watch arms its timer (watchDue).
		ts.total.begin(&rs.requestContext, start+svc.total)
	} else {
		rs = &requestState{}
	}
	rs.start = start
	rs.parsed, rs.peer, rs.peerStr = true, c.peer, c.peerStr
	rs.watchOK = true
	rs.respHeader = c.spareHeader()
	if c.lanePresentF == nil {
		c.lanePresentF = c.lanePresent
	}
	rs.toPresent = c.lanePresentF
	c.cur.Store(&rs.requestContext)
	// c.lane is zero between requests; set field by field (a composite
	// literal would be built on the stack first).
	l := &c.lane
	if l.present {
		*l = laneRequest{} // left so only by a request that never ended (a panic)
	}
	l.rl, l.close, l.bodyLen, l.rs = rl, lr.close, lr.bodyLen, rs
	var body []byte
	if lr.bodyLen > 0 {
		// The body goes with the head, in one write (below). It leaves
		// the connection's buffer now, before the disconnect watch
		// looks at the buffer: the watch sees the client as for a
		// bodyless request, and a request made present has no body to
		// read (lanePresent). Its bytes stay where they are until the
		// buffer's next read, after this request.
		body, _ = c.br.Peek(int(lr.bodyLen))
		c.br.Discard(len(body))
	}
	c.startWatch(rs)

	x := &cl.x
	x.start = start
	x.host = host
	x.clientIP, x.clientIPStr = c.peer, c.peerStr
	x.trusted, x.origin = trusted, origin
	g.metrics.inFlightN.Add(1)
	x.route = rt
	if lr.reqID != ([2]int32{}) {
		// The client's, when valid, as identify takes it.
		if id := string(hb.buf[lr.reqID[0]:lr.reqID[1]]); validRequestID(id) {
			x.reqID = id
		}
	}

	upHost := hostIn
	if rt.hostRewrite != "" {
		upHost = rt.hostRewrite
	}
	a := leanAdds{svc: svc, peer: c.peer, peerStr: c.peerStr, host: hostIn, upHost: upHost, plainTCP: c.tls == nil, target: upTarget,
		reqOps: rt.reqOps.orNil(), respOps: rt.respOps.orNil(), trusted: trusted}
	oh := &cl.oh
	g.makeLeanHead(oh, hb, &lr, &a, x)
	if body != nil {
		oh.raw = append(oh.raw, body...)
		oh.rawBody = true
	}
	// The upstream request, in the call's URL and request (mr): what is
	// set of them above (the path, the query, the method, the URL) kept
	// or set again, the rest cleared.
	u.Scheme, u.Host, u.Path = t.URL.Scheme, t.URL.Host, upPath
	mr.Proto, mr.ProtoMajor, mr.ProtoMinor = "HTTP/1.1", 1, 1
	mr.Host, mr.RemoteAddr, mr.Header = upHost, "", nil
	x.target = t.URL.Host
	x.attempts = 1
	att := targetTurn{t: t, open: true}
	var ctx context.Context = &rs.requestContext
	if rs.total != nil {
		ctx = rs.total
	}
	rs.requestContext.hintVia = ""
	if !svc.noVia {
		rs.requestContext.hintVia = g.via11 // on a relayed 103 (relayEarlyHints)
	}
	t.Start()
	// The upstream's time from the request's start: what the lane did
	// before it (a microsecond) is not worth a clock read of its own.
	resp, err := h1.roundTrip(ctx, &cl.out, oh, start)
	upEnd := monoNow()
	x.upstreamDur += upEnd - start
	x.upstreamHead = err == nil
	if lr.bodyLen > 0 && (err == nil || !noConnection(err) || retry != nil && idempotent(method)) {
		// As the present path counts what it read of the body: what its
		// body writer took, or all of it when it keeps the body for a
		// retry (read before any attempt; a retry sends it again).
		x.bytesIn = lr.bodyLen
	}

	if err == nil && !c.lane.present && oh.leanResp && resp.Header == nil &&
		(rt.maxRespBody <= 0 || resp.ContentLength <= rt.maxRespBody) &&
		(retry == nil || retry.attempts == 0 || !idempotent(method) || !retry.retryStatus(resp.StatusCode)) {
		var body []byte
		whole := resp.Body == http.NoBody
		if b, ok := resp.Body.(*h1Body); ok {
			body = b.buffered()
			whole = body != nil
		}
		if whole {
			// The answer is written from here, from the buffer unless it
			// is larger: its end is now for the log unless a write to the
			// client comes first (laneAnswer), and for the connection's
			// first write's deadline check (clockHint).
			x.end, c.clockHint = upEnd, upEnd
			// laneAnswer ends the total too: after its last write to
			// the client (a system call whose kernel work leaves the
			// caches cold), as little as can be is touched.
			return true, g.laneAnswer(c, cl, rt, resp, &att, method, hostIn, path, body, altSvc)
		}
	}

	// Made present: the general path's code from here.
	c.lanePresent()
	rest := &laneRest{g: g, cl: cl, rt: rt, first: laneAttempt{t: t, resp: resp, err: err, att: att},
		method: method, path: upPath, query: query, host: upHost, ctx: ctx}
	if altSvc != "" {
		l.w.header["Alt-Svc"] = []string{altSvc} // as the listener's handler sets it
	}
	keep = c.runResponse(l.req, rs, l.w, rest)
	if rs.total != nil {
		rs.total.end()
	}
	c.lane = laneRequest{}
	return true, keep
}

// laneHeader gives mr, for a route table or a balancer that reads the
// request's header, the connection's header map filled from the head as
// buildRequest fills it; false if the head does not make one (left to the
// general path).
func (c *serverConn) laneHeader(mr *http.Request) bool {
	if c.reqHeader == nil {
		c.reqHeader = make(http.Header)
	} else {
		clear(c.reqHeader)
	}
	hb := c.reqHead
	h, _, err := hb.header(c.reqHeader, string(hb.buf), true, nil)
	if err != nil {
		return false
	}
	mr.Header = h
	return true
}

// laneAnswer writes a plain answer whose whole body (nil for none) came
// with its head, as writeLeanHead, relay and the HTTP/1 server's response
// would, records the exchange, and ends the request; it reports whether
// the connection can take another request.
func (g *Gateway) laneAnswer(c *serverConn, cl *call, rt *route, resp *http.Response, att *targetTurn, method, host, path string, body []byte, altSvc string) (keep bool) {
	x, svc, oh := &cl.x, rt.svc, &cl.oh
	outcome := upstream.Success
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		outcome = upstream.Failure
	}
	x.status = resp.StatusCode
	l := &c.lane
	closeAfter := c.s.shutting.Load() || l.close
	bw := c.bw
	bw.WriteString(statusLine(resp.StatusCode))
	if altSvc != "" && !hasFieldLine(oh.respHead, "Alt-Svc") {
		// The listener's, unless the upstream sent its own
		// (writeLeanHead).
		bw.WriteString("Alt-Svc: ")
		bw.WriteString(altSvc)
		bw.WriteString("\r\n")
	}
	bw.Write(oh.respHead)
	if !svc.noVia {
		bw.WriteString("Via: ")
		bw.WriteString(g.via11)
		bw.WriteString("\r\n")
	}
	bw.WriteString("Content-Length: ")
	// Formatted in the writer's own free space (an array of ours would
	// go to the heap: Write may hand it to the connection).
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), resp.ContentLength, 10))
	bw.WriteString("\r\n")
	if !oh.respDate {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString("\r\n")
	}
	// As the server's response says it (sendHeader).
	if closeAfter {
		bw.WriteString("Connection: close\r\n")
	} else if l.rl.minor == 0 {
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
	leanAnswers.count()
	var werr error
	if body != nil {
		if method != http.MethodHead {
			// A body larger than what the buffer has left goes out now:
			// a client gone shows here, as in relay (a smaller one's
			// failure shows at the flush below, after the log line, as
			// on the general path).
			if len(body) > bw.Available() {
				// Written to the socket now, which may wait for the
				// client: the record's end is read after it.
				x.end = 0
			}
			if _, werr = bw.Write(body); werr == nil {
				x.bytesOut = int64(len(body))
			}
		}
		resp.Body.(*h1Body).consumeBuffered()
	}
	if werr != nil {
		// The response's Write and relay's reading of a failed write to
		// the client: nothing counted as sent, the connection broken.
		switch {
		case isTimeout(werr):
			x.errKind = "client_send_timeout"
		case g.cut.Load():
			x.errKind = "drain_timeout"
		default:
			x.errKind = "client_canceled"
		}
		c.broken.Store(true)
	}
	resp.Body.Close()
	att.end(outcome)
	rt.svc.pool.Release()
	g.record(x, x.status, method, c.remote, l.rl.proto, host, nil, path)
	g.metrics.inFlightN.Add(-1)
	cl.release()

	c.stopWatch()
	rs := c.lane.rs
	rs.cancel()
	if rs.total != nil {
		rs.total.end()
	}
	c.lane = laneRequest{}
	if err := c.bw.Flush(); err != nil {
		return false
	}
	return !closeAfter && !c.broken.Load()
}

// laneRest is the rest of a lane request made present: the general path's
// attempts (forward), its first the lane's, and the answer.
type laneRest struct {
	g     *Gateway
	cl    *call
	rt    *route
	first laneAttempt
	// The request's method; the upstream request's path, query and Host.
	method, path, query, host string
	// ctx is the attempts' context: the request's, or its total (ended
	// by serveLaneWith).
	ctx context.Context
}

func (l *laneRest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g, svc := l.g, l.rt.svc
	// In ServeHTTP's and serve's order: the call is done after the
	// service's slot is given back.
	defer g.done(r, l.cl)
	defer svc.pool.Release()
	g.forward(w, r, l.cl, l.rt, &upRequest{
		outURL: url.URL{Path: l.path, RawQuery: l.query}, host: l.host, oh: &l.cl.oh, ctx: l.ctx,
		// The lane takes no upgrade; a body it took went with the head
		// (oh.raw), which every attempt writes again.
		canRetry: svc.retry != nil && idempotent(l.method),
		first:    &l.first,
	})
}
