// Package pebbletest runs pebble, Let's Encrypt's test ACME server, for tests: a real ACME
// CA that validates HTTP-01 and TLS-ALPN-01 challenges against the caller's listeners on
// 127.0.0.1, with a DNS responder that answers 127.0.0.1 for every name.
//
// It is test support: its functions take a testing.TB, fail the test on errors and clean
// up (pebble's process, the DNS responder, relays) when the test ends.
//
// The pebble binary and its test directory (the certificates of pebble's own HTTPS
// listener) are found through the environment (PEBBLE_BIN, PEBBLE_TEST_DIR, which
// `make test` sets), else at <repo>/bin/pebble and <repo>/bin/pebble-test (what
// `make bin/pebble` installs). Without them the test is skipped with a message saying so.
package pebbletest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"github.com/meridian-gw/meridian/internal/testutil"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultValidity is the validity of certificates of pebble's "default" profile.
const DefaultValidity = 90 * 24 * time.Hour

// Options configure a pebble.
type Options struct {
	// HTTPPort is the port pebble connects to (on 127.0.0.1) to validate HTTP-01
	// challenges; TLSPort the one for TLS-ALPN-01. Both are required.
	HTTPPort, TLSPort int
	// Profiles are ACME profiles besides "default" (DefaultValidity), by name, with the
	// validity of their certificates (whole seconds). A "default" entry replaces the
	// default profile's validity.
	Profiles map[string]time.Duration
	// RetryAfter is the Retry-After pebble sends for pending authorizations and orders;
	// 0 = one second.
	RetryAfter time.Duration
}

// Pebble is a running pebble.
type Pebble struct {
	// DirectoryURL is the ACME directory (https, served with a certificate of MinicaFile).
	DirectoryURL string
	// ACMEAddr is the host:port of the ACME API (the host part of DirectoryURL).
	ACMEAddr string
	// ManagementAddr is the host:port of pebble's management API (/roots/0 and the like).
	ManagementAddr string
	// MinicaFile is the PEM root of pebble's own HTTPS certificate: what an ACME client
	// must trust to talk to pebble (acme.ca_root). It does not sign issued certificates.
	MinicaFile string
	// Roots holds pebble's issuing root (fetched from /roots/0): a client trusting only
	// Roots verifies certificates pebble issued.
	Roots *x509.CertPool
	// Root is pebble's issuing root certificate, RootPEM its PEM.
	Root    *x509.Certificate
	RootPEM []byte
	// DNSAddr is the DNS responder pebble resolves names with (A 127.0.0.1 for all).
	DNSAddr string

	log *SyncBuffer
}

// Log returns what pebble printed so far.
func (p *Pebble) Log() string { return p.log.String() }

// DirectoryURLVia returns DirectoryURL with the ACME API's address replaced by addr (for
// example a Relay's), to put something between an ACME client and pebble.
func (p *Pebble) DirectoryURLVia(addr string) string {
	return strings.Replace(p.DirectoryURL, p.ACMEAddr, addr, 1)
}

// ChainsToRoot reports whether chain (leaf first, as a TLS server sends it or as
// tls.ConnectionState.VerifiedChains holds it) ends at pebble's issuing root or at a
// certificate Root signed.
func (p *Pebble) ChainsToRoot(chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return fmt.Errorf("empty chain")
	}
	last := chain[len(chain)-1]
	if bytes.Equal(last.Raw, p.Root.Raw) {
		return nil
	}
	if err := last.CheckSignatureFrom(p.Root); err != nil {
		return fmt.Errorf("chain ends at %q, not signed by pebble's root %q: %w", last.Subject, p.Root.Subject, err)
	}
	return nil
}

// Paths returns the pebble binary and pebble's test directory (see the package comment),
// skipping the test when they are not installed. An explicitly set PEBBLE_BIN or
// PEBBLE_TEST_DIR that does not exist fails the test instead: that is a broken setup, not
// a missing optional tool.
func Paths(t testing.TB) (bin, testDir string) {
	t.Helper()
	bin, binFromEnv := os.Getenv("PEBBLE_BIN"), true
	testDir, dirFromEnv := os.Getenv("PEBBLE_TEST_DIR"), true
	if bin == "" {
		binFromEnv = false
		root, err := repoRoot()
		if err != nil {
			t.Skipf("pebble: PEBBLE_BIN not set and the repository root not found (%v); run `make test` or set PEBBLE_BIN", err)
		}
		bin = filepath.Join(root, "bin", "pebble")
	}
	if testDir == "" {
		dirFromEnv = false
		testDir = filepath.Join(filepath.Dir(bin), "pebble-test")
	}
	missing := func(fromEnv bool, format string, args ...any) {
		t.Helper()
		if fromEnv {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}
	if _, err := os.Stat(bin); err != nil {
		missing(binFromEnv, "pebble binary not found at %s (%v): run `make bin/pebble` (or `make test`, which installs it), or set PEBBLE_BIN", bin, err)
	}
	if _, err := os.Stat(filepath.Join(testDir, "certs", "pebble.minica.pem")); err != nil {
		missing(dirFromEnv, "pebble test directory not found at %s (%v): run `make bin/pebble` (or `make test`), or set PEBBLE_TEST_DIR", testDir, err)
	}
	var err error
	if bin, err = filepath.Abs(bin); err != nil {
		t.Fatal(err)
	}
	if testDir, err = filepath.Abs(testDir); err != nil {
		t.Fatal(err)
	}
	return bin, testDir
}

// repoRoot finds the module root: the first directory with a go.mod going up from the
// working directory (a package's directory under go test), else from this source file.
func repoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/meridian-gw/meridian\n")) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("no go.mod of github.com/meridian-gw/meridian above %q", starts)
}

// FreePort returns a port of 127.0.0.1 that was free on both TCP and UDP a moment ago (so
// it can carry HTTPS and HTTP/3), for a listener that must be told its port in advance
// (pebble validates challenges on fixed ports).
//
// The port is drawn from 20000-32767, below Linux's ephemeral range (32768-60999): a port
// from the ephemeral range, free a moment ago, can be taken in the meantime by any
// outgoing connection of any test running in parallel, and was (bind: address already in
// use). Below the range, only another explicit bind could take it.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 200 {
		port := 20000 + rand.IntN(32768-20000)
		// A port handed out is free only until its user binds it: never
		// hand it out twice in one process (the node's HTTPS port was
		// once given to pebble too, before the node had bound it).
		handedMu.Lock()
		taken := handedOut[port]
		handedOut[port] = true
		handedMu.Unlock()
		if taken {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port
	}
	t.Fatal("no port free on both TCP and UDP")
	return 0
}

var (
	handedMu  sync.Mutex
	handedOut = map[int]bool{} // ports FreePort has returned or tried
)

// Start runs pebble validating HTTP-01 on 127.0.0.1:o.HTTPPort and TLS-ALPN-01 on
// 127.0.0.1:o.TLSPort (every name resolves to 127.0.0.1 through the DNS responder it also
// starts), waits until its directory answers and fetches its issuing root. Pebble is
// killed, and its log printed if the test failed, when the test ends.
func Start(t testing.TB, o Options) *Pebble {
	t.Helper()
	if o.HTTPPort <= 0 || o.TLSPort <= 0 {
		t.Fatalf("pebbletest.Start: HTTPPort (%d) and TLSPort (%d) are required", o.HTTPPort, o.TLSPort)
	}
	bin, testDir := Paths(t)
	dnsAddr := StartDNS(t)
	dir := t.TempDir()
	acmePort, mgmtPort := FreePort(t), FreePort(t)
	for acmePort == mgmtPort {
		mgmtPort = FreePort(t)
	}
	profiles := map[string]any{
		"default": map[string]any{"description": "default", "validityPeriod": int(DefaultValidity / time.Second)},
	}
	for name, v := range o.Profiles {
		profiles[name] = map[string]any{"description": name, "validityPeriod": int(v / time.Second)}
	}
	retry := int(o.RetryAfter / time.Second)
	if retry <= 0 {
		retry = 1
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", acmePort),
		"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":                    filepath.Join(testDir, "certs", "localhost", "cert.pem"),
		"privateKey":                     filepath.Join(testDir, "certs", "localhost", "key.pem"),
		"httpPort":                       o.HTTPPort,
		"tlsPort":                        o.TLSPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": retry, "order": retry},
		"keyAlgorithm":                   "ecdsa",
		"profiles":                       profiles,
	}}
	raw, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "pebble-config.json")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	p := &Pebble{
		ACMEAddr:       fmt.Sprintf("127.0.0.1:%d", acmePort),
		ManagementAddr: fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		DirectoryURL:   fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort),
		MinicaFile:     filepath.Join(testDir, "certs", "pebble.minica.pem"),
		DNSAddr:        dnsAddr,
		log:            &SyncBuffer{},
	}
	cmd := exec.Command(bin, "-config", cfgPath, "-dnsserver", dnsAddr)
	cmd.Dir = dir
	// No random sleeps before validations; no random nonce rejections (badNonce retries
	// would only slow the tests down).
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting pebble %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("pebble log:\n%s", Tail(p.log.String(), 12000))
		}
	})

	minica, err := os.ReadFile(p.MinicaFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(minica) {
		t.Fatalf("%s holds no PEM certificate", p.MinicaFile)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	defer tr.CloseIdleConnections()
	WaitFor(t, 30*time.Second, "pebble directory", func() error {
		select {
		case <-exited:
			t.Fatalf("pebble exited early:\n%s", p.log.String())
		default:
		}
		resp, err := hc.Get(p.DirectoryURL)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	resp, err := hc.Get("https://" + p.ManagementAddr + "/roots/0")
	if err != nil {
		t.Fatalf("pebble root: %v", err)
	}
	p.RootPEM, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble root: status %d, %v", resp.StatusCode, err)
	}
	block, _ := pem.Decode(p.RootPEM)
	if block == nil {
		t.Fatalf("pebble root: no PEM in %q", p.RootPEM)
	}
	if p.Root, err = x509.ParseCertificate(block.Bytes); err != nil {
		t.Fatalf("pebble root: %v", err)
	}
	p.Roots = x509.NewCertPool()
	p.Roots.AddCert(p.Root)
	return p
}

// WaitFor polls cond every 200ms until it returns nil, failing the test with cond's last
// error when timeout passes first.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v: last error: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type SyncBuffer = testutil.SyncBuffer

// Tail returns the last n bytes of s, marked as cut if it was longer.
func Tail(s string, n int) string {
	if len(s) > n {
		return "...\n" + s[len(s)-n:]
	}
	return s
}
