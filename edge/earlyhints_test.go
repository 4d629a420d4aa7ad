package edge

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"testing"
)

// An upstream's 103 Early Hints reach the client before the final response,
// on every client protocol and from HTTP/1.1 and h2c upstreams alike; the
// hints' fields do not leak into the final head, hop-by-hop fields are
// dropped, and a flood of them is cut to a few.
func TestEarlyHintsRelayed(t *testing.T) {
	hinting := func(w http.ResponseWriter, r *http.Request) {
		for i := range 8 {
			w.Header().Set("Link", fmt.Sprintf("</style%d.css>; rel=preload; as=style", i))
			w.Header().Set("Keep-Alive", "timeout=5")
			w.WriteHeader(http.StatusEarlyHints)
		}
		w.Header().Del("Link")
		w.Header().Del("Keep-Alive")
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "final")
	}
	h1 := newBackend(t, hinting)
	h2c := newH2CBackend(t, hinting)
	setup, _ := withReuseLog()
	tg := startTLSGatewayWith(t, setup, fmt.Sprintf(`
services:
  - {name: h1, targets: [{url: %q}]}
  - {name: h2c, protocol: h2c, targets: [{url: %q}]}
  - {name: h1timed, targets: [{url: %q}], timeouts: {total: 10s}}
routes:
  - {name: h1, match: {path_prefix: /h1}, service: h1}
  - {name: h2c, match: {path_prefix: /h2c}, service: h2c}
  - {name: h1timed, match: {path_prefix: /timed}, service: h1timed}
`, h1.URL, h2c.URL, h1.URL), true)
	for _, proto := range []string{"h1", "h2", "h3"} {
		for _, path := range []string{"/h1", "/h2c", "/timed"} {
			t.Run(proto+path, func(t *testing.T) {
				var mu sync.Mutex
				var links []string
				trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
					mu.Lock()
					defer mu.Unlock()
					if code == http.StatusEarlyHints {
						links = append(links, h.Get("Link"))
						if h.Get("Keep-Alive") != "" {
							t.Errorf("103 carried hop-by-hop Keep-Alive")
						}
						// This hop in Via, as on every message it forwards
						// (RFC 9110 7.6.3), the upstream's protocol named.
						wantVia := "1.1 meridian"
						if path == "/h2c" {
							wantVia = "2 meridian"
						}
						if v := h.Get("Via"); v != wantVia {
							t.Errorf("103 Via %q; want %q", v, wantVia)
						}
					}
					return nil
				}}
				req, _ := http.NewRequest("GET", "https://"+tg.addr+path, nil)
				req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
				resp, err := tg.client(t, proto).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "final" {
					t.Fatalf("final: %d %q", resp.StatusCode, b)
				}
				if l := resp.Header.Get("Link"); l != "" {
					t.Errorf("the hints' Link leaked into the final head: %q", l)
				}
				mu.Lock()
				defer mu.Unlock()
				if len(links) == 0 || len(links) > maxEarlyHints || links[0] != "</style0.css>; rel=preload; as=style" {
					t.Errorf("client saw 103 links %q; want the first hints, %d at most", links, maxEarlyHints)
				}
			})
		}
	}
}

// A 103 over the response head limit is not relayed, from an h2c upstream
// too (whose transport lets it through), and the final answer still
// arrives; an HTTP/1.0 client gets no 1xx at all (RFC 9110 15.2), only the
// final answer.
func TestEarlyHintsRefusedWhereTheyMustNotGo(t *testing.T) {
	hinting := func(w http.ResponseWriter, r *http.Request) {
		link := "</small.css>; rel=preload"
		if r.URL.Path == "/huge" {
			link = "</" + strings.Repeat("x", maxResponseHead) + ">; rel=preload"
		}
		w.Header().Set("Link", link)
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "final")
	}
	h2c := newH2CBackend(t, hinting)
	gw := startGateway(t, oneRouteService(h2c.URL, "    protocol: h2c"))
	for _, tc := range []struct {
		name, path, proto string
	}{
		{"huge hint", "/huge", "HTTP/1.1"},
		{"HTTP/1.0 client", "/small", "HTTP/1.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := h1Raw(t, gw.addr)
			h1Write(t, c, "GET "+tc.path+" "+tc.proto+"\r\nHost: x\r\n\r\n")
			resp, body := readResponse(t, br, http.MethodGet)
			if resp.StatusCode != 200 || string(body) != "final" {
				t.Errorf("first response: %d %q; want the final 200 (no 103 first)", resp.StatusCode, body)
			}
		})
	}
	// A small hint to an HTTP/1.1 client still goes first.
	c, br := h1Raw(t, gw.addr)
	h1Write(t, c, "GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 103") {
		t.Errorf("HTTP/1.1 client: first line %q, %v; want the 103", line, err)
	}
}
