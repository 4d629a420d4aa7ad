package edge

import (
	"cmp"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// serveUpgrade completes a protocol switch (WebSocket and the like): the
// upstream answered 101, so the client connection is taken over from
// net/http and bytes are copied both ways until either side closes.
func (g *Gateway) serveUpgrade(w http.ResponseWriter, r *http.Request, resp *http.Response, reqType string, x *exchange) {
	back, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		g.fail(w, r, x, &proxyError{status: http.StatusBadGateway, proxyStatus: "http_upgrade_failed", title: "Bad Gateway", detail: "the upstream switched protocols without a usable connection"})
		return
	}
	if upgradeType(resp.Header) != reqType || reqType == "" {
		back.Close()
		named := strings.TrimSpace(resp.Header.Get("Upgrade"))
		detail := "the upstream switched to " + named + ", not the " + reqType + " the client asked for"
		switch {
		case reqType == "" && named == "":
			detail = "the upstream switched protocols though the client asked for no switch"
		case reqType == "":
			detail = "the upstream switched protocols (to " + named + ") though the client asked for no switch"
		case named == "":
			detail = "the upstream switched protocols without naming one (no Upgrade field); the client asked for " + reqType
		}
		g.fail(w, r, x, &proxyError{status: http.StatusBadGateway, proxyStatus: "http_upgrade_failed", title: "Bad Gateway", detail: detail})
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		back.Close()
		g.fail(w, r, x, &proxyError{status: http.StatusBadGateway, proxyStatus: "http_upgrade_failed", title: "Bad Gateway", detail: "cannot switch protocols on this connection: " + err.Error()})
		return
	}
	if !g.trackHijacked(conn, back) {
		conn.Close()
		back.Close()
		return
	}
	defer g.hwg.Done()
	defer g.finish(r, x) // before the drain that cut it ends
	defer g.untrackHijacked(conn)
	defer conn.Close()
	defer back.Close()

	upType := resp.Header.Get("Upgrade")
	removeHopHeaders(resp.Header)
	resp.Header["Connection"] = []string{"Upgrade"}
	resp.Header["Upgrade"] = []string{upType}
	if !x.route.svc.noVia {
		resp.Header["Via"] = append(resp.Header["Via"], "1.1 "+g.opts.ProxyName)
	}
	x.status = http.StatusSwitchingProtocols
	if _, err := io.WriteString(brw, "HTTP/1.1 101 Switching Protocols\r\n"); err != nil {
		return
	}
	if err := resp.Header.Write(brw); err != nil {
		return
	}
	if _, err := io.WriteString(brw, "\r\n"); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	// Bytes the client sent after its request, already buffered by
	// net/http, belong to the new protocol.
	if n := brw.Reader.Buffered(); n > 0 {
		buffered, _ := brw.Reader.Peek(n)
		if _, err := back.Write(buffered); err != nil {
			return
		}
		x.bytesIn += int64(n)
	}
	var in, out int64
	ended := make(chan struct{}, 2)
	// Each direction's writes are watched: a peer that stops reading
	// (its window full, the socket's queue not shrinking) for the send
	// timeout of its side ends the tunnel, as nginx's proxy_send_timeout
	// does; it held both sockets and goroutines for ever.
	toBack := &stallWriter{w: back, conn: upstreamNetConn(back), queued: -1}
	toClient := &stallWriter{w: conn, conn: conn, queued: -1}
	go func() {
		in, _ = io.Copy(toBack, conn)
		closeWrite(back)
		ended <- struct{}{}
	}()
	go func() {
		out, _ = io.Copy(toClient, back)
		closeWrite(conn)
		ended <- struct{}{}
	}()
	watchDone := make(chan struct{})
	var stalled string // the side that stopped reading, once the watch has ended
	watchEnded := make(chan struct{})
	go func() {
		defer close(watchEnded)
		stalled = watchTunnel(toClient, g.opts.SendTimeout, toBack, x.route.svc.tkey.send, watchDone, func() {
			conn.Close()
			back.Close()
		})
	}()
	defer func() {
		close(watchDone)
		<-watchEnded
		switch stalled {
		case "client":
			x.errKind = "client_send_timeout"
		case "upstream":
			x.errKind, x.errDetail = "connection_write_timeout", "the upstream took nothing of the tunnel for the send timeout"
		}
	}()
	<-ended
	// One side has ended (or failed) and the other has been told. It gets
	// upgradeCloseGrace to finish (the answer to a WebSocket close, the
	// rest of a reply), then both are closed: a peer that never closes
	// its side would otherwise hold the tunnel, its goroutines and both
	// sockets for ever (nginx closes both at once).
	t := time.NewTimer(upgradeCloseGrace)
	select {
	case <-ended:
	case <-t.C:
		conn.Close()
		back.Close()
		<-ended
	}
	t.Stop()
	x.bytesIn += in
	x.bytesOut += out
	if g.cut.Load() {
		x.errKind = "drain_timeout"
	}
}

// stallWriter is one direction of a tunnel as its copy writes it: each
// write notes when it began, so that watchTunnel can tell one that has
// waited the send timeout with the socket's send queue not shrinking (the
// kernel wakes a blocked writer only once a third of the buffer drained:
// a write alone would make a slow reader look stalled).
type stallWriter struct {
	w     io.Writer
	conn  net.Conn     // the socket written to, for its send queue; nil: not known
	since atomic.Int64 // monoNow when the write under way began; 0: none
	// queued is the send queue at the last look, -1 not known (watch
	// goroutine only).
	queued int
}

func (s *stallWriter) Write(p []byte) (int, error) {
	s.since.Store(int64(max(monoNow(), 1)))
	n, err := s.w.Write(p)
	s.since.Store(0)
	return n, err
}

// stalled reports whether the write under way has made no progress for d.
func (s *stallWriter) stalled(now, d time.Duration) bool {
	ws := time.Duration(s.since.Load())
	if ws == 0 || d <= 0 {
		s.queued = -1 // not blocked now: a later blocked write starts afresh
		return false
	}
	q, known := 0, false
	if s.conn != nil {
		q, known = sendQueued(s.conn)
	}
	if known && s.queued >= 0 && q < s.queued {
		// The peer took some of what waits in the socket: progress.
		s.since.CompareAndSwap(int64(ws), int64(now))
		s.queued = q
		return false
	}
	s.queued = -1
	if known {
		s.queued = q
	}
	return now-ws >= d
}

// watchTunnel looks at a tunnel's two directions a quarter of the shorter
// send timeout apart until done is closed: when the client (toClient,
// clientTimeout) or the upstream (toBack, upTimeout) has taken nothing for
// its timeout, it calls cut and returns that side ("client" or
// "upstream"); "" when done came first.
func watchTunnel(toClient *stallWriter, clientTimeout time.Duration, toBack *stallWriter, upTimeout time.Duration, done <-chan struct{}, cut func()) string {
	step := min(cmp.Or(clientTimeout, upTimeout), cmp.Or(upTimeout, clientTimeout)) / 4
	if step <= 0 {
		<-done
		return ""
	}
	t := time.NewTicker(max(step, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-done:
			return ""
		case <-t.C:
		}
		now := monoNow()
		if toClient.stalled(now, clientTimeout) {
			cut()
			return "client"
		}
		if toBack.stalled(now, upTimeout) {
			cut()
			return "upstream"
		}
	}
}

// upstreamNetConn is the socket under an upstream's tunnel, or nil.
func upstreamNetConn(back io.ReadWriteCloser) net.Conn {
	if u, ok := back.(*upgradedConn); ok {
		return u.pc.conn
	}
	return nil
}

// upgradeCloseGrace is how long a protocol-switched tunnel stays open in
// one direction after the other has ended.
const upgradeCloseGrace = 5 * time.Second

// closeWrite half-closes a connection so the peer sees EOF while the other
// direction finishes; without half-close support it closes it.
func closeWrite(c any) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	if tc, ok := c.(*guardConn); ok {
		if cw, ok := tc.Conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			return
		}
	}
	if cl, ok := c.(io.Closer); ok {
		cl.Close()
	}
}

// trackHijacked remembers a taken-over connection pair so Shutdown can
// close it; it refuses once the gateway is shutting down.
func (g *Gateway) trackHijacked(c net.Conn, back io.Closer) bool {
	g.hmu.Lock()
	defer g.hmu.Unlock()
	if g.hijackClosed {
		return false
	}
	g.hijacked[c] = back
	g.hwg.Add(1)
	return true
}

func (g *Gateway) untrackHijacked(c net.Conn) {
	g.hmu.Lock()
	delete(g.hijacked, c)
	g.hmu.Unlock()
}

// closeHijacked closes every taken-over connection and refuses new ones.
func (g *Gateway) closeHijacked() {
	g.hmu.Lock()
	defer g.hmu.Unlock()
	g.hijackClosed = true
	for c, back := range g.hijacked {
		c.Close()
		back.Close()
	}
}

// hijackedCount reports the taken-over connections still open.
func (g *Gateway) hijackedCount() int {
	g.hmu.Lock()
	defer g.hmu.Unlock()
	return len(g.hijacked)
}
