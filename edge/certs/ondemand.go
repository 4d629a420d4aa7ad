package certs

import (
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// DefaultOnDemandPerHour is how many new certificates a node obtains on
// demand in any hour when OnDemandOptions.MaxNewPerHour is not set.
const DefaultOnDemandPerHour = 20

// limitedIssuer is the on-demand configuration's issuer: it obtains a
// certificate for a name that has none in storage only if fewer than max
// such were obtained in the last hour (renewals are not counted nor
// held). A wildcard route admits every name under it, and anyone who can
// point DNS at the node could otherwise make it order certificates
// without end, spending the account's quota at the CA (Let's Encrypt: 300
// new orders in 3 hours, 50 certificates a registered domain a week) and
// storage.
type limitedIssuer struct {
	*acmeIssuer
	storage certmagic.Storage
	max     int
	now     func() time.Time

	mu     sync.Mutex
	recent []time.Time // when the last new certificates were ordered, oldest first
}

func (l *limitedIssuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	if l.renewal(ctx, csr) {
		return l.acmeIssuer.Issue(ctx, csr)
	}
	if err := l.take(); err != nil {
		return nil, certmagic.ErrNoRetry{Err: err}
	}
	return l.acmeIssuer.Issue(ctx, csr)
}

// renewal reports whether every name of csr has a certificate of this
// issuer in storage already.
func (l *limitedIssuer) renewal(ctx context.Context, csr *x509.CertificateRequest) bool {
	names := csr.DNSNames
	for _, ip := range csr.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return false
	}
	for _, n := range names {
		if !l.storage.Exists(ctx, certmagic.StorageKeys.SiteCert(l.IssuerKey(), n)) {
			return false
		}
	}
	return true
}

// take counts a new order, or refuses it if max were made in the last hour.
func (l *limitedIssuer) take() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for len(l.recent) > 0 && now.Sub(l.recent[0]) >= time.Hour {
		l.recent = l.recent[1:]
	}
	if len(l.recent) >= l.max {
		return fmt.Errorf("certs: %d new certificates were obtained on demand in the last hour, the most tls.on_demand.max_new_per_hour allows; the next in %v: %w",
			l.max, (time.Hour - now.Sub(l.recent[0])).Round(time.Second), ErrNotAllowed)
	}
	l.recent = append(l.recent, now)
	return nil
}
