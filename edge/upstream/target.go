package upstream

import (
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Outcome is the result of one round trip to a target, reported through the
// function returned by Target.Begin.
type Outcome int

const (
	// Success is any response the upstream produced itself, including 4xx
	// and 5xx other than 502, 503 and 504.
	Success Outcome = iota
	// Failure is a connect error, a timeout, or a 502, 503 or 504 response.
	// Failures feed outlier detection.
	Failure
)

// String returns "success" or "failure".
func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case Failure:
		return "failure"
	default:
		return "outcome(" + strconv.Itoa(int(o)) + ")"
	}
}

// Target is one upstream endpoint of a pool. The exported fields are fixed
// at construction and must not be modified; the runtime state lives behind
// unexported atomics and is shared with the pools built from this one on
// reload.
type Target struct {
	URL    *url.URL
	Weight int
	Region string

	key string // URL.String(): identity across reloads and ring seed
	st  *targetState
}

// targetState is the runtime state of a target. It is shared by pointer
// between the pools of successive configuration snapshots for as long as
// the target's URL stays in the configuration, so health, ejection and
// in-flight counts survive reloads.
type targetState struct {
	// owner is the pool whose policy governs this state: its outlier
	// settings apply to reported outcomes and only its health checker may
	// record results. A reload hands the state over in Pool.Start.
	owner atomic.Pointer[Pool]

	inFlight atomic.Int64
	// down is set by active health checks.
	down atomic.Bool
	// pending: a target added with health checks on, awaiting its first
	// check. It gets traffic only when no other target can take it.
	pending atomic.Bool
	// ejectedUntil is the end of the current ejection in Unix nanoseconds;
	// the target is ejected while it lies in the future.
	ejectedUntil atomic.Int64
	// consecFailures counts Failure outcomes since the last Success.
	consecFailures atomic.Int64

	// mu guards the fields below, which change only on the slow paths
	// (health check results and ejections).
	mu              sync.Mutex
	ejections       int       // ejections since the multiplier was last reset
	lastEjectionEnd time.Time // end of the latest ejection
	checkOK         int       // consecutive successful health checks
	checkFail       int       // consecutive failed health checks
	lastCheck       time.Time
	lastError       string
	// checker is the goroutine checking this target, if any. A reload
	// whose pool checks the target the same way takes it over (its pool
	// pointer) rather than starting another: each reload started a check
	// at once and cancelled the one in flight, so frequent reloads sent a
	// storm of checks and, faster than a check, recorded none (an outside
	// check).
	checker *checker
}

// Available reports whether t may receive traffic at time now: it is healthy
// by active checks (or not checked), not awaiting its first check, and not
// ejected by outlier detection.
func (t *Target) Available(now time.Time) bool {
	return !t.st.down.Load() && !t.st.pending.Load() && !t.ejectedAt(now)
}

// ejectedAt reports whether outlier detection keeps t out at time now.
func (t *Target) ejectedAt(now time.Time) bool {
	until := t.st.ejectedUntil.Load()
	return until != 0 && until > now.UnixNano()
}

// ejectedBy is ejectedAt with the time read only if t has an ejection.
func (t *Target) ejectedBy(c *lazyClock) bool {
	until := t.st.ejectedUntil.Load()
	return until != 0 && until > c.get().UnixNano()
}

// InFlight returns the number of requests currently running against t,
// across every pool that shares it.
func (t *Target) InFlight() int64 { return t.st.inFlight.Load() }

// String returns the target URL with any password redacted.
func (t *Target) String() string { return t.URL.Redacted() }

// Begin records the start of a round trip to t and returns the function
// that must be called exactly once with its outcome. The in-flight count it
// maintains drives the least-requests balancer; the outcome drives outlier
// detection. Calls after the first are ignored, so a deferred safety call
// cannot corrupt the counters.
func (t *Target) Begin() func(Outcome) {
	t.Start()
	var finished atomic.Bool
	return func(o Outcome) {
		if !finished.CompareAndSwap(false, true) {
			return
		}
		t.Finish(o)
	}
}

// Start and Finish are Begin without its allocation, for a caller that
// makes sure each Start has exactly one Finish.
func (t *Target) Start() { t.st.inFlight.Add(1) }

// Finish ends a request counted by Start with its outcome.
func (t *Target) Finish(o Outcome) {
	t.st.inFlight.Add(-1)
	t.report(o)
}

// report feeds an outcome into passive outlier detection, under the policy
// of the pool that currently owns the target's state. If that pool has no
// outlier detection, a running ejection simply expires and nothing new is
// ejected.
func (t *Target) report(o Outcome) {
	st := t.st
	if o != Failure {
		st.consecFailures.Store(0)
		return
	}
	p := st.owner.Load()
	if p == nil || p.outlier == nil {
		// Without detection the counter is kept only for Status.
		st.consecFailures.Add(1)
		return
	}
	now := p.now()
	if t.ejectedAt(now) {
		// Requests that started before the ejection say nothing new; they
		// must not count towards the next ejection either.
		return
	}
	if until := st.ejectedUntil.Load(); until != 0 && st.ejectedUntil.CompareAndSwap(until, 0) {
		// First outcome since an ejection expired: the target is back
		// with a clean slate, whatever slipped in around the ejection.
		st.consecFailures.Store(0)
	}
	if st.consecFailures.Add(1) >= int64(p.outlier.ConsecutiveFailures) {
		p.eject(t, now)
	}
}
