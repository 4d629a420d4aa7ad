package upstream

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"
)

// H2OverTLS makes tr speak HTTP/2 to https targets whatever the server's
// ALPN said: with h2 offered alone, a server that picks no protocol (one
// that does not look at ALPN, a TLS terminator in front of an h2c server)
// is spoken to with prior knowledge, as Envoy does for a cluster
// configured for HTTP/2, where net/http's Transport would fall back to
// HTTP/1.1 without a word. dial makes the TCP connection; conf (nil for
// Go's defaults) is cloned, its server name taken from the address when
// it has none; the handshake is bounded by handshake, and a handshake
// that runs out returns an error wrapping timeoutErr.
//
// It works through net/http's cleartext HTTP/2 path: the connection the
// Transport gets is not a *tls.Conn, so it takes it as a plain one and
// speaks HTTP/2 with prior knowledge over it.
func H2OverTLS(tr *http.Transport, dial func(ctx context.Context, network, addr string) (net.Conn, error), conf *tls.Config, handshake time.Duration, timeoutErr error) {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr.Protocols = &p
	tr.TLSClientConfig = nil
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc, err := ClientTLS(ctx, c, conf, addr, "h2", handshake, timeoutErr)
		if err != nil {
			return nil, err
		}
		if np := tc.ConnectionState().NegotiatedProtocol; np != "" && np != "h2" {
			tc.Close()
			return nil, fmt.Errorf("the upstream chose %q by ALPN where h2 alone was offered", np)
		}
		return h2TLSConn{tc}, nil
	}
}

// ClientTLS makes c, a connection dialled to addr, a TLS client
// connection offering proto alone by ALPN, and completes its handshake:
// conf is cloned (nil: Go's defaults, TLS 1.2 at least), its server name
// taken from addr when it has none; a handshake that outlasts handshake
// (0: no bound of its own) returns an error wrapping timeoutErr. On error
// c is closed.
func ClientTLS(ctx context.Context, c net.Conn, conf *tls.Config, addr, proto string, handshake time.Duration, timeoutErr error) (*tls.Conn, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if conf != nil {
		cfg = conf.Clone()
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg.ServerName = host
	}
	cfg.NextProtos = []string{proto}
	tc := tls.Client(c, cfg)
	hctx, cancel := ctx, context.CancelFunc(func() {})
	if handshake > 0 {
		hctx, cancel = context.WithTimeout(ctx, handshake)
	}
	err := tc.HandshakeContext(hctx)
	timedOut := hctx.Err() == context.DeadlineExceeded && ctx.Err() == nil
	cancel()
	if err != nil {
		c.Close()
		if timedOut {
			return nil, fmt.Errorf("%w (%v)", timeoutErr, err)
		}
		return nil, err
	}
	return tc, nil
}

// h2TLSConn hides a *tls.Conn from net/http's Transport (see H2OverTLS).
type h2TLSConn struct{ *tls.Conn }
