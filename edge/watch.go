package edge

import (
	"sync"
	"time"
)

// The disconnect watch's schedule.
//
// A request that has run for disconnectCheckAfter gets its connection
// watched for the client going away (serverConn.watchDue). Each request
// used to arm a timer of its connection's: under load every busy
// connection's timer fired every 50 ms, each time on a goroutine of its
// own, only to find a newer request and wait again (2.5% of the
// throughput at 256 connections, make bench-ab). Then a server kept its
// unwatched requests in a list linked through their connections, ordered
// by when each was due: every request linked itself in and out, writing
// to its neighbours' connections, which under load are other
// connections' cold memory.
//
// Now a request appends an entry (its connection, the watch's number on
// that connection, when it is due) to one queue of the server's and takes
// nothing out when it ends: its connection's current number (wcur) moves
// on, and the entry is found stale when it comes due. Entries are appended
// in the order they are due, near enough (a request that read the clock a
// little before another connection's may append after it), so one
// goroutine (sweep) takes them from the front as they come due, waking at
// most every watchGrain. The queue's end, written by every request, stays
// in the cache; a request that ends in time costs an append.
//
// The sweeper parks when the queue is empty, so an idle server does not
// wake, and ends with its server (done).
type watchSchedule struct {
	done <-chan struct{} // the server's end

	mu      sync.Mutex
	q       []watchEntry // a ring: n entries from head, len(q) a power of two
	head, n int
	running bool          // the sweeper was started
	parked  bool          // the sweeper waits for wake
	wake    chan struct{} // capacity 1
	ended   chan struct{} // closed when the sweeper returns
}

// watchEntry is a request's watch, due at due: seq is its number on c
// (serverConn.wcur while it runs).
type watchEntry struct {
	c   *serverConn
	seq uint64
	due time.Duration
}

// watchGrain is the sweeper's shortest sleep: a watch starts between
// disconnectCheckAfter and that plus watchGrain after its request began.
const watchGrain = disconnectCheckAfter / 10

// add appends a watch to the queue.
func (w *watchSchedule) add(c *serverConn, seq uint64, due time.Duration) {
	w.mu.Lock()
	if w.n == len(w.q) {
		w.grow()
	}
	w.q[(w.head+w.n)&(len(w.q)-1)] = watchEntry{c, seq, due}
	w.n++
	var wake, start bool
	if !w.running {
		w.running, start = true, true
		w.wake = make(chan struct{}, 1)
		w.ended = make(chan struct{})
	} else if w.parked {
		w.parked, wake = false, true
	}
	w.mu.Unlock()
	switch {
	case start:
		go w.sweep()
	case wake:
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// grow doubles the ring, its entries kept in order from index 0.
func (w *watchSchedule) grow() {
	q := make([]watchEntry, max(64, 2*len(w.q)))
	for i := range w.n {
		q[i] = w.q[(w.head+i)&(len(w.q)-1)]
	}
	w.q, w.head = q, 0
}

// takeDue moves the entries due by now from the queue's front to due,
// and returns it.
func (w *watchSchedule) takeDue(now time.Duration, due []watchEntry) []watchEntry {
	for w.n > 0 {
		e := &w.q[w.head]
		if e.due > now {
			break
		}
		due = append(due, *e)
		*e = watchEntry{}
		w.head = (w.head + 1) & (len(w.q) - 1)
		w.n--
	}
	if w.n == 0 {
		w.head = 0
		if len(w.q) > 4096 {
			w.q = nil // a burst's ring: let it go
		}
	}
	return due
}

// sweep looks at each watch when it is due, until the server ends.
func (w *watchSchedule) sweep() {
	defer close(w.ended)
	t := time.NewTimer(disconnectCheckAfter)
	defer t.Stop()
	var due []watchEntry
	for {
		w.mu.Lock()
		now := monoNow()
		due = w.takeDue(now, due)
		var wait time.Duration
		if w.n > 0 {
			wait = max(w.q[w.head].due-now, watchGrain)
		} else {
			w.parked = true
		}
		parked := w.parked
		w.mu.Unlock()
		for i, e := range due {
			if e.c.wcur.Load() == e.seq {
				e.c.watchDue(e.seq)
			}
			due[i] = watchEntry{}
		}
		due = due[:0]
		if parked {
			// A watch looked at again above may have unparked it: its
			// wake is waiting.
			select {
			case <-w.wake:
				continue
			case <-w.done:
				return
			}
		}
		t.Reset(wait)
		select {
		case <-t.C:
		case <-w.wake: // a stale wake from before the last park ended
			t.Stop()
		case <-w.done:
			return
		}
	}
}

// watchClaimed marks wcur while watchDue holds the watch of that number:
// from then on stopWatch must take wmu, to wait for what watchDue set up.
const watchClaimed = 1 << 63

// startWatch schedules the disconnect watch of a request. It takes no
// lock: watchDue reads what is set here only after it has claimed the
// watch by its number, which is stored after them, and stopWatch of the
// request before cleared any claim.
func (c *serverConn) startWatch(rs *requestState) {
	c.wsched = true
	c.wreq = rs
	c.wdup = c.inl
	c.wseq++
	seq := c.wseq
	c.wcur.Store(seq)
	c.s.watches.add(c, seq, rs.start+disconnectCheckAfter)
}

// watchDue starts the watch numbered seq, whose time has come, unless its
// request has ended; or schedules it again if it cannot be watched yet.
func (c *serverConn) watchDue(seq uint64) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed || !c.wcur.CompareAndSwap(seq, seq|watchClaimed) {
		return // ended, or its request did
	}
	rs := c.wreq
	if rs.total != nil {
		rs.total.arm() // the request runs long enough to need its timer
	}
	again := func() {
		// Unclaimed, unless stopWatch came meanwhile (it waits for wmu).
		if c.wcur.CompareAndSwap(seq|watchClaimed, seq) {
			c.s.watches.add(c, seq, monoNow()+disconnectCheckAfter)
		}
	}
	if rs.bodyOpen.Load() || c.br.Buffered() > 0 {
		// The handler still reads the body, or the next request is
		// already here (so the client is too): look again later.
		again()
		return
	}
	done := make(chan struct{})
	if c.wdup {
		// Served inline: the socket's reads are the serving goroutine's.
		f := c.watchDup(done, func() {
			c.broken.Store(true)
			rs.cancel()
		})
		if f == nil {
			// No descriptor to spare now (the limit): look again later.
			again()
			return
		}
		c.wdone, c.wfile = done, f
		return
	}
	// The connection may still carry the keep-alive deadline (see
	// serve): the watch must outlast it.
	c.rwc.SetReadDeadline(time.Time{})
	c.rdl = time.Time{}
	c.wdone = done
	go func() {
		defer close(done)
		n, err := c.rwc.Read(c.stash[:])
		if n == 1 {
			c.stashed = true
			return
		}
		if err != nil && !isTimeout(err) {
			c.broken.Store(true)
			rs.cancel()
		}
	}()
}
