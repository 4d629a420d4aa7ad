package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustCA(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if err := CreateCA(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustNode(t *testing.T, caDir, name string) *tls.Config {
	t.Helper()
	out := filepath.Join(t.TempDir(), "certs")
	if err := IssueNodeCert(caDir, name, []net.IP{net.ParseIP("127.0.0.1")}, []string{name + ".cluster"}, out); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadMutualTLS(filepath.Join(caDir, CACertFile), filepath.Join(out, name+".crt"), filepath.Join(out, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestCreateCA(t *testing.T) {
	dir := mustCA(t)
	st, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key mode %v, want 0600", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	b, _ := pem.Decode(raw)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !c.IsCA || time.Until(c.NotAfter) < 9*365*24*time.Hour {
		t.Fatalf("CA: isCA=%v notAfter=%v", c.IsCA, c.NotAfter)
	}
	if err := CreateCA(dir); !errors.Is(err, ErrExists) {
		t.Fatalf("second CreateCA: %v, want ErrExists", err)
	}
}

func TestIssueNodeCert(t *testing.T) {
	ca := mustCA(t)
	out := t.TempDir()
	ip := net.ParseIP("127.0.0.3")
	if err := IssueNodeCert(ca, "n1", []net.IP{ip}, []string{"n1.example"}, out); err != nil {
		t.Fatal(err)
	}
	if err := IssueNodeCert(ca, "n1", nil, nil, out); !errors.Is(err, ErrExists) {
		t.Fatalf("reissue: %v, want ErrExists", err)
	}
	st, _ := os.Stat(filepath.Join(out, "n1.key"))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(filepath.Join(out, "n1.crt"))
	b, _ := pem.Decode(raw)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(c.DNSNames, "n1") || !slices.Contains(c.DNSNames, "n1.example") || len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(ip) {
		t.Fatalf("SANs: %v %v", c.DNSNames, c.IPAddresses)
	}
	if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Fatalf("EKU: %v", c.ExtKeyUsage)
	}
}

// handshake runs a TLS handshake between client and server configs over real
// loopback TCP and returns both ends' errors (the client's after a read, as in
// TLS 1.3 the server's refusal of the client certificate arrives after the
// client's handshake returns).
func handshake(t *testing.T, client, server *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			done <- err
			return
		}
		_, err = tc.Write([]byte("ok"))
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, client)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	clientErr = tc.Handshake()
	if clientErr == nil {
		buf := make([]byte, 2)
		_, clientErr = tc.Read(buf)
	}
	tc.Close()
	return clientErr, <-done
}

func TestMutualTLS(t *testing.T) {
	ca := mustCA(t)
	a := mustNode(t, ca, "a")
	b := mustNode(t, ca, "b")
	if ce, se := handshake(t, a, b); ce != nil || se != nil {
		t.Fatalf("same CA: client %v, server %v", ce, se)
	}
	if a.MinVersion != tls.VersionTLS13 || a.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatal("config not strict")
	}

	other := mustCA(t)
	x := mustNode(t, other, "x")
	// Intruder dials a cluster node: the node refuses the intruder's certificate
	// and the intruder refuses the node's.
	if ce, se := handshake(t, x, a); ce == nil || se == nil {
		t.Fatalf("other CA accepted: client %v, server %v", ce, se)
	}
	// Intruder that trusts the cluster CA but holds a foreign certificate:
	// only the server can refuse it.
	sneaky := x.Clone()
	sneaky.RootCAs = a.RootCAs
	sneaky.VerifyConnection = nil
	_, se := handshake(t, sneaky, a)
	if se == nil || !strings.Contains(se.Error(), "certificate") {
		t.Fatalf("server accepted foreign client cert: %v", se)
	}
	// A client without any certificate is refused.
	anon := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	if _, se := handshake(t, anon, a); se == nil {
		t.Fatal("server accepted client without certificate")
	}

	// LoadMutualTLS refuses a node certificate from another CA.
	out := t.TempDir()
	if err := IssueNodeCert(other, "y", nil, nil, out); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadMutualTLS(filepath.Join(ca, CACertFile), filepath.Join(out, "y.crt"), filepath.Join(out, "y.key")); err == nil {
		t.Fatal("LoadMutualTLS accepted a certificate from another CA")
	}
}
