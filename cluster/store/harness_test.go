package store

import (
	"context"
	"crypto/tls"
	"fmt"
	"github.com/meridian-gw/meridian/internal/testutil"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/cluster/pki"
)

// Test timing: short enough for quick elections, long enough not to flap on a
// loaded 2-core machine under the race detector.
const (
	tHeartbeat = 150 * time.Millisecond
	tElection  = 150 * time.Millisecond
	tLease     = 100 * time.Millisecond
	tCommit    = 20 * time.Millisecond
)

type syncBuffer = testutil.SyncBuffer

type tnode struct {
	id    string
	ip    string
	dir   string
	tls   *tls.Config
	logs  *syncBuffer
	addr  string // advertised address after first open (reused on restart)
	s     *Store
	tweak func(*Config)
}

type tcluster struct {
	t     *testing.T
	caDir string
	nodes []*tnode
}

// checkGoroutines registers (first, so it runs last) a cleanup that waits for
// the goroutine count to return near the baseline taken now.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		var n int
		for time.Now().Before(deadline) {
			if n = runtime.NumGoroutine(); n <= base+2 {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("goroutines: %d after cleanup, baseline %d\n%s", n, base, buf)
	})
}

func newCluster(t *testing.T, n int, tweak func(*Config)) *tcluster {
	t.Helper()
	checkGoroutines(t)
	c := &tcluster{t: t, caDir: filepath.Join(t.TempDir(), "ca")}
	if err := pki.CreateCA(c.caDir); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		c.nodes = append(c.nodes, c.newNode(fmt.Sprintf("n%d", i), fmt.Sprintf("127.0.0.%d", i+1), c.caDir, tweak))
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			if nd.s != nil {
				nd.s.Close()
			}
		}
		if t.Failed() {
			for _, nd := range c.nodes {
				t.Logf("---- log of %s ----\n%s", nd.id, tail(nd.logs.String(), 60))
			}
		}
	})
	return c
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

func nodeTLS(t *testing.T, caDir, id, ip string) *tls.Config {
	t.Helper()
	out := filepath.Join(t.TempDir(), "certs-"+id)
	if err := pki.IssueNodeCert(caDir, id, []net.IP{net.ParseIP(ip)}, nil, out); err != nil {
		t.Fatal(err)
	}
	cfg, err := pki.LoadMutualTLS(filepath.Join(caDir, pki.CACertFile), filepath.Join(out, id+".crt"), filepath.Join(out, id+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (c *tcluster) newNode(id, ip, caDir string, tweak func(*Config)) *tnode {
	return &tnode{id: id, ip: ip, dir: filepath.Join(c.t.TempDir(), id), tls: nodeTLS(c.t, caDir, id, ip), logs: &syncBuffer{}, tweak: tweak}
}

func (nd *tnode) config() Config {
	bind := nd.ip + ":0"
	if nd.addr != "" {
		bind = nd.addr
	}
	cfg := Config{
		ID: nd.id, BindAddr: bind, DataDir: nd.dir, TLS: nd.tls,
		Logger:             slog.New(slog.NewTextHandler(nd.logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		HeartbeatTimeout:   tHeartbeat,
		ElectionTimeout:    tElection,
		LeaderLeaseTimeout: tLease,
		CommitTimeout:      tCommit,
	}
	if nd.tweak != nil {
		nd.tweak(&cfg)
	}
	return cfg
}

func (c *tcluster) open(nd *tnode) *Store {
	c.t.Helper()
	s, err := Open(nd.config())
	if err != nil {
		c.t.Fatalf("open %s: %v", nd.id, err)
	}
	nd.s, nd.addr = s, s.Addr()
	return s
}

func (c *tcluster) stop(nd *tnode) {
	c.t.Helper()
	if err := nd.s.Close(); err != nil {
		c.t.Errorf("close %s: %v", nd.id, err)
	}
	nd.s = nil
}

// start opens every node and bootstraps them all as voters.
func (c *tcluster) start() {
	c.t.Helper()
	var servers []Server
	for _, nd := range c.nodes {
		c.open(nd)
		servers = append(servers, Server{ID: nd.id, Addr: nd.addr, Voter: true})
	}
	for _, nd := range c.nodes {
		if err := nd.s.BootstrapCluster(servers); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *tcluster) live() []*tnode {
	var out []*tnode
	for _, nd := range c.nodes {
		if nd.s != nil {
			out = append(out, nd)
		}
	}
	return out
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// leader waits for exactly one live node to be leader, recognised by all live
// nodes, and returns it.
func (c *tcluster) leader(d time.Duration) *tnode {
	c.t.Helper()
	var ld *tnode
	waitFor(c.t, d, "a leader known to every live node", func() bool {
		ld = nil
		for _, nd := range c.live() {
			if nd.s.State() == "Leader" {
				if ld != nil {
					return false
				}
				ld = nd
			}
		}
		if ld == nil {
			return false
		}
		for _, nd := range c.live() {
			if id, _ := nd.s.Leader(); id != ld.id {
				return false
			}
		}
		return true
	})
	return ld
}

func (c *tcluster) follower(ld *tnode) *tnode {
	for _, nd := range c.live() {
		if nd != ld {
			return nd
		}
	}
	c.t.Fatal("no follower")
	return nil
}

// converge waits until every live node has applied version v.
func (c *tcluster) converge(d time.Duration, v uint64) time.Duration {
	c.t.Helper()
	return waitFor(c.t, d, fmt.Sprintf("every live node at version %d", v), func() bool {
		for _, nd := range c.live() {
			if nd.s.Current().Version < v {
				return false
			}
		}
		return true
	})
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// history records the documents a node's subscriber saw, in order.
type history struct {
	mu   sync.Mutex
	docs []Document
}

func (h *history) add(d Document) {
	h.mu.Lock()
	h.docs = append(h.docs, d)
	h.mu.Unlock()
}

func (h *history) snapshot() []Document {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Document(nil), h.docs...)
}

func context2s() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Second)
}
