//go:build linux

package edge

import (
	"io"
	"net/http"
	"os"
	"syscall"
)

// Serving inside the poller's read.
//
// A keep-alive connection served the plain way reads once more after each
// response, to find (nearly always) nothing yet and then wait: a system call
// per request that nginx does not make (it reads again only once epoll says
// so). Go's poller cannot wait without that read: every Read and RawRead
// begins by forgetting the readiness seen before (the fd is edge-triggered,
// so data that came earlier would be missed if the first attempt were
// skipped).
//
// Inside one RawRead, though, readiness is not forgotten between calls of
// the function it is given. So serveInline reads, serves and answers the
// requests of a connection from within that function, and when one is
// answered it returns false to wait for the next, without a read, if the
// last read left the socket empty: any bytes that came since made the
// poller ready again, and the wait returns at once. Empty means TCP_INQ
// said so (rawconn.go): a read that stopped at the buffer's end leaves
// bytes, and a FIN that came with the last bytes (one readiness for both)
// counts as one, so both are read on rather than waited for.
//
// Only requests without a body are served this way, with their whole head
// in the buffer, and not protocol upgrades: nothing reads the socket while
// such a request is served but the disconnect watch, which peeks through a
// duplicate of the socket (watchDup) instead, since the serving goroutine
// holds the socket's read lock. A request with a body or an upgrade is
// handed back to be served the plain way; so is a head still arriving, read
// on under the header timeout.
//
// While it waits for the next request with nothing buffered either way, the
// connection holds no buffers: its reader and writer go back to their pools
// (inlineIdle) and are taken again when the request comes (inlineStep). An
// idle keep-alive connection then costs 8 KiB less, and the buffers a
// request uses are the ones the last request on any connection used, still
// in the CPU's cache, rather than its own connection's, pushed out by the
// others' since.

// inlineRaw returns the connection's socket if it can be served inline
// (plain TCP).
func (c *serverConn) inlineRaw() *rawConn {
	if c.gc == nil {
		return nil
	}
	rc, _ := c.gc.Conn.(*rawConn)
	return rc
}

// serveInline serves the connection's requests inside one poller read (see
// above) until one cannot be: it returns that request (a body, an upgrade),
// or done when the connection is finished, or neither when a head is still
// arriving or the connection cannot be served inline.
func (c *serverConn) serveInline() (req *http.Request, rs *requestState, done bool) {
	raw := c.inlineRaw()
	if raw == nil || c.s.shutting.Load() {
		c.takeBuffers() // a parked connection resumed has none
		return nil, nil, false
	}
	if !c.inqOn {
		if c.inqOn = enableInq(raw.rc); !c.inqOn {
			return nil, nil, false
		}
	}
	if c.inlineF == nil {
		c.inlineF = c.inlineStep
	}
	c.inlReq, c.inlRS, c.inlDone, c.parkNow = nil, nil, false, false
	err := raw.rc.Read(c.inlineF)
	c.inl = false
	req, rs = c.inlReq, c.inlRS
	c.inlReq, c.inlRS = nil, nil
	if err != nil || c.inlDone {
		// A deadline (idle: to close, or to park the connection), or the
		// connection closed (a drain's closeIdle), while waiting for a
		// request; or served its last.
		c.parkNow = !c.inlDone && c.parkDueNow(err)
		return nil, nil, true
	}
	c.takeBuffers() // taken already, unless the read ended while idle
	return req, rs, false
}

// closeNow closes the connection at once. Served inline, the serving
// goroutine holds the socket for as long as a handler runs, and net's Close
// waits for that: the socket is shut down first, which ends the client's
// connection and every read and write on it, and closed as that goroutine
// lets go.
func (c *serverConn) closeNow() {
	if raw := c.inlineRaw(); raw != nil {
		raw.rc.Control(func(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
		go c.rwc.Close()
		return
	}
	c.rwc.Close()
}

// inlineStep is given to the poller's read: it returns false to wait for
// readability, true to end the read. Its first call reads (what came before
// the read began must be looked for); after a request is answered it waits
// without reading.
func (c *serverConn) inlineStep(fd uintptr) bool {
	c.inl, c.inlFD = true, fd
	c.takeBuffers()
	for {
		if c.br.Buffered() == 0 {
			if _, err := c.br.Peek(1); err == errWouldBlock {
				return c.inlineIdle()
			} else if err != nil {
				c.inlDone = true // the client closed or the connection failed
				return true
			}
		}
		if !c.headBuffered() {
			return true // the rest of the head is read the plain way
		}
		if st := c.state.Load(); st == connClosed || !c.state.CompareAndSwap(st, connActive) {
			c.inlDone = true // closed by Shutdown
			return true
		}
		req, rs, perr := c.readRequest()
		if perr != nil {
			c.refuse(perr, 0)
			c.inlDone = true
			return true
		}
		switch {
		case req == nil: // served on the span lane
			if !c.laneKeep {
				c.inlDone = true
				return true
			}
		case req.Body != http.NoBody || !rs.watchOK:
			c.inlReq, c.inlRS = req, rs
			return true
		case !c.serveParsed(req, rs):
			c.inlDone = true
			return true
		}
		if c.br.Buffered() == 0 {
			if c.inlMore {
				// The last read left bytes or the end in the socket,
				// their readiness already spent: read on.
				continue
			}
			return c.inlineIdle()
		}
		// A pipelined request is here already.
	}
}

// inlineIdle marks the connection idle before it waits for a request, as
// serve does.
func (c *serverConn) inlineIdle() bool {
	c.state.Store(connIdle)
	if c.s.shutting.Load() {
		c.inlDone = true
		return true
	}
	c.idleDeadline()
	c.dropBuffers()
	return false
}

// inlineRead is serverConn.Read inside the poller's read: one read of the
// socket, errWouldBlock if there is nothing yet.
func (c *serverConn) inlineRead(p []byte) (int, error) {
	for {
		n, inq, e := sysRecvInq(c.inlFD, p)
		switch e {
		case 0:
			if n == 0 {
				return 0, io.EOF
			}
			c.inlMore = inq != 0 // not told (-1): as if more
			return n, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			emptyReads.Add(1)
			return 0, errWouldBlock
		}
		return 0, os.NewSyscallError("read", e)
	}
}

// watchDup starts the disconnect watch of a request served inline: it
// peeks through a duplicate of the socket, registered with the poller on
// its own, until the client closes (gone), sends the next request, or the
// watch is stopped (a past deadline on the duplicate). It returns the
// duplicate, closed when the watch ends, or nil if none could be made.
func (c *serverConn) watchDup(done chan struct{}, gone func()) *os.File {
	var f *os.File
	if err := c.inlineRaw().rc.Control(func(fd uintptr) {
		nfd, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
		if e == 0 {
			f = os.NewFile(nfd, "watch")
		}
	}); err != nil || f == nil {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil
	}
	go func() {
		defer close(done)
		defer f.Close()
		var buf [1]byte
		var n int
		var e error
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, _, e = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
				if e != syscall.EINTR {
					return e != syscall.EAGAIN
				}
			}
		})
		if err == nil && (e != nil || n == 0) {
			gone() // a reset, or the client's end of the connection
		}
	}()
	return f
}
