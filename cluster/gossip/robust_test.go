package gossip

import (
	"fmt"
	"io"
	"log"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// garbageMeta is a raw memberlist delegate advertising undecodable metadata.
type garbageMeta struct{}

func (garbageMeta) NodeMeta(int) []byte             { return []byte{0xde, 0xad, 0xbe, 0xef} }
func (garbageMeta) NotifyMsg([]byte)                {}
func (garbageMeta) GetBroadcasts(int, int) [][]byte { return nil }
func (garbageMeta) LocalState(bool) []byte          { return []byte{0xff, 0xff} } // bad push/pull state too
func (garbageMeta) MergeRemoteState([]byte, bool)   {}

func TestGarbageMetaPeerRefused(t *testing.T) {
	nodes := cluster(t, 2, nil)
	c := memberlist.DefaultLANConfig()
	c.Name = "garbage"
	c.BindAddr = "127.0.0.3"
	c.BindPort = 0
	c.Delegate = garbageMeta{}
	c.Logger = log.New(io.Discard, "", 0)
	c.ProbeInterval, c.GossipInterval = 250*time.Millisecond, 30*time.Millisecond
	ml, err := memberlist.Create(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	_, _ = ml.Join([]string{nodes[0].Addr()}) // outcome irrelevant: it must not be admitted
	eventually(t, 10*time.Second, "refusal logged", func() error {
		if !strings.Contains(nodes[0].logs.String(), "undecodable node metadata") {
			return fmt.Errorf("no refusal in log")
		}
		if nodes[0].Stats().MalformedMessages == 0 {
			return fmt.Errorf("not counted")
		}
		return nil
	})
	for _, n := range nodes {
		if _, ok := n.Member("garbage"); ok {
			t.Fatalf("%s admitted a member with garbage metadata", n.LocalName())
		}
	}
	waitAllSee(t, nodes, nodes)
}

func TestShutdownEndsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	nodes := make([]*Members, 0, 3)
	for i := 1; i <= 3; i++ {
		m, err := Start(Config{BindAddr: fmt.Sprintf("127.0.0.%d", i), Meta: testMeta(i), Tuning: fastTuning(),
			Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, m)
		if i > 1 {
			if _, err := m.Join([]string{nodes[0].Addr()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, cancel := nodes[0].Subscribe(1)
	defer cancel()
	for _, m := range nodes {
		if err := m.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "goroutines end", func() error {
		if n := runtime.NumGoroutine(); n > before {
			return fmt.Errorf("%d goroutines, %d before", n, before)
		}
		return nil
	})
}

// The cluster id came after the other fields: metadata from a node that
// does not send it decodes with none, and one that does round-trips.
func TestMetaClusterIDOptional(t *testing.T) {
	in := Meta{Name: "x", Region: "eu", HTTPAddr: "a:1", ClusterID: "0123abcd"}
	b, err := encodeMeta(&in, 7)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := decodeMeta("x", b)
	if err != nil || got != in {
		t.Fatalf("decode: %+v, %v; want %+v", got, err, in)
	}
	older := b[:len(b)-1-len(in.ClusterID)] // as a node before the field wrote it
	got, _, err = decodeMeta("x", older)
	in.ClusterID = ""
	if err != nil || got != in {
		t.Fatalf("decode without the id: %+v, %v; want %+v", got, err, in)
	}
}

// Metadata over what a node may send is refused, as a forged member's.
func TestMetaOverTheLimitRefused(t *testing.T) {
	b, err := encodeMeta(&Meta{Region: "eu"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	big := append(b, make([]byte, MetaMaxSize)...) // trailing bytes a later version could send
	if _, _, err := decodeMeta("x", big); err == nil || !strings.Contains(err.Error(), "over the 512") {
		t.Errorf("decode of %d bytes: %v; want it refused", len(big), err)
	}
}

func FuzzDecodeMeta(f *testing.F) {
	good, _ := encodeMeta(&Meta{Region: "eu", Lat: 1, Lon: 2, HTTPAddr: "a:1", ConfigVersion: 7, Voter: true}, 42)
	f.Add(good)
	withID, _ := encodeMeta(&Meta{Region: "eu", ClusterID: "5f0c"}, 1)
	f.Add(withID)
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0})
	f.Add(append(good, 9, 9, 9)) // a later version's extra fields
	f.Fuzz(func(t *testing.T, b []byte) {
		m, boot, err := decodeMeta("x", b)
		if err != nil {
			return
		}
		again, err := encodeMeta(&m, boot)
		if err != nil {
			return // e.g. a peer's meta above our size limit: still decodable
		}
		m2, boot2, err := decodeMeta("x", again)
		if err != nil || m2 != m || boot2 != boot {
			t.Fatalf("round trip: %+v %v -> %+v %v (%v)", m, boot, m2, boot2, err)
		}
	})
}

// FuzzReceive feeds arbitrary frames to the receive path of a Members that is
// not connected to anything: it must never panic.
func FuzzReceive(f *testing.F) {
	m, err := Start(Config{BindAddr: "127.0.0.1", Meta: testMeta(1), Tuning: fastTuning(), Logger: discardLogger()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = m.Shutdown() })
	m.HandleBroadcast("t", func(string, []byte) {})
	m.HandleMessage("t", func(string, []byte) {})
	other := &Members{name: "o", boot: 1}
	fb, _ := other.frameBroadcast(kindBroadcast, "t", "k", []byte("p"))
	f.Add(fb)
	fl, _ := other.frameBroadcast(kindLeave, "", "", nil)
	f.Add(fl)
	f.Add([]byte{1, kindDirect, 1, 1, 'o', 1, 't', 'x'})
	f.Add([]byte{1, kindBroadcast, 255})
	f.Add([]byte{1, kindNameTaken, 1, 'o', 3, 'a', ':', '1'})
	f.Add([]byte{1, kindNameTaken, 1, 'o'})
	f.Fuzz(func(t *testing.T, b []byte) {
		m.receive(b)
		m.mergeIntents(b)
	})
}

func TestLateLeaveIntentCorrectsFailure(t *testing.T) {
	n := startNode(t, 1, nil)
	ch, cancel := n.Subscribe(8)
	defer cancel()
	n.mu.Lock()
	n.members["gone"] = &entry{boot: 7, m: Member{Meta: Meta{Name: "gone"}, State: StateDead, Since: time.Now()}}
	n.mu.Unlock()
	n.leaveIntent("gone", 6) // an older life: ignored
	if mem, _ := n.Member("gone"); mem.State != StateDead {
		t.Fatalf("intent of another life applied: %s", mem.State)
	}
	n.leaveIntent("gone", 7)
	if mem, _ := n.Member("gone"); mem.State != StateLeft {
		t.Fatalf("state %s, want left", mem.State)
	}
	for e := range ch {
		if e.Member.Name == "gone" {
			if e.Kind != EventLeave {
				t.Fatalf("event %v", e.Kind)
			}
			break
		}
	}
}

func TestKeyedBroadcastReplacesQueued(t *testing.T) {
	n := startNode(t, 1, nil) // alone: nothing is transmitted, the queue keeps what it gets
	for i := range 3 {
		if err := n.BroadcastKeyed("counters", "route-a", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.BroadcastKeyed("counters", "route-b", nil); err != nil {
		t.Fatal(err)
	}
	if err := n.Broadcast("counters", nil); err != nil {
		t.Fatal(err)
	}
	if q := n.Stats().QueuedBroadcasts; q != 3 {
		t.Fatalf("queued %d, want 3 (route-a latest, route-b, unkeyed)", q)
	}
}
