package edge

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/edge/config"
)

// retryPolicy is a service's compiled retry settings and its budget.
type retryPolicy struct {
	attempts  int
	onConnect bool
	onTimeout bool
	onReset   bool
	statuses  [100]bool // 500..599
	base, max time.Duration
	budget    *retryBudget
}

// newRetryPolicy compiles c. prev is the service's budget under the
// configuration being replaced, if it had one: its window carries over, so
// a reload (even of the same document) does not hand a failing service a
// fresh allowance of retries.
func newRetryPolicy(c *config.Retries, prev *retryBudget) *retryPolicy {
	p := &retryPolicy{attempts: defaultRetryAttempts, base: c.Backoff.Base, max: c.Backoff.Max}
	if c.Attempts != nil {
		p.attempts = *c.Attempts // 0: none
	}
	if p.base == 0 {
		p.base = defaultBackoffBase
	}
	if p.max == 0 {
		p.max = defaultBackoffMax
	}
	if p.max < p.base {
		p.max = p.base
	}
	on := c.On
	if len(on) == 0 {
		on = []string{"connect_failure", "reset", "502", "503", "504"}
	}
	for _, s := range on {
		r, err := config.ParseRetryOn(s)
		if err != nil {
			continue // validated before compile
		}
		switch r.Condition {
		case "connect_failure":
			p.onConnect = true
		case "timeout":
			p.onTimeout = true
		case "reset":
			p.onReset = true
		case "status":
			p.statuses[r.Status-500] = true
		}
	}
	ratio, min := defaultRetryRatio, defaultRetryMinPerSecond
	if c.Budget.Ratio != nil {
		ratio = *c.Budget.Ratio
	}
	if c.Budget.MinPerSecond != nil {
		min = *c.Budget.MinPerSecond
	}
	p.budget = newRetryBudget(ratio, min, time.Now)
	if prev != nil {
		prev.mu.Lock()
		p.budget.buckets = prev.buckets
		prev.mu.Unlock()
	}
	return p
}

func (p *retryPolicy) retryStatus(code int) bool {
	return code >= 500 && code <= 599 && p.statuses[code-500]
}

// backoff returns the wait before retry n (1-based): exponential from base,
// capped at max, with full jitter so that clients retrying together spread
// out.
func (p *retryPolicy) backoff(n int) time.Duration {
	d := p.base << (n - 1)
	if d <= 0 || d > p.max {
		d = p.max
	}
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

// retryBudget allows retries while they stay under ratio of the requests
// of the last window, plus minPerSecond retries per second whatever the
// traffic (as Linkerd and Finagle budget retries). It stops a failing
// service from being hit with attempts times its normal load.
type retryBudget struct {
	mu           sync.Mutex
	now          func() time.Time
	ratio        float64
	minPerSecond int
	buckets      [budgetWindow]budgetBucket
}

const budgetWindow = 10 // seconds

type budgetBucket struct {
	sec      int64
	requests int
	retries  int
}

func newRetryBudget(ratio float64, minPerSecond int, now func() time.Time) *retryBudget {
	return &retryBudget{ratio: ratio, minPerSecond: minPerSecond, now: now}
}

func (b *retryBudget) bucket(sec int64) *budgetBucket {
	bk := &b.buckets[sec%budgetWindow]
	if bk.sec != sec {
		*bk = budgetBucket{sec: sec}
	}
	return bk
}

// request records a first attempt.
func (b *retryBudget) request() {
	b.mu.Lock()
	b.bucket(b.now().Unix()).requests++
	b.mu.Unlock()
}

// allow records and permits a retry if the budget has room.
func (b *retryBudget) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	sec := b.now().Unix()
	var reqs, retries int
	for i := range b.buckets {
		bk := &b.buckets[i]
		if sec-bk.sec < budgetWindow {
			reqs += bk.requests
			retries += bk.retries
		}
	}
	limit := int(b.ratio*float64(reqs)) + b.minPerSecond*budgetWindow
	if retries >= limit {
		return false
	}
	b.bucket(sec).retries++
	return true
}
