package edge

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
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
