// Package pki creates the cluster certificate authority and the node
// certificates that secure Raft and leader forwarding between Meridian nodes
// with mutual TLS.
//
// Layout on disk: a CA directory holds ca.crt and ca.key (the key 0600);
// IssueNodeCert writes NAME.crt and NAME.key into an output directory. Keys
// are ECDSA P-256, PEM encoded (certificates as "CERTIFICATE", keys as PKCS#8
// "PRIVATE KEY").
//
// Peer verification. Nodes dial each other by IP (advertised addresses), and
// an advertised address may be a NAT or anycast address that no certificate
// names, so LoadMutualTLS does NOT check host names. Instead both ends verify
// that the peer presents a certificate that chains to the cluster CA and
// carries both the serverAuth and clientAuth extended key usages (which every
// certificate from IssueNodeCert has, and no ordinary web certificate signed
// by the same CA would need). Any holder of a node certificate of this cluster
// is therefore a trusted peer: guard the CA key and node keys accordingly.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/internal/smallfile"
)

// File names inside the CA directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Validity periods.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	NodeValidity = 5 * 365 * 24 * time.Hour
)

// ErrExists is returned when a file that would be written already exists.
var ErrExists = errors.New("pki: refusing to overwrite existing file")

// CreateCA writes a new cluster CA (ca.crt and ca.key, ECDSA P-256, valid 10
// years) into dir, creating dir (0700) if needed. It refuses to overwrite an
// existing ca.crt or ca.key.
func CreateCA(dir string) error {
	certPath := filepath.Join(dir, CACertFile)
	keyPath := filepath.Join(dir, CAKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%w: %s", ErrExists, p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("pki: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: create CA dir: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Meridian cluster CA " + serial.Text(16)[:8], Organization: []string{"Meridian"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("pki: create CA certificate: %w", err)
	}
	// Key first: a directory with a ca.crt but no key is useless, one with a
	// key but no certificate is refused on retry and visible to the operator.
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	return writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// IssueNodeCert issues a certificate for node name, signed by the CA in caDir,
// and writes name.crt and name.key (0600) into outDir (created 0700 if
// needed). The certificate is valid for both server and client
// authentication; its SANs are name (as a DNS name), dnsNames and ips. It
// refuses to overwrite existing files.
func IssueNodeCert(caDir, name string, ips []net.IP, dnsNames []string, outDir string) error {
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return fmt.Errorf("pki: invalid node name %q", name)
	}
	caCert, caKey, err := loadCA(caDir)
	if err != nil {
		return err
	}
	certPath := filepath.Join(outDir, name+".crt")
	keyPath := filepath.Join(outDir, name+".key")
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%w: %s", ErrExists, p)
		}
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return fmt.Errorf("pki: create output dir: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("pki: generate node key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	dns := []string{name}
	for _, d := range dnsNames {
		if d != "" && d != name {
			dns = append(dns, d)
		}
	}
	now := time.Now()
	notAfter := now.Add(NodeValidity)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{CommonName: name, Organization: []string{"Meridian"}},
		NotBefore:      now.Add(-time.Hour),
		NotAfter:       notAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:       dns,
		IPAddresses:    ips,
		SubjectKeyId:   keyID(&key.PublicKey),
		AuthorityKeyId: caCert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("pki: create node certificate: %w", err)
	}
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	return writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// LoadMutualTLS returns one *tls.Config usable by both ends of a cluster
// connection: it presents the node certificate, requires and verifies the
// peer's certificate (ClientAuth RequireAndVerifyClientCert against the CA),
// and speaks TLS 1.3 only.
//
// Host names are not checked (see the package documentation): the client side
// sets InsecureSkipVerify only to turn off crypto/tls's host-name check, and
// VerifyConnection, which crypto/tls calls on both ends whatever
// InsecureSkipVerify says, verifies the peer's chain against the cluster CA
// and requires the serverAuth and clientAuth key usages. A dialer that wants
// host-name checking as well may clone the config, set ServerName and clear
// InsecureSkipVerify.
func LoadMutualTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	caPEM, err := smallfile.Read(caFile, smallfile.MaxPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("pki: %s: no PEM certificate found", caFile)
	}
	cert, err := smallfile.LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("pki: load node certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("pki: parse node certificate: %w", err)
	}
	cert.Leaf = leaf
	// Fail early on a node certificate from another CA: the node could never
	// talk to its peers, and the handshake errors would be far from the cause.
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("pki: node certificate %s does not chain to CA %s: %w", certFile, caFile, err)
	}
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("pki: peer presented no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		for _, ku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots:         pool,
				Intermediates: inter,
				KeyUsages:     []x509.ExtKeyUsage{ku},
			}); err != nil {
				return fmt.Errorf("pki: peer certificate %q not from the cluster CA: %w", cs.PeerCertificates[0].Subject.CommonName, err)
			}
		}
		return nil
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		RootCAs:            pool,
		ClientCAs:          pool,
		ClientAuth:         tls.RequireAndVerifyClientCert,
		InsecureSkipVerify: true, // host names only; the chain is checked in VerifyConnection
		VerifyConnection:   verify,
	}, nil
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := smallfile.Read(filepath.Join(dir, CACertFile), smallfile.MaxPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: read CA certificate: %w", err)
	}
	keyPEM, err := smallfile.Read(filepath.Join(dir, CAKeyFile), smallfile.MaxPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: read CA key: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, nil, errors.New("pki: ca.crt: no PEM certificate")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: ca.crt: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, errors.New("pki: ca.key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: ca.key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, errors.New("pki: ca.key: not an ECDSA key")
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, errors.New("pki: ca.key does not match ca.crt")
	}
	return cert, key, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: marshal key: %w", err)
	}
	return writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// writeNew creates path exclusively (O_EXCL) with perm and writes data, synced.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, path)
		}
		return fmt.Errorf("pki: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("pki: sync %s: %w", path, err)
	}
	return f.Close()
}

func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

func keyID(pub *ecdsa.PublicKey) []byte {
	b, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(b)
	return sum[:20]
}
