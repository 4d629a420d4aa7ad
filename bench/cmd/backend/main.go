// Command backend is the benchmark's upstream: a net/http HTTP/1.1 server
// that answers every request with the same fixed-size body. Load generated
// against it directly is the "direct" baseline the proxies are compared to.
//
// With -tls-addr it also serves the same handler over TLS with a throwaway
// self-signed certificate: HTTP/1.1 and HTTP/2 on TCP and HTTP/3 (quic-go)
// on UDP of the same port. That is the "direct-tls" baseline of the TLS,
// HTTP/2 and HTTP/3 runs. -tls-ca-out writes the certificate (PEM) for the
// load generator's -cacert.
package main

import (
	"bytes"
	"crypto/tls"
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

	"github.com/meridian-gw/meridian/bench/selfsigned"
	"github.com/quic-go/quic-go/http3"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18000", "listen address")
	size := flag.Int("size", 1024, "response body size in bytes")
	tlsAddr := flag.String("tls-addr", "", "also serve HTTPS (h1, h2 on TCP; h3 on UDP) on this address with a self-signed certificate")
	caOut := flag.String("tls-ca-out", "", "with -tls-addr: write the self-signed certificate (PEM) here")
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
	var closers []func()
	if *tlsAddr != "" {
		closers, err = serveTLS(*tlsAddr, *caOut, handler)
		if err != nil {
			log.Fatalf("backend: tls: %v", err)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		for _, c := range closers {
			c()
		}
		_ = srv.Close()
	}()
	fmt.Fprintf(os.Stderr, "backend: listening on %s, %d-byte body\n", ln.Addr(), len(body))
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("backend: %v", err)
	}
}

// serveTLS serves handler over TLS on TCP (HTTP/1.1, HTTP/2) and QUIC
// (HTTP/3) on addr, in the background.
func serveTLS(addr, caOut string, handler http.Handler) ([]func(), error) {
	cert, pem, err := selfsigned.New()
	if err != nil {
		return nil, err
	}
	if caOut != "" {
		if err := os.WriteFile(caOut, pem, 0o644); err != nil {
			return nil, err
		}
	}
	tcpLn, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenPacket("udp", addr)
	if err != nil {
		tcpLn.Close()
		return nil, err
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	hs := &http.Server{
		Handler:           handler,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	h3 := &http3.Server{
		Handler:   handler,
		TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}),
	}
	go func() {
		if err := hs.ServeTLS(tcpLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("backend: tls: %v", err)
		}
	}()
	go func() {
		if err := h3.Serve(udp); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			log.Printf("backend: h3: %v", err)
		}
	}()
	fmt.Fprintf(os.Stderr, "backend: TLS (h1, h2) on tcp %s, h3 on udp %s, self-signed\n", tcpLn.Addr(), udp.LocalAddr())
	return []func(){func() { _ = h3.Close(); _ = udp.Close() }, func() { _ = hs.Close() }}, nil
}
