// Package certs manages the TLS certificates of an edge node.
//
// Two modes:
//
//   - ACME mode (Options.ACME set): certificates come from an ACME CA (Let's Encrypt by
//     default) through caddyserver/certmagic, which caches them in memory, stores them in
//     Options.Storage and renews them in the background. The ACME challenges are answered by
//     Meridian's own listeners only: HTTP-01 by HTTPChallengeHandler on the plain HTTP
//     listener and TLS-ALPN-01 by the GetCertificate of TLSConfig on the HTTPS listener.
//     certmagic's built-in solvers (which bind ports of their own) are never used: this
//     package plugs its own certmagic.Issuer (acmeIssuer) with its own solvers into certmagic.
//   - Local CA mode (Options.ACME nil): a private ECDSA root under DataDir/pki signs
//     short-lived leaves in memory for allowed names and for localhost.
//
// In both modes a TLS handshake for a server name that is neither managed nor allowed fails
// before anything else happens (no CA, no storage, no Ask endpoint is contacted).
package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Challenge type names accepted in ACMEOptions.Challenges.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
)

// LetsEncryptProduction is the default ACME directory.
const LetsEncryptProduction = certmagic.LetsEncryptProductionCA

// Options configure a Manager.
type Options struct {
	// DataDir holds file storage under DataDir/certmagic (when Storage is nil) and the
	// local CA under DataDir/pki.
	DataDir string
	// Logger receives the package's and certmagic's logs; nil discards.
	Logger *slog.Logger
	// ACME enables ACME mode; nil = local CA mode (no ACME at all).
	ACME *ACMEOptions
	// Allowed reports whether a host name may get a certificate on demand. Used by on-demand
	// TLS (ACME mode) and by the local CA. Nil allows nothing but the managed hosts (and,
	// in local CA mode, localhost).
	Allowed func(name string) bool
	// OnDemand enables on-demand issuance in ACME mode (ignored in local CA mode, which is
	// always on demand). Nil or disabled: only managed hosts get certificates.
	OnDemand *OnDemandOptions
	// Storage holds certificates, keys, ACME accounts, challenge tokens and locks.
	// Nil = certmagic.FileStorage under DataDir/certmagic.
	Storage certmagic.Storage
	// Registerer receives the metrics; nil = no metrics.
	Registerer prometheus.Registerer
	// Now is the clock used for expiry metrics and local leaves; nil = time.Now.
	Now func() time.Time
}

// ACMEOptions configure ACME mode.
type ACMEOptions struct {
	Email string
	// ChallengeWait is how long answering a challenge waits for one that
	// another node presented to reach this node's Storage (replicated
	// storage lags the presenting node by a commit interval, and the CA
	// validates at once). 0: look once, for storage that is not
	// replicated. The node sets a few seconds in a cluster. The wait is
	// bounded and only for challenge requests, which anyone can send.
	ChallengeWait time.Duration
	// CA is the directory URL; default Let's Encrypt production.
	CA string
	// CARootFile is an extra PEM root trusted (besides the system roots) when talking to
	// the CA, e.g. pebble's minica.
	CARootFile string
	// Challenges is a subset of "http-01", "tls-alpn-01"; default both.
	Challenges []string
	// AltHTTPPort and AltTLSALPNPort are accepted for compatibility and ignored: this
	// package never opens listeners; the challenges are answered by Meridian's listeners
	// (which must be reachable on 80/443 from the CA's point of view).
	AltHTTPPort, AltTLSALPNPort int
	// DNSProvider is accepted but no DNS provider is built in yet: wildcard hosts (which
	// need DNS-01) are not managed; ManageHosts returns an error naming them.
	DNSProvider string
	// Profile is an optional ACME profile name (draft-aaron-acme-profiles), e.g. pebble's
	// "shortlived".
	Profile string
	// RenewalWindowRatio is the fraction of a certificate's lifetime left when it is
	// renewed; 0 = certmagic's default (1/3).
	RenewalWindowRatio float64
	// RenewCheckInterval is how often the cache looks for certificates to renew;
	// 0 = certmagic's default (10 minutes).
	RenewCheckInterval time.Duration
}

// OnDemandOptions configure on-demand issuance in ACME mode.
type OnDemandOptions struct {
	Enabled bool
	// Ask is an optional URL asked about names Allowed does not accept:
	// GET Ask?domain=NAME answering 200 lets NAME get a certificate.
	// Names Allowed accepts are never asked about.
	Ask string
	// MaxNewPerHour bounds the certificates obtained on demand for names
	// that had none, in any hour (renewals are not counted), counted in
	// the storage; 0 means DefaultOnDemandPerHour.
	MaxNewPerHour int
}

// Manager owns the certificates of one node.
type Manager struct {
	log     *slog.Logger
	now     func() time.Time
	allowed func(string) bool

	ctx    context.Context // cancelled by Close; parent of background certificate work
	cancel context.CancelFunc

	mu      sync.RWMutex
	managed map[string]bool // host names given to ManageHosts (ACME: non-wildcard only)
	// obtaining is the context of the background work (orders and their
	// retries) ManageHosts started for a name, cancelled when the name
	// stops being managed.
	obtaining map[string]obtainWork
	seen      map[string]bool // names certmagic reported certificates for (metrics)

	// ACME mode
	acme       bool
	onDemand   bool
	tlsALPN    bool // the tls-alpn-01 challenge is enabled
	ask        string
	askClient  *http.Client
	cache      *certmagic.Cache
	managedCfg *certmagic.Config // OnDemand nil: ManageAsync really manages
	demandCfg  *certmagic.Config // OnDemand set: obtains at handshake time
	issuer     *acmeIssuer

	// local CA mode
	ca *localCA

	// the operator's own certificates (static.go); nil: none. pending is a
	// set about to be used (ExpectStatic), whose names ManageHosts leaves
	// alone too.
	static, pending atomic.Pointer[StaticSet]

	metrics *metrics

	closeOnce sync.Once
}

// obtainWork is the context of a name's background certificate work.
type obtainWork struct {
	ctx  context.Context
	stop context.CancelFunc
}

// New builds a Manager. In local CA mode it creates (or loads) the root under DataDir/pki.
func New(opts Options) (*Manager, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "certs")
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	allowed := opts.Allowed
	if allowed == nil {
		allowed = func(string) bool { return false }
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		log:       log,
		now:       now,
		allowed:   allowed,
		ctx:       ctx,
		cancel:    cancel,
		managed:   map[string]bool{},
		obtaining: map[string]obtainWork{},
		seen:      map[string]bool{},
	}
	var err error
	if opts.ACME == nil {
		err = m.initLocal(opts)
	} else {
		err = m.initACME(opts)
	}
	if err == nil && opts.Registerer != nil {
		m.metrics, err = newMetrics(m, opts.Registerer)
	}
	if err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func (m *Manager) initLocal(opts Options) error {
	if opts.DataDir == "" {
		return errors.New("certs: local CA mode needs Options.DataDir")
	}
	ca, err := loadOrCreateCA(filepath.Join(opts.DataDir, "pki"), m.now)
	if err != nil {
		return err
	}
	m.ca = ca
	m.log.Info("local CA ready", "root", filepath.Join(opts.DataDir, "pki", rootCertFile),
		"fingerprint_sha256", ca.fingerprint())
	return nil
}

func (m *Manager) initACME(opts Options) error {
	a := opts.ACME
	storage := opts.Storage
	if storage == nil {
		if opts.DataDir == "" {
			return errors.New("certs: ACME mode needs Options.DataDir or Options.Storage")
		}
		storage = &certmagic.FileStorage{Path: filepath.Join(opts.DataDir, "certmagic")}
	}
	challenges := a.Challenges
	if len(challenges) == 0 {
		challenges = []string{ChallengeHTTP01, ChallengeTLSALPN01}
	}
	for _, c := range challenges {
		if c != ChallengeHTTP01 && c != ChallengeTLSALPN01 {
			return fmt.Errorf("certs: acme.challenges: unknown challenge %q (want %q or %q)", c, ChallengeHTTP01, ChallengeTLSALPN01)
		}
	}
	m.tlsALPN = slices.Contains(challenges, ChallengeTLSALPN01)
	if a.AltHTTPPort != 0 || a.AltTLSALPNPort != 0 {
		m.log.Warn("acme alternate challenge ports are ignored: challenges are answered by the node's own listeners")
	}
	zl := zap.New(newSlogCore(m.log.Handler())).Named("certmagic")

	iss, err := newACMEIssuer(a, challenges, storage, m.log)
	if err == nil {
		iss.challengeWait = a.ChallengeWait
	}
	if err != nil {
		return err
	}
	m.acme = true
	m.issuer = iss
	if opts.OnDemand != nil && opts.OnDemand.Enabled {
		m.onDemand = true
		m.ask = opts.OnDemand.Ask
		m.askClient = &http.Client{Timeout: 10 * time.Second}
	}

	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(c certmagic.Certificate) (*certmagic.Config, error) {
			if m.isManagedCert(c) {
				return m.managedCfg, nil
			}
			return m.demandCfg, nil
		},
		RenewCheckInterval: a.RenewCheckInterval,
		Logger:             zl,
	})
	base := certmagic.Config{
		RenewalWindowRatio: a.RenewalWindowRatio,
		OnEvent:            m.onEvent,
		Storage:            storage,
		Issuers:            []certmagic.Issuer{iss},
		DisableARI:         true, // the issuer does not implement ARI; renewal is by lifetime ratio
		Logger:             zl,
	}
	managedTmpl := base
	m.managedCfg = certmagic.New(m.cache, managedTmpl)
	demandTmpl := base
	demandTmpl.OnDemand = &certmagic.OnDemandConfig{DecisionFunc: m.decide}
	perHour := DefaultOnDemandPerHour
	if opts.OnDemand != nil && opts.OnDemand.MaxNewPerHour > 0 {
		perHour = opts.OnDemand.MaxNewPerHour
	}
	demandTmpl.Issuers = []certmagic.Issuer{&limitedIssuer{acmeIssuer: iss, storage: storage, max: perHour, now: m.now}}
	m.demandCfg = certmagic.New(m.cache, demandTmpl)
	m.log.Info("acme certificate manager ready", "ca", iss.caURL, "challenges", challenges,
		"on_demand", m.onDemand, "profile", a.Profile)
	return nil
}

// ManageHosts sets the host names whose certificates are managed; the list is the full
// desired set, so calling it again with the same list is a no-op, new names start being
// managed and names no longer listed stop being renewed (their certificates stay in
// storage). In ACME mode certificates are obtained and renewed in the background
// (certmagic ManageAsync); wildcard names are not managed (they need DNS-01 and no DNS
// provider is built in) and make ManageHosts return an error naming them, after the other
// names were taken into account. In local CA mode the names are only remembered: they are
// allowed names for the local CA.
func (m *Manager) ManageHosts(ctx context.Context, hosts []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	want := map[string]bool{}
	var wildcards, invalid []string
	static, pending := m.static.Load(), m.pending.Load()
	for _, h := range hosts {
		n := normalizeName(h)
		switch {
		case n == "" || !certmagic.SubjectQualifiesForCert(n):
			invalid = append(invalid, h)
		case static.covers(n) || pending.covers(n):
			// A configured certificate serves it (static.go).
		case m.acme && strings.Contains(n, "*"):
			wildcards = append(wildcards, n)
		default:
			want[n] = true
		}
	}

	m.mu.Lock()
	var added, removed []string
	for n := range want {
		if !m.managed[n] {
			added = append(added, n)
		}
	}
	for n := range m.managed {
		if !want[n] {
			removed = append(removed, n)
		}
	}
	m.managed = want
	m.mu.Unlock()
	sort.Strings(added)
	sort.Strings(removed)

	if m.acme {
		if len(removed) > 0 {
			subjects := make([]certmagic.SubjectIssuer, 0, len(removed))
			m.mu.Lock()
			for _, n := range removed {
				subjects = append(subjects, certmagic.SubjectIssuer{Subject: n, IssuerKey: m.issuer.IssuerKey()})
				// An order still being tried (a CA that refuses, or
				// cannot be reached, is retried for days) stops too.
				if w, ok := m.obtaining[n]; ok {
					w.stop()
					delete(m.obtaining, n)
				}
			}
			m.mu.Unlock()
			m.cache.RemoveManaged(subjects)
			m.log.Info("hosts no longer managed", "hosts", removed)
		}
		if len(added) > 0 {
			// The background work must outlive the caller's context: it
			// lives until Close, or until its name stops being managed.
			for _, n := range added {
				ctx, stop := context.WithCancel(m.ctx)
				m.mu.Lock()
				if w, ok := m.obtaining[n]; ok {
					w.stop()
				}
				m.obtaining[n] = obtainWork{ctx, stop}
				m.mu.Unlock()
				if err := m.managedCfg.ManageAsync(ctx, []string{n}); err != nil {
					return fmt.Errorf("certs: managing %v: %w", n, err)
				}
			}
			m.log.Info("managing hosts", "hosts", added)
		}
	} else if len(added)+len(removed) > 0 {
		m.log.Info("local CA hosts", "hosts", sortedKeys(want))
	}

	var errs []error
	if len(invalid) > 0 {
		errs = append(errs, fmt.Errorf("certs: invalid host names %q", invalid))
	}
	if len(wildcards) > 0 && m.onDemand {
		// Each name under them gets its own certificate at its first
		// handshake: nothing is missing.
		if len(added)+len(removed) > 0 {
			m.log.Info("wildcard hosts served on demand: a certificate for each name under them at its first handshake", "hosts", wildcards)
		}
	} else if len(wildcards) > 0 {
		why := "no DNS-01 provider is built in yet (serve them with tls.on_demand)"
		if m.issuer.dnsProvider != "" {
			why = fmt.Sprintf("DNS provider %q is not built in (no DNS provider is available yet)", m.issuer.dnsProvider)
		}
		m.log.Error("wildcard hosts get no certificate: ACME needs the DNS-01 challenge for wildcards and "+why,
			"hosts", wildcards)
		errs = append(errs, fmt.Errorf("certs: wildcard hosts %q not managed: they need the ACME DNS-01 challenge and %s", wildcards, why))
	}
	return errors.Join(errs...)
}

// TLSConfig returns the configuration of the HTTPS (TCP) listener: certificates come from
// GetCertificate (managed certificates, on-demand ones gated by Allowed or Ask, local CA
// leaves, TLS-ALPN-01 challenge certificates); ALPN offers h2, http/1.1, http/1.0 and, with
// the tls-alpn-01 challenge on, acme-tls/1;
// TLS 1.2 is the minimum with AEAD ECDHE cipher suites only (TLS 1.3 suites are not
// configurable in Go and are all modern). Session tickets stay enabled: crypto/tls rotates
// its automatic ticket keys itself (a new key every 24 hours, each valid 7 days), so no
// key management is needed here; a cluster sets keys of its own on the listener
// (SetSessionTicketKeys, node/secrets.go).
// A connection that negotiated acme-tls/1 carries no HTTP and should be closed by the
// listener after the handshake.
func (m *Manager) TLSConfig() *tls.Config {
	protos := []string{"h2", "http/1.1", "http/1.0"} // http/1.0: curl --http1.0 offers it alone
	if m.acme && m.tlsALPN {
		// Only with the challenge on: a client offering acme-tls/1
		// alone otherwise gets no_application_protocol (RFC 7301 3.2).
		protos = append(protos, acmez.ACMETLS1Protocol)
	}
	return &tls.Config{
		GetCertificate: m.GetCertificate,
		NextProtos:     protos,
		MinVersion:     tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
}

// ErrNotAllowed is returned (wrapped) by GetCertificate for a server name that is neither
// managed nor allowed.
var ErrNotAllowed = errors.New("server name not allowed")

// GetCertificate is the tls.Config.GetCertificate of TLSConfig.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := normalizeName(hello.ServerName)
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmez.ACMETLS1Protocol {
		// A TLS-ALPN-01 validation offers acme-tls/1 alone (RFC 8737
		// 3); a client that offers it among others is served as any.
		if !m.acme || !m.tlsALPN {
			return nil, errors.New("certs: acme-tls/1 requested but the tls-alpn-01 challenge is not enabled")
		}
		return m.issuer.tlsALPNCert(hello.Context(), name)
	}
	if name == "" && !m.acme {
		// A client that dialled an address: a certificate of yours for
		// it, else the local CA's (which signs for 127.0.0.1 and ::1);
		// one of yours for some name would not do (an outside check saw
		// https://127.0.0.1 fail once a certificate was configured).
		st := m.static.Load()
		if c := usable(st.dialled(hello), hello); c != nil {
			return c, nil
		}
		leaf, err := m.ca.leafFor(name, m.localAllowed)
		if err == nil && (leaf.Leaf == nil || hello.SupportsCertificate(leaf) == nil) {
			return leaf, nil
		}
		if c := st.lookup(name, hello); c != nil {
			return c, nil // one the client can use, if any
		}
		return leaf, err
	}
	if c := m.static.Load().lookup(name, hello); c != nil {
		return c, nil
	}
	if !m.acme {
		return m.ca.leafFor(name, m.localAllowed)
	}
	if name == "" {
		return nil, fmt.Errorf("certs: no server name (SNI) in client hello: %w", ErrNotAllowed)
	}
	if m.isManaged(name) {
		return m.managedCfg.GetCertificate(hello)
	}
	if m.onDemand && (m.allowed(name) || m.ask != "") {
		if err := checkHostName(name); err != nil {
			return nil, fmt.Errorf("certs: %w: %w", err, ErrNotAllowed)
		}
		return m.demandCfg.GetCertificate(hello)
	}
	return nil, fmt.Errorf("certs: %q: %w", name, ErrNotAllowed)
}

// HTTPChallengeHandler answers ACME HTTP-01 challenges (/.well-known/acme-challenge/) in
// ACME mode and hands every other request (and every request in local CA mode) to next.
func (m *Manager) HTTPChallengeHandler(next http.Handler) http.Handler {
	if !m.acme {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, acmeChallengePrefix) && m.issuer.serveHTTPChallenge(w, r) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// RootPEM returns the local CA root certificate (PEM), nil in ACME mode.
func (m *Manager) RootPEM() []byte {
	if m.ca == nil {
		return nil
	}
	return slices.Clone(m.ca.rootPEM)
}

// Close stops certmagic's maintenance goroutines and cancels background certificate work.
func (m *Manager) Close() {
	m.closeOnce.Do(func() {
		m.cancel()
		if m.cache != nil {
			m.cache.Stop()
		}
		if m.issuer != nil {
			m.issuer.httpClient.CloseIdleConnections()
		}
		if m.askClient != nil {
			m.askClient.CloseIdleConnections()
		}
		if m.metrics != nil {
			m.metrics.unregister()
		}
	})
}

// decide is certmagic's on-demand DecisionFunc: a name Allowed accepts
// gets a certificate; any other name only if the Ask endpoint answers 200
// for it. Without Ask, other names are refused. Nothing reaches the CA
// before this says yes.
func (m *Manager) decide(ctx context.Context, name string) error {
	if !m.onDemand {
		return fmt.Errorf("certs: %q: %w", name, ErrNotAllowed)
	}
	if err := checkHostName(name); err != nil {
		return fmt.Errorf("certs: %w: %w", err, ErrNotAllowed)
	}
	if m.allowed(name) {
		return nil
	}
	if m.ask == "" {
		return fmt.Errorf("certs: %q: %w", name, ErrNotAllowed)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.ask, nil)
	if err != nil {
		return fmt.Errorf("certs: on_demand.ask: %w", err)
	}
	q := req.URL.Query()
	q.Set("domain", name)
	req.URL.RawQuery = q.Encode()
	resp, err := m.askClient.Do(req)
	if err != nil {
		return fmt.Errorf("certs: on_demand.ask for %q: %w", name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("certs: on_demand.ask refused %q (status %d): %w", name, resp.StatusCode, ErrNotAllowed)
	}
	return nil
}

func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	switch event {
	case "cert_obtained":
		id, _ := data["identifier"].(string)
		renewal, _ := data["renewal"].(bool)
		m.log.Info("certificate obtained", "name", id, "renewal", renewal)
		m.noteSeen(id)
		if m.metrics != nil {
			m.metrics.obtained.Inc()
		}
	case "cert_failed":
		id, _ := data["identifier"].(string)
		renewal, _ := data["renewal"].(bool)
		m.log.Error("certificate could not be obtained", "name", id, "renewal", renewal, "error", data["error"])
		if m.metrics != nil {
			m.metrics.failures.Inc()
		}
	case "cached_managed_cert":
		if sans, ok := data["sans"].([]string); ok {
			for _, s := range sans {
				m.noteSeen(s)
			}
		}
	}
	return nil
}

func (m *Manager) noteSeen(name string) {
	name = normalizeName(name)
	if name == "" {
		return
	}
	m.mu.Lock()
	m.seen[name] = true
	m.mu.Unlock()
}

func (m *Manager) isManaged(name string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.managed[name]
}

func (m *Manager) isManagedCert(c certmagic.Certificate) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, n := range c.Names {
		if m.managed[normalizeName(n)] {
			return true
		}
	}
	return false
}

// localAllowed: the local CA signs for managed (remembered) names, names matching a
// remembered wildcard, and names Allowed accepts.
func (m *Manager) localAllowed(name string) bool {
	m.mu.RLock()
	ok := m.managed[name]
	if !ok {
		for w := range m.managed {
			if strings.HasPrefix(w, "*.") && certmagic.MatchWildcard(name, w) {
				ok = true
				break
			}
		}
	}
	m.mu.RUnlock()
	return ok || m.allowed(name)
}

// certExpiries returns, per name with a certificate in memory, its NotAfter.
func (m *Manager) certExpiries() map[string]time.Time {
	out := map[string]time.Time{}
	defer m.static.Load().addExpiries(out)
	if m.ca != nil {
		maps.Copy(out, m.ca.expiries())
		return out
	}
	m.mu.RLock()
	names := make([]string, 0, len(m.managed)+len(m.seen))
	for n := range m.managed {
		names = append(names, n)
	}
	for n := range m.seen {
		if !m.managed[n] {
			names = append(names, n)
		}
	}
	m.mu.RUnlock()
	for _, n := range names {
		for _, c := range m.cache.AllMatchingCertificates(n) {
			if c.Leaf == nil {
				continue
			}
			if t, ok := out[n]; !ok || c.Leaf.NotAfter.After(t) {
				out[n] = c.Leaf.NotAfter
			}
		}
	}
	return out
}

// normalizeName lower-cases a host name and strips a port, brackets and a trailing dot.
// checkHostName refuses a name no certificate authority would sign and no
// one should be asked about (on_demand.ask): see ValidHostName; nor an IP
// address.
func checkHostName(name string) error {
	if _, err := netip.ParseAddr(name); err == nil {
		// Not in SNI (RFC 6066 3: no literal addresses), where some
		// clients put one all the same: not a name to ask about or
		// order for on demand.
		return fmt.Errorf("%q is an IP address, not a host name", name)
	}
	if !ValidHostName(name) {
		return fmt.Errorf("%q is not a valid host name", name)
	}
	return nil
}

// ValidHostName reports whether name (lower case) is a DNS host name:
// letters, digits and hyphens in dot-separated labels of 1 to 63 bytes
// that neither begin nor end with a hyphen, 253 bytes in all at most (RFC
// 1035 2.3.4, RFC 1123 2.1). An empty label, an underscore or a star fail.
func ValidHostName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func normalizeName(s string) string {
	s = strings.TrimSpace(strings.ToLower(s))
	if h, _, err := net.SplitHostPort(s); err == nil {
		s = h
	}
	s = strings.TrimPrefix(strings.TrimSuffix(s, "]"), "[")
	return strings.TrimSuffix(s, ".")
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
