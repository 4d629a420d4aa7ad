package edge

import (
	"bufio"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// The upstream response parser against well-formed and broken heads.
func TestReadResponse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		method  string
		in      string
		status  int
		body    string
		cl      int64
		close   bool
		trailer map[string]string
		header  map[string]string // fields and their values; "" for absent
		bad     string            // expected error text; "" for success
	}{
		{name: "content-length", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhelloEXTRA", status: 200, body: "hello", cl: 5},
		{name: "reason with spaces", in: "HTTP/1.1 404 Not Found Here\r\nContent-Length: 0\r\n\r\n", status: 404, cl: 0},
		{name: "no reason", in: "HTTP/1.1 204\r\n\r\n", status: 204, cl: 0},
		{name: "chunked with trailers", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Grpc-Status\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nGrpc-Status: 0\r\nContent-Length: 9\r\n\r\n", status: 200, body: "abcde", cl: -1, trailer: map[string]string{"Grpc-Status": "0"}},
		{name: "chunked wins over content-length", in: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", status: 200, body: "x", cl: -1, close: true, header: map[string]string{"Content-Length": ""}},
		{name: "204 with a body announced", in: "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", status: 204, cl: 0, close: true, header: map[string]string{"Content-Length": ""}},
		{name: "204 chunked", in: "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 204, cl: 0, close: true, header: map[string]string{"Transfer-Encoding": ""}},
		{name: "204 with length 0", in: "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", status: 204, cl: 0},
		{name: "other controls become spaces too", in: "HTTP/1.1 200 OK\r\nX-H: a\x01b\x7fc\r\nContent-Length: 0\r\n\r\n", status: 200, cl: 0, header: map[string]string{"X-H": "a b c"}},
		{name: "NUL at a value's end is trimmed away", in: "HTTP/1.1 200 OK\r\nX-H: v\x00\r\nX-L: \x00w\r\nContent-Length: 0\r\n\r\n", status: 200, cl: 0, header: map[string]string{"X-H": "v", "X-L": "w"}},
		{name: "NUL and CR in a value become spaces", in: "HTTP/1.1 200 OK\r\nX-Bad: a\x00b\rc\r\nContent-Length: 0\r\n\r\n", status: 200, cl: 0, header: map[string]string{"X-Bad": "a b c"}},
		{name: "head over the limit", in: "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("x", 70<<10) + "\r\n\r\n", bad: "upstream response head: header section too large"},
		{name: "too many fields", in: "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: y\r\n", maxHeaderFields+1) + "\r\n", bad: "upstream response head: too many header fields"},
		{name: "read to close", in: "HTTP/1.1 200 OK\r\n\r\nuntil the end", status: 200, body: "until the end", cl: -1, close: true},
		{name: "HTTP/1.0 closes", in: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", status: 200, body: "ok", cl: 2, close: true},
		{name: "HTTP/1.0 keep-alive", in: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", status: 200, body: "ok", cl: 2},
		{name: "connection close", in: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", status: 200, body: "ok", cl: 2, close: true},
		{name: "HEAD keeps the length, no body", method: http.MethodHead, in: "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", status: 200, cl: 1000},
		{name: "304 has no body", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n", status: 304, cl: 0},
		{name: "bare LF", in: "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", status: 200, body: "ok", cl: 2},
		{name: "garbage status line", in: "HTTP/1.1 OK\r\n\r\n", bad: "malformed status line"},
		{name: "not HTTP", in: "SSH-2.0-OpenSSH_9.6\r\n\r\n", bad: "malformed status line"},
		{name: "status code letters", in: "HTTP/1.1 2x0 OK\r\n\r\n", bad: "malformed status code"},
		{name: "conflicting lengths", in: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", bad: "conflicting Content-Length"},
		{name: "bad length", in: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", bad: "malformed Content-Length"},
		{name: "gzip coding", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", bad: "unsupported Transfer-Encoding"},
		{name: "HTTP/1.0 chunked", in: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", bad: "an HTTP/1.0 response with Transfer-Encoding"},
		{name: "obs-fold", in: "HTTP/1.1 200 OK\r\nX-A: 1\r\n  2\r\nContent-Length: 0\r\n\r\n", bad: "obsolete line folding"},
		{name: "space in name", in: "HTTP/1.1 200 OK\r\nX A: 1\r\n\r\n", bad: "malformed header field"},
		{name: "bad chunk size", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", status: 200, cl: -1, bad: "malformed chunked body"},
		{name: "NUL and CR in a trailer become spaces", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-T: a\x00b\rc\r\n\r\n", status: 200, body: "x", cl: -1, trailer: map[string]string{"X-T": "a b c"}},
		{name: "NUL at a trailer's end is trimmed away", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-U: c\x00\r\n\r\n", status: 200, body: "x", cl: -1, trailer: map[string]string{"X-U": "c"}},
		{name: "too many trailer fields", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n" + strings.Repeat("X-T: v\r\n", maxHeaderFields+1) + "\r\n", status: 200, cl: -1, bad: "trailer section over the head's limits"},
		{name: "truncated body", in: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", status: 200, cl: 10, bad: "unexpected EOF"},
		{name: "truncated head", in: "HTTP/1.1 200 OK\r\nContent-Len", bad: "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			pc := &h1Conn{br: bufio.NewReaderSize(strings.NewReader(tc.in), 64)}
			req, _ := http.NewRequest(method, "http://upstream.test/", nil)
			resp, err := pc.readResponse(req, nil)
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
			}
			if tc.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tc.bad) {
					t.Fatalf("err = %v; want %q", err, tc.bad)
				}
				if resp != nil && resp.StatusCode != tc.status {
					t.Errorf("status = %d; want %d", resp.StatusCode, tc.status)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if resp.StatusCode != tc.status || string(body) != tc.body || resp.ContentLength != tc.cl || resp.Close != tc.close {
				t.Errorf("got status %d body %q length %d close %v; want %d %q %d %v", resp.StatusCode, body, resp.ContentLength, resp.Close, tc.status, tc.body, tc.cl, tc.close)
			}
			for k, v := range tc.header {
				if got, ok := resp.Header[k]; v == "" && ok || v != "" && (len(got) != 1 || got[0] != v) {
					t.Errorf("header %s = %q; want %q", k, got, v)
				}
			}
			for k, v := range tc.trailer {
				if got := resp.Trailer.Get(k); got != v {
					t.Errorf("trailer %s = %q; want %q (trailers %v)", k, got, v, resp.Trailer)
				}
			}
			if _, ok := resp.Trailer["Content-Length"]; ok {
				t.Error("Content-Length accepted as a trailer")
			}
		})
	}
}

// A clean EOF before any byte is io.EOF, which the transport takes for an
// idle connection the upstream had closed.
func TestReadResponseCleanEOF(t *testing.T) {
	pc := &h1Conn{br: bufio.NewReader(strings.NewReader(""))}
	req, _ := http.NewRequest(http.MethodGet, "http://upstream.test/", nil)
	if _, err := pc.readResponse(req, nil); !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v; want io.EOF", err)
	}
}

func FuzzReadResponse(f *testing.F) {
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
	f.Add("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: A\r\n\r\n3\r\nabc\r\n0\r\nA: 1\r\n\r\n")
	f.Add("HTTP/1.0 404 Nope\r\n\r\nbody")
	f.Fuzz(func(t *testing.T, in string) {
		pc := &h1Conn{br: bufio.NewReaderSize(strings.NewReader(in), 16)}
		req, _ := http.NewRequest(http.MethodGet, "http://upstream.test/", nil)
		resp, err := pc.readResponse(req, nil)
		if err != nil {
			return
		}
		if resp.StatusCode < 100 || resp.StatusCode > 999 {
			t.Fatalf("status %d accepted", resp.StatusCode)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		if resp.ContentLength >= 0 && n > resp.ContentLength {
			t.Fatalf("read %d body bytes; Content-Length %d", n, resp.ContentLength)
		}
	})
}

// parseOriginForm must agree with url.ParseRequestURI wherever it takes a
// target, and leave the rest to it.
func TestParseOriginFormMatchesURL(t *testing.T) {
	alphabet := "/?%#az AZ09-_.~$&+,:;=@!'()*[]{}\"<>|\\^`\x80\xff"
	rng := rand.New(rand.NewPCG(3, 4))
	targets := []string{"/", "/a/b", "/a?b=c", "/a?", "/a??", "//x/y", "/a#f", "/%41", "/a b", "*", "http://h/p", "/é"}
	for range 20000 {
		b := []byte{'/'}
		for range rng.IntN(12) {
			b = append(b, alphabet[rng.IntN(len(alphabet))])
		}
		targets = append(targets, string(b))
	}
	taken := 0
	for _, target := range targets {
		var u url.URL
		if !parseOriginForm(target, &u) {
			continue
		}
		taken++
		want, err := url.ParseRequestURI(target)
		if err != nil {
			t.Fatalf("%q: taken, but url.ParseRequestURI refuses it: %v", target, err)
		}
		if u != *want {
			t.Fatalf("%q: got %#v; want %#v", target, u, *want)
		}
		if got := u.RequestURI(); got != target {
			t.Fatalf("%q: RequestURI %q", target, got)
		}
	}
	if taken < len(targets)/10 {
		t.Fatalf("only %d of %d targets taken: the fast path is not exercised", taken, len(targets))
	}
}

func TestChunkedReaderReadReady(t *testing.T) {
	for _, tc := range []struct {
		buf  string
		want bool
	}{
		{"", false},
		{"3e", false},             // part of a size line
		{"3e8\r\n", false},        // a size line alone
		{"3\r\nab", true},         // some of the chunk's data
		{"3\r\nabc", false},       // all of it, but its CRLF to come
		{"3\r\nabc\r", false},     // half of its CRLF
		{"3\r\nabc\r\n", true},    // the whole chunk
		{"0\r\n", false},          // the last chunk, the trailer section to come
		{"0\r\n\r\n", true},       // the end
		{"zz\r\n", true},          // malformed: the read fails at once
		{"3\nabc\r\n", true},      // a bare LF: malformed
		{"3;a\x00b\r\nabc", true}, // an extension with a NUL: malformed
	} {
		r := &chunkedReader{}
		if got := r.readReady([]byte(tc.buf)); got != tc.want {
			t.Errorf("readReady(%q) = %v; want %v", tc.buf, got, tc.want)
		}
	}
}

// Chunk extensions as RFC 9112 7.1.1 writes them pass (BWS around ";" and
// "=", tokens and quoted strings with escapes); anything else does not.
func TestValidChunkExt(t *testing.T) {
	for _, ext := range []string{"", ";a", "; a = b", ";a=b;c=\"d;e\"", ";a=\"x\\\"y\"", ";a=\"tab\there\"", ";a;b;c", " ;a \t"} {
		if !validChunkExt([]byte(ext)) {
			t.Errorf("validChunkExt(%q) = false; want true", ext)
		}
	}
	for _, ext := range []string{";", ";=1", ";a=", ";a=\"x", ";a b", ";a=b c", ";a=\"x\x00\"", ";a=\"x\\", "a", ";a=\"x\"y", ";a@b"} {
		if validChunkExt([]byte(ext)) {
			t.Errorf("validChunkExt(%q) = true; want false", ext)
		}
	}
}
