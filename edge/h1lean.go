package edge

// The lean HTTP/1 path (work in progress on branch lean-h1; not wired in).
//
// Why: session 15's experiments (README, "Then (session 15)") served the
// benchmark's requests inside Meridian's own HTTP/1 server with the heads
// kept as spans, read and checked by the server's parser, copied field by
// field with the hop-by-hop fields left out: 1.03x nginx's req/s at 64
// connections and 0.97x at 256, against 0.91x and 0.82x for the present
// path in the same runs. What costs is the work between the heads: header
// maps, http.Request and http.Response, their contexts, the response
// writer.
//
// The plan, for a request served inline (plain TCP, bodyless, the whole
// head in the buffer):
//
//  1. parseHead reads and checks the head into c.reqHead, as for every
//     request (one parser, one set of rules).
//  2. classifyLean decides on the spans whether the request is one the lean
//     path serves exactly as the present path would: GET or HEAD, HTTP/1.1,
//     one valid Host, an origin-form target that needs no normalising, and
//     no field the gateway interprets, replaces or drops (framing,
//     hop-by-hop, forwarding and trace fields, request ids, underscores
//     when they are policed). Anything else goes on to buildRequest and the
//     present path, with nothing lost: the head is parsed once either way.
//  3. The route must be lean too (no rewrite, no prefix to strip, no header
//     edits, a plain-HTTP HTTP/1 service without retries), decided when the
//     snapshot is compiled, and the table must have no header or query
//     matchers, so that method, host and path decide the match.
//  4. The upstream head is appended from the spans (appendLeanRequestHead)
//     with the fields the service adds, byte for byte what writeRequestHead
//     writes for the same request (TestLeanRequestHeadMatchesPresentPath).
//  5. (to do) The exchange on a pooled connection with the present
//     transport's deadlines, abort and stale-connection rules, the response
//     head read into spans by the same field reader; a plain response
//     (final status, Content-Length or chunked framing, no Connection-named
//     fields) copied to the client less hop-by-hop fields, plus Via; any
//     other response, and any error, made into the present path's objects
//     and handed to its relay and error answers, so that there is one
//     implementation of everything unusual.
//  6. (to do) Metrics, the access log and the disconnect watch as the
//     present path keeps them; differential tests of whole exchanges and a
//     fuzz test that the lean and present paths answer alike.

import (
	"net/netip"
	"strings"
)

// leanRequest is a request head the lean path may serve, as spans of
// c.reqHead.buf.
type leanRequest struct {
	method, target [2]int
	host           [2]int
	head           bool // HEAD rather than GET
}

// classifyLean reports whether the head parseHead read into hb is one the
// lean path serves exactly as the present path would (see above), and
// where its parts are. maxCount and underscores are the gateway's
// MaxHeaderCount and Underscores.
func classifyLean(hb *headBlock, rl requestLine, maxCount int, underscores UnderscorePolicy) (leanRequest, bool) {
	buf := hb.buf
	var lr leanRequest
	if rl.major != 1 || rl.minor != 1 {
		return lr, false
	}
	switch string(buf[:rl.sp1]) {
	case "GET":
	case "HEAD":
		lr.head = true
	default:
		return lr, false
	}
	lr.method = [2]int{0, rl.sp1}
	lr.target = [2]int{rl.targetAt, rl.targetEnd}
	if !leanTarget(buf[rl.targetAt:rl.targetEnd]) {
		return lr, false
	}
	if maxCount > 0 && len(hb.fields) > maxCount {
		return lr, false // 431, from the present path
	}
	policed := underscores == UnderscoresDrop || underscores == UnderscoresReject
	hosts := 0
	for _, f := range hb.fields {
		name := buf[f.name[0]:f.name[1]]
		if policed && indexByte(name, '_') >= 0 {
			return lr, false
		}
		switch leanFieldKind(name) {
		case leanHost:
			hosts++
			lr.host = f.value
		case leanRefused:
			return lr, false
		}
	}
	if hosts != 1 || lr.host[0] == lr.host[1] || !validHost(string(buf[lr.host[0]:lr.host[1]])) {
		return lr, false // the present path's 400, or no host to forward
	}
	return lr, true
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
	leanForward = iota // forwarded as it came
	leanHost           // Host
	leanRefused        // a field the gateway interprets, replaces or drops
)

// leanFieldKind classifies a field name (any case).
func leanFieldKind(name []byte) int {
	var b [32]byte
	if len(name) > len(b) {
		return leanForward // longer than any name the gateway looks at
	}
	k := canonicalInto(b[:0], name)
	switch string(k) {
	case "Host":
		return leanHost
	case "Content-Length", "Transfer-Encoding", "Connection", "Expect", "Upgrade",
		"Te", "Trailer", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
		"Forwarded", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Via",
		"X-Request-Id", "Traceparent", "Tracestate", "X-Forwarded-Client-Cert":
		return leanRefused
	}
	for _, s := range spoofableForwarding {
		if string(k) == s {
			return leanRefused
		}
	}
	return leanForward
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
	b = append(b, buf[lr.target[0]:lr.target[1]]...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, a.upHost...)
	b = append(b, "\r\n"...)
	for _, f := range hb.fields {
		name := buf[f.name[0]:f.name[1]]
		at := len(b)
		if f.canon {
			b = append(b, name...)
		} else {
			b = canonicalInto(b, name)
		}
		if string(b[at:]) == "Host" {
			b = b[:at]
			continue
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
		b = append(b, "X-Forwarded-For: "...)
		b = append(b, ip...)
		b = append(b, "\r\nX-Forwarded-Proto: "...)
		b = append(b, proto...)
		b = append(b, "\r\nX-Forwarded-Host: "...)
		b = append(b, a.host...)
		b = append(b, "\r\n"...)
	}
	if !svc.noForwarded {
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
		var sb strings.Builder
		writeForwardedValue(&sb, a.host)
		b = append(b, sb.String()...)
		b = append(b, "\r\n"...)
	}
	if a.reqID != "" {
		b = append(b, "X-Request-Id: "...)
		b = append(b, a.reqID...)
		b = append(b, "\r\n"...)
	}
	if a.trace != "" {
		b = append(b, "Traceparent: "...)
		b = append(b, a.trace...)
		b = append(b, "\r\n"...)
	}
	if a.via != "" {
		b = append(b, "Via: "...)
		b = append(b, a.via...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}
