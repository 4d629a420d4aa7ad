package edge

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// live lists the queued watches whose requests still run unwatched (an
// entry of an ended request is stale and only waits to be dropped; a
// watched one is claimed).
func (w *watchSchedule) live() []watchEntry {
	w.mu.Lock()
	defer w.mu.Unlock()
	var got []watchEntry
	for i := range w.n {
		e := w.q[(w.head+i)&(len(w.q)-1)]
		if e.c.wcur.Load() == e.seq {
			got = append(got, e)
		}
	}
	return got
}

// The queue gives its entries back in the order they came, as they come
// due, across the ring's end and its growth.
func TestWatchScheduleQueue(t *testing.T) {
	w := &watchSchedule{running: true} // no sweeper: the queue alone
	c := &serverConn{}
	next, want := uint64(0), uint64(0)
	add := func(k int) {
		for range k {
			next++
			w.add(c, next, time.Duration(next))
		}
	}
	take := func(upTo uint64) {
		t.Helper()
		got := w.takeDue(time.Duration(upTo), nil)
		for _, e := range got {
			want++
			if e.seq != want || e.due != time.Duration(want) || e.c != c {
				t.Fatalf("took %d (due %v), want %d", e.seq, e.due, want)
			}
		}
		if want != upTo {
			t.Fatalf("took up to %d, want up to %d", want, upTo)
		}
		if w.n != int(next-want) {
			t.Fatalf("%d left, want %d", w.n, next-want)
		}
	}
	add(50)
	take(40) // the front moves on
	add(60)  // wraps round the 64-entry ring, then grows it while wrapped
	if len(w.q) != 128 {
		t.Fatalf("ring of %d entries, want 128", len(w.q))
	}
	take(41)
	add(200)
	take(300)
	take(310)
	if w.n != 0 || w.head != 0 {
		t.Fatalf("emptied queue: n %d, head %d", w.n, w.head)
	}
	add(5000) // a burst: its ring is let go once empty
	take(next)
	if w.q != nil {
		t.Fatalf("a ring of %d entries kept after a burst", len(w.q))
	}
	add(3)
	take(next)
}

// Many connections whose requests run long are each watched: every client
// that leaves has its request canceled. Requests that end in time leave
// nothing to watch; the sweeper parks once their entries are dropped, and
// ends with its server.
func TestDisconnectWatchManyConnections(t *testing.T) {
	const n = 24
	entered := make(chan struct{}, n)
	canceled := make(chan struct{}, n)
	gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/long" {
			waitForCancel(r, entered, canceled)
			return
		}
		io.WriteString(w, "short")
	}))
	s := h1ServerOf(gw)
	// Short requests first, on connections that stay.
	for i := range 3 {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, body := readResponse(t, br, http.MethodGet); resp.StatusCode != 200 || string(body) != "short" {
			t.Fatalf("short request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if got := s.watches.live(); len(got) != 0 {
		t.Fatalf("%d requests still scheduled after every request ended", len(got))
	}
	conns := make([]net.Conn, n)
	for i := range conns {
		c, _ := h1Raw(t, gw.addr)
		h1Write(t, c, "GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
		conns[i] = c
	}
	for range n {
		recv(t, entered, "a long request to start")
	}
	// Each is watched once it has run disconnectCheckAfter: its
	// connection then has a watching read.
	waitFor(t, 5*time.Second, "every long request to be watched", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		watched := 0
		for c := range s.conns {
			c.wmu.Lock()
			if c.wdone != nil {
				watched++
			}
			c.wmu.Unlock()
		}
		return watched == n
	})
	if got := s.watches.live(); len(got) != 0 {
		t.Fatalf("%d requests still waiting once all were watched", len(got))
	}
	for _, c := range conns {
		c.Close()
	}
	for range n {
		recv(t, canceled, "a request whose client left to be canceled")
	}
	waitFor(t, 5*time.Second, "the sweeper to park", func() bool {
		s.watches.mu.Lock()
		defer s.watches.mu.Unlock()
		return s.watches.parked
	})
	ended := s.watches.ended
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := gw.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	recv(t, ended, "the sweeper to end with its server")
}
