package edge

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// order lists the schedule's connections head to tail, checking the links
// both ways.
func (w *watchSchedule) order(t *testing.T) []*serverConn {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	var got []*serverConn
	var prev *serverConn
	for c := w.head; c != nil; c = c.wnext {
		if c.wprev != prev {
			t.Fatalf("schedule links: %p's prev is %p, want %p", c, c.wprev, prev)
		}
		if prev != nil && prev.wdue > c.wdue {
			t.Fatalf("schedule out of order: due %v before %v", prev.wdue, c.wdue)
		}
		got = append(got, c)
		prev = c
	}
	if w.tail != prev {
		t.Fatalf("schedule tail is %p, want %p", w.tail, prev)
	}
	return got
}

// The schedule keeps its requests in the order they are due, whatever the
// order they were added in, and takes one out, or moves one, from anywhere.
func TestWatchScheduleOrder(t *testing.T) {
	w := &watchSchedule{running: true} // no sweeper: the list alone
	cs := make([]*serverConn, 5)
	for i := range cs {
		cs[i] = &serverConn{}
	}
	rs := &requestState{}
	same := func(what string, want ...*serverConn) {
		t.Helper()
		got := w.order(t)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: order %v, want %v", what, got, want)
		}
	}
	w.add(cs[0], rs, 10)
	w.add(cs[1], rs, 30)
	w.add(cs[2], rs, 20) // read the clock before cs[1] did
	w.add(cs[3], rs, 5)  // before all
	same("added", cs[3], cs[0], cs[2], cs[1])
	w.remove(cs[2])
	same("middle removed", cs[3], cs[0], cs[1])
	w.remove(cs[3])
	w.remove(cs[3]) // not scheduled: nothing
	same("head removed", cs[0], cs[1])
	w.add(cs[0], rs, 40) // scheduled again: moved
	same("moved", cs[1], cs[0])
	w.add(cs[4], rs, 35)
	same("between", cs[1], cs[4], cs[0])
	for _, c := range []*serverConn{cs[0], cs[1], cs[4]} {
		w.remove(c)
	}
	same("all removed")
	if w.adds != 6 {
		t.Errorf("adds = %d, want 6", w.adds)
	}
}

// Many connections whose requests run long are each watched: every client
// that leaves has its request canceled. Requests that end in time leave
// nothing scheduled; the sweeper parks when nothing comes, and ends with
// its server.
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
	if got := s.watches.order(t); len(got) != 0 {
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
	// connection then has a watching read and is out of the schedule.
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
	if got := s.watches.order(t); len(got) != 0 {
		t.Fatalf("%d requests still scheduled once all were watched", len(got))
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
