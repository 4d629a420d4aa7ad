package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// proto is the wire protocol a run uses.
type proto int

const (
	protoH1  proto = iota // HTTP/1.1 over TCP (lean client)
	protoTLS              // HTTP/1.1 over TLS over TCP (lean client)
	protoH2               // HTTP/2 over TLS (net/http Transport)
	protoH3               // HTTP/3 over QUIC (quic-go http3)
)

func (p proto) String() string {
	switch p {
	case protoTLS:
		return "tls"
	case protoH2:
		return "h2"
	case protoH3:
		return "h3"
	default:
		return "h1"
	}
}

const userAgent = "meridian-loadgen/1"

// conn is one client connection (TCP, TLS or QUIC) that carries one request
// at a time.
type conn interface {
	// roundTrip sends the run's request and reads (and discards) the whole
	// response. keepAlive reports whether the connection can be reused.
	roundTrip() (status int, keepAlive bool, err error)
	// resumed reports whether the connection's TLS session was resumed
	// (always false for plain HTTP and, since no session cache is ever
	// configured, for TLS too: it is a check).
	resumed() bool
	close()
}

// connector makes the connections of one worker.
type connector interface {
	dial(deadline time.Time) (conn, error)
	close()
}

// newConnector returns a connector for one worker of cfg's run. ctx bounds
// the requests of HTTP/2 and HTTP/3 (net/http and quic-go take contexts,
// not socket deadlines).
func newConnector(ctx context.Context, cfg *config) (connector, error) {
	switch cfg.proto {
	case protoH2:
		return &h2Connector{ctx: ctx, cfg: cfg}, nil
	case protoH3:
		return newH3Connector(ctx, cfg)
	case protoTLS:
		return &h1Connector{t: cfg.target, tlsCfg: cfg.tlsCfg}, nil
	default:
		return &h1Connector{t: cfg.target}, nil
	}
}

// tlsConfig builds the client TLS configuration shared by all connections.
// Session resumption is always off (ClientSessionCache nil): with -handshakes
// every connection does a full handshake, and keep-alive runs don't depend
// on it either.
func tlsConfig(host, caFile string, insecure bool) (*tls.Config, error) {
	cfg := &tls.Config{
		ServerName:             host,
		MinVersion:             tls.VersionTLS12,
		ClientSessionCache:     nil,
		SessionTicketsDisabled: true,
	}
	switch {
	case insecure:
		cfg.InsecureSkipVerify = true
	case caFile != "":
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate found", caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// ------------------------------------------------------------ HTTP/1.1

type h1Connector struct {
	t      *target
	tlsCfg *tls.Config // nil: plain HTTP
}

func (c *h1Connector) dial(deadline time.Time) (conn, error) {
	var cfg *tls.Config
	if c.tlsCfg != nil {
		cfg = c.tlsCfg.Clone()
		cfg.NextProtos = []string{"http/1.1"}
	}
	cl, err := dial(c.t, cfg, deadline)
	if err != nil {
		return nil, err
	}
	return &h1Conn{client: cl, req: c.t.req}, nil
}

func (c *h1Connector) close() {}

type h1Conn struct {
	*client
	req []byte
}

func (c *h1Conn) roundTrip() (int, bool, error) { return c.client.roundTrip(c.req) }
func (c *h1Conn) resumed() bool                 { return c.tls != nil && c.tls.ConnectionState().DidResume }

// --------------------------------------------------------------- HTTP/2

// h2Connector gives each connection its own http.Transport limited to one
// TCP connection, so -c N means N TCP connections, each with one stream in
// flight (closed loop), like the HTTP/1.1 modes. (Multiplexing several
// streams per connection is deliberately not done.)
type h2Connector struct {
	ctx context.Context
	cfg *config
}

func (c *h2Connector) dial(deadline time.Time) (conn, error) {
	tlsCfg := c.cfg.tlsCfg.Clone()
	protos := new(http.Protocols)
	protos.SetHTTP2(true) // HTTP/2 over TLS only: fail rather than fall back to HTTP/1.1
	tr := &http.Transport{
		TLSClientConfig:     tlsCfg,
		ForceAttemptHTTP2:   true,
		Protocols:           protos,
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
		TLSHandshakeTimeout: 5 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	req, err := newRequest(c.ctx, c.cfg.target.url)
	if err != nil {
		return nil, err
	}
	return &h2Conn{tr: tr, req: req}, nil
}

func (c *h2Connector) close() {}

type h2Conn struct {
	tr      *http.Transport
	req     *http.Request
	didResu bool
}

func newRequest(ctx context.Context, url string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", "*/*")
	return req, nil
}

// readBody discards resp's body and checks the protocol version.
func readBody(resp *http.Response, major int) error {
	_, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.ProtoMajor != major {
		return fmt.Errorf("got %s, want HTTP/%d", resp.Proto, major)
	}
	return nil
}

func (c *h2Conn) roundTrip() (int, bool, error) {
	resp, err := c.tr.RoundTrip(c.req)
	if err != nil {
		return 0, false, err
	}
	if err := readBody(resp, 2); err != nil {
		return 0, false, err
	}
	c.didResu = resp.TLS != nil && resp.TLS.DidResume
	return resp.StatusCode, true, nil
}

func (c *h2Conn) resumed() bool { return c.didResu }
func (c *h2Conn) close()        { c.tr.CloseIdleConnections() }

// --------------------------------------------------------------- HTTP/3

// h3Connector owns one UDP socket (quic.Transport) per worker; each dial is
// a new QUIC connection (full handshake) from that socket.
type h3Connector struct {
	ctx    context.Context
	cfg    *config
	qt     *quic.Transport
	h3     *http3.Transport // only used to wrap QUIC connections
	addr   *net.UDPAddr
	tlsCfg *tls.Config
	qcfg   *quic.Config
}

func newH3Connector(ctx context.Context, cfg *config) (*h3Connector, error) {
	addr, err := net.ResolveUDPAddr("udp", cfg.target.hostport)
	if err != nil {
		return nil, err
	}
	network := "udp4"
	if addr.IP.To4() == nil {
		network = "udp6"
	}
	uc, err := net.ListenUDP(network, nil)
	if err != nil {
		return nil, err
	}
	tlsCfg := cfg.tlsCfg.Clone()
	tlsCfg.NextProtos = []string{http3.NextProtoH3}
	return &h3Connector{
		ctx:    ctx,
		cfg:    cfg,
		qt:     &quic.Transport{Conn: uc},
		h3:     &http3.Transport{DisableCompression: true},
		addr:   addr,
		tlsCfg: tlsCfg,
		qcfg: &quic.Config{
			MaxIncomingStreams:   -1, // the server may not open bidirectional streams
			HandshakeIdleTimeout: 5 * time.Second,
			MaxIdleTimeout:       30 * time.Second,
		},
	}, nil
}

func (c *h3Connector) dial(deadline time.Time) (conn, error) {
	ctx, cancel := context.WithDeadline(c.ctx, deadline)
	defer cancel()
	// Dial (not DialEarly) returns once the handshake is complete.
	qc, err := c.qt.Dial(ctx, c.addr, c.tlsCfg, c.qcfg)
	if err != nil {
		return nil, fmt.Errorf("quic dial: %w", err)
	}
	req, err := newRequest(c.ctx, c.cfg.target.url)
	if err != nil {
		qc.CloseWithError(0, "")
		return nil, err
	}
	return &h3Conn{qc: qc, cc: c.h3.NewClientConn(qc), req: req}, nil
}

func (c *h3Connector) close() {
	_ = c.qt.Close()
	_ = c.qt.Conn.Close()
}

type h3Conn struct {
	qc  *quic.Conn
	cc  *http3.ClientConn
	req *http.Request
}

func (c *h3Conn) roundTrip() (int, bool, error) {
	resp, err := c.cc.RoundTrip(c.req)
	if err != nil {
		return 0, false, err
	}
	if err := readBody(resp, 3); err != nil {
		return 0, false, err
	}
	// A closed QUIC connection (idle timeout, server going away) makes the
	// next request fail; the worker then redials.
	return resp.StatusCode, c.qc.Context().Err() == nil, nil
}

func (c *h3Conn) resumed() bool { return c.qc.ConnectionState().TLS.DidResume }
func (c *h3Conn) close()        { _ = c.qc.CloseWithError(0, "") }

var errNoTLS = errors.New("-tls, -h2, -h3 and -handshakes need an https:// URL")
