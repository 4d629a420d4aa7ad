package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"
)

// maxDrainBytes is how much of a health-check response body is read before
// closing it: enough for a typical status page to be consumed so the
// connection can be reused, without letting a misbehaving target make the
// checker read megabytes every interval.
const maxDrainBytes = 4 << 10

// healthCheckUserAgent identifies checks in the targets' access logs.
const healthCheckUserAgent = "meridian-health-check"

// newHealthTransport returns the transport of the pool-owned health-check
// client. It is a clone of http.DefaultTransport without the proxy taken
// from the environment: targets are internal addresses that must be probed
// directly, as the proxy itself reaches them.
func newHealthTransport() *http.Transport {
	var tr *http.Transport
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		tr = dt.Clone()
	} else {
		tr = &http.Transport{ForceAttemptHTTP2: true}
	}
	tr.Proxy = nil
	return tr
}

// healthURL returns the URL probed for t: the target's scheme, user info and
// host with the check path (and query) in place of the target's base path.
func healthURL(t *Target, path string) string {
	// path was validated by normalizeHealth.
	ref, err := url.Parse(path)
	if err != nil {
		return t.URL.String()
	}
	return t.URL.ResolveReference(ref).String()
}

// checker checks one target every spec.Interval, for the pool it
// currently serves: the pool whose client probes and whose thresholds
// judge, which a reload changes without a pause (takeChecker).
type checker struct {
	spec   HealthCheckSpec
	url    string
	pool   atomic.Pointer[Pool]
	cancel context.CancelFunc
	done   chan struct{}
}

// takeChecker makes p the pool of t's checker if it checks t the same way
// (same spec and URL), or starts one: its first check at once.
func (p *Pool) takeChecker(t *Target) {
	checkURL := healthURL(t, p.health.Path)
	st := t.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if c := st.checker; c != nil && c.spec == *p.health && c.url == checkURL {
		c.pool.Store(p)
		return
	}
	// A checker of another spec ends now: its results no longer count
	// (recordCheck), and its pool's Stop no longer finds it.
	if c := st.checker; c != nil {
		c.cancel()
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &checker{spec: *p.health, url: checkURL, cancel: cancel, done: make(chan struct{})}
	c.pool.Store(p)
	st.checker = c
	go c.run(ctx, t)
}

// dropChecker ends t's checker if p still drives it, and waits for it.
func (p *Pool) dropChecker(t *Target) {
	st := t.st
	st.mu.Lock()
	c := st.checker
	if c == nil || c.pool.Load() != p {
		st.mu.Unlock()
		return
	}
	st.checker = nil
	st.mu.Unlock()
	c.cancel()
	<-c.done
}

// run checks t right away and then every Interval until ctx ends. Ticks
// that fall while a check is still running are dropped by the ticker, so a
// slow target is never probed by overlapping requests, across reloads too.
func (c *checker) run(ctx context.Context, t *Target) {
	defer close(c.done)
	ticker := time.NewTicker(c.spec.Interval)
	defer ticker.Stop()
	for {
		p := c.pool.Load()
		err := p.probe(ctx, c.url)
		if p.stoppedFlag.Load() && p.ownTransport != nil {
			// Handed on while this probe ran on a pool since stopped:
			// its connection, idle now, closes (an HTTP/2 one stayed
			// in that pool for the idle timeout, one per reload).
			p.ownTransport.CloseIdleConnections()
		}
		if ctx.Err() != nil {
			// Stopping: the aborted check says nothing about the target
			// and must not count against it.
			return
		}
		c.pool.Load().recordCheck(t, err)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// probe performs one GET against checkURL and returns why it failed, or nil.
func (p *Pool) probe(ctx context.Context, checkURL string) error {
	ctx, cancel := context.WithTimeout(ctx, p.health.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, checkURL, nil)
	if err != nil {
		return err
	}
	if p.health.Host != "" {
		req.Host = p.health.Host
	}
	req.Header.Set("User-Agent", healthCheckUserAgent)
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrainBytes))
	_ = resp.Body.Close()
	if resp.StatusCode < p.health.ExpectStatusMin || resp.StatusCode > p.health.ExpectStatusMax {
		return fmt.Errorf("unexpected status %d, want %d..%d",
			resp.StatusCode, p.health.ExpectStatusMin, p.health.ExpectStatusMax)
	}
	return nil
}

// recordCheck applies one check result to t and reports a transition once a
// threshold is crossed. Results from a pool that no longer owns the target
// (an old pool still running during a reload) are dropped, so only the
// current configuration's checks decide.
func (p *Pool) recordCheck(t *Target, checkErr error) {
	st := t.st
	if st.owner.Load() != p {
		return
	}
	now := p.now()
	var changed, healthy bool
	st.mu.Lock()
	st.lastCheck = now
	st.lastError = ""
	first := st.pending.Swap(false)
	switch {
	case first && checkErr == nil:
		// A new target passing its first check is in at once (Envoy:
		// one success at startup). Not a change of health: it was
		// never found down.
		st.checkOK, st.checkFail = 1, 0
	case first:
		// Failing its first, it is out until healthy_threshold passes.
		st.lastError = checkErr.Error()
		st.checkOK, st.checkFail = 0, 1
		st.down.Store(true)
		changed = true
	case checkErr == nil:
		st.checkFail = 0
		st.checkOK++
		if st.down.Load() && st.checkOK >= p.health.HealthyThreshold {
			st.down.Store(false)
			changed = true
		}
	default:
		st.lastError = checkErr.Error()
		st.checkOK = 0
		st.checkFail++
		if !st.down.Load() && st.checkFail >= p.health.UnhealthyThreshold {
			st.down.Store(true)
			changed = true
		}
	}
	healthy = !st.down.Load()
	st.mu.Unlock()

	if first && checkErr == nil {
		p.log.Debug("upstream target passed its first health check", "target", t.String())
	}
	if checkErr != nil && !changed {
		p.log.Debug("upstream health check failed", "target", t.String(), "error", checkErr)
	}
	if !changed {
		return
	}
	switch {
	case first:
		p.log.Warn("upstream target unhealthy: failed its first health check", "target", t.String(), "error", checkErr)
	case healthy:
		p.log.Info("upstream target healthy", "target", t.String(),
			"successes", p.health.HealthyThreshold)
	default:
		p.log.Warn("upstream target unhealthy", "target", t.String(),
			"failures", p.health.UnhealthyThreshold, "error", checkErr)
	}
	if p.onHealthChange != nil {
		p.onHealthChange(p.service, t, healthy)
	}
}
