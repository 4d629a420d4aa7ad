package edge

// The lean HTTP/1 path.
//
// Why: session 15's experiments (README, "Then (session 15)") served the
// benchmark's requests inside Meridian's own HTTP/1 server with the heads
// kept as spans, read and checked by the server's parser, copied field by
// field with the hop-by-hop fields left out: 1.03x nginx's req/s at 64
// connections and 0.97x at 256, against 0.91x and 0.82x for the general
// path in the same runs. What costs is the work between the heads: header
// maps, http.Request and http.Response, their contexts, the response
// writer.
//
// What it does, within the general path (Gateway.serve and relay), for a
// bodyless request read by the HTTP/1 server (plain or TLS; the span lane,
// h1lane.go, takes requests with a body whole in the buffer too):
//
//  1. readRequest keeps the head block parseHead read (one parser, one set
//     of rules for every request) until the request is served.
//  2. On a lean route (an HTTP/1 service whose targets are plain HTTP with
//     no path of their own, and no edit of the answer's Via or Alt-Svc;
//     route.lean), once the route is matched, leanHead asks classifyLean
//     whether the request is one the general path would forward unchanged
//     but for its own fields, the route's header edits and its rewrite or
//     prefix strip (whose result, too, must need no escaping:
//     leanRewrite): GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS, HTTP/1.1
//     or 1.0, one valid Host, at most one plain Content-Length (a body only
//     for POST, PUT, PATCH and DELETE), an origin-form
//     target that needs no normalising, and no field the gateway
//     interprets, replaces or drops (framing and hop-by-hop fields,
//     two Traceparents, underscores when they are policed) but for the
//     client's trace and request id, which the service's settings replace
//     or pass on as the present path does, a Connection that says
//     keep-alive alone, dropped as the present path drops it, and the
//     forwarding fields, replaced or dropped from a peer that is not a
//     trusted proxy, extended or kept from one that is (setForwarded).
//     If so the upstream head
//     is appended from the spans with the service's fields
//     (appendLeanRequestHead), byte for byte what writeRequestHead writes
//     for the same request, and sent for every attempt (retries too);
//     mutual TLS keeps the general path for X-Forwarded-Client-Cert.
//  3. The upstream client reads the answer's head into spans as always; a
//     plain answer to a lean request (a final status with a body, one
//     Content-Length, no hop-by-hop field but Keep-Alive and a Connection
//     of keep-alive or close, which are dropped, no Via, not an event
//     stream; leanResponse) becomes the client's field lines at once, with
//     no map (the route's edits made on them), and writeLeanHead puts them
//     in the server's response with Via and the
//     length; its body is copied as any other.
//  4. Anything else (another request, another answer, every error, 1xx
//     answers before the final one) is the general path's, unchanged.
//
// TestLeanRequestHeadMatchesPresentPath and TestLeanMatchesPresentPath
// compare the two paths; leanRequests and leanAnswers count what the lean
// path took.

import (
	"bytes"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
)

// leanRequests and leanAnswers count the requests the lean path sent and
// the answers it relayed plain (for tests).
var leanRequests, leanAnswers pathCounter

// notLean, when set, names the routes kept off the lean path and the span
// lane whatever they are: tests set it (harness_test.go), to compare those
// with the general path on twin routes.
var notLean func(route string) bool

// countPaths turns the path counters on. Tests set it (harness_test.go):
// a serving gateway does not pay for atomics on shared memory, a few on
// every request, that only tests read.
var countPaths bool

// pathCounter counts the requests that took a path, when countPaths.
type pathCounter struct{ atomic.Int64 }

func (p *pathCounter) count() {
	if countPaths {
		p.Add(1)
	}
}

// leanRequest is a request head the lean path may serve, as spans of
// c.reqHead.buf.
type leanRequest struct {
	method, target [2]int
	host           [2]int32
	// traceparent is the value of the request's Traceparent, reqID that of
	// its first X-Request-Id ({0, 0}: none); ids says it has one of those,
	// a Tracestate or a Connection: keep-alive, which the gateway may
	// replace or drops (appendLeanRequestHead).
	traceparent, reqID [2]int32
	ids                bool
	// fwd says which forwarding fields it has (fwdFor and the others),
	// which the gateway replaces, extends or drops by the peer's trust
	// and the service's settings (appendLeanRequestHead).
	fwd uint8
	// minor is the request's HTTP/1 minor version; close: an HTTP/1.0
	// request without Connection: keep-alive, whose connection ends with
	// its answer.
	minor int
	close bool
	// methodName is the method (a constant); bodyLen the body's length
	// (Content-Length; 0 for none), hasLength whether a Content-Length
	// came; idemKey: an Idempotency-Key or X-Idempotency-Key came.
	methodName string
	bodyLen    int64
	hasLength  bool
	idemKey    bool
}

// leanMethod is the method m names when the lean path takes it ("" if
// not), as a constant.
func leanMethod(m []byte) string {
	for _, name := range leanMethods {
		if string(m) == name {
			return name
		}
	}
	return ""
}

// leanMethods are the methods the lean path takes, the commonest first.
var leanMethods = [...]string{http.MethodGet, http.MethodPost, http.MethodHead, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}

// leanLength is the value of a Content-Length field the lean path takes:
// digits alone, with no leading zero, below 2^31.
func leanLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 9 || len(v) > 1 && v[0] == '0' {
		return 0, false
	}
	var n int64
	for _, b := range v {
		if b < '0' || b > '9' {
			return 0, false
		}
		n = n*10 + int64(b-'0')
	}
	return n, true
}

// The forwarding fields of a lean request (leanRequest.fwd).
const (
	fwdFor   = 1 << iota // X-Forwarded-For
	fwdProto             // X-Forwarded-Proto
	fwdHost              // X-Forwarded-Host
	fwdOther             // Forwarded, X-Forwarded-Client-Cert, the spoofable ones
)

// classifyLean reports whether the head parseHead read into hb is one the
// lean path serves exactly as the present path would (see above), and
// where its parts are. maxCount and underscores are the gateway's
// MaxHeaderCount and Underscores.
func classifyLean(hb *headBlock, rl requestLine, maxCount int, underscores UnderscorePolicy) (leanRequest, bool) {
	buf := hb.buf
	var lr leanRequest
	if rl.major != 1 || rl.minor > 1 {
		return lr, false
	}
	lr.minor, lr.close = rl.minor, rl.minor == 0 // closed unless it says keep-alive
	if lr.methodName = leanMethod(buf[:rl.sp1]); lr.methodName == "" {
		return lr, false
	}
	lr.method = [2]int{0, rl.sp1}
	lr.target = [2]int{rl.targetAt, rl.targetEnd}
	if !leanTarget(buf[rl.targetAt:rl.targetEnd]) {
		return lr, false
	}
	policed := underscores == UnderscoresDrop || underscores == UnderscoresReject
	hosts := 0
	for _, f := range hb.fields {
		name := buf[f.name[0]:f.name[1]]
		if indexByte(name, '_') >= 0 && (policed || underscoreGuarded(string(name))) {
			return lr, false
		}
		switch leanFieldKind(name) {
		case leanHost:
			hosts++
			lr.host = f.value
		case leanRefused:
			return lr, false
		case leanTraceparent:
			if lr.traceparent != ([2]int32{}) {
				return lr, false // two are none (W3C): the present path's
			}
			lr.traceparent, lr.ids = f.value, true
		case leanTracestate:
			lr.ids = true
		case leanRequestID:
			if lr.reqID == ([2]int32{}) {
				lr.reqID = f.value
			}
			lr.ids = true
		case leanConnection:
			// "Connection: keep-alive", which many HTTP/1.1 clients send
			// (Python's requests, Node's agents, Java's): what HTTP/1.1
			// does anyway, and dropped as every Connection field is. It
			// names Keep-Alive, which a lean request does not have. An
			// HTTP/1.0 client's keeps its connection open.
			if !onlyKeepAlive(buf[f.value[0]:f.value[1]]) {
				return lr, false
			}
			lr.ids, lr.close = true, false
		case leanXFF:
			lr.fwd |= fwdFor
		case leanXFProto:
			lr.fwd |= fwdProto
		case leanXFHost:
			lr.fwd |= fwdHost
		case leanForwarded:
			if !validForwarded(buf[f.value[0]:f.value[1]]) {
				return lr, false // dropped by the present path (setForwarded)
			}
			lr.fwd |= fwdOther
		case leanSpoofable, leanXFCC:
			lr.fwd |= fwdOther
		case leanContentLength:
			n, ok := leanLength(buf[f.value[0]:f.value[1]])
			if !ok || lr.hasLength {
				return lr, false // the present path's to judge (400, or a list of equal values)
			}
			lr.bodyLen, lr.hasLength = n, true
		case leanIdemKey:
			lr.idemKey = true
		}
	}
	m := lr.methodName
	if lr.bodyLen > 0 && !methodExpectsBody(m) && m != http.MethodDelete {
		return lr, false // a GET's body, say: the present path's
	}
	if lr.idemKey && lr.bodyLen == 0 && !idempotent(m) {
		// The present path sends such a request again on a new
		// connection when the upstream closed a reused one under it
		// (replayable); the lean head does not show its fields.
		return lr, false
	}
	if hosts != 1 || lr.host[0] == lr.host[1] {
		return lr, false // the present path's 400, or no host to forward
	}
	// The Host's form was checked by buildRequest (validHost), which
	// every request the gateway serves passed.
	if maxCount > 0 && len(hb.fields)-hosts > maxCount {
		return lr, false // 431 from the present path, which counts all but Host
	}
	return lr, true
}

// onlyKeepAlive reports whether a Connection value lists keep-alive and
// nothing else (in any case, with empty list elements allowed).
func onlyKeepAlive(v []byte) bool {
	ok, _ := connectionTokens(v, false)
	return ok
}

// connectionTokens reports whether a Connection value lists at least one
// token, each keep-alive or, if orClose, close (no field's name), and
// whether one is close.
func connectionTokens(v []byte, orClose bool) (ok, close bool) {
	seen := false
	for len(v) > 0 {
		var el []byte
		if i := indexByte(v, ','); i >= 0 {
			el, v = v[:i], v[i+1:]
		} else {
			el, v = v, nil
		}
		el = bytes.Trim(el, " \t")
		if len(el) == 0 {
			continue
		}
		switch {
		case equalFoldToken(el, "keep-alive"):
		case orClose && equalFoldToken(el, "close"):
			close = true
		default:
			return false, false
		}
		seen = true
	}
	return seen, close
}

// leanTarget reports whether an origin-form target goes upstream as it
// came on the present path: parseOriginForm takes it (no escapes, no
// bytes url.URL would escape, no empty query), no fragment, and no dot
// segment to remove.
func leanTarget(t []byte) bool {
	if len(t) == 0 || t[0] != '/' {
		return false
	}
	q := indexByte(t, '?')
	path := t
	if q >= 0 {
		path = t[:q]
		if q == len(t)-1 {
			return false // ForceQuery
		}
		if indexByte(t[q+1:], '#') >= 0 {
			return false
		}
	}
	for _, b := range path {
		if !pathByteAsIs[b] {
			return false
		}
	}
	return !strings.Contains(string(path), "/.")
}

const (
	leanForward     = iota // forwarded as it came
	leanHost               // Host
	leanRefused            // a field the gateway interprets, replaces or drops
	leanTraceparent        // the trace fields and the request id, which
	leanTracestate         // the gateway replaces or passes on by the
	leanRequestID          // service's settings (makeLeanHead)
	leanConnection         // Connection, taken when it says keep-alive alone
	leanXFF                // the forwarding fields, which the gateway
	leanXFProto            // replaces, extends or drops by the peer's
	leanXFHost             // trust and the service's settings
	leanForwarded          // (appendLeanRequestHead, as setForwarded)
	leanSpoofable
	leanXFCC          // X-Forwarded-Client-Cert: only the gateway vouches (the lean path has no mutual TLS)
	leanContentLength // written by the gateway, after the other fields
	leanIdemKey       // Idempotency-Key and X-Idempotency-Key: forwarded (classifyLean)
)

// leanFieldKind classifies a field name (any case).
func leanFieldKind(name []byte) int {
	if len(name) >= len(leanNamesByLength) {
		return leanForward // longer than any name the gateway looks at
	}
	for _, n := range leanNamesByLength[len(name)] {
		if equalFoldToken(name, n.name) {
			return n.kind
		}
	}
	return leanForward
}

// leanNamesByLength lists, by length, Host and the request fields the
// gateway interprets, replaces or drops, with their kinds: framing and
// hop-by-hop fields (leanRefused; Connection taken when it says keep-alive
// alone), trace and id fields, and the forwarding fields (the spoofable
// ones among them). A client's Via is forwarded as it came, the gateway's
// own after it, as the general path adds it.
var leanNamesByLength = func() (t [32][]leanName) {
	kinds := map[string]int{"Host": leanHost, "Content-Length": leanContentLength, "Expect": leanRefused, "Max-Forwards": leanRefused,
		"Idempotency-Key": leanIdemKey, "X-Idempotency-Key": leanIdemKey,
		"Forwarded": leanForwarded, "X-Forwarded-For": leanXFF, "X-Forwarded-Proto": leanXFProto, "X-Forwarded-Host": leanXFHost,
		"X-Forwarded-Client-Cert": leanXFCC, "X-Request-Id": leanRequestID, "Traceparent": leanTraceparent, "Tracestate": leanTracestate}
	for _, n := range hopHeaders {
		kinds[n] = leanRefused
	}
	kinds["Connection"] = leanConnection
	for _, n := range spoofableForwarding {
		kinds[n] = leanSpoofable
	}
	for n, k := range kinds {
		t[len(n)] = append(t[len(n)], leanName{n, k})
	}
	return t
}()

// leanName is a field name the lean path looks at, and its kind.
type leanName struct {
	name string
	kind int
}

// equalFoldToken reports whether the token b is s (letters, digits and
// '-' only) in any case. Folding with 0x20 is exact here: the only token
// bytes that fold onto a letter are its two cases, and '-' and digits
// fold onto themselves alone.
func equalFoldToken(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if b[i]|0x20 != s[i]|0x20 {
			return false
		}
	}
	return true
}

// canonicalInto appends name in the canonical form
// textproto.CanonicalMIMEHeaderKey gives a token: upper case at the start
// and after each '-', lower case elsewhere.
func canonicalInto(dst, name []byte) []byte {
	upper := true
	for _, c := range name {
		switch {
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !upper && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		dst = append(dst, c)
		upper = c == '-'
	}
	return dst
}

// leanAdds is what a service adds to a lean request's upstream head.
type leanAdds struct {
	svc      *service
	peer     netip.Addr
	peerStr  string
	host     string // the request's Host, as received
	upHost   string // the Host sent upstream
	reqID    string // "" unless request_id is on
	trace    string // the traceparent sent, "" unless traceparent is on
	via      string // "" unless via is on
	plainTCP bool   // not TLS: proto=http
	// target is the request target sent when the route rewrites the
	// path (leanRewrite); "" sends the client's.
	target string
	// reqOps and respOps are the route's header edits (nil for none).
	reqOps, respOps *headerOps
	// traceKept: the client's trace goes on in trace (its Tracestate
	// with it).
	traceKept bool
	// trusted: the peer is a trusted proxy, whose forwarding fields are
	// extended rather than replaced.
	trusted bool
}

// appendLeanRequestHead appends the upstream request head of a lean
// request: the request line as received, Host, the client's fields in
// their order under their canonical names, then the service's forwarding,
// request id, trace and Via fields, in the order writeRequestHead writes
// the present path's edits.
func appendLeanRequestHead(b []byte, hb *headBlock, lr *leanRequest, a *leanAdds) []byte {
	buf := hb.buf
	b = append(b, buf[lr.method[0]:lr.method[1]]...)
	b = append(b, ' ')
	if a.target != "" {
		b = append(b, a.target...)
	} else {
		b = append(b, buf[lr.target[0]:lr.target[1]]...)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, a.upHost...)
	b = append(b, "\r\n"...)
	ops := a.reqOps
	for _, f := range hb.fields {
		name := buf[f.name[0]:f.name[1]]
		if equalFoldToken(name, "Host") || ops != nil && ops.touches(name) {
			continue
		}
		if lr.ids || lr.fwd != 0 || lr.hasLength {
			// As the present path: the service's trace replaces the
			// client's Traceparent, and its Tracestate unless the trace
			// goes on; its request id replaces the client's. The
			// forwarding fields as setForwarded treats them: a trusted
			// proxy's kept (its X-Forwarded-For extended below), anyone
			// else's dropped, and none where the service sends none.
			switch leanFieldKind(name) {
			case leanTraceparent:
				if !a.svc.noTraceparent {
					continue
				}
			case leanTracestate:
				if !a.svc.noTraceparent && !a.traceKept {
					continue
				}
			case leanRequestID:
				if !a.svc.noRequestID {
					continue
				}
			case leanConnection:
				continue // hop-by-hop
			case leanXFF:
				continue // extended or replaced below
			case leanXFProto, leanXFHost, leanSpoofable:
				if !a.trusted || a.svc.noXForwarded {
					continue
				}
			case leanForwarded:
				if !a.trusted || a.svc.noForwarded {
					continue
				}
			case leanXFCC:
				continue // only the gateway vouches for client certificates
			case leanContentLength:
				continue // written below
			}
		}
		if f.canon {
			b = append(b, name...)
		} else {
			b = canonicalInto(b, name)
		}
		b = append(b, ": "...)
		b = append(b, buf[f.value[0]:f.value[1]]...)
		b = append(b, "\r\n"...)
	}
	svc := a.svc
	proto := "http"
	if !a.plainTCP {
		proto = "https"
	}
	ip := "unknown"
	if a.peerStr != "" {
		ip = a.peerStr
	}
	if !svc.noXForwarded {
		if ops.keeps("X-Forwarded-For") {
			b = append(b, "X-Forwarded-For: "...)
			if a.trusted && lr.fwd&fwdFor != 0 {
				// A trusted proxy's list, its lines joined, and the
				// peer after it.
				for _, f := range hb.fields {
					if leanFieldKind(buf[f.name[0]:f.name[1]]) == leanXFF {
						b = append(b, buf[f.value[0]:f.value[1]]...)
						b = append(b, ", "...)
					}
				}
			}
			b = append(b, ip...)
			b = append(b, "\r\n"...)
		}
		// A trusted proxy's own proto and host stand.
		if ops.keeps("X-Forwarded-Proto") && !(a.trusted && lr.fwd&fwdProto != 0) {
			b = append(b, "X-Forwarded-Proto: "...)
			b = append(b, proto...)
			b = append(b, "\r\n"...)
		}
		if ops.keeps("X-Forwarded-Host") && !(a.trusted && lr.fwd&fwdHost != 0) {
			b = append(b, "X-Forwarded-Host: "...)
			b = append(b, a.host...)
			b = append(b, "\r\n"...)
		}
	}
	if !svc.noForwarded && ops.keeps("Forwarded") {
		b = append(b, "Forwarded: for="...)
		switch {
		case !a.peer.IsValid():
			b = append(b, "unknown"...)
		case a.peer.Is6():
			b = append(b, `"[`...)
			b = append(b, ip...)
			b = append(b, `]"`...)
		default:
			b = append(b, ip...)
		}
		b = append(b, ";proto="...)
		b = append(b, proto...)
		b = append(b, ";host="...)
		b = appendForwardedValue(b, a.host)
		b = append(b, "\r\n"...)
	}
	if a.reqID != "" && ops.keeps("X-Request-Id") {
		b = append(b, "X-Request-Id: "...)
		b = append(b, a.reqID...)
		b = append(b, "\r\n"...)
	}
	if a.trace != "" && ops.keeps("Traceparent") {
		b = append(b, "Traceparent: "...)
		b = append(b, a.trace...)
		b = append(b, "\r\n"...)
	}
	if a.via != "" && ops.keeps("Via") {
		b = append(b, "Via: "...)
		b = append(b, a.via...)
		b = append(b, "\r\n"...)
	}
	if ops != nil {
		b = ops.appendLines(b)
	}
	// The framing last, as writeRequestHead writes it: the body's length,
	// or a zero one for a method that expects a body.
	switch {
	case lr.bodyLen > 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, lr.bodyLen, 10)
		b = append(b, "\r\n"...)
	case methodExpectsBody(lr.methodName):
		b = append(b, "Content-Length: 0\r\n"...)
	}
	return append(b, "\r\n"...)
}

// leanRewrite gives the request target a lean request on rt goes upstream
// with when rt rewrites its path or strips a prefix ("" when it does
// neither): out's path and query, out being what upstreamURL made of the
// request. ok is false when the path is not one that goes as it is (a
// template's literal part, say, that url.URL would escape), which leaves
// the request to the general path.
func leanRewrite(rt *route, out *url.URL) (target string, ok bool) {
	if rt.rewritePath == nil && rt.stripPrefix == "" {
		return "", true
	}
	p := out.Path
	if out.RawPath != "" || p == "" || p[0] != '/' || strings.Contains(p, "/.") {
		return "", false
	}
	for i := 0; i < len(p); i++ {
		if !pathByteAsIs[p[i]] {
			return "", false
		}
	}
	if out.RawQuery != "" {
		return p + "?" + out.RawQuery, true
	}
	return p, true
}

// leanHead makes oh the whole upstream head of a lean request (see above)
// and reports whether it did; if not, the present path edits the inbound
// header as usual. host is the Host to send, out the path and query
// (upstreamURL); w must be the HTTP/1 server's own response, which a
// plain answer is written to.
func (g *Gateway) leanHead(w http.ResponseWriter, oh *outHeader, r *http.Request, x *exchange, rt *route, host string, out *url.URL) bool {
	if !rt.lean {
		return false
	}
	target, ok := leanRewrite(rt, out)
	if !ok {
		return false
	}
	if _, ok := w.(*response); !ok {
		return false // the answer's head is written by the HTTP/1 server's response
	}
	if g.clientAuth.Load() && isTLS(r) {
		return false // X-Forwarded-Client-Cert is the present path's
	}
	rc, ok := r.Context().(*requestContext)
	if !ok || rc.head == nil {
		return false
	}
	lr, ok := classifyLean(rc.head, rc.line, g.opts.MaxHeaderCount, g.opts.Underscores)
	if !ok || lr.bodyLen > 0 {
		return false // a body is the transport's to send (the head is kept only without one)
	}
	svc := rt.svc
	a := leanAdds{svc: svc, peer: x.clientIP, peerStr: x.clientIPStr, host: r.Host, upHost: host, plainTCP: !isTLS(r), target: target,
		reqOps: rt.reqOps.orNil(), respOps: rt.respOps.orNil(), trusted: x.trusted}
	g.makeLeanHead(oh, rc.head, &lr, &a, x)
	return true
}

// makeLeanHead makes oh the upstream head of lean request lr (of hb) with
// the service's fields: a's request id (the client's when valid), the
// trace (the client's continued when valid, else a new one) and Via, as
// the service sends them.
func (g *Gateway) makeLeanHead(oh *outHeader, hb *headBlock, lr *leanRequest, a *leanAdds, x *exchange) {
	svc := a.svc
	if !svc.noRequestID {
		a.reqID = x.requestID() // the client's, when valid (identify)
	}
	var in string // the client's traceparent
	if lr.traceparent != ([2]int32{}) {
		in = string(hb.buf[lr.traceparent[0]:lr.traceparent[1]])
	}
	if !svc.noTraceparent {
		tp, tid, kept := traceparent(in)
		x.traceID = tid
		a.trace, a.traceKept = tp, kept
	} else if tid, _, ok := parseTraceparent(in); ok {
		x.traceID = tid // the client's trace, passed on as it came
	}
	if !svc.noVia {
		a.via = g.via(1, lr.minor)
	}
	oh.reset(nil)
	oh.respOps = a.respOps
	oh.raw = appendLeanRequestHead(oh.raw[:0], hb, lr, a)
	oh.isRaw = true
	leanRequests.count()
}

// leanResponse reports whether an answer to a lean request, read into hb
// by the upstream client, is plain: a final status with a body (not 204 or
// 304), one Content-Length, no hop-by-hop field but Keep-Alive and a
// Connection of keep-alive or close (dropped), no Via, not an event
// stream. If so it puts the fields the client gets (all but
// Content-Length, under their canonical names) in lo and returns the
// length. Anything else is made into a map and relayed as usual.
func leanResponse(hb *headBlock, code int, lo *outHeader) (int64, bool) {
	if code < 200 || code > 599 || code == http.StatusNoContent || code == http.StatusNotModified {
		return 0, false
	}
	buf := hb.buf
	b := lo.respHead[:0]
	cl := int64(-1)
	date := false
	lo.respClose = false
	for _, f := range hb.fields {
		name, value := buf[f.name[0]:f.name[1]], buf[f.value[0]:f.value[1]]
		at := len(b)
		if f.canon {
			b = append(b, name...)
		} else {
			b = canonicalInto(b, name)
		}
		k := b[at:]
		if isHopHeader(string(k)) {
			// Dropped as the present path drops them: Keep-Alive, and a
			// Connection of keep-alive or close (Node.js and nginx send
			// them with every answer), which name no other field.
			if string(k) == "Keep-Alive" {
				b = b[:at]
				continue
			}
			if string(k) == "Connection" {
				if ok, close := connectionTokens(value, true); ok {
					// The upstream's close still ends its connection
					// (readResponse: Response.Close).
					lo.respClose = lo.respClose || close
					b = b[:at]
					continue
				}
			}
			return 0, false
		}
		switch string(k) {
		case "Via":
			return 0, false
		case "Content-Length":
			n, ok := parseContentLength(string(value))
			if cl >= 0 || !ok {
				return 0, false // repeated, or malformed: the present path's rules
			}
			cl = n
			b = b[:at]
			continue
		case "Date":
			date = true
		case "Content-Type":
			if strings.HasPrefix(string(value), "text/event-stream") {
				return 0, false // flushed as it comes (relay)
			}
		}
		if lo.respOps != nil && lo.respOps.touches(k) {
			b = b[:at] // removed or replaced by the route
			continue
		}
		b = append(b, ": "...)
		b = append(b, value...)
		b = append(b, "\r\n"...)
	}
	if cl < 0 {
		lo.respHead = b // its array kept for the next
		return 0, false
	}
	if lo.respOps != nil {
		b = lo.respOps.appendLines(b)
	}
	lo.respHead = b
	lo.respDate, lo.leanResp = date, true
	return cl, true
}

// writeLeanHead is WriteHeader for a plain answer to a lean request: the
// head from the upstream's fields as leanResponse made them, Via (if
// not ""), and the length.
func (w *response) writeLeanHead(code int, fields []byte, date bool, via string, length int64) {
	if w.wroteHeader || w.c.hijacked {
		return
	}
	w.wroteHeader = true
	w.status = code
	head := append(w.c.head[:0], statusLine(code)...)
	for k, vs := range w.header {
		// Fields the server's handler chain set before the gateway
		// (Alt-Svc on a TLS listener) go out unless the upstream sent
		// its own, which replaces them (copyEndToEnd on the present
		// path); those the server writes itself do not (as in
		// appendResponseFields).
		switch k {
		case "Transfer-Encoding", "Content-Length", "Connection":
			continue
		case "Date":
			date = true
		}
		if hasFieldLine(fields, k) || strings.HasPrefix(k, http.TrailerPrefix) || !validFieldName(k) {
			continue
		}
		for _, v := range vs {
			head = appendField(head, k, v)
		}
	}
	head = append(head, fields...)
	if via != "" {
		head = append(head, "Via: "...)
		head = append(head, via...)
		head = append(head, "\r\n"...)
	}
	head = append(head, "Content-Length: "...)
	head = strconv.AppendInt(head, length, 10)
	w.c.head = append(head, "\r\n"...)
	w.hasDate = date
	w.contentLength = length
	w.bodyless = w.req.Method == http.MethodHead
	leanAnswers.count()
}

// hasFieldLine reports whether field lines ("Name: value\r\n" each, names
// canonical) have one named k (canonical).
func hasFieldLine(lines []byte, k string) bool {
	for len(lines) > len(k) {
		if lines[len(k)] == ':' && string(lines[:len(k)]) == k {
			return true
		}
		i := indexByte(lines, '\n')
		if i < 0 {
			return false
		}
		lines = lines[i+1:]
	}
	return false
}
