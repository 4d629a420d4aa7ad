package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// --- polling -------------------------------------------------------------------------

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v: last error: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// --- logging -------------------------------------------------------------------------

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLogger collects the manager's logs and prints them if the test fails.
func testLogger(t *testing.T) (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager log:\n%s", tail(buf.String(), 12000))
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func tail(s string, n int) string {
	if len(s) > n {
		return "...\n" + s[len(s)-n:]
	}
	return s
}

// --- DNS -----------------------------------------------------------------------------

// startDNS runs a resolver answering A 127.0.0.1 for every name (and no records of any
// other type) on UDP and TCP of the same loopback port.
func startDNS(t *testing.T) string {
	t.Helper()
	var pc net.PacketConn
	var tl net.Listener
	for range 20 {
		p, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", p.LocalAddr().String())
		if err != nil {
			p.Close()
			continue
		}
		pc, tl = p, l
		break
	}
	if pc == nil {
		t.Fatal("no free UDP+TCP port for the DNS responder")
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		_ = w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: tl, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.ActivateAndServe()
		}()
		<-started
		t.Cleanup(func() {
			_ = srv.Shutdown()
			<-done
		})
	}
	return pc.LocalAddr().String()
}

// --- pebble --------------------------------------------------------------------------

type pebble struct {
	dirURL    string         // ACME directory
	acmeAddr  string         // host:port of the ACME API
	minica    string         // path of the root of pebble's own HTTPS certificate
	issuer    *x509.CertPool // pebble's issuing root: the only thing clients trust
	issuerPEM []byte
	log       *syncBuffer
}

// pebbleShortLivedSeconds is the validity of the "shortlived" profile.
const pebbleShortLivedSeconds = 30

func pebblePaths(t *testing.T) (bin, testDir string) {
	t.Helper()
	bin = os.Getenv("PEBBLE_BIN")
	if bin == "" {
		bin = filepath.Join("..", "..", "bin", "pebble")
	}
	testDir = os.Getenv("PEBBLE_TEST_DIR")
	if testDir == "" {
		testDir = filepath.Join(filepath.Dir(bin), "pebble-test")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("pebble not found at %s (set PEBBLE_BIN or run `make bin/pebble`): %v", bin, err)
	}
	if _, err := os.Stat(filepath.Join(testDir, "certs", "pebble.minica.pem")); err != nil {
		t.Skipf("pebble test dir not found at %s (set PEBBLE_TEST_DIR or run `make bin/pebble`): %v", testDir, err)
	}
	bin, _ = filepath.Abs(bin)
	testDir, _ = filepath.Abs(testDir)
	return bin, testDir
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startPebble runs pebble validating HTTP-01 on httpPort and TLS-ALPN-01 on tlsPort of
// 127.0.0.1 (through the test DNS responder), waits for its directory and fetches its
// issuing root. It is killed on cleanup.
func startPebble(t *testing.T, httpPort, tlsPort int) *pebble {
	t.Helper()
	bin, testDir := pebblePaths(t)
	dnsAddr := startDNS(t)
	dir := t.TempDir()
	acmePort, mgmtPort := freePort(t), freePort(t)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", acmePort),
		"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":                    filepath.Join(testDir, "certs", "localhost", "cert.pem"),
		"privateKey":                     filepath.Join(testDir, "certs", "localhost", "key.pem"),
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles": map[string]any{
			"default":    map[string]any{"description": "default", "validityPeriod": 7776000},
			"shortlived": map[string]any{"description": "renewal test", "validityPeriod": pebbleShortLivedSeconds},
		},
	}}
	raw, _ := json.MarshalIndent(cfg, "", "  ")
	cfgPath := filepath.Join(dir, "pebble-config.json")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	p := &pebble{
		acmeAddr: fmt.Sprintf("127.0.0.1:%d", acmePort),
		dirURL:   fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort),
		minica:   filepath.Join(testDir, "certs", "pebble.minica.pem"),
		log:      &syncBuffer{},
	}
	cmd := exec.Command(bin, "-config", cfgPath, "-dnsserver", dnsAddr)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting pebble: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("pebble log:\n%s", tail(p.log.String(), 12000))
		}
	})

	minica, err := os.ReadFile(p.minica)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(minica)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(hc.CloseIdleConnections)
	waitFor(t, 30*time.Second, "pebble directory", func() error {
		select {
		case <-exited:
			t.Fatalf("pebble exited early:\n%s", p.log.String())
		default:
		}
		resp, err := hc.Get(p.dirURL)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	resp, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmtPort))
	if err != nil {
		t.Fatalf("pebble root: %v", err)
	}
	p.issuerPEM, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble root: status %d, %v", resp.StatusCode, err)
	}
	p.issuer = x509.NewCertPool()
	if !p.issuer.AppendCertsFromPEM(p.issuerPEM) {
		t.Fatalf("pebble root: no certificate in %q", p.issuerPEM)
	}
	return p
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
	d := &net.Dialer{Timeout: timeout}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := (&tls.Dialer{NetDialer: d, Config: &tls.Config{
		RootCAs:    roots,
		ServerName: name,
		NextProtos: []string{"h2", "http/1.1"},
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

// --- counting relay ------------------------------------------------------------------

// relay forwards TCP connections to target and counts the bytes clients send, to prove
// whether anything talked to the CA.
type relay struct {
	ln    net.Listener
	sent  atomic.Int64
	conns atomic.Int64
	wg    sync.WaitGroup
	mu    sync.Mutex
	open  []net.Conn
}

func newRelay(t *testing.T, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln}
	r.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.conns.Add(1)
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.open = append(r.open, c, up)
			r.mu.Unlock()
			r.wg.Go(func() {
				n, _ := io.Copy(countingWriter{up, &r.sent}, c)
				_ = n
				up.Close()
			})
			r.wg.Go(func() {
				_, _ = io.Copy(c, up)
				c.Close()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for _, c := range r.open {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *relay) addr() string { return r.ln.Addr().String() }

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return c.w.Write(p)
}

// dirURLVia rewrites pebble's directory URL to go through addr.
func dirURLVia(p *pebble, addr string) string {
	return strings.Replace(p.dirURL, p.acmeAddr, addr, 1)
}
