// Package upstream is the upstream side of the Meridian proxy: for each
// service it keeps a pool of targets and decides, per request, which target
// receives the request.
//
// A Pool combines four concerns:
//
//   - Load balancing: smooth weighted round robin (the nginx algorithm),
//     least requests (power of two random choices on the in-flight count;
//     over unequal weights, nginx's least_conn: fewest in flight per unit
//     of weight, ties by smooth weighted round robin) or consistent hashing on a header,
//     cookie or the client IP (a ring of virtual nodes hashed with FNV-1a,
//     stable across processes and restarts).
//   - Active health checks: one goroutine per target polls an HTTP path and
//     marks the target down after UnhealthyThreshold consecutive failures
//     and up again after HealthyThreshold consecutive successes. A target
//     new to the service awaits its first check, which runs at once, while
//     other targets can serve: one pass brings it in, one failure marks it
//     down. A pool of only new targets serves from them meanwhile.
//   - Passive outlier detection: the proxy reports the outcome of every
//     round trip; ConsecutiveFailures failures in a row eject the target for
//     BaseEjection times the number of times it has been ejected, capped at
//     MaxEjection. Ejection never removes more than MaxEjectionPercent of the
//     targets and never the last available one.
//   - Circuit breaking: a per-service cap on concurrent requests
//     (Acquire/Release).
//
// The proxy drives a pool like this for every request:
//
//	if !pool.Acquire() {
//		// 503: concurrency limit
//	}
//	defer pool.Release()
//	t, err := pool.Pick(r, clientIP, tried)
//	if err != nil {
//		// 503: ErrNoHealthyTarget
//	}
//	done := t.Begin()
//	// ... round trip to t.URL ...
//	done(upstream.Success) // or upstream.Failure
//
// # Reloads
//
// Every configuration reload builds new pools with NewPool, passing the
// pool that served the same service until now. Targets whose URL did not
// change keep their runtime state (health, ejection, in-flight count) and the
// service-wide concurrency counter is shared, so a reload neither resurrects
// a dead target nor lets the concurrency cap be exceeded by requests that are
// still running on the old pool. The new pool takes charge of the shared
// state when it is started; the old pool is then stopped, while requests
// already running on it complete normally.
package upstream
