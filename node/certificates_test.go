package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeLeaf writes a certificate for names signed by ca (and its key) to
// certFile and keyFile, and returns its serial number.
func writeLeaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, serial int64, names []string, certFile, keyFile string) *big.Int {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tmpl.SerialNumber
}

// TestConfiguredCertificates: tls.certificates are served for their names
// over HTTPS; SIGHUP (Reload) reads renewed files, and a pair that no
// longer loads leaves the running certificate in place.
func TestConfiguredCertificates(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "operator CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour * 24 * 365),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "shop.crt"), filepath.Join(dir, "shop.key")
	first := writeLeaf(t, ca, caKey, 10, []string{"shop.example.test"}, certFile, keyFile)
	be := backend(t, "shop")
	conf := func(entries string) string {
		return fmt.Sprintf(`node:
  data_dir: %s
  listen: {http: "127.0.0.1:0", https: "127.0.0.1:0"}
  admin: {listen: off}
  tls:
    certificates:
%s
gateway:
  services:
    - name: shop
      targets: [{url: %q}]
  routes:
    - name: shop
      match: {hosts: [shop.example.test, new.example.test], path_prefix: /}
      service: shop
`, filepath.Join(dir, "data"), entries, be.URL)
	}
	one := fmt.Sprintf("      - {cert_file: %s, key_file: %s}", certFile, keyFile)
	r := startNode(t, dir, conf(one))
	n := r.n
	defer n.Drain(t.Context())
	addr := n.HTTPSAddr()

	// servedFor returns the serial of the certificate a new connection
	// for host gets, after checking that a client trusting only the
	// operator's CA gets the route's answer.
	servedFor := func(host string) *big.Int {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: host, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatalf("handshake for %s: %v", host, err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
		b, _ := io.ReadAll(c)
		if !strings.HasPrefix(string(b), "HTTP/1.1 200") || !strings.Contains(string(b), "shop") {
			t.Errorf("GET over TLS: %q", b)
		}
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	served := func() *big.Int { t.Helper(); return servedFor("shop.example.test") }
	if got := served(); got.Cmp(first) != 0 {
		t.Fatalf("served serial %v; want the configured certificate's %v", got, first)
	}

	// Renewed in place: SIGHUP reads the files again.
	renewed := writeLeaf(t, ca, caKey, 11, []string{"shop.example.test"}, certFile, keyFile)
	if _, err := n.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := served(); got.Cmp(renewed) != 0 {
		t.Fatalf("after SIGHUP: serial %v; want the renewed %v", got, renewed)
	}

	// A key file that no longer loads: the running certificate stays.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.Reload()
	if got := served(); got.Cmp(renewed) != 0 {
		t.Fatalf("after a broken key file: serial %v; want the running %v", got, renewed)
	}

	// An entry added to the file is loaded by SIGHUP too (the rest of the
	// node section needs a restart).
	fixed := writeLeaf(t, ca, caKey, 12, []string{"shop.example.test"}, certFile, keyFile)
	newCert, newKey := filepath.Join(dir, "new.crt"), filepath.Join(dir, "new.key")
	added := writeLeaf(t, ca, caKey, 13, []string{"new.example.test"}, newCert, newKey)
	if err := os.WriteFile(r.path, []byte(conf(one+fmt.Sprintf("\n      - {cert_file: %s, key_file: %s}", newCert, newKey))), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Reload(); err != nil {
		t.Fatalf("Reload with an added entry: %v", err)
	}
	if got := servedFor("new.example.test"); got.Cmp(added) != 0 {
		t.Errorf("added entry: serial %v; want %v", got, added)
	}
	if got := served(); got.Cmp(fixed) != 0 {
		t.Errorf("after the fix: serial %v; want %v", got, fixed)
	}

	// A reload refused for its document (no routes) applies nothing of
	// the file, its certificates neither.
	refused := conf(one)
	refused = refused[:strings.Index(refused, "  routes:")] + "  routes: []\n"
	writeLeaf(t, ca, caKey, 14, []string{"shop.example.test"}, filepath.Join(dir, "other.crt"), filepath.Join(dir, "other.key"))
	refused = strings.Replace(refused, certFile, filepath.Join(dir, "other.crt"), 1)
	refused = strings.Replace(refused, keyFile, filepath.Join(dir, "other.key"), 1)
	if err := os.WriteFile(r.path, []byte(refused), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Reload(); err == nil {
		t.Fatal("a file without routes was applied")
	}
	if got := served(); got.Cmp(fixed) != 0 {
		t.Errorf("after a refused reload: serial %v; want the running %v", got, fixed)
	}

	// A file whose node section has no defaults here (no data_dir, no
	// home or cache directory) still has its certificates loaded.
	t.Setenv("HOME", "")
	t.Setenv("XDG_CACHE_HOME", "")
	renewed2 := writeLeaf(t, ca, caKey, 15, []string{"shop.example.test"}, certFile, keyFile)
	noDataDir := strings.Replace(conf(one), "  data_dir: "+filepath.Join(dir, "data")+"\n", "", 1)
	if err := os.WriteFile(r.path, []byte(noDataDir), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Reload(); err != nil {
		t.Fatalf("Reload without data_dir: %v", err)
	}
	if got := served(); got.Cmp(renewed2) != 0 {
		t.Errorf("a file without data_dir: serial %v; want the renewed %v", got, renewed2)
	}

	// All entries removed: the names go back to the local CA (here; to
	// ACME with an acme section).
	if err := os.WriteFile(r.path, []byte(strings.Replace(conf(""), "    certificates:\n", "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Reload(); err != nil {
		t.Fatalf("Reload without certificates: %v", err)
	}
	local := x509.NewCertPool()
	local.AppendCertsFromPEM(n.RootPEM())
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: local, ServerName: "shop.example.test"})
	if err != nil {
		t.Fatalf("after the certificates were removed: %v; want the local CA's", err)
	}
	c.Close()
}
