package certs

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
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

// issue writes a leaf for names (and ips) with a new ECDSA key to files
// and returns them with the leaf's serial number.
func (ti *testIssuer) issue(t *testing.T, names []string, ips []net.IP, notAfter time.Time) (StaticFiles, *big.Int) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return ti.issueKey(t, key, names, ips, notAfter)
}

// issueKey is issue with a key of the caller's (its PKCS#8 form in the key
// file).
func (ti *testIssuer) issueKey(t *testing.T, key crypto.Signer, names []string, ips []net.IP, notAfter time.Time) (StaticFiles, *big.Int) {
	t.Helper()
	ti.n++
	serial := big.NewInt(ti.n)
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, DNSNames: names, IPAddresses: ips,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ti.cert, key.Public(), ti.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
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
	if err := os.WriteFile(f.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
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
		{[]StaticFiles{c, mismatch}, "certificates[1].key_file: " + a.KeyFile + ": tls: private key does not match public key"},
		{[]StaticFiles{{CertFile: filepath.Join(ti.dir, "missing.crt"), KeyFile: c.KeyFile}}, "certificates[0].cert_file: " + filepath.Join(ti.dir, "missing.crt") + ": no such file or directory"},
		{[]StaticFiles{noNames}, "certificates[0].cert_file: " + noNames.CertFile + ": the certificate names no host"},
		{[]StaticFiles{{CertFile: c.CertFile}}, "certificates[0].key_file: missing"},
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

// TestStaticCertificatesExpected: while a reload applies its document, the
// names of the certificates it is about to use are not handed to ACME; and
// a name that stops being managed has its background order stopped.
func TestStaticCertificatesExpected(t *testing.T) {
	ti := newTestIssuer(t)
	f, _ := ti.issue(t, []string{"new.meridian.test"}, nil, time.Now().Add(time.Hour))
	log, _ := testLogger(t)
	// Background orders go on a little after they are stopped: their
	// storage is memory, not a directory the test removes.
	m := newManager(t, Options{Storage: &memStorage{}, Logger: log, ACME: &ACMEOptions{CA: "https://127.0.0.1:9/dir"}})
	set, err := LoadStatic([]StaticFiles{f})
	if err != nil {
		t.Fatal(err)
	}
	m.ExpectStatic(set)
	if err := m.ManageHosts(context.Background(), []string{"new.meridian.test"}); err != nil {
		t.Fatal(err)
	}
	if m.isManaged("new.meridian.test") {
		t.Error("a name the expected set holds was handed to ACME")
	}
	m.ExpectStatic(nil)
	// Not held by any set now: managed, an order started; then dropped,
	// and the order's context cancelled.
	if err := m.ManageHosts(context.Background(), []string{"new.meridian.test"}); err != nil {
		t.Fatal(err)
	}
	m.mu.RLock()
	w, ok := m.obtaining["new.meridian.test"]
	m.mu.RUnlock()
	if !m.isManaged("new.meridian.test") || !ok || w.ctx.Err() != nil {
		t.Fatalf("managed %v, order context %v; want managed with a live context", m.isManaged("new.meridian.test"), ok)
	}
	if err := m.ManageHosts(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if w.ctx.Err() == nil {
		t.Error("the dropped name's order goes on: its context was not cancelled")
	}
	m.mu.RLock()
	left := len(m.obtaining)
	m.mu.RUnlock()
	if left != 0 {
		t.Errorf("%d order contexts left after every name was dropped", left)
	}
}

// TestStaticCertificateChoice: among certificates for one name the first
// the client can use is served (an RSA-only client gets the RSA one); a
// client without a server name gets the certificate for the address it
// dialled; the expiry metric shows the earliest of a name's certificates.
func TestStaticCertificateChoice(t *testing.T) {
	ti := newTestIssuer(t)
	later := time.Now().Add(365 * 24 * time.Hour)
	ec, serialEC := ti.issue(t, []string{"dual.example.com"}, nil, time.Now().Add(3*24*time.Hour))
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs, serialRSA := ti.issueKey(t, rsaKey, []string{"dual.example.com"}, nil, later)
	byIP, serialIP := ti.issue(t, nil, []net.IP{net.ParseIP("127.0.0.2")}, later)
	// An exact name with only an ECDSA certificate, a wildcard over it
	// with an RSA one.
	exactEC, serialExactEC := ti.issue(t, []string{"a.x.example.com"}, nil, later)
	rsaKey2, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	wildRSA, serialWildRSA := ti.issueKey(t, rsaKey2, []string{"*.x.example.com"}, nil, later)
	log, _ := testLogger(t)
	m := newManager(t, Options{DataDir: t.TempDir(), Logger: log})
	if err := m.SetStatic([]StaticFiles{ec, rs, byIP, exactEC, wildRSA}); err != nil {
		t.Fatal(err)
	}
	// Listeners on two loopback addresses, handshakes only.
	serve := func(addr string) string {
		ln, err := tls.Listen("tcp", addr, m.TLSConfig())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.(*tls.Conn).Handshake()
				c.Close()
			}
		}()
		return ln.Addr().String()
	}
	addr1, addr2 := serve("127.0.0.1:0"), serve("127.0.0.2:0")
	served := func(addr string, conf *tls.Config) *big.Int {
		t.Helper()
		conf.InsecureSkipVerify = true
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
		if err != nil {
			t.Fatalf("%s %q: %v", addr, conf.ServerName, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	if got := served(addr1, &tls.Config{ServerName: "dual.example.com"}); got.Cmp(serialEC) != 0 {
		t.Errorf("a client that takes either: serial %v; want the first, %v", got, serialEC)
	}
	rsaOnly := &tls.Config{ServerName: "dual.example.com", MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}}
	if got := served(addr1, rsaOnly); got.Cmp(serialRSA) != 0 {
		t.Errorf("an RSA-only client: serial %v; want the RSA certificate's %v", got, serialRSA)
	}
	if got := served(addr1, &tls.Config{ServerName: "a.x.example.com"}); got.Cmp(serialExactEC) != 0 {
		t.Errorf("exact name, a client that takes either: serial %v; want the exact name's %v", got, serialExactEC)
	}
	rsaOnly.ServerName = "a.x.example.com"
	if got := served(addr1, rsaOnly); got.Cmp(serialWildRSA) != 0 {
		t.Errorf("exact name, an RSA-only client: serial %v; want the wildcard RSA certificate's %v", got, serialWildRSA)
	}
	// An address sent as the server name (clients should not; Go's do
	// not, so the lookup is asked directly).
	if c := m.static.Load().lookup("127.0.0.2", nil); c == nil || c.Leaf.SerialNumber.Cmp(serialIP) != 0 {
		t.Errorf("the name 127.0.0.2: %v; want the certificate for that address", c)
	}
	if got := served(addr2, &tls.Config{}); got.Cmp(serialIP) != 0 {
		t.Errorf("no server name, dialled 127.0.0.2: serial %v; want the certificate for that address, %v", got, serialIP)
	}
	rsaNoName := &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}}
	if got := served(addr2, rsaNoName); got.Cmp(serialRSA) != 0 {
		t.Errorf("no server name, dialled 127.0.0.2, an RSA-only client: serial %v; want the first RSA certificate, %v", got, serialRSA)
	}
	// Dialled 127.0.0.1, which no configured certificate names: the local
	// CA's for it (one for a name would not verify), not the first.
	c, err := tls.Dial("tcp", addr1, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.ConnectionState().PeerCertificates[0]
	c.Close()
	if len(leaf.IPAddresses) == 0 || !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || leaf.SerialNumber.Cmp(serialEC) == 0 {
		t.Errorf("no server name, dialled 127.0.0.1 (no certificate names it): a certificate for %v %v; want the local CA's for 127.0.0.1", leaf.DNSNames, leaf.IPAddresses)
	}
	exp := m.certExpiries()
	if d := time.Until(exp["dual.example.com"]); d > 4*24*time.Hour || d < 2*24*time.Hour {
		t.Errorf("expiry of dual.example.com in %v; want the earlier certificate's, about 3 days", d)
	}
	if exp["127.0.0.2"].IsZero() {
		t.Errorf("no expiry for the address certificate: %v", exp)
	}
}

// TestStaticCertificateFilesRefused: what cannot be served is refused at
// load, with the file at fault: a weak RSA key, an encrypted key, a chain
// in the wrong order, files that are not regular or too large.
func TestStaticCertificateFilesRefused(t *testing.T) {
	ti := newTestIssuer(t)
	later := time.Now().Add(time.Hour)
	good, _ := ti.issue(t, []string{"a.example.com"}, nil, later)
	t.Setenv("GODEBUG", "rsa1024min=0") // to make one: Go refuses such keys
	weakKey, err := rsa.GenerateKey(rand.Reader, 512)
	if err != nil {
		t.Fatal(err)
	}
	weak, _ := ti.issueKey(t, weakKey, []string{"weak.example.com"}, nil, later)

	encrypted := filepath.Join(ti.dir, "encrypted.key")
	os.WriteFile(encrypted, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("x")}), 0o600)
	// The leaf after another certificate (the issuer's).
	reversed := filepath.Join(ti.dir, "reversed.crt")
	leafPEM, _ := os.ReadFile(good.CertFile)
	os.WriteFile(reversed, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ti.cert.Raw}), leafPEM...), 0o644)
	big := filepath.Join(ti.dir, "big.crt")
	os.WriteFile(big, bytes.Repeat([]byte("x"), maxStaticFile+1), 0o644)
	fifo := filepath.Join(ti.dir, "fifo.crt")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		f    StaticFiles
		want string
	}{
		{weak, "certificates[0].key_file: " + weak.KeyFile + ": an RSA key of 512 bits"},
		{StaticFiles{good.CertFile, encrypted}, "certificates[0].key_file: " + encrypted + ": the private key is encrypted"},
		{StaticFiles{reversed, good.KeyFile}, "certificates[0].cert_file: " + reversed + ": the key belongs to certificate 2 of the file"},
		{StaticFiles{big, good.KeyFile}, "certificates[0].cert_file: " + big + ": 1048577 bytes, over the 1048576"},
		{StaticFiles{fifo, good.KeyFile}, "certificates[0].cert_file: " + fifo + ": not a regular file"},
		{StaticFiles{good.CertFile, "/dev/zero"}, "certificates[0].key_file: /dev/zero: not a regular file"},
		{StaticFiles{good.CertFile, ti.dir}, "certificates[0].key_file: " + ti.dir + ": is a directory"},
	} {
		se := CheckStatic(c.f)
		if se == nil || !strings.Contains(se.Error(), c.want) {
			t.Errorf("%v: %v; want an error with %q", c.f, se, c.want)
		}
	}
}

// memStorage is a certmagic.Storage in memory, for managers whose
// background work must not outlive a test's directories.
type memStorage struct {
	mu    sync.Mutex
	m     map[string][]byte
	locks map[string]bool
}

func (s *memStorage) Store(_ context.Context, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	s.m[key] = bytes.Clone(value)
	return nil
}

func (s *memStorage) Load(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return bytes.Clone(v), nil
}

func (s *memStorage) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
	return nil
}

func (s *memStorage) Exists(_ context.Context, key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[key]
	return ok
}

func (s *memStorage) List(_ context.Context, prefix string, _ bool) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k := range s.m {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, fs.ErrNotExist
	}
	return keys, nil
}

func (s *memStorage) Stat(_ context.Context, key string) (certmagic.KeyInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	if !ok {
		return certmagic.KeyInfo{}, fs.ErrNotExist
	}
	return certmagic.KeyInfo{Key: key, Size: int64(len(v)), IsTerminal: true}, nil
}

func (s *memStorage) Lock(ctx context.Context, name string) error {
	for {
		s.mu.Lock()
		if !s.locks[name] {
			if s.locks == nil {
				s.locks = map[string]bool{}
			}
			s.locks[name] = true
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (s *memStorage) Unlock(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.locks, name)
	return nil
}
