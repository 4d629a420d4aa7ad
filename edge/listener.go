package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// guardListener wraps the client-facing TCP listener. It caps the number of
// open connections and, on the HTTPS listener, wraps each in TLS.
type guardListener struct {
	net.Listener
	sem      chan struct{} // nil means no cap
	open     atomic.Int64
	rejected atomic.Int64
	// parked counts the idle connections its server parked (h1park.go).
	parked *atomic.Int64
	closed chan struct{}
	once   sync.Once
	// tlsConf, if set, makes this a TLS listener: connections are
	// wrapped in TLS here, and the HTTP/1 server (h1Server) completes the
	// handshake and hands connections that chose "h2" by ALPN to
	// net/http's prior-knowledge HTTP/2 path.
	tlsConf *tls.Config

	// The node log, told of refusals at most every refusalLogEvery:
	// the first of a burst at once, the rest when its window ends
	// (window: the timer, nil when none is open; loggedN: rejected as
	// of the last line).
	log     *slog.Logger
	logMu   sync.Mutex
	window  *time.Timer
	loggedN int64
}

func newGuardListener(l net.Listener, maxConns int, log *slog.Logger) *guardListener {
	g := &guardListener{Listener: l, closed: make(chan struct{}), log: log}
	if maxConns > 0 {
		g.sem = make(chan struct{}, maxConns)
	}
	return g
}

// refusalLogEvery spaces the node log's lines about refused connections.
const refusalLogEvery = 10 * time.Second

// refused counts a connection refused over the cap and says so in the
// node log, at most every refusalLogEvery, with how many since the last
// line (nginx logs "worker_connections are not enough" for each).
func (g *guardListener) refused(transport string) {
	g.rejected.Add(1)
	if g.log == nil {
		return
	}
	g.logMu.Lock()
	defer g.logMu.Unlock()
	if g.window != nil {
		return // said when the window ends
	}
	g.logRefusedLocked(transport)
	g.window = time.AfterFunc(refusalLogEvery, g.endRefusalWindow)
}

// endRefusalWindow says how many were refused since the last line, if
// any, and then keeps the window open for another period; with none, it
// closes it (the next refusal is said at once).
func (g *guardListener) endRefusalWindow() {
	g.logMu.Lock()
	defer g.logMu.Unlock()
	if g.window == nil {
		return // the listener closed
	}
	if g.rejected.Load() == g.loggedN {
		g.window = nil
		return
	}
	g.logRefusedLocked("") // over TCP and QUIC alike
	g.window.Reset(refusalLogEvery)
}

// logRefusedLocked says how many were refused since the last line, and
// over which transport if one ("": the end of a window, over either).
func (g *guardListener) logRefusedLocked(transport string) {
	n := g.rejected.Load()
	attrs := []any{"listener", g.Addr().String(), "max_connections", cap(g.sem), "refused", n - g.loggedN}
	if transport != "" {
		attrs = append(attrs, "transport", transport)
	}
	g.log.Warn("connections refused: max_connections reached", attrs...)
	g.loggedN = n
}

func (g *guardListener) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if g.sem != nil {
			select {
			case g.sem <- struct{}{}:
			default:
				// Over the cap: close at once rather than leave the
				// client waiting in the kernel's backlog, so it can try
				// another node.
				g.refused("tcp")
				c.Close()
				continue
			}
		}
		g.open.Add(1)
		c = rawTCP(c)
		if g.tlsConf != nil {
			c = tls.Server(c, g.tlsConf)
		}
		return &guardConn{Conn: c, l: g}, nil
	}
}

func (g *guardListener) Close() error {
	g.once.Do(func() {
		close(g.closed)
		// The end of a burst still unsaid is said now.
		g.logMu.Lock()
		if g.window != nil {
			g.window.Stop()
			g.window = nil
			if g.rejected.Load() != g.loggedN {
				g.logRefusedLocked("")
			}
		}
		g.logMu.Unlock()
	})
	return g.Listener.Close()
}

// guardConn counts its connection against the listener's cap.
type guardConn struct {
	net.Conn
	l    *guardListener
	once sync.Once

	// HTTP/2 streams finished on the connection, and those the client
	// reset before any answer (see noteStream).
	streams, resets atomic.Int64
	flooded         atomic.Bool
}

// Premature resets (the HTTP/2 "rapid reset" attack, CVE-2023-44487):
// net/http bounds the handlers a connection runs at once, but every
// stream reset after its handler started still reaches the upstream. A
// connection with at least resetFloodMin such streams, half of its
// streams or more, is closed, as Envoy does by default.
const resetFloodMin = 500

// noteStream counts an HTTP/2 stream that ended; reset says the client
// reset it before any answer. It reports whether the connection has just
// crossed the premature-reset limit, and then closes it.
func (c *guardConn) noteStream(reset bool) bool {
	n := c.streams.Add(1)
	if !reset {
		return false
	}
	if r := c.resets.Add(1); r >= resetFloodMin && r*2 >= n && c.flooded.CompareAndSwap(false, true) {
		c.Close()
		return true
	}
	return false
}

func (c *guardConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// abort closes the connection with a reset, and under TLS without a
// close_notify (abortClose).
func (c *guardConn) abort() error {
	c.release()
	return abortClose(c.Conn)
}

// release gives the connection's place back to the listener, once.
func (c *guardConn) release() {
	c.once.Do(func() {
		c.l.open.Add(-1)
		if c.l.sem != nil {
			<-c.l.sem
		}
	})
}

// tlsState returns the TLS state of a request's connection, or nil for
// plain HTTP. For HTTP/2, net/http's r.TLS is nil on Meridian's TLS
// listener because the listener, not net/http, terminates TLS (see
// guardListener.tlsConf); the HTTP/1 server sets r.TLS itself.
func tlsState(r *http.Request) *tls.ConnectionState {
	if r.TLS != nil {
		return r.TLS
	}
	if gc, ok := r.Context().Value(connKey{}).(*guardConn); ok {
		if tc, ok := gc.Conn.(*tls.Conn); ok {
			st := tc.ConnectionState()
			return &st
		}
	}
	return nil
}

// isTLS reports whether the request came over TLS, without copying the
// connection state.
func isTLS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if gc, ok := r.Context().Value(connKey{}).(*guardConn); ok {
		_, ok := gc.Conn.(*tls.Conn)
		return ok
	}
	return false
}

type connKey struct{}

func connContext(ctx context.Context, c net.Conn) context.Context {
	switch c := c.(type) {
	case *guardConn:
		return context.WithValue(ctx, connKey{}, c)
	case *handoffConn:
		if c.gc != nil {
			return context.WithValue(ctx, connKey{}, c.gc)
		}
	}
	return ctx
}

func indexByte(p []byte, c byte) int { return bytes.IndexByte(p, c) }

// trimSpace removes optional whitespace (SP, HTAB) around a field value.
func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// socketControl runs f on the socket under c (a TCP connection, bare or
// wrapped: by the listener's cap, its raw reads, TLS) with no lock but
// the descriptor's, so f must not wait; false if c has no socket.
func socketControl(c net.Conn, f func(fd uintptr)) bool {
	for {
		if gc, ok := c.(*guardConn); ok {
			c = gc.Conn
			continue
		}
		if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
			c = tc.NetConn()
			continue
		}
		break
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	return err == nil && rc.Control(f) == nil
}
