package certs

import (
	"bytes"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/internal/smallfile"
)

// Certificates of the operator's own (tls.certificates): a certificate and
// key pair per entry, loaded from files, served for the names the
// certificate holds (its DNS subjectAltNames, "*.example.com" ones matching
// one label) before anything else. Names they cover are neither obtained
// from the ACME CA nor signed by the local CA. Where several certificates
// hold a name (an ECDSA and an RSA one, say), the first the client can use
// is served, in the order given. A handshake without a server name (a
// client that dialled an address) gets a certificate for the address it
// dialled (an IP subjectAltName), else the first it can use.
//
// The files are read at start and again on SetStatic (the node's SIGHUP): a
// set in which any pair fails to load is refused whole, and the running one
// stays.

// StaticFiles names one certificate and its key (PEM files; the certificate
// file may hold the chain after the leaf).
type StaticFiles struct {
	CertFile, KeyFile string
}

// StaticError says which pair did not load and which of its files is at
// fault.
type StaticError struct {
	Index int    // in the list given, from 0
	Field string // "cert_file" or "key_file"
	Path  string // the file ("" when it is missing)
	Err   error
}

func (e *StaticError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("certificates[%d].%s: %v", e.Index, e.Field, e.Err)
	}
	return fmt.Sprintf("certificates[%d].%s: %s: %v", e.Index, e.Field, e.Path, e.Err)
}

func (e *StaticError) Unwrap() error { return e.Err }

// maxStaticFile bounds a certificate or key file: a chain is a few KiB.
const maxStaticFile = 1 << 20

// staticCert is one loaded pair.
type staticCert struct {
	files StaticFiles
	cert  *tls.Certificate
	names []string // lower-case DNS names ("*.x" for wildcards), then IP addresses
}

// StaticSet is loaded certificates (LoadStatic), in the order given,
// indexed by the names they hold.
type StaticSet struct {
	certs []staticCert
	all   []*tls.Certificate
	exact map[string][]*tls.Certificate
	wild  map[string][]*tls.Certificate // "x.example" for "*.x.example"
	ips   map[netip.Addr][]*tls.Certificate
}

// LoadStatic reads the pairs (loadPair) in order and indexes their names,
// for UseStatic; the error is a *StaticError.
func LoadStatic(files []StaticFiles) (*StaticSet, error) {
	set := &StaticSet{
		exact: map[string][]*tls.Certificate{},
		wild:  map[string][]*tls.Certificate{},
		ips:   map[netip.Addr][]*tls.Certificate{},
	}
	for i, f := range files {
		sc, se := loadPair(f)
		if se != nil {
			se.Index = i
			return nil, se
		}
		for _, n := range sc.cert.Leaf.DNSNames {
			if n = normalizeName(n); n == "" {
				continue
			}
			if suffix, ok := strings.CutPrefix(n, "*."); ok {
				set.wild[suffix] = append(set.wild[suffix], sc.cert)
			} else {
				set.exact[n] = append(set.exact[n], sc.cert)
			}
		}
		for _, ip := range sc.cert.Leaf.IPAddresses {
			if a, ok := netip.AddrFromSlice(ip); ok {
				set.ips[a.Unmap()] = append(set.ips[a.Unmap()], sc.cert)
			}
		}
		set.certs = append(set.certs, sc)
		set.all = append(set.all, sc.cert)
	}
	return set, nil
}

// loadPair reads one pair: the certificate file first (its first
// certificate is the leaf), then the key, which must match it. An expired
// certificate is loaded (and served) as nginx and Caddy do; SetStatic
// warns about it.
func loadPair(f StaticFiles) (staticCert, *StaticError) {
	fail := func(field, path string, err error) (staticCert, *StaticError) {
		return staticCert{}, &StaticError{Field: field, Path: path, Err: err}
	}
	if f.CertFile == "" {
		return fail("cert_file", "", errors.New("missing: the certificate's PEM file"))
	}
	if f.KeyFile == "" {
		return fail("key_file", "", errors.New("missing: the private key's PEM file"))
	}
	certPEM, err := readPEMFile(f.CertFile)
	if err != nil {
		return fail("cert_file", f.CertFile, err)
	}
	chain, err := parseChain(certPEM)
	if err != nil {
		return fail("cert_file", f.CertFile, err)
	}
	leaf := chain[0]
	keyPEM, err := readPEMFile(f.KeyFile)
	if err != nil {
		return fail("key_file", f.KeyFile, err)
	}
	if encryptedPEM(keyPEM) {
		return fail("key_file", f.KeyFile, errors.New("the private key is encrypted; give it unencrypted (openssl pkey -in KEY -out PLAIN)"))
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		for i, c := range chain[1:] {
			one := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
			if _, e := tls.X509KeyPair(one, keyPEM); e == nil {
				return fail("cert_file", f.CertFile, fmt.Errorf("the key belongs to certificate %d of the file, not the first: the leaf must come first, then its chain", i+2))
			}
		}
		return fail("key_file", f.KeyFile, err)
	}
	pair.Leaf = leaf
	if k, ok := pair.PrivateKey.(*rsa.PrivateKey); ok && k.N.BitLen() < 1024 {
		return fail("key_file", f.KeyFile, fmt.Errorf("an RSA key of %d bits, which TLS here refuses to sign with (2048 or more are advised)", k.N.BitLen()))
	}
	sc := staticCert{files: f, cert: &pair}
	for _, n := range leaf.DNSNames {
		if n = normalizeName(n); n != "" {
			sc.names = append(sc.names, n)
		}
	}
	for _, ip := range leaf.IPAddresses {
		sc.names = append(sc.names, ip.String())
	}
	if len(sc.names) == 0 {
		return fail("cert_file", f.CertFile, errors.New("the certificate names no host (no DNS or IP subjectAltName; clients do not check a common name alone)"))
	}
	return sc, nil
}

// readPEMFile reads a certificate or key file: a regular file (not a
// device or a pipe, which could block or never end), at most
// smallfile.MaxPEM bytes. Its errors leave the path to the caller.
func readPEMFile(path string) ([]byte, error) {
	b, err := smallfile.Read(path, smallfile.MaxPEM)
	return b, smallfile.Reason(err)
}

// parseChain returns the certificates of a PEM file in order (other
// blocks, a key among them, are skipped).
func parseChain(b []byte) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of the file: %w", len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return chain, nil
}

// encryptedPEM reports whether a key file holds an encrypted key (PKCS#8
// or the legacy Proc-Type form).
func encryptedPEM(b []byte) bool {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return false
		}
		if block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
			return true
		}
	}
}

// CheckStatic reports whether one pair loads as SetStatic would load it
// (for validation before a start).
func CheckStatic(f StaticFiles) *StaticError {
	_, se := loadPair(f)
	return se
}

// CheckKeyFile reports whether a key file can be read, for validation that
// found something wrong with the certificate file (CheckStatic stops
// there), so that both are named at once.
func CheckKeyFile(path string) *StaticError {
	if path == "" {
		return &StaticError{Field: "key_file", Err: errors.New("missing: the private key's PEM file")}
	}
	if _, err := readPEMFile(path); err != nil {
		return &StaticError{Field: "key_file", Path: path, Err: err}
	}
	return nil
}

// lookup returns the certificate for a server name (normalized), or nil:
// the first the client can use (hello; nil: any) of those for the exact
// name, else of the wildcard ones, else the first of those. An IP address
// for a name (clients should not send one, some do) and no name at all
// look up the address: the one named, or the one the client dialled; with
// none for it that the client can use, no name gets the first that it
// can use.
// dialled returns the certificates whose IP subjectAltNames hold the
// address the client dialled.
func (s *StaticSet) dialled(hello *tls.ClientHelloInfo) []*tls.Certificate {
	if s != nil && hello != nil && hello.Conn != nil && hello.Conn.LocalAddr() != nil {
		if ap, err := netip.ParseAddrPort(hello.Conn.LocalAddr().String()); err == nil {
			return s.ips[ap.Addr().Unmap()]
		}
	}
	return nil
}

func (s *StaticSet) lookup(name string, hello *tls.ClientHelloInfo) *tls.Certificate {
	if s == nil || len(s.all) == 0 {
		return nil
	}
	if a, err := netip.ParseAddr(name); err == nil {
		return pick(s.ips[a.Unmap()], hello)
	}
	if name == "" {
		byAddr := s.dialled(hello)
		if c := usable(byAddr, hello); c != nil {
			return c
		}
		if c := usable(s.all, hello); c != nil {
			return c
		}
		if len(byAddr) > 0 {
			return byAddr[0]
		}
		return s.all[0]
	}
	exact := s.exact[name]
	var wild []*tls.Certificate
	if _, rest, ok := strings.Cut(name, "."); ok && rest != "" {
		wild = s.wild[rest]
	}
	if c := usable(exact, hello); c != nil {
		return c
	}
	if c := usable(wild, hello); c != nil {
		return c
	}
	if len(exact) > 0 {
		return exact[0]
	}
	return pick(wild, hello)
}

// pick returns the first of cs that the client can use (its signature
// algorithms, curves and versions), else the first.
func pick(cs []*tls.Certificate, hello *tls.ClientHelloInfo) *tls.Certificate {
	if c := usable(cs, hello); c != nil {
		return c
	}
	if len(cs) > 0 {
		return cs[0]
	}
	return nil
}

// usable returns the first of cs that the client can use, or nil (also
// when there is no client to ask).
func usable(cs []*tls.Certificate, hello *tls.ClientHelloInfo) *tls.Certificate {
	if hello == nil {
		return nil
	}
	for _, c := range cs {
		if hello.SupportsCertificate(c) == nil {
			return c
		}
	}
	return nil
}

// covers reports whether some certificate serves name (normalized).
func (s *StaticSet) covers(name string) bool {
	return name != "" && s.lookup(name, nil) != nil
}

// addExpiries puts each name's expiry in out, for the expiry metric: the
// earliest among the certificates that may be served for it.
func (s *StaticSet) addExpiries(out map[string]time.Time) {
	if s == nil {
		return
	}
	seen := map[string]bool{}
	for _, c := range s.certs {
		for _, n := range c.names {
			if t, ok := out[n]; !seen[n] || ok && c.cert.Leaf.NotAfter.Before(t) {
				out[n] = c.cert.Leaf.NotAfter
			}
			seen[n] = true
		}
	}
}

// SetStatic loads the operator's certificates (tls.certificates) and serves
// them from the next handshake on (LoadStatic, then UseStatic). If any
// pair fails to load the running set stays and the error (a *StaticError)
// says which; nil or empty files remove them all.
func (m *Manager) SetStatic(files []StaticFiles) error {
	set, err := LoadStatic(files)
	if err != nil {
		return err
	}
	m.UseStatic(set)
	return nil
}

// ExpectStatic tells ManageHosts of a set about to be used (nil: none),
// so that the names it holds are not handed to ACME meanwhile: a reload
// applies its document, whose hosts are managed, before its certificates.
func (m *Manager) ExpectStatic(set *StaticSet) { m.pending.Store(set) }

// UseStatic serves a loaded set from the next handshake on, in place of
// the running one, with a warning for each certificate out of date or
// listed twice. The caller gives ManageHosts the hosts again, for the
// names the set no longer (or now) holds.
func (m *Manager) UseStatic(set *StaticSet) {
	now := m.now()
	for _, c := range set.certs {
		leaf := c.cert.Leaf
		switch {
		case now.After(leaf.NotAfter):
			m.log.Warn("a configured certificate has expired; it is served until it is replaced", "cert_file", c.files.CertFile, "names", c.names, "not_after", leaf.NotAfter)
		case now.Before(leaf.NotBefore):
			m.log.Warn("a configured certificate is not valid yet", "cert_file", c.files.CertFile, "names", c.names, "not_before", leaf.NotBefore)
		case leaf.NotAfter.Sub(now) < 14*24*time.Hour:
			m.log.Warn("a configured certificate expires soon", "cert_file", c.files.CertFile, "names", c.names, "not_after", leaf.NotAfter)
		}
	}
	for i, c := range set.certs {
		for _, d := range set.certs[:i] {
			if bytes.Equal(d.cert.Certificate[0], c.cert.Certificate[0]) {
				m.log.Warn("a configured certificate is listed twice", "cert_file", c.files.CertFile, "same_as", d.files.CertFile)
				break
			}
		}
	}
	m.static.Store(set)
	if len(set.certs) > 0 {
		names := make([]string, 0, len(set.certs))
		for _, c := range set.certs {
			names = append(names, c.names...)
		}
		m.log.Info("configured certificates loaded", "count", len(set.certs), "names", names)
	}
}
