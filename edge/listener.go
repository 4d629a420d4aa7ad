package edge

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
)

// guardListener wraps the client-facing TCP listener. It caps the number of
// open connections and wraps each connection in a guardConn that watches the
// HTTP/1 framing for request smuggling.
type guardListener struct {
	net.Listener
	sem      chan struct{} // nil means no cap
	open     atomic.Int64
	rejected atomic.Int64
	closed   chan struct{}
	once     sync.Once
	// tlsConf, if set, makes this a TLS listener: connections are
	// wrapped in TLS here rather than by net/http, so that the request
	// smuggling guard sees the decrypted bytes. HTTP/2 is then the
	// prior-knowledge path net/http takes when a client that chose "h2"
	// by ALPN sends the HTTP/2 preface.
	tlsConf *tls.Config
}

func newGuardListener(l net.Listener, maxConns int) *guardListener {
	g := &guardListener{Listener: l, closed: make(chan struct{})}
	if maxConns > 0 {
		g.sem = make(chan struct{}, maxConns)
	}
	return g
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
				g.rejected.Add(1)
				c.Close()
				continue
			}
		}
		g.open.Add(1)
		if g.tlsConf != nil {
			c = tls.Server(c, g.tlsConf)
		}
		return &guardConn{Conn: c, l: g}, nil
	}
}

func (g *guardListener) Close() error {
	g.once.Do(func() { close(g.closed) })
	return g.Listener.Close()
}

// guardConn counts its connection against the listener's cap and runs every
// byte the server reads through an h1Scanner.
type guardConn struct {
	net.Conn
	l       *guardListener
	once    sync.Once
	scan    h1Scanner
	mu      sync.Mutex
	handled int // requests seen by the handler, in order
}

func (c *guardConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.scan.feed(p[:n])
		c.mu.Unlock()
	}
	return n, err
}

func (c *guardConn) Close() error {
	c.once.Do(func() {
		c.l.open.Add(-1)
		if c.l.sem != nil {
			<-c.l.sem
		}
	})
	return c.Conn.Close()
}

// tlsState returns the TLS state of a request's connection, or nil for
// plain HTTP. net/http's r.TLS is nil on Meridian's TLS listener because
// the listener, not net/http, terminates TLS (see guardListener.tlsConf).
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

// nextRequestSmuggled is called by the handler once per HTTP/1 request, in
// order, and reports whether the scanner found that request's framing
// ambiguous (both Content-Length and Transfer-Encoding, and the like).
func (c *guardConn) nextRequestSmuggled() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.handled
	c.handled++
	if c.scan.badAt >= 0 && i >= c.scan.badAt {
		return true, c.scan.badWhy
	}
	return false, ""
}

type connKey struct{}

func connContext(ctx context.Context, c net.Conn) context.Context {
	if gc, ok := c.(*guardConn); ok {
		return context.WithValue(ctx, connKey{}, gc)
	}
	return ctx
}

// h1Scanner follows HTTP/1.1 request framing on the bytes a connection
// reads, independently of net/http's parser, to catch the requests whose
// framing two parsers could read differently. net/http accepts a request
// with both Transfer-Encoding: chunked and Content-Length (it drops the
// Content-Length); a gateway in front of other HTTP hops must refuse it
// (RFC 9112 section 6.1), so the handler asks the scanner and answers 400
// and closes the connection.
//
// The scanner stops watching (off) once it meets something net/http will
// refuse on its own, an upgrade, or HTTP/2's preface: from there on the
// bytes are not HTTP/1 requests.
type h1Scanner struct {
	state   int
	line    []byte
	reqs    int   // requests whose headers ended
	remain  int64 // body bytes left (Content-Length or current chunk)
	cl      int   // Content-Length headers in the current request
	clVal   string
	te      bool
	upgrade bool
	// uncounted marks a request net/http answers without the handler.
	uncounted bool
	badAt     int // first ambiguous request's index, or -1 via init
	badWhy    string
	init      bool
}

const (
	scanRequestLine = iota
	scanHeaders
	scanBody
	scanChunkSize
	scanChunkData
	scanChunkCRLF
	scanTrailers
	scanOff
)

const maxScanLine = 1 << 20

func (s *h1Scanner) feed(p []byte) {
	if !s.init {
		s.init = true
		s.badAt = -1
	}
	for len(p) > 0 && s.state != scanOff {
		switch s.state {
		case scanBody, scanChunkData:
			n := int64(len(p))
			if n > s.remain {
				n = s.remain
			}
			s.remain -= n
			p = p[n:]
			if s.remain == 0 {
				if s.state == scanBody {
					s.state = scanRequestLine
				} else {
					s.state = scanChunkCRLF
				}
			}
			continue
		}
		i := indexByte(p, '\n')
		if i < 0 {
			if len(s.line)+len(p) > maxScanLine {
				s.state = scanOff
				return
			}
			s.line = append(s.line, p...)
			return
		}
		s.line = append(s.line, p[:i]...)
		p = p[i+1:]
		line := s.line
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		s.onLine(line)
		s.line = s.line[:0]
	}
}

func indexByte(p []byte, c byte) int {
	for i, b := range p {
		if b == c {
			return i
		}
	}
	return -1
}

func (s *h1Scanner) onLine(line []byte) {
	switch s.state {
	case scanRequestLine:
		if len(line) == 0 {
			return // RFC 9112 2.2: ignore empty lines before a request
		}
		if string(line) == "PRI * HTTP/2.0" {
			s.state = scanOff
			return
		}
		s.cl, s.clVal, s.te, s.upgrade = 0, "", false, false
		// net/http answers "OPTIONS *" itself without calling the
		// handler, so such a request must not count.
		s.uncounted = len(line) > 10 && string(line[:10]) == "OPTIONS * "
		s.state = scanHeaders
	case scanHeaders:
		if len(line) == 0 {
			s.endHeaders()
			return
		}
		name, value, ok := cutColon(line)
		if !ok {
			s.state = scanOff // net/http refuses it
			return
		}
		switch {
		case equalFoldASCII(name, "content-length"):
			if s.cl > 0 && string(value) != s.clVal {
				s.state = scanOff // net/http refuses differing lengths
				return
			}
			s.cl++
			if s.cl == 1 {
				s.clVal = string(value)
			}
		case equalFoldASCII(name, "transfer-encoding"):
			s.te = true
		case equalFoldASCII(name, "upgrade"):
			s.upgrade = true
		}
	case scanChunkSize:
		size := line
		if i := indexByte(size, ';'); i >= 0 {
			size = size[:i]
		}
		n, err := strconv.ParseInt(string(trimSpace(size)), 16, 64)
		if err != nil || n < 0 {
			s.state = scanOff
			return
		}
		if n == 0 {
			s.state = scanTrailers
			return
		}
		s.remain = n
		s.state = scanChunkData
	case scanChunkCRLF:
		if len(line) != 0 {
			s.state = scanOff
			return
		}
		s.state = scanChunkSize
	case scanTrailers:
		if len(line) == 0 {
			s.state = scanRequestLine
		}
	}
}

func (s *h1Scanner) endHeaders() {
	idx := s.reqs
	if !s.uncounted {
		s.reqs++
	}
	if s.te && s.cl > 0 {
		if s.badAt < 0 {
			s.badAt = idx
			s.badWhy = "request has both Content-Length and Transfer-Encoding"
		}
		s.state = scanOff // the connection will be closed after the 400
		return
	}
	switch {
	case s.upgrade:
		s.state = scanOff // after a 101 the bytes are another protocol
	case s.te:
		s.state = scanChunkSize // net/http refuses any coding but chunked
	case s.cl > 0:
		n, err := strconv.ParseInt(s.clVal, 10, 64)
		if err != nil || n < 0 {
			s.state = scanOff
			return
		}
		s.remain = n
		if n == 0 {
			s.state = scanRequestLine
		} else {
			s.state = scanBody
		}
	default:
		s.state = scanRequestLine
	}
}

func cutColon(line []byte) (name, value []byte, ok bool) {
	i := indexByte(line, ':')
	if i <= 0 {
		return nil, nil, false
	}
	return line[:i], trimSpace(line[i+1:]), true
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
