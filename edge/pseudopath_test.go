package edge

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2cStatus sends one request over prior-knowledge h2c, its header block
// as fields (pseudo-fields first, unchecked: what a client's library would
// refuse to send), and returns the answer's status.
func h2cStatus(t *testing.T, addr string, fields [][2]string) int {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range fields {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.RSTStreamFrame:
			return -int(f.ErrCode) // a stream error: no status
		case *http2.HeadersFrame:
			hf, err := dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range hf {
				if h.Name == ":status" {
					n, _ := strconv.Atoi(h.Value)
					return n
				}
			}
			t.Fatalf("answer without :status: %v", hf)
		}
	}
}

// An HTTP/2 :path is an absolute path and query (or * for OPTIONS): a
// space in it would reach the upstream's request line, where it ends the
// target, and a URI's authority would be dropped while :authority routes.
func TestHTTP2PathMustBeAnAbsolutePath(t *testing.T) {
	// The backend records each request line as it came: Go's server
	// would answer a line with a space in its target with its own 400.
	var mu sync.Mutex
	var got []string
	addr := rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, strings.TrimRight(line, "\r\n"))
			mu.Unlock()
			for { // the rest of the head
				if l, err := br.ReadString('\n'); err != nil || l == "\r\n" {
					break
				}
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	be := struct{ URL string }{"http://" + addr}
	gw := startGateway(t, fmt.Sprintf("services: [{name: be, targets: [{url: %q}]}]\nroutes: [{name: r, service: be, match: {path_prefix: /}}]\n", be.URL))
	req := func(method, path string) [][2]string {
		return [][2]string{{":method", method}, {":scheme", "http"}, {":authority", "a.example"}, {":path", path}}
	}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/x?q=a", 200},
		{"GET", "/x?q=a%20b", 200},
		{"GET", "/x?q=a b", 400},
		{"GET", "/x?q=a HTTP/1.1", 400},
		{"GET", "/x\tz", 400},
		{"GET", "/x?q=\x7f", 400},
		{"GET", "http://b.example/x", 400},
		{"GET", "x", 400},
		{"GET", "*", 400},
	} {
		// Refused by the gateway (400), or before it by the HTTP/2
		// server (a stream reset, PROTOCOL_ERROR).
		st := h2cStatus(t, gw.addr, req(tc.method, tc.path))
		if st != tc.want && !(tc.want == 400 && st == -int(http2.ErrCodeProtocol)) {
			t.Errorf("%s %q over h2c: status %d; want %d", tc.method, tc.path, st, tc.want)
		}
	}
	// The plain port of a node with HTTPS on redirects what it does not
	// serve: not these, which are no place to redirect to.
	redir := startRedirectPort(t, gw.g)
	for _, p := range []string{"/x?q=a b", "http://b.example/x"} {
		st := h2cStatus(t, redir.Addr().String(), req("GET", p))
		if st != 400 && st != -int(http2.ErrCodeProtocol) {
			t.Errorf("GET %q over h2c to the redirecting port: status %d; want 400", p, st)
		}
	}
	if st := h2cStatus(t, redir.Addr().String(), req("GET", "/x?q=a")); st != 308 {
		t.Errorf("GET /x?q=a over h2c to the redirecting port: status %d; want 308", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"GET /x?q=a HTTP/1.1", "GET /x?q=a%20b HTTP/1.1"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("upstream saw %q; want only %q", got, want)
	}
}
