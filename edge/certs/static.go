package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"time"
)

// Certificates of the operator's own (tls.certificates): a certificate and
// key pair per entry, loaded from files, served for the names the
// certificate holds (its DNS subjectAltNames, "*.example.com" ones matching
// one label) before anything else. Names they cover are neither obtained
// from the ACME CA nor signed by the local CA. A handshake without a server
// name (a client that dialled an IP address) gets the first of them.
//
// The files are read at start and again on SetStatic (the node's SIGHUP): a
// set in which any pair fails to load is refused whole, and the running one
// stays.

// StaticFiles names one certificate and its key (PEM files; the certificate
// file may hold the chain after the leaf).
type StaticFiles struct {
	CertFile, KeyFile string
}

// staticCert is one loaded pair.
type staticCert struct {
	files StaticFiles
	cert  *tls.Certificate
	names []string // lower-case DNS names; "*.x" for wildcards
}

// staticSet is the loaded certificates, first one first.
type staticSet struct {
	certs []staticCert
	exact map[string]*tls.Certificate
	wild  map[string]*tls.Certificate // "x.example" for "*.x.example"
}

// loadStatic reads the pairs (loadPair) in order and indexes their names.
func loadStatic(files []StaticFiles) (*staticSet, error) {
	set := &staticSet{exact: map[string]*tls.Certificate{}, wild: map[string]*tls.Certificate{}}
	for i, f := range files {
		sc, err := loadPair(f)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i+1, err)
		}
		for _, n := range sc.names {
			if suffix, ok := strings.CutPrefix(n, "*."); ok {
				if _, dup := set.wild[suffix]; !dup {
					set.wild[suffix] = sc.cert
				}
			} else if _, dup := set.exact[n]; !dup {
				set.exact[n] = sc.cert
			}
		}
		set.certs = append(set.certs, sc)
	}
	return set, nil
}

// loadPair reads one pair and checks that the key matches the certificate
// and that the certificate names a host. An expired certificate is loaded
// (and served) as nginx and Caddy do; SetStatic warns about it.
func loadPair(f StaticFiles) (staticCert, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return staticCert{}, fmt.Errorf("cert_file and key_file are both required")
	}
	pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return staticCert{}, fmt.Errorf("%s, %s: %w", f.CertFile, f.KeyFile, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return staticCert{}, fmt.Errorf("%s: %w", f.CertFile, err)
		}
		pair.Leaf = leaf
	}
	sc := staticCert{files: f, cert: &pair}
	for _, n := range leaf.DNSNames {
		if n = normalizeName(n); n != "" {
			sc.names = append(sc.names, n)
		}
	}
	if len(sc.names) == 0 && len(leaf.IPAddresses) == 0 {
		return staticCert{}, fmt.Errorf("%s names no host (no DNS or IP subjectAltName; clients do not check a common name alone)", f.CertFile)
	}
	return sc, nil
}

// CheckStatic reports whether one pair loads as SetStatic would load it
// (for validation before a start).
func CheckStatic(f StaticFiles) error {
	_, err := loadPair(f)
	return err
}

// lookup returns the certificate for a server name (normalized), or nil.
// An exact name wins over a wildcard; among equals, the earlier entry.
// No name: the first certificate.
func (s *staticSet) lookup(name string) *tls.Certificate {
	if s == nil || len(s.certs) == 0 {
		return nil
	}
	if name == "" {
		return s.certs[0].cert
	}
	if c := s.exact[name]; c != nil {
		return c
	}
	if _, rest, ok := strings.Cut(name, "."); ok && rest != "" {
		return s.wild[rest]
	}
	return nil
}

// covers reports whether some certificate serves name (normalized).
func (s *staticSet) covers(name string) bool {
	return name != "" && s.lookup(name) != nil
}

// addExpiries puts each name's expiry in out (the latest, if several
// certificates name it), for the expiry metric.
func (s *staticSet) addExpiries(out map[string]time.Time) {
	if s == nil {
		return
	}
	for _, c := range s.certs {
		for _, n := range c.names {
			if t, ok := out[n]; !ok || c.cert.Leaf.NotAfter.After(t) {
				out[n] = c.cert.Leaf.NotAfter
			}
		}
	}
}

// SetStatic loads the operator's certificates (tls.certificates) and serves
// them from the next handshake on. If any pair fails to load the running
// set stays and the error says which; nil or empty files remove them all.
func (m *Manager) SetStatic(files []StaticFiles) error {
	set, err := loadStatic(files)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
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
	m.static.Store(set)
	if len(set.certs) > 0 {
		names := make([]string, 0, len(set.certs))
		for _, c := range set.certs {
			names = append(names, c.names...)
		}
		m.log.Info("configured certificates loaded", "count", len(set.certs), "names", names)
	}
	return nil
}
