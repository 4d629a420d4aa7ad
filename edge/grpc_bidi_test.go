package edge

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

const grpcChatMethod = "/meridian.test.Echo/Chat"

// grpcChatDesc is a bidirectional stream whose server sends its headers
// first, then echoes every message until the client closes its side.
var grpcChatDesc = grpc.ServiceDesc{
	ServiceName: "meridian.test.Echo",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName: "Chat",
		Handler: func(_ any, stream grpc.ServerStream) error {
			if err := stream.SendHeader(metadata.Pairs("chat", "open")); err != nil {
				return err
			}
			for {
				var m healthpb.HealthCheckRequest
				if err := stream.RecvMsg(&m); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
				if err := stream.SendMsg(&healthpb.HealthCheckRequest{Service: "echo:" + m.Service}); err != nil {
					return err
				}
			}
		},
		ServerStreams: true,
		ClientStreams: true,
	}},
}

// A real grpc-go bidirectional stream through the gateway: the client waits
// for the server's headers before its first message (which the gateway must
// therefore pass on before any response message exists), and pauses between
// messages for longer than the read body timeout, which is off once the
// response has begun.
func TestGRPCBidiStreamHeadersFirstAndPauses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	srv.RegisterService(&grpcChatDesc, struct{}{})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	setup, _ := withReuseLog()
	setup.opts.ReadBodyTimeout = 300 * time.Millisecond
	gw := startGatewayWith(t, setup, fmt.Sprintf(`
services: [{name: grpc, protocol: h2c, targets: [{url: "http://%s"}]}]
routes: [{name: chat, match: {path_prefix: /meridian.test.Echo/}, service: grpc}]
`, ln.Addr()))
	cc := dialGRPC(t, gw.addr, insecure.NewCredentials())
	ctx := grpcCtx(t)
	stream, err := cc.NewStream(ctx, &grpcChatDesc.Streams[0], grpcChatMethod)
	if err != nil {
		t.Fatal(err)
	}
	md, err := stream.Header() // before sending anything
	if err != nil || len(md.Get("chat")) == 0 {
		t.Fatalf("headers %v, %v; want the server's chat: open", md, err)
	}
	for i, msg := range []string{"one", "two"} {
		if i > 0 {
			time.Sleep(700 * time.Millisecond) // longer than the read body timeout, on purpose
		}
		if err := stream.SendMsg(&healthpb.HealthCheckRequest{Service: msg}); err != nil {
			t.Fatalf("send %q: %v", msg, err)
		}
		var got healthpb.HealthCheckRequest
		if err := stream.RecvMsg(&got); err != nil {
			t.Fatalf("receive the echo of %q: %v", msg, err)
		}
		if got.Service != "echo:"+msg {
			t.Fatalf("echo %q, want %q", got.Service, "echo:"+msg)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var m healthpb.HealthCheckRequest
	if err := stream.RecvMsg(&m); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v, want io.EOF (status OK)", err)
	}
}
