package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/pebbletest"
)

// --- logging -------------------------------------------------------------------------

// testLogger collects the manager's logs and prints them if the test fails.
func testLogger(t *testing.T) (*slog.Logger, *pebbletest.SyncBuffer) {
	buf := &pebbletest.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager log:\n%s", pebbletest.Tail(buf.String(), 12000))
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// --- node listeners ------------------------------------------------------------------

// listeners are the node's plain HTTP and HTTPS listeners, bound before pebble starts so
// their ports can go into pebble's config.
type listeners struct {
	httpLn, tlsLn net.Listener
	httpPort      int
	tlsPort       int
}

func newListeners(t *testing.T) *listeners {
	t.Helper()
	h, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); s.Close() })
	return &listeners{httpLn: h, tlsLn: s, httpPort: h.Addr().(*net.TCPAddr).Port, tlsPort: s.Addr().(*net.TCPAddr).Port}
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.WriteString(w, "ok")
})

// serve runs the node's servers for m: HTTPChallengeHandler on plain HTTP (if withHTTP)
// and TLSConfig on HTTPS.
func (l *listeners) serve(t *testing.T, m *Manager, withHTTP bool) (stop func()) {
	t.Helper()
	quiet := slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	var wg sync.WaitGroup
	var servers []*http.Server
	if withHTTP {
		hs := &http.Server{Handler: m.HTTPChallengeHandler(okHandler), ErrorLog: quiet}
		servers = append(servers, hs)
		wg.Go(func() { _ = hs.Serve(l.httpLn) })
	}
	ts := &http.Server{Handler: okHandler, ErrorLog: quiet}
	servers = append(servers, ts)
	tlsLn := tls.NewListener(l.tlsLn, m.TLSConfig())
	wg.Go(func() { _ = ts.Serve(tlsLn) })
	var once sync.Once
	stop = func() {
		once.Do(func() {
			for _, s := range servers {
				_ = s.Close()
			}
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}

// handshake dials addr with SNI name trusting only roots and returns the server's leaf.
func handshake(addr, name string, roots *x509.CertPool, timeout time.Duration) (*x509.Certificate, error) {
	return handshakeOffering(addr, name, roots, timeout, "h2", "http/1.1")
}

// handshakeOffering is handshake with the client's ALPN list given.
func handshakeOffering(addr, name string, roots *x509.CertPool, timeout time.Duration, protos ...string) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: timeout}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := (&tls.Dialer{NetDialer: d, Config: &tls.Config{
		RootCAs:    roots,
		ServerName: name,
		NextProtos: protos,
	}}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	st := conn.(*tls.Conn).ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return nil, errors.New("no peer certificate")
	}
	leaf := st.PeerCertificates[0]
	if err := leaf.VerifyHostname(name); err != nil {
		return nil, err
	}
	return leaf, nil
}

// --- pebble --------------------------------------------------------------------------

// pebbleShortLivedSeconds is the validity of the "shortlived" profile.
const pebbleShortLivedSeconds = 30

// startPebble runs pebble validating HTTP-01 on httpPort and TLS-ALPN-01 on tlsPort of
// 127.0.0.1, with a "shortlived" profile besides the default one.
func startPebble(t *testing.T, httpPort, tlsPort int) *pebbletest.Pebble {
	t.Helper()
	return pebbletest.Start(t, pebbletest.Options{
		HTTPPort: httpPort,
		TLSPort:  tlsPort,
		Profiles: map[string]time.Duration{"shortlived": pebbleShortLivedSeconds * time.Second},
	})
}

var waitFor = pebbletest.WaitFor
