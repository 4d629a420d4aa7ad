package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-gw/meridian/internal/pebbletest"
)

const testHost = "api.meridian.test"

func acmeOpts(p *pebbletest.Pebble, challenges ...string) *ACMEOptions {
	return &ACMEOptions{
		Email:      "ops@meridian.test",
		CA:         p.DirectoryURL,
		CARootFile: p.MinicaFile,
		Challenges: challenges,
		Profile:    "default", // pebble picks a random profile for orders without one
	}
}

func newManager(t *testing.T, opts Options) *Manager {
	t.Helper()
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// waitServed polls until a client trusting only pebble's root gets a valid certificate
// for name from the node's HTTPS listener.
func waitServed(t *testing.T, l *listeners, p *pebbletest.Pebble, name string, timeout time.Duration) *x509.Certificate {
	t.Helper()
	var leaf *x509.Certificate
	waitFor(t, timeout, "certificate for "+name+" served", func() error {
		var err error
		leaf, err = handshake(l.tlsLn.Addr().String(), name, p.Roots, 5*time.Second)
		return err
	})
	return leaf
}

func gauge(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metric
				}
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue(), true
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue(), true
			}
		}
	}
	return 0, false
}

// 1. HTTP-01 through the node's own plain HTTP listener.
func TestACMEHTTP01(t *testing.T) {
	l := newListeners(t)
	p := startPebble(t, l.httpPort, l.tlsPort)
	log, _ := testLogger(t)
	reg := prometheus.NewRegistry()
	m := newManager(t, Options{DataDir: t.TempDir(), Logger: log, ACME: acmeOpts(p, ChallengeHTTP01), Registerer: reg})
	l.serve(t, m, true)

	if err := m.ManageHosts(context.Background(), []string{testHost}); err != nil {
		t.Fatal(err)
	}
	// Idempotent: managing the same list again starts nothing new.
	if err := m.ManageHosts(context.Background(), []string{testHost}); err != nil {
		t.Fatal(err)
	}
	leaf := waitServed(t, l, p, testHost, 60*time.Second)
	if leaf.DNSNames[0] != testHost {
		t.Fatalf("served %v", leaf.DNSNames)
	}
	if v, _ := gauge(t, reg, "meridian_acme_obtained_total", nil); v != 1 {
		t.Errorf("meridian_acme_obtained_total = %v, want 1", v)
	}
	if v, _ := gauge(t, reg, "meridian_tls_certificates_managed", nil); v != 1 {
		t.Errorf("meridian_tls_certificates_managed = %v, want 1", v)
	}
	if v, ok := gauge(t, reg, "meridian_tls_certificate_expiry_days", map[string]string{"name": testHost}); !ok || v < 89 || v > 91 {
		t.Errorf("meridian_tls_certificate_expiry_days{name=%q} = %v (present %v), want ~90", testHost, v, ok)
	}
	// The plain HTTP listener hands everything but a live challenge to the next handler.
	for _, path := range []string{"/hello", "/.well-known/acme-challenge/unknown-token"} {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", l.httpPort, path))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "ok" {
			t.Errorf("GET %s: %q, want the next handler's \"ok\"", path, body)
		}
	}
	// A client offering acme-tls/1 among other protocols is no
	// TLS-ALPN-01 validation (RFC 8737 3: offered alone): it gets the
	// certificate, where it got an internal-error alert; one offering it
	// alone, with that challenge off, is refused.
	if _, err := handshakeOffering(l.tlsLn.Addr().String(), testHost, p.Roots, 5*time.Second, "acme-tls/1", "h2"); err != nil {
		t.Errorf("handshake offering acme-tls/1 and h2: %v; want the certificate", err)
	}
	if _, err := handshakeOffering(l.tlsLn.Addr().String(), testHost, p.Roots, 5*time.Second, "acme-tls/1"); err == nil || !strings.Contains(err.Error(), "no application protocol") {
		t.Errorf("a validation handshake with tls-alpn-01 off: %v; want refused with no_application_protocol (RFC 7301 3.2)", err)
	}
	// A name that is neither managed nor on demand is refused.
	if _, err := handshake(l.tlsLn.Addr().String(), "other.meridian.test", p.Roots, 5*time.Second); err == nil {
		t.Fatal("handshake for an unmanaged name succeeded")
	}
	if v, _ := gauge(t, reg, "meridian_acme_failures_total", nil); v != 0 {
		t.Errorf("meridian_acme_failures_total = %v, want 0", v)
	}
}

// 2. TLS-ALPN-01 through the node's HTTPS listener only.
func TestACMETLSALPN01(t *testing.T) {
	l := newListeners(t)
	l.httpLn.Close() // nothing answers HTTP: only TLS-ALPN-01 can succeed
	p := startPebble(t, l.httpPort, l.tlsPort)
	log, buf := testLogger(t)
	m := newManager(t, Options{DataDir: t.TempDir(), Logger: log, ACME: acmeOpts(p, ChallengeTLSALPN01)})
	l.serve(t, m, false)

	if err := m.ManageHosts(context.Background(), []string{testHost}); err != nil {
		t.Fatal(err)
	}
	waitServed(t, l, p, testHost, 60*time.Second)
	if !strings.Contains(buf.String(), "answering tls-alpn-01 challenge") {
		t.Error("certificate served but the log does not show the TLS-ALPN-01 challenge answered by TLSConfig")
	}
}

// 3. Renewal of a short-lived certificate by certmagic's maintenance loop.
func TestACMERenewal(t *testing.T) {
	l := newListeners(t)
	p := startPebble(t, l.httpPort, l.tlsPort)
	log, _ := testLogger(t)
	reg := prometheus.NewRegistry()
	a := acmeOpts(p, ChallengeHTTP01)
	a.Profile = "shortlived"   // pebbleShortLivedSeconds of validity
	a.RenewalWindowRatio = 0.6 // renew with 60% of the lifetime left (after ~12s)
	a.RenewCheckInterval = time.Second
	m := newManager(t, Options{DataDir: t.TempDir(), Logger: log, ACME: a, Registerer: reg})
	l.serve(t, m, true)
	if err := m.ManageHosts(context.Background(), []string{testHost}); err != nil {
		t.Fatal(err)
	}
	first := waitServed(t, l, p, testHost, 60*time.Second)
	if life := first.NotAfter.Sub(first.NotBefore); life > 2*pebbleShortLivedSeconds*time.Second {
		t.Fatalf("profile not applied: lifetime %v", life)
	}
	var second *x509.Certificate
	waitFor(t, 2*pebbleShortLivedSeconds*time.Second, "renewed certificate served", func() error {
		leaf, err := handshake(l.tlsLn.Addr().String(), testHost, p.Roots, 5*time.Second)
		if err != nil {
			return err
		}
		if leaf.SerialNumber.Cmp(first.SerialNumber) == 0 {
			return fmt.Errorf("still serial %x (not after %v)", first.SerialNumber, first.NotAfter)
		}
		second = leaf
		return nil
	})
	if !second.NotBefore.After(first.NotBefore) && !second.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed certificate is not newer: %v-%v vs %v-%v", second.NotBefore, second.NotAfter, first.NotBefore, first.NotAfter)
	}
	if v, _ := gauge(t, reg, "meridian_acme_obtained_total", nil); v < 2 {
		t.Errorf("meridian_acme_obtained_total = %v, want >= 2", v)
	}
}

// 4. On demand: a name Allowed rejects and the Ask endpoint refuses fails
// the handshake at once without any byte reaching the CA; a name Allowed
// accepts gets its certificate during the handshake without Ask being
// asked; a name only Ask allows gets one too.
func TestACMEOnDemand(t *testing.T) {
	l := newListeners(t)
	p := startPebble(t, l.httpPort, l.tlsPort)
	r := pebbletest.NewRelay(t, p.ACMEAddr)
	var askMu sync.Mutex
	var asked []string
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		d := req.URL.Query().Get("domain")
		askMu.Lock()
		asked = append(asked, d)
		askMu.Unlock()
		if !strings.HasPrefix(d, "asked-ok.") {
			http.Error(w, "no", http.StatusForbidden)
		}
	}))
	t.Cleanup(ask.Close)
	askedNames := func() []string {
		askMu.Lock()
		defer askMu.Unlock()
		return append([]string(nil), asked...)
	}
	addr, _ := onDemandNode(t, l, p, r, OnDemandOptions{Enabled: true, Ask: ask.URL})

	start := time.Now()
	_, err := handshake(addr, "evil.example.com", p.Roots, 10*time.Second)
	if err == nil {
		t.Fatal("handshake for a name neither Allowed nor Ask accepts succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("refusal took %v", d)
	}
	if n, c := r.Sent(), r.Conns(); n != 0 || c != 0 {
		t.Fatalf("the CA was contacted for a refused name: %d bytes over %d connections", n, c)
	}
	if got := askedNames(); len(got) != 1 || got[0] != "evil.example.com" {
		t.Errorf("ask endpoint saw %q, want only evil.example.com", got)
	}
	// Names that are no host names are refused before anyone is asked:
	// an empty label, a label over 63 bytes, a hyphen at a label's end.
	for _, bad := range []string{"asked-ok..example.net", "asked-ok." + strings.Repeat("a", 64) + ".example.net", "asked-ok-.example.net"} {
		if _, err := handshake(addr, bad, p.Roots, 5*time.Second); err == nil {
			t.Errorf("handshake for %q succeeded", bad)
		}
	}
	if got := askedNames(); len(got) != 1 {
		t.Errorf("ask endpoint saw %q; want invalid names never asked about", got)
	}
	if n := r.Sent(); n != 0 {
		t.Fatalf("the CA was contacted for invalid names: %d bytes", n)
	}

	leaf, err := handshake(addr, "shop.meridian.test", p.Roots, 60*time.Second)
	if err != nil {
		t.Fatalf("on-demand handshake for an allowed name: %v", err)
	}
	if leaf.DNSNames[0] != "shop.meridian.test" {
		t.Fatalf("served %v", leaf.DNSNames)
	}
	if r.Sent() == 0 {
		t.Fatal("certificate obtained without the CA relay seeing traffic: the relay is not in the path")
	}
	if got := askedNames(); len(got) != 1 {
		t.Errorf("ask endpoint was asked about a name Allowed accepts: %q", got)
	}

	leaf, err = handshake(addr, "asked-ok.example.net", p.Roots, 60*time.Second)
	if err != nil {
		t.Fatalf("on-demand handshake for a name the Ask endpoint allows: %v", err)
	}
	if leaf.DNSNames[0] != "asked-ok.example.net" {
		t.Fatalf("served %v", leaf.DNSNames)
	}
}

// New certificates obtained on demand are bounded per hour: a flood of
// names under a wildcard route (anyone who points DNS at the node can make
// them) stops at the bound without the CA being asked; names that have a
// certificate are still served.
func TestACMEOnDemandBounded(t *testing.T) {
	l := newListeners(t)
	p := startPebble(t, l.httpPort, l.tlsPort)
	r := pebbletest.NewRelay(t, p.ACMEAddr)
	addr, buf := onDemandNode(t, l, p, r, OnDemandOptions{Enabled: true, MaxNewPerHour: 2})
	for _, n := range []string{"a.meridian.test", "b.meridian.test"} {
		if _, err := handshake(addr, n, p.Roots, 60*time.Second); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	sent := r.Sent()
	if _, err := handshake(addr, "c.meridian.test", p.Roots, 60*time.Second); err == nil {
		t.Fatal("a third new certificate in the hour was obtained; want the bound (2) to refuse it")
	}
	if r.Sent() != sent {
		t.Errorf("the CA was contacted for the refused name (%d bytes more)", r.Sent()-sent)
	}
	if !strings.Contains(buf.String(), "max_new_per_hour") {
		t.Error("the refusal is not logged with the setting that made it")
	}
	if _, err := handshake(addr, "a.meridian.test", p.Roots, 10*time.Second); err != nil {
		t.Errorf("a name with a certificate, after the bound: %v", err)
	}
}

// onDemandNode serves a Manager with on-demand TLS (od) on l, its CA
// pebble reached through the relay r, names under .meridian.test allowed;
// it returns the TLS address and the log.
func onDemandNode(t *testing.T, l *listeners, p *pebbletest.Pebble, r *pebbletest.Relay, od OnDemandOptions) (string, *pebbletest.SyncBuffer) {
	t.Helper()
	log, buf := testLogger(t)
	a := acmeOpts(p, ChallengeHTTP01)
	a.CA = p.DirectoryURLVia(r.Addr())
	m := newManager(t, Options{
		DataDir:  t.TempDir(),
		Logger:   log,
		ACME:     a,
		Allowed:  func(n string) bool { return strings.HasSuffix(n, ".meridian.test") },
		OnDemand: &od,
	})
	l.serve(t, m, true)
	return l.tlsLn.Addr().String(), buf
}

// countingStorage counts what goes through the certmagic.Storage seam.
type countingStorage struct {
	certmagic.Storage
	mu     sync.Mutex
	stores []string
	locks  atomic.Int64
}

func (s *countingStorage) Store(ctx context.Context, key string, value []byte) error {
	s.mu.Lock()
	s.stores = append(s.stores, key)
	s.mu.Unlock()
	return s.Storage.Store(ctx, key, value)
}

func (s *countingStorage) Lock(ctx context.Context, name string) error {
	s.locks.Add(1)
	return s.Storage.Lock(ctx, name)
}

func (s *countingStorage) stored(substr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.stores {
		if strings.Contains(k, substr) {
			return true
		}
	}
	return false
}

// 6. Certificates, accounts, challenges and locks go through Options.Storage.
func TestACMEStorageSeam(t *testing.T) {
	l := newListeners(t)
	p := startPebble(t, l.httpPort, l.tlsPort)
	log, _ := testLogger(t)
	backing := t.TempDir()
	st := &countingStorage{Storage: &certmagic.FileStorage{Path: backing}}
	dataDir := t.TempDir()
	m := newManager(t, Options{DataDir: dataDir, Logger: log, ACME: acmeOpts(p), Storage: st})
	l.serve(t, m, true)
	if err := m.ManageHosts(context.Background(), []string{testHost}); err != nil {
		t.Fatal(err)
	}
	waitServed(t, l, p, testHost, 60*time.Second)
	if st.locks.Load() == 0 {
		t.Error("no Lock went through the storage")
	}
	for _, want := range []string{testHost + ".crt", testHost + ".key", "meridian/acme/", "/accounts/", "/challenges/"} {
		if !st.stored(want) {
			t.Errorf("nothing stored matching %q; stored: %q", want, st.stores)
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "certmagic")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("default file storage used although Options.Storage was set (stat: %v)", err)
	}
}

// 7. Wildcards need DNS-01: ManageHosts names them and what is missing.
func TestACMEWildcardNeedsDNS(t *testing.T) {
	for _, provider := range []string{"", "cloudflare"} {
		log, buf := testLogger(t)
		m := newManager(t, Options{DataDir: t.TempDir(), Logger: log, ACME: &ACMEOptions{
			CA: "https://127.0.0.1:9/dir", DNSProvider: provider}})
		err := m.ManageHosts(context.Background(), []string{"*.Meridian.test"})
		if err == nil {
			t.Fatalf("provider %q: no error for a wildcard host", provider)
		}
		for _, want := range []string{"*.meridian.test", "DNS-01"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("provider %q: error %q does not mention %q", provider, err, want)
			}
		}
		if provider != "" && !strings.Contains(err.Error(), provider) {
			t.Errorf("error %q does not name the provider %q", err, provider)
		}
		if !strings.Contains(buf.String(), "wildcard hosts get no certificate") {
			t.Errorf("no logged explanation: %s", buf.String())
		}
		if m.isManaged("*.meridian.test") {
			t.Error("wildcard host is managed")
		}
	}
	// With on-demand issuance each name under a wildcard gets its own
	// certificate at its first handshake: nothing is missing.
	log, buf := testLogger(t)
	m := newManager(t, Options{DataDir: t.TempDir(), Logger: log, ACME: &ACMEOptions{CA: "https://127.0.0.1:9/dir"}, OnDemand: &OnDemandOptions{Enabled: true}})
	if err := m.ManageHosts(context.Background(), []string{"*.meridian.test"}); err != nil {
		t.Errorf("on demand: %v; want no error", err)
	}
	if strings.Contains(buf.String(), "level=ERROR") {
		t.Errorf("on demand: an error logged: %s", buf.String())
	}
}

// Close ends every goroutine the Manager started (certmagic's maintenance, background
// obtain jobs, idle connections to the CA). certmagic.FileStorage's lock-refresh
// goroutines end by themselves a few seconds after the lock is released, hence the poll.
func TestACMECloseEndsGoroutines(t *testing.T) {
	l := newListeners(t)
	p := startPebble(t, l.httpPort, l.tlsPort)
	log, _ := testLogger(t)
	base := runtime.NumGoroutine()
	m, err := New(Options{DataDir: t.TempDir(), Logger: log, ACME: acmeOpts(p, ChallengeHTTP01)})
	if err != nil {
		t.Fatal(err)
	}
	stop := l.serve(t, m, true)
	if err := m.ManageHosts(context.Background(), []string{testHost}); err != nil {
		t.Fatal(err)
	}
	waitServed(t, l, p, testHost, 60*time.Second)
	stop()
	m.Close()
	waitFor(t, 20*time.Second, "goroutines back to the baseline", func() error {
		if n := runtime.NumGoroutine(); n > base {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines, baseline %d:\n%s", n, base, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}
