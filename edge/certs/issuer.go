package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/meridian-gw/meridian/internal/smallfile"
)

const acmeChallengePrefix = "/.well-known/acme-challenge/"

// storage key prefix of everything this issuer stores besides certmagic's own keys.
const storagePrefix = "meridian/acme"

// acmeIssuer is a certmagic.Issuer that speaks ACME through acmez with its own challenge
// solvers: they only record the challenge (in memory and in the shared storage, so any node
// of a cluster can answer it) and never open a listener. HTTPChallengeHandler and the
// GetCertificate of TLSConfig answer the challenges from that record.
type acmeIssuer struct {
	caURL       string
	email       string
	profile     string
	challenges  []string
	dnsProvider string
	storage     certmagic.Storage
	// challengeWait: how long a lookup waits for a challenge another node
	// presented to replicate here (0: look once).
	challengeWait time.Duration
	log           *slog.Logger
	httpClient    *http.Client
	client        *acme.Client // shared: caches the directory and nonces, safe for concurrent use

	acctMu  sync.Mutex
	account *acme.Account // registered account, loaded or created once

	chalMu sync.Mutex
	chals  map[chalKey]*activeChallenge // challenges this process presented
}

type chalKey struct{ typ, identifier string }

type activeChallenge struct {
	chal acme.Challenge
	cert *tls.Certificate // tls-alpn-01 only, built once
}

func newACMEIssuer(a *ACMEOptions, challenges []string, storage certmagic.Storage, log *slog.Logger) (*acmeIssuer, error) {
	caURL := a.CA
	if caURL == "" {
		caURL = LetsEncryptProduction
	}
	u, err := url.Parse(caURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("certs: acme.ca %q: want an https directory URL", caURL)
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if a.CARootFile != "" {
		pemBytes, err := smallfile.Read(a.CARootFile, smallfile.MaxPEM)
		if err != nil {
			return nil, fmt.Errorf("certs: acme.ca_root: %w", err)
		}
		if !roots.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("certs: acme.ca_root %s: no PEM certificate found", a.CARootFile)
		}
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	hc := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	iss := &acmeIssuer{
		caURL:       caURL,
		email:       strings.TrimSpace(a.Email),
		profile:     a.Profile,
		challenges:  slices.Clone(challenges),
		dnsProvider: a.DNSProvider,
		storage:     storage,
		log:         log.With("ca", caURL),
		httpClient:  hc,
		chals:       map[chalKey]*activeChallenge{},
	}
	iss.client = &acme.Client{
		Directory:  caURL,
		HTTPClient: hc,
		UserAgent:  "Meridian",
		Logger:     log.With("logger", "acme_client"), // log already names component=certs
	}
	return iss, nil
}

// IssuerKey implements certmagic.Issuer: certificates are stored under
// certificates/<IssuerKey>/<name>/ (certmagic's layout), one directory per CA.
func (iss *acmeIssuer) IssuerKey() string {
	u, err := url.Parse(iss.caURL)
	if err != nil {
		return iss.caURL
	}
	key := u.Host
	if p := strings.Trim(strings.ReplaceAll(u.Path, "/", "-"), "-"); p != "" {
		key += "-" + p
	}
	return key
}

// PreCheck implements certmagic.PreChecker: wildcards need DNS-01, which is not available.
func (iss *acmeIssuer) PreCheck(_ context.Context, names []string, _ bool) error {
	for _, n := range names {
		if strings.Contains(n, "*") {
			return fmt.Errorf("%q: wildcard certificates need the ACME DNS-01 challenge and no DNS provider is available", n)
		}
	}
	return nil
}

// Issue implements certmagic.Issuer.
func (iss *acmeIssuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	for attempt := 0; ; attempt++ {
		acct, err := iss.getAccount(ctx)
		if err != nil {
			return nil, err
		}
		params, err := acmez.OrderParametersFromCSR(acct, csr)
		if err != nil {
			return nil, fmt.Errorf("order parameters: %w", err)
		}
		params.Profile = iss.profile
		client := &acmez.Client{Client: iss.client, ChallengeSolvers: map[string]acmez.Solver{}}
		for _, c := range iss.challenges {
			client.ChallengeSolvers[c] = &recordingSolver{iss: iss}
		}
		chains, err := client.ObtainCertificate(ctx, params)
		if err != nil {
			var prob acme.Problem
			if attempt == 0 && errors.As(err, &prob) && prob.Type == acme.ProblemTypeAccountDoesNotExist {
				iss.log.Warn("ACME account no longer exists on the CA; registering a new one", "account", acct.Location)
				if err := iss.forgetAccount(ctx); err != nil {
					return nil, err
				}
				continue
			}
			return nil, fmt.Errorf("%v: %w", csr.DNSNames, err)
		}
		if len(chains) == 0 {
			return nil, errors.New("CA returned no certificate chain")
		}
		return &certmagic.IssuedCertificate{Certificate: chains[0].ChainPEM, Metadata: chains[0]}, nil
	}
}

// --- account -------------------------------------------------------------------------

type storedAccount struct {
	Location string   `json:"location"`
	Contact  []string `json:"contact,omitempty"`
	KeyPEM   string   `json:"key_pem"`
}

func (iss *acmeIssuer) accountKey() string {
	who := iss.email
	if who == "" {
		who = "default"
	}
	return path.Join(storagePrefix, certmagic.StorageKeys.Safe(iss.IssuerKey()), "accounts", certmagic.StorageKeys.Safe(who)+".json")
}

func (iss *acmeIssuer) getAccount(ctx context.Context) (acme.Account, error) {
	iss.acctMu.Lock()
	defer iss.acctMu.Unlock()
	if iss.account != nil {
		return *iss.account, nil
	}
	key := iss.accountKey()
	if acct, err := iss.loadAccount(ctx, key); err == nil {
		iss.account = &acct
		return acct, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return acme.Account{}, err
	}
	// Register once per cluster: lock, look again, register.
	lock := key + ".lock"
	if err := iss.storage.Lock(ctx, lock); err != nil {
		return acme.Account{}, fmt.Errorf("locking ACME account registration: %w", err)
	}
	defer func() {
		if err := iss.storage.Unlock(context.WithoutCancel(ctx), lock); err != nil {
			iss.log.Error("unlocking ACME account registration", "error", err)
		}
	}()
	if acct, err := iss.loadAccount(ctx, key); err == nil {
		iss.account = &acct
		return acct, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return acme.Account{}, err
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return acme.Account{}, err
	}
	acct := acme.Account{TermsOfServiceAgreed: true, PrivateKey: priv}
	if iss.email != "" {
		acct.Contact = []string{"mailto:" + iss.email}
	}
	acct, err = iss.client.NewAccount(ctx, acct)
	if err != nil {
		return acme.Account{}, fmt.Errorf("registering ACME account: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return acme.Account{}, err
	}
	raw, err := json.Marshal(storedAccount{
		Location: acct.Location,
		Contact:  acct.Contact,
		KeyPEM:   string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
	})
	if err != nil {
		return acme.Account{}, err
	}
	if err := iss.storage.Store(ctx, key, raw); err != nil {
		return acme.Account{}, fmt.Errorf("saving ACME account: %w", err)
	}
	iss.log.Info("ACME account registered", "account", acct.Location)
	iss.account = &acct
	return acct, nil
}

func (iss *acmeIssuer) loadAccount(ctx context.Context, key string) (acme.Account, error) {
	raw, err := iss.storage.Load(ctx, key)
	if err != nil {
		return acme.Account{}, err
	}
	var sa storedAccount
	if err := json.Unmarshal(raw, &sa); err != nil {
		return acme.Account{}, fmt.Errorf("decoding ACME account %s: %w", key, err)
	}
	block, _ := pem.Decode([]byte(sa.KeyPEM))
	if block == nil {
		return acme.Account{}, fmt.Errorf("ACME account %s: no key", key)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return acme.Account{}, fmt.Errorf("ACME account %s: %w", key, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return acme.Account{}, fmt.Errorf("ACME account %s: key is not a signer", key)
	}
	return acme.Account{Status: acme.StatusValid, Location: sa.Location, Contact: sa.Contact,
		TermsOfServiceAgreed: true, PrivateKey: signer}, nil
}

func (iss *acmeIssuer) forgetAccount(ctx context.Context) error {
	iss.acctMu.Lock()
	defer iss.acctMu.Unlock()
	iss.account = nil
	if err := iss.storage.Delete(ctx, iss.accountKey()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting stale ACME account: %w", err)
	}
	return nil
}

// --- challenges ----------------------------------------------------------------------

// recordingSolver presents a challenge by recording it; the node's listeners answer it.
type recordingSolver struct{ iss *acmeIssuer }

func (s *recordingSolver) Present(ctx context.Context, chal acme.Challenge) error {
	ac := &activeChallenge{chal: chal}
	if chal.Type == acme.ChallengeTypeTLSALPN01 {
		cert, err := acmez.TLSALPN01ChallengeCert(chal)
		if err != nil {
			return err
		}
		ac.cert = cert
	}
	k := chalKey{chal.Type, normalizeName(chal.Identifier.Value)}
	s.iss.chalMu.Lock()
	s.iss.chals[k] = ac
	s.iss.chalMu.Unlock()
	raw, err := json.Marshal(chal)
	if err != nil {
		return err
	}
	// Shared storage lets another node of the cluster (the one the CA happens to reach)
	// answer the challenge.
	if err := s.iss.storage.Store(ctx, challengeStorageKey(k), raw); err != nil {
		return fmt.Errorf("recording %s challenge for %s: %w", chal.Type, chal.Identifier.Value, err)
	}
	s.iss.log.Debug("challenge presented", "type", chal.Type, "identifier", chal.Identifier.Value)
	return nil
}

func (s *recordingSolver) CleanUp(ctx context.Context, chal acme.Challenge) error {
	k := chalKey{chal.Type, normalizeName(chal.Identifier.Value)}
	s.iss.chalMu.Lock()
	delete(s.iss.chals, k)
	s.iss.chalMu.Unlock()
	err := s.iss.storage.Delete(context.WithoutCancel(ctx), challengeStorageKey(k))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func challengeStorageKey(k chalKey) string {
	return path.Join(storagePrefix, "challenges", certmagic.StorageKeys.Safe(k.identifier)+"."+k.typ+".json")
}

// lookupChallenge finds a challenge presented by this process or, failing that, by
// another node (through storage), waiting up to ACMEOptions.ChallengeWait for it to
// replicate. token, when not empty, is the HTTP-01 token the CA asks for: a stored
// challenge with another token (an older one) does not match.
func (iss *acmeIssuer) lookupChallenge(ctx context.Context, typ, identifier, token string) (*activeChallenge, bool) {
	k := chalKey{typ, identifier}
	if !slices.Contains(iss.challenges, typ) || identifier == "" {
		return nil, false
	}
	deadline := time.Now().Add(iss.challengeWait)
	for {
		iss.chalMu.Lock()
		ac, ok := iss.chals[k]
		iss.chalMu.Unlock()
		if ok && (token == "" || ac.chal.Token == token) {
			return ac, true
		}
		if ac, ok := iss.loadChallenge(ctx, k); ok && (token == "" || ac.chal.Token == token) {
			return ac, true
		}
		if time.Now().After(deadline) {
			return nil, false
		}
		t := time.NewTimer(25 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, false
		}
	}
}

// loadChallenge reads a challenge from storage.
func (iss *acmeIssuer) loadChallenge(ctx context.Context, k chalKey) (*activeChallenge, bool) {
	raw, err := iss.storage.Load(ctx, challengeStorageKey(k))
	if err != nil {
		return nil, false
	}
	var chal acme.Challenge
	if err := json.Unmarshal(raw, &chal); err != nil {
		iss.log.Error("decoding stored challenge", "identifier", k.identifier, "error", err)
		return nil, false
	}
	ac := &activeChallenge{chal: chal}
	if k.typ == acme.ChallengeTypeTLSALPN01 {
		cert, err := acmez.TLSALPN01ChallengeCert(chal)
		if err != nil {
			return nil, false
		}
		ac.cert = cert
	}
	return ac, true
}

// tlsALPNCert answers a TLS-ALPN-01 validation handshake.
func (iss *acmeIssuer) tlsALPNCert(ctx context.Context, name string) (*tls.Certificate, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ac, ok := iss.lookupChallenge(ctx, acme.ChallengeTypeTLSALPN01, name, "")
	if !ok || ac.cert == nil {
		return nil, fmt.Errorf("certs: no active tls-alpn-01 challenge for %q", name)
	}
	iss.log.Info("answering tls-alpn-01 challenge", "identifier", name)
	return ac.cert, nil
}

// serveHTTPChallenge answers an HTTP-01 validation request; false if there is no matching
// challenge (the request then goes to the next handler).
func (iss *acmeIssuer) serveHTTPChallenge(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	host := normalizeName(r.Host)
	token := strings.TrimPrefix(r.URL.Path, acmeChallengePrefix)
	if token == "" {
		return false
	}
	ac, ok := iss.lookupChallenge(r.Context(), acme.ChallengeTypeHTTP01, host, token)
	if !ok {
		return false
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(ac.chal.KeyAuthorization))
	iss.log.Info("answered http-01 challenge", "identifier", host, "remote", r.RemoteAddr)
	return true
}
