package upstream

import "time"

// eject takes t out of rotation after it reached the consecutive-failure
// threshold, unless that would exceed the pool's ejection budget. The
// ejection lasts BaseEjection times the number of times t has been ejected,
// capped at MaxEjection; the multiplier starts over once t has stayed in
// service for MaxEjection since its last ejection ended, so a target that
// recovered for good is not punished forever for old trouble.
func (p *Pool) eject(t *Target, now time.Time) {
	o := p.outlier
	st := t.st
	p.ejectMu.Lock()
	defer p.ejectMu.Unlock()

	// Re-check under the lock: a concurrent failure may already have
	// ejected t, or a success reset its counter.
	if t.ejectedAt(now) || st.consecFailures.Load() < int64(o.ConsecutiveFailures) {
		return
	}

	ejected, othersAvailable := 0, 0
	for _, other := range p.targets {
		switch {
		case other.ejectedAt(now):
			ejected++
		case other.st != st && !other.st.down.Load():
			othersAvailable++
		}
	}
	limit := ejectionLimit(len(p.targets), o.MaxEjectionPercent)
	if ejected >= limit || othersAvailable == 0 {
		// Keep the failure count: if capacity frees up, the next failure
		// retries the ejection. Debug level because this repeats on every
		// failure while the budget is exhausted.
		p.log.Debug("upstream target not ejected: max ejection percent reached or no other target available",
			"target", t.String(), "ejected", ejected, "limit", limit,
			"others_available", othersAvailable)
		return
	}

	st.mu.Lock()
	if st.ejections > 0 && now.Sub(st.lastEjectionEnd) >= o.MaxEjection {
		st.ejections = 0
	}
	// Stop counting once the cap is reached so the multiplication below
	// cannot overflow however often t is ejected.
	if time.Duration(st.ejections)*o.BaseEjection < o.MaxEjection {
		st.ejections++
	}
	d := min(time.Duration(st.ejections)*o.BaseEjection, o.MaxEjection)
	until := now.Add(d)
	st.lastEjectionEnd = until
	st.mu.Unlock()

	// The counter restarts from zero for when t returns; failures of
	// requests still running on it are ignored meanwhile (see report).
	st.ejectedUntil.Store(until.UnixNano())
	st.consecFailures.Store(0)
	p.log.Warn("upstream target ejected", "target", t.String(),
		"duration", d.String(), "until", until, "consecutive_failures", o.ConsecutiveFailures)
}

// ejectionLimit is how many of n targets may be ejected at once under
// pct: the share rounded down, but at least one (as Envoy's
// max_ejection_percent: a pool of three at 30% would otherwise never eject
// anything), and never all of them.
func ejectionLimit(n, pct int) int {
	return min(max(n*pct/100, 1), n-1)
}
