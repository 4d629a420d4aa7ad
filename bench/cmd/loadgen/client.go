package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// target is a parsed -url: where to dial and the request bytes to send.
type target struct {
	url      string
	https    bool   // https:// URL
	hostport string // host:port to dial
	host     string // host without port
	req      []byte // complete pre-built GET request (HTTP/1.1 clients)
}

func parseTarget(raw string) (*target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("only http:// and https:// URLs are supported, got %q", u.Scheme)
	}
	if u.Host == "" {
		return nil, errors.New("URL has no host")
	}
	if u.User != nil {
		return nil, errors.New("URLs with user info are not supported")
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	path := u.RequestURI()
	if path == "" {
		path = "/"
	}
	req := "GET " + path + " HTTP/1.1\r\n" +
		"Host: " + u.Host + "\r\n" +
		"User-Agent: meridian-loadgen/1\r\n" +
		"Accept: */*\r\n" +
		"\r\n"
	return &target{url: raw, https: u.Scheme == "https", hostport: net.JoinHostPort(host, port), host: host, req: []byte(req)}, nil
}

// checkLoopback refuses targets that resolve to anything but loopback
// addresses: this tool generates load and must only hit this machine.
func checkLoopback(host string, timeout time.Duration) error {
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("%s is not a loopback address (use -allow-non-loopback to override)", host)
		}
		return nil
	}
	r := &net.Resolver{}
	ctx, cancel := contextWithTimeout(timeout)
	defer cancel()
	addrs, err := r.LookupIPAddr(ctx, host)
	if err != nil {
		return err
	}
	if len(addrs) == 0 {
		return fmt.Errorf("%s resolves to no address", host)
	}
	for _, a := range addrs {
		if !a.IP.IsLoopback() {
			return fmt.Errorf("%s resolves to non-loopback %s (use -allow-non-loopback to override)", host, a.IP)
		}
	}
	return nil
}

// client is one keep-alive HTTP/1.1 connection, over TCP or TLS over TCP.
type client struct {
	nc  net.Conn
	br  *bufio.Reader
	tls *tls.Conn // nil for plain HTTP
}

// dial connects to t; with tlsCfg != nil it also completes the TLS
// handshake before returning.
func dial(t *target, tlsCfg *tls.Config, deadline time.Time) (*client, error) {
	d := net.Dialer{Deadline: deadline, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", t.hostport)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	// Every read and write is bounded by the end of the run.
	if err := nc.SetDeadline(deadline); err != nil {
		nc.Close()
		return nil, err
	}
	c := &client{nc: nc}
	if tlsCfg != nil {
		tc := tls.Client(nc, tlsCfg)
		if err := tc.Handshake(); err != nil {
			nc.Close()
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		c.nc, c.tls = tc, tc
	}
	c.br = bufio.NewReaderSize(c.nc, 16<<10)
	return c, nil
}

func (c *client) close() { _ = c.nc.Close() }

// roundTrip sends req and reads (and discards) one complete response.
func (c *client) roundTrip(req []byte) (status int, keepAlive bool, err error) {
	if _, err = c.nc.Write(req); err != nil {
		return 0, false, fmt.Errorf("write: %w", err)
	}
	return readResponse(c.br)
}

var (
	errMalformed  = errors.New("malformed response")
	errLineTooBig = errors.New("response line or header too long")
)

// readLine returns the next line without its CRLF (or LF). The slice is only
// valid until the next read from br.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errLineTooBig
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// readResponse reads one HTTP/1.x response from br, discarding its body.
// Interim 1xx responses are skipped. keepAlive reports whether the
// connection can carry another request.
func readResponse(br *bufio.Reader) (status int, keepAlive bool, err error) {
	for {
		line, err := readLine(br)
		if err != nil {
			return 0, false, fmt.Errorf("read status: %w", err)
		}
		// "HTTP/1.1 200 OK"
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' ||
			(len(line) > 12 && line[12] != ' ') {
			return 0, false, fmt.Errorf("%w: status line %q", errMalformed, truncate(line))
		}
		status = 0
		for _, b := range line[9:12] {
			if b < '0' || b > '9' {
				return 0, false, fmt.Errorf("%w: status line %q", errMalformed, truncate(line))
			}
			status = status*10 + int(b-'0')
		}
		keepAlive = line[7] == '1' // HTTP/1.1 default; HTTP/1.0 closes by default
		contentLength := int64(-1)
		chunked := false
		for {
			h, err := readLine(br)
			if err != nil {
				return 0, false, fmt.Errorf("read header: %w", err)
			}
			if len(h) == 0 {
				break
			}
			colon := bytes.IndexByte(h, ':')
			if colon <= 0 {
				return 0, false, fmt.Errorf("%w: header %q", errMalformed, truncate(h))
			}
			name, value := h[:colon], bytes.TrimSpace(h[colon+1:])
			switch {
			case asciiEqualFold(name, "content-length"):
				n, perr := strconv.ParseInt(string(value), 10, 64)
				if perr != nil || n < 0 {
					return 0, false, fmt.Errorf("%w: content-length %q", errMalformed, truncate(value))
				}
				contentLength = n
			case asciiEqualFold(name, "transfer-encoding"):
				if containsToken(value, "chunked") {
					chunked = true
				}
			case asciiEqualFold(name, "connection"):
				if containsToken(value, "close") {
					keepAlive = false
				} else if containsToken(value, "keep-alive") {
					keepAlive = true
				}
			}
		}
		if status >= 100 && status < 200 && status != 101 {
			continue // interim response; the real one follows
		}
		switch {
		case status == 101:
			return status, false, errors.New("unexpected 101 Switching Protocols")
		case status == 204 || status == 304:
			// no body
		case chunked:
			if err := discardChunked(br); err != nil {
				return 0, false, err
			}
		case contentLength >= 0:
			if _, err := br.Discard(int(contentLength)); err != nil {
				return 0, false, fmt.Errorf("read body: %w", err)
			}
		default:
			// Body delimited by connection close.
			if _, err := io.Copy(io.Discard, br); err != nil {
				return 0, false, fmt.Errorf("read body: %w", err)
			}
			keepAlive = false
		}
		return status, keepAlive, nil
	}
}

func discardChunked(br *bufio.Reader) error {
	for {
		line, err := readLine(br)
		if err != nil {
			return fmt.Errorf("read chunk size: %w", err)
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 || len(line) > 15 {
			return fmt.Errorf("%w: chunk size %q", errMalformed, truncate(line))
		}
		var size int64
		for _, b := range line {
			var d byte
			switch {
			case b >= '0' && b <= '9':
				d = b - '0'
			case b >= 'a' && b <= 'f':
				d = b - 'a' + 10
			case b >= 'A' && b <= 'F':
				d = b - 'A' + 10
			default:
				return fmt.Errorf("%w: chunk size %q", errMalformed, truncate(line))
			}
			size = size<<4 | int64(d)
		}
		if size == 0 {
			// Trailers, up to the empty line.
			for {
				t, err := readLine(br)
				if err != nil {
					return fmt.Errorf("read trailer: %w", err)
				}
				if len(t) == 0 {
					return nil
				}
			}
		}
		if _, err := br.Discard(int(size)); err != nil {
			return fmt.Errorf("read chunk: %w", err)
		}
		crlf, err := readLine(br)
		if err != nil {
			return fmt.Errorf("read chunk end: %w", err)
		}
		if len(crlf) != 0 {
			return fmt.Errorf("%w: missing CRLF after chunk", errMalformed)
		}
	}
}

func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// containsToken reports whether the comma-separated list v contains tok
// (case-insensitively).
func containsToken(v []byte, tok string) bool {
	for part := range strings.SplitSeq(string(v), ",") {
		if strings.EqualFold(strings.TrimSpace(part), tok) {
			return true
		}
	}
	return false
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
