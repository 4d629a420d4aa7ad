package edge

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawBackend answers every HTTP/1.1 request on its connections with the
// same 1 KiB response, parsing no more than it must, so that a benchmark
// through the gateway measures the gateway (its allocations included)
// rather than a net/http backend.
func rawBackend(b *testing.B) string {
	b.Helper()
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + strings.Repeat("x", 1024))
	return "http://" + rawUpstream(b, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			// Requests have no body: the head ends the request.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) <= 2 {
					break
				}
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	})
}

// BenchmarkProxyHTTP1 is one keep-alive client sending GETs through the
// gateway to a raw backend, one at a time, on loopback. allocs/op counts
// the whole process, so it is the gateway's allocations plus a few of the
// harness's. For throughput against nginx and others, see bench/.
func BenchmarkProxyHTTP1(b *testing.B) {
	gw := startGateway(b, oneRoute(rawBackend(b), ""))
	c, err := net.Dial("tcp", gw.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReaderSize(c, 8<<10)
	req := []byte("GET /bench HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	body := make([]byte, 1024)
	b.ReportAllocs()
	b.SetBytes(1024)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n := -1
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(line) <= 2 {
				break
			}
			if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
				n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
			}
		}
		if n != len(body) {
			b.Fatalf("Content-Length %d; want %d", n, len(body))
		}
		if _, err := io.ReadFull(br, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProxyH2C is GETs through the gateway over one h2c connection,
// as many streams at once as GOMAXPROCS (RunParallel), to a raw HTTP/1.1
// backend. Most of its cost is net/http's HTTP/2 server and client; it
// shows what the gateway adds per stream (allocs/op counts the whole
// process).
func BenchmarkProxyH2C(b *testing.B) {
	gw := startGateway(b, oneRoute(rawBackend(b), ""))
	c := newH2CClient(b)
	url := gw.url + "/bench"
	b.ReportAllocs()
	b.SetBytes(1024)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || n != 1024 {
				b.Errorf("%s, %d bytes; want 200 and 1024", resp.Status, n)
				return
			}
		}
	})
}

// memConn is a net.Conn without a network. As a client it returns one
// request per Read until left runs out; as an upstream it answers each
// write with resp. Both discard what is written to them. It exists so
// that BenchmarkProxyHTTP1InMemory measures the gateway's own CPU work,
// which loopback syscalls and scheduling otherwise dwarf and blur.
type memConn struct {
	in      []byte // what each Read returns (a client's request)
	left    int    // client: requests still to send
	resp    []byte // upstream: the answer to each request
	pending []byte // upstream: unread part of the current answer
	written int64
}

func (c *memConn) Read(p []byte) (int, error) {
	if c.resp != nil {
		if len(c.pending) == 0 {
			return 0, io.EOF // never read before a request was written
		}
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.left == 0 {
		return 0, io.EOF
	}
	c.left--
	return copy(p, c.in), nil
}

func (c *memConn) Write(p []byte) (int, error) {
	c.written += int64(len(p))
	if c.resp != nil {
		c.pending = c.resp
	}
	return len(p), nil
}

func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 40000} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkProxyHTTP1InMemory is the gateway's CPU cost per proxied
// keep-alive GET: one connection, every byte in memory, no syscalls and
// no goroutine switches. ns/op here is what the gateway adds to the
// kernel's work per request; compare it with BenchmarkProxyHTTP1.
func BenchmarkProxyHTTP1InMemory(b *testing.B) {
	// The collector paced as cmd/meridian paces it. At the test binary's
	// GOGC=100 this tiny heap is almost always being marked, and write
	// barriers would be a fifth of the profile; in the running binary,
	// marking takes under 1% of the time.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	const retrying = "    retries: {attempts: 2}\n    timeouts: {total: 30s}"
	const bareService = "    proxy_headers: {forwarded: false, x_forwarded: false, via: false, request_id: false, traceparent: false}"
	for _, c := range []struct {
		name, service, fields, answerFields string
		trusted                             bool // the peer a trusted proxy
		http10                              bool // an HTTP/1.0 client's requests
	}{
		{"plain", "", "", "", false, false},
		// bench/'s /bare/ route: none of the fields the gateway writes
		// by default (the work bare nginx does).
		{"bare", bareService, "", "", false, false},
		// As the demo's and the README's services: retries and a total
		// timeout.
		{"retrying", retrying, "", "", false, false},
		// The same off the span lane: a request that says it takes
		// trailers, as gRPC clients do (the general path's).
		{"retrying-general", retrying, "Te: trailers\r\n", "", false, false},
		// An upstream that says keep-alive on every answer, as Node.js
		// and nginx do.
		{"keep-alive-upstream", "", "", "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n", false, false},
		// Forwarding fields: a client's, replaced, and a trusted
		// proxy's, extended.
		{"forwarded", "", "X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: https\r\n", "", false, false},
		{"forwarded-trusted", "", "X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: https\r\n", "", true, false},
		// An HTTP/1.0 client that keeps its connection, as ApacheBench
		// with -k.
		{"http10-keep-alive", "", "Connection: Keep-Alive\r\n", "", false, true},
		// A POST with a small JSON body, whole with its head.
		{"post", "", "POST", "", false, false},
		// A PUT with the same body to a service with retries: its body
		// goes again with a retry, as the head does.
		{"put-retrying", retrying, "PUT", "", false, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			var opts Options
			if c.trusted {
				opts.TrustedProxies = trustedProxies{netip.MustParsePrefix("127.0.0.2/32")} // memConn's peer
			}
			g := New(opts)
			g.Swap(compileDoc(b, g, oneRouteService("http://upstream.test:80", c.service), 1, nil))
			resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Wed, 25 Nov 2026 10:00:00 GMT\r\n" + c.answerFields + "Content-Length: 1024\r\n\r\n" + strings.Repeat("x", 1024))
			g.tmu.Lock()
			for _, t := range g.transports {
				t.(*h1Transport).dialConn = func(context.Context, string, string) (net.Conn, error) {
					return &memConn{resp: resp}, nil
				}
			}
			g.tmu.Unlock()
			srv := newH1Server(g, ListenerOptions{}.withDefaults(), slog.New(slog.DiscardHandler), nil)
			proto := "HTTP/1.1"
			if c.http10 {
				proto = "HTTP/1.0"
			}
			req := "GET /bench " + proto + "\r\nHost: example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n" + c.fields + "\r\n"
			if c.fields == "POST" || c.fields == "PUT" {
				body := `{"order": 1234, "items": [{"sku": "A-1", "n": 2}], "note": "leave at the door"}`
				req = c.fields + " /bench " + proto + "\r\nHost: example.com\r\nUser-Agent: bench\r\nContent-Type: application/json\r\nContent-Length: " +
					strconv.Itoa(len(body)) + "\r\n\r\n" + body
			}
			client := &memConn{in: []byte(req)}

			// One request first: it dials the upstream and checks the answer.
			client.left = 1
			srv.newConn(client).serve()
			// At least the body and a status line (the gateway drops the
			// upstream's hop-by-hop fields).
			if want := int64(1024 + len("HTTP/1.1 200 OK\r\n\r\n")); client.written < want {
				b.Fatalf("client got %d bytes; want at least %d", client.written, want)
			}
			client.left, client.written = b.N, 0
			b.ReportAllocs()
			b.ResetTimer()
			srv.newConn(client).serve()
			b.StopTimer()
			if per := client.written / int64(b.N); per < 1024 {
				b.Fatalf("client got %d bytes per request; want at least the body's 1024", per)
			}
		})
	}
}

// yieldConn is a memConn that yields to the scheduler before every read,
// so that many connections served by goroutines take turns request by
// request, as they do under load.
type yieldConn struct{ memConn }

func (c *yieldConn) Read(p []byte) (int, error) {
	runtime.Gosched()
	return c.memConn.Read(p)
}

// BenchmarkProxyHTTP1InMemoryConns is BenchmarkProxyHTTP1InMemory over 1,
// 64 and 256 client connections taking turns (each with its own upstream
// connection): how the cost per request grows with the working set of
// per-connection state. Every read yields, in each sub-benchmark alike.
func BenchmarkProxyHTTP1InMemoryConns(b *testing.B) {
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Wed, 25 Nov 2026 10:00:00 GMT\r\nContent-Length: 1024\r\n\r\n" + strings.Repeat("x", 1024))
	req := []byte("GET /bench HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	for _, conns := range []int{1, 64, 256} {
		b.Run(strconv.Itoa(conns), func(b *testing.B) {
			g := New(Options{})
			g.Swap(compileDoc(b, g, oneRoute("http://upstream.test:80", ""), 1, nil))
			g.tmu.Lock()
			for _, t := range g.transports {
				t.(*h1Transport).dialConn = func(context.Context, string, string) (net.Conn, error) {
					return &yieldConn{memConn{resp: resp}}, nil
				}
			}
			g.tmu.Unlock()
			srv := newH1Server(g, ListenerOptions{}.withDefaults(), slog.New(slog.DiscardHandler), nil)
			clients := make([]*yieldConn, conns)
			for i := range clients {
				clients[i] = &yieldConn{memConn{in: req, left: b.N / conns}}
			}
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for _, c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					srv.newConn(c).serve()
				}()
			}
			wg.Wait()
			b.StopTimer()
			for _, c := range clients {
				if want := int64(b.N/conns) * int64(len(resp)); c.written < want {
					b.Fatalf("a client got %d bytes; want at least %d", c.written, want)
				}
			}
		})
	}
}
