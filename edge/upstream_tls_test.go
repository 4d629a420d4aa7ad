package edge

import (
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
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
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
