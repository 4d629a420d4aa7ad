package upstream

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoHealthyTarget is returned by Pick when no target of the pool is
// available: all are down by health check or ejected.
var ErrNoHealthyTarget = errors.New("upstream: no healthy target")

// Options carries the dependencies of a pool.
type Options struct {
	// Logger receives health transitions and ejections; nil discards.
	Logger *slog.Logger
	// Client performs health checks. Nil means a client owned by the pool
	// that does not follow redirects, ignores proxy environment variables
	// and times out after HealthCheckSpec.Timeout. A caller-supplied
	// client is used as is; each check is still bounded by the timeout.
	Client *http.Client
	// TLSConfig and Protocol shape the pool's own client (Client nil):
	// the service's upstream TLS settings (nil: Go's defaults), and its
	// protocol, "h2c" or "h2" for HTTP/2 only ("": HTTP/1.1, or HTTP/2
	// where TLS offers it), so that checks speak to a target as the
	// proxied requests do.
	TLSConfig *tls.Config
	Protocol  string
	// Now is the clock for ejections and status timestamps; nil means
	// time.Now. Health-check scheduling uses real timers regardless.
	Now func() time.Time
	// OnHealthChange, if set, is called when active health checking takes a
	// target down or brings it back. It runs on a health-check goroutine
	// (or in Start) and must not call Start or Stop on the same pool.
	OnHealthChange func(service string, target *Target, healthy bool)
}

// TargetStatus is a point-in-time view of a target, for admin endpoints and
// metrics.
type TargetStatus struct {
	URL                 string    `json:"url"` // password redacted
	Region              string    `json:"region"`
	Weight              int       `json:"weight"`
	Healthy             bool      `json:"healthy"`           // by active health check (always true without checks)
	Pending             bool      `json:"pending,omitempty"` // added, awaiting its first health check
	Ejected             bool      `json:"ejected"`           // by outlier detection
	EjectedUntil        time.Time `json:"ejected_until,omitzero"`
	InFlight            int64     `json:"in_flight"`
	ConsecutiveFailures int       `json:"consecutive_failures"` // passive Failure outcomes since the last Success
	LastCheck           time.Time `json:"last_check,omitzero"`
	LastError           string    `json:"last_error,omitempty"` // of the last health check; empty if it passed
}

// Pool is the set of targets of one service together with its balancer,
// health checker, outlier detector and concurrency cap. All methods are
// safe for concurrent use.
type Pool struct {
	service       string
	targets       []*Target
	balancer      BalancerKind
	hashOn        HashSource
	ring          []ringNode // consistent hash only
	health        *HealthCheckSpec
	outlier       *OutlierSpec
	maxConcurrent int64
	// inFlight counts requests admitted by Acquire. It is shared with the
	// previous and next pools of the service, so the cap holds across a
	// reload while old requests drain.
	inFlight *atomic.Int64

	log            *slog.Logger
	client         *http.Client
	ownTransport   *http.Transport // set when the pool built client itself
	now            func() time.Time
	onHealthChange func(string, *Target, bool)

	// rrMu guards rrCurrent, the smooth weighted round-robin state
	// (current weight per target, aligned with targets), and lrCurrent.
	rrMu      sync.Mutex
	rrCurrent []int64
	// lrCurrent is the same for least requests over targets of different
	// weights (pickWeightedLeastRequests); nil when all weigh the same.
	lrCurrent []int64

	// ejectMu serialises ejection decisions so that the max-ejection
	// percentage cannot be overrun by targets failing simultaneously.
	ejectMu sync.Mutex

	lifeMu  sync.Mutex
	started bool
	stopped bool
	// stoppedFlag is stopped for a checker handed on to a later pool
	// while it probed through this one's transport.
	stoppedFlag atomic.Bool
}

// NewPool validates spec and builds a pool. prev, if not nil, is the pool
// that served the same service under the previous configuration: targets
// whose URL is unchanged keep their health, ejection and in-flight state,
// and the concurrency counter is shared. NewPool does not modify prev; the
// new pool takes charge of the shared state in Start.
func NewPool(spec Spec, prev *Pool, opts Options) (*Pool, error) {
	s, err := normalize(spec)
	if err != nil {
		return nil, err
	}
	if prev != nil && prev.service != s.Service {
		return nil, errSpec(s.Service, "previous pool belongs to service %q", prev.service)
	}

	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Pool{
		service:        s.Service,
		balancer:       s.Balancer,
		hashOn:         s.HashOn,
		health:         s.HealthCheck,
		outlier:        s.Outlier,
		maxConcurrent:  int64(s.MaxConcurrent),
		log:            logger.With("service", s.Service),
		now:            opts.Now,
		onHealthChange: opts.OnHealthChange,
	}
	if p.now == nil {
		p.now = time.Now
	}

	var prevByKey map[string]*Target
	if prev != nil {
		p.inFlight = prev.inFlight
		prevByKey = make(map[string]*Target, len(prev.targets))
		for _, t := range prev.targets {
			prevByKey[t.key] = t
		}
	} else {
		p.inFlight = new(atomic.Int64)
	}

	p.targets = make([]*Target, len(s.Targets))
	for i, ts := range s.Targets {
		key := ts.URL.String()
		old := prevByKey[key]
		switch {
		case old != nil && old.Weight == ts.Weight && old.Region == ts.Region:
			// Unchanged: share the very same Target.
			p.targets[i] = old
		case old != nil:
			// Same endpoint with new attributes: a new descriptor (the old
			// pool may still be reading the old one) over the same state.
			p.targets[i] = &Target{URL: ts.URL, Weight: ts.Weight, Region: ts.Region, key: key, st: old.st}
		default:
			t := &Target{URL: ts.URL, Weight: ts.Weight, Region: ts.Region, key: key, st: new(targetState)}
			// Nobody else can see this state yet, so the pool owns it
			// right away; outcomes reported before Start are judged by
			// this pool's policy.
			t.st.owner.Store(p)
			// With health checks, a new target waits for its first
			// (which Start runs at once) while others can serve, as
			// Envoy keeps a new host out until it passes one.
			t.st.pending.Store(p.health != nil)
			p.targets[i] = t
		}
	}

	switch p.balancer {
	case RoundRobin:
		p.rrCurrent = make([]int64, len(p.targets))
	case LeastRequests:
		for _, t := range p.targets {
			if t.Weight != p.targets[0].Weight {
				p.lrCurrent = make([]int64, len(p.targets))
				break
			}
		}
	case ConsistentHash:
		p.ring = buildRing(p.targets)
	}

	if p.health != nil {
		p.client = opts.Client
		if p.client == nil {
			p.ownTransport = newHealthTransport()
			if opts.TLSConfig != nil {
				p.ownTransport.TLSClientConfig = opts.TLSConfig.Clone()
			}
			switch opts.Protocol {
			case "h2c":
				var pr http.Protocols
				pr.SetUnencryptedHTTP2(true)
				p.ownTransport.Protocols = &pr
			case "h2":
				// The handshake is bounded by the check's timeout: net/http
				// dials apart from the request (its timeout does not end
				// the dial), and a target that stalls handshakes left a
				// connection and a goroutine behind at each check.
				H2OverTLS(p.ownTransport, p.ownTransport.DialContext, opts.TLSConfig, p.health.Timeout, errCheckHandshake)
			}
			p.client = &http.Client{
				Transport: p.ownTransport,
				Timeout:   p.health.Timeout,
				// A redirect is an answer from a live server; following it
				// could probe some other host entirely.
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			}
		}
	}
	return p, nil
}

// errCheckHandshake: a health check's TLS handshake outlasted the check's
// timeout.
var errCheckHandshake = errors.New("the TLS handshake outlasted the health check's timeout")

// Service returns the name of the service the pool serves.
func (p *Pool) Service() string { return p.service }

// Start makes the pool the owner of its targets' state (taking over from
// the previous pool of a reload) and, if health checks are configured,
// starts one checker goroutine per target whose first check runs at once.
// Start is idempotent and does nothing after Stop.
func (p *Pool) Start() {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	if p.started || p.stopped {
		return
	}
	p.started = true
	for _, t := range p.targets {
		p.adopt(t)
	}
	if p.health == nil {
		return
	}
	for _, t := range p.targets {
		p.takeChecker(t)
	}
}

// adopt hands the state of t over to p.
func (p *Pool) adopt(t *Target) {
	st := t.st
	if st.owner.Swap(p) == p || p.health != nil {
		return
	}
	// Health checks were switched off by this reload: nothing would ever
	// bring a target marked down back, so forget the verdict.
	st.mu.Lock()
	wasDown := st.down.Swap(false)
	st.pending.Store(false) // nothing will check it now
	st.checkOK, st.checkFail = 0, 0
	st.mu.Unlock()
	if wasDown {
		p.log.Info("upstream target marked healthy: health checks disabled", "target", t.String())
		if p.onHealthChange != nil {
			p.onHealthChange(p.service, t, true)
		}
	}
}

// Stop stops the health checkers and waits for them to exit. It is
// idempotent and safe on a pool that was never started. Requests running on
// the pool are unaffected: Pick, Acquire and the Begin callbacks keep
// working, and outcomes are judged by whichever pool owns the target now.
func (p *Pool) Stop() {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	if p.stopped {
		return
	}
	p.stopped = true
	p.stoppedFlag.Store(true) // before CloseIdleConnections below: see checker.run
	// The checkers this pool still drives (not taken over by a later
	// pool) end; waiting under lifeMu makes concurrent Stop calls all
	// return only once they are gone; checkers never take lifeMu.
	if p.health != nil {
		for _, t := range p.targets {
			p.dropChecker(t)
		}
	}
	if p.ownTransport != nil {
		p.ownTransport.CloseIdleConnections()
	}
}

// Acquire admits one request under the service's concurrency cap and
// reports whether it was admitted. Every successful Acquire must be paired
// with one Release. It never blocks.
func (p *Pool) Acquire() bool {
	if p.maxConcurrent == 0 {
		p.inFlight.Add(1)
		return true
	}
	// A CAS loop rather than add-then-check: with the latter, requests
	// racing at the limit could all overshoot, all back out and all be
	// refused although one of them fitted.
	for {
		n := p.inFlight.Load()
		if n >= p.maxConcurrent {
			return false
		}
		if p.inFlight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release ends a request admitted by Acquire.
func (p *Pool) Release() { p.inFlight.Add(-1) }

// InFlight returns the number of requests admitted by Acquire and not yet
// released, for the whole service (including requests still running on the
// previous pool of a reload).
func (p *Pool) InFlight() int64 { return p.inFlight.Load() }

// Targets returns the pool's targets in configuration order. The slice is a
// copy; the targets are shared.
func (p *Pool) Targets() []*Target {
	out := make([]*Target, len(p.targets))
	copy(out, p.targets)
	return out
}

// Status returns a snapshot of every target in configuration order.
func (p *Pool) Status() []TargetStatus {
	now := p.now()
	out := make([]TargetStatus, len(p.targets))
	for i, t := range p.targets {
		st := t.st
		s := TargetStatus{
			URL:                 t.String(),
			Region:              t.Region,
			Weight:              t.Weight,
			Healthy:             !st.down.Load() && !st.pending.Load(),
			Pending:             st.pending.Load(),
			InFlight:            st.inFlight.Load(),
			ConsecutiveFailures: int(st.consecFailures.Load()),
		}
		if until := st.ejectedUntil.Load(); until > now.UnixNano() {
			s.Ejected = true
			s.EjectedUntil = time.Unix(0, until)
		}
		st.mu.Lock()
		s.LastCheck = st.lastCheck
		s.LastError = st.lastError
		st.mu.Unlock()
		out[i] = s
	}
	return out
}
