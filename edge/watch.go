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
// throughput at 256 connections, make bench-ab). Now a server keeps one
// list of the requests not yet watched, in the order they are due, and one
// goroutine (sweep) sleeps until the first is due. A request that ends in
// time costs a link and an unlink under the list's lock.
//
// The sweeper parks when no request has been scheduled for a whole
// disconnectCheckAfter, so an idle server does not wake, and ends with its
// server (done).
type watchSchedule struct {
	done <-chan struct{} // the server's end

	mu      sync.Mutex
	head    *serverConn // the earliest due
	tail    *serverConn
	adds    uint64        // schedule calls, to tell a quiet period
	running bool          // the sweeper was started
	parked  bool          // the sweeper waits for wake
	wake    chan struct{} // capacity 1
	ended   chan struct{} // closed when the sweeper returns
}

// add schedules c's request rs to be looked at when due, after any
// earlier schedule of c is removed. Called with c.wmu held.
func (w *watchSchedule) add(c *serverConn, rs *requestState, due time.Duration) {
	w.mu.Lock()
	w.unlink(c)
	c.wfor, c.wdue = rs, due
	// Requests are scheduled in the order they began, near enough: the
	// tail is the place, but for one that read the clock a little
	// before another connection's request did and scheduled after it.
	at := w.tail
	for at != nil && at.wdue > due {
		at = at.wprev
	}
	c.wprev = at
	if at == nil {
		c.wnext = w.head
		w.head = c
	} else {
		c.wnext = at.wnext
		at.wnext = c
	}
	if c.wnext == nil {
		w.tail = c
	} else {
		c.wnext.wprev = c
	}
	w.adds++
	var wake, start bool
	if !w.running {
		w.running, start = true, true
		w.wake = make(chan struct{}, 1)
		w.ended = make(chan struct{})
	} else if w.parked && w.head == c {
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

// remove takes c out of the schedule if it is in it. Called with c.wmu
// held.
func (w *watchSchedule) remove(c *serverConn) {
	w.mu.Lock()
	w.unlink(c)
	w.mu.Unlock()
}

func (w *watchSchedule) unlink(c *serverConn) {
	if c.wfor == nil {
		return
	}
	if c.wprev == nil {
		w.head = c.wnext
	} else {
		c.wprev.wnext = c.wnext
	}
	if c.wnext == nil {
		w.tail = c.wprev
	} else {
		c.wnext.wprev = c.wprev
	}
	c.wprev, c.wnext, c.wfor = nil, nil, nil
}

// dueWatch is a request whose time came, taken out of the schedule.
type dueWatch struct {
	c  *serverConn
	rs *requestState
}

// sweep looks at each request when it is due, until the server ends.
func (w *watchSchedule) sweep() {
	defer close(w.ended)
	t := time.NewTimer(disconnectCheckAfter)
	defer t.Stop()
	var due []dueWatch
	var quietSince uint64 // adds when the last wait began with nothing scheduled
	quiet := false
	for {
		w.mu.Lock()
		now := monoNow()
		for w.head != nil && w.head.wdue <= now {
			c := w.head
			due = append(due, dueWatch{c, c.wfor})
			w.unlink(c)
		}
		var wait time.Duration
		switch {
		case w.head != nil:
			wait = w.head.wdue - now
			quiet = false
		case len(due) == 0 && quiet && w.adds == quietSince:
			// Nothing was scheduled for a whole period: park.
			w.parked = true
		default:
			wait = disconnectCheckAfter
			quiet, quietSince = true, w.adds
		}
		parked := w.parked
		w.mu.Unlock()
		for i, d := range due {
			d.c.watchDue(d.rs)
			due[i] = dueWatch{}
		}
		due = due[:0]
		if parked {
			select {
			case <-w.wake:
				quiet = false
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

// startWatch schedules the disconnect watch of a request.
func (c *serverConn) startWatch(rs *requestState) {
	c.wsched = true
	c.wmu.Lock()
	c.wreq = rs
	c.wdone = nil
	c.wdup = c.inl
	c.s.watches.add(c, rs, rs.start+disconnectCheckAfter)
	c.wmu.Unlock()
}

// watchDue starts the watch of request rs, whose time has come, unless
// it has ended; or schedules it again if it cannot be watched yet.
func (c *serverConn) watchDue(rs *requestState) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if rs == nil || c.wreq != rs || c.wdone != nil || c.closed {
		return
	}
	again := func() { c.s.watches.add(c, rs, monoNow()+disconnectCheckAfter) }
	if !rs.bodyDone.Load() || c.br.Buffered() > 0 {
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
