package edge

import (
	"context"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// requestContext is the context of one HTTP/1 request served by h1Server.
// It is canceled when the handler returns, when the client is seen to go
// away, or when the server closes the connection.
//
// It does what context.WithCancel(parent) would, cheaper on the hot path:
// it has no parent to register with, and it implements the AfterFunc
// method that context.AfterFunc and derived contexts use, so the upstream
// transport's cancellation hook is a slice append rather than a map
// allocated for every request.
type requestContext struct {
	mu       sync.Mutex
	done     chan struct{} // made on first Done
	canceled atomic.Bool
	fns      []*afterFunc
	// abort is the upstream transport's hook (setAbort), kept apart from
	// fns so that registering it allocates nothing and takes no lock.
	abort atomic.Pointer[func()]
	// start is monoNow when the handler began (0: not known), so that
	// the handler need not read the clock again.
	start time.Duration
	// respHeader is an empty map the HTTP/1 transport may fill with the
	// upstream response's header (nil: it makes one). It is the server
	// connection's, reused request after request.
	respHeader http.Header
	// resp is the server's response to this request, to which the
	// HTTP/1 transport relays an upstream's 103 Early Hints; toPresent, if
	// set, makes it (a request on the span lane, h1lane.go).
	resp      *response
	toPresent func()
	// parsed: the HTTP/1 server filled what follows for this request.
	// peer and peerStr are the connection's RemoteAddr as clientAddr
	// gives them; headerValues is the number of values in the request's
	// header map.
	parsed       bool
	peer         netip.Addr
	peerStr      string
	headerValues int
	// head is the request's head as parseHead read it (line locates its
	// request line), kept for the time the request is served when it was
	// read inline with no body, for the lean path (h1lean.go); nil
	// otherwise.
	head *headBlock
	line requestLine
}

type afterFunc struct{ f func() }

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// requestContextKey is the key under which a requestContext gives itself,
// so that the HTTP/1 transport finds it under a context derived from it
// (a service's total timeout).
type requestContextKey struct{}

func (c *requestContext) Deadline() (time.Time, bool) { return time.Time{}, false }

func (c *requestContext) Value(key any) any {
	if key == (requestContextKey{}) {
		return c
	}
	return nil
}

func (c *requestContext) Err() error {
	if c.canceled.Load() {
		return context.Canceled
	}
	return nil
}

func (c *requestContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		if c.canceled.Load() {
			return closedChan
		}
		c.done = make(chan struct{})
	}
	return c.done
}

// cancel cancels the context and starts the functions registered with
// AfterFunc, each on its own goroutine. Later calls do nothing.
func (c *requestContext) cancel() {
	c.mu.Lock()
	if c.canceled.Load() {
		c.mu.Unlock()
		return
	}
	c.canceled.Store(true)
	if c.done != nil {
		close(c.done)
	}
	fns := c.fns
	c.fns = nil
	c.mu.Unlock()
	// After canceled is stored: a setAbort that missed it stored its
	// hook first, and it is taken here.
	if abort := c.abort.Swap(nil); abort != nil {
		(*abort)() // sets a deadline: it does not block
	}
	for _, a := range fns {
		go a.f()
	}
}

// setAbort registers *f (which must not block) to run when the context is
// canceled; at once if it already is. One hook at a time. Exactly one of
// cancel, a setAbort that finds the context canceled, and clearAbort takes
// the hook: each swaps it out, and both sides store before they look.
func (c *requestContext) setAbort(f *func()) {
	c.abort.Store(f)
	if c.canceled.Load() && c.abort.CompareAndSwap(f, nil) {
		(*f)()
	}
}

// clearAbort unregisters the hook and reports whether it had not run.
func (c *requestContext) clearAbort() bool {
	return c.abort.Swap(nil) != nil
}

// AfterFunc arranges for f to run after the context is canceled, as
// context.AfterFunc documents; stop unregisters it and reports whether it
// did so before f was started.
func (c *requestContext) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.canceled.Load() {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	a := &afterFunc{f: f}
	c.fns = append(c.fns, a)
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, x := range c.fns {
			if x == a {
				last := len(c.fns) - 1
				c.fns[i] = c.fns[last]
				c.fns[last] = nil
				c.fns = c.fns[:last]
				return true
			}
		}
		return false
	}
}
