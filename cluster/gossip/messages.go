package gossip

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/hashicorp/memberlist"
)

// Wire format of user messages (memberlist carries them opaquely):
//
//	broadcast / leave: ver=1 | kind | origin str8 | boot u64 | seq u64 | topic str8 | key str8 | payload
//	direct:            ver=1 | kind | flags | from str8 | topic str8 | payload   (flags bit 0: reliable)
//	name taken:        ver=1 | kind | name str8 | address str8   (internal: witnessConflict)
//
// str8 is a one-byte length and the bytes. Broadcasts are relayed by every
// receiver once (deduplicated by origin, boot, seq), so they reach members
// the origin's own retransmissions missed.
const (
	frameVersion = 1

	kindBroadcast = 1
	kindLeave     = 2 // leave intent (internal)
	kindDirect    = 3
	// kindNameTaken tells a member that another node gossips under its
	// name (internal): name str8 | the other's address str8.
	kindNameTaken = 4
)

// MaxMessageSize bounds a broadcast or best-effort Send frame (header
// included): it must fit one UDP packet with memberlist's framing and
// encryption overhead. Reliable Sends have no limit.
const MaxMessageSize = 1200

// maxQueued bounds the broadcast queue; the oldest most-sent are pruned.
const maxQueued = 2048

// inboxSize bounds messages waiting for their handler.
const inboxSize = 1024

type inbound struct {
	fn      func(from string, payload []byte)
	from    string
	payload []byte
	topic   string
}

func (m *Members) frameBroadcast(kind byte, topic, key string, payload []byte) (frame []byte, seq uint64) {
	seq = m.seq.Add(1)
	b := make([]byte, 0, 2+1+len(m.name)+16+2+len(topic)+len(key)+len(payload))
	b = append(b, frameVersion, kind)
	b = appendStr8(b, m.name)
	b = binary.BigEndian.AppendUint64(b, m.boot)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = appendStr8(b, topic)
	b = appendStr8(b, key)
	return append(b, payload...), seq
}

func checkName(what, s string, allowEmpty bool) error {
	if len(s) > 255 {
		return fmt.Errorf("gossip: %s longer than 255 bytes", what)
	}
	if s == "" && !allowEmpty {
		return fmt.Errorf("gossip: empty %s", what)
	}
	return nil
}

// Broadcast gossips payload to every member under topic. Delivery is best
// effort and eventually reaches all live members within a few gossip
// intervals; the local node's own handler is not called. The whole frame must
// fit MaxMessageSize: bulk data goes by Send(reliable).
func (m *Members) Broadcast(topic string, payload []byte) error {
	return m.BroadcastKeyed(topic, "", payload)
}

// BroadcastKeyed is Broadcast where a newer message with the same topic and
// non-empty key replaces an older one from this node still waiting in any
// node's queue (last value wins, e.g. a counter snapshot). Handlers may still
// receive values out of order; put a version in the payload if order matters.
func (m *Members) BroadcastKeyed(topic, key string, payload []byte) error {
	if err := checkName("topic", topic, false); err != nil {
		return err
	}
	if err := checkName("key", key, true); err != nil {
		return err
	}
	if m.isShut() {
		return ErrShutdown
	}
	if m.left.Load() {
		return ErrLeft
	}
	f, seq := m.frameBroadcast(kindBroadcast, topic, key, payload)
	if len(f) > MaxMessageSize {
		return fmt.Errorf("%w: broadcast frame %d bytes, limit %d; use Send(reliable) for bulk data", ErrTooLarge, len(f), MaxMessageSize)
	}
	m.enqueue(f, m.name, m.boot, seq, topic, key)
	return nil
}

func (m *Members) enqueue(f []byte, origin string, boot, seq uint64, topic, key string) {
	if key == "" {
		m.queue.Queue(&uniqueBcast{msg: f})
	} else {
		m.queue.Queue(&keyedBcast{msg: f, id: origin + "\x00" + topic + "\x00" + key, boot: boot, seq: seq})
	}
	if n := m.queue.NumQueued(); n > maxQueued {
		m.queue.Prune(maxQueued)
		m.stats.prunedBroadcasts.Add(uint64(n - maxQueued))
	}
}

// HandleBroadcast sets the handler for a broadcast topic (nil removes it).
// Handlers run one at a time on one goroutine and must not block for long;
// broadcasts that arrive while the handler queue is full are dropped
// (Stats.DroppedMessages).
func (m *Members) HandleBroadcast(topic string, fn func(from string, payload []byte)) {
	m.hmu.Lock()
	defer m.hmu.Unlock()
	if fn == nil {
		delete(m.bcastFns, topic)
	} else {
		m.bcastFns[topic] = fn
	}
}

// HandleMessage sets the handler for direct messages on topic (nil removes
// it). Same goroutine and rules as HandleBroadcast, except that a reliable
// message waits for room in the queue instead of being dropped.
func (m *Members) HandleMessage(topic string, fn func(from string, payload []byte)) {
	m.hmu.Lock()
	defer m.hmu.Unlock()
	if fn == nil {
		delete(m.messageFns, topic)
	} else {
		m.messageFns[topic] = fn
	}
}

// Send delivers payload to the member named to. reliable uses a TCP stream
// (any size; error means it may not have arrived); otherwise one UDP packet
// (frame at most MaxMessageSize; no delivery guarantee). Sending to the local
// node calls the local handler. ctx bounds the wait for a reliable send.
func (m *Members) Send(ctx context.Context, to, topic string, payload []byte, reliable bool) error {
	if err := checkName("topic", topic, false); err != nil {
		return err
	}
	if m.isShut() {
		return ErrShutdown
	}
	f := make([]byte, 0, 4+len(m.name)+len(topic)+len(payload))
	var flags byte
	if reliable {
		flags = 1
	}
	f = append(f, frameVersion, kindDirect, flags)
	f = appendStr8(f, m.name)
	f = appendStr8(f, topic)
	f = append(f, payload...)
	if !reliable && len(f) > MaxMessageSize {
		return fmt.Errorf("%w: best-effort frame %d bytes, limit %d", ErrTooLarge, len(f), MaxMessageSize)
	}

	m.mu.Lock()
	e := m.members[to]
	var node memberlist.Node
	ok := e != nil && (e.m.State == StateAlive || e.m.State == StateSuspect)
	if ok {
		node = e.node
	}
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownMember, to)
	}
	if to == m.name {
		m.receive(f)
		return nil
	}
	if !reliable {
		return m.ml.SendBestEffort(&node, f)
	}
	res := make(chan error, 1)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		res <- m.ml.SendReliable(&node, f) // bounded by Tuning.TCPTimeout
	}()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// receive handles one user message from memberlist. It never panics on bad
// input: malformed frames are counted, logged and dropped.
func (m *Members) receive(raw []byte) {
	if len(raw) < 2 || raw[0] != frameVersion {
		m.malformed("bad frame header", raw)
		return
	}
	b := append([]byte(nil), raw...) // memberlist may reuse its buffer
	r := reader{b: b[2:]}
	switch kind := b[1]; kind {
	case kindBroadcast, kindLeave:
		origin := r.str8()
		boot := r.u64()
		seq := r.u64()
		topic := r.str8()
		key := r.str8()
		if r.err != nil || origin == "" || (kind == kindBroadcast && topic == "") {
			m.malformed("bad broadcast frame", raw)
			return
		}
		if origin == m.name {
			return // our own, relayed back
		}
		if !m.firstSight(origin, boot, seq) {
			m.stats.duplicates.Add(1)
			return
		}
		m.enqueue(b, origin, boot, seq, topic, key) // relay
		if kind == kindLeave {
			m.leaveIntent(origin, boot)
			return
		}
		m.hmu.RLock()
		fn := m.bcastFns[topic]
		m.hmu.RUnlock()
		m.deliver(inbound{fn: fn, from: origin, topic: topic, payload: r.b}, false)
	case kindDirect:
		flags := r.u8()
		from := r.str8()
		topic := r.str8()
		if r.err != nil || from == "" || topic == "" {
			m.malformed("bad direct frame", raw)
			return
		}
		m.hmu.RLock()
		fn := m.messageFns[topic]
		m.hmu.RUnlock()
		// A reliable sender waits (TCP back-pressure) instead of losing it.
		m.deliver(inbound{fn: fn, from: from, topic: topic, payload: r.b}, flags&1 != 0)
	case kindNameTaken:
		name := r.str8()
		addr := r.str8()
		if r.err != nil || name == "" || addr == "" {
			m.malformed("bad name-taken frame", raw)
			return
		}
		if name == m.name {
			m.takenBy(addr)
		}
	default:
		m.malformed(fmt.Sprintf("unknown frame kind %d", kind), raw)
	}
}

func (m *Members) malformed(reason string, raw []byte) {
	m.stats.malformed.Add(1)
	n := min(len(raw), 16)
	m.log.Warn("dropped malformed gossip message", "reason", reason, "len", len(raw), "head", fmt.Sprintf("%x", raw[:n]))
}

func (m *Members) deliver(in inbound, wait bool) {
	if in.fn == nil {
		m.stats.unhandled.Add(1)
		m.log.Debug("no handler for gossip topic", "topic", in.topic, "from", in.from)
		return
	}
	if wait {
		select {
		case m.inbox <- in:
		case <-m.stop:
		}
		return
	}
	select {
	case m.inbox <- in:
	default:
		m.stats.droppedMessages.Add(1)
	}
}

func (m *Members) dispatchLoop() {
	defer m.wg.Done()
	for {
		select {
		case in := <-m.inbox:
			m.call(in)
		case <-m.stop:
			return
		}
	}
}

func (m *Members) call(in inbound) {
	defer func() {
		if r := recover(); r != nil {
			m.log.Error("gossip handler panicked", "topic", in.topic, "from", in.from, "panic", r)
		}
	}()
	in.fn(in.from, in.payload)
}

// ---- broadcast deduplication ----

// window remembers which of the last 64 sequence numbers of one origin's
// life (boot) were seen.
// dedupWindow is how many of an origin's latest sequence numbers are
// remembered: twice maxQueued, so that a burst a queue holds at once,
// whatever order its messages arrive in, is not mistaken for repeats.
const dedupWindow = 2 * maxQueued

type window struct {
	boot uint64
	max  uint64
	bits [dedupWindow / 64]uint64 // bit s%dedupWindow: seq s (max-dedupWindow < s <= max) seen
}

func (w *window) bit(seq uint64) (word int, mask uint64) {
	i := seq % dedupWindow
	return int(i / 64), 1 << (i % 64)
}

// firstSight reports whether (origin, boot, seq) is new, and records it.
// Messages from an older life of origin, or dedupWindow or more behind the
// newest, are treated as seen.
func (m *Members) firstSight(origin string, boot, seq uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.dedup[origin]
	if w == nil || boot > w.boot {
		w = &window{boot: boot, max: seq}
		i, b := w.bit(seq)
		w.bits[i] |= b
		m.dedup[origin] = w
		return true
	}
	if boot < w.boot {
		return false
	}
	switch {
	case seq > w.max:
		// Forget the sequence numbers that fall out of the window: their
		// slots are those of the new ones, max+1 to seq.
		if seq-w.max >= dedupWindow {
			clear(w.bits[:])
		} else {
			for s := w.max + 1; s <= seq; s++ {
				i, b := w.bit(s)
				w.bits[i] &^= b
			}
		}
		i, b := w.bit(seq)
		w.bits[i] |= b
		w.max = seq
		return true
	case w.max-seq >= dedupWindow:
		return false
	default:
		i, b := w.bit(seq)
		if w.bits[i]&b != 0 {
			return false
		}
		w.bits[i] |= b
		return true
	}
}

// ---- queue items ----

type uniqueBcast struct {
	msg    []byte
	notify chan struct{}
	once   sync.Once
}

func (b *uniqueBcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *uniqueBcast) Message() []byte                       { return b.msg }
func (b *uniqueBcast) Finished() {
	if b.notify != nil {
		b.once.Do(func() { close(b.notify) })
	}
}

type keyedBcast struct {
	msg       []byte
	id        string
	boot, seq uint64
}

func (b *keyedBcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(*keyedBcast)
	return ok && o.id == b.id && (o.boot < b.boot || (o.boot == b.boot && o.seq <= b.seq))
}
func (b *keyedBcast) Message() []byte { return b.msg }
func (b *keyedBcast) key() string     { return b.id }
func (b *keyedBcast) Finished()       {}

// ---- push/pull state: recent leave intents ----

// encodeIntents: ver=1 | count uvarint | (name str8 | boot u64)*
func (m *Members) encodeIntents() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := []byte{frameVersion}
	b = binary.AppendUvarint(b, uint64(len(m.intents)))
	for name, in := range m.intents {
		b = appendStr8(b, name)
		b = binary.BigEndian.AppendUint64(b, in.boot)
	}
	return b
}

func (m *Members) mergeIntents(buf []byte) {
	if len(buf) == 0 {
		return
	}
	if buf[0] != frameVersion {
		m.malformed("bad push/pull state version", buf)
		return
	}
	r := reader{b: buf[1:]}
	n := r.uvarint()
	type kv struct {
		name string
		boot uint64
	}
	var got []kv
	for i := uint64(0); i < n && r.err == nil; i++ {
		name := r.str8()
		boot := r.u64()
		if r.err == nil {
			got = append(got, kv{name, boot})
		}
	}
	if r.err != nil {
		m.malformed("bad push/pull state", buf)
		return
	}
	for _, g := range got {
		m.leaveIntent(g.name, g.boot)
	}
}
