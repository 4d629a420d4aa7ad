//go:build linux

package edge

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func TestRawTCPWrapsOnlyTCPConns(t *testing.T) {
	a, _ := tcpPair(t)
	if _, ok := rawTCP(a).(*rawConn); !ok {
		t.Fatalf("rawTCP(*net.TCPConn) = %T, want *rawConn", rawTCP(a))
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if got := rawTCP(p1); got != p1 {
		t.Fatalf("rawTCP(pipe) = %T, want the pipe itself", got)
	}
}

// TestRawConnFullDuplex moves 8 MiB each way at once over raw ends: writes
// larger than the socket buffers wait for writability part-way, reads and
// writes run on one connection from two goroutines, and every byte arrives
// in order.
func TestRawConnFullDuplex(t *testing.T) {
	a, b := tcpPair(t)
	ra, rb := rawTCP(a), rawTCP(b)
	const size = 8 << 20
	send := func(c net.Conn, data []byte, errs chan<- error) {
		// Uneven write sizes, some larger than the socket buffer.
		for off, step := 0, 1; off < len(data); step = step*7%(3<<20) + 1 {
			end := min(off+step, len(data))
			n, err := c.Write(data[off:end])
			if err != nil || n != end-off {
				errs <- fmt.Errorf("write at %d: n=%d of %d, %v", off, n, end-off, err)
				return
			}
			off = end
		}
		errs <- nil
	}
	recvAll := func(c net.Conn, want []byte, errs chan<- error) {
		got := make([]byte, len(want))
		if _, err := io.ReadFull(c, got); err != nil {
			errs <- fmt.Errorf("read: %v", err)
			return
		}
		if !bytes.Equal(got, want) {
			errs <- errors.New("bytes differ from what was sent")
			return
		}
		errs <- nil
	}
	ab, ba := make([]byte, size), make([]byte, size)
	rand.Read(ab)
	rand.Read(ba)
	errs := make(chan error, 4)
	go send(ra, ab, errs)
	go send(rb, ba, errs)
	go recvAll(rb, ab, errs)
	go recvAll(ra, ba, errs)
	for range 4 {
		if err := recv(t, errs, "a transfer"); err != nil {
			t.Fatal(err)
		}
	}
}

// outcome describes what a Read or Write returned in the terms callers
// test: the count, and the error's kind and shape.
func outcome(n int, err error) string {
	if err == nil {
		return fmt.Sprintf("n=%d ok", n)
	}
	var kinds []string
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		kinds = append(kinds, "timeout")
	}
	for _, k := range []struct {
		name string
		err  error
	}{{"eof", io.EOF}, {"deadline", os.ErrDeadlineExceeded}, {"closed", net.ErrClosed},
		{"reset", syscall.ECONNRESET}, {"pipe", syscall.EPIPE}} {
		if errors.Is(err, k.err) {
			kinds = append(kinds, k.name)
		}
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		kinds = append(kinds, "op="+oe.Op, "net="+oe.Net)
		var se *os.SyscallError
		if errors.As(err, &se) {
			kinds = append(kinds, "syscall="+se.Syscall)
		}
	}
	if n > 0 {
		kinds = append(kinds, "partial")
	}
	return strings.Join(kinds, " ")
}

// TestRawConnBehavesAsTCPConn runs each case on a plain *net.TCPConn and on
// its raw wrapper and wants the same outcome: callers (the HTTP/1 server
// and client, net/http's HTTP/2 server, crypto/tls) tell EOF, deadlines,
// closes and resets apart by these errors.
func TestRawConnBehavesAsTCPConn(t *testing.T) {
	cases := []struct {
		name string
		want string
		run  func(t *testing.T, c, peer *net.TCPConn, under net.Conn) string
	}{
		{"empty read and write", "n=0 ok | n=0 ok", func(t *testing.T, c, peer *net.TCPConn, u net.Conn) string {
			n1, err1 := u.Read(nil)
			n2, err2 := u.Write(nil)
			return outcome(n1, err1) + " | " + outcome(n2, err2)
		}},
		{"data then EOF", "abc | eof", func(t *testing.T, c, peer *net.TCPConn, u net.Conn) string {
			peer.Write([]byte("abc"))
			peer.Close()
			got, err := io.ReadAll(io.LimitReader(u, 3))
			if err != nil {
				return err.Error()
			}
			buf := make([]byte, 8)
			return string(got) + " | " + outcome(u.Read(buf))
		}},
		{"read deadline passes while waiting", "timeout deadline op=read net=tcp", func(t *testing.T, c, peer *net.TCPConn, u net.Conn) string {
			u.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			return outcome(u.Read(make([]byte, 8)))
		}},
		{"read deadline already past", "timeout deadline op=read net=tcp", func(t *testing.T, c, peer *net.TCPConn, u net.Conn) string {
			peer.Write([]byte("x")) // even with data waiting
			u.SetReadDeadline(time.Unix(1, 0))
			return outcome(u.Read(make([]byte, 8)))
		}},
		{"close while reading", "closed op=read net=tcp", func(t *testing.T, c, peer *net.TCPConn, u net.Conn) string {
			done := make(chan string, 1)
			go func() { done <- outcome(u.Read(make([]byte, 8))) }()
			time.Sleep(20 * time.Millisecond) // let the read reach the poller; the outcome is the same either way
			u.Close()
			return recv(t, done, "the read's return")
		}},
		{"read after the peer resets", "reset op=read net=tcp syscall=read", func(t *testing.T, c, peer *net.TCPConn, u net.Conn) string {
			peer.SetLinger(0)
			peer.Close()
			u.SetReadDeadline(time.Now().Add(5 * time.Second))
			return outcome(u.Read(make([]byte, 8)))
		}},
		{"write after the peer resets", "reset op=write net=tcp syscall=write", func(t *testing.T, c, peer *net.TCPConn, u net.Conn) string {
			peer.SetLinger(0)
			peer.Close()
			// The first write after the reset arrived fails with
			// ECONNRESET; one that raced ahead of it is answered with
			// another reset, and the next write fails with EPIPE or
			// ECONNRESET: the same kind of failure for callers.
			var err error
			for i := 0; i < 100 && err == nil; i++ {
				if _, err = u.Write([]byte("x")); err == nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
			return strings.Replace(outcome(0, err), "pipe", "reset", 1)
		}},
		{"write deadline with a peer that does not read", "timeout deadline op=write net=tcp partial", func(t *testing.T, c, peer *net.TCPConn, u net.Conn) string {
			// The buffer is made first, and the deadline leaves room for
			// the first bytes to go even on a loaded machine: a deadline
			// already past when the write starts writes nothing.
			buf := make([]byte, 64<<20)
			u.SetWriteDeadline(time.Now().Add(time.Second))
			return outcome(u.Write(buf))
		}},
		{"write after close", "closed op=write net=tcp", func(t *testing.T, c, peer *net.TCPConn, u net.Conn) string {
			u.Close()
			return outcome(u.Write([]byte("x")))
		}},
	}
	for _, tc := range cases {
		for _, raw := range []bool{false, true} {
			name := tc.name + "/plain"
			if raw {
				name = tc.name + "/raw"
			}
			t.Run(name, func(t *testing.T) {
				c, peer := tcpPair(t)
				var u net.Conn = c
				if raw {
					u = rawTCP(c)
				}
				if got := tc.run(t, c, peer, u); got != tc.want {
					t.Errorf("got %q, want %q", got, tc.want)
				}
			})
		}
	}
}

// TestRawConnCopyBetweenSockets: io.Copy from one raw connection to
// another (a WebSocket relay's shape) reaches net's socket-to-socket path
// through ReadFrom and delivers every byte.
func TestRawConnCopyBetweenSockets(t *testing.T) {
	src, srcPeer := tcpPair(t)
	dst, dstPeer := tcpPair(t)
	data := make([]byte, 1<<20)
	rand.Read(data)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		srcPeer.Write(data)
		srcPeer.Close()
	}()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(dstPeer)
		got <- b
	}()
	n, err := io.Copy(rawTCP(dst), rawTCP(src))
	if err != nil || n != int64(len(data)) {
		t.Fatalf("io.Copy = %d, %v; want %d, nil", n, err, len(data))
	}
	dst.CloseWrite()
	if b := recv(t, got, "the copied bytes"); !bytes.Equal(b, data) {
		t.Fatalf("copied %d bytes that differ from the %d sent", len(b), len(data))
	}
	wg.Wait()
}
