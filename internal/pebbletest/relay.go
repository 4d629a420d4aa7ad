package pebbletest

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Relay forwards TCP connections to a target and counts connections and the bytes clients
// send, to prove whether anything talked to the target (the CA: point an ACME client at
// Pebble.DirectoryURLVia(relay.Addr())).
type Relay struct {
	ln    net.Listener
	sent  atomic.Int64
	conns atomic.Int64
	wg    sync.WaitGroup
	mu    sync.Mutex
	open  []net.Conn
}

// NewRelay listens on a loopback port and relays to target until the test ends.
func NewRelay(t testing.TB, target string) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{ln: ln}
	r.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.conns.Add(1)
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.open = append(r.open, c, up)
			r.mu.Unlock()
			r.wg.Go(func() {
				_, _ = io.Copy(countingWriter{up, &r.sent}, c)
				up.Close()
			})
			r.wg.Go(func() {
				_, _ = io.Copy(c, up)
				c.Close()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for _, c := range r.open {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// Addr is the relay's host:port.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Sent is the number of bytes clients sent through the relay.
func (r *Relay) Sent() int64 { return r.sent.Load() }

// Conns is the number of connections the relay accepted.
func (r *Relay) Conns() int64 { return r.conns.Load() }

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return c.w.Write(p)
}
