package node

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/meridian-gw/meridian/internal/atomicfile"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/meridian-gw/meridian/cluster/pki"
)

// DevCluster is a local cluster of nodes on loopback started by
// `meridian dev`: each node has its own data dir, certificate from a
// cluster CA and the shared gossip key, all under one directory.
type DevCluster struct {
	Dir   string
	Nodes []*Node
	Files []string // each node's configuration file
}

// Stop drains every node at once, each told first that the others go too
// (StopsWithCluster): drained one after another, the last leader spent its
// drain calling the peers already gone (a screen of ERROR lines).
func (dc *DevCluster) Stop() {
	for _, n := range dc.Nodes {
		n.StopsWithCluster()
	}
	var wg sync.WaitGroup
	for _, n := range dc.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Drain(context.Background())
		}()
	}
	wg.Wait()
}

// DevPorts are the ports of node i (1-based) of a dev cluster whose port
// offset is off (0 for `meridian dev`: HTTP 8081.., admin 9911.., cluster
// 7001.., gossip 7947..).
func DevPorts(i, off int) (http, admin, cluster, gossip int) {
	return off + 8080 + i, off + 9910 + i, off + 7000 + i, off + 7946 + i
}

// StartDev writes the configuration of n nodes under dir (a CA, node
// certificates, a gossip key, one file per node), then starts them in this
// process. The first node carries the demo backends' document, which
// seeds the cluster. On error the nodes already started are drained.
func StartDev(dir string, n, portOffset int, logger *slog.Logger) (*DevCluster, error) {
	if n < 1 || n > 9 {
		return nil, errors.New("dev: between 1 and 9 nodes")
	}
	caDir := filepath.Join(dir, "ca")
	if err := pki.CreateCA(caDir); err != nil && !errors.Is(err, pki.ErrExists) {
		return nil, err
	}
	keyFile := filepath.Join(dir, "gossip.key")
	if _, err := os.Stat(keyFile); err != nil {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := atomicfile.Write(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
			return nil, err
		}
	}
	dc := &DevCluster{Dir: dir}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("dev-%d", i)
		certDir := filepath.Join(dir, "certs")
		if _, err := os.Stat(filepath.Join(certDir, name+".crt")); err != nil {
			if err := pki.IssueNodeCert(caDir, name, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"}, certDir); err != nil {
				return nil, err
			}
		}
		httpPort, adminPort, clusterPort, gossipPort := DevPorts(i, portOffset)
		join := ""
		if i > 1 {
			_, _, _, seed := DevPorts(1, portOffset)
			join = fmt.Sprintf("    join: [\"127.0.0.1:%d\"]\n", seed)
		}
		expect := n
		if n > 3 {
			expect = 3 // the first three vote; the others join as voters the leader adds
		}
		yaml := fmt.Sprintf(`# meridian dev: node %d of %d
node:
  name: %s
  region: dev-%c
  data_dir: %s
  listen: {http: "127.0.0.1:%d"}
  admin: {listen: "127.0.0.1:%d", token_file: %s}
  access_log: {enabled: false}
  demo: true
  cluster:
    bind: "127.0.0.1:%d"
    gossip_bind: "127.0.0.1:%d"
    bootstrap_expect: %d
%s    tls: {ca_file: %s, cert_file: %s, key_file: %s}
    gossip_key_file: %s
gateway:
  services:
    - name: demo
      targets: [{url: "http://demo.local"}]
  routes:
    - {name: hello, match: {path: /hello, methods: [GET]}, service: demo}
    - {name: users, match: {path: "/api/users/{id}", methods: [GET]}, service: demo, rewrite: {path: "/users/{id}"}}
    - {name: events, match: {path: /events}, service: demo}
    - {name: echo, match: {path_prefix: /echo}, service: demo}
`, i, n, name, 'a'+rune(i-1)%3, filepath.Join(dir, name), httpPort, adminPort, filepath.Join(dir, "admin-token"),
			clusterPort, gossipPort, expect, join,
			filepath.Join(caDir, "ca.crt"), filepath.Join(certDir, name+".crt"), filepath.Join(certDir, name+".key"), keyFile)
		if _, err := os.Stat(filepath.Join(dir, "admin-token")); err != nil {
			tok := make([]byte, 24)
			rand.Read(tok)
			if err := atomicfile.Write(filepath.Join(dir, "admin-token"), []byte(fmt.Sprintf("%x\n", tok)), 0o600); err != nil {
				return nil, err
			}
		}
		file := filepath.Join(dir, name+".yaml")
		if err := atomicfile.Write(file, []byte(yaml), 0o600); err != nil {
			return nil, err
		}
		f, err := ParseFile([]byte(yaml))
		if err != nil {
			return nil, fmt.Errorf("dev node %s: %w", name, err)
		}
		nd, err := New(f, Options{ConfigPath: file, Logger: logger})
		if err == nil {
			err = nd.Start(f, []byte(yaml))
		}
		if err != nil {
			for _, started := range dc.Nodes {
				started.Drain(context.Background())
			}
			return nil, fmt.Errorf("dev node %s: %w", name, err)
		}
		dc.Nodes = append(dc.Nodes, nd)
		dc.Files = append(dc.Files, file)
	}
	return dc, nil
}
