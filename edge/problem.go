package edge

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// problem is an RFC 9457 problem details body. Every response the gateway
// makes itself (no route, limits, upstream failures) carries one, so that
// clients can tell the gateway's errors from the API's.
type problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Instance  string `json:"instance,omitempty"`
	Route     string `json:"route,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// proxyError is an error made by the gateway, with what the client is told.
type proxyError struct {
	status int
	// proxyStatus is the RFC 9209 error type ("destination_unavailable",
	// "connection_timeout", ...); empty for errors that are not the proxy's
	// failure to reach the upstream (404 no route, 413, 431).
	proxyStatus string
	title       string
	detail      string
	// cause is the underlying error, for the access log's error_detail
	// only: addresses and names the client should not learn.
	cause string
	close bool // close the client connection after the answer
}

const problemTypeBase = "https://meridian.dev/problems/"

// writeProblem writes a problem+json answer. Proxy-Status is set for errors
// about reaching the upstream (RFC 9209), naming this node. It returns the
// number of body bytes written.
func writeProblem(w http.ResponseWriter, r *http.Request, pe *proxyError, route, reqID, proxyName string) int64 {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	if len(pe.detail) > maxDetail {
		// Details may quote what a client or an upstream sent (an
		// Upgrade's value): not 40 KB of it.
		pe.detail = pe.detail[:maxDetail] + "..."
	}
	if pe.proxyStatus != "" {
		v := proxyName + "; error=" + pe.proxyStatus
		if pe.detail != "" {
			v += "; details=" + sfString(pe.detail)
		}
		h.Set("Proxy-Status", v)
	}
	if pe.close && r.ProtoMajor == 1 {
		// HTTP/2 and HTTP/3 have no Connection field (RFC 9113 8.2.2,
		// RFC 9114 4.2): HTTP/3 clients reject the answer, and net/http
		// turns it into a GOAWAY for every stream of the connection.
		h.Set("Connection", "close")
	}
	if isGRPC(r) {
		writeGRPCStatus(w, pe)
		return 0
	}
	h.Set("Content-Type", "application/problem+json")
	typ := "about:blank"
	if pe.proxyStatus != "" {
		typ = problemTypeBase + pe.proxyStatus
	} else if pe.status == http.StatusNotFound {
		typ = problemTypeBase + "no-route"
	}
	body, _ := json.Marshal(problem{
		Type:      typ,
		Title:     pe.title,
		Status:    pe.status,
		Detail:    pe.detail,
		Instance:  problemInstance(r), // a URI reference (RFC 9457 3.1.5)
		Route:     route,
		RequestID: reqID,
	})
	body = append(body, '\n')
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(pe.status)
	if r.Method == http.MethodHead {
		return 0
	}
	n, _ := w.Write(body)
	return int64(n)
}

// sfString is s as a structured field String (RFC 8941 3.3.3): printable
// ASCII, '"' and '\\' escaped; any other byte (a detail may quote an
// upstream's or a client's bytes) is given as '?', which a parser takes
// where it would throw away the whole field.
func sfString(s string) string {
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c > 0x7e:
			b = append(b, '?')
		default:
			b = append(b, c)
		}
	}
	return string(append(b, '"'))
}

// maxDetail is the longest detail a problem answer and its Proxy-Status
// carry.
const maxDetail = 1024

// maxInstance is the longest path a problem answer's instance repeats: a
// request refused for its size (a 64 KiB target, 431 or 414) is not
// answered with a body as large.
const maxInstance = 1024

func problemInstance(r *http.Request) string {
	p := r.URL.EscapedPath()
	if len(p) > maxInstance {
		p = p[:maxInstance]
		if i := strings.LastIndexByte(p[len(p)-2:], '%'); i >= 0 {
			p = p[:len(p)-2+i] // no escape cut in half
		}
		p += "..."
	}
	return p
}

// isGRPC reports whether r is a gRPC call (not gRPC-Web, whose status
// travels in the body): its client reads a status only from grpc-status.
func isGRPC(r *http.Request) bool {
	if r.ProtoMajor < 2 {
		return false
	}
	ct := r.Header.Get("Content-Type")
	return ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;")
}

// writeGRPCStatus answers a gRPC call with a trailers-only response: HTTP
// 200, and the gateway's error as grpc-status and grpc-message, as Envoy
// does, so that the client sees a gRPC code and the reason rather than an
// HTTP status it maps to Unknown or Unavailable.
func writeGRPCStatus(w http.ResponseWriter, pe *proxyError) {
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(grpcCode(pe)))
	msg := pe.title
	if pe.detail != "" {
		msg += ": " + pe.detail
	}
	h.Set("Grpc-Message", grpcPercentEncode(msg))
	w.WriteHeader(http.StatusOK)
}

// grpcPercentEncode encodes a grpc-message: bytes outside space to '~',
// and '%', become %XX (gRPC over HTTP/2, "Responses").
func grpcPercentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' || c > '~' || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// grpcCode maps a gateway error to a gRPC status code: by what went wrong
// when the proxy status says, else by the HTTP status as gRPC's
// "HTTP to gRPC Status Code Mapping" does.
func grpcCode(pe *proxyError) int {
	const (
		unknown           = 2
		deadlineExceeded  = 4
		permissionDenied  = 7
		resourceExhausted = 8
		internal          = 13
		unimplemented     = 12
		unavailable       = 14
		unauthenticated   = 16
	)
	if pe.proxyStatus == "http_response_timeout" {
		return deadlineExceeded
	}
	switch pe.status {
	case http.StatusBadRequest:
		return internal
	case http.StatusUnauthorized:
		return unauthenticated
	case http.StatusForbidden:
		return permissionDenied
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return unimplemented
	case http.StatusRequestEntityTooLarge, http.StatusRequestHeaderFieldsTooLarge:
		return resourceExhausted
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout,
		http.StatusPermanentRedirect: // the plain port of a TLS gateway
		return unavailable
	}
	return unknown
}
