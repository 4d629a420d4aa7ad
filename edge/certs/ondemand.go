package certs

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
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
// storage. The count is kept in the certificate storage (onDemandOrdersKey),
// so that a restart does not start it over, and a cluster, whose nodes
// share that storage, has one count.
type limitedIssuer struct {
	*acmeIssuer
	storage certmagic.Storage
	max     int
	now     func() time.Time
}

// onDemandOrdersKey is where the times of the last hour's new on-demand
// orders are kept (a JSON list of Unix nanoseconds).
const onDemandOrdersKey = "meridian/on_demand_orders.json"

func (l *limitedIssuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	if l.renewal(ctx, csr) {
		return l.acmeIssuer.Issue(ctx, csr)
	}
	if err := l.take(ctx); err != nil {
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

// take counts a new order, or refuses it if max were made in the last
// hour, under the storage's lock.
func (l *limitedIssuer) take(ctx context.Context) error {
	if err := l.storage.Lock(ctx, onDemandOrdersKey); err != nil {
		return fmt.Errorf("certs: counting on-demand orders: %w", err)
	}
	defer l.storage.Unlock(context.WithoutCancel(ctx), onDemandOrdersKey)
	var recent []int64
	if b, err := l.storage.Load(ctx, onDemandOrdersKey); err == nil {
		if json.Unmarshal(b, &recent) != nil {
			recent = nil // unreadable: counted afresh
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("certs: counting on-demand orders: %w", err)
	}
	now := l.now()
	recent = slices.DeleteFunc(recent, func(t int64) bool {
		return now.Sub(time.Unix(0, t)) >= time.Hour || time.Unix(0, t).After(now.Add(time.Minute))
	})
	slices.Sort(recent)
	if len(recent) >= l.max {
		return fmt.Errorf("certs: %d new certificates were obtained on demand in the last hour, the most tls.on_demand.max_new_per_hour allows; the next in %v: %w",
			l.max, (time.Hour - now.Sub(time.Unix(0, recent[len(recent)-l.max]))).Round(time.Second), ErrNotAllowed)
	}
	recent = append(recent, now.UnixNano())
	b, _ := json.Marshal(recent)
	if err := l.storage.Store(ctx, onDemandOrdersKey, b); err != nil {
		return fmt.Errorf("certs: counting on-demand orders: %w", err)
	}
	return nil
}
