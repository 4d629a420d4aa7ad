package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/bench/hdr"
	"github.com/meridian-gw/meridian/cluster"
	"github.com/meridian-gw/meridian/cluster/gossip"
	"github.com/meridian-gw/meridian/cluster/pki"
	"github.com/meridian-gw/meridian/cluster/store"
)

// Options configures one benchmark run (one cluster size).
type Options struct {
	Nodes     int    // voters in the cluster (3, 5, ...)
	Writes    int    // measured sequential writes per path (leader, follower)
	Warmup    int    // unmeasured writes per path before the measured ones
	Failovers int    // leader crashes (each followed by a restart of the crashed node)
	Joins     int    // fresh members joining by gossip
	JoinVoter bool   // joiners are voters (default: non-voters, as extra PoPs would be)
	Timing    string // "lan" (library defaults) or "fast" (the tests' short timings)
	DocSize   int    // bytes of each written document
	// Wait bounds every single wait (leader, convergence, join...).
	Wait time.Duration
	// WorkDir is where the temporary directory is created ("" = os.TempDir).
	WorkDir  string
	Keep     bool      // keep the temporary directory (logs, data dirs)
	Progress io.Writer // progress lines (nil = discard)
}

func (o *Options) defaults() {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Timing == "" {
		o.Timing = "lan"
	}
	if o.DocSize <= 0 {
		o.DocSize = 2048
	}
	if o.Wait <= 0 {
		o.Wait = 60 * time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// Stat summarises a set of durations (milliseconds in JSON).
type Stat struct {
	Count   int       `json:"count"`
	P50     float64   `json:"p50_ms"`
	P99     float64   `json:"p99_ms"`
	Max     float64   `json:"max_ms"`
	Mean    float64   `json:"mean_ms"`
	Samples []float64 `json:"samples_ms,omitempty"` // kept for small sets (≤ 50)
}

type recorder struct {
	h   *hdr.Histogram
	raw []time.Duration
}

func newRecorder() *recorder { return &recorder{h: hdr.NewLatency(10 * time.Minute)} }

func (r *recorder) add(d time.Duration) {
	r.h.RecordDuration(d)
	r.raw = append(r.raw, d)
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

func (r *recorder) stat() Stat {
	s := Stat{Count: int(r.h.Count())}
	if s.Count == 0 {
		return s
	}
	s.P50, s.P99, s.Max, s.Mean = ms(r.h.ValueAtQuantile(0.5)), ms(r.h.ValueAtQuantile(0.99)), ms(r.h.Max()), r.h.Mean()/1e6
	if len(r.raw) <= 50 {
		for _, d := range r.raw {
			s.Samples = append(s.Samples, ms(int64(d)))
		}
	}
	return s
}

// WritePath is the latency of sequential writes through one kind of node.
type WritePath struct {
	Via string `json:"via"` // "leader" or "follower"
	// Ack: Apply call to Apply return (committed and applied on the calling node).
	Ack Stat `json:"ack"`
	// Everywhere: Apply call to the moment the last node's Subscribe
	// callback saw the new version.
	Everywhere Stat `json:"applied_everywhere"`
}

// Failover summarises the leader crashes.
type Failover struct {
	// LeaderKnown: crash to a new leader known to every survivor.
	LeaderKnown Stat `json:"new_leader_known_to_all"`
	// WriteAck: crash to the first acknowledged write (issued through a
	// survivor right after the crash, retried until it succeeds).
	WriteAck Stat `json:"first_write_acked"`
	// CloseTook: how long closing the leader took (included in the above).
	CloseTook Stat `json:"crash_close"`
	// Rejoin: restart of the crashed node to it having applied the latest
	// version (its own log replayed and the missed entries received).
	Rejoin Stat `json:"restart_caught_up"`
	// WriteRetries: failed attempts (no leader, unknown outcome) before the
	// first acknowledged write, summed over all crashes.
	WriteRetries int `json:"write_retries"`
}

// Join summarises fresh members joining through one seed.
type Join struct {
	Voter bool `json:"voter"`
	// GossipAll: Join call to every existing node listing the newcomer alive.
	GossipAll Stat `json:"gossip_alive_everywhere"`
	// RaftAdded: Join call to the leader's Raft configuration holding it
	// (cluster reconciliation: the leader adds alive gossip members).
	RaftAdded Stat `json:"raft_added_by_leader"`
	// Applied: Join call to the newcomer having applied the current version.
	Applied Stat `json:"newcomer_applied_current"`
}

// Result is one cluster size's measurements.
type Result struct {
	Nodes  int    `json:"nodes"`
	Timing string `json:"timing"`
	// FormationMs: first node started to a leader known to every node
	// (bootstrap_expect through gossip, then an election).
	FormationMs float64     `json:"formation_ms"`
	Writes      []WritePath `json:"writes"`
	Failover    *Failover   `json:"failover,omitempty"`
	Join        *Join       `json:"join,omitempty"`
	DocSize     int         `json:"doc_size"`
	Notes       []string    `json:"notes,omitempty"`
}

// bnode is one cluster member under test.
type bnode struct {
	name       string
	ip         string
	dir        string
	tls        *tls.Config
	logFile    string
	raftAddr   string // fixed after the first start, reused on restart
	gossipAddr string
	voter      bool
	c          *cluster.Cluster
	lf         *os.File

	mu     sync.Mutex
	seen   map[uint64]time.Time // version -> when this node's subscriber saw it
	top    uint64               // highest version seen
	notify chan struct{}        // closed and replaced on every document
}

func (n *bnode) onDoc(d store.Document) uint64 {
	now := time.Now()
	n.mu.Lock()
	if _, ok := n.seen[d.Version]; !ok {
		n.seen[d.Version] = now
	}
	if d.Version > n.top {
		n.top = d.Version
	}
	close(n.notify)
	n.notify = make(chan struct{})
	n.mu.Unlock()
	return d.Version
}

// seenAt reports when version v (or a later one) was seen, or a channel
// that is closed on the next document.
func (n *bnode) seenAt(v uint64) (time.Time, bool, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if t, ok := n.seen[v]; ok {
		return t, true, nil
	}
	if n.top >= v { // jumped over v (snapshot restore): count it now
		return time.Now(), true, nil
	}
	return time.Time{}, false, n.notify
}

func (n *bnode) forget(below uint64) {
	n.mu.Lock()
	for v := range n.seen {
		if v < below {
			delete(n.seen, v)
		}
	}
	n.mu.Unlock()
}

func (n *bnode) topVersion() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.top
}

type bench struct {
	o       Options
	ctx     context.Context
	dir     string
	caDir   string
	key     []byte
	nodes   []*bnode // the voters
	doc     []byte
	latest  uint64 // highest version acknowledged
	joinSeq int
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.o.Progress, "[%d nodes] "+format+"\n", append([]any{b.o.Nodes}, args...)...)
}

// Run forms a cluster of o.Nodes voters on loopback (127.0.0.1..N, mutual
// TLS, encrypted gossip), measures, and tears everything down.
func Run(ctx context.Context, o Options) (res *Result, err error) {
	o.defaults()
	if o.Nodes < 1 || o.Nodes > 200 {
		return nil, fmt.Errorf("nodes must be 1..200, got %d", o.Nodes)
	}
	if o.Timing != "lan" && o.Timing != "fast" {
		return nil, fmt.Errorf("timing must be lan or fast, got %q", o.Timing)
	}
	if o.Failovers > 0 && o.Nodes < 3 {
		return nil, errors.New("failover needs at least 3 nodes")
	}
	dir, err := os.MkdirTemp(o.WorkDir, "clusterbench-")
	if err != nil {
		return nil, err
	}
	b := &bench{o: o, ctx: ctx, dir: dir, caDir: filepath.Join(dir, "ca")}
	defer func() {
		b.closeAll()
		if err != nil {
			b.dumpLogs()
		}
		if o.Keep {
			fmt.Fprintf(o.Progress, "[%d nodes] work dir kept: %s\n", o.Nodes, dir)
		} else if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			err = rerr
		}
	}()

	if err := pki.CreateCA(b.caDir); err != nil {
		return nil, err
	}
	b.key = make([]byte, 32)
	if _, err := rand.Read(b.key); err != nil {
		return nil, err
	}
	b.doc = make([]byte, o.DocSize)
	for i := range b.doc {
		b.doc[i] = 'a' + byte(i%26)
	}

	res = &Result{Nodes: o.Nodes, Timing: o.Timing, DocSize: o.DocSize}
	if err := b.form(res); err != nil {
		return nil, fmt.Errorf("forming the cluster: %w", err)
	}
	for _, via := range []string{"leader", "follower"} {
		if via == "follower" && o.Nodes < 2 {
			continue
		}
		wp, err := b.writes(via)
		if err != nil {
			return nil, fmt.Errorf("writes via %s: %w", via, err)
		}
		res.Writes = append(res.Writes, wp)
	}
	if o.Failovers > 0 {
		f, err := b.failovers()
		if err != nil {
			return nil, fmt.Errorf("failover: %w", err)
		}
		res.Failover = f
	}
	if o.Joins > 0 {
		j, notes, err := b.joins()
		res.Notes = append(res.Notes, notes...)
		if err != nil {
			return nil, fmt.Errorf("join: %w", err)
		}
		res.Join = j
	}
	return res, nil
}

func (b *bench) newNode(name, ip string, voter bool) (*bnode, error) {
	certDir := filepath.Join(b.dir, "certs")
	if err := pki.IssueNodeCert(b.caDir, name, []net.IP{net.ParseIP(ip)}, nil, certDir); err != nil {
		return nil, err
	}
	tc, err := pki.LoadMutualTLS(filepath.Join(b.caDir, pki.CACertFile), filepath.Join(certDir, name+".crt"), filepath.Join(certDir, name+".key"))
	if err != nil {
		return nil, err
	}
	return &bnode{
		name: name, ip: ip, dir: filepath.Join(b.dir, "data", name), tls: tc, voter: voter,
		logFile: filepath.Join(b.dir, "logs", name+".log"),
	}, nil
}

// start starts (or restarts) n; join lists gossip seeds joined in the
// background by cluster.Start (nil: the caller joins).
func (b *bench) start(n *bnode, join []string, expect int) error {
	if err := os.MkdirAll(filepath.Dir(n.logFile), 0o700); err != nil {
		return err
	}
	lf, err := os.OpenFile(n.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.seen, n.top, n.notify = map[uint64]time.Time{}, 0, make(chan struct{})
	n.mu.Unlock()
	bind, gbind := n.raftAddr, n.gossipAddr
	if bind == "" {
		bind, gbind = n.ip+":0", n.ip+":0"
	}
	cfg := cluster.Config{
		Name: n.name, Region: "bench", DataDir: n.dir,
		Bind: bind, GossipBind: gbind, Join: join, BootstrapExpect: expect, Voter: n.voter,
		TLS: n.tls, GossipKeys: [][]byte{b.key},
		Logger: slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", n.name),
		StoreTuning: func(s *store.Config) {
			if b.o.Timing == "fast" {
				s.HeartbeatTimeout = 150 * time.Millisecond
				s.ElectionTimeout = 150 * time.Millisecond
				s.LeaderLeaseTimeout = 100 * time.Millisecond
				s.CommitTimeout = 20 * time.Millisecond
			}
		},
	}
	if b.o.Timing == "fast" {
		cfg.GossipTuning = gossip.Tuning{
			ProbeInterval: 250 * time.Millisecond, ProbeTimeout: 150 * time.Millisecond,
			GossipInterval: 30 * time.Millisecond, PushPullInterval: 2 * time.Second,
			TCPTimeout: 3 * time.Second, SuspicionMult: 4, GossipToTheDeadTime: 2 * time.Second,
			DeadRetention: time.Minute,
		}
	}
	// A restart rebinds the same ports; the old sockets may take a moment.
	var c *cluster.Cluster
	for attempt := 0; ; attempt++ {
		c, err = cluster.Start(cfg, n.onDoc)
		if err == nil || attempt >= 20 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		lf.Close()
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	n.c, n.lf = c, lf
	n.raftAddr, n.gossipAddr = c.Store.Addr(), c.Members.Addr()
	return nil
}

// crash closes n without leaving (others see a failure).
func (n *bnode) crash() error {
	if n.c == nil {
		return nil
	}
	err := n.c.Close()
	n.c = nil
	n.lf.Close()
	return err
}

func (b *bench) closeAll() {
	for _, n := range b.nodes {
		n.crash()
	}
}

func (b *bench) dumpLogs() {
	for _, n := range b.nodes {
		data, err := os.ReadFile(n.logFile)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 25 {
			lines = lines[len(lines)-25:]
		}
		fmt.Fprintf(b.o.Progress, "---- last log lines of %s ----\n%s\n", n.name, strings.Join(lines, "\n"))
	}
}

func (b *bench) live() []*bnode {
	var out []*bnode
	for _, n := range b.nodes {
		if n.c != nil {
			out = append(out, n)
		}
	}
	return out
}

// poll calls cond every 2ms until it holds, and returns the time that took.
func (b *bench) poll(what string, cond func() bool) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(b.o.Wait)
	for {
		if cond() {
			return time.Since(start), nil
		}
		if err := b.ctx.Err(); err != nil {
			return 0, fmt.Errorf("waiting for %s: %w", what, err)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("timed out after %v waiting for %s", b.o.Wait, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// leaderOf returns the node that leads and that every given node names as
// leader, or nil.
func leaderOf(nodes []*bnode) *bnode {
	var ld *bnode
	for _, n := range nodes {
		if n.c.Store.State() == "Leader" {
			if ld != nil {
				return nil
			}
			ld = n
		}
	}
	if ld == nil {
		return nil
	}
	for _, n := range nodes {
		if id, _ := n.c.Store.Leader(); id != ld.name {
			return nil
		}
	}
	return ld
}

func (b *bench) leader() (*bnode, error) {
	var ld *bnode
	_, err := b.poll("a leader known to every live node", func() bool {
		ld = leaderOf(b.live())
		return ld != nil
	})
	return ld, err
}

// aliveEverywhere: every node in on lists every name in names alive.
func aliveEverywhere(on []*bnode, names []string) bool {
	for _, n := range on {
		alive := map[string]bool{}
		for _, m := range n.c.Members.Members() {
			if m.State == gossip.StateAlive {
				alive[m.Name] = true
			}
		}
		for _, name := range names {
			if !alive[name] {
				return false
			}
		}
	}
	return true
}

func names(nodes []*bnode) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.name)
	}
	return out
}

// waitVersion waits until every node in on has seen version v and returns
// the latest time one of them saw it.
func (b *bench) waitVersion(on []*bnode, v uint64) (time.Time, error) {
	deadline := time.NewTimer(b.o.Wait)
	defer deadline.Stop()
	var last time.Time
	for _, n := range on {
		for {
			t, ok, ch := n.seenAt(v)
			if ok {
				if t.After(last) {
					last = t
				}
				break
			}
			select {
			case <-ch:
			case <-deadline.C:
				return time.Time{}, fmt.Errorf("timed out after %v waiting for %s to apply version %d (it has %d)", b.o.Wait, n.name, v, n.topVersion())
			case <-b.ctx.Done():
				return time.Time{}, b.ctx.Err()
			}
		}
	}
	return last, nil
}

func (b *bench) form(res *Result) error {
	for i := 0; i < b.o.Nodes; i++ {
		n, err := b.newNode(fmt.Sprintf("n%d", i+1), fmt.Sprintf("127.0.0.%d", i+1), true)
		if err != nil {
			return err
		}
		b.nodes = append(b.nodes, n)
	}
	t0 := time.Now()
	for i, n := range b.nodes {
		var join []string
		if i > 0 {
			join = []string{b.nodes[0].gossipAddr}
		}
		if err := b.start(n, join, b.o.Nodes); err != nil {
			return err
		}
	}
	if _, err := b.leader(); err != nil {
		return err
	}
	res.FormationMs = ms(int64(time.Since(t0)))
	if _, err := b.poll("every node listing every node alive", func() bool { return aliveEverywhere(b.nodes, names(b.nodes)) }); err != nil {
		return err
	}
	b.logf("formed in %.0fms (bootstrap_expect=%d, timing %s)", res.FormationMs, b.o.Nodes, b.o.Timing)
	return nil
}

// write applies one document through n and waits until every live node has
// seen it: ack and everywhere are measured from the Apply call.
func (b *bench) write(n *bnode) (ack, everywhere time.Duration, err error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.o.Wait)
	defer cancel()
	t0 := time.Now()
	a, err := n.c.Store.Apply(ctx, b.doc, 0)
	ack = time.Since(t0)
	if err != nil {
		return 0, 0, err
	}
	b.latest = a.Version
	last, err := b.waitVersion(b.live(), a.Version)
	if err != nil {
		return 0, 0, err
	}
	for _, m := range b.live() {
		m.forget(a.Version)
	}
	return ack, last.Sub(t0), nil
}

func (b *bench) writes(via string) (WritePath, error) {
	ld, err := b.leader()
	if err != nil {
		return WritePath{}, err
	}
	target := ld
	if via == "follower" {
		for _, n := range b.live() {
			if n != ld {
				target = n
				break
			}
		}
	}
	ackR, allR := newRecorder(), newRecorder()
	for i := 0; i < b.o.Warmup+b.o.Writes; i++ {
		ack, all, err := b.write(target)
		if err != nil {
			return WritePath{}, fmt.Errorf("write %d through %s: %w", i+1, target.name, err)
		}
		if i >= b.o.Warmup {
			ackR.add(ack)
			allR.add(all)
		}
	}
	wp := WritePath{Via: via, Ack: ackR.stat(), Everywhere: allR.stat()}
	b.logf("%d writes via %s (%s): ack p50 %.2fms p99 %.2fms; applied everywhere p50 %.2fms p99 %.2fms max %.2fms",
		b.o.Writes, via, target.name, wp.Ack.P50, wp.Ack.P99, wp.Everywhere.P50, wp.Everywhere.P99, wp.Everywhere.Max)
	return wp, nil
}

func (b *bench) failovers() (*Failover, error) {
	known, acked, closeR, rejoin := newRecorder(), newRecorder(), newRecorder(), newRecorder()
	f := &Failover{}
	for round := 1; round <= b.o.Failovers; round++ {
		ld, err := b.leader()
		if err != nil {
			return nil, err
		}
		var survivors []*bnode
		for _, n := range b.nodes {
			if n != ld {
				survivors = append(survivors, n)
			}
		}
		writer := survivors[0]

		tCrash := time.Now()
		if err := ld.crash(); err != nil {
			return nil, fmt.Errorf("closing leader %s: %w", ld.name, err)
		}
		closeR.add(time.Since(tCrash))

		type ackResult struct {
			d       time.Duration
			retries int
			err     error
		}
		ackCh := make(chan ackResult, 1)
		go func() {
			ctx, cancel := context.WithTimeout(b.ctx, b.o.Wait)
			defer cancel()
			retries := 0
			for {
				a, err := writer.c.Store.Apply(ctx, b.doc, 0)
				if err == nil {
					b.latest = max(b.latest, a.Version) // read by the main goroutine only after ackCh
					ackCh <- ackResult{d: time.Since(tCrash), retries: retries}
					return
				}
				if ctx.Err() != nil {
					ackCh <- ackResult{err: err}
					return
				}
				retries++ // unknown outcome (old leader went away mid-request) or similar: retry
				time.Sleep(5 * time.Millisecond)
			}
		}()
		var newLd *bnode
		for {
			newLd = leaderOf(survivors)
			if newLd != nil {
				break
			}
			if time.Since(tCrash) > b.o.Wait || b.ctx.Err() != nil {
				<-ackCh
				return nil, fmt.Errorf("no new leader known to all survivors %v after the crash of %s", b.o.Wait, ld.name)
			}
			time.Sleep(time.Millisecond)
		}
		knownIn := time.Since(tCrash)
		ar := <-ackCh
		if ar.err != nil {
			return nil, fmt.Errorf("first write after the crash of %s: %w", ld.name, ar.err)
		}
		known.add(knownIn)
		acked.add(ar.d)
		f.WriteRetries += ar.retries

		// Restart the crashed node and wait for a healthy cluster again.
		tR := time.Now()
		if err := b.start(ld, []string{survivors[0].gossipAddr, survivors[1].gossipAddr}, b.o.Nodes); err != nil {
			return nil, err
		}
		if _, err := b.waitVersion([]*bnode{ld}, b.latest); err != nil {
			return nil, fmt.Errorf("restarted %s catching up: %w", ld.name, err)
		}
		rejoin.add(time.Since(tR))
		if _, err := b.leader(); err != nil {
			return nil, err
		}
		if _, err := b.poll("every node listing every node alive after the restart", func() bool { return aliveEverywhere(b.nodes, names(b.nodes)) }); err != nil {
			return nil, err
		}
		// One write through the restarted node: its Raft peers are back in step.
		if _, _, err := b.write(ld); err != nil {
			return nil, fmt.Errorf("write through restarted %s: %w", ld.name, err)
		}
		b.logf("failover %d/%d: crashed leader %s; new leader %s known to all survivors after %.0fms, first write acked after %.0fms (%d retries); restarted node caught up in %.0fms",
			round, b.o.Failovers, ld.name, newLd.name, ms(int64(knownIn)), ms(int64(ar.d)), ar.retries, ms(int64(rejoin.raw[len(rejoin.raw)-1])))
	}
	f.LeaderKnown, f.WriteAck, f.CloseTook, f.Rejoin = known.stat(), acked.stat(), closeR.stat(), rejoin.stat()
	return f, nil
}

func (b *bench) joins() (*Join, []string, error) {
	gossipR, raftR, appliedR := newRecorder(), newRecorder(), newRecorder()
	var notes []string
	for round := 1; round <= b.o.Joins; round++ {
		b.joinSeq++
		ip := fmt.Sprintf("127.0.0.%d", b.o.Nodes+b.joinSeq)
		n, err := b.newNode(fmt.Sprintf("j%d", b.joinSeq), ip, b.o.JoinVoter)
		if err != nil {
			return nil, notes, err
		}
		// Started without seeds: the measured Join call below is the only one.
		if err := b.start(n, nil, 0); err != nil {
			return nil, notes, err
		}
		seed := b.nodes[(round-1)%len(b.nodes)]
		want := b.latest
		ld, err := b.leader()
		if err != nil {
			n.crash()
			return nil, notes, err
		}

		t0 := time.Now()
		if _, err := n.c.Members.Join([]string{seed.gossipAddr}); err != nil {
			n.crash()
			return nil, notes, fmt.Errorf("%s joining through %s: %w", n.name, seed.name, err)
		}
		var gAt, rAt, aAt time.Duration
		_, err = b.poll(n.name+" alive everywhere, in Raft, and caught up", func() bool {
			el := time.Since(t0)
			if gAt == 0 && aliveEverywhere(b.nodes, []string{n.name}) {
				gAt = el
			}
			if rAt == 0 {
				if servers, err := ld.c.Store.Servers(); err == nil && slices.ContainsFunc(servers, func(s store.Server) bool { return s.ID == n.name }) {
					rAt = el
				}
			}
			if aAt == 0 && n.topVersion() >= want {
				aAt = el
			}
			return gAt > 0 && rAt > 0 && aAt > 0
		})
		if err != nil {
			n.crash()
			return nil, notes, err
		}
		gossipR.add(gAt)
		raftR.add(rAt)
		appliedR.add(aAt)
		b.logf("join %d/%d: %s via %s: alive everywhere %.0fms, in leader's Raft config %.0fms, applied v%d %.0fms",
			round, b.o.Joins, n.name, seed.name, ms(int64(gAt)), ms(int64(rAt)), want, ms(int64(aAt)))

		// Leave gracefully; the leader's reconciliation removes it from Raft.
		lctx, cancel := context.WithTimeout(b.ctx, b.o.Wait)
		lerr := n.c.Leave(lctx)
		cancel()
		n.c = nil
		n.lf.Close()
		if lerr != nil {
			notes = append(notes, fmt.Sprintf("%s: leave: %v", n.name, lerr))
		}
		if _, err := b.poll(n.name+" removed from Raft", func() bool {
			ld := leaderOf(b.live())
			if ld == nil {
				return false
			}
			servers, err := ld.c.Store.Servers()
			return err == nil && !slices.ContainsFunc(servers, func(s store.Server) bool { return s.ID == n.name })
		}); err != nil {
			return nil, notes, err
		}
	}
	return &Join{Voter: b.o.JoinVoter, GossipAll: gossipR.stat(), RaftAdded: raftR.stat(), Applied: appliedR.stat()}, notes, nil
}
