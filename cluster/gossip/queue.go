package gossip

import (
	"cmp"
	"math"
	"slices"
	"sync"

	"github.com/hashicorp/memberlist"
)

// bcastQueue holds this node's user broadcasts (its own and those it
// relays) until each has been piggybacked retransmitLimit times. It replaces
// memberlist.TransmitLimitedQueue, which silently loses queued broadcasts:
// it keys items by (transmits, length, id) and resets its id generator
// whenever it is momentarily empty, so an item re-queued by GetBroadcasts
// can share its key with a newer one of the same length, and the B-tree
// keeps only one of them (hashicorp/memberlist PR 263, unmerged as of
// v0.7.0). Here every item keeps a position in a slice and a sequence number
// that never repeats, so two items never compete for one slot.
type bcastQueue struct {
	numNodes func() int
	mult     int

	mu    sync.Mutex
	items []*queued // sorted: fewest transmits first, then oldest first
	byKey map[string]*queued
	seq   uint64
}

type queued struct {
	b         memberlist.Broadcast
	msg       []byte
	key       string // for keyed broadcasts
	transmits int
	seq       uint64
}

// retransmitLimit is memberlist's rule: mult * ceil(log10(n+1)).
func retransmitLimit(mult, n int) int {
	return mult * int(math.Ceil(math.Log10(float64(n+1))))
}

// keyed is a broadcast that a newer one with the same key replaces.
type keyed interface {
	memberlist.Broadcast
	key() string
}

// Queue adds b. For a keyed broadcast, a queued one with the same key that b
// invalidates is finished and dropped; b itself is dropped if the queued one
// invalidates it (a newer version of the key is already waiting).
func (q *bcastQueue) Queue(b memberlist.Broadcast) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.byKey == nil {
		q.byKey = make(map[string]*queued)
	}
	it := &queued{b: b, msg: b.Message()}
	if k, ok := b.(keyed); ok {
		it.key = k.key()
		if old := q.byKey[it.key]; old != nil {
			if !b.Invalidates(old.b) {
				b.Finished()
				return
			}
			old.b.Finished()
			q.items = slices.DeleteFunc(q.items, func(x *queued) bool { return x == old })
		}
		q.byKey[it.key] = it
	}
	q.seq++
	it.seq = q.seq
	// Last among the items not sent yet: within a tier, first queued,
	// first sent, so that a stream of new broadcasts cannot keep an older
	// one (a leave intent, say) from ever going out.
	at := slices.IndexFunc(q.items, func(x *queued) bool { return x.transmits > 0 })
	if at < 0 {
		at = len(q.items)
	}
	q.items = slices.Insert(q.items, at, it)
}

// drop finishes and forgets it; the caller removes it from items.
func (q *bcastQueue) drop(it *queued) {
	it.b.Finished()
	if it.key != "" && q.byKey[it.key] == it {
		delete(q.byKey, it.key)
	}
}

// GetBroadcasts returns queued messages that fit in limit bytes, counting
// overhead per message, preferring the least transmitted and then the
// oldest. Each returned message counts one transmission; one that reaches
// the retransmit limit is finished and leaves the queue.
func (q *bcastQueue) GetBroadcasts(overhead, limit int) [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil
	}
	max := retransmitLimit(q.mult, q.numNodes())
	var out [][]byte
	used := 0
	sent := false
	for _, it := range q.items {
		if used+overhead+len(it.msg) > limit {
			continue
		}
		used += overhead + len(it.msg)
		out = append(out, it.msg)
		it.transmits++
		sent = true
	}
	if !sent {
		return nil
	}
	kept := q.items[:0]
	for _, it := range q.items {
		if it.transmits >= max {
			q.drop(it)
			continue
		}
		kept = append(kept, it)
	}
	clear(q.items[len(kept):])
	q.items = kept
	slices.SortStableFunc(q.items, func(a, b *queued) int {
		if a.transmits != b.transmits {
			return a.transmits - b.transmits
		}
		return cmp.Compare(a.seq, b.seq)
	})
	return out
}

// NumQueued is the number of broadcasts waiting.
func (q *bcastQueue) NumQueued() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// Prune keeps the max least-transmitted (then oldest) broadcasts and
// finishes the rest.
func (q *bcastQueue) Prune(max int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) <= max {
		return
	}
	for _, it := range q.items[max:] {
		q.drop(it)
	}
	clear(q.items[max:])
	q.items = q.items[:max]
}
