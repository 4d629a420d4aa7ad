package edge

import (
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/textproto"
	"slices"
	"strings"
)

// hopHeaders are meaningful only for one connection (RFC 9110 section 7.6.1)
// and are never forwarded. Headers named in Connection are removed too.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection", // non-standard, still sent by some clients
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te", // canonicalised; "trailers" is re-added for requests when the client sent it
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
	// HTTP/2's upgrade settings (RFC 7540 3.2.1: connection-specific):
	// the gateway never relays an upgrade to h2c, so never the field either,
	// whether or not Connection names it.
	"Http2-Settings",
}

// notTrailers are fields a client's trailer section is not forwarded with:
// those that frame, route, authenticate or control a request (RFC 9110
// 6.5.1; net/http's list), and the ones the gateway writes or vouches for
// itself, which a backend that merges trailers into the head would take
// as the gateway's.
var notTrailers = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range []string{
		"Authorization", "Cache-Control", "Content-Encoding", "Content-Length", "Content-Range", "Content-Type",
		"Expect", "Host", "Max-Forwards", "Pragma", "Range", "Te", "Trailer", "Transfer-Encoding",
		"Forwarded", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Client-Cert",
		"Via", "X-Request-Id", "Traceparent", "Tracestate",
	} {
		m[k] = true
	}
	for _, k := range hopHeaders {
		m[k] = true
	}
	for _, k := range spoofableForwarding {
		m[k] = true
	}
	return m
}()

// notResponseTrailers are fields an upstream's trailer section is not
// relayed with (RFC 9110 6.5.1: a trailer may not frame, route,
// authenticate, modify a request, control or describe the content of a
// response, nor set state; net/http's HTTP/2 list among them): a client
// or cache that merged one into the head would take it as the
// response's (a cookie set after the body, a Cache-Control that came too
// late to be checked), and the gateway writes or vouches for some of them
// itself.
var notResponseTrailers = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range []string{
		"Authorization", "Proxy-Authorization", "Cookie", "Host", "Expect", "Max-Forwards", "Pragma", "Range", "Realm",
		"If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range",
		"Set-Cookie", "Www-Authenticate", "Proxy-Authenticate", "Authentication-Info",
		"Age", "Cache-Control", "Expires", "Date", "Location", "Retry-After", "Vary", "Warning", "Etag", "Last-Modified",
		"Content-Encoding", "Content-Length", "Content-Range", "Content-Type", "Content-Location",
		"Trailer", "Transfer-Encoding", "Via", "Proxy-Status", "Alt-Svc", "Strict-Transport-Security",
	} {
		m[k] = true
	}
	for _, k := range hopHeaders {
		m[k] = true
	}
	return m
}()

// dropResponseTrailers deletes from an upstream's trailers (announced or
// received) the fields in notResponseTrailers and those its response's
// Connection field (conn) names (RFC 9110 7.6.1: hop-by-hop, header or
// trailer).
func dropResponseTrailers(t http.Header, conn []string) {
	for k := range t {
		if notResponseTrailers[k] || len(conn) > 0 && hasToken(conn, k) {
			delete(t, k)
		}
	}
}

// forwardableTrailers returns the announced trailer fields (decl's keys,
// canonical) that may be forwarded, with no values yet: not those in
// notTrailers nor those the Connection field (conn) names.
func forwardableTrailers(decl http.Header, conn []string) http.Header {
	out := make(http.Header, len(decl))
	for k := range decl {
		if !notTrailers[k] && !hasToken(conn, k) {
			out[k] = nil
		}
	}
	return out
}

// removeHopHeaders deletes hop-by-hop headers in place.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		delete(h, name)
	}
}

// copyEndToEnd copies the fields of src that are not hop-by-hop into dst,
// sharing the value slices: removeHopHeaders on a copy, without inserting
// fields only to delete them again (one pass over a handful of fields
// costs less than a lookup per hop-by-hop name).
func copyEndToEnd(dst, src http.Header) {
	conn := src["Connection"]
	for k, v := range src {
		if isHopHeader(k) || len(conn) > 0 && hasToken(conn, k) {
			continue
		}
		dst[k] = v
	}
}

// outHeader is the header of a request going upstream, kept as edits of
// the inbound header rather than as a copy of it: the inbound fields that
// are end-to-end and neither replaced nor removed, then the fields the
// gateway sets or adds, in order. The HTTP/1 transport writes it as it
// stands (writeRequestHead); other transports take the map header builds.
// The inbound header is only read: its fields are listed at reset, then
// scanned rather than looked up when there are few (most requests have a
// handful, and the gateway looks for a dozen names in each).
type outHeader struct {
	in     http.Header
	fields []inField // in's fields, in the map's order
	conn   []string  // their Connection values: the names they list are hop-by-hop
	drop   []string  // canonical names of inbound fields not forwarded
	extra  []headerField
	// isRaw: the lean path (h1lean.go) made the whole upstream head, raw,
	// and there are no edits; raw's array is kept from call to call.
	isRaw bool
	raw   []byte
	// rawBody: raw carries the request's body after its head (the span
	// lane's): not sent again on a new connection, as no body is.
	rawBody bool
	// leanResp: the answer to the lean request was plain, and respHead
	// holds its fields as the client gets them (but Content-Length and
	// Via); respDate says one is Date.
	leanResp bool
	respDate bool
	respHead []byte
	// respOps are the route's edits of a lean request's answer, which
	// leanResponse makes on respHead (nil for none).
	respOps *headerOps
	// respClose: the plain answer's Connection said close.
	respClose bool
	// leanHR is the plain answer's response, reader and body wrapper (the
	// HTTP/1 transport's parseResponse): the call's, so not allocated per
	// request. The relay closes the body before the call is released.
	leanHR h1Response
}

type headerField struct{ name, value string }

type inField struct {
	name   string
	values []string
}

// reset starts the edits of a new inbound header, keeping the slices.
func (o *outHeader) reset(in http.Header) {
	o.in = in
	o.isRaw, o.rawBody, o.leanResp, o.respClose = false, false, false, false
	o.respOps = nil
	clear(o.fields)
	o.fields = o.fields[:0]
	o.conn = nil
	for k, vs := range in {
		o.fields = append(o.fields, inField{k, vs})
		if k == "Connection" {
			o.conn = vs
		}
	}
	clear(o.drop)
	o.drop = o.drop[:0]
	clear(o.extra)
	o.extra = o.extra[:0]
}

// forwards reports whether the inbound field k goes upstream.
func (o *outHeader) forwards(k string) bool {
	if isHopHeader(k) || len(o.conn) > 0 && hasToken(o.conn, k) {
		return false
	}
	for _, d := range o.drop {
		if d == k {
			return false
		}
	}
	return true
}

// get returns the values of k that would go upstream.
func (o *outHeader) get(k string) []string {
	var vs []string
	if o.forwards(k) {
		vs = o.inbound(k)
	}
	for _, f := range o.extra {
		if f.name == k {
			vs = append(vs[:len(vs):len(vs)], f.value) // never into in's array
		}
	}
	return vs
}

// del removes every value of k.
func (o *outHeader) del(k string) {
	// Recorded only when the inbound header has it: most deletions (the
	// forwarding fields a client did not send) then cost one lookup, and
	// drop stays short for forwards, which scans it for every field.
	if o.inbound(k) != nil && !slices.Contains(o.drop, k) {
		o.drop = append(o.drop, k)
	}
	for i := range o.extra {
		if o.extra[i].name == k {
			// Compacted only when there is something to remove: most
			// deletions find none, and need not write the list again.
			kept := o.extra[:i]
			for _, f := range o.extra[i+1:] {
				if f.name != k {
					kept = append(kept, f)
				}
			}
			clear(o.extra[len(kept):])
			o.extra = kept
			return
		}
	}
}

// set replaces the values of k with v.
func (o *outHeader) set(k, v string) {
	o.del(k)
	o.extra = append(o.extra, headerField{k, v})
}

// add appends v to the values of k.
func (o *outHeader) add(k, v string) {
	o.extra = append(o.extra, headerField{k, v})
}

// inbound returns the inbound values of k.
func (o *outHeader) inbound(k string) []string {
	if len(o.fields) > 16 {
		return o.in[k]
	}
	for i := range o.fields {
		if o.fields[i].name == k {
			return o.fields[i].values
		}
	}
	return nil
}

// header adds the fields to h (empty) and returns it.
func (o *outHeader) header(h http.Header) http.Header {
	for _, f := range o.fields {
		if o.forwards(f.name) {
			h[f.name] = f.values[:len(f.values):len(f.values)] // an append copies
		}
	}
	for _, f := range o.extra {
		vs := h[f.name]
		h[f.name] = append(vs[:len(vs):len(vs)], f.value)
	}
	return h
}

// dropHopFields is removeHopHeaders in one pass over the fields (a map
// may lose keys while it is ranged over).
func dropHopFields(h http.Header) {
	conn := h["Connection"]
	for k := range h {
		if isHopHeader(k) || len(conn) > 0 && hasToken(conn, k) {
			delete(h, k)
		}
	}
}

// isHopHeader reports whether a canonical field name is in hopHeaders.
func isHopHeader(k string) bool {
	switch len(k) {
	case 2:
		return k == "Te"
	case 7:
		return k == "Trailer" || k == "Upgrade"
	case 10:
		return k == "Connection" || k == "Keep-Alive"
	case 14:
		return k == "Http2-Settings"
	case 16:
		return k == "Proxy-Connection"
	case 17:
		return k == "Transfer-Encoding"
	case 18:
		return k == "Proxy-Authenticate"
	case 19:
		return k == "Proxy-Authorization"
	}
	return false
}

// upgradeType returns the protocol a request or response asks to switch to
// (lower case), or "".
//
// An upgrade to h2c is never relayed: it would hand the client an HTTP/2
// connection straight to the upstream on which every later stream bypasses
// the gateway's routes and policies ("h2c smuggling"), and RFC 9113
// deprecated it. Such a request is forwarded as a plain request without
// Upgrade (the hop-by-hop fields are removed).
func upgradeType(h http.Header) string {
	if !headerHasToken(h, "Connection", "upgrade") {
		return ""
	}
	up := strings.ToLower(strings.TrimSpace(h.Get("Upgrade")))
	if headerHasToken(http.Header{"Upgrade": {up}}, "Upgrade", "h2c") {
		return ""
	}
	return up
}

// firstValue is h.Get(key) for a key already in canonical form, without
// canonicalizing it again.
func firstValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func headerHasToken(h http.Header, name, token string) bool {
	return hasToken(h[name], token)
}

// newID returns 32 random hex digits, for request ids and trace ids.
func newID() string {
	var b [16]byte
	putUint64(b[:8], rand.Uint64())
	putUint64(b[8:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

func putUint64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

// validRequestID reports whether a client-supplied X-Request-Id may be kept:
// 1 to 128 visible ASCII characters, so it cannot smuggle anything into logs.
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == '"' || s[i] == '\\' {
			return false
		}
	}
	return true
}

// traceparent handles W3C Trace Context (version 00). Given the incoming
// header value, it returns the value to send upstream: the same trace id
// and sampled flag with a new parent id (this hop's span), or a new trace,
// marked sampled, when the incoming one is absent or invalid (kept false:
// the caller then drops tracestate, which belongs to the discarded trace).
// Flags other than sampled, which version 00 reserves, are sent as zero. It
// also returns the trace id for logs.
func traceparent(in string) (out, traceID string, kept bool) {
	// version(2)-traceid(32)-parentid(16)-flags(2), built in one buffer;
	// the trace id is a slice of the result.
	var b [55]byte
	copy(b[:], "00-")
	flags := "01"
	if t, fl, ok := parseTraceparent(in); ok {
		copy(b[3:35], t)
		kept = true
		if c := fl[1]; c >= 'a' && (c-'a')%2 == 0 || c <= '9' && (c-'0')%2 == 0 {
			flags = "00" // the sampled bit (the low bit of the second digit) is off
		}
	} else {
		var id [16]byte
		putUint64(id[:8], rand.Uint64())
		putUint64(id[8:], rand.Uint64())
		hex.Encode(b[3:35], id[:])
	}
	b[35] = '-'
	var span [8]byte
	for span == [8]byte{} {
		putUint64(span[:], rand.Uint64())
	}
	hex.Encode(b[36:52], span[:])
	b[52] = '-'
	copy(b[53:], flags)
	out = string(b[:])
	return out, out[3:35], kept
}

func parseTraceparent(s string) (traceID, flags string, ok bool) {
	// version(2)-traceid(32)-parentid(16)-flags(2); future versions may
	// append fields after another '-', which we keep out (we speak 00).
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return "", "", false
	}
	ver, tid, pid, fl := s[:2], s[3:35], s[36:52], s[53:55]
	if !isLowerHex(ver) || ver == "ff" || !isLowerHex(tid) || !isLowerHex(pid) || !isLowerHex(fl) {
		return "", "", false
	}
	if ver == "00" && len(s) != 55 {
		return "", "", false
	}
	if len(s) > 55 && s[55] != '-' {
		return "", "", false
	}
	if tid == "00000000000000000000000000000000" || pid == "0000000000000000" {
		return "", "", false
	}
	return tid, fl, true
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// trustedProxies is the set of networks whose Forwarded and X-Forwarded-*
// headers are believed.
type trustedProxies []netip.Prefix

func (t trustedProxies) contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// appendForwardedValue appends a Forwarded parameter value, quoted when it
// is not a token (RFC 7239 4).
func appendForwardedValue(b []byte, v string) []byte {
	if isToken(v) {
		return append(b, v...)
	}
	b = append(b, '"')
	for j := 0; j < len(v); j++ {
		if v[j] == '"' || v[j] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, v[j])
	}
	return append(b, '"')
}

// writeForwardedValue is appendForwardedValue writing to b.
func writeForwardedValue(b *strings.Builder, v string) {
	if isToken(v) {
		b.WriteString(v)
		return
	}
	var buf [128]byte
	b.Write(appendForwardedValue(buf[:0], v))
}

// validForwarded reports whether v is a well-formed Forwarded field value
// (RFC 7239 4): elements separated by commas, each of pairs token=value
// separated by semicolons, a value a token or a quoted string. A trusted
// proxy's malformed one (an open quote) would swallow the element the
// gateway appends once a recipient joins the field's lines.
func validForwarded[T string | []byte](v T) bool {
	i, n := 0, len(v)
	ows := func() {
		for i < n && (v[i] == ' ' || v[i] == '\t') {
			i++
		}
	}
	token := func() bool {
		s := i
		for i < n && tokenChars[v[i]] {
			i++
		}
		return i > s
	}
	for {
		ows()
		for i < n && v[i] != ',' {
			if v[i] != ';' {
				if !token() || i >= n || v[i] != '=' {
					return false
				}
				i++
				if i < n && v[i] == '"' {
					for i++; i < n && v[i] != '"'; i++ {
						if v[i] == '\\' {
							i++
						}
						if i < n && (v[i] < ' ' && v[i] != '\t' || v[i] == 0x7f) {
							return false
						}
					}
					if i >= n {
						return false // an open quote
					}
					i++
				} else if !token() {
					return false
				}
				ows()
			}
			if i < n && v[i] == ';' {
				i++
				ows()
			} else if i < n && v[i] != ',' {
				return false
			}
		}
		if i == n {
			return true
		}
		i++ // ','
	}
}

// isToken reports whether v is a non-empty token (RFC 9110 5.6.2).
func isToken(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		if !tokenChars[v[i]] {
			return false
		}
	}
	return true
}

// regNameChars are the bytes of a host name in a Host field or authority:
// RFC 3986's reg-name (unreserved, sub-delims, and '%' of pct-encoded).
var regNameChars = func() (t [256]bool) {
	for _, c := range []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%") {
		t[c] = true
	}
	return t
}()

// validHost reports whether h is a valid Host field value (RFC 9112 3.2):
// uri-host [":" port], the host a name, an IPv4 address or a bracketed
// IPv6 address, the port digits. It also refuses empty labels ("a..b", as
// nginx does, and ".a"), which no name has. The empty value is left to the callers
// (HTTP/1.0 may omit Host).
func validHost(h string) bool {
	host := h
	if len(h) > 0 && h[0] == '[' {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return false
		}
		a, err := netip.ParseAddr(h[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return false
		}
		host, h = "", h[end+1:]
		if h != "" && h[0] != ':' {
			return false
		}
	} else if i := strings.IndexByte(h, ':'); i >= 0 {
		if i == 0 {
			return false // ":80": a port with no host
		}
		host, h = h[:i], h[i:]
	} else {
		h = ""
	}
	if h != "" { // ":" port
		for i := 1; i < len(h); i++ {
			if h[i] < '0' || h[i] > '9' {
				return false
			}
		}
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !regNameChars[c] || c == '.' && (i == 0 || host[i-1] == '.') {
			return false
		}
	}
	return true
}

// validPseudoPath reports whether an HTTP/2 or HTTP/3 request's :path
// (its RequestURI) is one the gateway forwards: an absolute path with its
// query, or * for OPTIONS, with no space, control character or DEL.
func validPseudoPath(method, p string) bool {
	if p == "*" {
		return method == http.MethodOptions
	}
	if p == "" || p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// routeView returns r as route matches see it: without the fields a
// client names in Connection (hop-by-hop, dropped before the upstream),
// and, from a client that is not a trusted proxy, without the forwarding
// fields the gateway replaces or drops (a header match on X-Real-IP or
// X-Forwarded-For must not be met by a client's word). r itself is left
// as it is; a copy with its own header map is made only when a field is
// to go.
func routeView(r *http.Request, trusted bool) *http.Request {
	h := r.Header
	var drop []string
	if !trusted {
		for _, k := range clientForwarding {
			if _, ok := h[k]; ok {
				drop = append(drop, k)
			}
		}
	}
	if _, ok := h["Upgrade"]; ok && upgradeType(h) == "" {
		// Not relayed (h2c, or not named in Connection): the upstream
		// never sees it, and a route on it would match a request that
		// arrives plain (an outside check).
		drop = append(drop, "Upgrade")
	}
	for _, v := range h["Connection"] {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			tok = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(tok))
			switch tok {
			case "", "Keep-Alive", "Close", "Upgrade":
				continue
			}
			if _, ok := h[tok]; ok {
				drop = append(drop, tok)
			}
		}
	}
	if len(drop) == 0 {
		return r
	}
	v := *r
	v.Header = h.Clone()
	for _, k := range drop {
		delete(v.Header, k)
	}
	return &v
}

// clientForwarding are the forwarding fields a client that is not a
// trusted proxy cannot set: those the gateway writes (setForwarded) and
// those it drops (spoofableForwarding).
var clientForwarding = append([]string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded", "X-Forwarded-Client-Cert"}, spoofableForwarding...)

// underscoreGuarded reports whether name, which holds an underscore, is
// another spelling of a field the gateway frames, writes or guards
// (Content_Length, X_Forwarded_For, X_Real_IP): CGI, PHP and WSGI
// backends read X_Forwarded_For as X-Forwarded-For, so such a field is
// dropped even where headers_with_underscores is allow, as nginx drops
// every one by default.
func underscoreGuarded(name string) bool {
	if len(name) > 64 {
		return false
	}
	var b [64]byte
	n := copy(b[:], name)
	for i := range n {
		switch c := b[i]; {
		case c == '_':
			b[i] = '-'
		case 'A' <= c && c <= 'Z':
			b[i] = c + 'a' - 'A'
		}
	}
	return underscoreGuardedNames[string(b[:n])]
}

var underscoreGuardedNames = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range append([]string{"Content-Length", "Transfer-Encoding", "Host", "Connection", "Te", "Trailer", "Upgrade",
		"X-Request-Id", "Traceparent", "Tracestate", "Via", "Expect", "Max-Forwards"}, clientForwarding...) {
		m[strings.ToLower(k)] = true
	}
	return m
}()
