package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/cluster/certstore"
	"github.com/meridian-gw/meridian/cluster/pki"
	"github.com/meridian-gw/meridian/internal/pebbletest"
)

// Three clustered nodes with ACME against a real pebble share their certificates through
// Raft: the certificate for api.meridian.test is issued once (pebble logs one issuance)
// and every node serves that same certificate over TLS to a client trusting only pebble's
// root. Pebble validates HTTP-01 on node 1's HTTP port only (it resolves every name to
// 127.0.0.1): when another node wins the obtain lock, node 1 answers the challenge that
// node presented, from the replicated storage.
func TestClusterACMEShared(t *testing.T) {
	const nodes = 3
	var httpPorts, httpsPorts [nodes + 1]int
	used := map[int]bool{}
	for i := 1; i <= nodes; i++ {
		for _, dst := range []*int{&httpPorts[i], &httpsPorts[i]} {
			p := pebbletest.FreePort(t)
			for used[p] {
				p = pebbletest.FreePort(t)
			}
			used[p], *dst = true, p
		}
	}
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPorts[1], TLSPort: httpsPorts[1]})
	be := backend(t, "ok")

	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	if err := pki.CreateCA(caDir); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	keyF := filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(keyF, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certDir := filepath.Join(dir, "certs")
	var ns [nodes + 1]*Node
	var logs [nodes + 1]*pebbletest.SyncBuffer
	t.Cleanup(func() {
		for i := 1; i <= nodes; i++ {
			if ns[i] != nil {
				ns[i].Drain(context.Background())
			}
		}
		if t.Failed() {
			for i := 1; i <= nodes; i++ {
				if logs[i] != nil {
					t.Logf("---- n%d log ----\n%s", i, pebbletest.Tail(logs[i].String(), 8000))
				}
			}
			t.Logf("---- pebble log ----\n%s", pebbletest.Tail(p.Log(), 4000))
		}
	})
	seed := ""
	for i := 1; i <= nodes; i++ {
		name, ip := fmt.Sprintf("n%d", i), fmt.Sprintf("127.0.0.%d", i)
		if err := pki.IssueNodeCert(caDir, name, []net.IP{net.ParseIP(ip)}, nil, certDir); err != nil {
			t.Fatal(err)
		}
		join := ""
		if seed != "" {
			join = fmt.Sprintf("join: [%q]", seed)
		}
		yaml := fmt.Sprintf(`node:
  name: %s
  region: r%d
  data_dir: %s
  listen: {http: "%s:%d", https: "%s:%d"}
  admin: {listen: "%s:0", token: "0123456789abcdef0123"}
  access_log: {enabled: false}
  limits: {drain_timeout: 15s}
  tls:
    acme: {email: test@meridian.test, ca: %q, ca_root: %q, challenges: [http-01]}
  cluster:
    bind: "%s:0"
    gossip_bind: "%s:0"
    bootstrap_expect: %d
    %s
    tls: {ca_file: %s, cert_file: %s, key_file: %s}
    gossip_key_file: %s
gateway:
  services: [{name: app, targets: [{url: %q}]}]
  routes: [{name: api, match: {hosts: [%s]}, service: app}]
`, name, i, filepath.Join(dir, name), ip, httpPorts[i], ip, httpsPorts[i], ip,
			p.DirectoryURL, p.MinicaFile, ip, ip, nodes, join,
			filepath.Join(caDir, "ca.crt"), filepath.Join(certDir, name+".crt"), filepath.Join(certDir, name+".key"), keyF,
			be.URL, acmeHost)
		f, err := ParseFile([]byte(yaml))
		if err != nil {
			t.Fatalf("%s config: %v\n%s", name, err, yaml)
		}
		logs[i] = &pebbletest.SyncBuffer{}
		n, err := New(f, Options{
			Logger:        slog.New(slog.NewTextHandler(logs[i], &slog.HandlerOptions{Level: slog.LevelInfo})),
			ClusterTuning: fastCluster,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(f, []byte(yaml)); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		ns[i] = n
		if seed == "" {
			seed = n.cluster.Members.Addr()
		}
	}

	// Every node serves a certificate for acmeHost that verifies against pebble's root.
	handshake := func(i int) (*x509.Certificate, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d := &tls.Dialer{Config: &tls.Config{RootCAs: p.Roots, ServerName: acmeHost}}
		c, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.%d:%d", i, httpsPorts[i]))
		if err != nil {
			return nil, err
		}
		defer c.Close()
		st := c.(*tls.Conn).ConnectionState()
		if len(st.VerifiedChains) == 0 {
			return nil, errors.New("no verified chain")
		}
		if err := p.ChainsToRoot(st.VerifiedChains[0]); err != nil {
			return nil, err
		}
		return st.VerifiedChains[0][0], nil
	}
	var leaves [nodes + 1]*x509.Certificate
	for i := 1; i <= nodes; i++ {
		pebbletest.WaitFor(t, obtainTimeout, fmt.Sprintf("n%d to serve a pebble certificate for %s", i, acmeHost), func() error {
			var err error
			leaves[i], err = handshake(i)
			return err
		})
	}
	for i := 2; i <= nodes; i++ {
		if leaves[i].SerialNumber.Cmp(leaves[1].SerialNumber) != 0 {
			t.Errorf("n%d serves serial %x, n1 serves %x: not the same certificate", i, leaves[i].SerialNumber, leaves[1].SerialNumber)
		}
	}
	if got := strings.Count(p.Log(), "Issued certificate serial"); got != 1 {
		t.Errorf("pebble issued %d certificates; want 1 for the whole cluster", got)
	}
	// The certificate lives in Raft, on every node; the locks are released.
	for i := 1; i <= nodes; i++ {
		st := ns[i].cluster.Store
		found := false
		for _, e := range st.KVList(certstore.DefaultPrefix + "certificates/") {
			if strings.HasSuffix(e.Key, "/"+acmeHost+".crt") {
				found = true
			}
		}
		if !found {
			t.Errorf("n%d: no certificate for %s in the replicated store", i, acmeHost)
		}
	}
	obtained := []string{}
	for i := 1; i <= nodes; i++ {
		if strings.Contains(logs[i].String(), "certificate obtained successfully") {
			obtained = append(obtained, fmt.Sprintf("n%d", i))
		}
	}
	if len(obtained) != 1 {
		t.Errorf("nodes that logged obtaining the certificate: %v; want exactly one", obtained)
	}
	if !strings.Contains(logs[1].String(), "answered http-01 challenge") {
		t.Error("n1 (where pebble validates) did not answer the HTTP-01 challenge")
	}
	t.Logf("obtained by %v (pebble validated HTTP-01 on n1); serial %x served by all %d nodes", obtained, leaves[1].SerialNumber, nodes)
	// Served over HTTPS by every node, too.
	for i := 1; i <= nodes; i++ {
		c := &tls.Config{RootCAs: p.Roots, ServerName: acmeHost}
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.%d:%d", i, httpsPorts[i]), c)
		if err != nil {
			t.Fatalf("n%d: %v", i, err)
		}
		fmt.Fprintf(conn, "GET /x HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", acmeHost)
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		var sb strings.Builder
		for {
			n, err := conn.Read(buf)
			sb.Write(buf[:n])
			if err != nil {
				break
			}
		}
		conn.Close()
		if !strings.HasPrefix(sb.String(), "HTTP/1.1 200") || !strings.HasSuffix(sb.String(), "ok") {
			t.Errorf("n%d GET https://%s/x: %q", i, acmeHost, sb.String())
		}
	}
}
