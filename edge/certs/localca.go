package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/meridian-gw/meridian/internal/atomicfile"
	"github.com/meridian-gw/meridian/internal/smallfile"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

const (
	rootCertFile  = "root.crt"
	rootKeyFile   = "root.key"
	rootValidity  = 10 * 365 * 24 * time.Hour
	leafValidity  = 7 * 24 * time.Hour
	localhostName = "localhost"
)

// LoadRootPEM returns the local CA root certificate (PEM) kept under dataDir/pki, without
// starting anything; fs.ErrNotExist (wrapped) if no root was created yet.
func LoadRootPEM(dataDir string) ([]byte, error) {
	raw, err := smallfile.Read(filepath.Join(dataDir, "pki", rootCertFile), smallfile.MaxPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: local CA root: %w", err)
	}
	if _, err := parseCertPEM(raw); err != nil {
		return nil, fmt.Errorf("certs: local CA root %s: %w", filepath.Join(dataDir, "pki", rootCertFile), err)
	}
	return raw, nil
}

// localCA signs leaf certificates with a root kept on disk; leaves live in memory only.
type localCA struct {
	root    *x509.Certificate
	key     *ecdsa.PrivateKey
	rootPEM []byte
	now     func() time.Time

	mu     sync.Mutex
	leaves map[string]*tls.Certificate // by name; "localhost" also covers 127.0.0.1 and ::1
}

func loadOrCreateCA(dir string, now func() time.Time) (*localCA, error) {
	certPath, keyPath := filepath.Join(dir, rootCertFile), filepath.Join(dir, rootKeyFile)
	certPEM, certErr := smallfile.Read(certPath, smallfile.MaxPEM)
	keyPEM, keyErr := smallfile.Read(keyPath, smallfile.MaxPEM)
	switch {
	case certErr == nil && keyErr == nil:
		ca, err := parseCA(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("certs: local CA in %s: %w", dir, err)
		}
		ca.now = now
		return ca, nil
	case errors.Is(certErr, fs.ErrNotExist):
		// The certificate is written last, so its absence means no complete root:
		// (re)create both.
	case certErr != nil:
		return nil, fmt.Errorf("certs: local CA: %w", certErr)
	default:
		return nil, fmt.Errorf("certs: local CA root %s exists but its key does not load: %w", certPath, keyErr)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	start := now().Add(-time.Hour).Truncate(time.Minute)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Meridian Local CA " + serial.Text(16)[:8], Organization: []string{"Meridian"}},
		NotBefore:             start,
		NotAfter:              start.Add(rootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: local CA: %w", err)
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("certs: local CA: %w", err)
	}
	if err := atomicfile.Write(certPath, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("certs: local CA: %w", err)
	}
	ca, err := parseCA(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	ca.now = now
	return ca, nil
}

func parseCA(certPEM, keyPEM []byte) (*localCA, error) {
	root, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("root key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("root key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("root key is not ECDSA")
	}
	if !key.PublicKey.Equal(root.PublicKey) {
		return nil, errors.New("root key does not match root certificate")
	}
	if !root.IsCA {
		return nil, errors.New("root certificate is not a CA")
	}
	return &localCA{root: root, key: key, rootPEM: certPEM, leaves: map[string]*tls.Certificate{}}, nil
}

func parseCertPEM(raw []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func (ca *localCA) fingerprint() string {
	sum := sha256.Sum256(ca.root.Raw)
	return hex.EncodeToString(sum[:])
}

func isLocalhostName(name string) bool {
	return name == "" || name == localhostName || name == "127.0.0.1" || name == "::1"
}

// leafFor returns the leaf for a server name: localhost (and an empty SNI, which is what
// clients send when dialling an IP) always; other names only if allowed says so.
func (ca *localCA) leafFor(name string, allowed func(string) bool) (*tls.Certificate, error) {
	key := name
	if isLocalhostName(name) {
		key = localhostName
	} else if !allowed(name) {
		return nil, fmt.Errorf("certs: %q: %w", name, ErrNotAllowed)
	}
	now := ca.now()
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c, ok := ca.leaves[key]; ok {
		half := c.Leaf.NotBefore.Add(c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) / 2)
		if now.Before(half) {
			return c, nil
		}
	}
	c, err := ca.issue(key, now)
	if err != nil {
		return nil, err
	}
	if _, ok := ca.leaves[key]; !ok && len(ca.leaves) >= maxLocalLeaves {
		// Names under a wildcard route are the clients' to choose:
		// the cache (and the expiry metric's series) stay bounded,
		// an evicted name is signed again when asked for.
		for k := range ca.leaves {
			if k != localhostName {
				delete(ca.leaves, k)
				break
			}
		}
	}
	ca.leaves[key] = c
	return c, nil
}

// maxLocalLeaves bounds the local CA's cache of leaf certificates.
const maxLocalLeaves = 1024

func (ca *localCA) issue(name string, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(leafValidity)
	if notAfter.After(ca.root.NotAfter) {
		notAfter = ca.root.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-5 * time.Minute), // tolerate client clock skew
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if name == localhostName {
		tmpl.DNSNames = []string{localhostName}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	} else if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("certs: signing leaf for %q: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

func (ca *localCA) expiries() map[string]time.Time {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	out := make(map[string]time.Time, len(ca.leaves))
	for n, c := range ca.leaves {
		out[n] = c.Leaf.NotAfter
	}
	return out
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}
