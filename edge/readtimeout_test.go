package edge

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// An upstream that stops sending its response body is cut after the
// service's read timeout (timeouts.read): with part of the body sent, the
// client gets a cut response; with only the head, a 504 problem. One
// that keeps sending, however slowly, is not cut.
func TestUpstreamReadTimeout(t *testing.T) {
	const read = 300 * time.Millisecond
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	addr := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		switch req.URL.Path {
		case "/stall": // some body, then nothing
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
		case "/head-only": // the head, then nothing
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
		case "/trickle": // a byte every read/3, 12 of them: never quiet for read
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n")
			for i := range 12 {
				time.Sleep(read / 3)
				fmt.Fprintf(c, "%c", 'a'+i)
			}
			return true
		}
		select {
		case <-hang:
		case <-time.After(10 * time.Second):
		}
		return false
	})
	setup, log := withReuseLog()
	gw := startGatewayWith(t, setup, oneRouteService("http://"+addr, "    timeouts: {read: 300ms}"))

	// Part of the body, then the cut: the head says 100 bytes, 10 come.
	start := time.Now()
	resp := rawGet(t, gw.addr, "/stall")
	got, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(got) != "0123456789" || err == nil {
		t.Fatalf("/stall: %d, %q, error %v; want 200, the 10 bytes sent, and a cut", resp.StatusCode, got, err)
	}
	if d := time.Since(start); d < read || d > read+read/8+2*time.Second {
		t.Fatalf("/stall cut after %v; want about %v", d, read)
	}
	if rec := onlyRecord(t, log); rec["status"] != int64(200) || rec["error"] != "http_response_timeout" || rec["bytes_out"] != int64(10) {
		t.Errorf("/stall logged %v %v, bytes_out %v; want 200 http_response_timeout, 10", rec["status"], rec["error"], rec["bytes_out"])
	}

	// Only the head: nothing was sent, so the client is told.
	log.reset()
	resp = rawGet(t, gw.addr, "/head-only")
	body, _ := io.ReadAll(resp.Body)
	p := checkProblem(t, resp, body, http.StatusGatewayTimeout, "http_response_timeout")
	if !strings.Contains(p.Detail, "sent nothing more of its response body for 300ms") {
		t.Errorf("detail %q; want it to name the read timeout", p.Detail)
	}
	if rec := onlyRecord(t, log); rec["status"] != int64(504) || rec["error"] != "http_response_timeout" {
		t.Errorf("/head-only logged %v %v; want 504 http_response_timeout", rec["status"], rec["error"])
	}

	// Slow but never quiet for the timeout: whole.
	log.reset()
	resp = rawGet(t, gw.addr, "/trickle")
	if body, err = io.ReadAll(resp.Body); err != nil {
		t.Fatalf("/trickle: %v", err)
	}
	if resp.StatusCode != 200 || string(body) != "abcdefghijkl" {
		t.Fatalf("/trickle: %d %q; want 200 abcdefghijkl", resp.StatusCode, body)
	}
	if rec := onlyRecord(t, log); rec["error"] != nil {
		t.Errorf("/trickle logged error %v; want none", rec["error"])
	}
}

// An HTTP/2 upstream's stalled body is cut the same way.
func TestH2UpstreamReadTimeout(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	be := newH2CBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "0123456789")
		w.(http.Flusher).Flush()
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	setup, log := withReuseLog()
	gw := startGatewayWith(t, setup, oneRouteService(be.URL, "    protocol: h2c\n    timeouts: {read: 300ms}"))
	resp := rawGet(t, gw.addr, "/x")
	got, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(got) != "0123456789" || err == nil {
		t.Fatalf("%d, %q, error %v; want 200, the 10 bytes sent, and a cut", resp.StatusCode, got, err)
	}
	if rec := onlyRecord(t, log); rec["error"] != "http_response_timeout" {
		t.Errorf("logged error %v; want http_response_timeout", rec["error"])
	}
}

// A tunnel after a 101 has no read timeout: a WebSocket quiet for longer
// still works.
func TestUpgradeHasNoReadTimeout(t *testing.T) {
	gw := startGateway(t, oneRouteService(echoUpgradeBackend(t, nil, nil), "    timeouts: {read: 200ms}"))
	c := dialGateway(t, gw.addr)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, upgradeRequest)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	for range 2 {
		time.Sleep(600 * time.Millisecond) // three read timeouts, quiet
		io.WriteString(c, "ping")
		buf := make([]byte, 4)
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo after a quiet spell: %q, %v", buf, err)
		}
	}
}

// The silence is counted from the upstream's last bytes, also when the
// response-header deadline left in place serves as the first look (a
// response_header shorter than read): the cut comes the read timeout
// after them, not the read timeout after that look, nor after the body's
// first read began.
func TestUpstreamReadTimeoutCountsFromLastByte(t *testing.T) {
	sent := make(chan time.Time, 1)
	addr := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
		time.Sleep(150 * time.Millisecond) // the body in a read of its own, before the first look
		io.WriteString(c, "0123456789")
		sent <- time.Now()
		time.Sleep(5 * time.Second)
		return false
	})
	gw := startGateway(t, oneRouteService("http://"+addr, "    timeouts: {read: 500ms, response_header: 300ms}"))
	resp := rawGet(t, gw.addr, "/x")
	if body, err := io.ReadAll(resp.Body); err == nil || string(body) != "0123456789" {
		t.Fatalf("body %q, error %v; want the 10 bytes sent, cut", body, err)
	}
	if d := time.Since(recv(t, sent, "the upstream's bytes")); d < 450*time.Millisecond || d > 620*time.Millisecond {
		t.Fatalf("cut %v after the upstream's last bytes; want about 500ms", d)
	}
}

// While the request body is still going out, the upstream's silence is
// not counted: a stream whose upstream answers each piece of a slow
// client's body waits for the client (whose own read timeout bounds it),
// over an HTTP/1.1 upstream and an HTTP/2 one.
func TestReadTimeoutWaitsForTheRequestBody(t *testing.T) {
	echo := func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex() // HTTP/1: read while writing
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		buf := make([]byte, 64)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	}
	for _, proto := range []string{"http1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			var be string
			if proto == "h2c" {
				be = newH2CBackend(t, echo).URL
			} else {
				be = newBackend(t, echo).URL
			}
			setup, log := withReuseLog()
			gw := startGatewayWith(t, setup, oneRouteService(be, "    protocol: "+proto+"\n    timeouts: {read: 200ms}"))
			c, br := h1Raw(t, gw.addr)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			h1Write(t, c, "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 4 {
				time.Sleep(400 * time.Millisecond) // twice the read timeout
				piece := fmt.Sprintf("piece%d", i)
				fmt.Fprintf(c, "%x\r\n%s\r\n", len(piece), piece)
				got := make([]byte, len(piece))
				if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != piece {
					t.Fatalf("echo of %s after a pause: %q, %v", piece, got, err)
				}
			}
			io.WriteString(c, "0\r\n\r\n")
			if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
				t.Fatalf("end of the stream: %q, %v", rest, err)
			}
			if rec := onlyRecord(t, log); rec["error"] != nil || rec["status"] != int64(200) {
				t.Errorf("logged %v %v; want 200 and no error", rec["status"], rec["error"])
			}
		})
	}
}

// rawGet sends GET path on a new connection to addr (its reads bounded by
// 10 s) and returns the response, its body unread.
func rawGet(t *testing.T, addr, path string) *http.Response {
	t.Helper()
	c, br := h1Raw(t, addr)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	h1Write(t, c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return resp
}

// A client slow to read is not the upstream's silence: while the gateway
// waits to write to the client it does not read the upstream, and the
// read timeout counts only the time a read waits, so a large body still
// comes whole to a client that pauses for longer than the timeout.
func TestSlowClientIsNotTheUpstreamsSilence(t *testing.T) {
	const size = 16 << 20 // well over what the sockets on the way buffer
	addr := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
		chunk := []byte(strings.Repeat("0123456789abcdef", 4096))
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return false
			}
		}
		return true
	})
	setup, log := withReuseLog()
	gw := startGatewayWith(t, setup, oneRouteService("http://"+addr, "    timeouts: {read: 200ms}"))
	resp := rawGet(t, gw.addr, "/big")
	for range 2 {
		time.Sleep(700 * time.Millisecond) // the gateway blocks writing to us
		if _, err := io.CopyN(io.Discard, resp.Body, 1<<20); err != nil {
			t.Fatalf("reading after a pause: %v", err)
		}
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != size-2<<20 {
		t.Fatalf("read %d more bytes, error %v; want the rest, %d", n, err, size-2<<20)
	}
	if rec := onlyRecord(t, log); rec["error"] != nil {
		t.Errorf("logged error %v; want none", rec["error"])
	}
}
