// Command backend is the benchmark's upstream: a net/http HTTP/1.1 server
// that answers every request with the same fixed-size body. Load generated
// against it directly is the "direct" baseline the proxies are compared to.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18000", "listen address")
	size := flag.Int("size", 1024, "response body size in bytes")
	flag.Parse()
	if *size < 0 || *size > 64<<20 {
		log.Fatalf("backend: -size must be in 0..%d", 64<<20)
	}

	body := bytes.Repeat([]byte("m"), *size)
	// Header value slices are shared across responses and never modified.
	contentType := []string{"application/octet-stream"}
	contentLength := []string{strconv.Itoa(len(body))}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Drain any request body so the connection can be reused.
		if r.Body != nil {
			_, _ = io.Copy(io.Discard, r.Body)
		}
		h := w.Header()
		h["Content-Type"] = contentType
		h["Content-Length"] = contentLength
		_, _ = w.Write(body)
	})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("backend: %v", err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		_ = srv.Close()
	}()
	fmt.Fprintf(os.Stderr, "backend: listening on %s, %d-byte body\n", ln.Addr(), len(body))
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("backend: %v", err)
	}
}
