package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testIssuer is a CA for the operator's own certificates in these tests.
type testIssuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	dir  string
	n    int64
}

func newTestIssuer(t *testing.T) *testIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test issuer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour * 24 * 365),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testIssuer{cert: cert, key: key, pool: pool, dir: t.TempDir(), n: 1}
}

// issue writes a leaf for names (and ips) to files and returns them with
// the leaf's serial number.
func (ti *testIssuer) issue(t *testing.T, names []string, ips []net.IP, notAfter time.Time) (StaticFiles, *big.Int) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ti.n++
	serial := big.NewInt(ti.n)
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, DNSNames: names, IPAddresses: ips,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ti.cert, &key.PublicKey, ti.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	f := StaticFiles{
		CertFile: filepath.Join(ti.dir, serial.String()+".crt"),
		KeyFile:  filepath.Join(ti.dir, serial.String()+".key"),
	}
	if err := os.WriteFile(f.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f, serial
}

// servedSerial completes a handshake with SNI name (none if "") without
// verifying, and returns the serial number of the leaf served.
func servedSerial(addr, name string) (*big.Int, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// TestStaticCertificates: the operator's certificates are served for the
// names they hold, the first for a handshake without a name, before the
// local CA; a set with a bad pair is refused whole and the running one
// stays; a new set replaces it at the next handshake.
func TestStaticCertificates(t *testing.T) {
	ti := newTestIssuer(t)
	later := time.Now().Add(90 * 24 * time.Hour)
	a, serialA := ti.issue(t, []string{"shop.example.com", "*.api.example.com"}, []net.IP{net.ParseIP("127.0.0.1")}, later)
	b, serialB := ti.issue(t, []string{"Shop.Example.com", "other.example.com"}, nil, later)
	log, logs := testLogger(t)
	m := newManager(t, Options{DataDir: t.TempDir(), Logger: log, Allowed: func(n string) bool { return n == "app.meridian.test" }})
	if err := m.SetStatic([]StaticFiles{a, b}); err != nil {
		t.Fatal(err)
	}
	addr := serveLocal(t, m)
	_, port, _ := net.SplitHostPort(addr)
	localRoots := x509.NewCertPool()
	localRoots.AppendCertsFromPEM(m.RootPEM())

	for _, c := range []struct {
		name string
		want *big.Int
	}{
		{"shop.example.com", serialA}, // the first that names it
		{"SHOP.example.com.", serialA},
		{"other.example.com", serialB},
		{"v1.api.example.com", serialA}, // wildcard: one label
	} {
		leaf, err := handshake(addr, c.name, ti.pool, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if leaf.SerialNumber.Cmp(c.want) != 0 {
			t.Errorf("%s: served serial %v, want %v", c.name, leaf.SerialNumber, c.want)
		}
	}
	// Dialled by address, with no server name: the first certificate.
	if got, err := servedSerial(net.JoinHostPort("127.0.0.1", port), ""); err != nil || got.Cmp(serialA) != 0 {
		t.Errorf("no SNI: serial %v, %v; want %v", got, err, serialA)
	}
	// Names no certificate holds go on as before: the local CA for
	// allowed names, nothing for others.
	if _, err := handshake(addr, "app.meridian.test", localRoots, 5*time.Second); err != nil {
		t.Errorf("allowed name the certificates do not hold: %v", err)
	}
	for _, name := range []string{"a.b.api.example.com", "evil.example.com"} {
		if _, err := servedSerial(addr, name); err == nil {
			t.Errorf("%s: a handshake succeeded", name)
		}
	}
	if exp := m.certExpiries(); !exp["shop.example.com"].Equal(later.Truncate(time.Second)) || exp["*.api.example.com"].IsZero() {
		t.Errorf("expiries %v: the configured certificates' names missing", exp)
	}

	// A set with a bad pair is refused whole: the running one stays.
	c, serialC := ti.issue(t, []string{"shop.example.com"}, nil, later)
	mismatch := StaticFiles{CertFile: c.CertFile, KeyFile: a.KeyFile}
	noNames, _ := ti.issue(t, nil, nil, later)
	for _, bad := range []struct {
		files []StaticFiles
		want  string
	}{
		{[]StaticFiles{c, mismatch}, "private key does not match"},
		{[]StaticFiles{{CertFile: filepath.Join(ti.dir, "missing.crt"), KeyFile: c.KeyFile}}, "missing.crt"},
		{[]StaticFiles{noNames}, "names no host"},
		{[]StaticFiles{{CertFile: c.CertFile}}, "cert_file and key_file are both required"},
	} {
		err := m.SetStatic(bad.files)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("SetStatic(%v) = %v; want an error with %q", bad.files, err, bad.want)
		}
	}
	if leaf, err := handshake(addr, "shop.example.com", ti.pool, 5*time.Second); err != nil || leaf.SerialNumber.Cmp(serialA) != 0 {
		t.Fatalf("after refused sets: %v, %v; want the running certificate %v", leaf, err, serialA)
	}

	// A new set replaces the old at the next handshake.
	if err := m.SetStatic([]StaticFiles{c}); err != nil {
		t.Fatal(err)
	}
	if leaf, err := handshake(addr, "shop.example.com", ti.pool, 5*time.Second); err != nil || leaf.SerialNumber.Cmp(serialC) != 0 {
		t.Fatalf("after the new set: %v, %v; want %v", leaf, err, serialC)
	}
	if _, err := servedSerial(addr, "other.example.com"); err == nil {
		t.Error("a name only the old set held is still served")
	}
	// An expired certificate is served (as nginx and Caddy do), with a warning.
	old, serialOld := ti.issue(t, []string{"old.example.com"}, nil, time.Now().Add(-time.Minute))
	if err := m.SetStatic([]StaticFiles{old}); err != nil {
		t.Fatal(err)
	}
	if got, err := servedSerial(addr, "old.example.com"); err != nil || got.Cmp(serialOld) != 0 {
		t.Errorf("expired certificate: %v, %v", got, err)
	}
	if !strings.Contains(logs.String(), "has expired") {
		t.Error("no warning about the expired certificate")
	}
}

// TestStaticCertificatesNotManaged: the hosts a configured certificate
// holds are neither ordered from the ACME CA (wildcards included, which
// ACME could not serve) nor signed by the local CA; others are.
func TestStaticCertificatesNotManaged(t *testing.T) {
	ti := newTestIssuer(t)
	f, _ := ti.issue(t, []string{"*.meridian.test", "meridian.test"}, nil, time.Now().Add(time.Hour))
	covered := []string{"*.meridian.test", "a.meridian.test", "meridian.test"}
	for _, acme := range []bool{true, false} {
		log, _ := testLogger(t)
		opts := Options{DataDir: t.TempDir(), Logger: log}
		if acme {
			opts.ACME = &ACMEOptions{CA: "https://127.0.0.1:9/dir"}
		}
		m := newManager(t, opts)
		if err := m.SetStatic([]StaticFiles{f}); err != nil {
			t.Fatal(err)
		}
		hosts := covered
		if !acme {
			// (In ACME mode this would start orders in the background.)
			hosts = append(hosts, "a.b.meridian.test")
		}
		if err := m.ManageHosts(context.Background(), hosts); err != nil {
			t.Fatalf("acme %v: ManageHosts: %v (a configured certificate holds every name)", acme, err)
		}
		for _, n := range covered {
			if m.isManaged(n) {
				t.Errorf("acme %v: %s is managed though a configured certificate holds it", acme, n)
			}
		}
		if !acme && !m.isManaged("a.b.meridian.test") {
			t.Error("a name the certificate does not hold is not managed")
		}
	}
}
