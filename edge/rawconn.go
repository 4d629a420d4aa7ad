//go:build linux

package edge

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// rawConn is a TCP connection whose Read and Write make their system calls
// raw, without the runtime's entersyscall/exitsyscall around them. The rest
// (the poller, deadlines, Close, the fd's locks) is net's, reached through
// syscall.RawConn.
//
// Why: the socket is non-blocking, so read and write return at once, but the
// kernel may preempt the thread on its way out of one. A write that wakes a
// process on the same CPU (a backend, a client) is often where that happens.
// While the thread is off the CPU its P stays in the syscall state, and once
// that lasts a sysmon tick (20 µs) sysmon takes the P and starts another
// thread to run the goroutines waiting on it; the first thread, back, finds
// no P and goes to sleep. Every such handoff costs two thread switches and
// two futex calls, and keeps sysmon polling every 20 µs instead of backing
// off. With a raw call the P stays running through a preemption, as a
// goroutine's own code does. Measured in bench/ (proxy and backend sharing a
// CPU, 64 connections): context switches of the proxy per request fell from
// 0.23 to 0.07, futex calls from 0.036 to 0.001, sysmon's sleeps from 0.10
// to 0.004, and proxy CPU per request by about a tenth.
//
// The race detector build makes the ordinary, annotated calls (see
// rawconn_race.go), so that data passed through sockets between goroutines
// of one process still orders their memory accesses as it does with net.
type rawConn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The state of the Read (and of the Write) in progress, kept here so
	// that the functions given to rc are allocated once per connection.
	// rmu (wmu) serializes Reads (Writes) from different goroutines, as
	// net's fd lock does; a Read and a Write may run at once.
	rmu   sync.Mutex
	rbuf  []byte
	rn    int
	rerr  syscall.Errno
	readF func(uintptr) bool

	// recvQueued's call and answer, made once per connection; used by
	// whoever holds the connection (the pool hands it to one at a time).
	inqF   func(uintptr)
	inqN   int32
	inqErr syscall.Errno

	wmu    sync.Mutex
	wbuf   []byte
	wn     int
	werr   syscall.Errno
	writeF func(uintptr) bool

	// pend is a request to send at the start of the next Read, which then
	// waits for the answer without first trying to read it (sendThenRead);
	// sendErr is the send's failure.
	pend    []byte
	sendErr error
	sendF   func(uintptr) bool

	// inq: reads are recvmsg with TCP_INQ (trackLeft), and left is what
	// the last one left in the socket (-1: not told).
	inq  bool
	left int

	// The hang-up watch (below): hupID is c's registration (0: none),
	// hupClosed says Close has begun (no registration after it), both
	// under hmu; hup says the peer has hung up.
	hmu       sync.Mutex
	hupID     int32
	hupClosed bool
	hup       atomic.Bool
	// onHup, if set before the watch begins, is called once the peer
	// has hung up (the pool it may be idle in sweeps it out).
	onHup func()
}

// maxRW caps one read or write, as internal/poll does (1 GiB).
const maxRW = 1 << 30

// rawTCP returns c read and written by raw system calls when it is a
// *net.TCPConn, and c itself otherwise.
func rawTCP(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	r := &rawConn{TCPConn: tc, rc: rc}
	r.readF = r.readOnce
	r.writeF = r.writeAll
	r.sendF = r.sendThenRead
	return r
}

// sendBeforeReadOf returns c's sendBeforeRead if c is a rawConn, else nil.
func sendBeforeReadOf(c net.Conn) io.Writer {
	if rc, ok := c.(*rawConn); ok {
		return (*sendBeforeRead)(rc)
	}
	return nil
}

// watchHangup puts c on the hang-up watch (below) if it is a rawConn; it
// reports whether it did. onHup, if not nil, is called when the peer hangs
// up.
func watchHangup(c net.Conn, onHup func()) bool {
	rc, ok := c.(*rawConn)
	if !ok {
		return false
	}
	rc.onHup = onHup
	return rc.watchHangup()
}

// hungUp reports whether c's peer has hung up, as far as the hang-up watch
// has seen.
func hungUp(c net.Conn) bool {
	rc, ok := c.(*rawConn)
	return ok && rc.hup.Load()
}

// sendBeforeRead is an io.Writer that keeps what it is given in pend, to
// be sent by the next Read.
type sendBeforeRead rawConn

func (w *sendBeforeRead) Write(p []byte) (int, error) {
	w.pend = append(w.pend, p...)
	return len(p), nil
}

// sendThenRead is readOnce whose first call sends pend and then waits for
// readability without a read: an answer to what was just sent cannot be
// there yet. It saves the read that would find nothing (a system call per
// exchange) and stays safe because the send happens inside the poller's
// read, after the poller forgot any earlier readiness: the answer's arrival
// is seen. (A read alone cannot skip its first attempt: data that came
// before the read began would be missed.)
func (c *rawConn) sendThenRead(fd uintptr) bool {
	if len(c.pend) == 0 {
		return c.readOnce(fd)
	}
	p := c.pend
	c.pend = c.pend[:0]
	for len(p) > 0 {
		n, e := sysWrite(fd, p)
		switch e {
		case 0:
			p = p[n:]
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			// The socket's buffer is full: the rest waits for
			// writability as any write does (the write lock is not the
			// read lock held here).
			if _, err := c.Write(p); err != nil {
				c.sendErr = err
				return true
			}
			p = nil
			continue
		}
		c.sendErr = c.failure("write", nil, e)
		return true
	}
	if c.hup.Load() {
		// The peer has hung up: the readiness that said so may be
		// spent. Read to see the end (or what it sent before it).
		return c.readOnce(fd)
	}
	return false
}

// readOnce is called by the poller with the fd (under net's read lock): it
// returns false to wait for readability.
func (c *rawConn) readOnce(fd uintptr) bool {
	for {
		var n int
		var e syscall.Errno
		if c.inq {
			n, c.left, e = sysRecvInq(fd, c.rbuf)
		} else {
			n, e = sysRead(fd, c.rbuf)
		}
		switch e {
		case 0:
			c.rn = n
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			emptyReads.Add(1)
			return false
		}
		c.rerr = e
		return true
	}
}

// emptyReads counts reads of sockets (rawConn, serveInline) that found
// nothing: system calls spent to learn that the poller must wait. Tests
// look at it; a proxied keep-alive exchange makes none (see sendThenRead
// and h1inline.go).
var emptyReads atomic.Uint64

// writeAll writes all of wbuf, returning false to wait for writability
// when the socket buffer is full.
func (c *rawConn) writeAll(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		p := c.wbuf[c.wn:]
		if len(p) > maxRW {
			p = p[:maxRW]
		}
		n, e := sysWrite(fd, p)
		switch e {
		case 0:
			c.wn += n
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.werr = e
		return true
	}
	return true
}

// Read reads as net.TCPConn does: at most len(p) bytes, io.EOF at the end,
// *net.OpError with Op "read" for failures and deadlines.
func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerr = p, 0, 0
	f := c.readF
	if len(c.pend) > 0 {
		f, c.sendErr = c.sendF, nil
	}
	err := c.rc.Read(f)
	n, e := c.rn, c.rerr
	c.rbuf, c.pend = nil, c.pend[:0] // unsent if the poller failed first
	if cap(c.pend) > 4<<10 {
		c.pend = nil // a rare large head: not kept with the pooled connection
	}
	if c.sendErr != nil {
		err := c.sendErr
		c.sendErr = nil
		return 0, err
	}
	if err := c.failure("read", err, e); err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p or fails, as net.TCPConn does.
func (c *rawConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werr = p, 0, 0
	err := c.rc.Write(c.writeF)
	n, e := c.wn, c.werr
	c.wbuf = nil
	return n, c.failure("write", err, e)
}

// failure is net's error for a read or write (op) that the poller ended
// with err (a deadline, a close) or the system call with e, or nil.
func (c *rawConn) failure(op string, err error, e syscall.Errno) error {
	switch {
	case err != nil:
		err = unwrapOpError(err)
	case e != 0:
		err = os.NewSyscallError(op, e)
	default:
		return nil
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// ReadFrom and WriteTo hand the TCP connections underneath to net, so that
// io.Copy between sockets (a WebSocket relay) keeps using splice.
func (c *rawConn) ReadFrom(r io.Reader) (int64, error) {
	if rc, ok := r.(*rawConn); ok {
		r = rc.TCPConn
	}
	return c.TCPConn.ReadFrom(r)
}

func (c *rawConn) WriteTo(w io.Writer) (int64, error) {
	if wc, ok := w.(*rawConn); ok {
		w = wc.TCPConn
	}
	return c.TCPConn.WriteTo(w)
}

// unwrapOpError returns what net's raw-read or raw-write error wraps (a
// deadline, a closed connection), to be wrapped again under the name net
// gives a plain read or write.
func unwrapOpError(err error) error {
	if oe, ok := err.(*net.OpError); ok {
		return oe.Err
	}
	return err
}

// sendQueued reports the bytes in c's socket send queue not yet taken by
// the peer (SIOCOUTQ: unsent and unacknowledged), if c is a TCP
// connection, bare or under TLS.
func sendQueued(c net.Conn) (int, bool) {
	var q int32
	var e syscall.Errno
	if !socketControl(c, func(fd uintptr) {
		_, _, e = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&q)))
	}) || e != 0 {
		return 0, false
	}
	return int(q), true
}

// recvQueued reports the bytes waiting in c's socket receive queue
// (SIOCINQ: received, not yet read; a FIN is not counted), if c is a
// TCP connection of ours, bare or under TLS. One raw system call (it
// never waits: see rawConn), no allocation.
func recvQueued(c net.Conn) (int, bool) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	rc, ok := c.(*rawConn)
	if !ok {
		return 0, false
	}
	if rc.inqF == nil {
		rc.inqF = func(fd uintptr) {
			_, _, rc.inqErr = syscall.RawSyscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&rc.inqN)))
		}
	}
	if rc.rc.Control(rc.inqF) != nil || rc.inqErr != 0 {
		return 0, false
	}
	return int(rc.inqN), true
}

// TCP_INQ: with it on, each recvmsg(2) of a TCP socket also says how much
// is left to read after it, and counts a FIN received as one byte left
// (Linux 4.18). A read that leaves nothing can be followed by a wait
// without a read, however the last bytes and a FIN came.
const (
	tcpInq = 36 // TCP_INQ and its control message TCP_CM_INQ
	inqOOB = 32 // room for that control message
)

// trackLeft makes c's reads tell what they leave in the socket (TCP_INQ),
// if c is a rawConn, for leftInSocket.
func trackLeft(c net.Conn) {
	if rc, ok := c.(*rawConn); ok && enableInq(rc.rc) {
		rc.inq, rc.left = true, -1
	}
}

// leftInSocket reports whether bytes were left in c's socket by its last
// read (only known after trackLeft).
func leftInSocket(c net.Conn) bool {
	rc, ok := c.(*rawConn)
	return ok && rc.inq && rc.left > 0
}

// ackNow sends at once the acknowledgement c's socket holds back (delayed
// ACK), by TCP_QUICKACK. An upstream whose writes wait for it (Nagle's
// algorithm, no TCP_NODELAY) then sends what it holds, such as a body it
// should not have written after its answer to a HEAD (peekNext), which
// the pool's look before reuse can then see.
func ackNow(c net.Conn) {
	if rc, ok := c.(*rawConn); ok {
		rc.rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
		})
	}
}

// enableInq turns TCP_INQ on for c's socket; it reports whether it could.
func enableInq(rc syscall.RawConn) bool {
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_TCP, tcpInq, 1)
	}); cerr != nil {
		return false
	}
	return err == nil
}

// parseInq returns TCP_INQ's count from a recvmsg's control data, or -1.
func parseInq(oob []byte) int {
	hl := syscall.CmsgLen(0)
	if len(oob) < hl+4 {
		return -1
	}
	h := (*syscall.Cmsghdr)(unsafe.Pointer(&oob[0]))
	if h.Level != syscall.SOL_TCP || h.Type != tcpInq {
		return -1
	}
	return int(*(*int32)(unsafe.Pointer(&oob[hl])))
}

// Hang-up watch.
//
// A request sent by the response's first read (sendThenRead) waits without
// having read; on a pooled connection that is safe only if nothing came
// since its last read, and an upstream may have hung up meanwhile (a FIN
// while the connection sat in the pool, whose readiness the next read
// forgets before it begins). nginx learns of it from EPOLLRDHUP, which
// Go's poller does not pass on. So such connections are also registered,
// for EPOLLRDHUP alone, with an epoll set of Meridian's own, which one
// goroutine waits on through the poller. When a peer hangs up, the socket
// is marked (hup: the pool drops it) and shut down for reading, which
// changes nothing for a reader (queued bytes stay readable, then the end)
// but is a new event, waking one that waits without having tried.

type hupWatch struct {
	once  sync.Once
	epfd  int // -1: not available (reads always try first)
	mu    sync.Mutex
	next  int32
	conns map[int32]*rawConn
}

var hups = hupWatch{epfd: -1}

// start creates the epoll set and its goroutine, once per process.
func (h *hupWatch) start() {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return
	}
	f := os.NewFile(uintptr(epfd), "hupwatch") // non-blocking: on the poller
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return
	}
	h.conns = map[int32]*rawConn{}
	h.epfd = epfd
	go h.run(rc)
}

// run waits for hang-ups for the life of the process.
func (h *hupWatch) run(rc syscall.RawConn) {
	var evs [64]syscall.EpollEvent
	// One read for ever: readiness seen while events are handled is not
	// forgotten (see serveInline).
	rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.EpollWait(int(fd), evs[:], 0)
			if err == syscall.EINTR {
				continue
			}
			if err != nil || n <= 0 {
				return false
			}
			for _, ev := range evs[:n] {
				h.mu.Lock()
				c := h.conns[ev.Fd]
				h.mu.Unlock()
				if c != nil {
					c.hungUp()
				}
			}
		}
	})
}

// watchHangup registers c with the hang-up watch, once; it reports whether
// c is watched.
func (c *rawConn) watchHangup() bool {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if c.hupID != 0 {
		return true
	}
	h := &hups
	h.once.Do(h.start)
	if h.epfd < 0 || c.hupClosed {
		return false
	}
	h.mu.Lock()
	id := h.next + 1
	for id == 0 || h.conns[id] != nil {
		id++
	}
	h.next = id
	h.conns[id] = c
	h.mu.Unlock()
	var err error
	cerr := c.rc.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLRDHUP | epollET, Fd: id}
		err = syscall.EpollCtl(h.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if cerr != nil || err != nil {
		h.mu.Lock()
		delete(h.conns, id)
		h.mu.Unlock()
		return false
	}
	c.hupID = id
	return true
}

// epollET is EPOLLET as the unsigned event mask (package syscall declares
// it negative).
const epollET = 1 << 31

// unwatchHangup takes c off the hang-up watch for good (it is closing).
func (c *rawConn) unwatchHangup() {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	c.hupClosed = true
	id := c.hupID
	if id == 0 {
		return
	}
	c.hupID = 0
	h := &hups
	c.rc.Control(func(fd uintptr) {
		syscall.EpollCtl(h.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
	h.mu.Lock()
	delete(h.conns, id)
	h.mu.Unlock()
}

// hungUp marks c as hung up by its peer and wakes its reader, once: the
// shutdown is itself an event for the watch, seen and ignored.
func (c *rawConn) hungUp() {
	if c.hup.Swap(true) {
		return
	}
	hupWakes.Add(1)
	c.rc.Control(func(fd uintptr) {
		syscall.Shutdown(int(fd), syscall.SHUT_RD)
	})
	if c.onHup != nil {
		c.onHup()
	}
}

// hupWakes counts the hang-ups the watch acted on (tests look at it).
var hupWakes atomic.Uint64

// Close closes the connection, off the hang-up watch first.
func (c *rawConn) Close() error {
	c.unwatchHangup()
	return c.TCPConn.Close()
}
