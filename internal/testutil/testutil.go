// Package testutil holds small helpers shared by the project's tests.
package testutil

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// SyncBuffer is a bytes.Buffer safe for concurrent writers (loggers of
// several goroutines) and readers (the test checking what was logged).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// SilentPeer listens on 127.0.0.1 and takes connections that it holds
// open and never answers (a peer cut off by a firewall, as far as a read
// can tell), until the test ends. It returns its address and a channel
// told (without blocking) of each connection taken.
func SilentPeer(t testing.TB) (string, <-chan struct{}) {
	t.Helper()
	addr, accepted, _ := StoppableSilentPeer(t)
	return addr, accepted
}

// StoppableSilentPeer is SilentPeer with a stop function that closes it
// (its listener and the connections it holds) before the test ends.
func StoppableSilentPeer(t testing.TB) (string, <-chan struct{}, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ln.Close()
			<-done
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), accepted, stop
}

// FirstDialFrom listens on ip (a loopback address; the test is skipped
// where it cannot be bound) and reports the source address of the first
// connection it takes (nil if it closed first), which it then closes. It
// returns its address.
func FirstDialFrom(t testing.TB, ip string) (string, <-chan net.Addr) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Skipf("no %s here: %v", ip, err)
	}
	t.Cleanup(func() { ln.Close() })
	from := make(chan net.Addr, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			from <- nil
			return
		}
		from <- c.RemoteAddr()
		c.Close()
	}()
	return ln.Addr().String(), from
}

// FromIP returns a's IP as a string ("" for nil).
func FromIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return ""
}

// CountConns makes srv (not started yet) count its open connections: new
// ones add one, closed or hijacked ones take one away.
func CountConns(srv *httptest.Server) *atomic.Int64 {
	var open atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	return &open
}
