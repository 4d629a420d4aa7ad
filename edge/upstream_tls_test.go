package edge

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/edge/config"
)

// writeClientCert creates a client certificate signed by itself and writes
// it and its key as PEM files.
func writeClientCert(t *testing.T, dir string) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "meridian-gateway"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	kd, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
	return certFile, keyFile, cert
}

// https targets verified against a custom CA, with a chosen SNI and a
// client certificate, over HTTP/1.1 (Meridian's client) and h2 (net/http's).
func TestUpstreamTLSCustomCAAndClientCert(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, clientCert := writeClientCert(t, dir)
	clientPool := x509.NewCertPool()
	clientPool.AddCert(clientCert)

	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn := ""
		if len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		fmt.Fprintf(w, "proto=%d sni=%s client=%s", r.ProtoMajor, r.TLS.ServerName, cn)
	}))
	be.EnableHTTP2 = true
	be.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientPool}
	be.StartTLS()
	defer be.Close()
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: be.Certificate().Raw}), 0o600)

	for _, proto := range []string{"http1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			tg := startGateway(t, fmt.Sprintf(`
services:
  - name: secure
    protocol: %s
    targets: [{url: %q}]
    tls: {ca_file: %q, server_name: example.com, cert_file: %q, key_file: %q}
routes: [{name: r, service: secure}]
`, proto, be.URL, caFile, certFile, keyFile))
			resp, body := get(t, newClient(t), tg.url+"/")
			want := map[string]string{"http1": "proto=1", "h2": "proto=2"}[proto] + " sni=example.com client=meridian-gateway"
			if resp.StatusCode != 200 || string(body) != want {
				t.Fatalf("got %d %q; want 200 %q", resp.StatusCode, body, want)
			}
		})
	}

	// Without the CA, the upstream's certificate is not trusted: 502.
	tg := startGateway(t, fmt.Sprintf("services: [{name: s, targets: [{url: %q}]}]\nroutes: [{name: r, service: s}]\n", be.URL))
	resp, body := get(t, newClient(t), tg.url+"/")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(resp.Header.Get("Proxy-Status"), "error=tls_certificate_error") {
		t.Fatalf("untrusted upstream certificate: got %d Proxy-Status %q; want 502 tls_certificate_error", resp.StatusCode, resp.Header.Get("Proxy-Status"))
	}
	io.Discard.Write(body)
}

// A client key file that holds no key, or another certificate's key, is
// reported at tls.key_file, not at the certificate.
func TestUpstreamClientKeyErrorsNameTheKeyFile(t *testing.T) {
	dir := t.TempDir()
	certFile, _, _ := writeClientCert(t, dir)
	_, otherKey, _ := writeClientCert(t, t.TempDir())
	noPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(noPEM, []byte("hello"), 0o600)
	for _, key := range []string{noPEM, otherKey} {
		doc, err := config.Parse([]byte(fmt.Sprintf("services: [{name: s, targets: [{url: 'https://h:1'}], tls: {cert_file: %q, key_file: %q}}]\nroutes: [{name: r, service: s}]\n", certFile, key)))
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(Options{}).Compile(doc, CompileInput{Version: 1})
		var es config.Errors
		if !errors.As(err, &es) || len(es) != 1 || es[0].Path != "services[0].tls.key_file" {
			t.Errorf("key file %s: %v; want one error at services[0].tls.key_file", key, err)
		}
	}
}

// A second answer that a TLS upstream sends right behind the first, in its
// own record, can be in crypto/tls's buffer rather than in the socket when
// the connection goes back to the pool: the look before reuse finds it
// there too, and the next request gets its own answer.
func TestLateRecordFromTLSUpstreamIsNobodysAnswer(t *testing.T) {
	cert, _ := selfSigned(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Leaf.Raw}), 0o600)
	up := rawUpstream(t, func(c net.Conn) {
		hc := &heldConn{Conn: c}
		tc := tls.Server(hc, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
		br := bufio.NewReader(tc)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Header.Get("X-First") == "" {
				io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
				continue
			}
			// Two records, one TCP write: the gateway's read of the
			// first takes the second into crypto/tls's buffer.
			hc.hold()
			io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nmine")
			io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")
			hc.flush()
		}
	})
	tg := startGateway(t, fmt.Sprintf(`
services:
  - name: s
    targets: [{url: "https://%s"}]
    tls: {ca_file: %q, server_name: localhost}
routes: [{name: r, service: s}]
`, up, caFile))
	client := newClient(t)
	for i := 0; i < 5; i++ {
		req, _ := http.NewRequest("GET", tg.url+"/first", nil)
		req.Header.Set("X-First", "1")
		if resp, body := do(t, client, req); resp.StatusCode != 200 || string(body) != "mine" {
			t.Fatalf("first request: %d %q; want 200 mine", resp.StatusCode, body)
		}
		if resp, body := get(t, client, tg.url+"/next"); resp.StatusCode != 200 || string(body) != "good" {
			t.Fatalf("round %d: the next request got %d %q; want 200 \"good\" (its own answer)", i, resp.StatusCode, body)
		}
	}
}

// heldConn is a connection whose writes can be held and sent in one.
type heldConn struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     []byte
}

func (c *heldConn) hold() { c.mu.Lock(); c.holding = true; c.mu.Unlock() }

func (c *heldConn) flush() {
	c.mu.Lock()
	b := c.buf
	c.buf, c.holding = nil, false
	c.mu.Unlock()
	c.Conn.Write(b)
}

func (c *heldConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.holding {
		c.buf = append(c.buf, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// A reload after the files of a service's tls were replaced (a rotated CA,
// say) reads them again, though the document is the same: new connections
// to an upstream that now shows a certificate of the new CA succeed.
func TestUpstreamTLSFilesReadAgainOnReload(t *testing.T) {
	certA, _ := selfSigned(t)
	certB, _ := selfSigned(t)
	var cur atomic.Pointer[tls.Certificate]
	cur.Store(&certA)
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	be.TLS = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cur.Load(), nil }}
	be.StartTLS()
	defer be.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	writeCA := func(c tls.Certificate) {
		if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Leaf.Raw}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCA(certA)
	doc := fmt.Sprintf("services: [{name: s, targets: [{url: %q}], tls: {ca_file: %q, server_name: localhost}}]\nroutes: [{name: r, service: s}]\n", be.URL, caFile)
	var logBuf syncBuffer
	tg := startGatewayWith(t, gatewaySetup{opts: Options{Logger: slog.New(slog.NewJSONHandler(&logBuf, nil))}}, doc)
	client := newClient(t)
	if resp, body := get(t, client, tg.url+"/"); resp.StatusCode != 200 {
		t.Fatalf("before the rotation: %d %q", resp.StatusCode, body)
	}
	tg.g.Swap(compileDoc(t, tg.g, doc, 2, tg.g.Current()))
	const changed = "upstream TLS files changed"
	if strings.Contains(logBuf.String(), changed) {
		t.Fatalf("a reload with the files as they were logged %q:\n%s", changed, logBuf.String())
	}
	// The upstream moves to a certificate of another CA, and drops its
	// connections; the CA file is replaced, and the same document applied.
	cur.Store(&certB)
	be.CloseClientConnections()
	writeCA(certB)
	tg.g.Swap(compileDoc(t, tg.g, doc, 3, tg.g.Current()))
	if resp, body := get(t, client, tg.url+"/"); resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("after the CA file was replaced and the document applied again: %d %q (%s); want 200 ok", resp.StatusCode, body, resp.Header.Get("Proxy-Status"))
	}
	if !strings.Contains(logBuf.String(), changed) || !strings.Contains(logBuf.String(), `"service":"s"`) {
		t.Errorf("the reload after the CA file changed did not log %q for service s:\n%s", changed, logBuf.String())
	}
}
