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
	// respHeader is a map the HTTP/1 transport may fill with the upstream
	// response's header, emptying it first (nil: it makes one). It is
	// the server connection's, reused request after request.
	respHeader http.Header
	// resp is the server's response to this request, to which the
	// HTTP/1 transport relays an upstream's 103 Early Hints; toPresent, if
	// set, makes it (a request on the span lane, h1lane.go).
	resp      *response
	toPresent func()
	// hintVia is the Via entry a 103 relayed straight to this request's
	// response carries ("" for none); set by the proxy before its round
	// trip.
	hintVia string
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
	return func() bool { return unregister(&c.mu, &c.fns, a) }
}

// unregister takes a out of *fns, which mu guards, and reports whether it
// was there (its function not started).
func unregister(mu *sync.Mutex, fns *[]*afterFunc, a *afterFunc) bool {
	mu.Lock()
	defer mu.Unlock()
	for i, x := range *fns {
		if x == a {
			last := len(*fns) - 1
			(*fns)[i] = (*fns)[last]
			(*fns)[last] = nil
			*fns = (*fns)[:last]
			return true
		}
	}
	return false
}

// totalContext is a request's context under its service's total timeout,
// for the HTTP/1 server's requests: what context.WithTimeout would derive
// from the request's context, without the dozen allocations, the locks
// and the timer that costs per request (in memory as much as the rest of
// a lane request). On the span lane (h1lane.go) its timer is armed only
// once the request has run for a while: by the disconnect watch (watchDue,
// 50–55 ms in), or at once for a total shorter than that; the general path
// (serve) arms it at once. The HTTP/1 transport registers its hook with
// the request's context (setAbort), and expiry takes it as a cancel
// would. A Done channel and the registration with the request's context
// that closes it are made only for those who ask (a dial, a backoff).
type totalContext struct {
	rc      *requestContext
	at      time.Duration // monoNow at expiry
	expired atomic.Bool

	mu       sync.Mutex
	timer    *time.Timer
	done     chan struct{} // made on first Done
	fired    bool          // done closed and fns started (expiry or rc's cancel)
	fns      []*afterFunc
	unparent func() bool // ends the registration with rc, once made
	ended    bool
}

// begin starts the total of a request with context rc, expiring at
// monoNow at. It comes before anything else may see tc (the disconnect
// watch: startWatch), which reads rc and at without a lock.
func (tc *totalContext) begin(rc *requestContext, at time.Duration) {
	tc.rc, tc.at = rc, at
	if at-monoNow() <= disconnectCheckAfter+2*watchGrain {
		tc.arm()
	}
}

// arm starts the timer, once, unless the request has ended.
func (tc *totalContext) arm() {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.timer == nil && !tc.ended {
		tc.timer = time.AfterFunc(max(tc.at-monoNow(), 0), tc.expire)
	}
}

// end stops the timer and the registration with the request's context:
// the request is over.
func (tc *totalContext) end() {
	tc.mu.Lock()
	tc.ended = true
	t, unparent := tc.timer, tc.unparent
	tc.unparent = nil
	tc.mu.Unlock()
	if t != nil {
		t.Stop()
	}
	if unparent != nil {
		unparent()
	}
}

// expire ends the context with DeadlineExceeded, unless the request's was
// canceled first, and aborts the upstream exchange in progress.
func (tc *totalContext) expire() {
	tc.mu.Lock()
	if tc.expired.Load() || tc.rc.canceled.Load() {
		tc.mu.Unlock()
		return
	}
	tc.expired.Store(true)
	fns := tc.fire()
	tc.mu.Unlock()
	// After expired is stored: a setAbort that missed it stored its hook
	// first, and it is taken here.
	if abort := tc.rc.abort.Swap(nil); abort != nil {
		(*abort)()
	}
	for _, a := range fns {
		go a.f()
	}
}

// parentCanceled passes the request context's cancel on.
func (tc *totalContext) parentCanceled() {
	tc.mu.Lock()
	fns := tc.fire()
	tc.mu.Unlock()
	for _, a := range fns {
		go a.f()
	}
}

// fire closes done and takes the functions to start, once; tc.mu is held.
func (tc *totalContext) fire() []*afterFunc {
	if tc.fired {
		return nil
	}
	tc.fired = true
	if tc.done != nil {
		close(tc.done)
	}
	fns := tc.fns
	tc.fns = nil
	return fns
}

// over reports whether the context has ended; tc.mu is held.
func (tc *totalContext) over() bool {
	return tc.fired || tc.expired.Load() || tc.rc.canceled.Load()
}

// watchParent has the request context's cancel passed on, once; tc.mu is
// held.
func (tc *totalContext) watchParent() {
	if tc.unparent == nil && !tc.ended {
		tc.unparent = tc.rc.AfterFunc(tc.parentCanceled)
	}
}

// setAbort is the request context's setAbort, which also runs *f at once
// if the total has expired. Exactly one of this, expire and clearAbort
// takes the hook.
func (tc *totalContext) setAbort(f *func()) {
	tc.rc.setAbort(f)
	if tc.expired.Load() && tc.rc.abort.CompareAndSwap(f, nil) {
		(*f)()
	}
}

func (tc *totalContext) Deadline() (time.Time, bool) {
	return time.Now().Add(tc.at - monoNow()), true
}

func (tc *totalContext) Value(key any) any { return tc.rc.Value(key) }

func (tc *totalContext) Err() error {
	if tc.expired.Load() {
		return context.DeadlineExceeded
	}
	return tc.rc.Err()
}

func (tc *totalContext) Done() <-chan struct{} {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.done == nil {
		if tc.over() {
			return closedChan
		}
		tc.done = make(chan struct{})
		tc.watchParent()
	}
	return tc.done
}

// AfterFunc is requestContext.AfterFunc's, for this context.
func (tc *totalContext) AfterFunc(f func()) (stop func() bool) {
	tc.mu.Lock()
	if tc.over() {
		tc.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	a := &afterFunc{f: f}
	tc.fns = append(tc.fns, a)
	tc.watchParent()
	tc.mu.Unlock()
	return func() bool { return unregister(&tc.mu, &tc.fns, a) }
}
