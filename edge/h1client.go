package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meridian-gw/meridian/edge/upstream"
)

// h1Transport is the HTTP/1.1 upstream client. net/http's Transport runs
// two goroutines per connection and hands every request and response
// between them over channels; a proxy that writes one request and reads one
// response per connection at a time does better on the calling goroutine,
// which is what this does: it writes the request (its body, if any, on a
// second goroutine so that an upstream answering early cannot deadlock us),
// reads the response with its own parser (readResponse, h1wire.go), and
// returns the connection to a per-host idle pool once the body hits EOF.
//
// It implements http.RoundTripper for what the proxy sends: absolute http
// and https URLs, keep-alive, streaming bodies of known or unknown length
// (chunked, with trailers), Upgrade (101 hands back the raw connection),
// response header timeout and context cancellation.
type h1Transport struct {
	dialer *net.Dialer
	// dialConn opens a connection; nil means dialer.DialContext (tests
	// and benchmarks set it to leave the network out).
	dialConn       func(ctx context.Context, network, addr string) (net.Conn, error)
	tlsHandshake   time.Duration
	responseHeader time.Duration
	// sendTimeout bounds how long one write of a request body to the
	// upstream may block (0: no bound).
	sendTimeout time.Duration
	// readTimeout bounds how long the upstream may send nothing while a
	// response body is read (0: no bound); see h1Conn.Read.
	readTimeout time.Duration
	// resent counts a request sent once more on a new connection (see
	// roundTrip), by reason; nil counts nothing.
	resent         func(reason string)
	maxIdlePerHost int
	idleTimeout    time.Duration
	tlsConfig      *tls.Config // nil: system roots
	// serving is the targets the current document sends to through this
	// transport (nil: all): a connection to another, given back after
	// a reload dropped its target (or the transport), is closed rather
	// than pooled (an outside check saw one held until the next reload).
	serving atomic.Pointer[map[poolKey]bool]

	mu   sync.Mutex
	idle map[poolKey]*idleList
	// The idle pool's sweeper (sweepIdle) runs while the pool holds a
	// connection (sweeping, under mu); kick wakes it early (capacity 1).
	sweeping bool
	kick     chan struct{}
	onHup    func() // t.wake, made once
}

func newH1Transport(connect, responseHeader time.Duration) *h1Transport {
	t := &h1Transport{
		dialer:         &net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second},
		tlsHandshake:   connect,
		responseHeader: responseHeader,
		maxIdlePerHost: 1024,
		idleTimeout:    90 * time.Second,
		idle:           map[poolKey]*idleList{},
		kick:           make(chan struct{}, 1),
	}
	t.onHup = t.wake
	return t
}

// idleList is the idle pool of one poolKey, newest last. A connection
// keeps its list (h1Conn.list), so that going back to the pool costs no
// map lookup; the sweeper removes a list that empties, and marks it gone.
type idleList struct {
	conns []*h1Conn
	gone  bool
}

// poolKey names the upstream a pooled connection goes to.
type poolKey struct{ scheme, host string }

type h1Conn struct {
	t      *h1Transport
	key    poolKey
	list   *idleList // key's idle list, when it went there last (under t.mu)
	conn   net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer // for requests with a body; made for the first
	read   int64         // bytes read since the current request was written
	idleAt time.Duration // monoNow when it went back to the pool
	// The response-header deadline is left in place after the head (a
	// deadline costs a timer update) and renewed only when it is more
	// than the slack off: rdl is the read deadline set, inBody says a
	// body is being read, which a stale deadline must not cut short.
	rdl     time.Time
	inBody  bool
	aborted atomic.Bool
	// The read timeout of a body read from the socket (h1Transport's
	// readTimeout): bodyWatch says it is being kept. tunnel: after a
	// 101, which has no read timeout.
	bodyWatch bool
	tunnel    bool
	// While a request body is sent (on its own goroutine), for the
	// response-header timeout, which runs from the body's end (as
	// net/http's ResponseHeaderTimeout does): sending says the body is
	// still going out, writeSince is monoNow when the write to the
	// upstream in progress began (0: none), sentAt when the body ended
	// (0: not yet, or failed).
	sending    atomic.Bool
	writeSince atomic.Int64
	sentAt     atomic.Int64
	// queued is the socket's send queue when headDeadline last looked
	// while a write was blocked (-1: not known); the reader's alone.
	queued int
	reused bool
	// hupWatched says the connection is on the hang-up watch (rawconn.go),
	// which a request sent by the response's first read needs.
	hupWatched bool
	tlsState   *tls.ConnectionState
	// abort is the cancellation hook of its exchanges (made once).
	abort func()
	// The response readResponse returned last.
	last *h1Response
	// peekNext: the last answer was to a HEAD and announced a body, which
	// an upstream serving HEAD as GET sends anyway, after it: getConn
	// looks for such bytes before the connection is used again, however
	// short its idle time.
	peekNext bool
	// lean, while a lean request's answer is read (h1lean.go), is where
	// a plain answer's fields go.
	lean *outHeader
}

func (c *h1Conn) Read(p []byte) (int, error) {
	// waitFrom: when this read began (monoNow), for the read timeout,
	// which counts the time a read waits for the upstream, not the time
	// between reads (the proxy may be slow to write to its client).
	var waitFrom time.Duration
	if c.inBody && c.t.readTimeout > 0 && !c.tunnel {
		waitFrom = monoNow()
		if !c.bodyWatch {
			c.watchBody(waitFrom)
		}
	}
	for {
		n, err := c.conn.Read(p)
		c.read += int64(n)
		if n > 0 || err == nil || c.rdl.IsZero() || c.aborted.Load() || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		if !c.inBody {
			// The response-header deadline, while the head is awaited:
			// it counts from the end of the request body.
			next, serr := c.headDeadline()
			if serr != nil {
				return n, serr
			}
			if next.IsZero() {
				return n, err
			}
			c.rdl = next
			c.conn.SetReadDeadline(next)
			if c.aborted.Load() {
				c.conn.SetDeadline(time.Unix(1, 0))
				return 0, err
			}
			continue
		}
		// In a body: the read timeout's look (watchBody), or, with none,
		// the response-header deadline left in place after the head,
		// caught up with a slow body, which has no deadline: cleared.
		// An abort racing with the new deadline is redone.
		next := time.Time{}
		if d := c.t.readTimeout; d > 0 && !c.tunnel {
			// Silence counts from when this read began (a deadline
			// that passed before it, while the proxy was writing to a
			// slow client, cuts nothing: the read is tried again), and
			// not while the request body is still going out (a stream
			// whose upstream answers each piece of it waits for the
			// client, which the client's own read timeout bounds), only
			// from its end.
			now := monoNow()
			from := waitFrom
			if c.sending.Load() {
				from = now
			} else if at := time.Duration(c.sentAt.Load()); at > from {
				from = at
			}
			if now-from >= d {
				return 0, errReadTimeout
			}
			next = monoBase.Add(from + d)
		}
		if st := c.t.sendTimeout; st > 0 && !c.tunnel && c.sending.Load() {
			// The upstream answered before it took the whole request
			// body: the send timeout still bounds its taking none of
			// the rest (it may be waiting for it to end its answer).
			at, serr := c.sendLook(monoNow(), max(st/4, time.Millisecond))
			if serr != nil {
				return 0, serr
			}
			if t := monoBase.Add(at); next.IsZero() || t.Before(next) {
				next = t
			}
		}
		c.rdl = next
		c.conn.SetReadDeadline(next)
		if c.aborted.Load() {
			c.conn.SetDeadline(time.Unix(1, 0))
			return 0, err
		}
	}
}

// watchBody begins keeping the read timeout when a response body is
// first read from the socket (one whose bytes all came with the head
// costs nothing; now is monoNow). Each read notes when it began, and a
// look when the deadline passes cuts the body if that read has waited
// the whole timeout, or sets the deadline for when it will have: as
// nginx's proxy_read_timeout, the time between two successive reads of
// the upstream. While bytes flow that is one timer update per timeout.
func (c *h1Conn) watchBody(now time.Duration) {
	d := c.t.readTimeout
	c.bodyWatch = true
	// The response-header deadline left in place serves as the first
	// look if it comes within the timeout (as the default's 30s does
	// within 60s): no timer update.
	if c.rdl.IsZero() || c.rdl.After(monoBase.Add(now+d)) {
		next := monoBase.Add(now + d)
		c.rdl = next
		c.conn.SetReadDeadline(next)
		if c.aborted.Load() {
			c.conn.SetDeadline(time.Unix(1, 0))
		}
	}
}

// headDeadline is called when the response-header deadline has passed
// while the head is awaited. A request body still being sent holds the
// timeout off: while the client is slow to send it (its own read timeout
// covers that, and the upstream must not be blamed), or while the upstream
// takes it, unless one write to the upstream has been blocked for the send
// timeout with the socket's send queue not shrinking meanwhile (the
// kernel wakes a blocked writer only once a third of the socket's buffer
// has drained, megabytes on a fast link, so a write alone would make a
// slow reader look stalled). While the body is sent the deadline comes
// back every quarter of the send timeout to look. After the body, the
// upstream has the timeout from the body's end. It reports the deadline
// to wait on to, zero if the time is up, or errSendTimeout.
func (c *h1Conn) headDeadline() (time.Time, error) {
	d := c.t.responseHeader
	if d <= 0 {
		return time.Time{}, nil
	}
	now := monoNow()
	var next time.Duration
	if c.sending.Load() {
		var err error
		if next, err = c.sendLook(now, c.sendingStep()); err != nil {
			return time.Time{}, err
		}
	} else if at := time.Duration(c.sentAt.Load()); at != 0 && now < at+d {
		next = at + d
	} else {
		return time.Time{}, nil
	}
	return monoBase.Add(next), nil
}

// sendLook looks, while the request body is being sent, at whether one
// write to the upstream has been blocked for the send timeout with the
// socket's send queue not shrinking meanwhile: errSendTimeout if so, else
// when to look next (monoNow time), at most step from now.
func (c *h1Conn) sendLook(now, step time.Duration) (time.Duration, error) {
	next := now + step
	if ws, st := time.Duration(c.writeSince.Load()), c.t.sendTimeout; ws != 0 && st > 0 {
		q, known := sendQueued(c.conn)
		switch {
		case known && c.queued >= 0 && q < c.queued:
			// The upstream took some of what waits in the socket:
			// progress, though the write has not returned.
			c.writeSince.CompareAndSwap(int64(ws), int64(now))
		case now-ws >= st:
			return 0, errSendTimeout
		default:
			next = min(next, ws+st)
		}
		c.queued = q
		if !known {
			c.queued = -1
		}
	} else {
		c.queued = -1 // not blocked now: a later blocked write starts afresh
	}
	return next, nil
}

// sendingStep is how often the response-header deadline comes back while a
// request body is sent: the response-header timeout, or a quarter of the
// send timeout if that is sooner.
func (c *h1Conn) sendingStep() time.Duration {
	d := c.t.responseHeader
	if st := c.t.sendTimeout; st > 0 {
		d = min(d, max(st/4, time.Millisecond))
	}
	return d
}

// errSendTimeout ends an exchange whose upstream took none of the request
// body for the send timeout.
var errSendTimeout = &sendTimeoutError{}

type sendTimeoutError struct{}

func (*sendTimeoutError) Error() string {
	return "the upstream took none of the request body for the send timeout"
}
func (*sendTimeoutError) Timeout() bool { return true }

// upstreamWriter is the connection as a request body's writer sees it:
// each write notes when it began (h1Conn.writeSince).
type upstreamWriter h1Conn

func (w *upstreamWriter) Write(p []byte) (int, error) {
	c := (*h1Conn)(w)
	c.writeSince.Store(int64(max(monoNow(), 1)))
	n, err := c.conn.Write(p)
	c.writeSince.Store(0)
	return n, err
}

// armHeaderDeadline makes sure a response head is waited for at most d
// from now (monoNow): the deadline set for an earlier response stands if
// it falls at most an eighth of d (and at most a second) short, but not if
// it falls later (an earlier exchange's longer wait, where this one must
// look sooner: headDeadline while a body is sent).
func (c *h1Conn) armHeaderDeadline(now, d time.Duration) {
	want := monoBase.Add(now + d)
	if c.rdl.IsZero() || c.rdl.After(want) || want.Sub(c.rdl) > min(time.Second, d/8) {
		c.rdl = want
		c.conn.SetReadDeadline(want)
		if c.aborted.Load() {
			// The exchange was canceled before it began (abort's past
			// deadline came first and was just replaced): it stands.
			c.conn.SetDeadline(time.Unix(1, 0))
		}
	}
}

// monoBase and monoNow give a monotonic clock that costs one clock read
// (time.Now costs two): enough for pool bookkeeping.
var monoBase = time.Now()

func monoNow() time.Duration { return time.Since(monoBase) }

// aliveCheckAfter is how long a pooled connection may sit idle before it
// is checked (one non-blocking peek) for having been closed by the
// upstream. Under load connections are reused sooner and skip the check;
// upstreams close idle connections after seconds (Node.js: 5s), rarely
// sooner.
const aliveCheckAfter = 100 * time.Millisecond

// errUpgradeBeforeBody: the upstream answered 101 to a request whose body
// it had not all been sent (RFC 9110 7.8: a server reads the content
// before it switches).
var errUpgradeBeforeBody = errors.New("upstream switched protocols while the request body was being sent")

// errStaleConn marks a reused pooled connection that ended before any byte
// of an answer: the upstream closed it as idle while the request went, or
// took the request and reset. A bodyless replayable request is sent once
// more, on a new connection (roundTrip).
var errStaleConn = errors.New("the upstream closed a reused connection before answering")

// errStrayBytes marks a reused pooled connection whose answer began with
// bytes that are not a status line: most likely bytes of no request that
// came while it sat in the pool (a body sent after the answer to a HEAD),
// which nginx and Go's Transport, reading idle connections, see and close
// them for. It is handled as errStaleConn is (wrapping the parse error).
var errStrayBytes = errors.New("bytes of no answer on a reused upstream connection")

// RoundTrip sends req and returns the response, whose Body must be closed.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.roundTrip(req.Context(), req, nil, monoNow())
}

// roundTrip is RoundTrip with the request's context given apart, which
// spares the proxy a copy of the request made only to attach it, and
// with the header as edits (oh) when not nil, in place of req.Header, and
// with the time (monoNow) the caller read just before.
func (t *h1Transport) roundTrip(ctx context.Context, req *http.Request, oh *outHeader, now time.Duration) (*http.Response, error) {
	key := poolKey{req.URL.Scheme, req.URL.Host}
	pc, err := t.getConn(ctx, key, req.URL, now)
	if err != nil {
		return nil, err
	}
	resp, err := t.exchange(ctx, pc, req, oh, now)
	if (err == errStaleConn || errors.Is(err, errStrayBytes)) && (req.Body == nil || req.Body == http.NoBody) && (oh == nil || !oh.rawBody) && replayable(req, oh) {
		// The pooled connection was closed before any byte of an answer
		// came: the upstream closed it as the request went (an idle
		// timeout), or took the request and reset; or its answer began
		// with bytes that belong to none (errStrayBytes). Sent once more,
		// on a new connection, so that an upstream that resets every
		// request, or garbles every answer, sees it twice at most and its
		// error is the answer.
		if t.resent != nil {
			reason := "stale_connection"
			if err != errStaleConn {
				reason = "stray_bytes"
			}
			t.resent(reason)
		}
		if pc, err = t.dial(ctx, key); err != nil {
			return nil, err
		}
		// Its own response-header time: the first attempt may have
		// waited for a whole answer behind the stray bytes.
		return t.exchange(ctx, pc, req, oh, monoNow())
	}
	return resp, err
}

// notAStatusLine reports whether err says that what came where a status
// line should be was not one (errStrayBytes, on a reused connection).
func notAStatusLine(err error) bool {
	switch e := err.(type) {
	case *badResponseError:
		return e.statusLine
	case *responseHeadTooLargeError:
		return e.statusLine
	}
	return false
}

// replayable reports whether a request that may have reached the upstream
// on a connection it then closed can be sent again on another: an
// idempotent one (RFC 9110 9.2.2), or one carrying an idempotency key, as
// net/http's Transport allows. A POST the upstream may have acted on is
// not sent twice.
func replayable(req *http.Request, oh *outHeader) bool {
	if idempotent(req.Method) {
		return true
	}
	for _, k := range [...]string{"Idempotency-Key", "X-Idempotency-Key"} {
		vs := req.Header[k]
		if oh != nil {
			vs = oh.get(k)
		}
		for _, v := range vs {
			if v != "" {
				return true
			}
		}
	}
	return false
}

// maxEarlyHints bounds the 103 responses relayed per request (net/http's
// client stops at five informational responses).
const maxEarlyHints = 5

// relayEarlyHints passes an upstream's 103 Early Hints on: straight to the
// HTTP/1 server's response when the request came that way, else through
// the proxy's client trace (see Gateway.ServeHTTP).
func relayEarlyHints(ctx context.Context, h http.Header) {
	dropHopFields(h)
	rc, ok := ctx.(*requestContext)
	if !ok {
		// Under a total timeout: the server's context is its parent.
		rc, ok = ctx.Value(requestContextKey{}).(*requestContext)
	}
	if ok && rc.resp == nil && rc.toPresent != nil {
		rc.toPresent()
	}
	if ok && rc.resp != nil {
		if rc.hintVia != "" {
			h["Via"] = append(h["Via"], rc.hintVia)
		}
		rc.resp.relayInformational(http.StatusEarlyHints, h)
		return
	}
	if tr := httptrace.ContextClientTrace(ctx); tr != nil && tr.Got1xxResponse != nil {
		tr.Got1xxResponse(http.StatusEarlyHints, textproto.MIMEHeader(h))
	}
}

func (t *h1Transport) exchange(ctx context.Context, pc *h1Conn, req *http.Request, oh *outHeader, now time.Duration) (*http.Response, error) {
	var stop abortReg
	var respHeader http.Header
	if rc, ok := ctx.(*requestContext); ok {
		respHeader = rc.respHeader
		stop.rc = rc // the server's request context: a hook without allocation
		rc.setAbort(&pc.abort)
	} else if tc, ok := ctx.(*totalContext); ok {
		respHeader = tc.rc.respHeader
		stop.rc = tc.rc // likewise, the total's expiry taking the hook too
		tc.setAbort(&pc.abort)
	} else {
		stop.stop = context.AfterFunc(ctx, pc.abort)
	}
	fail := func(err error) (*http.Response, error) {
		stop.release()
		pc.lean = nil
		pc.conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	pc.read = 0
	var bodyDone chan error
	if req.Body == nil || req.Body == http.NoBody {
		// A head alone goes through a pooled buffer, warm in the cache,
		// rather than one each connection keeps.
		bw := bufWriters.Get().(*bufio.Writer)
		if sbr := sendBeforeReadOf(pc.conn); sbr != nil && pc.reused && pc.hupWatched && pc.br.Buffered() == 0 {
			// Sent by the response's first read, which then need not
			// try a read before the answer can have come. Only on a
			// reused connection on the hang-up watch, so that an
			// upstream's FIN is seen however it came (bytes it sent
			// unasked in the instant before are not, but those make
			// the connection's framing unusable either way). A fresh
			// connection reads first: some servers speak first.
			bw.Reset(sbr)
		} else {
			bw.Reset(pc.conn)
		}
		_, err := writeRequestHead(bw, req, oh)
		var ferr error
		if err == nil {
			ferr = bw.Flush()
		}
		bw.Reset(nil)
		bufWriters.Put(bw)
		switch {
		case err != nil:
			return fail(err)
		case ferr != nil && pc.reused:
			return fail(errStaleConn)
		case ferr != nil:
			return fail(ferr)
		}
	} else {
		if pc.bw == nil {
			pc.bw = bufio.NewWriterSize((*upstreamWriter)(pc), 16<<10)
		}
		chunked, err := writeRequestHead(pc.bw, req, oh)
		if err != nil {
			return fail(err)
		}
		// The body goes on its own goroutine: an upstream may answer (say
		// 413) before reading it all, and we must be reading by then.
		bodyDone = make(chan error, 1)
		pc.writeSince.Store(0)
		pc.sentAt.Store(0)
		pc.queued = -1
		pc.sending.Store(true)
		go func() {
			err := writeBody(pc.bw, req, chunked)
			if err == nil {
				pc.sentAt.Store(int64(max(monoNow(), 1)))
			}
			pc.sending.Store(false)
			var re *bodyReadError
			if errors.As(err, &re) {
				// The client's body failed (too large, or the client went
				// away): the upstream will never see the request end and
				// would leave us waiting for its answer until the response
				// header timeout. Abort the exchange now.
				pc.conn.Close()
			}
			bodyDone <- err
		}()
	}
	pc.inBody, pc.tunnel, pc.bodyWatch = false, false, false
	if t.responseHeader > 0 {
		d := t.responseHeader
		if bodyDone != nil {
			d = pc.sendingStep() // to look at the body's sending (headDeadline)
		}
		pc.armHeaderDeadline(now, d)
	}
	var resp *http.Response
	var err error
	hints, interim := 0, 0
	interimClose := false // a 1xx said the connection must not be reused (parseResponse)
	if oh != nil && oh.isRaw {
		pc.lean = oh
		oh.leanResp = false
	}
	for {
		resp, err = pc.readResponse(req, respHeader)
		if err != nil {
			// A body writer still running ends when its next write
			// fails or the client's body ends; it must not be waited
			// for, as it may be blocked reading from the client.
			if pc.reused && pc.read == 0 && ctx.Err() == nil && !isTimeout(err) {
				return fail(errStaleConn)
			}
			if pc.reused && interim == 0 && notAStatusLine(err) {
				return fail(fmt.Errorf("%w: %w", errStrayBytes, err))
			}
			return fail(err)
		}
		// 1xx informational responses: 103 Early Hints are relayed to
		// the client (a few), the others (100 Continue, 102) not; 101
		// ends the HTTP exchange.
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			interim++ // the upstream answers this request
			interimClose = interimClose || resp.Close
			if resp.StatusCode == http.StatusEarlyHints && hints < maxEarlyHints {
				hints++
				relayEarlyHints(ctx, resp.Header)
			}
			continue
		}
		break
	}
	pc.lean = nil
	pc.inBody, pc.bodyWatch = true, false // the header deadline may stay: see Read
	if st := t.sendTimeout; bodyDone != nil && st > 0 && pc.rdl.IsZero() && pc.sending.Load() {
		// No deadline yet (no response-header timeout) while the body
		// still goes: Read's send look must come (see Read).
		pc.armHeaderDeadline(monoNow(), max(st/4, time.Millisecond))
	}
	if pc.peekNext = req.Method == http.MethodHead && resp.ContentLength != 0; pc.peekNext {
		ackNow(pc.conn) // a body held back by Nagle comes now, for the peek
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		stop.release()
		if bodyDone != nil {
			pc.conn.Close()
			return nil, errUpgradeBeforeBody
		}
		pc.tunnel = true
		resp.Body = &upgradedConn{pc: pc}
		return resp, nil
	}
	reusable := !resp.Close && !interimClose && !req.Close && (resp.ContentLength >= 0 || len(resp.TransferEncoding) > 0 || resp.Body == http.NoBody)
	eb := &pc.last.body
	*eb = h1Body{pc: pc, rc: resp.Body, stop: stop, bodyDone: bodyDone, reusable: reusable, hopFree: !pc.last.hop}
	if resp.Body == http.NoBody || resp.ContentLength == 0 {
		eb.finish(true)
		resp.Body = http.NoBody
		return resp, nil
	}
	resp.Body = eb
	return resp, nil
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// writeRequestHead writes the request line and headers (req.Header, or
// oh if not nil). It reports whether the body is sent chunked (unknown
// length).
func writeRequestHead(w *bufio.Writer, req *http.Request, oh *outHeader) (chunked bool, err error) {
	if oh != nil && oh.isRaw {
		_, err = w.Write(oh.raw) // a lean request's (h1lean.go), with its body if it has one (rawBody)
		return false, err
	}
	w.WriteString(req.Method)
	w.WriteByte(' ')
	if u := req.URL; u.Opaque == "" && !u.ForceQuery {
		// RequestURI without building the string.
		if p := u.EscapedPath(); p != "" {
			w.WriteString(p)
		} else {
			w.WriteByte('/')
		}
		if u.RawQuery != "" {
			w.WriteByte('?')
			w.WriteString(u.RawQuery)
		}
	} else {
		w.WriteString(u.RequestURI())
	}
	w.WriteString(" HTTP/1.1\r\nHost: ")
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !validHeaderValue(host) {
		return false, fmt.Errorf("invalid Host %q", host)
	}
	w.WriteString(host)
	w.WriteString("\r\n")
	if oh == nil {
		for k, vs := range req.Header {
			if err := writeFieldLines(w, k, vs...); err != nil {
				return false, err
			}
		}
	} else {
		for _, f := range oh.fields {
			if !oh.forwards(f.name) {
				continue
			}
			if err := writeFieldLines(w, f.name, f.values...); err != nil {
				return false, err
			}
		}
		for _, f := range oh.extra {
			if err := writeFieldLines(w, f.name, f.value); err != nil {
				return false, err
			}
		}
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	switch {
	case !hasBody:
		if req.ContentLength > 0 || methodExpectsBody(req.Method) {
			w.WriteString("Content-Length: 0\r\n")
		}
	case req.ContentLength > 0 && len(req.Trailer) == 0:
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.FormatInt(req.ContentLength, 10))
		w.WriteString("\r\n")
	default:
		chunked = true
		w.WriteString("Transfer-Encoding: chunked\r\n")
		if len(req.Trailer) > 0 {
			names := make([]string, 0, len(req.Trailer))
			for k := range req.Trailer {
				names = append(names, k)
			}
			w.WriteString("Trailer: ")
			w.WriteString(strings.Join(names, ", "))
			w.WriteString("\r\n")
		}
	}
	_, err = w.WriteString("\r\n")
	return chunked, err
}

// writeFieldLines writes a request field's lines, but not the fields whose
// framing is ours to write (100-continue was handled with the client).
func writeFieldLines(w *bufio.Writer, k string, vs ...string) error {
	switch k {
	case "Host", "Content-Length", "Transfer-Encoding", "Trailer", "Expect":
		return nil
	}
	for _, v := range vs {
		if !validHeaderValue(v) {
			return fmt.Errorf("invalid value for header %s", k)
		}
		w.WriteString(k)
		w.WriteString(": ")
		w.WriteString(v)
		w.WriteString("\r\n")
	}
	return nil
}

func methodExpectsBody(m string) bool {
	return m == http.MethodPost || m == http.MethodPut || m == http.MethodPatch
}

// validHeaderValue reports whether v can be written in a field line: no
// CR, LF or NUL. It looks at eight bytes at a time, and at single bytes
// only where a word holds a byte below 0x20 or a DEL.
func validHeaderValue(v string) bool {
	i := 0
	for ; i+8 <= len(v); i += 8 {
		w := v[i : i+8]
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		if wordMayHoldControl(x) && !validHeaderBytes(w) {
			return false
		}
	}
	return validHeaderBytes(v[i:])
}

func validHeaderBytes(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && (c == '\r' || c == '\n' || c == 0) {
			return false
		}
	}
	return true
}

// writeBody streams the request body, chunked when its length is unknown,
// with trailers, and flushes. A read error from the client's body is
// returned as a *bodyReadError so the exchange can tell it apart.
func writeBody(w *bufio.Writer, req *http.Request, chunked bool) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var sent int64
	if !bodyAtHand(req.Body) {
		// The upstream gets the head now rather than with the body's
		// first bytes: it may answer without the body (a 401, a 413),
		// and should not wait on a client slow to send it.
		if err := w.Flush(); err != nil {
			return err
		}
	}
	for {
		n, rerr := req.Body.Read(buf)
		if n > 0 {
			if chunked {
				w.WriteString(strconv.FormatInt(int64(n), 16))
				w.WriteString("\r\n")
			}
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			if chunked {
				w.WriteString("\r\n")
			}
			sent += int64(n)
			// Streaming: do not hold bytes back while waiting for more.
			if err := w.Flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return &bodyReadError{rerr}
		}
	}
	if !chunked && sent != req.ContentLength {
		return fmt.Errorf("request body was %d bytes, Content-Length said %d", sent, req.ContentLength)
	}
	if chunked {
		w.WriteString("0\r\n")
		for k, vs := range req.Trailer {
			for _, v := range vs {
				if !validHeaderValue(v) {
					continue
				}
				w.WriteString(k)
				w.WriteString(": ")
				w.WriteString(v)
				w.WriteString("\r\n")
			}
		}
		w.WriteString("\r\n")
	}
	return w.Flush()
}

// bodyAtHand reports whether a first read of body would return at once
// (its bytes have arrived, or it has ended), so that the head can share a
// write with them. A body that cannot tell is taken as not at hand.
func bodyAtHand(body any) bool {
	a, ok := body.(interface{ atHand() bool })
	return ok && a.atHand()
}

// bodyReadError is a failure to read the request body being sent (the
// client's fault), as opposed to a failure to write it upstream.
type bodyReadError struct{ err error }

func (e *bodyReadError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *bodyReadError) Unwrap() error { return e.err }

// h1Body is a response body that gives its connection back to the pool
// when it has been read to the end.
type h1Body struct {
	pc       *h1Conn
	rc       io.ReadCloser
	stop     abortReg
	bodyDone chan error
	reusable bool
	done     bool
	// hopFree: the response head had no hop-by-hop field, so the proxy
	// can skip dropHopFields.
	hopFree bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

// readsAtOnce reports whether a Read will not wait for the upstream: the
// body has ended, or it has a length and bytes of it are buffered.
func (b *h1Body) readsAtOnce() bool {
	if b.done {
		return true
	}
	lr, ok := b.rc.(*lengthReader)
	return ok && (lr.remain <= 0 || lr.br.Buffered() > 0)
}

// buffered returns the rest of a body of known length when all of it is
// in the connection's read buffer already, or nil. The bytes are the
// buffer's: they must be used before consumeBuffered.
func (b *h1Body) buffered() []byte {
	lr, ok := b.rc.(*lengthReader)
	if b.done || !ok || lr.remain <= 0 || int64(lr.br.Buffered()) < lr.remain {
		return nil
	}
	p, err := lr.br.Peek(int(lr.remain))
	if err != nil {
		return nil
	}
	return p
}

// chunkedBuffered reports whether the body is chunked and the whole rest
// of it, trailers and all, is in the connection's read buffer: read to its
// end, it will not wait on the upstream.
func (b *h1Body) chunkedBuffered() bool {
	cr, ok := b.rc.(*chunkedReader)
	if b.done || !ok || cr.err != nil {
		return false
	}
	buf, _ := cr.br.Peek(cr.br.Buffered())
	return cr.restBuffered(buf)
}

// consumeBuffered ends a body that buffered returned whole, as reading it
// to its end does: the connection may go back to the pool at once.
func (b *h1Body) consumeBuffered() {
	lr := b.rc.(*lengthReader)
	lr.br.Discard(int(lr.remain))
	lr.remain = 0
	b.finish(true)
}

func (b *h1Body) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

// finish ends the exchange: the connection goes back to the pool only if
// the response was read whole, the request body was sent whole, and
// neither side asked to close.
func (b *h1Body) finish(complete bool) {
	b.done = true
	cancelled := !b.stop.release()
	ok := complete && b.reusable && !cancelled
	if b.bodyDone != nil {
		select {
		case err := <-b.bodyDone:
			ok = ok && err == nil
		default:
			// The upstream answered before the request body was all
			// sent: the connection's framing is unknown, drop it. The
			// writer ends on its own (see exchange).
			ok = false
		}
	}
	if ok {
		b.pc.t.putConn(b.pc)
	} else {
		b.pc.conn.Close()
	}
}

// abortReg is the cancellation hook of one exchange: on the server's
// request context directly, on any other context through
// context.AfterFunc.
type abortReg struct {
	rc   *requestContext
	stop func() bool
}

// release unregisters the hook and reports whether it had not run (the
// exchange was not canceled).
func (a abortReg) release() bool {
	if a.rc != nil {
		return a.rc.clearAbort()
	}
	return a.stop()
}

// upgradedConn is the raw connection after a 101, with the bytes that were
// read past the response head still in the bufio.Reader.
type upgradedConn struct{ pc *h1Conn }

func (u *upgradedConn) Read(p []byte) (int, error)  { return u.pc.br.Read(p) }
func (u *upgradedConn) Write(p []byte) (int, error) { return u.pc.conn.Write(p) }
func (u *upgradedConn) Close() error                { return u.pc.conn.Close() }
func (u *upgradedConn) CloseWrite() error {
	if cw, ok := u.pc.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return u.pc.conn.Close()
}

// getConn returns an idle connection to key, or dials one.
func (t *h1Transport) getConn(ctx context.Context, key poolKey, u interface{ Hostname() string }, now time.Duration) (*h1Conn, error) {
	t.mu.Lock()
	l := t.idle[key]
	for l != nil && len(l.conns) > 0 {
		pc := l.conns[len(l.conns)-1]
		l.conns[len(l.conns)-1] = nil
		l.conns = l.conns[:len(l.conns)-1]
		if now-pc.idleAt > t.idleTimeout {
			t.mu.Unlock()
			pc.conn.Close()
			t.mu.Lock()
			continue
		}
		t.mu.Unlock()
		// Bytes that came while it sat in the pool belong to no request
		// (a second answer, a body after a HEAD's or a 304's answer):
		// sent a request now, it would take them for its answer, and its
		// own answer would go to the next request, on and on. Looked for
		// at every reuse (one ioctl), since they may come at any time.
		// A connection idle for a while may also have been closed by the
		// upstream; look before using it (a read that would block means
		// it is still open).
		if hungUp(pc.conn) || !pc.quiet() || (pc.peekNext || now-pc.idleAt > aliveCheckAfter) && !pc.alive() {
			pc.conn.Close()
			t.mu.Lock()
			continue
		}
		pc.peekNext = false
		pc.reused = true
		pc.takeReader()
		return pc, nil
	}
	t.mu.Unlock()
	return t.dial(ctx, key)
}

// quiet reports whether nothing is waiting in pc's socket, as far as can
// be known without a read (see recvQueued).
func (pc *h1Conn) quiet() bool {
	if n, ok := recvQueued(pc.conn); ok && n > 0 {
		return false
	}
	tc, ok := pc.conn.(*tls.Conn)
	if !ok {
		return true
	}
	// Under TLS the socket is not all: crypto/tls reads what the socket
	// has into a buffer of its own, so a record that came right behind
	// the answer may be there. A read with a deadline already passed
	// returns what it holds, or the deadline's error without a system
	// call (and the error does not stick to the connection).
	tc.SetReadDeadline(aLongTimeAgo)
	var b [1]byte
	n, err := tc.Read(b[:])
	tc.SetReadDeadline(time.Time{})
	pc.rdl = time.Time{}
	return n == 0 && isTimeout(err)
}

func (pc *h1Conn) alive() bool {
	if pc.br != nil && pc.br.Buffered() > 0 {
		return false // unsolicited bytes: the framing is off
	}
	if !pc.rdl.IsZero() {
		// A header deadline left from the last exchange would fail the
		// peek below once it has passed.
		pc.conn.SetReadDeadline(time.Time{})
		pc.rdl = time.Time{}
	}
	raw := pc.conn
	if tc, ok := raw.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if sc, ok := raw.(syscall.Conn); ok && canPeek {
		// Peek without blocking: nothing to read means open; EOF, an
		// error or unsolicited bytes (a close_notify alert, say) mean
		// the connection must not be used.
		rc, err := sc.SyscallConn()
		if err == nil {
			alive := false
			var buf [1]byte
			cerr := rc.Read(func(fd uintptr) bool {
				alive = peekNothing(fd, buf[:])
				return true // never wait for readiness
			})
			return cerr == nil && alive
		}
	}
	pc.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := pc.conn.Read(make([]byte, 1))
	pc.conn.SetReadDeadline(time.Time{})
	pc.rdl = time.Time{}
	return isTimeout(err)
}

func (t *h1Transport) dial(ctx context.Context, key poolKey) (*h1Conn, error) {
	scheme, hostport := key.scheme, key.host
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		if scheme == "https" {
			hostport = net.JoinHostPort(hostport, "443")
		} else {
			hostport = net.JoinHostPort(hostport, "80")
		}
	}
	dial := t.dialConn
	if dial == nil {
		dial = t.dialer.DialContext
	}
	conn, err := dial(ctx, "tcp", hostport)
	if err != nil {
		return nil, err
	}
	conn = rawTCP(conn)
	pc := &h1Conn{t: t, key: key, conn: conn}
	if scheme == "http" {
		pc.hupWatched = watchHangup(conn, t.onHup)
		trackLeft(conn) // see putConn
	}
	pc.abort = func() {
		// Unblock any read or write on the connection; it will not be
		// reused.
		pc.aborted.Store(true)
		pc.conn.SetDeadline(time.Unix(1, 0))
	}
	if scheme == "https" {
		tc, err := upstream.ClientTLS(ctx, conn, t.tlsConfig, hostport, "http/1.1", t.tlsHandshake, errHandshakeTimeout)
		if err != nil {
			return nil, err
		}
		st := tc.ConnectionState()
		pc.tlsState = &st
		pc.conn = tc
	}
	pc.takeReader()
	return pc, nil
}

// upReaders are the readers of upstream connections in use: a pooled
// connection gives its own back while it waits (putConn) and takes one
// again when it is taken (getConn), so that an idle connection holds none
// of its 16 KiB. A response body's reader keeps the reader it began with,
// but reads nothing once the body has ended (h1Body), and only then is the
// connection pooled.
var upReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}

// takeReader gives pc a reader if it has none.
func (pc *h1Conn) takeReader() {
	if pc.br == nil {
		pc.br = upReaders.Get().(*bufio.Reader)
		pc.br.Reset(pc)
	}
}

// dropReader gives pc's reader back, empty, as it goes idle.
func (pc *h1Conn) dropReader() {
	if pc.br != nil && pc.br.Buffered() == 0 {
		pc.br.Reset(nil)
		upReaders.Put(pc.br)
		pc.br = nil
	}
}

func (t *h1Transport) putConn(pc *h1Conn) {
	if pc.br.Buffered() > 0 || leftInSocket(pc.conn) {
		// Bytes beyond the response (an unasked one, a Content-Length
		// too small), read or still in the socket: the framing cannot be
		// trusted, and they must not become the next request's answer.
		pc.conn.Close()
		return
	}
	pc.dropReader() // before another goroutine can take pc
	pc.idleAt = monoNow()
	t.mu.Lock()
	// hungUp is looked at under mu: a hang-up seen after this wakes the
	// sweeper, whose sweep then comes after the connection is in the pool.
	l := pc.list
	if l == nil || l.gone {
		// Only here: a list not gone is one a reload kept (it marks
		// those it drops gone, as the sweeper does those it empties).
		if m := t.serving.Load(); m != nil && !(*m)[pc.key] {
			t.mu.Unlock()
			pc.conn.Close()
			return
		}
		if l = t.idle[pc.key]; l == nil {
			l = &idleList{}
			t.idle[pc.key] = l
		}
		pc.list = l
	}
	if len(l.conns) >= t.maxIdlePerHost || hungUp(pc.conn) {
		t.mu.Unlock()
		pc.conn.Close()
		return
	}
	list := l.conns
	if pc.peekNext && len(list) > 0 {
		// Its answer was to a HEAD that announced a body, which may still
		// come (peekNext): given out last rather than first, so that any
		// such bytes have had the longest time to come before getConn
		// looks.
		list = append(list, nil)
		copy(list[1:], list)
		list[0] = pc
	} else {
		list = append(list, pc)
	}
	l.conns = list
	start := !t.sweeping
	t.sweeping = true
	t.mu.Unlock()
	if start {
		go t.sweepIdle()
	}
}

// CloseIdleConnections closes the pooled connections. The transport stays
// usable.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[poolKey]*idleList{}
	for _, l := range idle {
		l.gone = true
	}
	t.mu.Unlock()
	for _, l := range idle {
		for _, pc := range l.conns {
			pc.conn.Close()
		}
	}
	t.wake() // the sweeper finds the pool empty and ends
}

// closeIdleExcept closes the idle connections of the pools whose key keep
// does not hold (targets a reload removed).
func (t *h1Transport) closeIdleExcept(keep map[poolKey]bool) {
	t.serving.Store(&keep)
	t.mu.Lock()
	var drop []*idleList
	for k, l := range t.idle {
		if !keep[k] {
			l.gone = true
			drop = append(drop, l)
			delete(t.idle, k)
		}
	}
	t.mu.Unlock()
	for _, l := range drop {
		for _, pc := range l.conns {
			pc.conn.Close()
		}
	}
	if len(drop) > 0 {
		t.wake() // the sweeper finds those pools gone
	}
}

// wake has the idle pool's sweeper look at the pool now (a pooled
// connection's peer hung up, or the pool was emptied).
func (t *h1Transport) wake() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// sweepIdle closes pooled connections as they pass the idle timeout, and
// those whose upstream hung up as soon as the hang-up watch says so (a
// socket in CLOSE-WAIT otherwise stays until a request takes it, which
// may be never: the pool gives out its newest first), until the pool is
// empty. nginx and net/http close an idle upstream connection in the same
// two cases.
func (t *h1Transport) sweepIdle() {
	timer := time.NewTimer(t.idleTimeout)
	defer timer.Stop()
	for {
		now := monoNow()
		var gone []*h1Conn
		next := t.idleTimeout
		t.mu.Lock()
		for key, l := range t.idle {
			list := l.conns
			kept := list[:0]
			for _, pc := range list {
				if now-pc.idleAt >= t.idleTimeout || hungUp(pc.conn) {
					gone = append(gone, pc)
					continue
				}
				next = min(next, pc.idleAt+t.idleTimeout-now)
				kept = append(kept, pc)
			}
			clear(list[len(kept):])
			l.conns = kept
			if len(kept) == 0 {
				delete(t.idle, key)
				l.gone = true
			}
		}
		empty := len(t.idle) == 0
		if empty {
			t.sweeping = false
		}
		t.mu.Unlock()
		for _, pc := range gone {
			pc.conn.Close()
		}
		if empty {
			return
		}
		timer.Reset(next)
		select {
		case <-timer.C:
		case <-t.kick:
		}
	}
}

var _ http.RoundTripper = (*h1Transport)(nil)
