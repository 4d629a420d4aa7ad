package edge

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
)

// HTTP/1 wire format shared by the server (h1server.go) and the upstream
// client (h1client.go): lines, header blocks, chunked bodies.

var (
	errLineTooLong = errors.New("header section too large")
	errChunked     = errors.New("malformed chunked body")
	// errTrailersTooLarge is a trailer section over the head's limits.
	errTrailersTooLarge = errors.New("trailer section over the head's limits")
)

// readLineLimited returns the next line without its CRLF (or LF). The
// slice is valid until the next read from br. *n counts the bytes of the
// section read so far and is held to limit; buf gathers a line longer than
// br's buffer.
func readLineLimited(br *bufio.Reader, buf *[]byte, n *int, limit int) ([]byte, error) {
	return readLine(br, buf, n, limit, false)
}

var errBareLF = errors.New("line ends with a bare LF")

// readLine is readLineLimited; with crlfOnly a line must end with CRLF.
func readLine(br *bufio.Reader, buf *[]byte, n *int, limit int, crlfOnly bool) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		*buf = append((*buf)[:0], line...)
		for err == bufio.ErrBufferFull {
			if *n+len(*buf) > limit {
				return nil, errLineTooLong
			}
			line, err = br.ReadSlice('\n')
			*buf = append(*buf, line...)
		}
		line = *buf
	}
	if err != nil {
		return nil, err
	}
	*n += len(line)
	if *n > limit {
		return nil, errLineTooLong
	}
	line = line[:len(line)-1]
	if k := len(line); k > 0 && line[k-1] == '\r' {
		line = line[:k-1]
	} else if crlfOnly {
		return nil, errBareLF
	}
	return line, nil
}

// headBlock gathers the field lines of a message head into one buffer,
// with each field's name and value offsets, so that one string conversion
// gives every name and value of the head (see header).
type headBlock struct {
	buf    []byte
	fields []fieldSpan
	line   []byte // a line longer than the reader's buffer
}

// headBlocks lends a head's reader its scratch for the time it reads,
// rather than each connection keeping one: the few in use stay in the
// cache, where hundreds of connections' own would not.
var headBlocks = sync.Pool{New: func() any { return new(headBlock) }}

func getHeadBlock() *headBlock { return headBlocks.Get().(*headBlock) }

// putHeadBlock returns hb to headBlocks, unless a long head grew it.
func putHeadBlock(hb *headBlock) {
	if cap(hb.buf) > 16<<10 || cap(hb.line) > 16<<10 || cap(hb.fields) > 256 {
		return
	}
	hb.buf, hb.fields, hb.line = hb.buf[:0], hb.fields[:0], hb.line[:0]
	headBlocks.Put(hb)
}

type fieldSpan struct {
	name, value [2]int32
	canon       bool // the name is already in canonical form
}

// fieldError is a malformed field line.
type fieldError struct{ why string }

func (e *fieldError) Error() string { return e.why }

var errTooManyFields = errors.New("too many header fields")

// hostSoFar is the value of the first Host field among those read, for the
// log line of a head refused, or left, before its end.
func (h *headBlock) hostSoFar() string {
	for _, f := range h.fields {
		if asciiEqualFold(h.buf[f.name[0]:f.name[1]], "host") {
			return string(h.buf[f.value[0]:f.value[1]])
		}
	}
	return ""
}

// readFields reads field lines up to the empty line that ends the head,
// appending them after what buf already holds. *n counts the head's bytes
// against limit. maxFields (0: no cap) bounds the number of fields;
// ctlValues refuses control characters in values.
func (h *headBlock) readFields(br *bufio.Reader, n *int, limit, maxFields int, ctlValues bool) error {
	h.fields = h.fields[:0]
	for {
		line, err := readLineLimited(br, &h.line, n, limit)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return &fieldError{"obsolete line folding in a header field"}
		}
		colon := indexByte(line, ':')
		if colon <= 0 {
			return &fieldError{"malformed header field"}
		}
		name := line[:colon]
		valid, canon := tokenCanonical(name)
		if !valid {
			return &fieldError{"malformed header field name " + strconv.Quote(string(name))}
		}
		value := trimSpace(line[colon+1:])
		sanitize := false
		if hasControlChar(value) {
			if ctlValues {
				return &fieldError{"a control character in header field " + string(name)}
			}
			sanitize = true
		}
		if maxFields > 0 && len(h.fields) >= maxFields {
			return errTooManyFields
		}
		f := fieldSpan{canon: canon}
		f.name[0] = int32(len(h.buf))
		h.buf = append(h.buf, name...)
		f.name[1] = int32(len(h.buf))
		f.value[0] = int32(len(h.buf))
		h.buf = append(h.buf, value...)
		f.value[1] = int32(len(h.buf))
		if sanitize {
			// RFC 9110 5.5: a NUL or a bare CR (any control but tab)
			// becomes a space, as the writers do for CR and LF, rather
			// than pass on to clients that would refuse the field or
			// the whole response; the value is trimmed again, as
			// HTTP/2 and HTTP/3 refuse a value with outer spaces.
			for i, c := range h.buf[f.value[0]:f.value[1]] {
				if c < ' ' && c != '\t' || c == 0x7f {
					h.buf[f.value[0]+int32(i)] = ' '
				}
			}
			for f.value[0] < f.value[1] && (h.buf[f.value[0]] == ' ' || h.buf[f.value[0]] == '\t') {
				f.value[0]++
			}
			for f.value[1] > f.value[0] && (h.buf[f.value[1]-1] == ' ' || h.buf[f.value[1]-1] == '\t') {
				f.value[1]--
			}
			h.buf = h.buf[:f.value[1]]
		}
		h.fields = append(h.fields, f)
	}
}

// hasControlChar reports whether a field value holds a control character
// other than tab, which RFC 9110 5.5 does not allow. It looks at eight
// bytes at a time and at single bytes only where a word holds a byte
// below 0x20 or a DEL.
func hasControlChar(v []byte) bool {
	i := 0
	for ; i+8 <= len(v); i += 8 {
		if wordMayHoldControl(binary.LittleEndian.Uint64(v[i:])) {
			for _, b := range v[i : i+8] {
				if b < ' ' && b != '\t' || b == 0x7f {
					return true
				}
			}
		}
	}
	for _, b := range v[i:] {
		if b < ' ' && b != '\t' || b == 0x7f {
			return true
		}
	}
	return false
}

// wordMayHoldControl reports whether any of x's eight bytes is below 0x20
// or is 0x7f. Both tests are exact for "any byte" (the classic has-less
// and has-zero bit tricks); a byte with its high bit set never counts.
func wordMayHoldControl(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	below := (x - 0x20*ones) &^ x & highs
	y := x ^ 0x7f*ones
	del := (y - ones) &^ y & highs
	return below|del != 0
}

// tokenCanonical reports whether b is a token (RFC 9110 5.6.2), and
// whether it is already in the canonical form
// textproto.CanonicalMIMEHeaderKey gives (upper case at the start and
// after each '-', lower case elsewhere), which then returns it unchanged.
func tokenCanonical(b []byte) (valid, canonical bool) {
	if len(b) == 0 {
		return false, false
	}
	canonical = true
	upper := true
	for _, c := range b {
		if !tokenChars[c] {
			return false, false
		}
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			canonical = false
		}
		upper = c == '-'
	}
	return true, canonical
}

// framing is what a head says about its message's framing and Host.
type framing struct {
	cls, tes, hosts int
	clVal, te, host string
	// Fields the parsers look at after the map is built: a lookup is
	// needed only if they are there.
	connection, expect, upgrade bool
	// hop: a hop-by-hop field (isHopHeader) is in the head.
	hop bool
	// values is the number of values put in the map.
	values int
}

// header fills header (a new map if nil; else an empty one the caller
// reuses) from a head whose buffer became block. Content-Length,
// Transfer-Encoding and Host are counted into fr; the last two stay out
// of the map (net/http keeps them in the Request and the
// TransferEncoding field), except that a response keeps Host. Value
// slices share one backing array, new for each head (scratch when it is
// long enough: the caller's, new for each head too), each with a capacity
// of its length, so that they outlive a reused map.
func (h *headBlock) header(header http.Header, block string, request bool, scratch []string) (http.Header, framing, error) {
	var fr framing
	if header == nil {
		header = make(http.Header, len(h.fields))
	}
	var values []string
	if len(h.fields) <= len(scratch) {
		values = scratch[:len(h.fields)]
	} else {
		values = make([]string, len(h.fields))
	}
	for i, f := range h.fields {
		name := block[f.name[0]:f.name[1]]
		if !f.canon {
			name = textproto.CanonicalMIMEHeaderKey(name)
		}
		value := block[f.value[0]:f.value[1]]
		switch name {
		case "Host":
			fr.hosts++
			fr.host = value
			if request {
				continue
			}
		case "Content-Length":
			if fr.cls > 0 && value != fr.clVal {
				return nil, fr, &fieldError{"conflicting Content-Length headers"}
			}
			fr.cls++
			fr.clVal = value
		case "Transfer-Encoding":
			fr.tes++
			fr.te = value
			if request {
				continue
			}
		case "Connection":
			fr.connection = true
		case "Expect":
			fr.expect = true
		case "Upgrade":
			fr.upgrade = true
		}
		if isHopHeader(name) {
			fr.hop = true
		}
		fr.values++
		if prev, ok := header[name]; ok {
			header[name] = append(prev, value)
			continue
		}
		values[i] = value
		header[name] = values[i : i+1 : i+1]
	}
	return header, fr, nil
}

// chunkedReader decodes a body in chunked coding (RFC 9112 7.1) from br;
// the trailer section goes to *trailer.
type chunkedReader struct {
	br         *bufio.Reader
	trailer    *http.Header
	maxTrailer int
	remain     int64 // of the current chunk
	state      int   // chunkSize, chunkData or chunkDone
	err        error
	taken      int64 // bytes consumed from br
	line       []byte
	fields     int // trailer fields read
	// strict refuses any control character in a trailer value (a
	// client's request); an upstream's NUL or bare CR becomes a space.
	strict bool
}

const (
	chunkSize = iota
	chunkData
	chunkDone
)

func (r *chunkedReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	for {
		switch r.state {
		case chunkDone:
			return 0, io.EOF
		case chunkSize:
			if err := r.readSize(); err != nil {
				r.err = err
				return 0, err
			}
			continue
		}
		if len(p) == 0 {
			return 0, nil
		}
		if int64(len(p)) > r.remain {
			p = p[:r.remain]
		}
		n, err := r.br.Read(p)
		r.remain -= int64(n)
		r.taken += int64(n)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			r.err = err
			return n, err
		}
		if r.remain == 0 {
			if err := r.readCRLF(); err != nil {
				r.err = err
				return n, err
			}
			r.state = chunkSize
		}
		return n, nil
	}
}

// readReady reports whether a Read from where the reader is would return
// without waiting for bytes beyond buf: some chunk data is there (with the
// CRLF after it if it is the chunk's last), or the end with its trailers,
// or framing already malformed, which the Read fails on at once. A chunk's
// size line alone is not enough.
func (r *chunkedReader) readReady(buf []byte) bool {
	switch {
	case r.err != nil || r.state == chunkDone:
		return true
	case r.state == chunkData:
		return len(buf) > 0 && (int64(len(buf)) < r.remain || int64(len(buf)) >= r.remain+2)
	}
	i := indexByte(buf, '\n')
	if i < 0 {
		return false
	}
	line, rest := buf[:i+1], buf[i+1:]
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return true // malformed
	}
	n, err := parseChunkSize(line[:len(line)-2])
	switch {
	case err != nil:
		return true
	case n == 0:
		return r.restBuffered(buf)
	}
	return len(rest) > 0 && (int64(len(rest)) < n || int64(len(rest)) >= n+2)
}

// restBuffered reports whether the rest of the body, from where the
// reader is, lies complete in buf, so that reading it will not block. A
// malformed rest is reported as not buffered.
func (r *chunkedReader) restBuffered(buf []byte) bool {
	switch r.state {
	case chunkDone:
		return true
	case chunkData:
		if int64(len(buf)) < r.remain {
			return false
		}
		line, rest, ok := cutCRLF(buf[r.remain:])
		if !ok || len(line) != 0 {
			return false
		}
		buf = rest
	}
	for {
		line, rest, ok := cutCRLF(buf)
		if !ok {
			return false
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return false
		}
		if size == 0 {
			for {
				if line, rest, ok = cutLine(rest); !ok {
					return false
				}
				if len(line) == 0 {
					return true
				}
			}
		}
		if int64(len(rest)) < size {
			return false
		}
		if line, rest, ok = cutCRLF(rest[size:]); !ok || len(line) != 0 {
			return false
		}
		buf = rest
	}
}

// cutLine splits the first line (without CRLF or LF) off buf.
func cutLine(buf []byte) (line, rest []byte, ok bool) {
	i := indexByte(buf, '\n')
	if i < 0 {
		return nil, buf, false
	}
	line = buf[:i]
	if k := len(line); k > 0 && line[k-1] == '\r' {
		line = line[:k-1]
	}
	return line, buf[i+1:], true
}

// cutCRLF is cutLine for lines that must end with CRLF: a bare LF makes
// it fail.
func cutCRLF(buf []byte) (line, rest []byte, ok bool) {
	i := indexByte(buf, '\n')
	if i < 1 || buf[i-1] != '\r' {
		return nil, buf, false
	}
	return buf[:i-1], buf[i+1:], true
}

// parseChunkSize parses a chunk-size line, ignoring extensions. The size
// must start the line; whitespace may follow it (BWS before extensions,
// RFC 9112 7.1.1; trailing whitespace without them is tolerated, as by
// net/http). Extensions are skipped, but they must be well formed (a
// control character in one, other than tab, or an unclosed quote could
// make hops disagree on where the line ends).
func parseChunkSize(line []byte) (int64, error) {
	if i := indexByte(line, ';'); i >= 0 {
		if !validChunkExt(line[i:]) {
			return 0, errChunked
		}
		line = line[:i]
	}
	for len(line) > 0 && (line[len(line)-1] == ' ' || line[len(line)-1] == '\t') {
		line = line[:len(line)-1]
	}
	// Leading zeros say nothing (RFC 9112 sets no limit on digits, only
	// on the value); past them at most 15 digits fit an int64.
	for len(line) > 1 && line[0] == '0' {
		line = line[1:]
	}
	if len(line) == 0 || len(line) > 15 {
		return 0, errChunked
	}
	var n int64
	for _, c := range line {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, errChunked
		}
		n = n<<4 | int64(d)
	}
	return n, nil
}

// validChunkExt reports whether ext is chunk extensions as RFC 9112
// 7.1.1 has them: *( BWS ";" BWS token [ BWS "=" BWS ( token /
// quoted-string ) ] ).
func validChunkExt(ext []byte) bool {
	i := 0
	bws := func() {
		for i < len(ext) && (ext[i] == ' ' || ext[i] == '\t') {
			i++
		}
	}
	token := func() bool {
		from := i
		for i < len(ext) && tokenChars[ext[i]] {
			i++
		}
		return i > from
	}
	for {
		bws()
		if i == len(ext) {
			return true
		}
		if ext[i] != ';' {
			return false
		}
		i++
		bws()
		if !token() {
			return false
		}
		bws()
		if i == len(ext) || ext[i] != '=' {
			continue
		}
		i++
		bws()
		if i < len(ext) && ext[i] == '"' {
			for i++; ; i++ {
				if i == len(ext) {
					return false // unclosed
				}
				c := ext[i]
				if c == '"' {
					i++
					break
				}
				if c == '\\' {
					i++
					if i == len(ext) {
						return false
					}
					c = ext[i]
				}
				if c < ' ' && c != '\t' || c == 0x7f {
					return false
				}
			}
		} else if !token() {
			return false
		}
	}
}

func (r *chunkedReader) readSize() error {
	line, err := r.br.ReadSlice('\n')
	r.taken += int64(len(line))
	if err != nil {
		if err == bufio.ErrBufferFull {
			return errChunked
		}
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	// A chunk line ends with CRLF (RFC 9112 7.1); a bare LF is refused,
	// as net/http does, so no hop can read the framing differently.
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return errChunked
	}
	line = line[:len(line)-2]
	n, err := parseChunkSize(line)
	if err != nil {
		return err
	}
	if n == 0 {
		if err := r.readTrailers(); err != nil {
			return err
		}
		r.state = chunkDone
		return nil
	}
	r.remain = n
	r.state = chunkData
	return nil
}

func (r *chunkedReader) readCRLF() error {
	for _, want := range []byte("\r\n") {
		c, err := r.br.ReadByte()
		if err != nil {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		r.taken++
		if c != want {
			return errChunked
		}
	}
	return nil
}

// readTrailers reads the trailer section. Fields that frame or route a
// message are dropped: they cannot be trailers.
func (r *chunkedReader) readTrailers() error {
	limit := r.maxTrailer
	if limit <= 0 {
		limit = 64 << 10
	}
	var n int
	for {
		line, err := readLine(r.br, &r.line, &n, limit, true)
		if err != nil {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			if err == errLineTooLong || err == bufio.ErrBufferFull {
				return errTrailersTooLarge
			}
			if err == errBareLF {
				return errChunked
			}
			return err
		}
		r.taken += int64(len(line)) + 2
		if len(line) == 0 {
			return nil
		}
		colon := indexByte(line, ':')
		if colon <= 0 || !validToken(line[:colon]) {
			return errChunked
		}
		value := trimSpace(line[colon+1:])
		if hasControlChar(value) {
			if r.strict {
				return errChunked // as net/http: no control characters in a field
			}
			// As in an upstream's head (readFields): a control
			// character but tab becomes a space (RFC 9110 5.5).
			for i, c := range value {
				if c < ' ' && c != '\t' || c == 0x7f {
					value[i] = ' '
				}
			}
			value = trimSpace(value)
		}
		if r.fields++; r.fields > maxHeaderFields {
			return errTrailersTooLarge // a trailer section has the head's limits
		}
		name := textproto.CanonicalMIMEHeaderKey(string(line[:colon]))
		switch name {
		case "Content-Length", "Transfer-Encoding", "Host", "Trailer":
			continue
		}
		if r.trailer == nil {
			continue
		}
		if *r.trailer == nil {
			*r.trailer = http.Header{}
		}
		(*r.trailer)[name] = append((*r.trailer)[name], string(value))
	}
}

func (r *chunkedReader) Close() error { return nil }

// lengthReader reads a body of known length from br.
// h1Response is what one upstream response needs, allocated at once.
type h1Response struct {
	resp http.Response
	lr   lengthReader
	body h1Body
	// hop: the head had a hop-by-hop field (Connection among them), so
	// the proxy must run dropHopFields over the header.
	hop bool
	// values holds the header's values when they fit (headBlock.header).
	values [8]string
}

type lengthReader struct {
	br     *bufio.Reader
	remain int64
}

func (r *lengthReader) Read(p []byte) (int, error) {
	if r.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.br.Read(p)
	r.remain -= int64(n)
	if r.remain == 0 {
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (r *lengthReader) Close() error { return nil }

// maxResponseHead bounds an upstream response's status line and headers
// (Envoy's default is 60 KiB; nginx's proxy_buffer_size 4 or 8 KiB), and
// maxHeaderFields their number. Over either, the response is a 502
// http_response_header_section_size.
const maxResponseHead = 64 << 10

var chunkedTE = []string{"chunked"}

// readResponse reads a response head from the upstream connection and sets
// up its body (RFC 9112 6.3). It replaces http.ReadResponse on the hot
// path: one string holds the whole head, and names and values are slices
// of it.
//
// The header goes into dst, emptied first, if not nil.
func (pc *h1Conn) readResponse(req *http.Request, dst http.Header) (*http.Response, error) {
	hb := getHeadBlock()
	resp, err := pc.parseResponse(req, dst, hb)
	putHeadBlock(hb)
	return resp, err
}

// parseResponse is readResponse with hb to gather the head in.
func (pc *h1Conn) parseResponse(req *http.Request, dst http.Header, hb *headBlock) (*http.Response, error) {
	br := pc.br
	var n int
	line, err := readLineLimited(br, &hb.line, &n, maxResponseHead)
	if err != nil {
		if err == io.EOF && n == 0 && pc.read == 0 {
			return nil, io.EOF // nothing of an answer came
		}
		if err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		if err == errLineTooLong {
			return nil, &responseHeadTooLargeError{err: err, statusLine: true}
		}
		return nil, err
	}
	// HTTP/1.x SP 3DIGIT [SP reason]
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return nil, &badResponseError{why: "malformed status line " + strconv.Quote(string(line)), statusLine: true}
	}
	minor := int(line[7] - '0')
	if minor < 0 || minor > 9 {
		return nil, &badResponseError{why: "malformed HTTP version in " + strconv.Quote(string(line)), statusLine: true}
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return nil, &badResponseError{why: "malformed status code in " + strconv.Quote(string(line)), statusLine: true}
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return nil, &badResponseError{why: "malformed status code in " + strconv.Quote(string(line)), statusLine: true}
	}
	hb.buf = append(hb.buf[:0], line[9:]...)
	statusEnd := len(hb.buf)
	if err := hb.readFields(br, &n, maxResponseHead, maxHeaderFields, false); err != nil {
		if err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		if err == errLineTooLong || err == errTooManyFields {
			return nil, &responseHeadTooLargeError{err: err}
		}
		if fe, ok := err.(*fieldError); ok {
			return nil, &badResponseError{why: fe.why}
		}
		return nil, err
	}
	if lo := pc.lean; lo != nil && minor == 1 { // lean requests' methods have no answers of their own (CONNECT's)
		if cl, ok := leanResponse(hb, code, lo); ok {
			// A plain answer to a lean request (h1lean.go): its fields
			// are in lo, made into the client's head; no map, no string.
			// Its response is the call's (outHeader.leanHR).
			hr := &lo.leanHR
			*hr = h1Response{}
			pc.last = hr
			resp := &hr.resp
			// Field by field into the zeroed response: a composite
			// literal would be built on the stack first, whose lines
			// are cold after the wait for this answer.
			resp.StatusCode, resp.Request, resp.ContentLength, resp.Close = code, req, cl, lo.respClose
			resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
			if cl == 0 || req.Method == http.MethodHead {
				resp.Body = http.NoBody // a HEAD's length is the GET's
			} else {
				hr.lr = lengthReader{br: br, remain: cl}
				resp.Body = &hr.lr
			}
			return resp, nil
		}
	}
	block := string(hb.buf)
	if dst != nil {
		clear(dst) // an earlier 1xx response's, or an earlier attempt's
	}
	// The response, its body's reader, the transport's body wrapper and
	// the header's values are one allocation (pc.last, for exchange).
	hr := &h1Response{}
	header, fr, err := hb.header(dst, block, false, hr.values[:])
	if err != nil {
		return nil, &badResponseError{why: err.Error()}
	}
	cls, tes, clVal, te := fr.cls, fr.tes, fr.clVal, fr.te
	hr.hop = fr.hop
	pc.last = hr
	resp := &hr.resp
	*resp = http.Response{
		Status:     block[:statusEnd],
		StatusCode: code,
		ProtoMajor: 1,
		ProtoMinor: minor,
		Header:     header,
		Request:    req,
	}
	resp.Proto = "HTTP/1.1"
	if minor == 0 {
		resp.Proto = "HTTP/1.0"
	}
	var conn []string
	if fr.connection {
		conn = header["Connection"]
	}
	if len(conn) > 0 {
		resp.Close = hasToken(conn, "close") || minor == 0 && !hasToken(conn, "keep-alive")
	} else {
		resp.Close = minor == 0
	}
	// Announced trailers, so the proxy can announce them downstream
	// before the body (their values come at its end).
	if tes > 0 {
		if resp.Trailer, err = declaredTrailers(header, false); err != nil {
			return nil, &badResponseError{why: err.Error()}
		}
	}
	cl := int64(-1)
	if cls > 0 {
		v, ok := parseContentLength(strings.TrimSpace(clVal))
		if !ok {
			return nil, &badResponseError{why: "malformed Content-Length " + strconv.Quote(clVal)}
		}
		cl = v
	}
	switch {
	case code/100 == 1 || code == http.StatusNoContent || code == http.StatusNotModified:
		resp.ContentLength = 0
		resp.Body = http.NoBody
		if tes > 0 || cl > 0 && code != http.StatusNotModified {
			// A body where none can be (RFC 9110 15.3.5): the fields
			// would break clients (HTTP/2 ones reset the stream), and
			// whatever bytes follow must not be read as the next
			// response. A 304's length is the representation's.
			delete(header, "Transfer-Encoding")
			if code != http.StatusNotModified {
				delete(header, "Content-Length")
			}
			resp.Close = true
		}
	case req.Method == http.MethodHead:
		resp.ContentLength = cl
		resp.Body = http.NoBody
	case tes > 0:
		if minor == 0 {
			// An HTTP/1.0 message's framing is faulty with any
			// Transfer-Encoding (RFC 9112 6.1), and a proxy answers a
			// faulty response with a 502 (6.3), as it refuses such a
			// request with a 400.
			return nil, &badResponseError{why: "an HTTP/1.0 response with Transfer-Encoding " + strconv.Quote(te) + " (its framing cannot be trusted)"}
		}
		if !chunkedOnly(tes, te) {
			return nil, &badResponseError{why: "unsupported Transfer-Encoding " + strconv.Quote(te)}
		}
		if cls > 0 {
			// Chunked wins (RFC 9112 6.3), and the connection, whose
			// framing the upstream and another reader could disagree
			// on, is not reused.
			delete(header, "Content-Length")
			resp.Close = true
		}
		resp.ContentLength = -1
		resp.TransferEncoding = chunkedTE
		resp.Body = &chunkedReader{br: br, trailer: &resp.Trailer, maxTrailer: maxResponseHead}
	case cl == 0:
		resp.ContentLength = 0
		resp.Body = http.NoBody
	case cl > 0:
		resp.ContentLength = cl
		hr.lr = lengthReader{br: br, remain: cl}
		resp.Body = &hr.lr
	default:
		// No framing: the body runs to the close.
		resp.ContentLength = -1
		resp.Close = true
		resp.Body = io.NopCloser(br)
	}
	return resp, nil
}

// declaredTrailers takes the Trailer field of a chunked message's head
// into a Trailer map of the names it announces (values come with the
// body's end), as net/http does; framing fields cannot be trailers: a
// request announcing one is refused (as Go's server refuses it), a
// response's announcement of one is left out (its framing is whole, and
// such a trailer would not be relayed anyway: an upstream's slip is not
// worth a 502).
func declaredTrailers(header http.Header, refuse bool) (http.Header, error) {
	decl, ok := header["Trailer"]
	if !ok {
		return nil, nil
	}
	delete(header, "Trailer")
	var trailer http.Header
	for _, d := range decl {
		for d != "" {
			var k string
			k, d, _ = strings.Cut(d, ",")
			k = strings.TrimSpace(k)
			if k == "" {
				continue
			}
			k = textproto.CanonicalMIMEHeaderKey(k)
			switch k {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				if refuse {
					return nil, errors.New("Trailer announces " + k)
				}
				continue
			}
			if trailer == nil {
				trailer = http.Header{}
			}
			trailer[k] = nil
		}
	}
	return trailer, nil
}

// chunkedOnly reports whether the Transfer-Encoding fields of a message
// (tes of them, the last te) are the one coding this proxy speaks:
// chunked alone (RFC 9112 6.1), empty list members aside (RFC 9110 5.6.1:
// "chunked," is chunked). Anything else is refused rather than guessed
// at; the message goes on framed by the gateway, never with the client's
// field.
func chunkedOnly(tes int, te string) bool {
	if tes != 1 {
		return false
	}
	n := 0
	for te != "" {
		var m string
		m, te, _ = strings.Cut(te, ",")
		if m = strings.Trim(m, " \t"); m == "" {
			continue
		}
		if n++; n > 1 || !strings.EqualFold(m, "chunked") {
			return false
		}
	}
	return n == 1
}

// badResponseError is an upstream response that breaks HTTP/1 framing.
// responseHeadTooLargeError: the upstream's head is over maxResponseHead
// or has more than maxHeaderFields fields.
type responseHeadTooLargeError struct {
	err error
	// statusLine: the status line alone was over the limit (on a reused
	// connection, possibly an earlier answer's body with no line end).
	statusLine bool
}

func (e *responseHeadTooLargeError) Error() string {
	return "upstream response head: " + e.err.Error() + " (limits: " + strconv.Itoa(maxResponseHead>>10) + " KiB, " + strconv.Itoa(maxHeaderFields) + " fields)"
}

type badResponseError struct {
	why string
	// statusLine: what came where the status line should be was not one
	// (on a reused connection, possibly bytes of an earlier answer).
	statusLine bool
}

func (e *badResponseError) Error() string { return "malformed upstream response: " + e.why }
