package edge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// h1Server serves HTTP/1.x on the client-facing listeners itself and hands
// HTTP/2 connections (TLS with ALPN "h2", or the cleartext preface) to
// net/http.
//
// It replaces net/http's HTTP/1 server on the hot path for three reasons:
//   - framing: it parses requests strictly, so an ambiguous request (both
//     Content-Length and Transfer-Encoding, obs-fold, a bad length) is
//     refused before any handler sees it (RFC 9112 6.1, 6.3);
//   - cost: net/http starts a goroutine and extra reads per request to
//     notice a client that went away, clones the response header, and
//     allocates a string per header field. Here a request costs a handful
//     of allocations, and client disconnects are watched only for requests
//     that take longer than disconnectCheckAfter;
//   - control: connection state, drain and limits are ours.
type h1Server struct {
	handler http.Handler
	opts    ListenerOptions
	log     *slog.Logger
	baseCtx context.Context
	stop    context.CancelFunc

	h2 *http.Server // HTTP/2 connections handed over
	// h2Handlers counts h2's stream handlers running.
	h2Handlers handlerCount
	h2ln       *handoffListener
	// h2New holds the connections handed over that have yet to send
	// HTTP/2's whole preface (net/http's StateNew): they carry no
	// request, and a drain closes them at once, where net/http's
	// Shutdown would leave a connection that young to its own timer.
	h2mu  sync.Mutex
	h2New map[net.Conn]struct{}

	// refused, if set, is told of each request refused with an answer
	// before any handler saw it (malformed, too large, too slow), so that
	// it is logged and counted like any other.
	refused func(remote string, tls *tls.ConnectionState, pe *parseError)
	// optionsStar, if set, answers OPTIONS * (a question about the
	// server, not a resource) instead of serveOptionsStar.
	optionsStar http.Handler
	// lane, if set, is offered each request before it is built (the span
	// lane, h1lane.go): the gateway, when it is the handler, or a TLS
	// listener's tlsLane.
	lane laneServer
	// onCut, if set, is called when Shutdown's deadline passes, before
	// the connections left are closed.
	onCut func()

	watches watchSchedule

	// Parking idle connections (h1park.go): after parkAfter idle (0:
	// never), in parker, made at the first park (parkMu; parkOff once
	// the server stops or none can be made); parkedN counts them.
	parkAfter time.Duration
	parkMu    sync.Mutex
	parkOff   bool
	parker    atomic.Pointer[parker]
	parkedN   atomic.Int64

	mu       sync.Mutex
	conns    map[*serverConn]struct{}
	ln       net.Listener
	shutting atomic.Bool
	wg       sync.WaitGroup
}

// disconnectCheckAfter is how long a request runs before its connection
// is watched for the client going away (which cancels the request's
// context). Short requests never pay for the watch.
const disconnectCheckAfter = 50 * time.Millisecond

// maxDiscardBody is how much of a request body the handler left unread is
// read and thrown away to keep the connection; beyond it the connection is
// closed (net/http's figure).
const maxDiscardBody = 256 << 10

// maxHeaderFields bounds the fields of one request before the gateway's
// own (lower, configurable) count limit, so the parser's work is bounded.
const maxHeaderFields = 1000

func newH1Server(h http.Handler, o ListenerOptions, log *slog.Logger, h2 *http.Server) *h1Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &h1Server{
		handler: h,
		opts:    o,
		log:     log,
		baseCtx: ctx,
		stop:    cancel,
		h2:      h2,
		h2ln:    newHandoffListener(),
		conns:   map[*serverConn]struct{}{},
	}
	s.watches.done = ctx.Done()
	if h2 != nil {
		// Its streams' handlers are counted, so that Shutdown can wait
		// for those it cut to end (and be logged): http.Server.Close does
		// not wait for them.
		// Their requests can be cancelled by the drain's cut while their
		// connections still stand, so that one still waiting for its
		// upstream is answered (a 503 it can retry elsewhere), as an
		// HTTP/1 one is, rather than lost with the connection: every
		// stream's context derives from the server's base context (it is
		// the parent of each connection's, net/http's HTTP/2 server
		// watches it for nothing else), which the cut cancels. Nothing
		// per stream but the count.
		h2ctx, h2cut := context.WithCancel(context.Background())
		s.h2Handlers.cut = h2cut
		h2.BaseContext = func(net.Listener) context.Context { return h2ctx }
		inner := h2.Handler
		h2.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.h2Handlers.start()
			defer s.h2Handlers.end()
			inner.ServeHTTP(w, r)
		})
		s.h2New = map[net.Conn]struct{}{}
		prevState := h2.ConnState
		h2.ConnState = func(c net.Conn, st http.ConnState) {
			s.h2mu.Lock()
			if st == http.StateNew {
				s.h2New[c] = struct{}{}
			} else {
				delete(s.h2New, c)
			}
			s.h2mu.Unlock()
			if prevState != nil {
				prevState(c, st)
			}
		}
	}
	s.parkAfter = o.parkAfter
	if s.parkAfter == 0 {
		s.parkAfter = defaultParkAfter
	}
	if !canPark || s.parkAfter < 0 || o.IdleTimeout <= 2*s.parkAfter {
		s.parkAfter = 0 // an idle spell ends before it would be worth parking
	}
	if l, ok := h.(laneServer); ok {
		s.lane = l
	}
	return s
}

// Serve accepts connections until Shutdown or Close.
func (s *h1Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	s.ln = ln
	s.mu.Unlock()
	h2done := make(chan struct{})
	go func() {
		defer close(h2done)
		s.h2.Serve(s.h2ln)
	}()
	defer func() {
		s.h2ln.Close()
		<-h2done
	}()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				return http.ErrServerClosed
			}
			if retryableAccept(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "error", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		sc := s.newConn(c)
		if sc == nil {
			c.Close()
			continue
		}
		go sc.serve()
	}
}

// retryableAccept reports whether an Accept error is a passing shortage
// (out of file descriptors or buffers, a connection reset while queued)
// after which the listener must keep serving, as net/http's does.
func retryableAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *h1Server) newConn(c net.Conn) *serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return nil
	}
	sc := &serverConn{s: s, rwc: c, remote: c.RemoteAddr().String()}
	if gc, ok := c.(*guardConn); ok {
		sc.gc = gc
	}
	s.conns[sc] = struct{}{}
	s.wg.Add(1)
	return sc
}

func (s *h1Server) forget(sc *serverConn) {
	s.mu.Lock()
	delete(s.conns, sc)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting, closes idle connections, lets every request in
// flight finish (each connection closes after its current response), and
// waits for them until ctx ends. HTTP/2 connections get a GOAWAY.
func (s *h1Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutting.Store(true)
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	h2err := make(chan error, 1)
	go func() { h2err <- s.h2.Shutdown(ctx) }()
	allDone := make(chan struct{})
	go func() { s.wg.Wait(); close(allDone) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var err error
wait:
	for {
		s.closeIdle()
		s.closeNewH2()
		select {
		case <-allDone:
			break wait
		case <-ctx.Done():
			err = ctx.Err()
			if s.onCut != nil {
				s.onCut()
			}
			// Requests still waiting on their upstream are cancelled
			// first, so that one that has not begun its answer can
			// send a 503 before its connection closes.
			s.cancelAll()
			s.h2Handlers.cancelAll()
			select {
			case <-allDone:
			case <-time.After(cutGrace):
			}
			s.closeAll()
			<-allDone
			break wait
		case <-tick.C:
		}
	}
	if e := <-h2err; e != nil {
		// HTTP/2 streams are still running at the deadline (the HTTP/1
		// connections may all have finished): they are the drain's to
		// cut, and logged so, before Close cancels them.
		if s.onCut != nil && ctx.Err() != nil {
			s.onCut()
		}
		// Their requests cancelled (if the HTTP/1 connections were
		// done before the deadline, now), they answer while their
		// connections stand, for the cut grace; then the connections go.
		s.h2Handlers.cancelAll()
		s.h2Handlers.wait(cutGrace)
		// Connections whose streams all ended close as a graceful
		// shutdown closes them (their last frames written first: Close
		// alone could drop the 503s just answered); the rest go now.
		gctx, gcancel := context.WithTimeout(context.Background(), cutGrace)
		s.h2.Shutdown(gctx)
		gcancel()
		s.h2.Close()
		// The streams' handlers see their cancellation and end, their
		// requests logged, before the node closes its access log.
		s.h2Handlers.wait(cutGrace + time.Second)
		if err == nil {
			err = e
		}
	}
	s.stopParker()
	s.stop()
	return err
}

// handlerCount counts handlers running, and lets one wait for none.
type handlerCount struct {
	mu   sync.Mutex
	n    int
	zero chan struct{}      // closed when n comes to 0 while someone waits; nil otherwise
	cut  context.CancelFunc // cancels the running (and later) handlers' requests
}

// start counts a handler in; end counts it out.
func (c *handlerCount) start() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func (c *handlerCount) end() {
	c.mu.Lock()
	if c.n--; c.n == 0 && c.zero != nil {
		close(c.zero)
		c.zero = nil
	}
	c.mu.Unlock()
}

// cancelAll cancels the handlers' requests: those running, and any that
// starts after (the drain's cut is for good).
func (c *handlerCount) cancelAll() {
	if c.cut != nil {
		c.cut()
	}
}

// wait waits up to d for no handler to be running, and reports whether
// none is.
func (c *handlerCount) wait(d time.Duration) bool {
	c.mu.Lock()
	if c.n == 0 {
		c.mu.Unlock()
		return true
	}
	if c.zero == nil {
		c.zero = make(chan struct{})
	}
	z := c.zero
	c.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-z:
		return true
	case <-t.C:
		return false
	}
}

// Close closes the listener and every connection at once.
func (s *h1Server) Close() error {
	s.mu.Lock()
	s.shutting.Store(true)
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	s.closeAll()
	s.h2.Close()
	s.stopParker()
	s.stop()
	return nil
}

func (s *h1Server) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(connIdle, connClosed) {
			parked := s.unpark(c)
			c.rwc.Close()
			if parked {
				go c.resume() // to end it
			}
		}
	}
}

// cutGrace is how long requests cancelled at a drain's deadline have to
// answer before their connections are closed.
const cutGrace = 250 * time.Millisecond

// cancelAll cancels the request in flight on every connection.
func (s *h1Server) cancelAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if r := c.cur.Load(); r != nil {
			r.cancel()
		}
	}
}

func (s *h1Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.state.Store(connClosed)
		parked := s.unpark(c)
		c.closeNow()
		if parked {
			go c.resume() // to end it
		}
		if r := c.cur.Load(); r != nil {
			r.cancel()
		}
	}
}

// Connection states.
const (
	connNew    int32 = iota // accepted, not yet waiting for its first request
	connActive              // reading or serving a request
	connIdle                // waiting for the next request
	connClosed              // closed by Shutdown; the goroutine is ending
)

// newConnGrace is how long a connection accepted before a drain began, but
// not yet served, is given for a first byte that the client may well have
// sent already.
const newConnGrace = 100 * time.Millisecond

// serverConn is one client connection served by h1Server.
type serverConn struct {
	s        *h1Server
	rwc      net.Conn
	received atomic.Int64 // bytes read from rwc: a body read's progress
	gc       *guardConn
	remote   string
	// peer and peerStr are remote parsed (clientAddr), once per
	// connection rather than for every request.
	peer       netip.Addr
	peerStr    string
	peerParsed bool
	tls        *tls.ConnectionState
	state      atomic.Int32
	// clockHint, when not 0, is a monoNow reading a few microseconds old
	// that the connection's next write to the client takes for its
	// deadline check instead of a clock read: the lane's, when an answer
	// came whole. That write ends it (it may wait for the client), as do
	// the idle deadline and the next request.
	clockHint time.Duration

	br *bufio.Reader
	bw *bufio.Writer

	// The head of the request being read and its header map (reused
	// request after request).
	reqHead   *headBlock // while a head is read (headBlocks)
	reqHeader http.Header
	// spare is lent to each request's upstream response (respHeader).
	spare http.Header

	cur atomic.Pointer[requestContext] // the latest request's context

	// The disconnect watch (watch.go): after disconnectCheckAfter a
	// goroutine reads one byte from the connection (whose request body
	// has been read); an error means the client left and the request is
	// canceled, a byte is the next pipelined request and is kept in stash.
	// wmu guards closed, wdone and wfile; wreq and wdup are the serving
	// goroutine's, which watchDue reads once it has claimed the watch
	// (watch.go).
	wmu    sync.Mutex
	closed bool          // the connection is done: the watch must not start
	wreq   *requestState // the request being watched; nil between requests
	wdone  chan struct{} // closed when the watching read returns
	// wsched says startWatch ran since the last stopWatch (the serving
	// goroutine's own).
	wsched bool
	// wseq numbers the watches of the connection's requests; wcur is the
	// current request's (0 between requests), which the schedule's
	// entries are checked against, with watchClaimed once watchDue took it.
	wseq    uint64
	wcur    atomic.Uint64
	stash   [1]byte
	stashed bool
	// lead holds what a connection served the plain way read while it
	// waited for a request without its buffers (awaitRequest), until the
	// reader takes it; made for the first such wait.
	lead           []byte
	leadOff, leadN int
	broken         atomic.Bool // the client is gone
	hijacked       bool
	linger         bool // close with lingeringClose
	reset          bool // close with an RST (abortClose): an answer was cut whose end the close would have been
	noPool         bool // the buffers may still be in use: leave them to the GC
	cmu            sync.Mutex
	headStarted    bool   // the response's head is being written: no 100 Continue
	pendingBody    []byte // a response body not yet committed to a framing
	resp           response
	header         http.Header
	head           []byte    // the response head being built
	rdl            time.Time // the read deadline last set
	// idleFrom is when the connection last began to wait for a request
	// (monoNow).
	idleFrom time.Duration
	// Parking (h1park.go): parkNow says serveInline ended to park the
	// connection; noPark that it could not be parked (served on by its
	// goroutine). parked, parkFD (its socket), parkIdx (in the parker's
	// dues) and parkDue (its idle end) are the parker's, under its lock.
	parkNow bool
	noPark  bool
	parked  bool
	parkFD  int32
	parkIdx int
	parkDue time.Duration
	// wdlAt is monoNow when the send timeout's write deadline was last
	// pushed forward (see Write); wdlOwn means a handler or writeError set
	// a deadline of its own, which stays.
	wdlAt  time.Duration
	wdlOwn bool

	// Serving inside the poller's read (serveInline): inl says the
	// serving goroutine is in it, inlFD is the socket, inlineF the
	// function given to the poller (made once); inlReq and inlRS are a
	// request handed back to serve, inlDone says the connection is done.
	inl     bool
	inlFD   uintptr
	inlineF func(uintptr) bool
	inlReq  *http.Request
	inlRS   *requestState
	inlDone bool
	// inlMore says the last read inside the poller's read left bytes
	// (or the end) in the socket; inqOn that TCP_INQ is on for it.
	inlMore bool
	inqOn   bool
	// While inline, the disconnect watch peeks through a duplicate of the
	// socket (wfile), the socket's own reads being the serving
	// goroutine's: wdup says so for the watch in progress.
	wdup  bool
	wfile *os.File

	// The request served on the span lane (h1lane.go), lanePresentF its
	// lanePresent (made once), and whether the connection can take
	// another after one was served there (laneKeep).
	lane         laneRequest
	lanePresentF func()
	laneKeep     bool
}

// requestState is what the disconnect watch needs of a request.
type requestState struct {
	requestContext // the request's context
	// bodyOpen: the request has a body the handler has not read to its
	// end (set when the body is made, cleared at its end). Its zero
	// value, for a request without a body, takes no store.
	bodyOpen atomic.Bool
	watchOK  bool // neither an upgrade nor a body still being read
	// total is the context under the service's total timeout, for a
	// request on the span lane (a timedState's); nil if none.
	total *totalContext
}

// timedState is the state of a request on the span lane to a service with
// a total timeout, and that context, in one allocation.
type timedState struct {
	requestState
	total totalContext
}

// requestParts is what a request built from its head is made of beside its
// state.
type requestParts struct {
	url url.URL
	// values holds the header's values when they fit (headBlock.header).
	values [8]string
	req    http.Request
}

// builtRequest is a request's state and parts in one allocation.
type builtRequest struct {
	requestState
	requestParts
}

var (
	bufReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	bufWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

// dropBuffers gives the connection's reader and writer back to their pools
// while it waits for a request (see awaitRequest and h1inline.go), if
// neither holds anything and no reader of a body may still use the reader
// (noPool): an idle connection then costs 8 KiB less, and a request uses
// the buffers the last request on any connection used, still in the CPU's
// cache, rather than its own connection's.
func (c *serverConn) dropBuffers() {
	if c.br == nil || c.noPool || c.br.Buffered() > 0 || c.bw.Buffered() > 0 {
		return
	}
	c.br.Reset(nil)
	bufReaders.Put(c.br)
	c.bw.Reset(nil)
	bufWriters.Put(c.bw)
	c.br, c.bw = nil, nil
	idleDrops.Add(1)
}

// takeBuffers takes a reader and a writer for the connection from their
// pools if it gave its own back.
func (c *serverConn) takeBuffers() {
	if c.br != nil {
		return
	}
	c.br = bufReaders.Get().(*bufio.Reader)
	c.br.Reset(c)
	c.bw = bufWriters.Get().(*bufio.Writer)
	c.bw.Reset(c)
}

// idleDrops counts the times a connection gave its buffers back while idle
// (tests look at it).
var idleDrops atomic.Uint64

// awaitRequest waits for the connection's next request (under the idle
// deadline) without holding its buffers, as a connection served inline
// waits; it reports whether the request's first bytes came. They are read
// into lead, at most leadSize of them (a TLS connection keeps the rest of
// its record), and handed to the reader it then takes, so that a head that
// came whole is seen whole (headBuffered) as it would be in the buffer.
func (c *serverConn) awaitRequest() bool {
	c.dropBuffers()
	if c.br != nil {
		_, err := c.br.Peek(1)
		return err == nil
	}
	if c.lead == nil {
		c.lead = make([]byte, leadSize)
	}
	for {
		n, err := c.Read(c.lead)
		c.takeBuffers()
		if n > 0 {
			c.leadOff, c.leadN = 0, n
			c.br.Peek(1) // takes lead whole: the buffer is larger
			return true
		}
		if err != nil {
			return false
		}
		c.dropBuffers()
	}
}

// leadSize bounds what awaitRequest reads without the connection's buffers:
// most request heads, browsers' with their cookies included.
const leadSize = 1 << 10

// Read is the bufio.Reader's source: a byte read by the disconnect watch
// comes first.
func (c *serverConn) Read(p []byte) (int, error) {
	if c.stashed && len(p) > 0 {
		p[0] = c.stash[0]
		c.stashed = false
		return 1, nil
	}
	if c.leadOff < c.leadN {
		n := copy(p, c.lead[c.leadOff:c.leadN])
		c.leadOff += n
		return n, nil // counted as received when read
	}
	var n int
	var err error
	if c.inl {
		n, err = c.inlineRead(p)
	} else {
		n, err = c.rwc.Read(p)
	}
	c.received.Add(int64(n))
	if err != nil && err != io.EOF && err != errWouldBlock && !isTimeout(err) {
		// A reset, or the connection closed under us: the client is
		// gone, whatever was reading (a request head or a body).
		c.broken.Store(true)
	}
	return n, err
}

// Write is the bufio.Writer's sink. With a send timeout, every write has at
// least seven eighths of it to make progress: the write deadline is pushed
// forward when the last push is older than an eighth of it, so a write costs
// one clock read and a deadline update only every few seconds. A client that
// stops reading while the response is sent is cut off (nginx's
// send_timeout), rather than hold the request and its upstream connection
// forever.
func (c *serverConn) Write(p []byte) (int, error) {
	hint := c.clockHint
	c.clockHint = 0 // the write may wait: a reading after it is read anew
	if to := c.s.opts.SendTimeout; to > 0 && !c.wdlOwn && !c.hijacked {
		now := hint
		if now == 0 {
			now = monoNow()
		}
		if now-c.wdlAt > to/8 || c.wdlAt == 0 {
			c.rwc.SetWriteDeadline(monoBase.Add(now + to))
			c.wdlAt = now
		}
	}
	return c.rwc.Write(p)
}

func (c *serverConn) serve() { c.run(true) }

// resume serves a parked connection again (h1park.go) on a new goroutine:
// its client sent something, closed, or its idle time ran out, or the
// server is stopping.
func (c *serverConn) resume() { c.run(false) }

// run serves the connection, from its start (fresh) or from where it was
// parked, until it closes or parks.
func (c *serverConn) run(fresh bool) {
	for c.runBody(fresh) {
		if c.s.park(c) {
			return // the parker holds it now: nothing here touches c again
		}
		c.noPark = true // it could not be parked: served on here
		fresh = false
	}
}

// runBody serves the connection until it closes, and then closes it, or
// until it is to be parked (park), and then leaves it open.
func (c *serverConn) runBody(fresh bool) (park bool) {
	defer func() {
		if park {
			return
		}
		c.wmu.Lock()
		c.closed = true
		c.wmu.Unlock()
		if c.hijacked {
			return // forgotten when it was taken over
		}
		c.s.forget(c)
		if c.reset {
			abortClose(c.rwc)
		} else {
			if c.linger || c.clientSentMore() {
				c.lingeringClose()
			}
			c.rwc.Close()
		}
		if c.br != nil && !c.noPool {
			c.br.Reset(nil)
			bufReaders.Put(c.br)
			c.bw.Reset(nil)
			bufWriters.Put(c.bw)
		}
	}()
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.s.log.Error("panic serving a connection", "client", c.remote, "panic", fmt.Sprint(v), "stack", string(buf))
		}
	}()
	o := c.s.opts
	if tc, ok := c.tlsConn(); fresh && ok {
		c.rwc.SetDeadline(time.Now().Add(o.ReadHeaderTimeout))
		if err := tc.HandshakeContext(c.s.baseCtx); err != nil {
			var re tls.RecordHeaderError
			if errors.As(err, &re) && re.Conn != nil && httpRecordHeader(re.RecordHeader) {
				c.refusePlainHTTP(re.Conn)
				return
			}
			c.s.log.Debug("TLS handshake failed", "client", c.remote, "error", err)
			return
		}
		c.rwc.SetDeadline(time.Time{})
		st := tc.ConnectionState()
		c.tls = &st
		if st.NegotiatedProtocol == "h2" {
			c.handoff(nil)
			return
		}
	}
	defer func() {
		if r := c.cur.Load(); r != nil {
			r.cancel()
		}
	}()
	if fresh {
		c.br = bufReaders.Get().(*bufio.Reader)
		c.br.Reset(c)
		c.bw = bufWriters.Get().(*bufio.Writer)
		c.bw.Reset(c)
	} else if !c.unparked() {
		return false // its idle time ran out, or the server is stopping
	}
	first := fresh
	for {
		if !first && (c.br == nil || c.br.Buffered() == 0) && !c.stashed {
			// Keep-alive requests without a body are served inside the
			// poller's read (see serveInline); one it hands back (a body,
			// an upgrade) is served here, and a head still arriving is
			// read on below. (A parked connection comes back without
			// buffers: serveInline takes them.)
			req, rs, done := c.serveInline()
			if done {
				return c.parkNow
			}
			if req != nil {
				if req.Body != http.NoBody {
					c.setReadDeadline(time.Time{}) // as below
				}
				if !c.serveParsed(req, rs) {
					return
				}
				continue
			}
		}
		if c.br.Buffered() == 0 && !c.stashed {
			if first && c.s.shutting.Load() {
				// Accepted before the listener closed, served only
				// now (a loaded machine): what the client sent is
				// served, as net/http gives new connections a while,
				// rather than dropped unanswered and unlogged.
				c.setReadDeadline(time.Now().Add(newConnGrace))
				if _, err := c.br.Peek(1); err != nil {
					return
				}
				goto active
			}
			c.state.Store(connIdle)
			if c.s.shutting.Load() {
				return
			}
			if first {
				// A new connection owes its first request within the
				// header timeout, not the (longer) keep-alive idle one:
				// one that sends nothing is a slowloris.
				c.setReadDeadline(time.Now().Add(o.ReadHeaderTimeout))
				if _, err := c.br.Peek(1); err != nil {
					return
				}
			} else {
				c.idleDeadline()
				if !c.awaitRequest() {
					return
				}
			}
		}
	active:
		if st := c.state.Load(); st == connClosed || !c.state.CompareAndSwap(st, connActive) {
			return // closed by Shutdown
		}
		// The header deadline matters only if the head has yet to
		// arrive; usually it is all in the buffer already.
		headDeadline := !c.headBuffered()
		var headAt time.Duration // when a head that is still arriving began, for the log
		if headDeadline {
			now := time.Now()
			headAt = now.Sub(monoBase)
			c.setReadDeadline(now.Add(o.ReadHeaderTimeout))
		}
		if first {
			first = false
			if c.isH2Preface() {
				c.handoff(c.br)
				return
			}
		}
		req, rs, perr := c.readRequest()
		if perr != nil {
			c.refuse(perr, headAt)
			return
		}
		if req == nil { // served on the span lane
			if !c.laneKeep {
				return
			}
			continue
		}
		if headDeadline || req.Body != http.NoBody {
			// The body has no deadline here (the gateway bounds each
			// read of it: Options.ReadBodyTimeout); a request without
			// one keeps the idle deadline, which is far off.
			c.setReadDeadline(time.Time{})
		}
		if !c.serveParsed(req, rs) {
			return
		}
	}
}

// refuse answers a request refused while its head was read (headAt: when
// the head began to arrive, if it was not all there at once).
func (c *serverConn) refuse(perr *parseError, headAt time.Duration) {
	if perr.status != 0 {
		c.writeError(perr)
	}
	// Status 0: the client closed (or the drain cut) the connection with
	// part of a head sent, since a byte of it had arrived: logged too, as
	// nothing is answered.
	if c.s.refused != nil && !perr.quiet {
		perr.start = headAt
		c.s.refused(c.remote, c.tls, perr)
	}
}

// serveParsed serves a request whose head was read; it reports whether the
// connection can take another.
func (c *serverConn) serveParsed(req *http.Request, rs *requestState) bool {
	if req.Method == http.MethodOptions && (req.RequestURI == "*" || req.URL.IsAbs() && req.URL.Path == "" && req.URL.RawQuery == "") {
		// OPTIONS * asks about the server, not a resource: answered here,
		// as net/http does; so does OPTIONS http://host, which a proxy
		// would forward as OPTIONS * (RFC 9112 3.2.4).
		rs.cancel()
		h := c.s.optionsStar
		if h == nil {
			h = http.HandlerFunc(serveOptionsStar)
		}
		keep := c.serveRequest(req, rs, h)
		rs.releaseHead()
		return keep
	}
	keep := c.serveRequest(req, rs, c.s.handler)
	rs.releaseHead()
	return keep
}

// setReadDeadline sets the connection's read deadline and remembers it.
func (c *serverConn) setReadDeadline(t time.Time) {
	c.rwc.SetReadDeadline(t)
	c.rdl = t
}

// idleDeadline sets the keep-alive deadline while waiting for a request,
// unless one set less than an eighth of the idle timeout (at most a
// second) ago stands: a deadline costs a timer update, and keep-alive
// connections wait for a request after every response.
//
// Served inline, a connection that can be parked (h1park.go) waits only
// until it is time to park it.
func (c *serverConn) idleDeadline() {
	now := monoNow()
	c.clockHint = 0
	c.idleFrom = now
	horizon := c.s.opts.IdleTimeout
	if c.inl && c.canPark() {
		horizon = c.s.parkAfter
	}
	want := monoBase.Add(now + horizon) // one clock read, not two
	slack := min(time.Second, horizon/8)
	if d := want.Sub(c.rdl); c.rdl.IsZero() || d > slack || d < -slack {
		c.setReadDeadline(want)
	}
}

// canPark reports whether the connection is parked after parkAfter idle.
func (c *serverConn) canPark() bool {
	return c.s.parkAfter > 0 && !c.noPark
}

// parkDueNow reports, after the read waiting for a request ended with err,
// whether the connection is to be parked: its wait until parkAfter ended
// with its idle time not over, nothing buffered.
func (c *serverConn) parkDueNow(err error) bool {
	return c.canPark() && errors.Is(err, os.ErrDeadlineExceeded) && c.br == nil &&
		c.state.Load() == connIdle && !c.s.shutting.Load() && monoNow() < c.idleFrom+c.s.opts.IdleTimeout
}

// unparked readies a connection resumed from the parker, or kept by its
// goroutine when it could not be parked: false if it is to close (its idle
// time is over, or the server is stopping).
func (c *serverConn) unparked() bool {
	end := c.idleFrom + c.s.opts.IdleTimeout
	if c.state.Load() == connClosed || c.s.shutting.Load() || monoNow() >= end {
		return false
	}
	c.setReadDeadline(monoBase.Add(end))
	return true
}

// headBuffered reports whether a whole request head is in the buffer.
func (c *serverConn) headBuffered() bool {
	b, _ := c.br.Peek(c.br.Buffered())
	for len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
		b = b[1:] // empty lines before a request (RFC 9112 2.2)
	}
	return bytes.Contains(b, crlfcrlf)
}

var crlfcrlf = []byte("\r\n\r\n")

func serveOptionsStar(w http.ResponseWriter, r *http.Request) {
	w.Header()["Content-Length"] = []string{"0"}
}

func (c *serverConn) tlsConn() (*tls.Conn, bool) {
	conn := c.rwc
	if c.gc != nil {
		conn = c.gc.Conn
	}
	tc, ok := conn.(*tls.Conn)
	return tc, ok
}

const h2Preface = "PRI * HTTP/2.0"

// isH2Preface reports whether the connection starts with HTTP/2's preface
// (prior knowledge). Any HTTP/1 request that starts with "P" has a request
// line at least as long as the preface's, so the peek does not wait for
// bytes a valid client would not send.
func (c *serverConn) isH2Preface() bool {
	b, _ := c.br.Peek(1)
	if len(b) == 0 || b[0] != 'P' {
		return false
	}
	b, _ = c.br.Peek(len(h2Preface))
	return string(b) == h2Preface
}

// handoff gives the connection to the HTTP/2 server; buffered are the
// bytes already read from it.
func (c *serverConn) handoff(buffered *bufio.Reader) {
	var conn net.Conn = c.rwc
	if buffered != nil {
		conn = &handoffConn{Conn: c.rwc, gc: c.gc, r: buffered}
	}
	c.rwc.SetDeadline(time.Time{})
	if c.s.h2ln.deliver(conn) {
		c.hijacked = true // net/http owns it now
		c.s.forget(c)
	}
}

// serveRequest runs the handler for one request and finishes its
// response; it reports whether the connection can take another request.
func (c *serverConn) serveRequest(req *http.Request, rs *requestState, h http.Handler) (keep bool) {
	rs.start = monoNow()
	rs.respHeader = c.spareHeader()
	w := c.beginResponse(req, rs)
	if rs.watchOK {
		c.startWatch(rs)
	}
	return c.runResponse(req, rs, w, h)
}

// spareHeader returns the connection's spare header map, to be lent to a
// request's upstream response. It is emptied by the transport before it
// fills it (parseResponse), not here: most answers come lean, without a
// map, and a look at the map itself is a cache miss (the connection's
// state is cold when its next request comes).
func (c *serverConn) spareHeader() http.Header {
	if c.spare == nil {
		c.spare = make(http.Header)
	}
	return c.spare
}

// beginResponse readies the connection's response to req.
func (c *serverConn) beginResponse(req *http.Request, rs *requestState) *response {
	// The response and its header map are the connection's, reused
	// request after request (a handler must not keep them after it
	// returns, as with net/http).
	// Made small (a hint above 8 makes a map of tables, which clear
	// costs more); the proxy usually adopts its upstream's map instead.
	if c.header == nil {
		c.header = make(http.Header)
	} else if len(c.header) > 0 {
		clear(c.header)
	}
	c.resp = response{c: c, req: req, contentLength: -1, rs: rs, header: c.header}
	w := &c.resp
	c.cmu.Lock()
	c.headStarted = false
	c.cmu.Unlock()
	w.closeAfter = req.Close || c.s.shutting.Load()
	rs.resp = w
	return w
}

// runResponse runs h for req, whose response w is begun and whose watch
// (if any) started, and finishes the response; it reports whether the
// connection can take another request.
func (c *serverConn) runResponse(req *http.Request, rs *requestState, w *response, h http.Handler) (keep bool) {
	panicked := true
	defer func() {
		if panicked {
			v := recover()
			c.stopWatch()
			rs.cancel()
			if v != nil && v != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.s.log.Error("panic serving a request", "client", c.remote, "method", req.Method, "uri", req.RequestURI, "panic", fmt.Sprint(v), "stack", string(buf))
			}
			switch {
			case c.hijacked:
			case !w.headerSent && v != http.ErrAbortHandler:
				// Nothing was sent yet: say so rather than hang up.
				c.writeError(&parseError{status: http.StatusInternalServerError, title: "Internal Server Error", detail: "the gateway failed while handling the request"})
			default:
				// Send what was written, without the end of the body, so
				// the client sees the response cut short; where the close
				// would end the body (an HTTP/1.0 client's answer of
				// unknown length), it is a reset, which no client takes
				// for the end.
				c.bw.Flush()
				c.reset = w.headerSent && w.closeDelimited()
			}
			keep = false
		}
	}()
	h.ServeHTTP(w, req)
	panicked = false
	c.stopWatch()
	rs.cancel()
	if c.hijacked {
		return false
	}
	if !w.wroteHeader && c.broken.Load() {
		// The disconnect watch saw the client's end of the connection and
		// the handler gave up without an answer. Writing the default 200
		// would tell a client that only half-closed (shutdown after its
		// request) that a request canceled on its behalf succeeded, with
		// an empty body: close without a word instead, as nginx does.
		return false
	}
	if !w.finish() {
		return false
	}
	return !w.closeAfter && !c.broken.Load()
}

// stopWatch ends the watch of the current request, waiting for a watching
// read to return (it is cut short with a past deadline).
func (c *serverConn) stopWatch() {
	if !c.wsched {
		return // no watch since the last stop
	}
	c.wsched = false
	// Its schedule entry, if still queued, is now stale.
	if c.wcur.Swap(0)&watchClaimed == 0 {
		// Never claimed by watchDue, which now cannot: nothing to undo.
		c.wreq = nil
		return
	}
	c.wmu.Lock() // watchDue may still be setting the watch up
	done, f := c.wdone, c.wfile
	c.wreq = nil
	c.wdone, c.wfile = nil, nil
	c.wmu.Unlock()
	if f != nil {
		f.SetReadDeadline(aLongTimeAgo) // the duplicate is closed as its watch ends
		<-done
		return
	}
	if done != nil {
		c.rwc.SetReadDeadline(aLongTimeAgo)
		<-done
		c.setReadDeadline(time.Time{})
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// errWouldBlock is a read inside the poller's read that found nothing yet
// (see h1inline.go).
var errWouldBlock = errors.New("no data yet")

// parseError is a request the server refuses before any handler sees it.
type parseError struct {
	status int // 0: just close
	title  string
	detail string
	// What the request said before it was refused, as far as it was
	// read: for its access log line.
	method, target, proto, host string
	sent                        int           // body bytes of the answer
	start                       time.Duration // monoNow when the head began to arrive, 0 if unknown
	quiet                       bool          // not a request: not logged
	reqID                       string        // the answer's request_id, for the log line too
}

// about notes the parts of the request read before the refusal.
func (pe *parseError) about(method, target, proto, host string) *parseError {
	pe.method, pe.target, pe.proto, pe.host = method, target, proto, host
	return pe
}

func badRequest(detail string) *parseError {
	return &parseError{status: http.StatusBadRequest, title: "Bad Request", detail: detail}
}

// writeError answers a refused request with a problem+json body and
// closes the connection.
func (c *serverConn) writeError(pe *parseError) {
	c.rwc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.wdlOwn = true
	bw := c.bw
	if bw == nil {
		bw = bufio.NewWriterSize(c.rwc, 512)
	}
	writeRefusal(bw, pe)
	bw.Flush()
	c.linger = true
}

// writeRefusal writes the answer to a refused head (a problem, and the
// connection's close), noting its request id and body size in pe for the
// log line.
func writeRefusal(w io.StringWriter, pe *parseError) {
	pe.reqID = newID()
	body, _ := json.Marshal(problem{Type: "about:blank", Title: pe.title, Status: pe.status, Detail: pe.detail, RequestID: pe.reqID})
	body = append(body, '\n')
	pe.sent = len(body)
	w.WriteString(statusLine(pe.status))
	w.WriteString("Content-Type: application/problem+json\r\nCache-Control: no-store\r\nConnection: close\r\nDate: ")
	w.WriteString(httpDate())
	w.WriteString("\r\nContent-Length: ")
	w.WriteString(strconv.Itoa(len(body)))
	w.WriteString("\r\n\r\n")
	w.WriteString(string(body))
}

// httpRecordHeader reports whether what came where a TLS record header
// should be is the start of an HTTP/1 request (net/http looks for the
// same five bytes).
func httpRecordHeader(h [5]byte) bool {
	switch string(h[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH":
		return true
	}
	return false
}

// refusePlainHTTP answers a plain HTTP request sent to the TLS port, on
// raw (the connection under TLS), with a 400 that says so, as nginx and
// net/http do, rather than a silent close; it is logged like any refused
// head. The rest of the request is read away before the close (for a
// while), so that the close does not reset the answer away.
func (c *serverConn) refusePlainHTTP(raw net.Conn) {
	pe := badRequest("a plain HTTP request on the HTTPS port: use https://")
	raw.SetDeadline(time.Now().Add(2 * time.Second))
	bw := bufio.NewWriterSize(raw, 512)
	writeRefusal(bw, pe)
	bw.Flush()
	if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		io.Copy(io.Discard, io.LimitReader(raw, 64<<10))
	}
	if c.s.refused != nil {
		c.s.refused(c.remote, nil, pe)
	}
}

// clientSentMore reports whether the client sent bytes the server did not
// read (a request pipelined behind one answered with a close, say):
// closing on them would send a reset, as would closing before more come.
func (c *serverConn) clientSentMore() bool {
	if c.stashed || c.leadOff < c.leadN || c.br != nil && c.br.Buffered() > 0 {
		return true
	}
	more := false
	var b [1]byte
	// Not under the read lock: a reader left behind must not hold this up.
	socketControl(c.rwc, func(fd uintptr) { more = peekSome(fd, b[:]) })
	return more
}

// lingeringClose lets the client read the last answer before the close:
// closing with unread bytes in the socket would send a reset, which can
// destroy the answer in flight. It stops sending, then reads and drops
// what the client still sends, for a moment.
func (c *serverConn) lingeringClose() {
	closeWrite(c.rwc)
	c.rwc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.Copy(io.Discard, c.rwc)
}

// readLine returns the next line without its CRLF (or LF). The slice is
// valid until the next read. n counts the header bytes read so far and is
// held to the limit.
func (c *serverConn) readLine(n *int) ([]byte, *parseError) {
	line, err := readLineLimited(c.br, &c.reqHead.line, n, c.s.opts.MaxHeaderBytes)
	if err != nil {
		return nil, c.lineError(err)
	}
	return line, nil
}

// lineError is the answer to a failure reading a request head.
func (c *serverConn) lineError(err error) *parseError {
	switch {
	case err == errLineTooLong:
		return &parseError{status: http.StatusRequestHeaderFieldsTooLarge, title: "Request Header Fields Too Large", detail: "the request line and headers exceed " + strconv.Itoa(c.s.opts.MaxHeaderBytes) + " bytes"}
	case isTimeout(err):
		return &parseError{status: http.StatusRequestTimeout, title: "Request Timeout", detail: "the request headers did not arrive in time"}
	}
	return &parseError{} // the client closed or went away
}

// readRequest reads and checks one request's line and headers and sets up
// its body.
// A request served on the span lane while it was read (h1lane.go) is
// returned as none: nil, nil, nil, with laneKeep saying whether the
// connection can take another.
func (c *serverConn) readRequest() (*http.Request, *requestState, *parseError) {
	c.clockHint = 0 // a pipelined request's: the last one's answer has gone
	c.reqHead = getHeadBlock()
	req, rs, pe := c.parseRequest()
	if pe == nil && req == nil {
		putHeadBlock(c.reqHead)
		c.reqHead = nil
		return nil, nil, nil
	}
	if pe == nil && req.Body == http.NoBody && rs.watchOK {
		// Served to its end before the next head is read (serveParsed),
		// and nothing reads into the head block meanwhile: it stays for
		// the lean path (h1lean.go) until then.
		rs.head = c.reqHead
	} else {
		putHeadBlock(c.reqHead)
	}
	c.reqHead = nil
	return req, rs, pe
}

// releaseHead gives back the head readRequest kept for a bodyless
// request, once it is served.
func (rs *requestState) releaseHead() {
	if rs.head != nil {
		putHeadBlock(rs.head)
		rs.head = nil
	}
}

// parseRequest is readRequest with c.reqHead to gather the head in.
func (c *serverConn) parseRequest() (*http.Request, *requestState, *parseError) {
	rl, perr := c.parseHead()
	if perr != nil {
		return nil, nil, perr
	}
	if c.s.lane != nil {
		if served, keep := c.s.lane.serveLane(c, rl); served {
			c.laneKeep = keep
			return nil, nil, nil // served (readRequest)
		}
	}
	req, rs, perr := c.buildRequest(rl)
	if perr == nil {
		rs.line = rl
	}
	return req, rs, perr
}

// tlsHandshakeRecord is the first byte of a TLS record carrying a
// handshake message, such as a ClientHello (RFC 8446 5.1).
const tlsHandshakeRecord = 0x16

// requestLine locates the request line's parts in c.reqHead's buffer once
// parseHead has gathered the head: the method is buf[:sp1], the target
// buf[targetAt:targetEnd]; the fields follow.
type requestLine struct {
	sp1, targetAt, targetEnd int
	major, minor             int
	proto                    string
}

// parseHead reads a request head into c.reqHead: the request line checked
// (method, target bytes, version) and every field line checked by
// readFields. What the fields say together (Host, framing, Connection,
// Expect) is buildRequest's.
func (c *serverConn) parseHead() (requestLine, *parseError) {
	var n int
	var line []byte
	var perr *parseError
	for empty := 0; ; empty++ {
		b, err := c.br.Peek(1)
		if err == nil && b[0] == tlsHandshakeRecord {
			// A TLS client on the plain port: its ClientHello may hold
			// no line end, so the request line's read would wait for
			// the header timeout. Refused at once instead, as nginx
			// refuses a request line that cannot begin so.
			return requestLine{}, badRequest("a TLS handshake on a plain HTTP port: use https:// on the TLS port")
		}
		if err != nil {
			perr = c.lineError(err) // as readLine's would be
		} else {
			line, perr = c.readLine(&n)
		}
		if perr != nil {
			if perr.status == http.StatusRequestHeaderFieldsTooLarge {
				// The request line alone is over the limit: a target
				// too long to read (RFC 9112 3).
				perr.status, perr.title = http.StatusRequestURITooLong, "URI Too Long"
				perr.detail = "the request line exceeds " + strconv.Itoa(c.s.opts.MaxHeaderBytes) + " bytes"
			}
			if perr.status == 0 && empty > 0 {
				// Closed after empty lines only (some clients end a
				// body with an extra CRLF): no request was begun.
				perr.quiet = true
			}
			return requestLine{}, perr
		}
		if len(line) > 0 {
			break
		}
		if empty >= 4 {
			return requestLine{}, badRequest("empty lines instead of a request")
		}
	}
	// The request line: method SP request-target SP HTTP-version.
	sp1 := indexByte(line, ' ')
	if sp1 <= 0 {
		return requestLine{}, badRequest("malformed request line")
	}
	rest := line[sp1+1:]
	sp2 := indexByte(rest, ' ')
	if sp2 <= 0 {
		pe := badRequest("malformed request line")
		if validToken(line[:sp1]) && sp2 < 0 && !hasControlChar(rest) {
			// "GET /x" with no version (HTTP/0.9's form): the log line
			// says what was asked.
			pe.about(string(line[:sp1]), string(rest), "", "")
		}
		return requestLine{}, pe
	}
	methodB, targetB, protoB := line[:sp1], rest[:sp2], rest[sp2+1:]
	if !validToken(methodB) {
		// Logged as read (escaped), as a target with a control byte is.
		return requestLine{}, badRequest("malformed method").about(string(methodB), string(targetB), "", "")
	}
	var major, minor int
	switch string(protoB) {
	case "HTTP/1.1":
		major, minor = 1, 1
	case "HTTP/1.0":
		major, minor = 1, 0
	default:
		// HTTP-version = "HTTP/" DIGIT "." DIGIT (RFC 9112 2.3): a
		// well-formed version other than 1.x is not supported; anything
		// else is malformed.
		isDigit := func(b byte) bool { return '0' <= b && b <= '9' }
		if len(protoB) != 8 || string(protoB[:5]) != "HTTP/" || !isDigit(protoB[5]) || protoB[6] != '.' || !isDigit(protoB[7]) {
			return requestLine{}, badRequest("malformed HTTP version").about(string(methodB), string(targetB), "", "")
		}
		if protoB[5] != '1' {
			return requestLine{}, (&parseError{status: http.StatusHTTPVersionNotSupported, title: "HTTP Version Not Supported", detail: "this listener speaks HTTP/1.x and HTTP/2"}).about(string(methodB), string(targetB), string(protoB), "")
		}
		major, minor = 1, int(protoB[7]-'0')
	}
	// The version's bytes live in a buffer the header lines reuse.
	proto := protoString(major, minor, protoB)
	for _, b := range targetB {
		if b <= ' ' || b == 0x7f {
			// Logged as read (the access log escapes it), as nginx logs
			// such a request line.
			return requestLine{}, badRequest("the request target has a control character or space").about(string(methodB), string(targetB), proto, "")
		}
	}
	// Gather the header block: the method and target first, so that one
	// string holds them and every field.
	hb := c.reqHead
	hb.buf = append(hb.buf[:0], methodB...)
	hb.buf = append(hb.buf, ' ')
	targetAt := len(hb.buf)
	hb.buf = append(hb.buf, targetB...)
	if err := hb.readFields(c.br, &n, c.s.opts.MaxHeaderBytes, maxHeaderFields, true); err != nil {
		var fe *fieldError
		var pe *parseError
		switch {
		case errors.As(err, &fe):
			pe = badRequest(fe.why)
		case err == errTooManyFields:
			pe = &parseError{status: http.StatusRequestHeaderFieldsTooLarge, title: "Request Header Fields Too Large", detail: "too many header fields"}
		default:
			pe = c.lineError(err)
		}
		return requestLine{}, pe.about(string(hb.buf[:sp1]), string(hb.buf[targetAt:targetAt+len(targetB)]), proto, hb.hostSoFar())
	}
	return requestLine{sp1: sp1, targetAt: targetAt, targetEnd: targetAt + len(targetB), major: major, minor: minor, proto: proto}, nil
}

// buildRequest makes the request of the head parseHead read, or refuses it
// for what its fields say together.
func (c *serverConn) buildRequest(rl requestLine) (*http.Request, *requestState, *parseError) {
	// The request's state and parts are made here so that its header
	// values can share their allocation.
	b := &builtRequest{}
	return c.buildRequestIn(rl, &b.requestState, &b.requestParts)
}

// buildRequestIn is buildRequest with the request's state and parts given
// (the span lane's request made into a present one, h1lane.go).
func (c *serverConn) buildRequestIn(rl requestLine, rs *requestState, parts *requestParts) (*http.Request, *requestState, *parseError) {
	hb := c.reqHead
	sp1, major, minor, proto := rl.sp1, rl.major, rl.minor, rl.proto
	block := string(hb.buf)
	method := block[:sp1]
	target := block[rl.targetAt:rl.targetEnd]
	// The map is the connection's, reused request after request: a
	// handler must not keep the request after it returns (as with the
	// ResponseWriter). Values are new for each request.
	if c.reqHeader == nil {
		c.reqHeader = make(http.Header)
	} else {
		clear(c.reqHeader)
	}
	header, fr, err := hb.header(c.reqHeader, block, true, parts.values[:])
	if err != nil {
		return nil, nil, badRequest(err.Error()).about(method, target, proto, "")
	}
	hosts, host, cls, tes, clVal, te := fr.hosts, fr.host, fr.cls, fr.tes, fr.clVal, fr.te
	if hosts > 1 {
		return nil, nil, badRequest("more than one Host header").about(method, target, proto, host)
	}
	if hosts == 0 && minor >= 1 {
		return nil, nil, badRequest("an HTTP/1.1 request needs a Host header").about(method, target, proto, host)
	}
	if !validHost(host) {
		return nil, nil, badRequest("the Host is not a valid host[:port] (RFC 9112 3.2)").about(method, target, proto, host)
	}
	// The request is built on the stack; WithContext below makes the one
	// heap copy.
	req := &http.Request{
		Method:     method,
		ProtoMajor: major,
		ProtoMinor: minor,
		Header:     header,
		Host:       host,
		RemoteAddr: c.remote,
		RequestURI: target,
		TLS:        c.tls,
	}
	req.Proto = proto
	switch {
	case target == "*" && method == http.MethodOptions:
		req.URL = &url.URL{Path: "*"}
	case method == http.MethodConnect && target[0] != '/':
		req.URL = &url.URL{Host: target}
	case parseOriginForm(target, &parts.url):
		req.URL = &parts.url
	default:
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return nil, nil, badRequest("malformed request target").about(method, target, proto, host)
		}
		if target[0] != '/' {
			// Absolute form (RFC 9112 3.2.2): an http or https URI
			// with a host and no userinfo (RFC 9110 4.2.1, 4.2.4).
			// Anything else (another scheme, an authority form outside
			// CONNECT, "http:///x") would be routed by its path alone.
			switch {
			case !strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(u.Scheme, "https"), u.Opaque != "":
				return nil, nil, badRequest("the request target is neither a path nor an http(s) URI").about(method, target, proto, host)
			case u.Host == "":
				return nil, nil, badRequest("an http(s) URI with no host as the request target").about(method, target, proto, host)
			case u.User != nil:
				return nil, nil, badRequest("userinfo in the request target").about(method, target, proto, host)
			}
		}
		if u.Host != "" {
			// Absolute form: its authority replaces Host (RFC 9112
			// 3.2.2), checked as Host is.
			if !validHost(u.Host) {
				return nil, nil, badRequest("malformed authority in the request target").about(method, target, proto, host)
			}
			req.Host = u.Host
		}
		req.URL = u
	}
	// Connection management.
	var conn []string
	if fr.connection {
		conn = header["Connection"]
	}
	if len(conn) > 0 {
		if hasToken(conn, "close") {
			req.Close = true
		} else if minor == 0 && !hasToken(conn, "keep-alive") {
			req.Close = true
		}
	} else if minor == 0 {
		req.Close = true
	}
	// Framing (RFC 9112 6).
	switch {
	case tes > 0 && cls > 0:
		return nil, nil, badRequest("request has both Content-Length and Transfer-Encoding; refused as a request smuggling attempt").about(method, target, proto, host)
	case tes > 0:
		if minor == 0 {
			return nil, nil, badRequest("Transfer-Encoding in an HTTP/1.0 request; refused as a request smuggling attempt").about(method, target, proto, host)
		}
		if !chunkedOnly(tes, te) {
			detail := "unsupported Transfer-Encoding " + strconv.Quote(te)
			if tes > 1 {
				detail = "Transfer-Encoding given " + strconv.Itoa(tes) + " times; only a single \"chunked\" is supported"
			}
			return nil, nil, (&parseError{status: http.StatusNotImplemented, title: "Not Implemented", detail: detail}).about(method, target, proto, host)
		}
		req.ContentLength = -1
		req.TransferEncoding = []string{"chunked"}
		tr, err := declaredTrailers(header, true)
		if err != nil {
			return nil, nil, badRequest(err.Error()).about(method, target, proto, host)
		}
		req.Trailer = tr
		req.Body = &chunkedBody{c: c, rs: rs, cr: chunkedReader{br: c.br, maxTrailer: c.s.opts.MaxHeaderBytes, strict: true}}
		rs.bodyOpen.Store(true)
	case cls > 0:
		n, ok := parseContentLength(clVal)
		if !ok {
			return nil, nil, badRequest("malformed Content-Length "+strconv.Quote(clVal)).about(method, target, proto, host)
		}
		req.ContentLength = n
		if n > 0 {
			lb := &lengthBody{c: c, rs: rs, remain: n}
			rs.bodyOpen.Store(true)
			lb.left.Store(n)
			req.Body = lb
		}
	}
	if req.Body == nil {
		req.Body = http.NoBody
	}
	var ex []string
	if fr.expect {
		ex = header["Expect"]
	}
	if len(ex) > 0 {
		// A list (RFC 9110 10.1.1): empty members are none (5.6.1), and
		// 100-continue, said once or more, the one the gateway meets.
		cont := false
		for _, v := range ex {
			for v != "" {
				var m string
				m, v, _ = strings.Cut(v, ",")
				switch m = strings.Trim(m, " \t"); {
				case m == "":
				case strings.EqualFold(m, "100-continue"):
					cont = true
				default:
					return nil, nil, (&parseError{status: http.StatusExpectationFailed, title: "Expectation Failed", detail: "unsupported Expect " + strconv.Quote(strings.Join(ex, ", "))}).about(method, target, proto, host)
				}
			}
		}
		if cont && minor >= 1 && req.Body != http.NoBody {
			switch b := req.Body.(type) {
			case *lengthBody:
				b.expect = true
				b.waiting.Store(true)
			case *chunkedBody:
				b.expect = true
				b.waiting.Store(true)
			}
		}
	}
	rs.watchOK = !fr.upgrade
	if !c.peerParsed {
		c.peer, c.peerStr = clientAddr(c.remote)
		c.peerParsed = true
	}
	ctx := &rs.requestContext
	ctx.parsed, ctx.peer, ctx.peerStr = true, c.peer, c.peerStr
	ctx.headerValues = fr.values
	c.cur.Store(ctx)
	// WithContext's copy, inlined, stays on the stack: the request lives
	// in its state's allocation.
	parts.req = *req.WithContext(ctx)
	out := &parts.req
	if b, ok := out.Body.(*chunkedBody); ok {
		b.req = out
		b.cr.trailer = &out.Trailer
	}
	return out, rs, nil
}

// parseOriginForm is url.ParseRequestURI for the common request target:
// an origin-form path of characters that need no escaping, and a query.
// It reports false, leaving u alone, for anything else (percent-encoding,
// characters url.URL would escape, an empty query), which the caller
// parses in full.
func parseOriginForm(target string, u *url.URL) bool {
	if target == "" || target[0] != '/' {
		return false
	}
	path, query, hasQuery := strings.Cut(target, "?")
	if hasQuery && query == "" {
		return false // ForceQuery
	}
	for i := 0; i < len(path); i++ {
		if !pathByteAsIs[path[i]] {
			return false
		}
	}
	*u = url.URL{Path: path, RawQuery: query}
	return true
}

// pathByteAsIs marks the bytes url.URL keeps unescaped in a path (see
// net/url's shouldEscape for encodePath).
var pathByteAsIs = func() (t [256]bool) {
	for c := range 256 {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			t[c] = true
		case strings.IndexByte("-_.~$&+,/:;=@", byte(c)) >= 0:
			t[c] = true
		}
	}
	return t
}()

func protoString(major, minor int, b []byte) string {
	switch {
	case major == 1 && minor == 1:
		return "HTTP/1.1"
	case major == 1 && minor == 0:
		return "HTTP/1.0"
	}
	return string(b)
}

func parseContentLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b < '0' || b > '9' {
			return 0, false
		}
		n = n*10 + int64(b-'0')
	}
	return n, true
}

// hasToken reports whether a comma-separated header has token, case
// insensitively.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// tokenChars are the bytes of an RFC 9110 token.
var tokenChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func validToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChars[c] {
			return false
		}
	}
	return true
}

// lengthBody is a request body of known length.
//
// An upstream transport may still read a body after the handler returned
// (an upstream that answered before reading it all), so reads are
// serialized with the server's own discard, after which they fail.
type lengthBody struct {
	mu     sync.Mutex
	c      *serverConn
	rs     *requestState
	remain int64
	expect bool // send 100 Continue before the first read
	err    error
	closed bool // by the handler, or the response is finished
	// For the response's decisions without the lock (a reader may hold
	// it while it waits for the client): bytes left, and whether the
	// client still waits for 100 Continue.
	left    atomic.Int64
	waiting atomic.Bool
	// lent: handed to a reader on another goroutine (lend).
	lent atomic.Bool
}

// lend says the handler passes the body to a reader on another goroutine
// (an upstream transport's body writer), which may start, pause, give up
// on it or close it at any moment, before or after the head goes out.
func (b *lengthBody) lend() { b.lent.Store(true) }

// atHand reports whether a read would return at once (bodyAtHand): the
// body has ended or failed, or some of it is buffered and the client does
// not wait for 100 Continue.
func (b *lengthBody) atHand() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.remain == 0 || b.err != nil || b.closed || !b.expect && b.c.br.Buffered() > 0
}

func (b *lengthBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.read(p)
}

func (b *lengthBody) read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.remain == 0 {
		return 0, io.EOF
	}
	if b.expect {
		b.expect = false
		b.waiting.Store(false)
		if err := b.c.sendContinue(); err != nil {
			b.err = err
			return 0, err
		}
	}
	if int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.c.br.Read(p)
	b.remain -= int64(n)
	b.left.Store(b.remain)
	if b.remain == 0 {
		b.rs.bodyOpen.Store(false)
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

func (b *lengthBody) Close() error {
	if !b.mu.TryLock() {
		b.c.interruptBodyRead()
		b.mu.Lock()
	}
	b.closed = true
	b.mu.Unlock()
	return nil
}

// interruptBodyRead ends a read of the request body that is waiting for
// the client, when whoever reads the body (an upstream transport's body
// writer) closes it: the upstream has answered or reset its stream, and
// net/http's HTTP/2 transport waits for that read before it returns, so a
// client stalling its body would hold the answer. The body is then left
// unread, and the connection closes after the answer.
func (c *serverConn) interruptBodyRead() {
	c.rwc.SetReadDeadline(aLongTimeAgo)
}

// discard ends the handler's use of the body and reads what is left of
// it, if that is little; it reports whether the connection can go on.
func (b *lengthBody) discard() bool {
	if left := b.left.Load(); left > maxDiscardBody || left > 0 && b.waiting.Load() {
		return false // not worth reading, or never coming
	}
	// The head promised to keep the connection (unreadBodyForcesClose:
	// the body was the handler's alone, or its rest is here), so the rest
	// is worth waiting for.
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.remain == 0 {
		return b.err == nil
	}
	if b.err != nil || b.expect || b.remain > maxDiscardBody {
		return false
	}
	n, err := b.c.br.Discard(int(b.remain))
	b.remain -= int64(n)
	b.left.Store(b.remain)
	return err == nil && b.remain == 0
}

// chunkedBody is a request body in chunked coding (RFC 9112 7.1).
type chunkedBody struct {
	mu     sync.Mutex
	c      *serverConn
	rs     *requestState
	req    *http.Request
	cr     chunkedReader
	expect bool
	closed bool
	// Without the lock: the client still waits for 100 Continue; the
	// body has ended.
	waiting atomic.Bool
	ended   atomic.Bool
}

// progress counts the bytes the connection has received (progresser).
func (b *chunkedBody) progress() int64 { return b.c.received.Load() }
func (b *lengthBody) progress() int64  { return b.c.received.Load() }

// atHand reports whether a read would return at once (bodyAtHand): the
// body has ended, or the client does not wait for 100 Continue and what is
// buffered makes a read return (chunkedReader.readReady: data, the end, or
// framing already malformed, so that such a request fails before its head
// goes anywhere).
func (b *chunkedBody) atHand() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ended.Load() || b.closed {
		return true
	}
	if b.expect {
		return false
	}
	buf, _ := b.c.br.Peek(b.c.br.Buffered())
	return b.cr.readReady(buf)
}

func (b *chunkedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.read(p)
}

func (b *chunkedBody) read(p []byte) (int, error) {
	if b.cr.err != nil {
		return 0, b.cr.err
	}
	if b.expect {
		b.expect = false
		b.waiting.Store(false)
		if err := b.c.sendContinue(); err != nil {
			b.cr.err = err
			return 0, err
		}
	}
	n, err := b.cr.Read(p)
	if err == io.EOF {
		b.rs.bodyOpen.Store(false)
		b.ended.Store(true)
	}
	return n, err
}

func (b *chunkedBody) Close() error {
	if !b.mu.TryLock() {
		b.c.interruptBodyRead() // see there
		b.mu.Lock()
	}
	b.closed = true
	b.mu.Unlock()
	return nil
}

// restBuffered reports whether the body has ended or its rest is all in
// the connection's buffer. It does not wait for a reader of the body.
func (b *chunkedBody) restBuffered() bool {
	if b.ended.Load() {
		return true
	}
	if b.waiting.Load() || !b.mu.TryLock() {
		return false
	}
	defer b.mu.Unlock()
	buf, _ := b.c.br.Peek(b.c.br.Buffered())
	return b.cr.err == nil && b.cr.restBuffered(buf)
}

func (b *chunkedBody) discard() bool {
	if b.waiting.Load() {
		return false // never coming
	}
	// The head promised to keep the connection: the rest was buffered
	// (unreadBodyForcesClose), so this does not wait for the client.
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.expect {
		return false
	}
	start := b.cr.taken
	var buf [4096]byte
	for {
		if b.cr.taken-start > maxDiscardBody {
			return false
		}
		if _, err := b.read(buf[:]); err == io.EOF {
			return true
		} else if err != nil {
			return false
		}
	}
}

// sendContinue answers Expect: 100-continue when the handler first reads
// the body, unless the final response has begun. It may run on another
// goroutine than the handler's (an upstream transport reading the body),
// hence the lock shared with the start of the response.
func (c *serverConn) sendContinue() error {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	if c.headStarted {
		return nil
	}
	if _, err := c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
		return err
	}
	return c.bw.Flush()
}

// closeDelimited reports whether the close of the connection ends w's body
// (its head sent with neither a length nor chunked framing).
func (w *response) closeDelimited() bool {
	return !w.chunked && w.contentLength < 0 && w.req.Method != http.MethodHead &&
		w.status >= 200 && w.status != http.StatusNoContent && w.status != http.StatusNotModified
}

// abortClose closes c with a reset (SO_LINGER 0) and, under TLS, without
// a close_notify: the peer sees the connection broken, not ended.
func abortClose(c net.Conn) error {
	switch cc := c.(type) {
	case *guardConn:
		return cc.abort() // its accounting, then the connection it wraps
	case *tls.Conn:
		c = cc.NetConn() // closed under TLS's feet: no close_notify
	}
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
	return c.Close()
}

// response is the http.ResponseWriter of one HTTP/1 request.
type response struct {
	c   *serverConn
	req *http.Request
	rs  *requestState

	header        http.Header
	status        int
	wroteHeader   bool // the handler chose the final status
	headerSent    bool // the head is written to the connection buffer
	contentLength int64
	written       int64
	chunked       bool
	bodyless      bool   // HEAD, 1xx, 204, 304: no body goes out
	hasDate       bool   // in the head the handler set
	connection    string // the handler's Connection tokens other than close and keep-alive
	closeAfter    bool
	failed        error // a write to the client failed
}

func (w *response) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 16)
	}
	return w.header
}

// adoptHeader makes h the response's header map, before WriteHeader; the
// connection's own map stays for the next request.
func (w *response) adoptHeader(h http.Header) {
	if !w.wroteHeader {
		w.header = h
	}
}

func (w *response) WriteHeader(code int) {
	if w.wroteHeader || w.c.hijacked {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// An informational response goes out at once (103 Early Hints).
		w.writeInformational(code)
		return
	}
	w.wroteHeader = true
	w.status = code
	// The head is fixed now, as net/http's is: later changes to the map
	// count only as trailers. It is kept as bytes (not a cloned map)
	// until the framing is known.
	head := append(w.c.head[:0], statusLine(code)...)
	var rf responseFields
	w.c.head, rf = appendResponseFields(head, w.header)
	w.hasDate = rf.date
	if v := rf.connection; rf.hasConnection {
		if hasToken(v, "close") {
			w.closeAfter = true
		} else if !hasToken(v, "keep-alive") {
			w.connection = strings.Join(v, ", ") // Upgrade, say
		}
	}
	if cl := rf.contentLength; len(cl) == 1 {
		if n, ok := parseContentLength(strings.TrimSpace(cl[0])); ok {
			w.contentLength = n
			w.c.head = append(w.c.head, "Content-Length: "...)
			w.c.head = strconv.AppendInt(w.c.head, n, 10)
			w.c.head = append(w.c.head, "\r\n"...)
		}
	}
	w.bodyless = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
}

// retract takes back a status and head that have not reached the
// connection (no byte of them or of a body written), so that the handler
// can answer otherwise: the gateway turns an upstream that died between its
// head and its first body byte into a 502. It reports whether it could.
func (w *response) retract() bool {
	c := w.c
	if !w.wroteHeader || w.headerSent || w.written > 0 || w.failed != nil || c.hijacked {
		return false
	}
	clear(c.header)
	*w = response{c: c, req: w.req, contentLength: -1, rs: w.rs, header: c.header,
		closeAfter: w.req.Close || c.s.shutting.Load()}
	return true
}

// relayInformational sends an upstream's informational response (103
// Early Hints) with the fields of h, unless the final head has begun.
func (w *response) relayInformational(code int, h http.Header) {
	if w.wroteHeader || w.c.hijacked || w.failed != nil || !w.informable() {
		return
	}
	w.c.cmu.Lock()
	defer w.c.cmu.Unlock()
	if w.c.headStarted {
		return
	}
	bw := w.c.bw
	b := appendHeaderFields([]byte(statusLine(code)), h)
	bw.Write(append(b, "\r\n"...))
	if err := bw.Flush(); err != nil {
		w.failed = err
	}
}

// informable reports whether the client may be sent a 1xx: not an
// HTTP/1.0 client, which would take it for the final answer (RFC 9110
// 15.2).
func (w *response) informable() bool {
	return w.req == nil || w.req.ProtoAtLeast(1, 1)
}

func (w *response) writeInformational(code int) {
	if !w.informable() {
		return
	}
	w.c.cmu.Lock()
	defer w.c.cmu.Unlock()
	bw := w.c.bw
	b := appendHeaderFields([]byte(statusLine(code)), w.header)
	bw.Write(append(b, "\r\n"...))
	if err := bw.Flush(); err != nil {
		w.failed = err
	}
}

func (w *response) Write(p []byte) (int, error) {
	if w.c.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.status == http.StatusNoContent || w.status == http.StatusNotModified {
		return 0, http.ErrBodyNotAllowed
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	if w.failed != nil {
		return 0, w.failed
	}
	w.written += int64(len(p))
	if w.bodyless {
		return len(p), nil
	}
	if !w.headerSent {
		if w.contentLength < 0 && len(w.c.pendingBody)+len(p) <= pendingLimit {
			// Hold a small body back: if the handler ends, it goes out
			// with a Content-Length instead of chunks.
			w.c.pendingBody = append(w.c.pendingBody, p...)
			return len(p), nil
		}
		w.sendHeader(false)
		if w.failed != nil {
			return 0, w.failed
		}
	}
	var err error
	if w.chunked {
		bw := w.c.bw
		bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		bw.WriteString("\r\n")
		bw.Write(p)
		_, err = bw.WriteString("\r\n")
	} else {
		_, err = w.c.bw.Write(p)
	}
	if err != nil {
		w.failed = err
		w.c.broken.Store(true)
		return 0, err
	}
	return len(p), nil
}

// pendingLimit is how much body is held back before the head is sent.
const pendingLimit = 2048

func (w *response) WriteString(s string) (int, error) {
	return w.Write([]byte(s))
}

// sendHeader writes the head. final says the handler has returned, so a
// body held back has its whole length known.
func (w *response) sendHeader(final bool) {
	if w.headerSent {
		return
	}
	w.headerSent = true
	w.c.cmu.Lock()
	w.c.headStarted = true
	w.c.cmu.Unlock()
	h := w.header
	bw := w.c.bw
	pending := w.c.pendingBody
	var framing string
	bodyAllowed := w.status != http.StatusNoContent && w.status != http.StatusNotModified && w.status >= 200
	switch {
	case !bodyAllowed:
	case w.contentLength >= 0:
		// The handler's Content-Length stands (HEAD included).
	case w.req.Method == http.MethodHead:
		if final && w.written > 0 {
			framing = "Content-Length: " + strconv.FormatInt(w.written, 10) + "\r\n"
		}
	case final && !hasTrailers(h):
		framing = "Content-Length: " + strconv.Itoa(len(pending)) + "\r\n"
		w.contentLength = int64(len(pending))
	case w.req.ProtoMinor >= 1:
		w.chunked = true
		framing = "Transfer-Encoding: chunked\r\n"
	default:
		// HTTP/1.0 client, length unknown: the close ends the body.
		w.closeAfter = true
	}
	if w.closeAfter || w.req.Close || w.c.s.shutting.Load() || w.unreadBodyForcesClose() {
		w.closeAfter = true
	}
	bw.Write(w.c.head)
	if !w.hasDate {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString("\r\n")
	}
	bw.WriteString(framing)
	// Connection is the server's to say: it knows whether it closes.
	switch {
	case w.closeAfter:
		bw.WriteString("Connection: close\r\n")
	case w.connection != "":
		bw.WriteString("Connection: ")
		bw.WriteString(w.connection)
		bw.WriteString("\r\n")
	case w.req.ProtoMinor == 0:
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
	if len(pending) > 0 {
		if w.chunked {
			bw.WriteString(strconv.FormatInt(int64(len(pending)), 16))
			bw.WriteString("\r\n")
			bw.Write(pending)
			bw.WriteString("\r\n")
		} else {
			bw.Write(pending)
		}
		w.c.pendingBody = pending[:0]
	}
}

// bodyEnded reports whether a request body was read to its end.
func bodyEnded(body io.ReadCloser) bool {
	switch b := body.(type) {
	case *lengthBody:
		return b.left.Load() == 0
	case *chunkedBody:
		return b.ended.Load()
	}
	return true
}

// unreadBodyForcesClose reports whether the request body, not read to its
// end when the head goes out, will make the connection close after the
// response (too much to discard, not all here yet while another reader
// has it, or a client still waiting for 100 Continue), so the head can
// say so.
func (w *response) unreadBodyForcesClose() bool {
	switch b := w.req.Body.(type) {
	case *lengthBody:
		left := b.left.Load()
		if left == 0 {
			return false
		}
		if left > maxDiscardBody || b.waiting.Load() || !b.mu.TryLock() {
			// Too much, never coming, or a reader (the upstream
			// transport's body writer) is busy with it: the server
			// will not discard it.
			return true
		}
		failed := b.err != nil // a read interrupted, say (interruptBodyRead)
		// Lent to another goroutine's reader, or closed before its end
		// (by a handler, or such a reader that gave up on it): the rest
		// is discarded only if it is here already. A wait for it could
		// not be promised: that reader may come back to the body (or
		// close it, interrupting the wait) whenever its own exchange
		// ends, whether or not it had begun reading when the head went
		// out. A body only the handler had is waited for, as net/http
		// does.
		missing := (b.lent.Load() || b.closed) && int64(b.c.br.Buffered()) < left
		b.mu.Unlock()
		return failed || missing
	case *chunkedBody:
		// Its length is unknown: the rest can be discarded only if it is
		// all here already.
		return !b.restBuffered()
	}
	return false
}

// responseFields is what the server reads of a handler's header as it
// writes the head.
type responseFields struct {
	date          bool
	hasConnection bool
	connection    []string
	contentLength []string
}

// appendResponseFields appends the fields of a response head, but not
// those the server writes itself (Transfer-Encoding, Content-Length,
// Connection), trailers or invalid names; it returns the ones it reads,
// found in the same pass rather than looked up again.
func appendResponseFields(b []byte, h http.Header) ([]byte, responseFields) {
	var rf responseFields
	for k, vs := range h {
		switch k {
		case "Transfer-Encoding":
			continue
		case "Content-Length":
			rf.contentLength = vs
			continue
		case "Connection":
			rf.hasConnection, rf.connection = true, vs
			continue
		case "Date":
			rf.date = true
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !validFieldName(k) {
			continue
		}
		for _, v := range vs {
			b = appendField(b, k, v)
		}
	}
	return b, rf
}

func hasTrailers(h http.Header) bool {
	if _, ok := h["Trailer"]; ok {
		return true
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// appendHeaderFields appends the fields of h to b (an informational
// response's), leaving out trailer-prefixed ones and invalid names.
func appendHeaderFields(b []byte, h http.Header) []byte {
	for k, vs := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || !validFieldName(k) {
			continue
		}
		for _, v := range vs {
			b = appendField(b, k, v)
		}
	}
	return b
}

// newlinesToSpaces keeps a handler's value from splitting the head.
var newlinesToSpaces = strings.NewReplacer("\r", " ", "\n", " ")

// appendField appends one "name: value" line; newlines in the value
// become spaces.
func appendField(b []byte, k, v string) []byte {
	if !validHeaderValue(v) {
		v = newlinesToSpaces.Replace(v) // a NUL goes as is, as before
	}
	b = append(b, k...)
	b = append(b, ": "...)
	b = append(b, v...)
	return append(b, "\r\n"...)
}

func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !tokenChars[k[i]] {
			return false
		}
	}
	return true
}

// Flush sends the head and any buffered body now (http.Flusher).
func (w *response) Flush() { w.FlushError() }

// FlushError is Flush reporting the failure (for http.ResponseController).
func (w *response) FlushError() error {
	if w.c.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.failed != nil {
		return w.failed
	}
	w.sendHeader(false)
	if err := w.c.bw.Flush(); err != nil {
		w.failed = err
		w.c.broken.Store(true)
		return err
	}
	return nil
}

// Hijack hands the connection to the handler (protocol upgrades).
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := w.c
	if c.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if c.inl {
		// Upgrades are never served inline (serveInline hands them back):
		// the serving goroutine holds the socket's reads.
		return nil, nil, errors.New("edge: only a protocol upgrade can take over the connection")
	}
	if w.wroteHeader && !w.headerSent {
		w.sendHeader(false)
	}
	c.stopWatch()
	if err := c.bw.Flush(); err != nil {
		return nil, nil, err
	}
	c.hijacked = true
	c.rwc.SetDeadline(time.Time{})
	// The handler owns the connection now; a drain no longer waits for
	// it (the gateway tracks taken-over connections itself).
	c.s.forget(c)
	var conn net.Conn = c.rwc
	if c.stashed {
		conn = &handoffConn{Conn: c.rwc, gc: c.gc, r: io.MultiReader(strings.NewReader(string(c.stash[:1])), c.rwc)}
		c.stashed = false
	}
	return conn, bufio.NewReadWriter(c.br, c.bw), nil
}

// SetReadDeadline and SetWriteDeadline serve http.ResponseController.
func (w *response) SetReadDeadline(t time.Time) error {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	w.c.rdl = t
	return w.c.rwc.SetReadDeadline(t)
}
func (w *response) SetWriteDeadline(t time.Time) error {
	w.c.wdlOwn = true // for the rest of the connection: the handler decides
	return w.c.rwc.SetWriteDeadline(t)
}

// EnableFullDuplex is a no-op: this server always lets a handler read the
// request body while it writes the response.
func (w *response) EnableFullDuplex() error { return nil }

// finish completes the response after the handler returned: the head if
// not yet sent, the last chunk with trailers, the body the handler left
// unread. It reports whether the connection is still usable.
func (w *response) finish() bool {
	c := w.c
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.sendHeader(true)
	if w.chunked {
		bw := c.bw
		bw.WriteString("0\r\n")
		w.writeTrailers()
		bw.WriteString("\r\n")
	}
	if w.contentLength >= 0 && !w.bodyless && w.written < w.contentLength {
		// The body is short of its declared length: the connection is
		// out of step and must close.
		w.closeAfter = true
	}
	if err := c.bw.Flush(); err != nil {
		return false
	}
	if w.failed != nil {
		return false
	}
	if w.closeAfter {
		if !bodyEnded(w.req.Body) {
			c.linger = true
			c.noPool = true // a reader of the body may still use c.br
		}
		return false
	}
	if !bodyEnded(w.req.Body) {
		// The rest of the body is read on the server's own account,
		// which nobody else bounds (the gateway's body read timeout is
		// for its own reads): as long as a head may take.
		c.setReadDeadline(time.Now().Add(c.s.opts.ReadHeaderTimeout))
	}
	switch b := w.req.Body.(type) {
	case *lengthBody:
		if !b.discard() {
			c.linger = true
			c.noPool = true // a reader of the body may still use c.br
			return false
		}
	case *chunkedBody:
		if !b.discard() {
			c.linger = true
			c.noPool = true
			return false
		}
	}
	return true
}

func (w *response) writeTrailers() {
	h := w.header
	var b []byte
	for _, decl := range h["Trailer"] {
		for decl != "" {
			var k string
			k, decl, _ = strings.Cut(decl, ",")
			k = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k))
			if k == "" || !validFieldName(k) {
				continue
			}
			if _, ok := h[http.TrailerPrefix+k]; ok {
				continue // written below
			}
			for _, v := range h[k] {
				b = appendField(b, k, v)
			}
		}
	}
	for k, vs := range h {
		name, ok := strings.CutPrefix(k, http.TrailerPrefix)
		if !ok || !validFieldName(name) {
			continue
		}
		for _, v := range vs {
			b = appendField(b, name, v)
		}
	}
	w.c.bw.Write(b)
}

var statusLines sync.Map // int -> string

func statusLine(code int) string {
	if v, ok := statusLines.Load(code); ok {
		return v.(string)
	}
	text := http.StatusText(code)
	switch code {
	case http.StatusRequestEntityTooLarge:
		text = "Content Too Large" // RFC 9110 15.5.14; Go keeps the older name
	case http.StatusUnprocessableEntity:
		text = "Unprocessable Content" // RFC 9110 15.5.21
	}
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	s := "HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n"
	statusLines.Store(code, s)
	return s
}

// httpDate is the current time in IMF-fixdate, formatted once a second.
func httpDate() string {
	now := time.Now().Unix()
	if d := cachedDate.Load(); d != nil && d.unix == now {
		return d.s
	}
	d := &dateCache{unix: now, s: time.Unix(now, 0).UTC().Format(http.TimeFormat)}
	cachedDate.Store(d)
	return d.s
}

type dateCache struct {
	unix int64
	s    string
}

var cachedDate atomic.Pointer[dateCache]

// closeNewH2 closes the handed-over connections still waiting for their
// preface (h2New).
func (s *h1Server) closeNewH2() {
	s.h2mu.Lock()
	defer s.h2mu.Unlock()
	for c := range s.h2New {
		c.Close()
		delete(s.h2New, c)
	}
}

// handoffListener passes HTTP/2 connections to net/http's server.
type handoffListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newHandoffListener() *handoffListener {
	return &handoffListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *handoffListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return handoffAddr{} }

type handoffAddr struct{}

func (handoffAddr) Network() string { return "handoff" }
func (handoffAddr) String() string  { return "handoff" }

// handoffConn is a connection some of whose bytes were read already.
type handoffConn struct {
	net.Conn
	gc *guardConn
	r  io.Reader
}

func (c *handoffConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *handoffConn) CloseWrite() error {
	conn := c.Conn
	if c.gc != nil {
		conn = c.gc.Conn
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
