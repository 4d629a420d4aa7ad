package edge

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// oneRoute is a gateway document with one service, svc, of one target,
// backend, and one route to it, r, for every path; extra goes on at the
// route's end (indented by four spaces).
func oneRoute(backend, extra string) string {
	return oneRouteDoc(backend, "", extra)
}

// oneRouteService is oneRoute with serviceExtra at the service's end
// instead.
func oneRouteService(backend, serviceExtra string) string {
	return oneRouteDoc(backend, serviceExtra, "")
}

func oneRouteDoc(backend, serviceExtra, routeExtra string) string {
	return fmt.Sprintf(`
services:
  - name: svc
    targets:
      - url: %s
%s
routes:
  - name: r
    match:
      path_prefix: /
    service: svc
%s`, backend, serviceExtra, routeExtra)
}

// The first part of a chunked response reaches the client while the
// backend is still waiting to write the rest.
func TestStreamingChunkedResponseRelayedBeforeBackendFinishes(t *testing.T) {
	release := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part1;")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "part2")
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	resp, err := newClient(t).Get(gw.url + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d; want 200", resp.StatusCode)
	}
	if resp.ContentLength != -1 {
		t.Errorf("ContentLength = %d; want -1 (chunked)", resp.ContentLength)
	}
	first := make(chan string, 1)
	go func() {
		buf := make([]byte, len("part1;"))
		_, err := io.ReadFull(resp.Body, buf)
		if err != nil {
			first <- "error: " + err.Error()
			return
		}
		first <- string(buf)
	}()
	if got := recv(t, first, "the first part while the backend is blocked"); got != "part1;" {
		t.Fatalf("first part = %q; want %q", got, "part1;")
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the rest: %v", err)
	}
	if string(rest) != "part2" {
		t.Errorf("rest = %q; want %q", rest, "part2")
	}
}

// Server-sent events arrive one at a time: the backend writes the next
// event only after the client has seen the previous one.
func TestStreamingServerSentEvents(t *testing.T) {
	const events = 5
	next := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		f := w.(http.Flusher)
		for i := range events {
			fmt.Fprintf(w, "id: %d\ndata: event %d\n\n", i, i)
			f.Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	resp, err := newClient(t).Get(gw.url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q; want text/event-stream", ct)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for i := range events {
		for _, want := range []string{fmt.Sprintf("id: %d", i), fmt.Sprintf("data: event %d", i), ""} {
			if got := recv(t, lines, fmt.Sprintf("event %d", i)); got != want {
				t.Fatalf("line = %q; want %q", got, want)
			}
		}
		next <- struct{}{} // the backend may now write the next event
	}
	for l := range lines {
		t.Errorf("unexpected line after the last event: %q", l)
	}
}

// A request body is forwarded as it arrives: the backend reads the first
// part before the client has written the second.
func TestStreamingRequestBodyBeforeClientFinishes(t *testing.T) {
	gotFirst := make(chan string, 1)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, len("hello "))
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			gotFirst <- "error: " + err.Error()
			return
		}
		gotFirst <- string(buf)
		rest, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%s%s|%d", buf, rest, r.ContentLength)
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, gw.url+"/upload", pr)
	type result struct {
		resp *http.Response
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := newClient(t).Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp, b, err}
	}()
	if _, err := io.WriteString(pw, "hello "); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, gotFirst, "the backend to read the first part"); got != "hello " {
		t.Fatalf("backend read %q; want %q", got, "hello ")
	}
	io.WriteString(pw, "world")
	pw.Close()
	res := recv(t, done, "the response")
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.resp.StatusCode != 200 || string(res.body) != "hello world|-1" {
		t.Errorf("got %d %q; want 200 %q", res.resp.StatusCode, res.body, "hello world|-1")
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1, 2, 3})
	r.Read(b)
	return b
}

// unsized hides a reader's length so the client sends it chunked.
type unsized struct{ io.Reader }

func TestLargeBodies(t *testing.T) {
	const size = 32 << 20
	data := randomBytes(size)
	want := sha(data)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/upload":
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprintf(w, "%s %d", sha(b), len(b))
		case "/download":
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.Write(data)
		case "/download-chunked":
			w.Write(data) // larger than the buffer: sent chunked
		}
	})
	gw := startGateway(t, oneRoute(be.URL, "    limits:\n      max_request_body: 64MiB\n"))
	c := newClient(t)

	for _, tc := range []struct {
		name string
		body io.Reader
	}{
		{"content-length", bytes.NewReader(data)},
		{"chunked", unsized{bytes.NewReader(data)}},
	} {
		t.Run("upload/"+tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPut, gw.url+"/upload", tc.body)
			resp, body := do(t, c, req)
			if resp.StatusCode != 200 {
				t.Fatalf("status = %d; want 200 (%s)", resp.StatusCode, body)
			}
			if got, wantBody := string(body), fmt.Sprintf("%s %d", want, size); got != wantBody {
				t.Errorf("backend got %q; want %q", got, wantBody)
			}
		})
	}
	for _, path := range []string{"/download", "/download-chunked"} {
		t.Run(path, func(t *testing.T) {
			resp, body := get(t, c, gw.url+path)
			if resp.StatusCode != 200 {
				t.Fatalf("status = %d; want 200", resp.StatusCode)
			}
			if len(body) != size || sha(body) != want {
				t.Errorf("got %d bytes with sha256 %s; want %d bytes with %s", len(body), sha(body), size, want)
			}
		})
	}
}

func TestRequestBodyLimit(t *testing.T) {
	var hits hitCounter
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		hits.inc()
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			return
		}
		fmt.Fprintf(w, "%d", n)
	})
	gw := startGateway(t, oneRoute(be.URL, "    limits:\n      max_request_body: 1KiB\n"))
	c := newClient(t)
	for _, tc := range []struct {
		name       string
		body       io.Reader
		wantStatus int
		maxHits    int
	}{
		{"content-length at limit", bytes.NewReader(make([]byte, 1024)), 200, 1},
		{"chunked at limit", unsized{bytes.NewReader(make([]byte, 1024))}, 200, 1},
		// Refused before the backend is contacted.
		{"content-length over limit", bytes.NewReader(make([]byte, 1025)), 413, 0},
		// Only found out while streaming; the backend may have seen part.
		{"chunked over limit", unsized{bytes.NewReader(make([]byte, 64<<10))}, 413, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.get()
			req, _ := http.NewRequest(http.MethodPost, gw.url+"/x", tc.body)
			resp, body := do(t, c, req)
			if tc.wantStatus == 200 {
				if resp.StatusCode != 200 || string(body) != "1024" {
					t.Fatalf("got %d %q; want 200 \"1024\"", resp.StatusCode, body)
				}
			} else {
				p := checkProblem(t, resp, body, tc.wantStatus, "")
				if p.Route != "r" {
					t.Errorf("problem route = %q; want r", p.Route)
				}
				if !resp.Close {
					t.Errorf("413 did not close the connection; want Connection: close")
				}
			}
			if d := hits.get() - before; d > tc.maxHits {
				t.Errorf("backend hits = %d; want at most %d", d, tc.maxHits)
			}
		})
	}
}

func TestResponseBodyLimit(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if r.URL.Query().Get("chunked") == "" {
			w.Header().Set("Content-Length", strconv.Itoa(n))
		}
		w.Write(bytes.Repeat([]byte("x"), n))
	})
	gw := startGateway(t, oneRoute(be.URL, "    limits:\n      max_response_body: 64KiB\n"))
	c := newClient(t)

	t.Run("content-length within limit", func(t *testing.T) {
		resp, body := get(t, c, gw.url+"/?n=65536")
		if resp.StatusCode != 200 || len(body) != 65536 {
			t.Errorf("got %d with %d bytes; want 200 with 65536", resp.StatusCode, len(body))
		}
	})
	t.Run("content-length over limit", func(t *testing.T) {
		resp, body := get(t, c, gw.url+"/?n=65537")
		checkProblem(t, resp, body, http.StatusBadGateway, "http_response_body_size")
	})
	t.Run("chunked over limit is cut off", func(t *testing.T) {
		resp, err := c.Get(gw.url + "/?n=200000&chunked=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status = %d; want 200 (the headers went out before the limit was reached)", resp.StatusCode)
		}
		b, err := io.ReadAll(resp.Body)
		if err == nil {
			t.Fatalf("read %d bytes and a clean end; want the stream aborted", len(b))
		}
		if len(b) > 64<<10 {
			t.Errorf("client received %d bytes; want at most the limit %d", len(b), 64<<10)
		}
	})
}

// newH2CBackend starts a backend that speaks only HTTP/2 with prior
// knowledge, as gRPC servers do.
func newH2CBackend(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	s.Config.Protocols = &p
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func TestTrailersOverH2C(t *testing.T) {
	type seen struct {
		proto int
		te    string
	}
	seenCh := make(chan seen, 10)
	be := newH2CBackend(t, func(w http.ResponseWriter, r *http.Request) {
		seenCh <- seen{r.ProtoMajor, r.Header.Get("Te")}
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "Grpc-Status")
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(200)
		w.Write([]byte{0, 0, 0, 0, 2, 'o', 'k'})
		w.(http.Flusher).Flush()
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"Grpc-Message", "all good")
	})
	gw := startGateway(t, fmt.Sprintf(`
services:
  - name: grpc
    protocol: h2c
    targets:
      - url: %s
routes:
  - name: grpc
    match:
      path_prefix: /pkg.Service/
    service: grpc
`, be.URL))

	for _, tc := range []struct {
		name      string
		client    *http.Client
		wantProto int
	}{
		{"h2c client", newH2CClient(t), 2},
		{"http1 client", newClient(t), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, gw.url+"/pkg.Service/Method", bytes.NewReader([]byte{0, 0, 0, 0, 0}))
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("Te", "trailers")
			resp, body := do(t, tc.client, req)
			if resp.ProtoMajor != tc.wantProto {
				t.Errorf("client spoke HTTP/%d; want HTTP/%d", resp.ProtoMajor, tc.wantProto)
			}
			if resp.StatusCode != 200 {
				t.Fatalf("status = %d; want 200 (%s)", resp.StatusCode, body)
			}
			if !bytes.Equal(body, []byte{0, 0, 0, 0, 2, 'o', 'k'}) {
				t.Errorf("body = %q; want the gRPC frame", body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/grpc" {
				t.Errorf("Content-Type = %q; want application/grpc", ct)
			}
			if got := resp.Trailer.Get("Grpc-Status"); got != "0" {
				t.Errorf("trailer Grpc-Status = %q; want \"0\" (trailers %v)", got, resp.Trailer)
			}
			if got := resp.Trailer.Get("Grpc-Message"); got != "all good" {
				t.Errorf("trailer Grpc-Message = %q; want \"all good\" (trailers %v)", got, resp.Trailer)
			}
			s := recv(t, seenCh, "the backend request")
			if s.proto != 2 {
				t.Errorf("backend saw HTTP/%d; want HTTP/2", s.proto)
			}
			if s.te != "trailers" {
				t.Errorf("backend saw Te %q; want \"trailers\"", s.te)
			}
		})
	}
}

// Trailers from an HTTP/1.1 backend reach an HTTP/1.1 client too.
func TestTrailersOverHTTP1(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		w.WriteHeader(200)
		io.WriteString(w, "payload")
		w.Header().Set("X-Checksum", "abc")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	resp, body := get(t, newClient(t), gw.url+"/")
	if string(body) != "payload" {
		t.Errorf("body = %q; want payload", body)
	}
	for k, want := range map[string]string{"X-Checksum": "abc", "X-Late": "late"} {
		if got := resp.Trailer.Get(k); got != want {
			t.Errorf("trailer %s = %q; want %q (trailers %v)", k, got, want, resp.Trailer)
		}
	}
	if strings.Contains(resp.Header.Get("Trailer"), "Te") {
		t.Errorf("Trailer header = %q", resp.Header.Get("Trailer"))
	}
}

// An h2c service answers plain requests over HTTP/2; Te is only sent when
// the client asked for trailers.
func TestH2CServicePlainRequest(t *testing.T) {
	be := newH2CBackend(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "proto=%d te=%q", r.ProtoMajor, r.Header.Get("Te"))
	})
	gw := startGateway(t, fmt.Sprintf(`
services:
  - name: s
    protocol: h2c
    targets:
      - url: %s
routes:
  - name: r
    service: s
    match: {}
`, be.URL))
	resp, body := get(t, newClient(t), gw.url+"/")
	if resp.StatusCode != 200 || string(body) != `proto=2 te=""` {
		t.Errorf("got %d %q; want 200 %q (no Te unless the client asked for trailers)", resp.StatusCode, body, `proto=2 te=""`)
	}
	if via := resp.Header.Get("Via"); via != "2 meridian" {
		t.Errorf("response Via = %q; want \"2 meridian\"", via)
	}
}

// A client that goes away in the middle of its request body ends the
// upstream exchange at once instead of leaving the upstream waiting for
// the rest until a timeout.
func TestClientAbortMidRequestBody(t *testing.T) {
	gotFirst := make(chan struct{}, 1)
	readErr := make(chan error, 1)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			readErr <- err
			return
		}
		gotFirst <- struct{}{}
		_, err := io.ReadAll(r.Body)
		readErr <- err
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, gw.url+"/upload", pr)
	done := make(chan error, 1)
	go func() {
		resp, err := newClient(t).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	io.WriteString(pw, "first")
	recv(t, gotFirst, "the backend to read the first part")
	pw.CloseWithError(fmt.Errorf("client gave up"))
	if err := recv(t, readErr, "the backend's body read to end"); err == nil {
		t.Errorf("backend read the body to a clean end; want an error (the request was never finished)")
	}
	if err := recv(t, done, "the client to give up"); err == nil {
		t.Errorf("client request succeeded; want its own body error")
	}
}

// An upstream may answer before it has read the request body (a 413 of
// its own, say); the answer reaches the client.
func TestUpstreamAnswersBeforeReadingBody(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		http.Error(w, "too big for me", http.StatusRequestEntityTooLarge)
	})
	gw := startGateway(t, oneRoute(be.URL, "    limits:\n      max_request_body: 64MiB\n"))
	req, _ := http.NewRequest(http.MethodPost, gw.url+"/upload", bytes.NewReader(make([]byte, 8<<20)))
	resp, body := do(t, newClient(t), req)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "too big for me") {
		t.Errorf("got %d %q; want the upstream's 413", resp.StatusCode, body)
	}
}

// A trailer sent without being announced, under the name of a header the
// response already has, still arrives as a trailer.
func TestUnannouncedTrailerNamedLikeHeader(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Checksum", "pending")
		w.WriteHeader(200)
		io.WriteString(w, "payload")
		w.(http.Flusher).Flush() // chunked, so that trailers can follow
		w.Header().Set(http.TrailerPrefix+"X-Checksum", "final")
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	resp, body := get(t, newClient(t), gw.url+"/")
	if string(body) != "payload" {
		t.Errorf("body = %q; want payload", body)
	}
	if got := resp.Header.Get("X-Checksum"); got != "pending" {
		t.Errorf("header X-Checksum = %q; want pending", got)
	}
	if got := resp.Trailer.Get("X-Checksum"); got != "final" {
		t.Errorf("trailer X-Checksum = %q; want final (trailers %v)", got, resp.Trailer)
	}
}

// Trailer fields a response may not have (RFC 9110 6.5.1: a cookie, cache
// control, the content's type, credentials, routing; 7.6.1: those its
// Connection field names) are not relayed, announced or not; others are,
// over HTTP/1.1 and HTTP/2.
func TestResponseTrailersFiltered(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Cache-Control, X-Sum, Host, Content-Length")
		w.Header().Set("Connection", "X-Hop")
		w.WriteHeader(200)
		io.WriteString(w, "payload")
		w.(http.Flusher).Flush()
		w.Header().Set("Cache-Control", "public, max-age=86400")
		w.Header().Set("X-Sum", "42")
		w.Header().Set(http.TrailerPrefix+"Set-Cookie", "session=stolen")
		w.Header().Set(http.TrailerPrefix+"Content-Type", "text/html")
		w.Header().Set(http.TrailerPrefix+"Authorization", "Bearer x")
		w.Header().Set(http.TrailerPrefix+"X-Hop", "1")
		w.Header().Set(http.TrailerPrefix+"X-Late", "ok")
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	for name, c := range map[string]*http.Client{"HTTP/1.1": newClient(t), "h2c": newH2CClient(t)} {
		resp, body := get(t, c, gw.url+"/")
		if string(body) != "payload" {
			t.Errorf("%s: body %q", name, body)
		}
		if resp.StatusCode != 200 {
			t.Errorf("%s: status %d; want the upstream's 200 (a Trailer announcing Content-Length is left out, not a 502)", name, resp.StatusCode)
		}
		for _, k := range []string{"Cache-Control", "Set-Cookie", "Content-Type", "Authorization", "Host", "Content-Length", "X-Hop"} {
			if v, ok := resp.Trailer[k]; ok {
				t.Errorf("%s: trailer %s: %q relayed", name, k, v)
			}
		}
		if resp.Trailer.Get("X-Sum") != "42" || resp.Trailer.Get("X-Late") != "ok" {
			t.Errorf("%s: trailers %v; want X-Sum and X-Late", name, resp.Trailer)
		}
		if resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("Cache-Control") != "" {
			t.Errorf("%s: head %v", name, resp.Header)
		}
	}
}

// An HTTP/2 upstream's head over the limits fails its own request with
// http_response_header_section_size, not the upstream connection and every
// request on it (as MaxResponseHeaderBytes would make it).
func TestH2CUpstreamOversizedHeadFailsOnlyItsRequest(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	be := newH2CBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Header().Set("X-Big", strings.Repeat("x", 70<<10))
			return
		}
		entered <- struct{}{}
		<-release
		io.WriteString(w, "ok")
	})
	h2s := fmt.Sprintf(`
services:
  - name: h2
    protocol: h2c
    targets: [{url: %s}]
routes: [{name: r, match: {path_prefix: /}, service: h2}]
`, be.URL)
	gw := startGateway(t, h2s)
	c := newClient(t)
	var wg sync.WaitGroup
	codes := make(chan int, 4)
	for range 4 {
		wg.Go(func() {
			resp, _ := get(t, c, gw.url+"/slow")
			codes <- resp.StatusCode
		})
	}
	for range 4 {
		recv(t, entered, "a slow request to reach the upstream")
	}
	resp, body := get(t, c, gw.url+"/big")
	checkProblem(t, resp, body, http.StatusBadGateway, "http_response_header_section_size")
	close(release)
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != 200 {
			t.Errorf("a request sharing the upstream connection got %d; want 200", code)
		}
	}
}

// Announced trailers of an HTTP/2 upstream response that has a length
// reach an HTTP/1.1 client (chunked, the length dropped); trailers over
// the head's limits cut the response instead of being relayed.
func TestH2CUpstreamTrailersToHTTP1(t *testing.T) {
	be := newH2CBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n := 1
		if r.URL.Path == "/many" {
			n = maxHeaderFields + 10
		}
		w.Header().Set("Content-Length", "5")
		if n == 1 {
			w.Header().Set("Trailer", "X-T0") // announced
		}
		io.WriteString(w, "hello")
		for i := range n {
			w.Header().Set(http.TrailerPrefix+"X-T"+strconv.Itoa(i), "v")
		}
	})
	gw := startGateway(t, fmt.Sprintf(`
services: [{name: h2, protocol: h2c, targets: [{url: %s}]}]
routes: [{name: r, match: {path_prefix: /}, service: h2}]
`, be.URL))
	c := newClient(t)
	resp, err := c.Get(gw.url + "/one")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "hello" || resp.Trailer.Get("X-T0") != "v" {
		t.Errorf("one trailer: body %q (%v), trailer %q; want hello and X-T0: v", body, err, resp.Trailer.Get("X-T0"))
	}
	resp, err = c.Get(gw.url + "/many")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	waitFor(t, 5*time.Second, "the cut to be counted", func() bool {
		return metricValue(t, gw.g, `meridian_upstream_errors_total{error="http_response_header_section_size",route="r"}`) == 1
	})
}

// An HTTP/1 upstream's trailers over the head's limits (a line too long,
// too many fields) cut the response, counted as the head's limits, not as
// a malformed body.
func TestH1UpstreamTrailersOverLimits(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		trailer := "X-Long: " + strings.Repeat("v", maxResponseHead+1) + "\r\n"
		if r.URL.Path == "/many" {
			trailer = strings.Repeat("X-T: v\r\n", maxHeaderFields+1)
		}
		brw.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Long, X-T\r\n\r\n5\r\nhello\r\n0\r\n" + trailer + "\r\n")
		brw.Flush()
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	c := newClient(t)
	for i, path := range []string{"/long", "/many"} {
		resp, err := c.Get(gw.url + path)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		waitFor(t, 5*time.Second, path+": the cut to be counted as the head's limits", func() bool {
			return metricValue(t, gw.g, `meridian_upstream_errors_total{error="http_response_header_section_size",route="r"}`) == float64(i+1)
		})
	}
}

// An HTTP/2 upstream resetting its stream while the client is still
// sending the body is the upstream's failure (502), not a bad request from
// the client: the transport closing the body must not be taken for the
// client's body failing.
func TestUpstreamResetDuringRequestBodyIsNotTheClients(t *testing.T) {
	be := newH2CBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.ReadFull(r.Body, make([]byte, 10))
		panic(http.ErrAbortHandler)
	})
	gw := startGateway(t, fmt.Sprintf(`
services: [{name: h2, protocol: h2c, targets: [{url: %s}]}]
routes: [{name: r, match: {path_prefix: /}, service: h2}]
`, be.URL))
	for name, c := range map[string]*http.Client{"h1": newClient(t), "h2c": newH2CClient(t)} {
		t.Run(name, func(t *testing.T) {
			pr, pw := io.Pipe()
			go func() {
				defer pw.Close()
				for range 20 {
					if _, err := pw.Write(bytes.Repeat([]byte("x"), 100)); err != nil {
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
			req, _ := http.NewRequest(http.MethodPost, gw.url+"/abort", pr)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			pr.Close()
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("status %d %s; want 502 (the upstream reset its stream)", resp.StatusCode, body)
			}
		})
	}
}

// An HTTP/2 upstream that answers without reading the body: an HTTP/1.1
// client that stalls its body still gets the answer at once (the
// connection then closes), not when it sends more.
func TestEarlyH2AnswerReachesStalledHTTP1Client(t *testing.T) {
	be := newH2CBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			io.ReadFull(r.Body, make([]byte, 10))
			panic(http.ErrAbortHandler)
		}
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	})
	gw := startGateway(t, fmt.Sprintf(`
services: [{name: h2, protocol: h2c, targets: [{url: %s}]}]
routes: [{name: r, match: {path_prefix: /}, service: h2}]
`, be.URL))
	for path, want := range map[string]int{"/early": http.StatusRequestEntityTooLarge, "/abort": http.StatusBadGateway} {
		conn, err := net.Dial("tcp", gw.addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, "POST "+path+" HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		conn.Close()
		if err != nil {
			t.Fatalf("%s: no answer while the body stalls: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != want || !resp.Close {
			t.Errorf("%s: status %d, close %v; want %d, and Connection: close (the body is left unread)", path, resp.StatusCode, resp.Close, want)
		}
	}

	// The same early answer to a body that has all arrived: its rest is
	// dropped and the connection goes on.
	conn, err := net.Dial("tcp", gw.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	for i, req := range []string{"POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789", "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"} {
		io.WriteString(conn, req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d on the kept connection: %v", i+1, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Close {
			t.Fatalf("request %d: status %d, close %v; want 413 on a kept connection (the whole body had arrived)", i+1, resp.StatusCode, resp.Close)
		}
	}
}

// An upstream that sends part of a body of known length and then pauses:
// what came reaches the client while it pauses, head and all, rather than
// wait in the gateway's buffer for the rest (over HTTP/1.1 on the lane and
// the general path, and over HTTP/2). The rest follows, and the body is
// whole.
func TestPausedUpstreamBodyIsNotHeldBack(t *testing.T) {
	release := make(chan struct{}, 1)
	addr := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"+strings.Repeat("a", 40))
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		io.WriteString(c, strings.Repeat("b", 60))
		return true
	})
	gw := startGateway(t, oneRoute("http://"+addr, ""))
	want := strings.Repeat("a", 40) + strings.Repeat("b", 60)
	for _, extra := range []string{"", "TE: trailers\r\n"} { // the lane, the general path
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "GET /x HTTP/1.1\r\nHost: x\r\n"+extra+"\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: no head while the upstream pauses: %v", extra, err)
		}
		first := make([]byte, 40)
		if _, err := io.ReadFull(resp.Body, first); err != nil {
			t.Fatalf("%q: the first 40 bytes did not come while the upstream pauses: %v", extra, err)
		}
		release <- struct{}{}
		rest, err := io.ReadAll(resp.Body)
		if err != nil || string(first)+string(rest) != want {
			t.Fatalf("%q: body %q, error %v; want %q", extra, string(first)+string(rest), err, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, gw.url+"/x", nil)
	resp, err := newH2CClient(t).Do(req)
	if err != nil {
		t.Fatalf("HTTP/2: no head while the upstream pauses: %v", err)
	}
	defer resp.Body.Close()
	first := make([]byte, 40)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("HTTP/2: the first 40 bytes did not come while the upstream pauses: %v", err)
	}
	release <- struct{}{}
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(first)+string(rest) != want {
		t.Fatalf("HTTP/2: body %q, error %v; want %q", string(first)+string(rest), err, want)
	}
}

// A stream whose request body passes the route's limit after the answer
// has begun (an upstream echoing as it reads, gRPC's bidirectional calls)
// is cut, and the log says why: the gateway's limit (http_request_error),
// not a client that left (client_canceled).
func TestRequestBodyLimitMidStreamIsLogged(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex() // HTTP/1: read while writing
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		buf := make([]byte, 512)
		for {
			n, err := r.Body.Read(buf)
			w.Write(buf[:n])
			http.NewResponseController(w).Flush()
			if err != nil {
				return
			}
		}
	})
	for _, proto := range []string{"h1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			setup, log := withReuseLog()
			gw := startGatewayWith(t, setup, oneRoute(be.URL, "    limits:\n      max_request_body: 4KiB\n"))
			c := newClient(t)
			if proto == "h2c" {
				c = newH2CClient(t)
			}
			pr, pw := io.Pipe()
			req, _ := http.NewRequest(http.MethodPost, gw.url+"/x", pr)
			// Send 1 KiB at a time, each echoed before the next, until
			// the gateway stops taking them. The first goes with the
			// head: over HTTP/1.1 the answer's head waits for its first
			// body byte, which the upstream echoes from ours.
			chunk := bytes.Repeat([]byte("z"), 1024)
			go pw.Write(chunk)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 {
				t.Fatalf("status %d; want the upstream's 200", resp.StatusCode)
			}
			echoed := 0
			for i := 0; i < 64; i++ {
				if i > 0 {
					if _, err := pw.Write(chunk); err != nil {
						break
					}
				}
				n, err := io.ReadFull(resp.Body, make([]byte, len(chunk)))
				echoed += n
				if err != nil {
					break
				}
			}
			pw.Close()
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if echoed > 4096 {
				t.Errorf("%d bytes echoed; want at most the 4 KiB limit", echoed)
			}
			rec := onlyRecord(t, log)
			if rec["error"] != "http_request_error" || !strings.Contains(fmt.Sprint(rec["error_detail"]), "limit of 4096 bytes") {
				t.Errorf("logged error %v (%v); want http_request_error naming the 4096-byte limit", rec["error"], rec["error_detail"])
			}
		})
	}
}
