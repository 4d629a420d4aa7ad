package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// The bound counts new names only, over a sliding hour, in the storage:
// a restart (a new issuer on the same storage) does not start it over.
func TestOnDemandLimit(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := &certmagic.FileStorage{Path: t.TempDir()}
	issuer := func() *limitedIssuer {
		return &limitedIssuer{acmeIssuer: &acmeIssuer{caURL: "https://ca.example/dir"}, storage: st, max: 2, now: func() time.Time { return now }}
	}
	l := issuer()
	ctx := context.Background()
	if err := st.Store(ctx, certmagic.StorageKeys.SiteCert(l.IssuerKey(), "old.example"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if !l.renewal(ctx, &x509.CertificateRequest{DNSNames: []string{"old.example"}}) {
		t.Error("a name with a certificate in storage is not taken for a renewal")
	}
	if l.renewal(ctx, &x509.CertificateRequest{DNSNames: []string{"old.example", "new.example"}}) {
		t.Error("a request with a new name is taken for a renewal")
	}
	for i := range 2 {
		if err := l.take(ctx); err != nil {
			t.Fatalf("order %d: %v", i+1, err)
		}
		now = now.Add(20 * time.Minute)
	}
	if err := l.take(ctx); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("third order within the hour: %v; want ErrNotAllowed", err)
	}
	if err := issuer().take(ctx); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("third order within the hour after a restart: %v; want ErrNotAllowed (the count is kept)", err)
	}
	now = now.Add(20 * time.Minute) // the first is an hour old now
	if err := issuer().take(ctx); err != nil {
		t.Fatalf("after the first left the hour: %v", err)
	}
}

// Names no authority should be asked for are refused before the ask URL
// hears of them: invalid host names, and IP addresses, which some clients
// put in SNI though RFC 6066 forbids it (and which then spent the hourly
// bound on a certificate for the address).
func TestOnDemandDecisionRefusesNonNames(t *testing.T) {
	var asked atomic.Int32
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { asked.Add(1) }))
	defer ask.Close()
	m := &Manager{onDemand: true, ask: ask.URL, askClient: ask.Client(), allowed: func(string) bool { return true }}
	for _, name := range []string{"127.0.0.1", "::1", "a..example", "a_b.example", "-a.example", strings.Repeat("a", 64) + ".example"} {
		if err := m.decide(context.Background(), name); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("decide(%q) = %v; want ErrNotAllowed", name, err)
		}
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("the ask URL was asked %d times; want never", n)
	}
	if err := m.decide(context.Background(), "shop.example"); err != nil {
		t.Errorf("decide(shop.example) = %v; want it allowed", err)
	}
}
