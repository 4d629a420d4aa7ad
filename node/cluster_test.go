package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/cluster"
	"github.com/meridian-gw/meridian/cluster/gossip"
	"github.com/meridian-gw/meridian/cluster/pki"
	"github.com/meridian-gw/meridian/cluster/store"
	"github.com/meridian-gw/meridian/edge"
	"github.com/meridian-gw/meridian/edge/config"
	"github.com/meridian-gw/meridian/internal/testutil"
)

func fastCluster(c *cluster.Config) {
	c.StoreTuning = func(s *store.Config) {
		s.HeartbeatTimeout = 150 * time.Millisecond
		s.ElectionTimeout = 150 * time.Millisecond
		s.LeaderLeaseTimeout = 100 * time.Millisecond
		s.CommitTimeout = 20 * time.Millisecond
	}
	c.GossipTuning = gossip.Tuning{
		ProbeInterval: 250 * time.Millisecond, ProbeTimeout: 150 * time.Millisecond,
		GossipInterval: 30 * time.Millisecond, PushPullInterval: 2 * time.Second,
		TCPTimeout: 3 * time.Second, SuspicionMult: 4, GossipToTheDeadTime: 2 * time.Second,
		DeadRetention: time.Minute,
	}
}

type clusterHarness struct {
	t   *testing.T
	tls bool // nodes also serve HTTPS (local CA per node)
	// removeOnLeave sets cluster.remove_on_leave on every node.
	removeOnLeave bool
	dir           string
	caDir         string
	keyF          string
	be            string
	nodes         map[int]*Node
	seed          string
	// seeds, if set, are the join seeds instead of seed.
	seeds []string
	// raft is each node's Raft address once it started: a restart binds
	// it again, as a node with a configured port does.
	raft map[int]string
	// otherCA, if set, is the CA dir of nodes whose number is in
	// otherCANodes (their certificate and trusted CA), instead of caDir.
	otherCA      string
	otherCANodes map[int]bool
	// bootstrap sets bootstrap: true on every node instead of
	// bootstrap_expect: 3.
	bootstrap bool
	// names gives node i another name than n<i>.
	names map[int]string
	// nonVoters starts node i with voter: false.
	nonVoters map[int]bool
	// logs, if set, gets each node's log (JSON), by node number.
	logs map[int]*testutil.SyncBuffer
	// gossipPorts, if set, is node i's gossip port.
	gossipPorts map[int]int
}

func newClusterHarness(t *testing.T, backend string) *clusterHarness {
	t.Helper()
	dir := t.TempDir()
	h := &clusterHarness{t: t, dir: dir, caDir: filepath.Join(dir, "ca"), be: backend, nodes: map[int]*Node{}, raft: map[int]string{}}
	if err := pki.CreateCA(h.caDir); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	h.keyF = filepath.Join(dir, "gossip.key")
	os.WriteFile(h.keyF, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
	return h
}

// start runs node i on 127.0.0.i, with TLS and gossip encryption.
func (h *clusterHarness) start(i int) *Node {
	h.t.Helper()
	name := fmt.Sprintf("n%d", i)
	if h.names[i] != "" {
		name = h.names[i]
	}
	ip := fmt.Sprintf("127.0.0.%d", i)
	certDir, caDir := filepath.Join(h.dir, "certs", strconv.Itoa(i)), h.caDir
	if h.otherCANodes[i] {
		certDir, caDir = filepath.Join(h.dir, "certs-other", strconv.Itoa(i)), h.otherCA
	}
	if _, err := os.Stat(filepath.Join(certDir, name+".crt")); err != nil {
		if err := pki.IssueNodeCert(caDir, name, []net.IP{net.ParseIP(ip)}, nil, certDir); err != nil {
			h.t.Fatal(err)
		}
	}
	join := ""
	if h.seed != "" {
		join = fmt.Sprintf("join: [%q]", h.seed)
	}
	if len(h.seeds) > 0 {
		q := make([]string, len(h.seeds))
		for i, s := range h.seeds {
			q[i] = strconv.Quote(s)
		}
		join = "join: [" + strings.Join(q, ", ") + "]"
	}
	raftBind := ip + ":0"
	if a, ok := h.raft[i]; ok {
		raftBind = a
	}
	gossipPort := h.gossipPorts[i]
	if i == 1 && h.seed != "" && gossipPort == 0 {
		_, p, _ := net.SplitHostPort(h.seed)
		fmt.Sscan(p, &gossipPort) // a restarted seed keeps its address
	}
	yaml := fmt.Sprintf(`node:
  name: %s
  region: r%d
  location: {lat: %d, lon: %d}
  data_dir: %s
  listen: {http: "%s:0"%s}
  admin: {listen: "%s:0", token: "0123456789abcdef0123"}
  access_log: {enabled: false}
  cluster:
    bind: "%s"
    gossip_bind: "%s:%d"
    %s
    remove_on_leave: %t
    voter: %t
    %s
    tls: {ca_file: %s, cert_file: %s, key_file: %s}
    gossip_key_file: %s
gateway:
  services: [{name: app, targets: [{url: %q}]}]
  routes: [{name: v1, match: {path_prefix: /v1}, service: app}]
`, name, i, 10*i, 5*i, filepath.Join(h.dir, "node"+strconv.Itoa(i)), ip, h.https(ip), ip, raftBind, ip, gossipPort, h.bootstrapLine(), h.removeOnLeave, !h.nonVoters[i], join,
		filepath.Join(caDir, "ca.crt"), filepath.Join(certDir, name+".crt"), filepath.Join(certDir, name+".key"), h.keyF, h.be)
	f, err := ParseFile([]byte(yaml))
	if err != nil {
		h.t.Fatalf("node %s config: %v", name, err)
	}
	logger := slog.New(slog.DiscardHandler)
	if h.logs != nil {
		h.logs[i] = &testutil.SyncBuffer{}
		logger = slog.New(slog.NewJSONHandler(h.logs[i], nil))
	}
	n, err := New(f, Options{Logger: logger, ClusterTuning: fastCluster})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := n.Start(f, []byte(yaml)); err != nil {
		h.t.Fatalf("start %s: %v", name, err)
	}
	if h.seed == "" {
		h.seed = n.cluster.Members.Addr()
	}
	h.raft[i] = n.cluster.Members.LocalMeta().ClusterAddr
	h.nodes[i] = n
	return n
}

// startVoters starts nodes 1..n and waits until Raft lists all n.
func (h *clusterHarness) startVoters(n int) {
	h.t.Helper()
	for i := 1; i <= n; i++ {
		h.start(i)
	}
	waitUntil(h.t, 20*time.Second, fmt.Sprintf("%d voters in Raft", n), func() bool {
		servers, err := h.nodes[1].cluster.Store.Servers()
		return err == nil && len(servers) == n
	})
}

func (h *clusterHarness) bootstrapLine() string {
	if h.bootstrap {
		return "bootstrap: true"
	}
	return "bootstrap_expect: 3"
}

func (h *clusterHarness) https(ip string) string {
	if !h.tls {
		return ""
	}
	return fmt.Sprintf(`, https: "%s:0"`, ip)
}

func (h *clusterHarness) stop(i int) {
	if n := h.nodes[i]; n != nil {
		n.Drain(context.Background())
		delete(h.nodes, i)
	}
}

func (h *clusterHarness) stopAll() {
	for i := range h.nodes {
		h.stop(i)
	}
}

// startedCluster starts a backend and nodes 1..3, and returns once Raft
// lists all three.
func startedCluster(t *testing.T) (*clusterHarness, string) {
	t.Helper()
	be := backend(t, "ok")
	h := newClusterHarness(t, be.URL)
	t.Cleanup(h.stopAll)
	h.startVoters(3)
	return h, be.URL
}

// leaderWhere waits for a running node to lead while cond holds for it,
// and returns it.
func (h *clusterHarness) leaderWhere(what string, cond func(*Node) bool) *Node {
	h.t.Helper()
	var leader *Node
	waitUntil(h.t, 10*time.Second, what, func() bool {
		for _, n := range h.nodes {
			if n.cluster.Store.State() == "Leader" && cond(n) {
				leader = n
				return true
			}
		}
		return false
	})
	return leader
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func docWithPrefix(be, prefix string) string {
	return fmt.Sprintf("services: [{name: app, targets: [{url: %q}]}]\nroutes: [{name: r, match: {path_prefix: %s}, service: app}]\n", be, prefix)
}

// Three nodes form a cluster by bootstrap_expect over TLS and encrypted
// gossip; the file's document seeds it; a write through any node returns
// once that node serves it, reaches every node, and a stale write is
// refused; the cluster's members are listed by the admin API; after the
// leader drains, writes go on through the others.
func TestClusterOfThreeNodes(t *testing.T) {
	be := backend(t, "ok")
	h := newClusterHarness(t, be.URL)
	defer h.stopAll()
	for i := 1; i <= 3; i++ {
		h.start(i)
	}
	versionEverywhere := func(v uint64) func() bool {
		return func() bool {
			for _, n := range h.nodes {
				if s := n.Gateway().Current(); s == nil || s.Version != v {
					return false
				}
			}
			return true
		}
	}
	waitUntil(t, 20*time.Second, "the seeded version 1 on every node", versionEverywhere(1))

	// A write through node 2 is served by node 2 when Apply returns.
	s, err := h.nodes[2].Apply(context.Background(), []byte(docWithPrefix(be.URL, "/v2")), edge.ApplyOptions{IfVersion: 1})
	if err != nil {
		t.Fatalf("Apply through n2: %v", err)
	}
	if s.Version != 2 || h.nodes[2].Gateway().Current().Version != 2 {
		t.Fatalf("after Apply: got version %d; want 2 served by n2 at once", s.Version)
	}
	waitUntil(t, 10*time.Second, "version 2 on every node", versionEverywhere(2))
	for i, n := range h.nodes {
		if code, body := get(t, http.DefaultClient, "http://"+n.ProxyAddr()+"/v2/x"); code != 200 || body != "ok" {
			t.Errorf("n%d /v2/x: %d %q", i, code, body)
		}
	}
	// Optimistic concurrency: version 1 is no longer current.
	if _, err := h.nodes[3].Apply(context.Background(), []byte(docWithPrefix(be.URL, "/v3")), edge.ApplyOptions{IfVersion: 1}); !errors.Is(err, edge.ErrVersionConflict) {
		t.Fatalf("stale write: got %v; want ErrVersionConflict", err)
	}

	// Membership through the admin API. Applied versions travel by gossip,
	// so they reach every member list within a bounded time, not at once.
	var members []cluster.MemberStatus
	waitUntil(t, 10*time.Second, "every member listed alive at config version 2 with addresses and location", func() bool {
		resp, err := http.Get("http://" + h.nodes[3].AdminAddr() + "/cluster/members")
		if err != nil {
			t.Fatal(err)
		}
		members = nil
		json.NewDecoder(resp.Body).Decode(&members)
		resp.Body.Close()
		if len(members) != 3 {
			return false
		}
		for _, m := range members {
			if m.State != "alive" || m.ConfigVersion != 2 || m.HTTPAddr == "" || m.AdminAddr == "" || m.Lat == 0 {
				return false
			}
		}
		return true
	})
	leaders := 0
	for _, m := range members {
		if m.Raft == "leader" {
			leaders++
		}
	}
	if leaders != 1 {
		t.Errorf("%d leaders listed; want 1: %+v", leaders, members)
	}

	// Drain the leader; the others elect a new one and take writes.
	var leader int
	for i, n := range h.nodes {
		if n.cluster.Store.State() == "Leader" {
			leader = i
		}
	}
	h.stop(leader)
	// The drained leader handed leadership over before it went: one of
	// the others leads already, no election timeout to wait for.
	handed := false
	for _, n := range h.nodes {
		handed = handed || n.cluster.Store.State() == "Leader"
	}
	if !handed {
		t.Error("no leader among the others right after the leader drained; want leadership handed over")
	}
	var other *Node
	for _, n := range h.nodes {
		other = n
		break
	}
	// Draining announced a graceful leave: the others see "left", not
	// "dead".
	leftName := fmt.Sprintf("n%d", leader)
	waitUntil(t, 15*time.Second, "the drained leader shown as left", func() bool {
		for _, m := range other.cluster.Status() {
			if m.Name == leftName {
				return m.State == "left"
			}
		}
		return false
	})
	start := time.Now()
	var v uint64
	waitUntil(t, 15*time.Second, "a write after the leader left", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := other.Apply(ctx, []byte(docWithPrefix(be.URL, "/v4")), edge.ApplyOptions{})
		if err == nil {
			v = s.Version
		}
		return err == nil
	})
	t.Logf("write accepted %s after the leader drained", time.Since(start).Round(time.Millisecond))
	waitUntil(t, 10*time.Second, "the new version on the remaining nodes", versionEverywhere(v))
}

// clusterAtVersion2 starts nodes 1..3 on the harness's document (version
// 1), writes a route /a through n1 (version 2), and returns once n3
// serves it.
func clusterAtVersion2(t *testing.T) (*clusterHarness, *httptest.Server) {
	t.Helper()
	be := backend(t, "ok")
	h := newClusterHarness(t, be.URL)
	for i := 1; i <= 3; i++ {
		h.start(i)
	}
	waitUntil(t, 20*time.Second, "version 1 on n3", func() bool {
		s := h.nodes[3].Gateway().Current()
		return s != nil && s.Version == 1
	})
	if _, err := h.nodes[1].Apply(context.Background(), []byte(docWithPrefix(be.URL, "/a")), edge.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "version 2 on n3", func() bool { return h.nodes[3].Gateway().Current().Version == 2 })
	return h, be
}

// A node that restarts serves at least the version it served before, from
// its own Raft log, and catches up with what it missed.
func TestClusterRestartCatchesUp(t *testing.T) {
	h, be := clusterAtVersion2(t)
	defer h.stopAll()
	h.stop(3)
	if _, err := h.nodes[1].Apply(context.Background(), []byte(docWithPrefix(be.URL, "/b")), edge.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	n3 := h.start(3)
	if got := n3.Gateway().Current().Version; got < 2 {
		t.Fatalf("restarted node serves version %d right after start; want at least 2 (what it served before)", got)
	}
	// Not ready until it has caught up: a load balancer must not send it
	// traffic for the configuration the cluster replaced.
	waitUntil(t, 15*time.Second, "the restarted node to be ready", func() bool {
		if !n3.Ready() {
			return false
		}
		if got := n3.Gateway().Current().Version; got != 3 {
			t.Fatalf("restarted node ready while serving version %d; want 3, the cluster's", got)
		}
		return true
	})
	if code, _ := get(t, http.DefaultClient, "http://"+n3.ProxyAddr()+"/b"); code != 200 {
		t.Fatalf("restarted node /b: %d", code)
	}
	io.Discard.Write(nil)
}

// A node whose Raft log was lost (raft.db gone, its applied state kept)
// serves the document it installed last, unversioned, not its file's,
// until the cluster's log brings it up to date; and then takes every new
// entry (the state beyond the new log is set aside in the store). When
// every node lost its log, the cluster forms again from that document.
func TestClusterNodeThatLostItsRaftLogServesWhatItInstalled(t *testing.T) {
	h, be := clusterAtVersion2(t)
	defer h.stopAll()
	want := h.nodes[3].Gateway().Current().Hash
	dir := h.nodes[3].cfg.DataDir
	h.stopAll()
	if err := os.Remove(filepath.Join(dir, "raft", "raft.db")); err != nil {
		t.Fatal(err)
	}
	n3 := h.start(3) // alone: its seeds are down, nothing reaches it from the cluster
	if cur := n3.Gateway().Current(); cur.Hash != want || cur.Version != 0 {
		t.Fatalf("n3 without its Raft log serves version %d hash %s; want what it installed last (%s), unversioned", cur.Version, shortHash(cur.Hash), shortHash(want))
	}
	h.start(1)
	h.start(2)
	waitUntil(t, 20*time.Second, "n3 back at version 2", func() bool {
		cur := n3.Gateway().Current()
		return cur.Version == 2 && cur.Hash == want
	})
	a, err := n3.Apply(context.Background(), []byte(docWithPrefix(be.URL, "/c")), edge.ApplyOptions{})
	if err != nil || a.Version != 3 {
		t.Fatalf("a write through n3: %+v, %v; want version 3", a, err)
	}
	waitUntil(t, 10*time.Second, "version 3 everywhere", func() bool {
		for _, n := range h.nodes {
			if n.Gateway().Current().Version != 3 {
				return false
			}
		}
		return true
	})

	// Every node's log lost: the cluster forms again from the document
	// they served (version 1 again), not from their files'.
	last := n3.Gateway().Current().Hash
	dirs := map[int]string{}
	for i, n := range h.nodes {
		dirs[i] = n.cfg.DataDir
	}
	h.stopAll()
	for _, d := range dirs {
		if err := os.Remove(filepath.Join(d, "raft", "raft.db")); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 3; i++ {
		h.start(i)
	}
	waitUntil(t, 20*time.Second, "version 1, the last document, everywhere", func() bool {
		for _, n := range h.nodes {
			if cur := n.Gateway().Current(); cur.Version != 1 || cur.Hash != last {
				return false
			}
		}
		return true
	})
}

// TLS sessions resume across nodes: session ticket keys come from the
// cluster's master secret in Raft.
func TestClusterSharesTLSSessions(t *testing.T) {
	be := backend(t, "ok")
	h := newClusterHarness(t, be.URL)
	h.tls = true
	defer h.stopAll()
	for i := 1; i <= 3; i++ {
		h.start(i)
	}
	roots := x509.NewCertPool()
	for _, n := range h.nodes {
		if !roots.AppendCertsFromPEM(n.RootPEM()) {
			t.Fatal("no local CA root")
		}
	}
	dial := func(n *Node, cache tls.ClientSessionCache) (bool, error) {
		_, port, _ := net.SplitHostPort(n.HTTPSAddr())
		host, _, _ := net.SplitHostPort(n.HTTPSAddr())
		c, err := tls.Dial("tcp", net.JoinHostPort(host, port), &tls.Config{ServerName: "localhost", RootCAs: roots, ClientSessionCache: cache, NextProtos: []string{"http/1.1"}})
		if err != nil {
			return false, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET /v1/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
		io.ReadAll(c)
		return c.ConnectionState().DidResume, nil
	}
	waitUntil(t, 30*time.Second, "a session from n1 resumed on n2 and n3", func() bool {
		for _, other := range []int{2, 3} {
			cache := tls.NewLRUClientSessionCache(4)
			if _, err := dial(h.nodes[1], cache); err != nil {
				t.Fatalf("dial n1: %v", err)
			}
			resumed, err := dial(h.nodes[other], cache)
			if err != nil || !resumed {
				return false
			}
		}
		return true
	})
}

// A node restarted with voter: false loses its vote, and back with voter:
// true gets it again: its seat follows its configuration (an outside
// check saw the change ignored, the quorum larger than configured).
func TestClusterSeatFollowsVoterSetting(t *testing.T) {
	be := backend(t, "ok")
	h := newClusterHarness(t, be.URL)
	defer h.stopAll()
	h.startVoters(3)
	seat := func(id string) (voter, ok bool) {
		for _, n := range h.nodes {
			if n.cluster.Store.State() != "Leader" {
				continue
			}
			servers, err := n.cluster.Store.Servers()
			if err != nil {
				return false, false
			}
			for _, s := range servers {
				if s.ID == id {
					return s.Voter, true
				}
			}
		}
		return false, false
	}
	for _, voter := range []bool{false, true} {
		h.stop(3)
		h.nonVoters = map[int]bool{3: !voter}
		h.start(3)
		waitUntil(t, 30*time.Second, fmt.Sprintf("n3's seat a voter: %v", voter), func() bool {
			v, ok := seat("n3")
			return ok && v == voter
		})
	}
	// With n2 down, n3's demotion would leave voters n1 and n2, one of
	// them alive: no quorum. It waits (an outside check lost the leader
	// so), and writes go on committing with n1 and n3.
	h.stop(2)
	h.stop(3)
	h.nonVoters = map[int]bool{3: true}
	h.start(3)
	write := func(prefix string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := h.nodes[1].Apply(ctx, []byte(docWithPrefix(be.URL, prefix)), edge.ApplyOptions{})
		return err
	}
	waitUntil(t, 30*time.Second, "a write with n2 down and n3 back", func() bool { return write("/n2-down") == nil })
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if v, ok := seat("n3"); ok && !v {
			t.Fatal("n3 demoted while n2 was down: the voters left hold no quorum")
		}
	}
	h.nonVoters = nil
	h.start(2)
	waitUntil(t, 30*time.Second, "n3 demoted once n2 is back", func() bool {
		v, ok := seat("n3")
		return ok && !v
	})
	// (A hand-over, if n3 led, may cut the first write short.)
	waitUntil(t, 30*time.Second, "a write after n3's demotion", func() bool { return write("/after") == nil })
}

// By default a drained voter keeps its Raft seat (README: restarts keep
// the quorum size): drain n3, crash n2, restart n3, and n1 with n3 are two
// voters of three, a quorum that takes writes. Had the leader removed n3
// when it left, n1 would be one of two, with no quorum.
func TestClusterDrainedVoterKeepsSeat(t *testing.T) {
	be := backend(t, "ok")
	h := newClusterHarness(t, be.URL)
	defer h.stopAll()
	h.startVoters(3)
	h.stop(3)
	waitUntil(t, 15*time.Second, "n3 shown as left", func() bool {
		for _, m := range h.nodes[1].cluster.Status() {
			if m.Name == "n3" {
				return m.State == "left"
			}
		}
		return false
	})
	// The leader reconciles Raft with gossip on every gossip event and
	// every second: three of its rounds must leave n3's seat alone.
	for deadline := time.Now().Add(3500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		servers, err := h.nodes[1].cluster.Store.Servers()
		if err != nil {
			continue
		}
		seated := false
		for _, s := range servers {
			seated = seated || s.ID == "n3"
		}
		if !seated {
			t.Fatalf("the drained voter n3 lost its Raft seat: %+v", servers)
		}
	}
	// A crash of n2, as the others see it: Raft and gossip stop without
	// a word (the rest of the node is drained at the end).
	h.nodes[2].cluster.Close()
	h.start(3)
	waitUntil(t, 30*time.Second, "a write through n1 with n2 down and n3 back", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := h.nodes[1].Apply(ctx, []byte(docWithPrefix(be.URL, "/after")), edge.ApplyOptions{})
		return err == nil
	})
}

// With remove_on_leave, a draining voter gives its Raft seat back: the
// others' Raft configuration no longer lists it and they keep a quorum.
func TestClusterRemoveOnLeave(t *testing.T) {
	be := backend(t, "ok")
	h := newClusterHarness(t, be.URL)
	h.removeOnLeave = true
	defer h.stopAll()
	h.startVoters(3)
	h.stop(3)
	waitUntil(t, 10*time.Second, "n3 removed from the Raft configuration", func() bool {
		servers, err := h.nodes[1].cluster.Store.Servers()
		if err != nil {
			return false
		}
		for _, s := range servers {
			if s.ID == "n3" {
				return false
			}
		}
		return len(servers) == 2
	})
	// And it stays out: the leader does not add back a member that was
	// alive in gossip, draining, when it left Raft (three reconcile rounds).
	for deadline := time.Now().Add(3500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if servers, err := h.nodes[1].cluster.Store.Servers(); err == nil && len(servers) != 2 {
			t.Fatalf("n3 back in the Raft configuration after it left: %+v", servers)
		}
	}
	// Two voters of two: writes still commit.
	if _, err := h.nodes[2].Apply(context.Background(), []byte(docWithPrefix(be.URL, "/after")), edge.ApplyOptions{}); err != nil {
		t.Fatalf("write after the voter left: %v", err)
	}
}

// A node that cannot install a committed document (a file it names broken
// on this node) says so in the version gossip publishes for it, and after
// a restart serves the newest cluster document it installed that still
// installs, not its file's.
func TestClusterNodeThatCannotInstallADocument(t *testing.T) {
	h, beURL := startedCluster(t)
	waitUntil(t, 20*time.Second, "version 1 on n3", func() bool {
		s := h.nodes[3].Gateway().Current()
		return s != nil && s.Version == 1
	})
	apply := func(doc string) uint64 {
		t.Helper()
		s, err := h.nodes[1].Apply(context.Background(), []byte(doc), edge.ApplyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s.Version
	}
	vA := apply(docWithPrefix(beURL, "/a"))
	caFile := filepath.Join(h.dir, "upstream-ca.pem")
	ca, err := os.ReadFile(filepath.Join(h.caDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(caFile, ca, 0o600)
	vB := apply(fmt.Sprintf("services: [{name: app, targets: [{url: %q}]}, {name: sec, targets: [{url: \"https://127.0.0.1:9\"}], tls: {ca_file: %s}}]\n"+
		"routes: [{name: r, match: {path_prefix: /b}, service: app}, {name: s, match: {path_prefix: /sec}, service: sec}]\n", beURL, caFile))
	waitUntil(t, 10*time.Second, "the second document on n3", func() bool { return h.nodes[3].Gateway().Current().Version == vB })

	h.stop(3)
	os.WriteFile(caFile, []byte("garbage\n"), 0o600) // broken while n3 is down
	n3 := h.start(3)
	if got := n3.Gateway().Current().Version; got != vA {
		t.Fatalf("restarted node serves version %d; want %d, the newest it installed that still installs", got, vA)
	}
	if code, _ := get(t, http.DefaultClient, "http://"+n3.ProxyAddr()+"/a/x"); code != 200 {
		t.Errorf("restarted node /a/x: %d; want 200 from the earlier cluster document", code)
	}
	if got := n3.cluster.Members.LocalMeta().ConfigVersion; got != vA {
		t.Errorf("version published for n3 = %d; want %d, the one it serves", got, vA)
	}
	// A document that installs puts it back in step.
	vC := apply(docWithPrefix(beURL, "/c"))
	waitUntil(t, 10*time.Second, "the next document on n3", func() bool { return n3.Gateway().Current().Version == vC })
	waitUntil(t, 5*time.Second, "its version published", func() bool { return n3.cluster.Members.LocalMeta().ConfigVersion == vC })
}

// A node that has the gossip key but a certificate from another CA meets
// the others by gossip and is not given a Raft seat: the leader cannot
// reach it, and a voter it cannot reach would count against the quorum.
func TestClusterMemberWithAnotherCANotSeated(t *testing.T) {
	h, _ := startedCluster(t)
	h.otherCA = filepath.Join(h.dir, "ca-other")
	if err := pki.CreateCA(h.otherCA); err != nil {
		t.Fatal(err)
	}
	h.otherCANodes = map[int]bool{4: true}
	h.start(4)
	waitUntil(t, 10*time.Second, "n4 alive in gossip on the leader", func() bool {
		for _, mb := range h.nodes[1].cluster.Members.Members() {
			if mb.Name == "n4" && mb.State == gossip.StateAlive {
				return true
			}
		}
		return false
	})
	leader := h.leaderWhere("the leader to refuse n4 a seat", func(n *Node) bool { return n.cluster.SeatsRefused() > 0 })
	servers, err := leader.cluster.Store.Servers()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		if s.ID == "n4" {
			t.Fatalf("n4, whose certificate is from another CA, was given a Raft seat: %v", servers)
		}
	}
	if len(servers) != 3 {
		t.Errorf("Raft servers %v; want the 3 real ones", servers)
	}
}

// DELETE /cluster/members/{name} on the leader takes a gone member's Raft
// seat away; it is refused for an alive member, through a follower (which
// names the leader) and without the token.
func TestClusterRemoveMemberThroughAdmin(t *testing.T) {
	h, _ := startedCluster(t)
	h.stop(3) // drained: gossip says left, and it keeps its seat
	leader := h.leaderWhere("a leader among n1 and n2", func(*Node) bool { return true })
	follower := h.nodes[1]
	if follower == leader {
		follower = h.nodes[2]
	}
	del := func(n *Node, name, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("DELETE", "http://"+n.AdminAddr()+"/cluster/members/"+name, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	const token = "0123456789abcdef0123"
	if code, _ := del(leader, "n3", ""); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d; want 401", code)
	}
	if code, body := del(follower, "n3", token); code != http.StatusConflict || !strings.Contains(body, "only the leader removes members") {
		t.Errorf("through a follower: %d %s; want 409 naming the leader", code, body)
	}
	alive := follower.cfg.Name
	if code, body := del(leader, alive, token); code != http.StatusConflict || !strings.Contains(body, "alive in gossip") {
		t.Errorf("an alive member: %d %s; want 409", code, body)
	}
	if code, body := del(leader, "n3", token); code != http.StatusNoContent {
		t.Fatalf("the drained member: %d %s; want 204", code, body)
	}
	servers, err := leader.cluster.Store.Servers()
	if err != nil || len(servers) != 2 {
		t.Fatalf("Raft servers after the removal: %v, %v; want 2", servers, err)
	}
	if code, _ := del(leader, "n3", token); code != http.StatusNotFound {
		t.Errorf("removed again: %d; want 404", code)
	}
}

// A node configured with bootstrap: true whose seeds already serve a
// cluster's document joins that cluster rather than bootstrap a second
// one, whose history would fork from the first's when they met.
func TestClusterSecondBootstrapNodeJoins(t *testing.T) {
	be := backend(t, "ok")
	h := newClusterHarness(t, be.URL)
	h.bootstrap = true
	defer h.stopAll()
	n1 := h.start(1)
	waitUntil(t, 20*time.Second, "version 1 on n1", func() bool {
		s := n1.Gateway().Current()
		return s != nil && s.Version == 1
	})
	if _, err := n1.Apply(context.Background(), []byte(docWithPrefix(be.URL, "/a")), edge.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	want := n1.Gateway().Current()
	n2 := h.start(2)
	// A second cluster shows as n2 leading its own (it would be alone in
	// it); watched all along.
	ledOwn := false
	watch := func() {
		if n2.cluster.Store.State() == "Leader" {
			ledOwn = true
		}
	}
	waitUntil(t, 20*time.Second, "n2 seated in n1's Raft", func() bool {
		watch()
		servers, err := n1.cluster.Store.Servers()
		return err == nil && len(servers) == 2
	})
	waitUntil(t, 10*time.Second, "n2 to serve n1's document", func() bool {
		watch()
		s := n2.Gateway().Current()
		return s != nil && s.Version == want.Version && s.Hash == want.Hash
	})
	if ledOwn {
		t.Error("n2 bootstrapped and led a cluster of its own")
	}
	if id, _ := n2.cluster.Store.Leader(); id != "n1" {
		t.Errorf("n2's leader = %q; want n1 (one cluster)", id)
	}
}

// bootstrap: true on every node of a new cluster, all started at once and
// seeded with each other (a node file copied with it): one cluster, not
// one per node (an outside check saw three, each ready and serving its
// own file's document).
func TestClusterBootstrapTrueOnEveryNodeFormsOne(t *testing.T) {
	be := backend(t, "ok")
	h := newClusterHarness(t, be.URL)
	h.bootstrap = true
	h.gossipPorts = map[int]int{}
	for i := 1; i <= 3; i++ {
		// A port free for TCP and UDP on 127.0.0.i.
		for h.gossipPorts[i] == 0 {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", i))
			if err != nil {
				t.Fatal(err)
			}
			port := ln.Addr().(*net.TCPAddr).Port
			pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.%d:%d", i, port))
			ln.Close()
			if err == nil {
				pc.Close()
				h.gossipPorts[i] = port
			}
		}
		h.seeds = append(h.seeds, fmt.Sprintf("127.0.0.%d:%d", i, h.gossipPorts[i]))
	}
	defer h.stopAll()
	for i := 1; i <= 3; i++ {
		h.start(i) // Start returns before the node joins or bootstraps
	}
	waitUntil(t, 30*time.Second, "one cluster of three", func() bool {
		id := h.nodes[1].cluster.Members.ClusterID()
		for _, n := range h.nodes {
			servers, err := n.cluster.Store.Servers()
			if err != nil || len(servers) != 3 || id == "" || n.cluster.Members.ClusterID() != id {
				return false
			}
		}
		return true
	})
}

// A join seed that is a node's cluster (Raft) port rather than its gossip
// port is named for what it likely is, not only "EOF".
func TestClusterJoinThroughAClusterPortHinted(t *testing.T) {
	be := backend(t, "ok")
	h := newClusterHarness(t, be.URL)
	h.bootstrap = true
	h.logs = map[int]*testutil.SyncBuffer{}
	defer h.stopAll()
	h.start(1)
	h.seeds = []string{h.raft[1]}
	h.start(2)
	waitUntil(t, 20*time.Second, "n2's join warning to name gossip addresses", func() bool {
		return strings.Contains(h.logs[2].String(), "join lists gossip addresses")
	})
}

// Two clusters bootstrapped apart (the seeds not reachable then, or none
// given) cannot be merged: their Raft histories differ. When their gossip
// meets, each refuses the other's members (they know different cluster
// ids), so neither leader seats the other's nodes in its Raft.
func TestClusterOfAnotherHistoryRefused(t *testing.T) {
	be := backend(t, "ok")
	h := newClusterHarness(t, be.URL)
	h.bootstrap = true
	defer h.stopAll()
	n1 := h.start(1)
	h.seed = "" // n2 is given no seed: it bootstraps a cluster of its own
	n2 := h.start(2)
	for _, n := range []*Node{n1, n2} {
		waitUntil(t, 20*time.Second, n.cfg.Name+" to lead its cluster and know its id", func() bool {
			return n.cluster.Store.State() == "Leader" && n.cluster.Members.ClusterID() != ""
		})
	}
	if n1.cluster.Members.ClusterID() == n2.cluster.Members.ClusterID() {
		t.Fatal("two clusters bootstrapped apart have the same id")
	}
	_, err := n2.cluster.Members.Join([]string{n1.cluster.Members.Addr()})
	if err == nil || !strings.Contains(err.Error(), "belongs to another cluster") {
		t.Fatalf("n2 joining n1's gossip: %v; want it refused (another cluster)", err)
	}
	for _, pair := range [][2]*Node{{n1, n2}, {n2, n1}} {
		for _, mb := range pair[0].cluster.Members.Members() {
			if mb.Name == pair[1].cfg.Name {
				t.Errorf("%s lists %s (%s) as a member", pair[0].cfg.Name, mb.Name, mb.State)
			}
		}
	}
	// A member of its own cluster is still taken: n3 joins n1.
	h.seed = n1.cluster.Members.Addr()
	h.start(3)
	waitUntil(t, 20*time.Second, "n3 seated in n1's Raft", func() bool {
		servers, err := n1.cluster.Store.Servers()
		return err == nil && len(servers) == 2
	})
	for _, n := range []*Node{n1, n2} {
		servers, err := n.cluster.Store.Servers()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range servers {
			if (n == n1) == (s.ID == "n2") {
				t.Errorf("%s's Raft seats %s", n.cfg.Name, s.ID)
			}
		}
	}
	if n1.cluster.Members.Stats().ForeignRefused == 0 && n2.cluster.Members.Stats().ForeignRefused == 0 {
		t.Error("no refusal counted")
	}

	// A new node given seeds of both clusters joins the first that
	// answers (n2's, tried first, unless it is slow) and only that one: seated by both,
	// it would leave one without a quorum (two voters, one of which
	// follows the other).
	h.seeds = []string{n2.cluster.Members.Addr(), n1.cluster.Members.Addr()}
	n4 := h.start(4)
	want := map[*Node]int{n1: 2, n2: 1} // n1 seats n3 already
	var joined, other *Node
	waitUntil(t, 20*time.Second, "n4 seated in one cluster's Raft", func() bool {
		for _, pair := range [][2]*Node{{n1, n2}, {n2, n1}} {
			if servers, err := pair[0].cluster.Store.Servers(); err == nil && len(servers) == want[pair[0]]+1 {
				joined, other = pair[0], pair[1]
				return true
			}
		}
		return false
	})
	lists := func(n *Node, name string) bool {
		for _, mb := range n.cluster.Members.Members() {
			if mb.Name == name {
				return true
			}
		}
		return false
	}
	if lists(other, "n4") || lists(n4, other.cfg.Name) {
		t.Errorf("%s lists n4: %v, n4 lists %s: %v; want neither (n4 joined %s's cluster)",
			other.cfg.Name, lists(other, "n4"), other.cfg.Name, lists(n4, other.cfg.Name), joined.cfg.Name)
	}
	if servers, _ := other.cluster.Store.Servers(); len(servers) != want[other] {
		t.Errorf("%s's Raft seats %v; want %d (n4 joined %s's cluster)", other.cfg.Name, servers, want[other], joined.cfg.Name)
	}
}

// A node wiped and started again with another cluster's seed (how the
// README says to move a node) still has a seat in its old cluster, whose
// leader goes on calling its address. Its Raft connections carry the old
// cluster's id and are refused: the node follows the cluster it joined.
func TestClusterMovedNodeNotTakenBackByItsOldCluster(t *testing.T) {
	be := backend(t, "ok")
	h := newClusterHarness(t, be.URL)
	h.bootstrap = true
	defer h.stopAll()
	a := h.start(1)
	aSeed := h.seed
	h.seed = "" // cluster B: n2, then n3 joins it
	b := h.start(2)
	h.seed = b.cluster.Members.Addr()
	ready := func(n *Node) func() bool {
		return func() bool {
			cur := n.Gateway().Current()
			return cur != nil && cur.Version >= 1 && n.cluster.Members.ClusterID() != ""
		}
	}
	// With bootstrap: true a node joins seeds that serve a document, and
	// bootstraps a cluster of its own otherwise.
	waitUntil(t, 20*time.Second, "B's first document and id", ready(b))
	waitUntil(t, 20*time.Second, "A's first document and id", ready(a))
	h.start(3)
	waitUntil(t, 20*time.Second, "n3 seated in B", func() bool {
		servers, err := b.cluster.Store.Servers()
		return err == nil && len(servers) == 2 && b.cluster.Members.ClusterID() != ""
	})
	if _, err := b.Apply(context.Background(), []byte(docWithPrefix(be.URL, "/cluster-b")), edge.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	// Move n3: stop it (its seat in B stays), wipe it, join A.
	h.stop(3)
	os.RemoveAll(filepath.Join(h.dir, "node3"))
	h.seed = aSeed
	n3 := h.start(3)
	waitUntil(t, 20*time.Second, "n3 seated in A and serving A's document", func() bool {
		servers, err := a.cluster.Store.Servers()
		cur := n3.Gateway().Current()
		return err == nil && len(servers) == 2 && cur != nil && cur.Hash == a.Gateway().Current().Hash
	})
	waitUntil(t, 10*time.Second, "n3 to take A's id", func() bool {
		return n3.cluster.Members.ClusterID() == a.cluster.Members.ClusterID()
	})
	// B keeps calling n3's address: it must not take B's entries.
	if _, err := b.Apply(context.Background(), []byte(docWithPrefix(be.URL, "/cluster-b-again")), edge.ApplyOptions{}); err == nil {
		t.Log("B took a write (its quorum is n2 alone or n3 answered)")
	}
	if cur := n3.Gateway().Current(); cur.Hash != a.Gateway().Current().Hash {
		t.Errorf("n3 serves version %d (%.12s); want A's document", cur.Version, cur.Hash)
	}
}

// A node started under the name of a node that is alive learns from
// gossip that its name is taken: it stays out of Raft (no bootstrap, no
// seat) and is not ready; the cluster keeps the first node.
func TestClusterDuplicateNameStaysOut(t *testing.T) {
	h, _ := startedCluster(t)
	n1Addr := h.nodes[1].cluster.Members.LocalMeta().ClusterAddr
	h.names = map[int]string{6: "n1"}
	// Through n2: the real n1 does not see the duplicate's join itself.
	h.seed = h.nodes[2].cluster.Members.Addr()
	dup := h.start(6)
	waitUntil(t, 10*time.Second, "the duplicate to learn its name is taken", func() bool {
		return dup.cluster.Members.NameTaken() != ""
	})
	if dup.Ready() {
		t.Error("the duplicate is ready")
	}
	if why := dup.NotReadyReason(); !strings.Contains(why, "another node is alive under this node's name") {
		t.Errorf("/readyz would say %q; want the name taken", why)
	}
	if st := dup.cluster.Store.State(); st == "Leader" || dup.cluster.Store.HasState() {
		t.Errorf("the duplicate took part in Raft (state %s)", st)
	}
	servers, err := h.nodes[2].cluster.Store.Servers()
	if err != nil || len(servers) != 3 {
		t.Fatalf("Raft servers %v, %v; want the 3 real ones", servers, err)
	}
	for _, s := range servers {
		if s.ID == "n1" && s.Addr != n1Addr {
			t.Errorf("n1's seat moved to %s; want %s", s.Addr, n1Addr)
		}
	}
	waitUntil(t, 10*time.Second, "the real n1 ready", h.nodes[1].Ready)
	// The real n1 is told too (by the nodes that saw both), and stays in.
	waitUntil(t, 10*time.Second, "the real n1 to hear of the duplicate", func() bool {
		return h.nodes[1].cluster.Members.NameTaken() != ""
	})
	if !h.nodes[1].Ready() || h.nodes[1].cluster.NameConflict() {
		t.Error("the real n1 left the cluster on hearing of the duplicate")
	}
}

// The cluster's state is in every node's metrics: a leader known, the
// Raft state, the voters and the members by gossip state.
func TestClusterMetrics(t *testing.T) {
	h, _ := startedCluster(t)
	leader := h.leaderWhere("a leader", func(*Node) bool { return true })
	scrape := func(n *Node) string {
		t.Helper()
		resp, err := http.Get("http://" + n.AdminAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	m := scrape(leader)
	for _, want := range []string{
		"meridian_cluster_leader_known 1",
		`meridian_cluster_raft_state{state="leader"} 1`,
		`meridian_cluster_raft_state{state="follower"} 0`,
		"meridian_cluster_raft_voters 3",
		`meridian_cluster_members{state="alive"} 3`,
	} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("leader's metrics lack %q", want)
		}
	}
	h.stop(3)
	waitUntil(t, 10*time.Second, "the drained member shown as left in the metrics", func() bool {
		return strings.Contains(scrape(h.nodes[1]), `meridian_cluster_members{state="left"} 1`+"\n")
	})
}

// bootstrap_expect forms the first configuration only of voters the node
// reached over mutual TLS: one with another CA's certificate is left out
// (and the cluster forms once enough others are there).
func TestClusterBootstrapLeavesOutAnUnreachableVoter(t *testing.T) {
	be := backend(t, "ok")
	h := newClusterHarness(t, be.URL)
	defer h.stopAll()
	h.otherCA = filepath.Join(h.dir, "ca-other")
	if err := pki.CreateCA(h.otherCA); err != nil {
		t.Fatal(err)
	}
	h.otherCANodes = map[int]bool{3: true}
	for i := 1; i <= 3; i++ {
		h.start(i)
	}
	waitUntil(t, 10*time.Second, "n1 to find n3 unreachable", func() bool { return h.nodes[1].cluster.SeatsRefused() > 0 })
	if h.nodes[1].cluster.Store.HasState() {
		t.Fatal("n1 bootstrapped with an unreachable voter among the first three")
	}
	h.start(4)
	waitUntil(t, 20*time.Second, "a cluster of n1, n2 and n4", func() bool {
		servers, err := h.nodes[1].cluster.Store.Servers()
		if err != nil || len(servers) != 3 {
			return false
		}
		for _, s := range servers {
			if s.ID == "n3" {
				t.Fatalf("n3 seated: %v", servers)
			}
		}
		return true
	})
}

// A bootstrap_expect node that has not met enough voters says so, and
// names those it met, once per change (an outside check found two nodes
// of three waiting with nothing in their logs).
func TestClusterWaitForExpectedVotersIsLogged(t *testing.T) {
	be := backend(t, "ok")
	h := newClusterHarness(t, be.URL)
	h.logs = map[int]*testutil.SyncBuffer{}
	defer h.stopAll()
	h.start(1)
	h.start(2)
	const waiting = `"expect":3,"seen":["n1","n2"]`
	waitUntil(t, 20*time.Second, "n1 and n2 to say they wait for a third voter", func() bool {
		return strings.Contains(h.logs[1].String(), waiting) && strings.Contains(h.logs[2].String(), waiting)
	})
	h.start(3)
	waitUntil(t, 20*time.Second, "a cluster of three", func() bool {
		servers, err := h.nodes[1].cluster.Store.Servers()
		return err == nil && len(servers) == 3
	})
	if n := strings.Count(h.logs[1].String(), waiting); n != 1 {
		t.Errorf("n1 said it waited with n1 and n2 %d times; want once", n)
	}
}

// Nodes without Raft state do not bootstrap while one of their seeds takes
// connections and never answers (a node there, stalled since its start,
// may be the one with the cluster's state: an outside check forked a
// cluster so); once nothing listens there, they do.
func TestClusterBootstrapWaitsForASilentSeed(t *testing.T) {
	be := backend(t, "ok")
	h := newClusterHarness(t, be.URL)
	defer h.stopAll()
	silent, accepted, silentClose := testutil.StoppableSilentPeer(t)
	h.seeds = []string{silent}
	h.start(1)
	h.seeds = []string{h.seed, silent}
	h.start(2)
	h.start(3)
	<-accepted
	ready := func() bool {
		for _, n := range h.nodes {
			if len(n.cluster.Members.SilentSeeds()) == 0 || len(n.cluster.Members.Members()) < 3 {
				return false
			}
		}
		return true
	}
	waitUntil(t, 20*time.Second, "three members that all hold the silent seed", ready)
	// Three voters met: without the wait they bootstrap within a second.
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, n := range h.nodes {
			if n.cluster.Store.HasState() {
				t.Fatalf("%s bootstrapped beside a seed that takes connections and never answers", n.cfg.Name)
			}
		}
	}
	silentClose()
	waitUntil(t, 30*time.Second, "a cluster of three once the seed is gone", func() bool {
		servers, err := h.nodes[1].cluster.Store.Servers()
		return err == nil && len(servers) == 3
	})
}

// Writes through two nodes at once: each is answered with its own
// document's version and hash, never with a later write's (which the node
// may serve by the time it answers).
func TestClusterConcurrentWritesAnsweredWithTheirOwnVersion(t *testing.T) {
	h, be := startedCluster(t)
	var mu sync.Mutex
	acks := map[uint64]string{} // version -> hash acknowledged
	var wg sync.WaitGroup
	for w, n := range []*Node{h.nodes[2], h.nodes[3]} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				doc := docWithPrefix(be, fmt.Sprintf("/w%d-%d", w, i))
				want, err := config.Parse([]byte(doc))
				if err != nil {
					t.Error(err)
					return
				}
				s, err := n.Apply(context.Background(), []byte(doc), edge.ApplyOptions{})
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				if s.Hash != want.Hash() {
					t.Errorf("writer %d, write %d: answered version %d with hash %.12s; its document's is %.12s", w, i, s.Version, s.Hash, want.Hash())
				}
				mu.Lock()
				if h, dup := acks[s.Version]; dup {
					t.Errorf("version %d acknowledged twice (hashes %.12s and %.12s)", s.Version, h, s.Hash)
				}
				acks[s.Version] = s.Hash
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// A write still waiting (here for a leader, on a node left alone) when
// the drain closes the admin listener is answered, ErrUnavailable saying
// the node is shutting down (a 503), within the admin server's last
// second, not cut with its connection after it (an outside check's curl
// got nothing). Whether the write began before the drain's end or after,
// the answer is the same.
func TestClusterWriteWaitingAtTheDrainIsAnswered(t *testing.T) {
	h, url := startedCluster(t)
	h.stop(2)
	h.stop(3)
	n1 := h.nodes[1]
	got := make(chan error, 1)
	go func() {
		_, err := n1.Apply(context.Background(), []byte(docWithPrefix(url, "/late")), edge.ApplyOptions{})
		got <- err
	}()
	drained := make(chan struct{})
	go func() {
		h.stop(1)
		close(drained)
	}()
	select {
	case err := <-got:
		// Refused (never sent: no leader known), or, where this node
		// still took itself for the leader and its log had the entry,
		// an outcome unknown: either is an answer (a 503).
		unavailable := errors.Is(err, edge.ErrUnavailable) && strings.Contains(err.Error(), "shutting down")
		if !unavailable && !errors.Is(err, edge.ErrOutcomeUnknown) {
			t.Fatalf("the waiting write: %v; want ErrUnavailable saying the node is shutting down, or ErrOutcomeUnknown", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting write still waits 10 s after the drain began")
	}
	<-drained
}
