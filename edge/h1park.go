//go:build linux

package edge

import (
	"container/heap"
	"errors"
	"os"
	"sync"
	"syscall"
	"time"
)

// Parking idle keep-alive connections.
//
// A keep-alive connection waiting for its next request holds a goroutine,
// and the goroutine its stack: about 8 KiB, most of what an idle
// connection costs once its buffers are back in their pools (inlineIdle).
// nginx and HAProxy hold about 1 KiB per idle connection; a gateway that
// faces many clients (mobile apps, browsers with keep-alive) holds many.
//
// So a connection served inline (plain TCP) that has been idle for
// parkAfter, with nothing buffered, is parked: its goroutine registers the
// socket with the server's parker, an epoll instance of its own, and ends.
// When the socket becomes readable (a request, or the client closing), its
// idle time runs out, or the server stops, the parker starts a goroutine
// that serves it on from where it was (resume). Parking and waking cost a
// few system calls and a goroutine's start, once per idle spell of at
// least parkAfter; a connection under load is never idle that long.
//
// The parker's epoll instance is itself registered with Go's poller (an
// epoll instance is pollable), so no thread waits in epoll_wait: one
// goroutine reads its events when the poller says there are some, and its
// read deadline is the earliest idle end of the connections parked.
//
// A socket in the parker is registered level-triggered and one-shot: data
// that came before it was registered wakes it at once, and it wakes once.
// Everything that touches the registrations holds the parker's lock, and
// a connection's socket is closed only once it is out of the parker (take,
// under the lock), so a socket number in the parker is always the
// connection's own, never one reused by another.

// defaultParkAfter is how long a keep-alive connection is idle before it
// is parked.
const defaultParkAfter = 2 * time.Second

const canPark = true

// parker holds a server's parked connections.
type parker struct {
	s    *h1Server
	epfd int
	f    *os.File // epfd, registered with Go's poller
	done chan struct{}

	mu      sync.Mutex
	conns   map[int32]*serverConn // by socket
	dues    parkDues              // by idle end
	stopped bool

	// The loop's: the events read, and the connections woken.
	evs   [64]syscall.EpollEvent
	woken []*serverConn
}

// newParker makes a parker and starts its goroutine.
func newParker(s *h1Server) (*parker, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	f := os.NewFile(uintptr(fd), "parker")
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, err // not pollable here
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &parker{s: s, epfd: fd, f: f, done: make(chan struct{}), conns: map[int32]*serverConn{}}
	go p.loop(rc)
	return p, nil
}

// park hands c, idle, to the server's parker; false if it cannot be
// parked (the server is stopping, the connection closed meanwhile, or no
// parker could be made), and c is then the caller's still. After true the
// caller must not touch c: it may already be running on another goroutine.
func (s *h1Server) park(c *serverConn) bool {
	raw := c.inlineRaw()
	if raw == nil || c.br != nil {
		return false
	}
	p := s.getParker()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped || s.shutting.Load() || c.state.Load() != connIdle {
		return false
	}
	fd := int32(-1)
	var errno error
	err := raw.rc.Control(func(u uintptr) {
		fd = int32(u)
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: fd}
		errno = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(u), &ev)
	})
	if err != nil || errno != nil {
		return false
	}
	c.parked, c.parkFD = true, fd
	c.parkDue = c.idleFrom + s.opts.IdleTimeout
	p.conns[fd] = c
	heap.Push(&p.dues, c)
	if c.parkIdx == 0 {
		// The earliest idle end now.
		p.f.SetReadDeadline(monoBase.Add(c.parkDue))
	}
	s.parkedN.Add(1)
	return true
}

// unpark takes c out of the parker if it is parked there: the caller then
// closes it, and must start its goroutine (resume) to end it.
func (s *h1Server) unpark(c *serverConn) bool {
	p := s.parker.Load()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.take(c)
}

// take takes c out of the parker (p.mu held); false if it is not parked.
func (p *parker) take(c *serverConn) bool {
	if !c.parked {
		return false
	}
	delete(p.conns, c.parkFD)
	// Unregistered before the socket can be closed (the callers close it
	// after), so that its number, reused, is never the parker's.
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(c.parkFD), nil)
	heap.Remove(&p.dues, c.parkIdx)
	c.parked, c.parkFD, c.parkIdx = false, -1, -1
	p.s.parkedN.Add(-1)
	return true
}

// getParker returns the server's parker, made at the first park; nil if
// the server is stopping or none can be made here.
func (s *h1Server) getParker() *parker {
	if p := s.parker.Load(); p != nil {
		return p
	}
	s.parkMu.Lock()
	defer s.parkMu.Unlock()
	if p := s.parker.Load(); p != nil {
		return p
	}
	if s.parkOff {
		return nil
	}
	p, err := newParker(s)
	if err != nil {
		s.parkOff = true
		s.log.Warn("idle connections will not be parked", "error", err)
		return nil
	}
	s.parker.Store(p)
	return p
}

// stopParker ends the server's parker, if it has one, once the server
// stops: connections still in it are woken to end (the drain closed
// them, or is about to), and its goroutine ends before it returns.
func (s *h1Server) stopParker() {
	s.parkMu.Lock()
	s.parkOff = true
	p := s.parker.Load()
	s.parkMu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	var left []*serverConn
	for _, c := range p.conns {
		p.take(c)
		left = append(left, c)
	}
	p.mu.Unlock()
	for _, c := range left {
		go c.resume()
	}
	p.f.Close()
	<-p.done
}

// loop waits for parked sockets to become readable and for idle ends,
// until the parker's file is closed.
func (p *parker) loop(rc syscall.RawConn) {
	defer close(p.done)
	for {
		err := rc.Read(p.events)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			p.sweep()
		default:
			return // closed (stopParker)
		}
	}
}

// events is given to the poller's read of the epoll instance: it wakes
// the connections whose sockets are ready, until none are, and then
// returns false to wait.
func (p *parker) events(fd uintptr) bool {
	for {
		n, err := syscall.EpollWait(int(fd), p.evs[:], 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return false
		}
		p.mu.Lock()
		for _, ev := range p.evs[:n] {
			if c := p.conns[ev.Fd]; c != nil && p.take(c) {
				p.woken = append(p.woken, c)
			}
		}
		p.mu.Unlock()
		p.resumeWoken()
	}
}

// sweep wakes the connections whose idle time has run out (they close),
// and sets the deadline for the next.
func (p *parker) sweep() {
	now := monoNow()
	p.mu.Lock()
	for len(p.dues) > 0 && p.dues[0].parkDue <= now {
		c := p.dues[0]
		p.take(c)
		p.woken = append(p.woken, c)
	}
	if len(p.dues) > 0 {
		p.f.SetReadDeadline(monoBase.Add(p.dues[0].parkDue))
	} else {
		p.f.SetReadDeadline(time.Time{})
	}
	p.mu.Unlock()
	p.resumeWoken()
}

// resumeWoken starts the goroutines of the connections woken.
func (p *parker) resumeWoken() {
	for i, c := range p.woken {
		go c.resume()
		p.woken[i] = nil
	}
	p.woken = p.woken[:0]
}

// parkDues orders parked connections by idle end (container/heap).
type parkDues []*serverConn

func (h parkDues) Len() int           { return len(h) }
func (h parkDues) Less(i, j int) bool { return h[i].parkDue < h[j].parkDue }
func (h parkDues) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].parkIdx, h[j].parkIdx = i, j
}
func (h *parkDues) Push(x any) {
	c := x.(*serverConn)
	c.parkIdx = len(*h)
	*h = append(*h, c)
}
func (h *parkDues) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return c
}
