package edge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A client that sends part of a request body and then nothing is answered
// 408 once a read of its body has waited for the read body timeout, over
// every protocol; the upstream's request is abandoned, and the log blames
// the client (client_body_timeout).
func TestReadBodyTimeoutCutsAStalledBody(t *testing.T) {
	for _, proto := range []string{"h1", "h2", "h3"} {
		t.Run(proto, func(t *testing.T) {
			upstreamErr := make(chan error, 1)
			be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
				_, err := io.ReadAll(r.Body)
				upstreamErr <- err
			})
			setup, log := withReuseLog()
			setup.opts.ReadBodyTimeout = 300 * time.Millisecond
			tg := startTLSGatewayWith(t, setup, oneRoute(be.URL, ""), true)
			pr, pw := io.Pipe()
			defer pw.Close()
			req, _ := http.NewRequest("POST", "https://"+tg.addr+"/upload", pr)
			req.ContentLength = 10
			go pw.Write([]byte("abc")) // then nothing
			start := time.Now()
			resp, err := tg.client(t, proto).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout {
				t.Fatalf("status %d %q, want 408", resp.StatusCode, body)
			}
			if el := time.Since(start); el < 300*time.Millisecond {
				t.Errorf("answered after %v, before the timeout", el)
			}
			var prob map[string]any
			if err := json.Unmarshal(body, &prob); err != nil || prob["status"] != float64(408) {
				t.Errorf("body %q is not a 408 problem (%v)", body, err)
			}
			if err := recv(t, upstreamErr, "the upstream's body read to end"); err == nil {
				t.Error("the upstream read the stalled body as complete")
			}
			rec := onlyRecord(t, log)
			if fmt.Sprint(rec["status"]) != "408" || rec["error"] != "client_body_timeout" {
				t.Errorf("access log status %v error %v; want 408 client_body_timeout", rec["status"], rec["error"])
			}
		})
	}
}

// The timeout counts only the wait for the client: an upstream that takes
// its time before reading a large body (the gateway blocked writing to it,
// not reading from the client) does not trip it, nor does a small body
// that arrived at once and waits in the gateway. Retried requests, whose
// small bodies are read first, behave alike.
func TestReadBodyTimeoutSparesASlowUpstream(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v", n, err)
	})
	setup, log := withReuseLog()
	setup.opts.ReadBodyTimeout = 300 * time.Millisecond
	gw := startGatewayWith(t, setup, oneRoute(be.URL, ""))
	for i, size := range []int{8 << 20, 100} {
		resp, err := http.Post("http://"+gw.addr+"/upload", "application/octet-stream", bytes.NewReader(make([]byte, size)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%d <nil>", size); resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("%d bytes: %d %q, want 200 %q", size, resp.StatusCode, b, want)
		}
		waitFor(t, 5*time.Second, "the access log record", func() bool { return log.count() == i+1 })
	}
}

// Once the response has begun, the timeout is off: a client streaming its
// body to an upstream that answered at once (a gRPC bidirectional stream
// through an h2c service) may pause for longer than the timeout between
// messages.
func TestReadBodyTimeoutOffOnceTheResponseBegan(t *testing.T) {
	be := newH2CBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%q %v", b, err)
	})
	setup, _ := withReuseLog()
	setup.opts.ReadBodyTimeout = 300 * time.Millisecond
	tg := startTLSGatewayWith(t, setup, fmt.Sprintf(`
services: [{name: s, protocol: h2c, targets: [{url: %s}]}]
routes: [{name: r, match: {path_prefix: /}, service: s}]
`, be.URL), true)
	for _, proto := range []string{"h2", "h3"} {
		t.Run(proto, func(t *testing.T) {
			pr, pw := io.Pipe()
			req, _ := http.NewRequest("POST", "https://"+tg.addr+"/stream", pr)
			go pw.Write([]byte("a"))
			resp, err := tg.client(t, proto).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			time.Sleep(800 * time.Millisecond) // longer than the timeout, on purpose
			pw.Write([]byte("b"))
			pw.Close()
			b, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(b), `"ab" <nil>`) {
				t.Fatalf("upstream saw %s, want the whole body \"ab\"", b)
			}
		})
	}
}
