package edge

// The HTTPS listener's QUIC side (HTTP/3): its connections counted and
// capped with the TCP side's, address validation (Retry) while handshakes
// pile up, and the HTTP/3 idle timeout.
//
// Why: quic-go accepts every Initial that parses. Without a cap the HTTPS
// listener's max_connections held for TCP only (an outside check opened 400
// HTTP/3 connections under a cap of 20, none of them counted in
// meridian_connections_open); without Retry, Initials from addresses that
// never answer (spoofed ones) each hold a connection's state until the
// handshake times out; and http3.Server's own idle timer, armed for every
// connection it takes, is stopped only when the server closes the
// connection itself, so the state of every connection that ended another
// way (a handshake that timed out, a client that closed) stayed reachable
// until the idle timeout (120 s by default): about 58 KiB for 2.5 KB of
// spoofed Initials.
//
// How: quic.Transport's ConnContext, called for each connection quic-go is
// about to make, takes a slot of the listener's cap (guardListener: the
// same semaphore and counts as its TCP connections; over the cap the
// connection is refused, CONNECTION_REFUSED) and gives it back when the
// connection's context ends, which quic-go promises for a closed
// connection and a failed handshake alike. Connections still handshaking
// are counted; from retryAt of them on, VerifySourceAddress has quic-go
// answer an Initial without a token with a Retry, which costs a client
// whose address is real one round trip and a spoofed one its attempt. The
// idle timeout is the gateway's (http3.Server's is left unset): a timer
// per connection, stopped while a request is served and when the
// connection's context ends.

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// quicRetryAt is how many QUIC handshakes may be in progress before new
// clients are asked to prove their address (Retry); with a connection cap,
// at most half of it.
const quicRetryAt = 128

// errConnLimit refuses a QUIC connection over max_connections, and
// errDraining one that comes while the listener drains.
var (
	errConnLimit = errors.New("max_connections reached")
	errDraining  = errors.New("draining")
)

// quicGuard is an HTTPS listener's accounting of its QUIC connections.
type quicGuard struct {
	ln      *guardListener // whose cap and counts QUIC connections share
	idle    time.Duration  // HTTP/3 idle timeout (0: none)
	retryAt int64
	// onHandshake, if set, is told of each completed handshake.
	onHandshake func(tls.ConnectionState)
	// handshaking counts the connections whose handshake is neither
	// complete nor failed; idleArmed those whose idle timer is set (for
	// tests).
	handshaking atomic.Int64
	idleArmed   atomic.Int64
	// draining refuses every new connection (CONNECTION_REFUSED), as a
	// draining TCP listener, closed, refuses: a QUIC listener closed
	// would drop their packets, and clients wait out their handshake
	// timeout.
	draining atomic.Bool
	// The clients refused lately (a ring; monoNow when):
	// a client's first flight may take two Initial packets, each of
	// which is refused, and clients interleave; each attempt is counted
	// once.
	rmu     sync.Mutex
	recent  [64]refusal
	recentI int
}

func newQUICGuard(ln *guardListener, maxConns int, idle time.Duration) *quicGuard {
	q := &quicGuard{ln: ln, idle: idle, retryAt: quicRetryAt}
	if maxConns > 0 {
		q.retryAt = min(q.retryAt, max(int64(maxConns)/2, 1))
	}
	return q
}

type refusal struct {
	addr string
	at   time.Duration
}

type quicConnKey struct{}

// quicConn is one QUIC connection's state, from ConnContext on.
type quicConn struct {
	q         *quicGuard
	handshook atomic.Bool // counted out of handshaking

	mu     sync.Mutex
	conn   *quic.Conn // set once HTTP/3 takes the connection
	active int        // requests being served
	timer  *time.Timer
	armed  bool          // timer set
	due    time.Duration // when it is up (monoNow)
	gone   bool          // the connection's context ended
}

// connContext is the transport's ConnContext.
func (q *quicGuard) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	if q.draining.Load() {
		return nil, errDraining
	}
	l := q.ln
	if l.sem != nil {
		select {
		case l.sem <- struct{}{}:
		default:
			q.refused(info.RemoteAddr.String())
			return nil, errConnLimit
		}
	}
	l.open.Add(1)
	q.handshaking.Add(1)
	qc := &quicConn{q: q}
	context.AfterFunc(ctx, qc.ended)
	return context.WithValue(ctx, quicConnKey{}, qc), nil
}

// refusalWindow is how long a refused client's further Initials (its
// flight's second packet, retransmissions) are not counted again.
const refusalWindow = 10 * time.Second

// refused counts a connection refused over the cap, once per client
// attempt: a client (address and port) refused less than refusalWindow
// ago is not counted again.
func (q *quicGuard) refused(addr string) {
	now := monoNow()
	q.rmu.Lock()
	again := false
	for _, r := range q.recent {
		if r.addr == addr && now-r.at < refusalWindow {
			again = true
			break
		}
	}
	if !again {
		q.recent[q.recentI] = refusal{addr, now}
		q.recentI = (q.recentI + 1) % len(q.recent)
	}
	q.rmu.Unlock()
	if !again {
		q.ln.refused("quic")
	}
}

// verifySourceAddress is the transport's VerifySourceAddress: true sends a
// Retry.
func (q *quicGuard) verifySourceAddress(net.Addr) bool {
	return q.handshaking.Load() >= q.retryAt
}

// handshakeDone counts the connection out of those handshaking (its
// handshake completed or the connection ended); it reports whether this
// call did.
func (qc *quicConn) handshakeDone() bool {
	if qc.handshook.CompareAndSwap(false, true) {
		qc.q.handshaking.Add(-1)
		return true
	}
	return false
}

// handshakeComplete is handshakeDone for a handshake that completed (the
// client's Finished received), which onHandshake is told of.
func (qc *quicConn) handshakeComplete(c *quic.Conn) {
	if qc.handshakeDone() && qc.q.onHandshake != nil {
		qc.q.onHandshake(c.ConnectionState().TLS)
	}
}

// ended runs once the connection's context ends (closed, or its handshake
// failed): its slot and counts given back, its idle timer stopped.
func (qc *quicConn) ended() {
	qc.handshakeDone()
	qc.mu.Lock()
	qc.gone = true
	qc.disarmLocked()
	qc.conn = nil
	qc.mu.Unlock()
	l := qc.q.ln
	l.open.Add(-1)
	if l.sem != nil {
		<-l.sem
	}
}

// h3ConnContext is http3.Server's ConnContext, called when HTTP/3 takes a
// connection (quic-go's early listener hands it over before its handshake
// ends): it watches for the handshake's end and arms the idle timer.
func (q *quicGuard) h3ConnContext(ctx context.Context, c *quic.Conn) context.Context {
	qc, _ := c.Context().Value(quicConnKey{}).(*quicConn)
	if qc == nil {
		return ctx
	}
	select {
	case <-c.HandshakeComplete():
		qc.handshakeComplete(c)
	default:
		go func() {
			select {
			case <-c.HandshakeComplete():
				qc.handshakeComplete(c)
			case <-c.Context().Done(): // ended counts it out
			}
		}()
	}
	qc.mu.Lock()
	if !qc.gone {
		qc.conn = c
		qc.armLocked()
	}
	qc.mu.Unlock()
	return ctx
}

// quicConnOf returns the QUIC connection state of an HTTP/3 request's
// context, or nil.
func quicConnOf(ctx context.Context) *quicConn {
	qc, _ := ctx.Value(quicConnKey{}).(*quicConn)
	return qc
}

// begin and end bracket a request served on the connection: no idle
// timeout while one is.
func (qc *quicConn) begin() {
	qc.mu.Lock()
	qc.active++
	qc.disarmLocked()
	qc.mu.Unlock()
}

func (qc *quicConn) end() {
	qc.mu.Lock()
	if qc.active--; qc.active == 0 && !qc.gone {
		qc.armLocked()
	}
	qc.mu.Unlock()
}

func (qc *quicConn) armLocked() {
	if qc.q.idle <= 0 || qc.armed || qc.conn == nil {
		return
	}
	qc.armed, qc.due = true, monoNow()+qc.q.idle
	qc.q.idleArmed.Add(1)
	if qc.timer == nil {
		qc.timer = time.AfterFunc(qc.q.idle, qc.idleFired)
	} else {
		qc.timer.Reset(qc.q.idle)
	}
}

func (qc *quicConn) disarmLocked() {
	if !qc.armed {
		return
	}
	qc.armed = false
	qc.q.idleArmed.Add(-1)
	qc.timer.Stop()
}

// idleFired closes the connection, idle for the idle timeout, unless a
// request began or it ended meanwhile (a timer set again after it fired
// and before this ran waits on).
func (qc *quicConn) idleFired() {
	qc.mu.Lock()
	c := qc.conn
	fire := qc.armed && qc.active == 0 && c != nil && monoNow() >= qc.due
	if fire {
		qc.armed = false
		qc.q.idleArmed.Add(-1)
	}
	qc.mu.Unlock()
	if fire {
		c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "idle timeout")
	}
}
