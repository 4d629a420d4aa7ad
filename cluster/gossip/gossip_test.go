package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meridian-gw/meridian/internal/testutil"
)

type logBuf = testutil.SyncBuffer

type node struct {
	*Members
	logs *logBuf
}

func fastTuning() Tuning {
	return Tuning{
		ProbeInterval:       250 * time.Millisecond,
		ProbeTimeout:        150 * time.Millisecond,
		GossipInterval:      30 * time.Millisecond,
		PushPullInterval:    2 * time.Second,
		TCPTimeout:          3 * time.Second,
		SuspicionMult:       4,
		GossipToTheDeadTime: 2 * time.Second,
		DeadRetention:       time.Minute,
	}
}

func testMeta(i int) Meta {
	return Meta{
		Name:          fmt.Sprintf("n%d", i),
		Region:        []string{"eu-west", "us-east", "ap-south"}[i%3],
		Lat:           10.5 + float64(i),
		Lon:           -20.25 - float64(i),
		HTTPAddr:      fmt.Sprintf("127.0.0.%d:8080", i),
		HTTPSAddr:     fmt.Sprintf("127.0.0.%d:8443", i),
		AdminAddr:     fmt.Sprintf("127.0.0.%d:9901", i),
		ClusterAddr:   fmt.Sprintf("127.0.0.%d:7000", i),
		Voter:         i%2 == 1,
		GivesUpSeat:   i%3 == 0,
		Bootstrap:     i%2 == 0,
		ConfigVersion: uint64(i),
	}
}

// startNode starts member i on 127.0.0.i with a free port.
func startNode(t *testing.T, i int, keys [][]byte) *node {
	t.Helper()
	lb := &logBuf{}
	m, err := Start(Config{
		BindAddr: fmt.Sprintf("127.0.0.%d", i),
		Keys:     keys,
		Meta:     testMeta(i),
		Logger:   slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Tuning:   fastTuning(),
	})
	if err != nil {
		t.Fatalf("start n%d: %v", i, err)
	}
	n := &node{Members: m, logs: lb}
	t.Cleanup(func() {
		_ = m.Shutdown()
		if t.Failed() {
			t.Logf("--- logs of n%d ---\n%s", i, tail(lb.String(), 4000))
		}
	})
	return n
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cluster starts members 1..size and joins them all through member 1.
func cluster(t *testing.T, size int, keys [][]byte) []*node {
	t.Helper()
	nodes := make([]*node, size)
	for i := range nodes {
		nodes[i] = startNode(t, i+1, keys)
	}
	for _, n := range nodes[1:] {
		if _, err := n.Join([]string{nodes[0].Addr()}); err != nil {
			t.Fatalf("join %s: %v", n.LocalName(), err)
		}
	}
	waitAllSee(t, nodes, nodes)
	return nodes
}

// waitAllSee waits until every observer lists every expected node alive with
// its exact metadata.
func waitAllSee(t *testing.T, observers, expected []*node) {
	t.Helper()
	eventually(t, 15*time.Second, "convergence", func() error {
		for _, o := range observers {
			for _, e := range expected {
				mem, ok := o.Member(e.LocalName())
				if !ok {
					return fmt.Errorf("%s does not know %s", o.LocalName(), e.LocalName())
				}
				if mem.State != StateAlive {
					return fmt.Errorf("%s sees %s %s", o.LocalName(), e.LocalName(), mem.State)
				}
				if want := e.LocalMeta(); mem.Meta != want {
					return fmt.Errorf("%s sees %s meta %+v, want %+v", o.LocalName(), e.LocalName(), mem.Meta, want)
				}
				if mem.Local != (o == e) || mem.Addr != e.Addr() {
					return fmt.Errorf("%s sees %s local=%v addr=%s", o.LocalName(), e.LocalName(), mem.Local, mem.Addr)
				}
			}
		}
		return nil
	})
}

func TestJoinMetaAndUpdate(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d members", size), func(t *testing.T) {
			nodes := cluster(t, size, nil)
			for _, n := range nodes {
				if got := len(n.Members.Members()); got != size {
					t.Fatalf("%s lists %d members, want %d", n.LocalName(), got, size)
				}
			}
			last := nodes[size-1]
			if err := last.UpdateMeta(func(m *Meta) { m.ConfigVersion = 4242; m.Draining = true }); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "meta update propagation", func() error {
				for _, n := range nodes {
					mem, _ := n.Member(last.LocalName())
					if mem.ConfigVersion != 4242 || !mem.Draining {
						return fmt.Errorf("%s sees version %d draining %v", n.LocalName(), mem.ConfigVersion, mem.Draining)
					}
				}
				return nil
			})
		})
	}
}

func TestUpdateMetaErrors(t *testing.T) {
	n := startNode(t, 1, nil)
	before := n.LocalMeta()
	err := n.UpdateMeta(func(m *Meta) { m.Region = strings.Repeat("r", 600) })
	if !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("err = %v, want ErrMetaTooLarge", err)
	}
	if n.LocalMeta() != before {
		t.Fatal("meta changed after a refused update")
	}
	if err := n.UpdateMeta(func(m *Meta) { m.Name = "other" }); err == nil {
		t.Fatal("rename accepted")
	}
	if EncodedMetaSize(before) > MetaMaxSize {
		t.Fatal("test meta too big")
	}
}

func TestLeaveShowsLeft(t *testing.T) {
	nodes := cluster(t, 3, nil)
	ev, cancel := nodes[0].Subscribe(64)
	defer cancel()
	gone := nodes[2]
	if err := gone.Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := gone.Shutdown(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "others see left", func() error {
		for _, n := range nodes[:2] {
			mem, ok := n.Member(gone.LocalName())
			if !ok || mem.State != StateLeft {
				return fmt.Errorf("%s sees %s as %q", n.LocalName(), gone.LocalName(), mem.State)
			}
		}
		return nil
	})
	// The subscriber saw a leave, never a failure.
	for {
		select {
		case e := <-ev:
			if e.Member.Name != gone.LocalName() {
				continue
			}
			if e.Kind == EventFail {
				t.Fatalf("got fail event for a graceful leave: %+v", e)
			}
			if e.Kind == EventLeave {
				return
			}
		default:
			t.Fatal("no leave event")
		}
	}
}

// mutedTransport is memberlist's transport whose packets (UDP: probes,
// acks, gossip and what they carry) go nowhere while muted; streams (TCP)
// go on.
type mutedTransport struct {
	*memberlist.NetTransport
	muted atomic.Bool
}

func (t *mutedTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.muted.Load() {
		return time.Now(), nil
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *mutedTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// TestLeaveWithoutGossip: a leaving node none of whose packets go out (on a
// starved machine, its gossip comes too late) is still seen to leave, not
// to fail: its leave intent also goes straight to its peers.
func TestLeaveWithoutGossip(t *testing.T) {
	nodes := cluster(t, 2, nil)
	var mt *mutedTransport
	m, err := Start(Config{BindAddr: "127.0.0.3", Meta: testMeta(3), Tuning: fastTuning(), Logger: discardLogger(),
		transport: func(nt *memberlist.NetTransport) memberlist.Transport {
			mt = &mutedTransport{NetTransport: nt}
			return mt
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	gone := &node{Members: m}
	if _, err := gone.Join([]string{nodes[0].Addr()}); err != nil {
		t.Fatal(err)
	}
	waitAllSee(t, append(nodes, gone), append(nodes, gone))
	mt.muted.Store(true)
	gone.Leave(time.Second) // memberlist's own leave times out: it goes by packet
	gone.Shutdown()
	eventually(t, 10*time.Second, "others see left", func() error {
		for _, n := range nodes {
			mem, ok := n.Member(gone.LocalName())
			if !ok || mem.State != StateLeft {
				return fmt.Errorf("%s sees %s as %q", n.LocalName(), gone.LocalName(), mem.State)
			}
		}
		return nil
	})
}

func TestKillShowsSuspectThenDead(t *testing.T) {
	nodes := cluster(t, 3, nil)
	victim := nodes[2]
	type seen struct{ suspect, dead bool }
	var mu sync.Mutex
	obs := map[string]*seen{}
	var wg sync.WaitGroup
	for _, n := range nodes[:2] {
		ch, cancel := n.Subscribe(64)
		t.Cleanup(cancel)
		s := &seen{}
		obs[n.LocalName()] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range ch {
				if e.Member.Name != victim.LocalName() {
					continue
				}
				mu.Lock()
				switch {
				case e.Kind == EventUpdate && e.Member.State == StateSuspect:
					s.suspect = true
				case e.Kind == EventFail && e.Member.State == StateDead:
					s.dead = s.suspect // dead counts only after suspect
				}
				mu.Unlock()
			}
		}()
	}
	if err := victim.Shutdown(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "suspect then dead", func() error {
		mu.Lock()
		defer mu.Unlock()
		for name, s := range obs {
			if !s.dead {
				return fmt.Errorf("%s: suspect=%v dead-after-suspect=%v", name, s.suspect, s.dead)
			}
		}
		return nil
	})
	for _, n := range nodes[:2] {
		if mem, _ := n.Member(victim.LocalName()); mem.State != StateDead {
			t.Fatalf("%s lists %s as %s", n.LocalName(), victim.LocalName(), mem.State)
		}
		_ = n.Shutdown() // closes the subscriber channels
	}
	wg.Wait()
}

type received struct {
	mu   sync.Mutex
	msgs map[string][]string // receiver -> "from|payload"
}

func (r *received) add(to, from string, p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs[to] = append(r.msgs[to], from+"|"+string(p))
}

func (r *received) has(to, want string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs[to] {
		if m == want {
			return true
		}
	}
	return false
}

func TestBroadcastAndSend(t *testing.T) {
	nodes := cluster(t, 5, nil)
	rec := &received{msgs: map[string][]string{}}
	big := map[string][]byte{}
	var bigMu sync.Mutex
	for _, n := range nodes {
		name := n.LocalName()
		n.HandleBroadcast("news", func(from string, p []byte) { rec.add(name, from, p) })
		n.HandleMessage("small", func(from string, p []byte) { rec.add(name, from, p) })
		n.HandleMessage("bulk", func(from string, p []byte) {
			bigMu.Lock()
			big[name+"<"+from] = p
			bigMu.Unlock()
		})
	}

	// Several broadcasts from two origins reach every other member.
	for i := range 5 {
		if err := nodes[0].Broadcast("news", fmt.Appendf(nil, "hello %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nodes[3].Broadcast("news", []byte("from three")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "broadcast delivery", func() error {
		for _, n := range nodes {
			for i := range 5 {
				if n != nodes[0] && !rec.has(n.LocalName(), fmt.Sprintf("n1|hello %d", i)) {
					return fmt.Errorf("%s lacks hello %d", n.LocalName(), i)
				}
			}
			if n != nodes[3] && !rec.has(n.LocalName(), "n4|from three") {
				return fmt.Errorf("%s lacks from three", n.LocalName())
			}
		}
		return nil
	})
	if rec.has("n1", "n1|hello 0") {
		t.Fatal("origin delivered its own broadcast to itself")
	}
	if err := nodes[0].Broadcast("news", make([]byte, MaxMessageSize)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized broadcast: err = %v", err)
	}

	// Reliable 1 MiB direct message.
	payload := make([]byte, 1<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nodes[1].Send(ctx, "n4", "bulk", payload, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "1 MiB reliable message", func() error {
		bigMu.Lock()
		defer bigMu.Unlock()
		got, ok := big["n4<n2"]
		if !ok {
			return errors.New("not received")
		}
		if !bytes.Equal(got, payload) {
			return fmt.Errorf("payload differs (%d bytes)", len(got))
		}
		return nil
	})

	// Best-effort small message (UDP: resend until seen).
	eventually(t, 10*time.Second, "best-effort message", func() error {
		if rec.has("n5", "n3|ping") {
			return nil
		}
		if err := nodes[2].Send(ctx, "n5", "small", []byte("ping"), false); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
		return errors.New("not yet")
	})
	if err := nodes[2].Send(ctx, "nobody", "small", nil, false); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("send to unknown: %v", err)
	}
}

func key(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

func TestEncryptionRefusesStrangers(t *testing.T) {
	keyA := key('a', 32)
	nodes := cluster(t, 2, [][]byte{keyA})
	seed := nodes[0]

	wrong := startNode(t, 3, [][]byte{key('b', 32)})
	if _, err := wrong.Join([]string{seed.Addr()}); err == nil {
		t.Fatal("join with the wrong key succeeded")
	}
	plain := startNode(t, 4, nil)
	if _, err := plain.Join([]string{seed.Addr()}); err == nil {
		t.Fatal("join without a key succeeded")
	}
	eventually(t, 5*time.Second, "refusals logged by the seed", func() error {
		logs := seed.logs.String()
		for _, want := range []string{"no installed keys could decrypt the message", "encryption is configured but remote state is not encrypted"} {
			if !strings.Contains(logs, want) {
				return fmt.Errorf("seed log lacks %q", want)
			}
		}
		return nil
	})
	for _, n := range nodes {
		for _, stranger := range []string{"n3", "n4"} {
			if _, ok := n.Member(stranger); ok {
				t.Fatalf("%s admitted %s", n.LocalName(), stranger)
			}
		}
	}
	if err := plain.InstallKey(keyA); !errors.Is(err, ErrNoEncryption) {
		t.Fatalf("InstallKey without encryption: %v", err)
	}
}

func TestKeyRotation(t *testing.T) {
	oldKey, newKey := key('o', 16), key('n', 32)
	nodes := cluster(t, 3, [][]byte{oldKey})
	for _, step := range []func(*node) error{
		func(n *node) error { return n.InstallKey(newKey) },
		func(n *node) error { return n.UseKey(newKey) },
		func(n *node) error { return n.RemoveKey(oldKey) },
	} {
		for _, n := range nodes {
			if err := step(n); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, n := range nodes {
		if ks := n.Keys(); len(ks) != 1 || !bytes.Equal(ks[0], newKey) {
			t.Fatalf("%s keys after rotation: %q", n.LocalName(), ks)
		}
	}
	// A node with only the old key is now refused; one with the new key joins.
	stale := startNode(t, 5, [][]byte{oldKey})
	if _, err := stale.Join([]string{nodes[1].Addr()}); err == nil {
		t.Fatal("old key still admitted")
	}
	fresh := startNode(t, 4, [][]byte{newKey})
	if _, err := fresh.Join([]string{nodes[1].Addr()}); err != nil {
		t.Fatal(err)
	}
	all := append(nodes, fresh)
	waitAllSee(t, all, all)
	// Gossip still flows under the new key.
	if err := fresh.UpdateMeta(func(m *Meta) { m.ConfigVersion = 99 }); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "update under new key", func() error {
		for _, n := range nodes {
			if mem, _ := n.Member("n4"); mem.ConfigVersion != 99 {
				return fmt.Errorf("%s sees version %d", n.LocalName(), mem.ConfigVersion)
			}
		}
		return nil
	})
}

func TestMalformedBroadcastDropped(t *testing.T) {
	nodes := cluster(t, 2, nil)
	got := make(chan string, 1)
	nodes[1].HandleBroadcast("ok", func(from string, p []byte) { got <- from + "|" + string(p) })

	// Frames a buggy or hostile peer could gossip: truncated header, wrong
	// version, unknown kind, broadcast cut inside its fields.
	for _, bad := range [][]byte{
		{1},
		{9, kindBroadcast, 0},
		{1, 77, 1, 2, 3},
		{1, kindBroadcast, 200, 'x'},
		{1, kindDirect, 0, 5, 'a'},
	} {
		nodes[0].queue.Queue(&uniqueBcast{msg: bad})
	}
	eventually(t, 10*time.Second, "malformed frames dropped and logged", func() error {
		if c := nodes[1].Stats().MalformedMessages; c < 5 {
			return fmt.Errorf("malformed count %d", c)
		}
		if !strings.Contains(nodes[1].logs.String(), "dropped malformed gossip message") {
			return errors.New("no log line")
		}
		return nil
	})
	// The cluster still works.
	if err := nodes[0].Broadcast("ok", []byte("still fine")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "n1|still fine" {
			t.Fatalf("got %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("valid broadcast after malformed ones not delivered")
	}
}

func TestUnreadSubscriberDoesNotBlock(t *testing.T) {
	first := startNode(t, 1, nil)
	_, cancel := first.Subscribe(1) // never read
	defer cancel()
	nodes := []*node{first}
	for i := 2; i <= 5; i++ {
		n := startNode(t, i, nil)
		if _, err := n.Join([]string{first.Addr()}); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	for v := range 5 {
		if err := nodes[4].UpdateMeta(func(m *Meta) { m.ConfigVersion = uint64(100 + v) }); err != nil {
			t.Fatal(err)
		}
	}
	waitAllSee(t, nodes, nodes)
	if first.Stats().DroppedEvents == 0 {
		t.Fatal("expected dropped events for the unread subscriber")
	}
}

func TestShutdownClosesSubscriptions(t *testing.T) {
	n := startNode(t, 1, nil)
	ch, cancel := n.Subscribe(4)
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	cancel() // after shutdown: must not panic
	for range ch {
	}
	if err := n.Broadcast("x", nil); !errors.Is(err, ErrShutdown) {
		t.Fatalf("broadcast after shutdown: %v", err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// A burst of broadcasts larger than the receivers' old 64-message dedup
// window reaches the members, each message at most once: the window holds
// what a queue can (maxQueued) twice over, whatever order messages arrive
// in. (The old window delivered 64 of 500 and counted the rest as
// duplicates.) Gossip is best effort: a message whose few transmissions
// all went one way may miss a member of a three-node cluster, so the test
// asks for nearly all, not all.
func TestBroadcastBurstDelivered(t *testing.T) {
	nodes := cluster(t, 3, nil)
	var mu sync.Mutex
	got := map[string]map[string]int{}
	for _, n := range nodes[1:] {
		got[n.LocalName()] = map[string]int{} // all before any handler runs
	}
	for _, n := range nodes[1:] {
		name := n.LocalName()
		n.HandleBroadcast("burst", func(from string, p []byte) {
			mu.Lock()
			got[name][string(p)]++
			mu.Unlock()
		})
	}
	const n = 500
	for i := range n {
		if err := nodes[0].Broadcast("burst", fmt.Appendf(nil, "m%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "nearly every message delivered, and the queues drained", func() error {
		for _, nd := range nodes {
			if q := nd.Stats().QueuedBroadcasts; q != 0 {
				return fmt.Errorf("%s still has %d queued", nd.LocalName(), q)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		for name, m := range got {
			if len(m) < n*95/100 {
				return fmt.Errorf("%s got %d distinct messages of %d (stats %+v)", name, len(m), n, statsOf(nodes, name))
			}
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for name, m := range got {
		for k, c := range m {
			if c != 1 {
				t.Errorf("%s got %s %d times", name, k, c)
			}
		}
	}
}

func statsOf(nodes []*node, name string) Stats {
	for _, n := range nodes {
		if n.LocalName() == name {
			return n.Stats()
		}
	}
	return Stats{}
}

// goroutinesIn counts the goroutines whose stack holds fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// Shutdown lets an announcement in flight finish while gossip still runs,
// and leaves no goroutine waiting in memberlist behind it.
func TestShutdownWaitsForTheAnnouncementInFlight(t *testing.T) {
	slow := fastTuning()
	slow.GossipInterval = 300 * time.Millisecond // an announcement takes a few of these
	var nodes []*Members
	for i := 1; i <= 2; i++ {
		m, err := Start(Config{BindAddr: fmt.Sprintf("127.0.0.%d", i), Meta: testMeta(i), Tuning: slow, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, m)
	}
	if _, err := nodes[1].Join([]string{nodes[0].Addr()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "both members alive", func() error {
		if len(nodes[0].Members()) != 2 || len(nodes[1].Members()) != 2 {
			return errors.New("not yet")
		}
		return nil
	})
	nodes[0].UpdateMeta(func(m *Meta) { m.ConfigVersion = 99 })
	eventually(t, 5*time.Second, "an announcement in flight", func() error {
		if goroutinesIn("memberlist.(*Memberlist).UpdateNode") == 0 {
			return errors.New("none yet")
		}
		return nil
	})
	for _, m := range nodes {
		m.Shutdown()
	}
	if n := goroutinesIn("memberlist.(*Memberlist).UpdateNode"); n > 0 {
		t.Fatalf("after Shutdown returned, %d goroutine(s) still in memberlist.UpdateNode", n)
	}
}

// Metadata updated just before a Leave (a draining node) reaches the
// peers: Leave waits for the announcement rather than cut it off.
func TestDrainingBeforeLeaveIsSeen(t *testing.T) {
	for range 5 {
		nodes := cluster(t, 3, nil)
		last := nodes[2]
		if err := last.UpdateMeta(func(m *Meta) { m.Draining = true }); err != nil {
			t.Fatal(err)
		}
		if err := last.Leave(4 * time.Second); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "peers see the node left, draining first", func() error {
			for _, n := range nodes[:2] {
				mem, ok := n.Member(last.LocalName())
				if !ok || mem.State != StateLeft || !mem.Draining {
					return fmt.Errorf("%s sees %s as %q, draining %v", n.LocalName(), last.LocalName(), mem.State, mem.Draining)
				}
			}
			return nil
		})
	}
}

// A join to a seed that takes the connection and never answers waits
// TCPTimeout; the Context given at Start, or Shutdown, ends it at once,
// so that a node stopping while cut off from its seeds does not wait
// (an outside check saw a partitioned node's drain take 20 s).
func TestJoinEndsWithItsContext(t *testing.T) {
	silent, accepted := testutil.SilentPeer(t)
	tun := fastTuning()
	tun.TCPTimeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	m, err := Start(Config{BindAddr: "127.0.0.1", Meta: testMeta(1), Tuning: tun, Logger: discardLogger(), Context: ctx})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	done := make(chan error, 1)
	go func() {
		_, err := m.Join([]string{silent})
		done <- err
	}()
	<-accepted // the push/pull now waits for an answer
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("the join to a silent seed succeeded")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the join still waits 20 s after its context ended (TCPTimeout is a minute)")
	}
}

// A node bound to one loopback alias dials its peers from it (memberlist's
// own transport left it to the kernel: 127.0.0.1).
func TestDialsLeaveFromTheBindAddress(t *testing.T) {
	seed, from := testutil.FirstDialFrom(t, "127.0.0.3")
	m, err := Start(Config{BindAddr: "127.0.0.2", Meta: testMeta(1), Tuning: fastTuning(), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	m.Join([]string{seed}) // fails: the seed closes at once
	if a := <-from; testutil.FromIP(a) != "127.0.0.2" {
		t.Fatalf("the seed saw the join from %v; want 127.0.0.2", a)
	}
}

// A seed that accepts and never answers does not hold the join to one that
// answers (memberlist's Join tried them in turn, each for TCPTimeout).
func TestJoinDoesNotWaitOnASilentSeed(t *testing.T) {
	silent, accepted := testutil.SilentPeer(t)
	a, b := twoWithSilentSeedTimeout(t, time.Minute)
	done := make(chan error, 1)
	go func() {
		via, n, err := b.JoinVia([]string{silent, a.Addr()})
		if err == nil && (n == 0 || via != a.Addr()) {
			err = fmt.Errorf("joined via %q (%d contacted); want %s", via, n, a.Addr())
		}
		done <- err
	}()
	<-accepted
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("join: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the join still waits 20 s on the silent seed (TCPTimeout is a minute)")
	}
	// And when none answers, each seed's failure is named.
	_, err := b.Join([]string{"127.0.0.1:1", "127.0.0.1:2"})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") || !strings.Contains(err.Error(), "127.0.0.1:2") {
		t.Fatalf("join of two closed ports: %v; want both named", err)
	}
}

// A node taken in before its cluster id was known, whose alive messages
// then carry another cluster's id, is marked failed here rather than
// listed alive for good (an outside check: a new node whose push/pull to
// one cluster's seed completed late, after it had joined another).
func TestMemberOfAnotherClusterLaterIsDropped(t *testing.T) {
	a, n := twoOfCluster(t, "cluster-a", "")
	if err := n.UpdateMeta(func(m *Meta) { m.ClusterID = "cluster-b" }); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "n2 marked failed at n1", func() error {
		if m, ok := a.Member("n2"); !ok || m.State != StateDead {
			return fmt.Errorf("n2: %+v", m.State)
		}
		return nil
	})
}

// twoOfCluster starts n1 with cluster id idA and n2 with idB, has n2 join
// n1, and waits until n1 lists n2 alive with its id.
func twoOfCluster(t *testing.T, idA, idB string) (a, n *Members) {
	t.Helper()
	ma, mb := testMeta(1), testMeta(2)
	ma.ClusterID, mb.ClusterID = idA, idB
	a, err := Start(Config{BindAddr: "127.0.0.1", Meta: ma, Tuning: fastTuning(), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown() })
	n, err = Start(Config{BindAddr: "127.0.0.1", Meta: mb, Tuning: fastTuning(), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown() })
	if _, err := n.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "n2 alive at n1", func() error {
		if m, ok := a.Member("n2"); !ok || m.State != StateAlive || m.ClusterID != idB {
			return fmt.Errorf("n2: %+v", m)
		}
		return nil
	})
	return a, n
}

// An alive message naming a member of this cluster with another cluster's
// id (stale, forged, or a node of another cluster with the same name) does
// not fail that member: only one taken in before its id was known, at the
// message's address, is (an outside check failed a healthy member for good
// with one forged datagram).
func TestForeignAliveDoesNotFailAMemberOfThisCluster(t *testing.T) {
	a, n := twoOfCluster(t, "cluster-a", "cluster-a")
	mb := n.LocalMeta()
	forged := mb
	forged.ClusterID = "deadbeef"
	meta, err := encodeMeta(&forged, 1)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(n.Addr())
	p, _ := strconv.Atoi(port)
	d := &delegate{m: a}
	for _, addr := range []string{host, "127.0.0.9"} {
		if err := d.NotifyAlive(&memberlist.Node{Name: "n2", Addr: net.ParseIP(addr), Port: uint16(p), Meta: meta}); err == nil {
			t.Errorf("an alive message of another cluster (from %s) was taken", addr)
		}
		if m, _ := a.Member("n2"); m.State != StateAlive {
			t.Fatalf("n2 is %s after a forged alive from %s; want alive", m.State, addr)
		}
	}
}

// A seed that takes a join's connection and never answers is a silent
// seed (a process there, stalled) while its join waits and after it timed
// out; one that refuses the connection, or answers, is not.
func TestSilentSeeds(t *testing.T) {
	silent, accepted := testutil.SilentPeer(t)
	a, b := twoWithSilentSeedTimeout(t, 500*time.Millisecond)
	done := make(chan struct{})
	go func() {
		b.JoinVia([]string{silent})
		close(done)
	}()
	<-accepted
	eventually(t, 5*time.Second, "the seed silent while its join waits", func() error {
		if got := b.SilentSeeds(); !slices.Equal(got, []string{silent}) {
			return fmt.Errorf("silent seeds %v", got)
		}
		return nil
	})
	<-done
	if got := b.SilentSeeds(); !slices.Equal(got, []string{silent}) {
		t.Fatalf("after the join timed out: silent seeds %v; want %s", got, silent)
	}
	if _, _, err := b.JoinVia([]string{"127.0.0.1:1"}); err == nil {
		t.Fatal("a join to a closed port succeeded")
	}
	if _, n, err := b.JoinVia([]string{a.Addr()}); err != nil || n == 0 {
		t.Fatalf("join: %v", err)
	}
	if got := b.SilentSeeds(); !slices.Equal(got, []string{silent}) {
		t.Errorf("silent seeds %v; want only %s (a refused port and an answering seed are not)", got, silent)
	}
}

// twoWithSilentSeedTimeout starts two members with the given TCPTimeout,
// shut down when the test ends.
func twoWithSilentSeedTimeout(t *testing.T, tcp time.Duration) (a, b *Members) {
	t.Helper()
	tun := fastTuning()
	tun.TCPTimeout = tcp
	for i, m := range []**Members{&a, &b} {
		var err error
		if *m, err = Start(Config{BindAddr: "127.0.0.1", Meta: testMeta(i + 1), Tuning: tun, Logger: discardLogger()}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { (*m).Shutdown() })
	}
	return a, b
}

// A seed that failed at once (its node not up yet) is tried again while
// another seed takes the connection and never answers: the join does not
// wait for the silent one's TCPTimeout (an outside check saw a node join
// 10 s late so).
func TestJoinRetriesFailedSeedsWhileOneIsSilent(t *testing.T) {
	silent, accepted := testutil.SilentPeer(t)
	_, b := twoWithSilentSeedTimeout(t, time.Minute)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // not up yet: refused
	done := make(chan error, 1)
	go func() {
		_, n, err := b.JoinVia([]string{fmt.Sprintf("127.0.0.1:%d", port), silent})
		if err == nil && n == 0 {
			err = errors.New("no seed contacted")
		}
		done <- err
	}()
	<-accepted // the first seed refused, the silent one waits
	late, err := Start(Config{BindAddr: "127.0.0.1", BindPort: port, Meta: testMeta(3), Tuning: fastTuning(), Logger: discardLogger()})
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	defer late.Shutdown()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("join: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the join still waits 20 s on the silent seed (TCPTimeout is a minute) though the other is up")
	}
}

// Seeds refused while a silent one waits are gone through at once, not
// one a stagger (2 s) each: with four refused ones before a live seed,
// the join took 10 s (an outside check: a node joined 6 s after a seed
// was up).
func TestJoinGoesThroughRefusedSeedsAtOnce(t *testing.T) {
	silent, _ := testutil.SilentPeer(t)
	a, b := twoWithSilentSeedTimeout(t, time.Minute)
	seeds := []string{silent, "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4", a.Addr()}
	began := time.Now()
	via, _, err := b.JoinVia(seeds)
	if err != nil || via != a.Addr() {
		t.Fatalf("join: via %q, %v; want %s", via, err, a.Addr())
	}
	// One stagger for the silent seed, then the refused ones at once: 2 s
	// and a little; one stagger each would be 10 s.
	if d := time.Since(began); d > 7*time.Second {
		t.Errorf("joined after %v; want about one stagger (%v)", d, joinStagger)
	}
}
