package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meridian-gw/meridian/cluster/pki"
	"github.com/meridian-gw/meridian/internal/testutil"
)

// Three nodes form; a write through a follower returns with that follower
// already applied; every node converges; ifVersion conflicts are refused and
// exactly one of two racing conditional writes wins.
func TestThreeNodesApplyThroughFollower(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.start()
	hist := make([]*history, 3)
	for i, nd := range c.nodes {
		hist[i] = &history{}
		nd.s.Subscribe(hist[i].add)
	}
	// Bootstrap again: no-op.
	if err := c.nodes[0].s.BootstrapCluster([]Server{{ID: "x", Addr: "127.0.0.9:1", Voter: true}}); err != nil {
		t.Fatalf("second bootstrap: %v", err)
	}
	start := time.Now()
	ld := c.leader(5 * time.Second)
	t.Logf("leader %s elected in %v", ld.id, time.Since(start))
	f := c.follower(ld)

	doc1 := []byte(`{"routes":[1]}`)
	t0 := time.Now()
	a, err := f.s.Apply(ctxT(t, 5*time.Second), doc1, 0)
	if err != nil {
		t.Fatal(err)
	}
	lat := time.Since(t0)
	if a.Version != 1 || a.Index == 0 || a.Hash == "" {
		t.Fatalf("applied %+v", a)
	}
	// Read-your-writes on the follower that took the write.
	if cur := f.s.Current(); cur.Version != 1 || !bytes.Equal(cur.Raw, doc1) || cur.Hash != a.Hash {
		t.Fatalf("follower current after Apply: %+v", cur)
	}
	conv := c.converge(5*time.Second, 1)
	t.Logf("apply via follower %v; applied everywhere %v later", lat, conv)

	// Conditional write on the current version succeeds through the leader.
	if a, err = ld.s.Apply(ctxT(t, 5*time.Second), []byte(`{"routes":[2]}`), 1); err != nil || a.Version != 2 {
		t.Fatalf("ifVersion=1: %+v %v", a, err)
	}
	// A stale conditional write through the other follower is refused, and
	// that follower already shows the version that won.
	other := c.live()[0]
	for _, nd := range c.live() {
		if nd != ld && nd != f {
			other = nd
		}
	}
	_, err = other.s.Apply(ctxT(t, 5*time.Second), []byte(`{"routes":["stale"]}`), 1)
	if !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("stale ifVersion: %v, want ErrVersionConflict", err)
	}
	if v := other.s.Current().Version; v != 2 {
		t.Fatalf("after conflict, node shows version %d, want 2", v)
	}

	// Two conditional writers race on version 2: exactly one wins.
	if wins, conflicts := raceApply(t, []*tnode{f, other}, "racer", 2); wins != 1 || conflicts != 1 {
		t.Fatalf("race: %d wins, %d conflicts", wins, conflicts)
	}
	c.converge(5*time.Second, 3)
	// Every node saw the same documents in the same order.
	want := hist[0]
	waitFor(t, 5*time.Second, "histories of length 3", func() bool {
		for _, h := range hist {
			if len(h.snapshot()) != 3 {
				return false
			}
		}
		return true
	})
	for i, h := range hist {
		for j, d := range h.snapshot() {
			w := want.snapshot()[j]
			if d.Version != uint64(j+1) || d.Hash != w.Hash || !bytes.Equal(d.Raw, w.Raw) {
				t.Fatalf("node %d doc %d: %+v, want %+v", i, j, d, w)
			}
		}
	}
	srv, err := f.s.Servers()
	if err != nil || len(srv) != 3 {
		t.Fatalf("servers %v %v", srv, err)
	}
}

// Writes that reach the leader while it hands leadership over (as a
// draining leader does) go to the next leader: raft refuses them at once
// with ErrLeadershipTransferInProgress, which an outside check saw answered
// as a 503.
func TestWritesDuringLeadershipTransfer(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.start()
	ld := c.leader(5 * time.Second)
	if _, err := ld.s.Apply(ctxT(t, 5*time.Second), []byte(`{"routes":[0]}`), 0); err != nil {
		t.Fatal(err)
	}
	transferred := make(chan struct{})
	go func() {
		defer close(transferred)
		ld.s.HandOverLeadership()
	}()
	var failed []error
	for i := 1; i <= 20; i++ {
		if _, err := ld.s.Apply(ctxT(t, 10*time.Second), []byte(fmt.Sprintf(`{"routes":[%d]}`, i)), 0); err != nil {
			failed = append(failed, err)
		}
	}
	<-transferred
	if len(failed) > 0 {
		t.Fatalf("%d of 20 writes during the handover failed, the first: %v", len(failed), failed[0])
	}
	if id, _ := ld.s.Leader(); id == ld.id {
		t.Log("the leader kept its role (the transfer ended before the writes)")
	}
	c.converge(10*time.Second, 21)
}

type ack struct {
	version uint64
	raw     string
	started time.Time
	at      time.Time
}

// The leader is killed while writers run through every node: a new leader is
// elected within a bound, writes continue, and every acknowledged write is on
// every live node at its version, in order.
func TestLeaderFailoverNoLostWrites(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.start()
	hist := map[string]*history{}
	for _, nd := range c.nodes {
		h := &history{}
		hist[nd.id] = h
		nd.s.Subscribe(h.add)
	}
	old := c.leader(5 * time.Second)

	var mu sync.Mutex
	var acks []ack
	var failed atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w, nd := range c.nodes {
		s := nd.s
		for k := 0; k < 2; k++ { // two writers per node
			wg.Add(1)
			go func() {
				defer wg.Done()
				for seq := 0; ; seq++ {
					select {
					case <-stop:
						return
					default:
					}
					raw := fmt.Sprintf("w%d.%d-%d", w, k, seq)
					ctx, cancel := context2s()
					t0 := time.Now()
					a, err := s.Apply(ctx, []byte(raw), 0)
					cancel()
					if errors.Is(err, ErrClosed) {
						return
					}
					if err != nil {
						failed.Add(1)
						continue
					}
					mu.Lock()
					acks = append(acks, ack{a.Version, raw, t0, time.Now()})
					mu.Unlock()
				}
			}()
		}
	}
	nacks := func() int { mu.Lock(); defer mu.Unlock(); return len(acks) }
	waitFor(t, 10*time.Second, "30 acknowledged writes", func() bool { return nacks() >= 30 })

	killAt := time.Now()
	before := nacks()
	c.stop(old)
	ld := c.leader(5 * time.Second)
	elect := time.Since(killAt)
	if ld == old {
		t.Fatal("old leader still leader")
	}
	waitFor(t, 10*time.Second, "30 more acknowledged writes after the kill", func() bool { return nacks() >= before+30 })
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	var firstAfter time.Duration
	for _, a := range acks {
		if a.started.After(killAt) {
			if d := a.at.Sub(killAt); firstAfter == 0 || d < firstAfter {
				firstAfter = d
			}
		}
	}
	t.Logf("leader %s killed; new leader %s in %v; first write started after the kill acknowledged %v after it; %d acks, %d failed attempts (expected around the kill)",
		old.id, ld.id, elect, firstAfter, len(acks), failed.Load())
	var maxV uint64
	byVersion := map[uint64]string{}
	for _, a := range acks {
		if prev, dup := byVersion[a.version]; dup {
			t.Fatalf("version %d acknowledged twice (%q and %q)", a.version, prev, a.raw)
		}
		byVersion[a.version] = a.raw
		maxV = max(maxV, a.version)
	}
	c.converge(10*time.Second, maxV)
	for _, nd := range c.live() {
		h := hist[nd.id].snapshot()
		for i, d := range h {
			if d.Version != uint64(i+1) {
				t.Fatalf("%s: history[%d] has version %d: gap or reorder", nd.id, i, d.Version)
			}
		}
		for v, raw := range byVersion {
			if v > uint64(len(h)) || string(h[v-1].Raw) != raw {
				t.Fatalf("%s: acknowledged write %q at version %d missing or different", nd.id, raw, v)
			}
		}
	}
}

// A stopped node restarts from its data dir: its first document (delivered
// in Subscribe, before it has heard from any leader) is never older than the
// one it had, and it catches up, here through a snapshot because the leader
// compacted its log in the meantime.
func TestRestartCatchesUpNeverOlder(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.SnapshotThreshold = 4
		cfg.SnapshotInterval = 50 * time.Millisecond
		cfg.TrailingLogs = 2
	})
	pad := strings.Repeat("x", 1500)
	doc := func(i int) []byte { return fmt.Appendf(nil, "doc-%d %s", i, pad) }
	c.start()
	ld := c.leader(5 * time.Second)
	f := c.follower(ld)
	for i := 1; i <= 5; i++ {
		if _, err := f.s.Apply(ctxT(t, 5*time.Second), doc(i), 0); err != nil {
			t.Fatal(err)
		}
	}
	c.converge(5*time.Second, 5)
	had := f.s.Current()
	lastLog, _ := f.s.logs.LastIndex()
	c.stop(f)
	for i := 6; i <= 15; i++ {
		if _, err := ld.s.Apply(ctxT(t, 5*time.Second), doc(i), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the leader has compacted past the stopped node's log.
	waitFor(t, 5*time.Second, "leader log compacted beyond the stopped node's log", func() bool {
		var l raft.Log
		return ld.s.logs.GetLog(lastLog+1, &l) != nil
	})

	s := c.open(f)
	var mu sync.Mutex
	var seen []uint64
	s.Subscribe(func(d Document) {
		mu.Lock()
		seen = append(seen, d.Version)
		mu.Unlock()
	})
	mu.Lock()
	if len(seen) == 0 || seen[0] < had.Version {
		t.Fatalf("restarted node: first document %v, had version %d", seen, had.Version)
	}
	mu.Unlock()
	if cur := s.Current(); cur.Version < had.Version || !bytes.Equal(cur.Raw, doc(int(cur.Version))) {
		t.Fatalf("restarted node serves %d %q, had %d", cur.Version, cur.Raw, had.Version)
	}
	// CatchUp returns once the node has what was committed before it.
	if err := s.CatchUp(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("CatchUp: %v", err)
	}
	if cur := s.Current(); cur.Version != 15 {
		t.Fatalf("after CatchUp the restarted node serves version %d; want 15", cur.Version)
	}
	d := c.converge(10*time.Second, 15)
	t.Logf("restarted node caught up from version %d to 15 in %v", had.Version, d)
	mu.Lock()
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("restarted node went back: %v", seen)
		}
	}
	mu.Unlock()
	if !bytes.Equal(s.Current().Raw, doc(15)) {
		t.Fatalf("restarted node raw %q", s.Current().Raw)
	}
	// It caught up through a snapshot (the FSM restore precedes raft's log line).
	waitFor(t, 5*time.Second, "restarted node logs an installed snapshot", func() bool {
		return strings.Contains(f.logs.String(), "Installed remote snapshot")
	})
}

// Five nodes: grown one by one (membership changes forwarded from followers),
// four voters and a non-voter; a voter is removed and another leaves
// gracefully; the cluster keeps accepting writes and the non-voter keeps
// the full document.
func TestFiveNodesMembership(t *testing.T) {
	c := newCluster(t, 5, nil)
	for _, nd := range c.nodes {
		c.open(nd)
	}
	n := c.nodes
	if err := n[0].s.BootstrapCluster([]Server{{ID: n[0].id, Addr: n[0].addr, Voter: true}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "n0 leader", func() bool { return n[0].s.State() == "Leader" })
	if err := n[0].s.AddVoter(context.Background(), n[1].id, n[1].addr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "n1 knows leader", func() bool { id, _ := n[1].s.Leader(); return id == "n0" })
	// Membership changes through a follower are forwarded.
	for _, nd := range n[2:4] {
		if err := n[1].s.AddVoter(context.Background(), nd.id, nd.addr); err != nil {
			t.Fatal(err)
		}
	}
	if err := n[1].s.AddNonvoter(context.Background(), n[4].id, n[4].addr); err != nil {
		t.Fatal(err)
	}
	srv, _ := n[0].s.Servers()
	voters := 0
	for _, sv := range srv {
		if sv.Voter {
			voters++
		}
	}
	if len(srv) != 5 || voters != 4 {
		t.Fatalf("servers: %+v", srv)
	}
	if _, err := n[4].s.Apply(ctxT(t, 5*time.Second), []byte("five"), 0); err != nil {
		t.Fatal(err)
	}
	c.converge(5*time.Second, 1)

	// Remove a voter (through the non-voter), then stop it.
	ld := c.leader(5 * time.Second)
	var victim *tnode
	for _, nd := range n[:4] {
		if nd != ld {
			victim = nd
			break
		}
	}
	if err := n[4].s.RemoveServer(context.Background(), victim.id); err != nil {
		t.Fatal(err)
	}
	c.stop(victim)
	if _, err := n[4].s.Apply(ctxT(t, 5*time.Second), []byte("four"), 0); err != nil {
		t.Fatal(err)
	}
	c.converge(5*time.Second, 2)

	// The leader leaves gracefully: leadership moves, it is removed, writes go on.
	t0 := time.Now()
	if err := ld.s.Leave(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("leave: %v", err)
	}
	ld.s = nil
	nl := c.leader(5 * time.Second)
	t.Logf("leader %s left; %s leads after %v", ld.id, nl.id, time.Since(t0))
	if _, err := n[4].s.Apply(ctxT(t, 5*time.Second), []byte("three"), 0); err != nil {
		t.Fatal(err)
	}
	c.converge(5*time.Second, 3)
	srv, _ = nl.s.Servers()
	if len(srv) != 3 {
		t.Fatalf("after remove and leave: %+v", srv)
	}
	for _, sv := range srv {
		if sv.ID == victim.id || sv.ID == ld.id {
			t.Fatalf("%s still in configuration: %+v", sv.ID, srv)
		}
	}
}

// With two of three nodes gone the survivor refuses writes with ErrNoLeader
// within the caller's deadline and keeps serving its last document. Both the
// case where the survivor was a follower and where it was the leader.
func TestMinorityRefusesWrites(t *testing.T) {
	for _, survivorWasLeader := range []bool{false, true} {
		t.Run(fmt.Sprintf("survivorWasLeader=%v", survivorWasLeader), func(t *testing.T) {
			c := newCluster(t, 3, nil)
			c.start()
			ld := c.leader(5 * time.Second)
			if _, err := ld.s.Apply(ctxT(t, 5*time.Second), []byte("last-good"), 0); err != nil {
				t.Fatal(err)
			}
			c.converge(5*time.Second, 1)
			survivor := c.follower(ld)
			if survivorWasLeader {
				survivor = ld
			}
			for _, nd := range c.live() {
				if nd != survivor {
					c.stop(nd)
				}
			}
			const deadline = 1500 * time.Millisecond
			t0 := time.Now()
			_, err := survivor.s.Apply(ctxT(t, deadline), []byte("must-not-commit"), 0)
			took := time.Since(t0)
			if !errors.Is(err, ErrNoLeader) {
				t.Fatalf("minority Apply: %v, want ErrNoLeader", err)
			}
			if took > deadline+500*time.Millisecond {
				t.Fatalf("minority Apply took %v, deadline %v", took, deadline)
			}
			t.Logf("minority Apply refused after %v: %v", took, err)
			if cur := survivor.s.Current(); cur.Version != 1 || string(cur.Raw) != "last-good" {
				t.Fatalf("survivor serves %+v", cur)
			}
			if st := survivor.s.State(); st == "Leader" {
				t.Fatalf("survivor still leader")
			}
			if err := survivor.s.CatchUp(ctxT(t, deadline)); !errors.Is(err, ErrNoLeader) {
				t.Fatalf("minority CatchUp: %v, want ErrNoLeader", err)
			}
		})
	}
}

// Current never reports a version before the node's subscribers have been
// given it: a reader that sees version v can rely on every subscriber (the
// gateway's snapshot swap, the gossip metadata) having seen v too. A
// subscriber held inside its callback keeps Current at the old version.
func TestCurrentFollowsDelivery(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.start()
	nd := c.leader(5 * time.Second)
	if _, err := nd.s.Apply(ctxT(t, 5*time.Second), []byte("v1"), 0); err != nil {
		t.Fatal(err)
	}
	entered := make(chan uint64, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll) // runs before the cluster's cleanup closes the store
	nd.s.Subscribe(func(d Document) {
		if d.Version == 2 {
			entered <- d.Version
			<-release
		}
	})
	done := make(chan error, 1)
	go func() {
		_, err := nd.s.Apply(ctxT(t, 5*time.Second), []byte("v2"), 0)
		done <- err
	}()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("subscriber never given version 2")
	}
	if cur := nd.s.Current(); cur.Version != 1 || string(cur.Raw) != "v1" {
		t.Fatalf("while a subscriber holds version 2, Current is %d %q; want 1 \"v1\"", cur.Version, cur.Raw)
	}
	select {
	case err := <-done:
		t.Fatalf("Apply returned (%v) before its document was delivered", err)
	default:
	}
	releaseAll()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if cur := nd.s.Current(); cur.Version != 2 || string(cur.Raw) != "v2" {
		t.Fatalf("after delivery Current is %d %q; want 2 \"v2\"", cur.Version, cur.Raw)
	}
}

// Writes waiting when the store closes all return, even those raft commits
// but never answers: hashicorp/raft drops futures still queued for its FSM at
// Shutdown (hashicorp/raft#498). Here the FSM is held in a subscriber while
// more writes commit behind it, and the store closes before it is let go.
// Every Apply must return, and no goroutine may be left behind (the
// cluster's goroutine check).
func TestCloseAnswersQueuedWrites(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.start()
	nd := c.leader(5 * time.Second)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)
	nd.s.Subscribe(func(d Document) {
		if d.Version == 1 {
			entered <- struct{}{}
			<-release
		}
	})
	const n = 16
	base := nd.s.raft.LastIndex()
	done := make(chan error, n)
	for i := range n {
		go func() {
			// No deadline: only the store's close may end the wait.
			_, err := nd.s.Apply(context.Background(), fmt.Appendf(nil, "doc-%d", i), 0)
			done <- err
		}()
	}
	<-entered
	// Let the other writes reach the log and commit behind the held FSM.
	waitFor(t, 5*time.Second, "writes committed behind the held FSM", func() bool {
		return nd.s.raft.CommitIndex() >= base+n
	})
	closed := make(chan struct{})
	go func() { c.stop(nd); close(closed) }()
	releaseAll()
	<-closed
	deadline := time.After(10 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, ErrClosed) {
				t.Errorf("write ended with %v; want success or ErrClosed", err)
			}
		case <-deadline:
			t.Fatalf("%d of %d writes still waiting 10s after the store closed", n-i, n)
		}
	}
}

// releaseOnShutdown reaches the futures this raft version returns.
func TestReleaseOnShutdownReachesRaftFutures(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.start()
	nd := c.leader(5 * time.Second)
	f := nd.s.raft.Apply([]byte{opSetDocument, '{', '}'}, time.Second)
	if !releaseOnShutdown(f, nd.s.raftDown) {
		t.Fatalf("releaseOnShutdown cannot reach %T's ShutdownCh: hashicorp/raft changed; see hashicorp/raft#498", f)
	}
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
}

// NoDocument applies a document only while the cluster has none: of two
// writers racing to be first, through different nodes, exactly one wins and
// the other is refused (not applied after it), and once a document is
// there a NoDocument write is refused with the version that stands.
func TestApplyNoDocument(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.start()
	ld := c.leader(5 * time.Second)
	f := c.follower(ld)
	if wins, conflicts := raceApply(t, []*tnode{f, ld}, "first", NoDocument); wins != 1 || conflicts != 1 {
		t.Fatalf("%d applied, %d refused; want 1 and 1", wins, conflicts)
	}
	c.converge(5*time.Second, 1)
	a, err := f.s.Apply(ctxT(t, 5*time.Second), []byte(`{"late":1}`), NoDocument)
	if !errors.Is(err, ErrVersionConflict) || a.Version != 1 {
		t.Fatalf("NoDocument with version 1 applied: %+v %v; want ErrVersionConflict at version 1", a, err)
	}
	if v := ld.s.Current().Version; v != 1 {
		t.Fatalf("the leader shows version %d; want 1", v)
	}
}

// raceApply has each node write a document of its own ({"what": i}) at
// once, all on the condition ifVersion, and counts the writes applied and
// those refused as conflicts (any other error fails the test).
func raceApply(t *testing.T, nodes []*tnode, what string, ifVersion uint64) (wins, conflicts int32) {
	t.Helper()
	var w, c atomic.Int32
	var wg sync.WaitGroup
	for i, nd := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := nd.s.Apply(ctxT(t, 5*time.Second), fmt.Appendf(nil, `{%q:%d}`, what, i), ifVersion)
			switch {
			case err == nil:
				w.Add(1)
			case errors.Is(err, ErrVersionConflict):
				c.Add(1)
			default:
				t.Errorf("%s %d: %v", what, i, err)
			}
		}()
	}
	wg.Wait()
	return w.Load(), c.Load()
}

// A node whose peers take connections and never answer (cut off by a
// firewall that drops, as far as a dial or a read can tell) closes without
// waiting out its RPCs' timeouts: raft's goroutines blocked in them held
// Shutdown, and a drain, 6-19 s in an outside check.
func TestCloseDoesNotWaitOnSilentPeers(t *testing.T) {
	silent, accepted := testutil.SilentPeer(t)
	c := newCluster(t, 1, func(cfg *Config) { cfg.TransportTimeout = time.Minute })
	nd := c.nodes[0]
	s := c.open(nd)
	// Two voters, the other one silent: this node stands for election
	// and waits on its vote request.
	if err := s.BootstrapCluster([]Server{{ID: nd.id, Addr: s.Addr(), Voter: true}, {ID: "silent", Addr: silent, Voter: true}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-accepted:
	case <-time.After(20 * time.Second):
		t.Fatal("no RPC reached the silent peer")
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close still waits 20 s on an RPC to a silent peer (the transport's timeout is a minute)")
	}
	nd.s = nil
}

// A lost outcome says so, not that no leader was reachable (the cluster
// may have had one all along), and still counts as both for callers that
// wait for a leader and try again.
func TestUnknownOutcomeSaysWhatHappened(t *testing.T) {
	err := unknownOutcome("leadership lost while committing; the write may still be applied later")
	if !errors.Is(err, ErrUnknownOutcome) || !errors.Is(err, ErrNoLeader) {
		t.Errorf("%v: not ErrUnknownOutcome and ErrNoLeader", err)
	}
	if msg := err.Error(); strings.Contains(msg, "no cluster leader") || !strings.Contains(msg, "outcome unknown") {
		t.Errorf("message %q", msg)
	}
}

// A node asks a peer whether it has Raft state (before it would bootstrap
// beside it): yes from a bootstrapped node, no from a fresh one.
func TestPeerHasState(t *testing.T) {
	c := newCluster(t, 2, nil)
	a := c.open(c.nodes[0])
	b := c.open(c.nodes[1])
	if err := a.BootstrapCluster([]Server{{ID: c.nodes[0].id, Addr: a.Addr(), Voter: true}}); err != nil {
		t.Fatal(err)
	}
	if has, err := b.PeerHasState(ctxT(t, 5*time.Second), a.Addr()); err != nil || !has {
		t.Errorf("asking the bootstrapped node: %v, %v; want true", has, err)
	}
	if has, err := a.PeerHasState(ctxT(t, 5*time.Second), b.Addr()); err != nil || has {
		t.Errorf("asking the fresh node: %v, %v; want false", has, err)
	}
}

// A peer that takes the connection and never answers is no answer (an
// error, not "no state"): a node about to bootstrap waits for it, since
// a stalled member with state would otherwise see its cluster forked. One
// that refuses us over mutual TLS (another CA) cannot tell
// (ErrCannotTell): it could not hold a seat in this cluster anyway.
func TestPeerHasStateNoAnswerAndRefusal(t *testing.T) {
	silent, _ := testutil.SilentPeer(t)
	c := newCluster(t, 1, nil)
	a := c.open(c.nodes[0])
	has, err := a.PeerHasState(ctxT(t, 500*time.Millisecond), silent)
	if err == nil || errors.Is(err, ErrCannotTell) {
		t.Fatalf("asking a silent peer: %v, %v; want an error other than ErrCannotTell", has, err)
	}
	otherCA := filepath.Join(t.TempDir(), "other-ca")
	if err := pki.CreateCA(otherCA); err != nil {
		t.Fatal(err)
	}
	mal := c.newNode("mallory", "127.0.0.6", otherCA, nil)
	ms, err := Open(mal.config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	if has, err := a.PeerHasState(ctxT(t, 5*time.Second), ms.Addr()); !errors.Is(err, ErrCannotTell) {
		t.Fatalf("asking a node of another CA: %v, %v; want ErrCannotTell", has, err)
	}
}

// A node whose raft.db was lost but whose state file survived starts from
// an empty state (the file set aside): kept, the state counted the new
// log's entries below its index as applied already, refusing writes and
// leaving nodes at different versions for the same document.
func TestStateFileAheadOfLogIsSetAside(t *testing.T) {
	c := newCluster(t, 1, nil)
	nd := c.nodes[0]
	s := c.open(nd)
	if err := s.BootstrapCluster([]Server{{ID: nd.id, Addr: s.Addr(), Voter: true}}); err != nil {
		t.Fatal(err)
	}
	c.leader(5 * time.Second)
	for i := 1; i <= 3; i++ {
		if _, err := s.Apply(ctxT(t, 5*time.Second), fmt.Appendf(nil, "old-%d", i), 0); err != nil {
			t.Fatal(err)
		}
	}
	c.stop(nd)
	raftDir := filepath.Join(nd.dir, "raft")
	if err := os.Remove(filepath.Join(raftDir, "raft.db")); err != nil {
		t.Fatal(err)
	}
	s = c.open(nd)
	if cur := s.Current(); cur.Version != 0 || s.HasState() {
		t.Fatalf("after raft.db was lost: version %d, has state %v; want 0 and false", cur.Version, s.HasState())
	}
	if aside, _ := filepath.Glob(filepath.Join(raftDir, stateFile+".orphaned-*")); len(aside) != 1 {
		t.Fatalf("state files set aside: %v; want one", aside)
	}
	if err := s.BootstrapCluster([]Server{{ID: nd.id, Addr: s.Addr(), Voter: true}}); err != nil {
		t.Fatal(err)
	}
	c.leader(5 * time.Second)
	a, err := s.Apply(ctxT(t, 5*time.Second), []byte("new-1"), 0)
	if err != nil || a.Version != 1 || string(s.Current().Raw) != "new-1" {
		t.Fatalf("the new log's first write: %+v, %v, serving %q; want version 1 applied", a, err, s.Current().Raw)
	}
}
