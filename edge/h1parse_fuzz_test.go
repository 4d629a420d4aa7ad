package edge

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
)

// parseWithServer runs h1Server's request parser over in and reads the
// body, as the server would for one request.
func parseWithServer(in string) (*http.Request, []byte, bool) {
	s := &h1Server{opts: ListenerOptions{MaxHeaderBytes: 64 << 10}}
	c := &serverConn{s: s, remote: "192.0.2.1:1234"}
	c.br = bufio.NewReaderSize(strings.NewReader(in), 64)
	req, _, perr := c.readRequest()
	if perr != nil {
		return nil, nil, false
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		return req, nil, false
	}
	return req, body, true
}

// FuzzRequestParserAgainstNetHTTP checks h1Server's parser against
// net/http's on the same bytes. Meridian may refuse what net/http accepts
// (it is stricter on purpose: CL+TE, obs-fold, bare-CR and the like), but
// what both accept must mean the same request: method, target, Host,
// headers, framing and body. A difference is a place where a proxy and its
// upstream could disagree about a request.
func FuzzRequestParserAgainstNetHTTP(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET http://h.test/p HTTP/1.1\r\nHost: other\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
		"\r\nGET / HTTP/1.1\nHost: x\n\n",
		"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		ours, ourBody, ok := parseWithServer(in)
		if !ok {
			return // refused (or a body error): nothing reaches a handler
		}
		theirs, err := http.ReadRequest(bufio.NewReader(strings.NewReader(in)))
		if err != nil {
			// net/http refuses some requests Meridian takes: a Host
			// header net/http's stricter grammar rejects, or a request
			// without Host it would take as HTTP/1.0. Those must at
			// least be well framed, which the server checked.
			return
		}
		theirBody, err := io.ReadAll(io.LimitReader(theirs.Body, 1<<20))
		if err != nil {
			t.Fatalf("Meridian read a body net/http could not: %q\nours: %q\n(%v)", in, ourBody, err)
		}
		if ours.Method != theirs.Method {
			t.Errorf("method %q vs net/http %q", ours.Method, theirs.Method)
		}
		if ours.RequestURI != theirs.RequestURI {
			t.Errorf("request URI %q vs net/http %q", ours.RequestURI, theirs.RequestURI)
		}
		if ours.URL.String() != theirs.URL.String() {
			t.Errorf("URL %q vs net/http %q", ours.URL, theirs.URL)
		}
		if ours.Host != theirs.Host {
			t.Errorf("Host %q vs net/http %q", ours.Host, theirs.Host)
		}
		if ours.ContentLength != theirs.ContentLength {
			t.Errorf("ContentLength %d vs net/http %d", ours.ContentLength, theirs.ContentLength)
		}
		if string(ourBody) != string(theirBody) {
			t.Errorf("body %q vs net/http %q", ourBody, theirBody)
		}
		if ours.Close != theirs.Close {
			t.Errorf("Close %v vs net/http %v", ours.Close, theirs.Close)
		}
		for k, v := range theirs.Header {
			if k == "Host" {
				continue
			}
			if got := ours.Header[k]; strings.Join(got, "\x00") != strings.Join(v, "\x00") {
				t.Errorf("header %s = %q vs net/http %q", k, got, v)
			}
		}
		for k := range ours.Header {
			if _, ok := theirs.Header[k]; !ok {
				t.Errorf("header %s only in Meridian's parse", k)
			}
		}
		if t.Failed() {
			t.Logf("input %q", in)
		}
	})
}
