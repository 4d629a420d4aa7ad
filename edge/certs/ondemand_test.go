package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// The bound counts new names only, over a sliding hour.
func TestOnDemandLimit(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := &certmagic.FileStorage{Path: t.TempDir()}
	l := &limitedIssuer{acmeIssuer: &acmeIssuer{caURL: "https://ca.example/dir"}, storage: st, max: 2, now: func() time.Time { return now }}
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
		if err := l.take(); err != nil {
			t.Fatalf("order %d: %v", i+1, err)
		}
		now = now.Add(20 * time.Minute)
	}
	if err := l.take(); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("third order within the hour: %v; want ErrNotAllowed", err)
	}
	now = now.Add(20 * time.Minute) // the first is an hour old now
	if err := l.take(); err != nil {
		t.Fatalf("after the first left the hour: %v", err)
	}
}
