package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meridian-gw/meridian/internal/lograte"
	"github.com/meridian-gw/meridian/internal/srcaddr"
)

// Connection kinds: the first byte a dialer writes (after the TLS handshake
// when TLS is on) selects the protocol of the rest of the connection.
const (
	connRaft    byte = 'R'
	connForward byte = 'F'
)

const handshakeTimeout = 10 * time.Second

// mux owns the single cluster TCP listener. It accepts connections, runs the
// TLS handshake (refusing and logging unauthenticated peers), reads the kind
// byte and hands the connection to Raft's stream layer or to the forwarding
// server. It tracks every connection, inbound and outbound, so Close ends them
// all.
type mux struct {
	ln        net.Listener
	advertise net.Addr
	tls       *tls.Config
	log       *slog.Logger
	forward   func(conn net.Conn, peer string)
	// allowRaft reports whether the node a certificate names may open
	// Raft connections (Store.peerAllowed).
	allowRaft func(peer string) bool

	// Refusals are logged 20 at once, then 5 a second, each kind with how
	// many were held back, as gossip's are (an outside check wrote 300
	// lines in 0.15 s).
	handshakeLog, kindLog, nonMemberLog lograte.Limiter

	raftC chan net.Conn // inbound raft connections for the stream layer

	// clusterID (nil: none) is this node's cluster's id, sent by the
	// dialer and compared by the acceptor (clusterALPN); otherLogged is
	// when a refusal of another cluster's was last logged (UnixNano).
	clusterID   func() string
	otherLogged atomic.Int64

	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
	done   chan struct{}
	wg     sync.WaitGroup
}

func newMux(ln net.Listener, advertise net.Addr, tlsCfg *tls.Config, log *slog.Logger) *mux {
	return &mux{
		ln:        ln,
		advertise: advertise,
		tls:       tlsCfg,
		log:       log,
		raftC:     make(chan net.Conn),
		conns:     make(map[*trackedConn]struct{}),
		done:      make(chan struct{}),
	}
}

func (m *mux) start(forward func(net.Conn, string)) {
	m.forward = forward
	m.wg.Add(1)
	go m.acceptLoop()
}

func (m *mux) acceptLoop() {
	defer m.wg.Done()
	var delay time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			m.log.Warn("cluster: accept failed", "error", err)
			select {
			case <-m.done:
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		tc, ok := m.track(c)
		if !ok {
			c.Close()
			return
		}
		m.wg.Add(1)
		go m.handle(tc)
	}
}

// peerGone reports whether a handshake failed for the peer's closing or
// silence, not for anything it sent.
func peerGone(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.As(err, &ne) && ne.Timeout()
}

func (m *mux) handle(c *trackedConn) {
	defer m.wg.Done()
	remote := c.RemoteAddr().String()
	peer := "" // the name its certificate gives (TLS)
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	var conn net.Conn = c
	if m.tls != nil {
		tc := tls.Server(c, m.serverTLS())
		if err := tc.Handshake(); err != nil {
			if errors.Is(err, errOtherCluster) {
				// A leader of another cluster calls again and again (a
				// seat it keeps for this address): said once in a while.
				now, last := time.Now().UnixNano(), m.otherLogged.Load()
				if now-last >= int64(otherClusterLogEvery) && m.otherLogged.CompareAndSwap(last, now) {
					m.log.Warn("cluster: refused connections of another cluster (a node of it keeps a seat for this address: `meridian cluster remove` it there)",
						"remote", remote, "error", err)
				}
			} else if peerGone(err) {
				// Nothing said that could be refused: the peer closed or
				// went quiet (a probe that timed out while this node was
				// stalled, say), which is no sign of an impostor.
				m.log.Info("cluster: a connection ended before its TLS handshake did", "remote", remote, "error", err)
			} else if ok, held := m.handshakeLog.Allow(); ok {
				m.log.Warn("cluster: refused connection: TLS handshake failed (unauthenticated peer?)",
					"remote", remote, "error", err, "held_back", held)
			}
			c.Close()
			return
		}
		conn = &tlsTracked{Conn: tc, t: c}
		if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
			peer = pc[0].Subject.CommonName
		}
	}
	var kind [1]byte
	if _, err := io.ReadFull(conn, kind[:]); err != nil {
		m.log.Debug("cluster: connection closed before kind byte", "remote", remote, "error", err)
		conn.Close()
		return
	}
	c.SetDeadline(time.Time{})
	switch kind[0] {
	case connRaft:
		if m.allowRaft != nil && !m.allowRaft(peer) {
			if ok, held := m.nonMemberLog.Allow(); ok {
				m.log.Warn("cluster: refused a Raft connection: its certificate names no node of this cluster (in Raft or gossip)",
					"remote", remote, "peer", peer, "held_back", held)
			}
			conn.Close()
			return
		}
		select {
		case m.raftC <- conn:
		case <-m.done:
			conn.Close()
		}
	case connForward:
		m.forward(conn, peer)
	default:
		if ok, held := m.kindLog.Allow(); ok {
			m.log.Warn("cluster: refused connection: unknown protocol byte", "remote", remote, "byte", kind[0], "tls", m.tls != nil, "held_back", held)
		}
		conn.Close()
	}
}

// dialer returns the dialer for addr: from the listener's address when it
// is a specific one (srcaddr).
func (m *mux) dialer(addr string) net.Dialer {
	var bind net.IP
	if a, ok := m.ln.Addr().(*net.TCPAddr); ok {
		bind = a.IP
	}
	return srcaddr.Dialer(bind, addr)
}

// dial opens a connection of the given kind to addr (TLS when configured).
func (m *mux) dial(ctx context.Context, addr string, kind byte) (net.Conn, error) {
	d := m.dialer(addr)
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc, ok := m.track(raw)
	if !ok {
		raw.Close()
		return nil, errClosed
	}
	if dl, ok := ctx.Deadline(); ok {
		tc.SetDeadline(dl)
	} else {
		tc.SetDeadline(time.Now().Add(handshakeTimeout))
	}
	var conn net.Conn = tc
	if m.tls != nil {
		t := tls.Client(tc, m.clientTLS(addr))
		if err := t.HandshakeContext(ctx); err != nil {
			tc.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		conn = &tlsTracked{Conn: t, t: tc}
	}
	if _, err := conn.Write([]byte{kind}); err != nil {
		conn.Close()
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	return conn, nil
}

var errClosed = errors.New("store: closed")

// clientTLS is the TLS config to dial addr with: the peer's certificate
// verified for addr's host, unless the config names a server, and this
// node's cluster id offered (clusterALPN).
func (m *mux) clientTLS(addr string) *tls.Config {
	cfg := m.tls
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		cfg = cfg.Clone()
		host, _, _ := net.SplitHostPort(addr)
		cfg.ServerName = host
	}
	if id := m.ownID(); id != "" {
		if cfg == m.tls {
			cfg = cfg.Clone()
		}
		cfg.NextProtos = append(cfg.NextProtos[:len(cfg.NextProtos):len(cfg.NextProtos)], clusterALPN+id)
	}
	return cfg
}

// The cluster id on the cluster port. Gossip refuses the nodes of another
// cluster, but Raft's connections are their own: a leader whose cluster
// still held a node's seat went on sending it entries after the node was
// wiped and joined another cluster, which then served the first's
// documents (an outside check). So a dialer offers its cluster's id as an
// ALPN protocol (which a node that does not look ignores: the server sets
// no protocols of its own), and the acceptor refuses a connection whose id
// is not its own, or that carries one while it knows none yet (a new node
// takes Raft only from the cluster whose gossip it joined).
const clusterALPN = "meridian-cluster/"

// errOtherCluster: a connection to the cluster port from another cluster.
var errOtherCluster = errors.New("another cluster's connection")

// otherClusterLogEvery spaces the lines about them.
const otherClusterLogEvery = 30 * time.Second

// unknownIDWait is how long a node that knows no cluster id waits for one
// before it refuses a connection that carries one.
const unknownIDWait = 2 * time.Second

func (m *mux) ownID() string {
	if m.clusterID == nil {
		return ""
	}
	return m.clusterID()
}

// serverTLS is the TLS config connections are accepted with.
func (m *mux) serverTLS() *tls.Config {
	if m.clusterID == nil {
		return m.tls
	}
	cfg := m.tls.Clone()
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		for _, p := range hello.SupportedProtos {
			theirs, ok := strings.CutPrefix(p, clusterALPN)
			if !ok {
				continue
			}
			ours := m.ownID()
			// A new node learns its cluster from the seeds' gossip a
			// moment after it starts, while that cluster's leader may
			// already be calling: it waits a little for it.
			for wait := time.Duration(0); ours == "" && wait < unknownIDWait; wait += 20 * time.Millisecond {
				time.Sleep(20 * time.Millisecond)
				ours = m.ownID()
			}
			switch {
			case ours == "":
				return nil, fmt.Errorf("%w: the peer is of cluster %s, and this node knows of none yet", errOtherCluster, theirs)
			case theirs != ours:
				return nil, fmt.Errorf("%w: the peer's is %s, this one's %s", errOtherCluster, theirs, ours)
			}
		}
		return nil, nil
	}
	return cfg
}

// probe connects to addr and, with TLS, completes a handshake (the peer's
// certificate from the cluster CA, ours accepted by it), then closes; it
// returns the name the peer's certificate is for ("" without TLS). It
// sends no kind byte, so a node of any version takes it as a connection
// that closed early.
func (m *mux) probe(ctx context.Context, addr string) (string, error) {
	d := m.dialer(addr)
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer raw.Close()
	if m.tls == nil {
		return "", nil
	}
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	} else {
		raw.SetDeadline(time.Now().Add(handshakeTimeout))
	}
	t := tls.Client(raw, m.clientTLS(addr))
	if err := t.HandshakeContext(ctx); err != nil {
		return "", fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	// TLS 1.3: the server learns whether it accepts our certificate
	// after the client's handshake ends; a refusal comes as an alert on
	// the first read. The peer sends nothing else, so a read that times
	// out means accepted.
	t.SetReadDeadline(time.Now().Add(probeAlertWait))
	var b [1]byte
	if _, err := t.Read(b[:]); err != nil && !isTimeout(err) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	if pc := t.ConnectionState().PeerCertificates; len(pc) > 0 {
		return pc[0].Subject.CommonName, nil
	}
	return "", nil
}

// probeAlertWait is how long probe waits for the peer to refuse its
// certificate.
const probeAlertWait = 300 * time.Millisecond

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (m *mux) track(c net.Conn) (*trackedConn, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, false
	}
	tc := &trackedConn{Conn: c, m: m}
	m.conns[tc] = struct{}{}
	return tc, true
}

// close stops accepting, closes every tracked connection and waits for the
// mux's goroutines.
func (m *mux) close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	close(m.done)
	conns := make([]*trackedConn, 0, len(m.conns))
	for c := range m.conns {
		conns = append(conns, c)
	}
	m.mu.Unlock()
	m.ln.Close()
	for _, c := range conns {
		c.Conn.Close()
	}
	m.wg.Wait()
}

type trackedConn struct {
	net.Conn
	m    *mux
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.m.mu.Lock()
		delete(c.m.conns, c)
		c.m.mu.Unlock()
	})
	return c.Conn.Close()
}

// tlsTracked is a TLS connection whose Close also untracks the TCP conn.
type tlsTracked struct {
	*tls.Conn
	t *trackedConn
}

func (c *tlsTracked) Close() error {
	err := c.Conn.Close()
	c.t.Close()
	return err
}

// streamLayer is the raft.StreamLayer over the mux.
type streamLayer struct {
	m    *mux
	once sync.Once
	shut chan struct{}
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.m.raftC:
		return c, nil
	case <-s.shut:
		return nil, errClosed
	case <-s.m.done:
		return nil, errClosed
	}
}

func (s *streamLayer) Close() error {
	s.once.Do(func() { close(s.shut) })
	return nil
}

func (s *streamLayer) Addr() net.Addr { return s.m.advertise }

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case <-s.shut:
			cancel()
		case <-ctx.Done():
		}
	}()
	return s.m.dial(ctx, string(address), connRaft)
}
