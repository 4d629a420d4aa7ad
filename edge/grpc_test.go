package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// These tests run the real grpc-go library on both sides of the gateway: a
// grpc.Server (plain h2c) behind an h2c service, and a grpc.ClientConn
// dialing the gateway's client-facing listener (HTTP/2 prior knowledge, or
// TLS with ALPN h2).

const (
	grpcKnownService   = "meridian.test.Known"
	grpcWatchedService = "meridian.test.Watched"
	grpcBlockerService = "meridian.test.Blocker"
	grpcBlockMethod    = "/" + grpcBlockerService + "/Block"
)

// grpcUpstream is a grpc.Server on loopback serving the health service and
// a blocking method.
type grpcUpstream struct {
	addr    string
	health  *health.Server
	blocker *grpcBlocker
}

// grpcBlocker serves grpcBlockMethod: it reads one request, reports that it
// started, then blocks until the call's context ends and reports why.
type grpcBlocker struct {
	started chan grpcBlockStart
	ended   chan error
}

type grpcBlockStart struct {
	service     string // from the request message
	hasDeadline bool   // the server saw a grpc-timeout
	via         []string
}

// grpcBlockerDesc is a hand-written service description: the generic
// stream handler needs no generated code, and it reuses the health request
// message so the default proto codec applies.
var grpcBlockerDesc = grpc.ServiceDesc{
	ServiceName: grpcBlockerService,
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Block",
		Handler:       grpcBlockHandler,
		ServerStreams: true,
		ClientStreams: true,
	}},
}

func grpcBlockHandler(srv any, stream grpc.ServerStream) error {
	b := srv.(*grpcBlocker)
	ctx := stream.Context()
	var req healthpb.HealthCheckRequest
	if err := stream.RecvMsg(&req); err != nil {
		return err
	}
	_, hasDeadline := ctx.Deadline()
	md, _ := metadata.FromIncomingContext(ctx)
	select {
	case b.started <- grpcBlockStart{service: req.Service, hasDeadline: hasDeadline, via: md.Get("via")}:
	default:
	}
	<-ctx.Done()
	select {
	case b.ended <- ctx.Err():
	default:
	}
	return status.FromContextError(ctx.Err()).Err()
}

// startGRPCUpstream starts the gRPC server; it is stopped (and its Serve
// goroutine awaited) when the test ends.
func startGRPCUpstream(t *testing.T) *grpcUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus(grpcKnownService, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	b := &grpcBlocker{started: make(chan grpcBlockStart, 4), ended: make(chan error, 4)}
	srv.RegisterService(&grpcBlockerDesc, b)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Stop() // closes the listener and all connections, cancels handlers
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("grpc Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("grpc Serve did not return after Stop")
		}
	})
	return &grpcUpstream{addr: ln.Addr().String(), health: hs, blocker: b}
}

// grpcGatewayDoc routes the health and blocker services to an h2c service.
func grpcGatewayDoc(upstreamAddr string) string {
	return fmt.Sprintf(`
services:
  - name: grpc
    protocol: h2c
    targets:
      - url: http://%s
routes:
  - name: health
    match:
      path_prefix: /grpc.health.v1.Health/
    service: grpc
  - name: blocker
    match:
      path_prefix: /%s/
    service: grpc
`, upstreamAddr, grpcBlockerService)
}

// dialGRPC makes a client connection to addr, closed when the test ends.
// Cleanups run last-in first-out, so it is closed before the gateway it
// dials is shut down.
func dialGRPC(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatalf("grpc.NewClient(%s): %v", addr, err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// startGRPCThroughGateway starts the gRPC upstream, a gateway in front of it
// and a client dialing the gateway's plain (h2c) listener.
func startGRPCThroughGateway(t *testing.T) (*grpcUpstream, *testGateway, *grpc.ClientConn) {
	t.Helper()
	up := startGRPCUpstream(t)
	gw := startGateway(t, grpcGatewayDoc(up.addr))
	cc := dialGRPC(t, gw.addr, insecure.NewCredentials())
	return up, gw, cc
}

func grpcCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// checkGatewayVia asserts the response headers carry the gateway's Via
// entry for an HTTP/2 upstream response: the call went through Meridian
// and Meridian spoke HTTP/2 to the upstream.
func checkGatewayVia(t *testing.T, md metadata.MD) {
	t.Helper()
	for _, v := range md.Get("via") {
		if v == "2 meridian" {
			return
		}
	}
	t.Errorf("response Via = %q; want an entry \"2 meridian\" (headers %v)", md.Get("via"), md)
}

func TestGRPCUnaryCheckServing(t *testing.T) {
	_, _, cc := startGRPCThroughGateway(t)
	var hdr metadata.MD
	resp, err := healthpb.NewHealthClient(cc).Check(grpcCtx(t),
		&healthpb.HealthCheckRequest{Service: grpcKnownService}, grpc.Header(&hdr))
	if err != nil {
		t.Fatalf("Check(%s): %v", grpcKnownService, err)
	}
	if got := resp.GetStatus(); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Check(%s) status = %v; want SERVING", grpcKnownService, got)
	}
	checkGatewayVia(t, hdr)
}

// An error status is carried in trailers (here a trailers-only response)
// through the proxy.
func TestGRPCUnaryCheckUnknownServiceNotFound(t *testing.T) {
	_, _, cc := startGRPCThroughGateway(t)
	resp, err := healthpb.NewHealthClient(cc).Check(grpcCtx(t),
		&healthpb.HealthCheckRequest{Service: "meridian.test.NoSuchService"})
	if err == nil {
		t.Fatalf("Check of an unknown service succeeded with %v; want NotFound", resp)
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v carries no gRPC status", err)
	}
	if st.Code() != codes.NotFound {
		t.Fatalf("code = %v (message %q); want NotFound", st.Code(), st.Message())
	}
	if st.Message() != "unknown service" {
		t.Errorf("message = %q; want the server's \"unknown service\"", st.Message())
	}
}

// A server-streaming call is relayed message by message: the initial status
// arrives, and a later change arrives on the same open stream.
func TestGRPCWatchStreamsStatusChanges(t *testing.T) {
	up, _, cc := startGRPCThroughGateway(t)
	up.health.SetServingStatus(grpcWatchedService, healthpb.HealthCheckResponse_SERVING)

	ctx, cancel := context.WithCancel(context.Background())
	stream, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{Service: grpcWatchedService})
	if err != nil {
		cancel()
		t.Fatalf("Watch: %v", err)
	}
	type msg struct {
		st  healthpb.HealthCheckResponse_ServingStatus
		err error
	}
	msgs := make(chan msg, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			r, err := stream.Recv()
			msgs <- msg{r.GetStatus(), err}
			if err != nil {
				return
			}
		}
	}()
	// Registered after the gateway's cleanup, so it runs before it: the
	// stream ends before the gateway shuts down.
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("Watch receiver did not return after cancel")
		}
	})

	expect := func(want healthpb.HealthCheckResponse_ServingStatus, what string) {
		t.Helper()
		m := recv(t, msgs, what)
		if m.err != nil {
			t.Fatalf("%s: stream ended with %v; want status %v on the open stream", what, m.err, want)
		}
		if m.st != want {
			t.Fatalf("%s: status = %v; want %v", what, m.st, want)
		}
	}
	expect(healthpb.HealthCheckResponse_SERVING, "the initial status")
	up.health.SetServingStatus(grpcWatchedService, healthpb.HealthCheckResponse_NOT_SERVING)
	expect(healthpb.HealthCheckResponse_NOT_SERVING, "the status after SetServingStatus(NOT_SERVING)")
	up.health.SetServingStatus(grpcWatchedService, healthpb.HealthCheckResponse_SERVING)
	expect(healthpb.HealthCheckResponse_SERVING, "the status after SetServingStatus(SERVING)")

	// The stream is still open: nothing else, in particular no end, came.
	select {
	case m := <-msgs:
		t.Fatalf("unexpected message on the stream: status %v, err %v", m.st, m.err)
	default:
	}
	cancel()
	m := recv(t, msgs, "the end of the stream after cancel")
	if status.Code(m.err) != codes.Canceled {
		t.Errorf("after cancel: Recv = (%v, %v); want Canceled", m.st, m.err)
	}
}

// A call whose deadline passes while the handler blocks ends with
// DeadlineExceeded, and the end reaches the upstream handler through the
// gateway.
func TestGRPCDeadlineExceeded(t *testing.T) {
	up, _, cc := startGRPCThroughGateway(t)
	const deadline = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	var resp healthpb.HealthCheckResponse
	err := cc.Invoke(ctx, grpcBlockMethod, &healthpb.HealthCheckRequest{Service: "block"}, &resp)
	elapsed := time.Since(start)
	if err == nil {
		t.Fatalf("Block returned %v; want DeadlineExceeded", &resp)
	}
	// The gateway forwards grpc-timeout, so the upstream's grpc-go enforces
	// the same deadline: at the deadline it resets the stream (CANCEL)
	// while the client's own timer fires. Whichever reaches the client
	// first decides: DeadlineExceeded from the client's timer, or the
	// gateway's 502 for the upstream's reset (Unavailable; the reset
	// itself is in the access log, not told the client). Both end the
	// call at the deadline; anything else, or an end before it, fails.
	switch code := status.Code(err); {
	case code == codes.DeadlineExceeded:
	case code == codes.Unavailable && strings.Contains(err.Error(), "failed before a response") && elapsed >= deadline-50*time.Millisecond:
		t.Logf("the upstream's reset at the deadline won the race: %v", err)
	default:
		t.Fatalf("Block error = %v (code %v) after %v; want DeadlineExceeded at the %v deadline", err, code, elapsed, deadline)
	}
	if elapsed > deadline+5*time.Second {
		t.Errorf("Block took %v; want about the %v deadline", elapsed, deadline)
	}
	s := recv(t, up.blocker.started, "the blocking handler to be called")
	if s.service != "block" {
		t.Errorf("handler got request %q; want \"block\"", s.service)
	}
	if !s.hasDeadline {
		t.Errorf("handler context has no deadline: grpc-timeout did not reach the upstream")
	}
	if len(s.via) == 0 {
		t.Errorf("upstream request has no Via header: it did not come through the gateway")
	}
	if err := recv(t, up.blocker.ended, "the blocking handler's context to end"); err == nil {
		t.Errorf("handler context ended without an error")
	} else if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		t.Errorf("handler context ended with %v", err)
	}
}

// The unary check over the HTTPS listener: TLS with ALPN h2.
func TestGRPCUnaryCheckOverTLS(t *testing.T) {
	up := startGRPCUpstream(t)
	tg := startTLSGateway(t, grpcGatewayDoc(up.addr), false)
	creds := credentials.NewTLS(&tls.Config{RootCAs: tg.pool, ServerName: "localhost"})
	cc := dialGRPC(t, tg.addr, creds)
	var (
		hdr metadata.MD
		p   peer.Peer
	)
	resp, err := healthpb.NewHealthClient(cc).Check(grpcCtx(t),
		&healthpb.HealthCheckRequest{Service: grpcKnownService}, grpc.Header(&hdr), grpc.Peer(&p))
	if err != nil {
		t.Fatalf("Check(%s) over TLS: %v", grpcKnownService, err)
	}
	if got := resp.GetStatus(); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Check(%s) status = %v; want SERVING", grpcKnownService, got)
	}
	checkGatewayVia(t, hdr)
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		t.Fatalf("peer auth info = %T; want credentials.TLSInfo", p.AuthInfo)
	}
	if got := info.State.NegotiatedProtocol; got != "h2" {
		t.Errorf("ALPN protocol = %q; want h2", got)
	}
	if got := p.Addr.String(); got != tg.addr {
		t.Errorf("peer address = %s; want the gateway's HTTPS listener %s", got, tg.addr)
	}
}

// The gateway's own errors reach a gRPC client as gRPC statuses (a
// trailers-only answer with grpc-status and grpc-message, as Envoy sends),
// not as HTTP statuses the client can only map to Unavailable or
// Unimplemented without the reason.
func TestGRPCGatewayErrorsAreGRPCStatuses(t *testing.T) {
	dead := strings.TrimPrefix(deadAddr(t), "http://")
	gw := startGateway(t, grpcGatewayDoc(dead))
	cc := dialGRPC(t, gw.addr, insecure.NewCredentials())

	_, err := healthpb.NewHealthClient(cc).Check(grpcCtx(t), &healthpb.HealthCheckRequest{Service: grpcKnownService})
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || st.Message() != "Bad Gateway: service grpc: connection refused" {
		t.Errorf("call to a dead upstream: %v %q; want Unavailable with the gateway's reason", st.Code(), st.Message())
	}

	var resp healthpb.HealthCheckResponse
	err = cc.Invoke(grpcCtx(t), "/no.such.Service/Method", &healthpb.HealthCheckRequest{}, &resp)
	st = status.Convert(err)
	if st.Code() != codes.Unimplemented || !strings.HasPrefix(st.Message(), "Not Found: no route matches POST ") {
		t.Errorf("call with no route: %v %q; want Unimplemented with the gateway's reason", st.Code(), st.Message())
	}
}

func TestGRPCPercentEncode(t *testing.T) {
	for in, want := range map[string]string{
		"plain text: ok ~": "plain text: ok ~",
		"100% sure":        "100%25 sure",
		"line\nbreak\ttab": "line%0Abreak%09tab",
		"caf\u00e9":        "caf%C3%A9",
		"\x7f del":         "%7F del",
	} {
		if got := grpcPercentEncode(in); got != want {
			t.Errorf("grpcPercentEncode(%q) = %q; want %q", in, got, want)
		}
	}
}

// A gRPC call to the plain port of a gateway that redirects to HTTPS gets a
// gRPC status naming where to go, not a 308 with a text body that grpc-go
// can only report as a malformed answer.
func TestGRPCCallToRedirectingPortGetsStatus(t *testing.T) {
	g := New(Options{})
	g.Swap(compileDoc(t, g, grpcGatewayDoc("127.0.0.1:1"), 1, nil))
	defer g.Close()
	srv := startRedirectPort(t, g)
	cc := dialGRPC(t, srv.Addr().String(), insecure.NewCredentials())
	_, err := healthpb.NewHealthClient(cc).Check(grpcCtx(t), &healthpb.HealthCheckRequest{Service: grpcKnownService})
	st := status.Convert(err)
	want := "Permanent Redirect: Use HTTPS: https://127.0.0.1:8443/grpc.health.v1.Health/Check"
	if st.Code() != codes.Unavailable || st.Message() != want {
		t.Errorf("gRPC call to the redirecting port: %v %q; want Unavailable %q", st.Code(), st.Message(), want)
	}
}
