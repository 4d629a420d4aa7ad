//go:build linux

package edge

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"
)

// parkGateway is a gateway whose idle keep-alive connections are parked
// after parkAfter.
func parkGateway(t *testing.T, be string, parkAfter, idle time.Duration) *testGateway {
	t.Helper()
	return startGatewayWith(t, gatewaySetup{listener: ListenerOptions{IdleTimeout: idle, parkAfter: parkAfter}}, oneRoute(be, ""))
}

// Idle keep-alive connections are parked: their goroutines end, and each
// is served again, on a new goroutine, when its client sends the next
// request (each kind idleRound sends); and parked again once idle.
func TestIdleConnectionsAreParked(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(b))
	})
	gw := parkGateway(t, be.URL, 30*time.Millisecond, time.Minute)
	s := gw.srv.srv
	const n = 20
	type client struct {
		c  net.Conn
		br *bufio.Reader
	}
	clients := make([]client, n)
	expect := func(cl client, want string) {
		t.Helper()
		resp, body := readResponse(t, cl.br, http.MethodGet)
		if resp.StatusCode != 200 || string(body) != want || resp.Close {
			t.Fatalf("got %d %q (close %v); want 200 %q, kept", resp.StatusCode, body, resp.Close, want)
		}
	}
	for i := range clients {
		c, br := h1Raw(t, gw.addr)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		clients[i] = client{c, br}
		h1Write(t, c, fmt.Sprintf("GET /c%d HTTP/1.1\r\nHost: x\r\n\r\n", i))
		expect(clients[i], fmt.Sprintf("GET /c%d 0", i))
	}
	waitFor(t, 10*time.Second, "all connections parked", func() bool { return s.parkedN.Load() == n })
	if m := metricValue(t, gw.g, "meridian_connections_parked"); m != n {
		t.Fatalf("meridian_connections_parked %v; want %d", m, n)
	}
	// Their goroutines are gone: fewer than one per connection is left
	// (the test's and the servers' own are a handful).
	if g := runtime.NumGoroutine(); g >= n {
		t.Fatalf("%d goroutines with %d connections parked; want fewer than %d", g, n, n)
	}
	for round := range idleRounds {
		for i, cl := range clients {
			idleRound(t, cl.c, cl.br, fmt.Sprintf("/c%d/r%d", i, round), round)
		}
		waitFor(t, 10*time.Second, fmt.Sprintf("all connections parked again after round %d", round), func() bool { return s.parkedN.Load() == n })
	}
	// A client that closes wakes its connection, which ends.
	open := gw.srv.ln.open.Load()
	for _, cl := range clients[:n/2] {
		cl.c.Close()
	}
	waitFor(t, 10*time.Second, "the closed connections to end", func() bool {
		return s.parkedN.Load() == n-n/2 && gw.srv.ln.open.Load() == open-n/2
	})
}

// A parked connection still ends when its idle time is over, counted from
// its last request, not from when it was parked.
func TestParkedConnectionIdleTimeout(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	const idle = 400 * time.Millisecond
	gw := parkGateway(t, be.URL, 20*time.Millisecond, idle)
	s := gw.srv.srv
	c, br := h1Raw(t, gw.addr)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	h1Write(t, c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	readResponse(t, br, http.MethodGet)
	waitFor(t, 5*time.Second, "the connection parked", func() bool { return s.parkedN.Load() == 1 })
	// Woken by a request, it is parked again; its idle time starts anew.
	h1Write(t, c, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readResponse(t, br, http.MethodGet); resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("got %d %q after parking", resp.StatusCode, body)
	}
	last := time.Now()
	waitFor(t, 5*time.Second, "the connection parked again", func() bool { return s.parkedN.Load() == 1 })
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("read %v; want EOF once the idle time is over", err)
	}
	if d := time.Since(last); d < idle-idle/8 || d > idle+2*time.Second {
		t.Fatalf("closed %v after the last answer; want about %v", d, idle)
	}
	waitFor(t, 5*time.Second, "the parker to let it go", func() bool { return s.parkedN.Load() == 0 })
}

// A drain closes parked connections at once, and Shutdown returns with
// no goroutine of the server left.
func TestShutdownEndsParkedConnections(t *testing.T) {
	for _, how := range []string{"shutdown", "close"} {
		t.Run(how, func(t *testing.T) {
			be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
			before := runtime.NumGoroutine()
			g := New(Options{})
			g.Swap(compileDoc(t, g, oneRoute(be.URL, ""), 1, nil))
			srv, err := g.Listen(ListenerOptions{Addr: "127.0.0.1:0", IdleTimeout: time.Minute, parkAfter: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- srv.Serve() }()
			const n = 10
			var conns []net.Conn
			for range n {
				c, br := h1Raw(t, srv.Addr().String())
				c.SetDeadline(time.Now().Add(10 * time.Second))
				h1Write(t, c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				readResponse(t, br, http.MethodGet)
				conns = append(conns, c)
			}
			waitFor(t, 5*time.Second, "all connections parked", func() bool { return srv.srv.parkedN.Load() == n })
			start := time.Now()
			if how == "shutdown" {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := srv.Shutdown(ctx); err != nil {
					t.Fatalf("Shutdown: %v", err)
				}
			} else {
				srv.srv.Close()
			}
			if err := <-served; err != nil {
				t.Fatalf("Serve: %v", err)
			}
			for _, c := range conns {
				if _, err := c.Read(make([]byte, 1)); err != io.EOF {
					t.Fatalf("read %v; want EOF", err)
				}
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("the %s took %v", how, d)
			}
			if srv.srv.parkedN.Load() != 0 {
				t.Fatalf("%d connections still parked", srv.srv.parkedN.Load())
			}
			g.Close()
			be.Close()
			waitFor(t, 5*time.Second, "the server's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
		})
	}
}
