package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// dialH3 opens a QUIC connection to the gateway (to addr, the gateway's or
// a relay's) and an HTTP/3 client connection on it.
func dialH3(t *testing.T, tg *tlsGateway, addr string) (*quic.Conn, *http3.ClientConn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tc := &tls.Config{RootCAs: tg.pool, ServerName: "localhost", NextProtos: []string{http3.NextProtoH3}}
	conn, err := quic.DialAddr(ctx, addr, tc, &quic.Config{})
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	return conn, (&http3.Transport{}).NewClientConn(conn), nil
}

// h3Get makes one GET on cc and checks for a 200.
func h3Get(t *testing.T, cc *http3.ClientConn, host, path string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "https://"+host+path, nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s over HTTP/3: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s over HTTP/3: %d; want 200", path, resp.StatusCode)
	}
}

// An HTTP/3 connection without a request for the idle timeout is closed
// (H3_NO_ERROR), and a connection that ends otherwise (the client closes
// it) leaves no idle timer behind: http3.Server's own kept every such
// connection reachable until its timeout.
func TestHTTP3IdleTimeout(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	t.Run("idle connection closed", func(t *testing.T) {
		setup := gatewaySetup{}
		setup.listener.IdleTimeout = 300 * time.Millisecond
		tg := startTLSGatewayWith(t, setup, oneRoute(be.URL, ""), true)
		conn, cc, err := dialH3(t, tg, tg.addr)
		if err != nil {
			t.Fatal(err)
		}
		h3Get(t, cc, tg.addr, "/a")
		select {
		case <-conn.Context().Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the idle HTTP/3 connection was not closed")
		}
		var ae *quic.ApplicationError
		if err := context.Cause(conn.Context()); !errors.As(err, &ae) || !ae.Remote || ae.ErrorCode != quic.ApplicationErrorCode(http3.ErrCodeNoError) {
			t.Errorf("connection closed with %v; want the server's H3_NO_ERROR", err)
		}
		waitFor(t, 5*time.Second, "the connection's slot and timer given back", func() bool {
			return tg.srv.ln.open.Load() == 0 && tg.srv.quic.idleArmed.Load() == 0
		})
	})
	t.Run("closed connection forgotten", func(t *testing.T) {
		setup := gatewaySetup{}
		setup.listener.IdleTimeout = time.Hour
		tg := startTLSGatewayWith(t, setup, oneRoute(be.URL, ""), true)
		conn, cc, err := dialH3(t, tg, tg.addr)
		if err != nil {
			t.Fatal(err)
		}
		h3Get(t, cc, tg.addr, "/a")
		if n := tg.srv.quic.idleArmed.Load(); n != 1 {
			t.Fatalf("%d idle timers set for an idle connection; want 1", n)
		}
		conn.CloseWithError(0, "bye")
		waitFor(t, 5*time.Second, "the closed connection's timer stopped and its slot given back", func() bool {
			return tg.srv.quic.idleArmed.Load() == 0 && tg.srv.ln.open.Load() == 0
		})
	})
}

// QUIC connections count against the HTTPS listener's max_connections with
// its TCP ones: over the cap a new one is refused (CONNECTION_REFUSED) and
// counted, and a slot comes back when a connection ends.
func TestHTTP3ConnectionsCapped(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	setup := gatewaySetup{}
	setup.listener.MaxConnections = 2
	tg := startTLSGatewayWith(t, setup, oneRoute(be.URL, ""), true)
	var conns []*quic.Conn
	for range 2 {
		conn, cc, err := dialH3(t, tg, tg.addr)
		if err != nil {
			t.Fatal(err)
		}
		h3Get(t, cc, tg.addr, "/a")
		conns = append(conns, conn)
	}
	if n := tg.srv.ln.open.Load(); n != 2 {
		t.Errorf("connections open = %d; want 2 (QUIC ones counted)", n)
	}
	_, _, err := dialH3(t, tg, tg.addr)
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
		t.Fatalf("a third connection under a cap of 2: %v; want CONNECTION_REFUSED", err)
	}
	if n := tg.srv.ln.rejected.Load(); n != 1 {
		t.Errorf("connections rejected = %d; want 1", n)
	}
	conns[0].CloseWithError(0, "")
	waitFor(t, 5*time.Second, "the closed connection's slot", func() bool { return tg.srv.ln.open.Load() == 1 })
	_, cc, err := dialH3(t, tg, tg.addr)
	if err != nil {
		t.Fatalf("a connection after one closed: %v", err)
	}
	h3Get(t, cc, tg.addr, "/b")
}

// udpRelay forwards one client's datagrams to a server and, unless drop is
// set, the server's back; it notes whether the server sent a Retry.
type udpRelay struct {
	pc    net.PacketConn
	up    *net.UDPConn
	drop  bool
	retry atomic.Bool
	mu    sync.Mutex
	peer  net.Addr
}

func newUDPRelay(t *testing.T, server string, drop bool) *udpRelay {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sa, _ := net.ResolveUDPAddr("udp", server)
	up, err := net.DialUDP("udp", nil, sa)
	if err != nil {
		t.Fatal(err)
	}
	r := &udpRelay{pc: pc, up: up, drop: drop}
	t.Cleanup(func() { pc.Close(); up.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.peer = from
			r.mu.Unlock()
			up.Write(buf[:n])
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			// A long header (RFC 9000 17.2) of type 3 in QUIC v1: Retry.
			if n > 0 && buf[0]&0x80 != 0 && buf[0]&0x30 == 0x30 {
				r.retry.Store(true)
			}
			r.mu.Lock()
			peer := r.peer
			r.mu.Unlock()
			if !r.drop && peer != nil {
				pc.WriteTo(buf[:n], peer)
			}
		}
	}()
	return r
}

// While handshakes pile up (clients whose addresses never answer), new
// clients are asked to prove theirs with a Retry, and are served after it;
// the stuck handshakes give their slots back when they time out.
func TestHTTP3RetryWhileHandshakesPileUp(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	setup := gatewaySetup{quic: &quic.Config{HandshakeIdleTimeout: 2 * time.Second}}
	setup.listener.MaxConnections = 4 // Retry from 2 handshakes in progress
	tg := startTLSGatewayWith(t, setup, oneRoute(be.URL, ""), true)

	// No Retry while no handshake is stuck.
	r := newUDPRelay(t, tg.addr, false)
	_, cc, err := dialH3(t, tg, r.pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	h3Get(t, cc, tg.addr, "/a")
	if r.retry.Load() {
		t.Error("a Retry with no handshake in progress")
	}

	// Two clients whose server flights never arrive.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		bh := newUDPRelay(t, tg.addr, true)
		go quic.DialAddr(ctx, bh.pc.LocalAddr().String(), &tls.Config{RootCAs: tg.pool, ServerName: "localhost", NextProtos: []string{http3.NextProtoH3}}, &quic.Config{})
	}
	waitFor(t, 5*time.Second, "two handshakes in progress", func() bool { return tg.srv.quic.handshaking.Load() == 2 })

	r = newUDPRelay(t, tg.addr, false)
	_, cc, err = dialH3(t, tg, r.pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	h3Get(t, cc, tg.addr, "/b")
	if !r.retry.Load() {
		t.Error("no Retry with two handshakes in progress")
	}
	cancel()
	waitFor(t, 10*time.Second, "the stuck handshakes' slots given back", func() bool {
		return tg.srv.quic.handshaking.Load() == 0 && tg.srv.ln.open.Load() == 2
	})
	// Only the handshakes that completed are counted.
	if n := metricValue(t, tg.g, `meridian_tls_handshakes_total{alpn="h3",transport="quic",version="TLS 1.3"}`); n != 2 {
		t.Errorf("QUIC handshakes counted: %v; want the 2 that completed", n)
	}
	if n := metricValue(t, tg.g, "meridian_connections_open"); n != 2 {
		t.Errorf("meridian_connections_open = %v; want the 2 QUIC connections", n)
	}
}

// A request whose HTTP/3 stream is quiet for longer than the idle timeout
// (an event stream between events) is not cut: the idle timeout is for
// connections without a request, and the client here sends no PINGs of
// its own.
func TestHTTP3QuietStreamOutlivesIdleTimeout(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first;")
		w.(http.Flusher).Flush()
		time.Sleep(time.Second)
		io.WriteString(w, "second")
	})
	setup := gatewaySetup{}
	setup.listener.IdleTimeout = 400 * time.Millisecond
	tg := startTLSGatewayWith(t, setup, oneRoute(be.URL, ""), true)
	_, cc, err := dialH3(t, tg, tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "https://"+tg.addr+"/events", nil)
	resp, err := cc.RoundTrip(req)
	wantWhole(t, resp, err, "first;second")
}

// Over the cap, each refused QUIC client is counted once, however its
// Initial packets interleave with other clients'.
func TestHTTP3RefusalsCountedOncePerClient(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	setup := gatewaySetup{}
	setup.listener.MaxConnections = 1
	tg := startTLSGatewayWith(t, setup, oneRoute(be.URL, ""), true)
	if _, cc, err := dialH3(t, tg, tg.addr); err != nil {
		t.Fatal(err)
	} else {
		h3Get(t, cc, tg.addr, "/a")
	}
	const clients = 20
	var wg sync.WaitGroup
	var refused atomic.Int64
	for range clients {
		wg.Go(func() {
			_, _, err := dialH3(t, tg, tg.addr)
			var te *quic.TransportError
			if errors.As(err, &te) && te.ErrorCode == quic.ConnectionRefused {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if refused.Load() != clients {
		t.Fatalf("%d of %d clients refused; want all", refused.Load(), clients)
	}
	if n := tg.srv.ln.rejected.Load(); n != clients {
		t.Errorf("connections rejected = %d; want %d, one per client", n, clients)
	}
}

// While the listener drains, a new QUIC connection is refused at once
// (CONNECTION_REFUSED), as a new TCP connection is, not left to time out
// its handshake, and the connections already open go on.
func TestHTTP3NewConnectionRefusedWhileDraining(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	})
	tg := startTLSGatewayWith(t, gatewaySetup{}, oneRoute(be.URL, ""), true)
	_, cc, err := dialH3(t, tg, tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	slow := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "https://localhost:"+portOf(tg.addr)+"/slow", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			slow <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- string(b)
	}()
	recv(t, entered, "the slow request at the backend")
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shut <- tg.srv.Shutdown(ctx)
	}()
	waitFor(t, 5*time.Second, "the drain to start", func() bool { return tg.srv.quic.draining.Load() })
	start := time.Now()
	_, _, err = dialH3(t, tg, tg.addr)
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
		t.Errorf("a new connection while draining: %v; want CONNECTION_REFUSED", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refused after %v; want at once", d)
	}
	close(release)
	if got := <-slow; got != "ok" {
		t.Errorf("the request in flight when the drain began: %q; want ok", got)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown = %v; want nil", err)
	}
}
