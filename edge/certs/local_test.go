package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// serveLocal runs only an HTTPS listener with m.TLSConfig().
func serveLocal(t *testing.T, m *Manager) string {
	t.Helper()
	l := newListeners(t)
	l.serve(t, m, false)
	return l.tlsLn.Addr().String()
}

// 5. Local CA: root created once and reused, leaves verify against RootPEM, disallowed
// names fail, LoadRootPEM matches.
func TestLocalCA(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadRootPEM(dir); err == nil {
		t.Fatal("LoadRootPEM succeeded before any root exists")
	}
	log, _ := testLogger(t)
	allowed := func(n string) bool { return n == "app.meridian.test" }
	m1 := newManager(t, Options{DataDir: dir, Logger: log, Allowed: allowed})
	root1 := m1.RootPEM()
	fi, err := os.Stat(filepath.Join(dir, "pki", "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("root.key mode %v, want 0600", perm)
	}
	m2 := newManager(t, Options{DataDir: dir, Logger: log, Allowed: allowed})
	if !bytes.Equal(root1, m2.RootPEM()) {
		t.Fatal("second Manager on the same DataDir made a new root")
	}
	loaded, err := LoadRootPEM(dir)
	if err != nil || !bytes.Equal(loaded, root1) {
		t.Fatalf("LoadRootPEM = %v, %v; want RootPEM", loaded != nil, err)
	}
	root, err := parseCertPEM(root1)
	if err != nil {
		t.Fatal(err)
	}
	if !root.IsCA || root.NotAfter.Sub(root.NotBefore) < 9*365*24*time.Hour {
		t.Errorf("root: IsCA %v, validity %v", root.IsCA, root.NotAfter.Sub(root.NotBefore))
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(root1)

	addr := serveLocal(t, m2)
	_, port, _ := net.SplitHostPort(addr)
	for _, name := range []string{"localhost", "app.meridian.test"} {
		leaf, err := handshake(addr, name, pool, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 8*24*time.Hour {
			t.Errorf("%s: leaf lifetime %v", name, life)
		}
	}
	// Dialling an IP sends no SNI: the localhost leaf (with 127.0.0.1 and ::1) answers.
	if _, err := handshake(net.JoinHostPort("127.0.0.1", port), "127.0.0.1", pool, 5*time.Second); err != nil {
		t.Fatalf("empty SNI on 127.0.0.1: %v", err)
	}
	if _, err := handshake(addr, "evil.example.com", pool, 5*time.Second); err == nil {
		t.Fatal("handshake for a disallowed name succeeded")
	}
	// Names given to ManageHosts are remembered and allowed (wildcards: one label).
	if err := m2.ManageHosts(context.Background(), []string{"*.internal.test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, "db.internal.test", pool, 5*time.Second); err != nil {
		t.Fatalf("name under a managed wildcard: %v", err)
	}
	if _, err := handshake(addr, "a.b.internal.test", pool, 5*time.Second); err == nil {
		t.Fatal("wildcard matched two labels")
	}
	if m2.HTTPChallengeHandler(okHandler) == nil {
		t.Fatal("nil handler")
	}
}

// Local leaves are cached, renewed once half their lifetime is gone, and exported as
// expiry metrics against Options.Now.
func TestLocalLeafRenewalAndMetrics(t *testing.T) {
	var now atomicTime
	now.set(time.Now())
	reg := prometheus.NewRegistry()
	m := newManager(t, Options{DataDir: t.TempDir(), Now: now.get, Registerer: reg})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(m.RootPEM())
	addr := serveLocal(t, m)

	a, err := handshake(addr, "localhost", pool, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := handshake(addr, "localhost", pool, 5*time.Second)
	if b == nil || a.SerialNumber.Cmp(b.SerialNumber) != 0 {
		t.Fatal("leaf not cached")
	}
	if v, _ := gauge(t, reg, "meridian_tls_certificates_managed", nil); v != 1 {
		t.Errorf("managed = %v, want 1", v)
	}
	if v, ok := gauge(t, reg, "meridian_tls_certificate_expiry_days", map[string]string{"name": "localhost"}); !ok || v < 6.9 || v > 7.01 {
		t.Errorf("expiry days = %v (%v), want ~7", v, ok)
	}
	now.set(now.get().Add(2 * 24 * time.Hour))
	if v, _ := gauge(t, reg, "meridian_tls_certificate_expiry_days", map[string]string{"name": "localhost"}); v < 4.9 || v > 5.01 {
		t.Errorf("expiry days after 2 days = %v, want ~5", v)
	}
	// Past half of the lifetime: the next handshake gets a new leaf. (The client checks
	// validity against the real clock, so only the serial is compared.)
	now.set(now.get().Add(2 * 24 * time.Hour))
	c, err := m.ca.leafFor("localhost", m.localAllowed)
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf.SerialNumber.Cmp(a.SerialNumber) == 0 {
		t.Fatal("leaf not renewed after half its lifetime")
	}
	if v, _ := gauge(t, reg, "meridian_tls_certificate_expiry_days", map[string]string{"name": "localhost"}); v < 6.9 || v > 7.01 {
		t.Errorf("expiry days after renewal = %v, want ~7", v)
	}
	m.Close()
	if _, ok := gauge(t, reg, "meridian_tls_certificates_managed", nil); ok {
		t.Error("metrics still registered after Close")
	}
}

type atomicTime struct {
	mu sync.Mutex
	t  time.Time
}

func (a *atomicTime) set(t time.Time) { a.mu.Lock(); a.t = t; a.mu.Unlock() }

func (a *atomicTime) get() time.Time { a.mu.Lock(); defer a.mu.Unlock(); return a.t }

// The leaves the local CA keeps are bounded: names under a wildcard route
// are the clients' to choose.
func TestLocalLeavesBounded(t *testing.T) {
	m := newManager(t, Options{DataDir: t.TempDir(), Allowed: func(string) bool { return true }})
	if _, err := m.ca.leafFor("localhost", m.localAllowed); err != nil {
		t.Fatal(err)
	}
	for i := range maxLocalLeaves + 50 {
		if _, err := m.ca.leafFor(fmt.Sprintf("n%d.wild.test", i), m.localAllowed); err != nil {
			t.Fatal(err)
		}
	}
	m.ca.mu.Lock()
	n, hasLocal := len(m.ca.leaves), m.ca.leaves[localhostName] != nil
	m.ca.mu.Unlock()
	if n > maxLocalLeaves || !hasLocal {
		t.Errorf("%d leaves kept (localhost among them: %v); want at most %d, localhost kept", n, hasLocal, maxLocalLeaves)
	}
}
