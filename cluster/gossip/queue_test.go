package gossip

import (
	"fmt"
	"slices"
	"testing"

	"github.com/hashicorp/memberlist"
)

// namedBcast is a memberlist.NamedBroadcast, as memberlist's own alive
// messages are (named by node).
type namedBcast struct {
	name string
	msg  []byte
}

func (b *namedBcast) Invalidates(o memberlist.Broadcast) bool {
	x, ok := o.(*namedBcast)
	return ok && x.name == b.name
}
func (b *namedBcast) Message() []byte { return b.msg }
func (b *namedBcast) Finished()       {}
func (b *namedBcast) Name() string    { return b.name }

// The sequence that loses a broadcast in memberlist's TransmitLimitedQueue
// (v0.7.0): a replacement of the only queued item empties the queue, which
// resets the id generator after the replacement took its id; two later
// items of the same length then get ids 1 and 2, and the second one's key
// equals the replacement's. If this test fails, memberlist fixed its queue:
// bcastQueue, and the re-announcement in announceLoop, may no longer be
// needed.
func TestMemberlistQueueStillLosesBroadcasts(t *testing.T) {
	q := &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 3 }, RetransmitMult: 4}
	for _, b := range []*namedBcast{
		{"n1", []byte("n1-old")}, {"n1", []byte("n1-new")}, {"n2", []byte("n2-new")}, {"n3", []byte("n3-new")},
	} {
		q.QueueBroadcast(b)
	}
	got := q.GetBroadcasts(0, 1400)
	if slices.ContainsFunc(got, func(m []byte) bool { return string(m) == "n1-new" }) {
		t.Fatalf("memberlist's queue kept n1-new (sent %q): its id-reuse bug is fixed", got)
	}
}

func TestBcastQueueKeepsEveryBroadcast(t *testing.T) {
	q := &bcastQueue{numNodes: func() int { return 3 }, mult: 4}
	q.Queue(&keyedBcast{msg: []byte("n1-old"), id: "n1", seq: 1})
	q.Queue(&keyedBcast{msg: []byte("n1-new"), id: "n1", seq: 2})
	q.Queue(&keyedBcast{msg: []byte("n2-new"), id: "n2", seq: 1})
	q.Queue(&keyedBcast{msg: []byte("n3-new"), id: "n3", seq: 1})
	q.Queue(&keyedBcast{msg: []byte("n3-older"), id: "n3", seq: 0}) // superseded on arrival
	q.Queue(&uniqueBcast{msg: []byte("u-1")})
	q.Queue(&uniqueBcast{msg: []byte("u-2")})
	if n := q.NumQueued(); n != 5 {
		t.Fatalf("%d queued, want 5", n)
	}
	got := q.GetBroadcasts(0, 1400)
	var s []string
	for _, m := range got {
		s = append(s, string(m))
	}
	slices.Sort(s)
	if want := []string{"n1-new", "n2-new", "n3-new", "u-1", "u-2"}; !slices.Equal(s, want) {
		t.Fatalf("sent %q, want %q", s, want)
	}
}

// Each broadcast goes out retransmitLimit times, then is finished (a
// Leave waits on that); a packet holds what fits, least sent and oldest
// first.
func TestBcastQueueTransmitLimitAndPacking(t *testing.T) {
	q := &bcastQueue{numNodes: func() int { return 3 }, mult: 2} // limit 2*ceil(log10 4) = 2
	done := make(chan struct{})
	q.Queue(&uniqueBcast{msg: []byte("aaaa"), notify: done})
	q.Queue(&uniqueBcast{msg: []byte("bbbb")})
	// Room for one message of 4 bytes plus 2 of overhead: the oldest first.
	if got := q.GetBroadcasts(2, 7); len(got) != 1 || string(got[0]) != "aaaa" {
		t.Fatalf("first packet %q", got)
	}
	// bbbb has been sent least now.
	if got := q.GetBroadcasts(2, 7); len(got) != 1 || string(got[0]) != "bbbb" {
		t.Fatalf("second packet %q", got)
	}
	if got := q.GetBroadcasts(0, 100); len(got) != 2 {
		t.Fatalf("third packet %q", got)
	}
	select {
	case <-done:
	default:
		t.Fatal("aaaa sent its limit of times but not finished")
	}
	if n := q.NumQueued(); n != 0 {
		t.Fatalf("%d still queued", n)
	}
	if got := q.GetBroadcasts(0, 100); got != nil {
		t.Fatalf("empty queue sent %q", got)
	}
	// Nothing fits: nothing is counted as sent.
	q.Queue(&uniqueBcast{msg: make([]byte, 50)})
	if got := q.GetBroadcasts(0, 10); got != nil {
		t.Fatalf("sent %q", got)
	}
	if got := q.GetBroadcasts(0, 100); len(got) != 1 {
		t.Fatalf("sent %d after a packet too small", len(got))
	}
}

func TestBcastQueuePruneKeepsFreshest(t *testing.T) {
	q := &bcastQueue{numNodes: func() int { return 3 }, mult: 4}
	for i := range 10 {
		q.Queue(&keyedBcast{msg: fmt.Appendf(nil, "m%d", i), id: fmt.Sprint(i), seq: 1})
	}
	q.GetBroadcasts(0, 1400) // all ten sent once
	q.Queue(&uniqueBcast{msg: []byte("fresh")})
	q.Queue(&keyedBcast{msg: []byte("m0-new"), id: "0", seq: 2}) // replaces m0
	q.Queue(&uniqueBcast{msg: []byte("x")})
	q.Prune(3)
	got := q.GetBroadcasts(0, 1400)
	var s []string
	for _, m := range got {
		s = append(s, string(m))
	}
	slices.Sort(s)
	if want := []string{"fresh", "m0-new", "x"}; !slices.Equal(s, want) {
		t.Fatalf("after prune sent %q, want %q", s, want)
	}
	// A replaced key can be queued again after its item was pruned.
	q.Queue(&keyedBcast{msg: []byte("m5-new"), id: "5", seq: 2})
	if n := q.NumQueued(); n != 4 {
		t.Fatalf("%d queued, want 4", n)
	}
}

// Newer broadcasts queued behind an older one, more than fit a packet, do
// not go before it: within a tier, first queued, first sent (a leave intent
// queued during a burst goes out first).
func TestBcastQueueOldestFirstWithinATier(t *testing.T) {
	q := &bcastQueue{numNodes: func() int { return 3 }, mult: 4}
	q.Queue(&uniqueBcast{msg: []byte("leave")})
	for i := range 100 {
		q.Queue(&uniqueBcast{msg: fmt.Appendf(nil, "new%03d", i)})
	}
	if got := q.GetBroadcasts(0, 8); len(got) != 1 || string(got[0]) != "leave" {
		t.Fatalf("first packet %q; want the oldest, leave", got)
	}
	if got := q.GetBroadcasts(0, 8); len(got) != 1 || string(got[0]) != "new000" {
		t.Fatalf("second packet %q; want new000", got)
	}
}
