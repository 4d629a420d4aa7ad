//go:build linux

// Command evfloor is the floor of an event-loop proxy, for bench/run.sh's
// opt-in "go-evfloor" target: one goroutine waiting in epoll_wait for every
// socket, non-blocking raw reads and writes, and, as floorproxy, one
// upstream connection per client connection and no HTTP beyond finding the
// end of a bodyless request head and of a Content-Length response. No
// goroutine per connection, no netpoller, no buffers per connection but
// what a partial message leaves. It is not a proxy anyone should run; it
// shows what this benchmark gives a proxy process whose user time per
// request is close to nothing (about 1 µs), next to nginx's event loops
// and Go's goroutine-per-connection floor (go-floor).
package main

import (
	"bytes"
	"flag"
	"log"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"
)

// end is one end of a client's pair: its client connection or its
// upstream connection.
type end struct {
	fd     int
	client bool
	peer   *end
	in     []byte // bytes read and not yet sent on
	want   int    // upstream: the length of the answer being read (head and body), -1 until its head is whole
	out    []byte // bytes the socket did not take yet
}

type loop struct {
	epfd     int
	ends     map[int]*end
	upstream syscall.SockaddrInet4
	scratch  []byte
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18007", "listen address")
	upstream := flag.String("upstream", "127.0.0.1:18000", "backend address (IPv4)")
	flag.Parse()
	ua, err := netip.ParseAddrPort(*upstream)
	if err != nil || !ua.Addr().Is4() {
		log.Fatalf("-upstream %q: want an IPv4 address and port", *upstream)
	}
	la, err := netip.ParseAddrPort(*addr)
	if err != nil || !la.Addr().Is4() {
		log.Fatalf("-addr %q: want an IPv4 address and port", *addr)
	}
	l := &loop{ends: map[int]*end{}, upstream: syscall.SockaddrInet4{Port: int(ua.Port()), Addr: ua.Addr().As4()}, scratch: make([]byte, 64<<10)}
	lfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		log.Fatal(err)
	}
	syscall.SetsockoptInt(lfd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err := syscall.Bind(lfd, &syscall.SockaddrInet4{Port: int(la.Port()), Addr: la.Addr().As4()}); err != nil {
		log.Fatalf("listen %s: %v", *addr, err)
	}
	if err := syscall.Listen(lfd, 4096); err != nil {
		log.Fatal(err)
	}
	if l.epfd, err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); err != nil {
		log.Fatal(err)
	}
	l.watch(lfd, syscall.EPOLLIN, syscall.EPOLL_CTL_ADD)
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(l.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			log.Fatal(err)
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == lfd {
				l.accept(lfd)
				continue
			}
			e := l.ends[fd]
			if e == nil {
				continue
			}
			ok := true
			if ev.Events&syscall.EPOLLOUT != 0 {
				ok = l.flush(e)
			}
			if ok && ev.Events&(syscall.EPOLLIN|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
				ok = l.read(e)
			}
			if !ok {
				l.close(e)
			}
		}
	}
}

func (l *loop) watch(fd int, events uint32, op int) {
	ev := syscall.EpollEvent{Events: events, Fd: int32(fd)}
	if err := syscall.EpollCtl(l.epfd, op, fd, &ev); err != nil && op == syscall.EPOLL_CTL_ADD {
		log.Fatal(err)
	}
}

// accept takes every pending connection, each with an upstream connection
// of its own.
func (l *loop) accept(lfd int) {
	for {
		cfd, _, err := syscall.Accept4(lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		if err != nil {
			return // EAGAIN, or a connection gone before it was taken
		}
		syscall.SetsockoptInt(cfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		ufd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			syscall.Close(cfd)
			continue
		}
		syscall.SetsockoptInt(ufd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		if err := syscall.Connect(ufd, &l.upstream); err != nil && err != syscall.EINPROGRESS {
			syscall.Close(cfd)
			syscall.Close(ufd)
			continue
		}
		c, u := &end{fd: cfd, client: true}, &end{fd: ufd, want: -1}
		c.peer, u.peer = u, c
		l.ends[cfd], l.ends[ufd] = c, u
		l.watch(cfd, syscall.EPOLLIN, syscall.EPOLL_CTL_ADD)
		l.watch(ufd, syscall.EPOLLIN, syscall.EPOLL_CTL_ADD)
	}
}

func (l *loop) close(e *end) {
	for _, x := range []*end{e, e.peer} {
		if l.ends[x.fd] == x {
			delete(l.ends, x.fd)
			syscall.Close(x.fd)
		}
	}
}

// Reads and writes never block (the sockets are non-blocking): raw system
// calls, without the runtime's bookkeeping for calls that may.
func rawRead(fd int, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

func rawWrite(fd int, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

// send writes p to e, keeping what the socket does not take until it is
// writable; false if e is broken.
func (l *loop) send(e *end, p []byte) bool {
	if len(e.out) > 0 {
		e.out = append(e.out, p...)
		return true
	}
	for len(p) > 0 {
		n, errno := rawWrite(e.fd, p)
		switch errno {
		case 0:
			p = p[n:]
		case syscall.EAGAIN, syscall.ENOTCONN: // full, or still connecting
			e.out = append(e.out[:0], p...)
			l.watch(e.fd, syscall.EPOLLIN|syscall.EPOLLOUT, syscall.EPOLL_CTL_MOD)
			return true
		case syscall.EINTR:
		default:
			return false
		}
	}
	return true
}

// flush writes what e kept; false if e is broken.
func (l *loop) flush(e *end) bool {
	for len(e.out) > 0 {
		n, errno := rawWrite(e.fd, e.out)
		switch errno {
		case 0:
			e.out = e.out[n:]
		case syscall.EAGAIN, syscall.ENOTCONN:
			return true
		case syscall.EINTR:
		default:
			return false
		}
	}
	e.out = nil
	l.watch(e.fd, syscall.EPOLLIN, syscall.EPOLL_CTL_MOD)
	return true
}

var crlf2, contentLength = []byte("\r\n\r\n"), []byte("\r\nContent-Length: ")

// read takes what e has to read and sends every whole message on to its
// peer; false when e is done or broken.
func (l *loop) read(e *end) bool {
	for {
		n, errno := rawRead(e.fd, l.scratch)
		if errno == syscall.EAGAIN {
			return true
		}
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 || n == 0 {
			return false
		}
		e.in = append(e.in, l.scratch[:n]...)
		if e.client {
			// Bodyless request heads, as the benchmark sends them.
			for {
				i := bytes.Index(e.in, crlf2)
				if i < 0 {
					break
				}
				if !l.send(e.peer, e.in[:i+4]) {
					return false
				}
				e.in = e.in[:copy(e.in, e.in[i+4:])]
			}
		} else {
			// Answers with a Content-Length, as the backend sends them.
			for {
				if e.want < 0 {
					i := bytes.Index(e.in, crlf2)
					if i < 0 {
						break
					}
					length := 0
					if j := bytes.Index(e.in[:i+2], contentLength); j >= 0 {
						v := e.in[j+len(contentLength):]
						length, _ = strconv.Atoi(string(v[:bytes.IndexByte(v, '\r')]))
					}
					e.want = i + 4 + length
				}
				if len(e.in) < e.want {
					break
				}
				if !l.send(e.peer, e.in[:e.want]) {
					return false
				}
				e.in = e.in[:copy(e.in, e.in[e.want:])]
				e.want = -1
			}
		}
		if n < len(l.scratch) {
			return true // drained: the next read would be EAGAIN
		}
	}
}
