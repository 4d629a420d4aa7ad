// Package lograte spaces log lines about one kind of event that a peer can
// cause at will (garbage on a port, refused connections): a bucket of
// Burst lines, refilled at Rate a second. The line that goes out after
// some were held back says how many.
package lograte

import (
	"sync"
	"time"
)

// Gossip and the cluster port use these: 20 lines at once, then 5 a
// second.
const (
	DefaultBurst = 20
	DefaultRate  = 5
)

// Limiter is one kind's bucket. The zero value uses the defaults.
type Limiter struct {
	Burst float64          // default DefaultBurst
	Rate  float64          // lines a second; default DefaultRate
	Now   func() time.Time // default time.Now; tests set it

	mu       sync.Mutex
	tokens   float64
	refilled time.Time
	held     int
}

// Allow takes a token for a line: it reports whether the line goes out
// and, if it does, how many were held back before it.
func (l *Limiter) Allow() (bool, int) {
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	burst, rate := l.Burst, l.Rate
	if burst <= 0 {
		burst = DefaultBurst
	}
	if rate <= 0 {
		rate = DefaultRate
	}
	t := now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refilled.IsZero() {
		l.tokens, l.refilled = burst, t
	}
	l.tokens = min(burst, l.tokens+t.Sub(l.refilled).Seconds()*rate)
	l.refilled = t
	if l.tokens < 1 {
		l.held++
		return false, 0
	}
	l.tokens--
	held := l.held
	l.held = 0
	return true, held
}
