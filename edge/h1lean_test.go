package edge

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestLeanRequestHeadMatchesPresentPath sends requests through the present
// path to an upstream that records the head it gets, and checks for each
// that classifyLean takes exactly the requests it should and that
// appendLeanRequestHead writes the same head (the same request line, Host
// and fields with their values in order; the present path writes fields
// in its map's order, so the order across names is not compared).
func TestLeanRequestHeadMatchesPresentPath(t *testing.T) {
	heads := make(chan []byte, 1)
	up := rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			var head []byte
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				head = append(head, line...)
				if len(line) <= 2 {
					break
				}
			}
			heads <- head
			if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")); err != nil {
				return
			}
		}
	})
	tg := startGateway(t, fmt.Sprintf(`
services:
  - name: full
    targets: [{url: "http://%[1]s"}]
  - name: bare
    targets: [{url: "http://%[1]s"}]
    proxy_headers: {forwarded: false, x_forwarded: false, via: false, request_id: false, traceparent: false}
  - name: some
    targets: [{url: "http://%[1]s"}]
    proxy_headers: {forwarded: false, traceparent: false}
routes:
  - {name: full, match: {path_prefix: /}, service: full}
  - {name: bare, match: {path_prefix: /bare/}, service: bare}
  - {name: some, match: {path_prefix: /some/}, service: some}
`, up))
	conn := dialGateway(t, tg.addr)
	br := bufio.NewReader(conn)

	cases := []struct {
		name string
		head string // the request line and fields, without the final CRLF
		lean bool
	}{
		{"plain", "GET /bare/x HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*", true},
		{"defaults", "GET /x?q=1&r=%20 HTTP/1.1\r\nHost: a.example:8080\r\nAccept: */*", true},
		{"some", "GET /some/x HTTP/1.1\r\nHost: a.example\r\nAccept: */*", true},
		{"head", "HEAD /x HTTP/1.1\r\nHost: a.example", true},
		{"lower-case names and repeats", "GET /x HTTP/1.1\r\nhost: a.example\r\naccept: a\r\nACCEPT: b\r\nx-custom-NAME: v\r\naccept: c", true},
		{"sub-delims in the path", "GET /a:b@c/$&+,;=-_.~ HTTP/1.1\r\nHost: a.example", true},
		{"a tab inside a value", "GET /x HTTP/1.1\r\nHost: a.example\r\nX-T: a\tb", true},
		{"underscore allowed by default", "GET /x HTTP/1.1\r\nHost: a.example\r\nX_Under: 1", true},
		{"long name", "GET /x HTTP/1.1\r\nHost: a.example\r\nX-A-Very-Long-Field-Name-Longer-Than-Thirty-Two: 1", true},
		{"POST", "POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 0", false},
		{"HTTP/1.0", "GET /x HTTP/1.0\r\nHost: a.example", false},
		{"escape", "GET /a%2Fb HTTP/1.1\r\nHost: a.example", false},
		{"dot segment", "GET /a/./b HTTP/1.1\r\nHost: a.example", false},
		{"empty query", "GET /a? HTTP/1.1\r\nHost: a.example", false},
		{"connection", "GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive", false},
		{"forwarding", "GET /x HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 1.2.3.4", false},
		{"spoofable", "GET /x HTTP/1.1\r\nHost: a.example\r\nx-real-ip: 1.2.3.4", false},
		{"trace", "GET /x HTTP/1.1\r\nHost: a.example\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", false},
		{"request id", "GET /x HTTP/1.1\r\nHost: a.example\r\nX-Request-Id: abc", false},
		{"via", "GET /x HTTP/1.1\r\nHost: a.example\r\nVia: 1.1 other", false},
		{"te", "GET /x HTTP/1.1\r\nHost: a.example\r\nTE: trailers", false},
		{"content-length 0", "GET /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 0", false},
		{"empty host", "GET /x HTTP/1.1\r\nHost: ", false},
	}
	g := tg.g
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.head + "\r\n\r\n"
			var sent []byte
			if tc.lean {
				// What the present path sends upstream (for the others,
				// what it does is its own: 400, 431, forwarding edits).
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := conn.Write([]byte(raw)); err != nil {
					t.Fatal(err)
				}
				select {
				case sent = <-heads:
				case <-time.After(5 * time.Second):
					t.Fatal("the upstream got no request")
				}
				if resp, _ := readResponse(t, br, strings.Fields(tc.head)[0]); resp.StatusCode != 200 {
					t.Fatalf("status %d through the present path", resp.StatusCode)
				}
			}

			c := &serverConn{s: &h1Server{opts: ListenerOptions{MaxHeaderBytes: 64 << 10}}, br: bufio.NewReader(strings.NewReader(raw))}
			c.reqHead = getHeadBlock()
			defer putHeadBlock(c.reqHead)
			rl, perr := c.parseHead()
			if perr != nil {
				t.Fatalf("parseHead: %v", perr.detail)
			}
			lr, ok := classifyLean(c.reqHead, rl, g.opts.MaxHeaderCount, g.opts.Underscores)
			if ok != tc.lean {
				t.Fatalf("classifyLean = %v; want %v", ok, tc.lean)
			}
			if !ok {
				return
			}
			hb := c.reqHead
			host := string(hb.buf[lr.host[0]:lr.host[1]])
			path, _, _ := strings.Cut(string(hb.buf[lr.target[0]:lr.target[1]]), "?")
			m, found := g.snap.Load().table.Match(&http.Request{Method: string(hb.buf[lr.method[0]:lr.method[1]])}, normalizeHost(host), path)
			if !found {
				t.Fatal("no route")
			}
			rt := m.Route.Value.(*route)
			got := headFields(t, sent)
			a := leanAdds{svc: rt.svc, peer: netip.MustParseAddr("127.0.0.1"), peerStr: "127.0.0.1", host: host, upHost: host, plainTCP: true}
			if !rt.svc.noRequestID {
				a.reqID = only(t, got, "X-Request-Id")
			}
			if !rt.svc.noTraceparent {
				a.trace = only(t, got, "Traceparent")
			}
			if !rt.svc.noVia {
				a.via = g.via(1, 1)
			}
			lean := appendLeanRequestHead(nil, hb, &lr, &a)
			if l0, s0 := firstLine(lean), firstLine(sent); l0 != s0 {
				t.Fatalf("request line %q; the present path sent %q", l0, s0)
			}
			if want, have := got, headFields(t, lean); !equalFields(want, have) {
				t.Errorf("lean head:\n%s\npresent path's:\n%s", lean, sent)
			}
		})
	}
}

func firstLine(b []byte) string {
	l, _, _ := bytes.Cut(b, []byte("\r\n"))
	return string(l)
}

// headFields parses a request head's fields: each name's values in order.
func headFields(t *testing.T, head []byte) map[string][]string {
	t.Helper()
	if !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		t.Fatalf("head not ended by an empty line: %q", head)
	}
	lines := strings.Split(string(head[:len(head)-4]), "\r\n")[1:]
	m := map[string][]string{}
	for _, l := range lines {
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			t.Fatalf("malformed field line %q", l)
		}
		m[k] = append(m[k], v)
	}
	return m
}

func only(t *testing.T, m map[string][]string, k string) string {
	t.Helper()
	if len(m[k]) != 1 {
		t.Fatalf("%s: %q; want one value", k, m[k])
	}
	return m[k][0]
}

func equalFields(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}
