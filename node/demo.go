package node

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultConfig is the embedded configuration `meridian serve` runs with no
// file: one node on loopback with the demo backends.
//
//go:embed default.yaml
var DefaultConfig []byte

// demoHost is the target host that the demo backends' address replaces.
const demoHost = "demo.local"

// demoBackend is a small in-process API that the default configuration
// routes to, so that a newcomer sees routing, rewriting, header handling and
// streaming with nothing else running.
type demoBackend struct {
	srv *http.Server
	ln  net.Listener
}

func startDemo() (*demoBackend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		writeDemoJSON(w, map[string]any{
			"message":    "Hello from the Meridian demo backend",
			"path":       r.URL.Path,
			"request_id": r.Header.Get("X-Request-Id"),
			"forwarded":  r.Header.Get("Forwarded"),
			"via":        r.Header.Get("Via"),
		})
	})
	mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		n, err := strconv.Atoi(id)
		if err != nil || n <= 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, "{\"error\":\"no user %q\"}\n", id)
			return
		}
		writeDemoJSON(w, map[string]any{"id": n, "name": fmt.Sprintf("User %d", n), "upstream_path": r.URL.Path})
	})
	mux.HandleFunc("/echo/", func(w http.ResponseWriter, r *http.Request) {
		hdr := map[string]string{}
		for k, v := range r.Header {
			hdr[k] = strings.Join(v, ", ")
		}
		writeDemoJSON(w, map[string]any{"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery, "headers": hdr, "host": r.Host})
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		rc := http.NewResponseController(w)
		for i := 1; i <= 5; i++ {
			fmt.Fprintf(w, "id: %d\ndata: {\"tick\":%d,\"time\":%q}\n\n", i, i, time.Now().UTC().Format(time.RFC3339Nano))
			if rc.Flush() != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	d := &demoBackend{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go d.srv.Serve(ln)
	return d, nil
}

func (d *demoBackend) addr() string { return d.ln.Addr().String() }

func (d *demoBackend) close() { d.srv.Close() }

func writeDemoJSON(w http.ResponseWriter, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}
