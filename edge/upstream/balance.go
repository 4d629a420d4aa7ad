package upstream

import (
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Pick chooses the target for a request. It skips targets that are down or
// ejected, and targets in tried (those attempted by earlier retries of the
// same request) unless every available target has been tried, in which case
// one is reused rather than failing the retry. clientIP is the hash key for
// consistent hashing on the client IP and the fallback key when the
// configured header or cookie is absent; r may be nil for balancers that do
// not look at the request. Pick returns ErrNoHealthyTarget when no target is
// available.
//
// Pick does not allocate for pools of up to 64 targets, except that hashing
// on a cookie parses the request's cookies.
func (p *Pool) Pick(r *http.Request, clientIP string, tried []*Target) (*Target, error) {
	now := &lazyClock{now: p.now}
	t := p.pick(r, clientIP, tried, now)
	if t == nil && len(tried) > 0 {
		t = p.pick(r, clientIP, nil, now)
	}
	if t == nil && p.health != nil {
		// Nothing checked and up: targets still awaiting their first
		// check (a pool whose targets are all new) serve rather than
		// none.
		now.pending = true
		if t = p.pick(r, clientIP, tried, now); t == nil && len(tried) > 0 {
			t = p.pick(r, clientIP, nil, now)
		}
	}
	if t == nil {
		return nil, ErrNoHealthyTarget
	}
	return t, nil
}

func (p *Pool) pick(r *http.Request, clientIP string, tried []*Target, now *lazyClock) *Target {
	switch p.balancer {
	case LeastRequests:
		return p.pickLeastRequests(tried, now)
	case ConsistentHash:
		return p.pickConsistentHash(r, clientIP, tried, now)
	default:
		return p.pickRoundRobin(tried, now)
	}
}

// eligible reports whether t may be picked: available and not yet tried.
// A target awaiting its first health check is, only on the fallback pass
// (now.pending).
func eligible(t *Target, tried []*Target, now *lazyClock) bool {
	return !t.st.down.Load() && (now.pending || !t.st.pending.Load()) && !t.ejectedBy(now) && !slices.Contains(tried, t)
}

// lazyClock reads a clock once, and only if asked: a pick among targets
// none of which is ejected needs no time (a clock read is a noticeable
// part of a request's cost on some virtual machines).
type lazyClock struct {
	now  func() time.Time
	t    time.Time
	read bool
	// pending: targets awaiting their first health check may be picked
	// (a pick's state that travels with the clock through the balancers).
	pending bool
}

func (c *lazyClock) get() time.Time {
	if !c.read {
		c.t, c.read = c.now(), true
	}
	return c.t
}

// pickRoundRobin is nginx's smooth weighted round robin: every eligible
// target's current weight grows by its weight, the largest wins and pays
// back the total. Weights 5,1,1 give a a b a c a a. Ineligible targets are
// left out of the round, so the rest keep their relative shares.
func (p *Pool) pickRoundRobin(tried []*Target, now *lazyClock) *Target {
	if len(p.targets) == 1 {
		// A round of one changes no weight: no lock to take.
		if t := p.targets[0]; eligible(t, tried, now) {
			return t
		}
		return nil
	}
	p.rrMu.Lock()
	defer p.rrMu.Unlock()
	return smoothWeighted(p.targets, p.rrCurrent, tried, now, func(t *Target) int64 { return int64(t.Weight) })
}

// smoothWeighted is one round of smooth weighted round robin over targets,
// with current their current weights (the caller's, under its lock) and
// weight what each adds this round.
func smoothWeighted(targets []*Target, current []int64, tried []*Target, now *lazyClock, weight func(*Target) int64) *Target {
	best := -1
	var total int64
	for i, t := range targets {
		if !eligible(t, tried, now) {
			continue
		}
		w := weight(t)
		current[i] += w
		total += w
		if best < 0 || current[i] > current[best] {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	current[best] -= total
	return targets[best]
}

// candidateBufSize is the number of candidates least requests collects on
// the stack; larger pools spill to the heap.
const candidateBufSize = 64

// pickLeastRequests samples two distinct eligible targets uniformly and
// keeps the one with fewer in-flight requests; on a tie the random order of
// the sample decides. Sampling two rather than scanning for the minimum
// avoids herding every concurrent request onto the same momentarily idle
// target. Pools whose targets differ in weight go to
// pickWeightedLeastRequests instead.
func (p *Pool) pickLeastRequests(tried []*Target, now *lazyClock) *Target {
	if p.lrCurrent != nil {
		return p.pickWeightedLeastRequests(tried, now)
	}
	var buf [candidateBufSize]*Target
	cand := buf[:0]
	for _, t := range p.targets {
		if eligible(t, tried, now) {
			cand = append(cand, t)
		}
	}
	switch len(cand) {
	case 0:
		return nil
	case 1:
		return cand[0]
	}
	i := rand.IntN(len(cand))
	j := rand.IntN(len(cand) - 1)
	if j >= i {
		j++
	}
	a, b := cand[i], cand[j]
	if a.InFlight() <= b.InFlight() {
		return a
	}
	return b
}

// pickWeightedLeastRequests is least requests over targets of different
// weights, as nginx's least_conn: the target with the fewest in-flight
// requests per unit of weight, ties (every target idle, say) going by
// smooth weighted round robin among the tied. Idle, targets share requests
// exactly by weight, so a weight-1 canary beside a weight-3 target gets its
// quarter even one request at a time; under load in-flight counts settle
// in proportion to the weights, so a slow target gets fewer requests.
// (Envoy's weight/(1+inFlight) lets a slow heavy target keep over half of
// them.) Unlike P2C it scans the pool, under the pool's lock.
func (p *Pool) pickWeightedLeastRequests(tried []*Target, now *lazyClock) *Target {
	var buf [candidateBufSize]int64
	load := buf[:0]
	if len(p.targets) > candidateBufSize {
		load = make([]int64, 0, len(p.targets))
	}
	p.rrMu.Lock()
	defer p.rrMu.Unlock()
	best := -1
	for i, t := range p.targets {
		load = append(load, -1) // -1: not eligible
		if !eligible(t, tried, now) {
			continue
		}
		load[i] = t.InFlight()
		// load[i]/w[i] < load[best]/w[best], cross-multiplied.
		if best < 0 || load[i]*int64(p.targets[best].Weight) < load[best]*int64(t.Weight) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	pick := -1
	var total int64
	for i, t := range p.targets {
		if load[i] < 0 || load[i]*int64(p.targets[best].Weight) != load[best]*int64(t.Weight) {
			continue
		}
		w := int64(t.Weight)
		p.lrCurrent[i] += w
		total += w
		if pick < 0 || p.lrCurrent[i] > p.lrCurrent[pick] {
			pick = i
		}
	}
	p.lrCurrent[pick] -= total
	return p.targets[pick]
}

// Ring parameters. Each weight unit gets vnodesPerWeight points, which keeps
// the spread of keys within a few percent of the weights; very large pools
// get fewer points per unit so the ring stays under maxRingNodes.
const (
	vnodesPerWeight = 100
	maxRingNodes    = 1 << 17
)

// ringNode is one virtual node: a point on the hash ring owned by a target
// (an index into Pool.targets).
type ringNode struct {
	hash   uint64
	target int32
}

// buildRing places every target at weight*perUnit points derived from its
// URL alone, so a target's points do not depend on the other targets and
// removing one only moves the keys that it owned.
func buildRing(targets []*Target) []ringNode {
	totalWeight := 0
	for _, t := range targets {
		totalWeight += t.Weight
	}
	perUnit := min(vnodesPerWeight, max(1, maxRingNodes/totalWeight))
	ring := make([]ringNode, 0, totalWeight*perUnit)
	var buf []byte
	for i, t := range targets {
		for v := range t.Weight * perUnit {
			buf = append(buf[:0], t.key...)
			buf = append(buf, '#')
			buf = strconv.AppendInt(buf, int64(v), 10)
			ring = append(ring, ringNode{hash: hashBytes(buf), target: int32(i)})
		}
	}
	// Break (astronomically unlikely) hash ties by URL so the ring does not
	// depend on the order targets are listed in.
	slices.SortFunc(ring, func(a, b ringNode) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return strings.Compare(targets[a.target].key, targets[b.target].key)
	})
	return ring
}

// pickConsistentHash finds the first ring point at or after the key's hash
// and walks clockwise to the first eligible target, so while a target is
// out its keys spread over the following targets and return to it when it
// is back.
func (p *Pool) pickConsistentHash(r *http.Request, clientIP string, tried []*Target, now *lazyClock) *Target {
	// Make sure the walk below ends early: with nothing eligible it would
	// visit the whole ring.
	found := false
	for _, t := range p.targets {
		if eligible(t, tried, now) {
			found = true
			break
		}
	}
	if !found {
		return nil
	}
	h := hashString(p.hashKey(r, clientIP))
	ring := p.ring
	i := sort.Search(len(ring), func(k int) bool { return ring[k].hash >= h })
	for range len(ring) {
		if i == len(ring) {
			i = 0
		}
		if t := p.targets[ring[i].target]; eligible(t, tried, now) {
			return t
		}
		i++
	}
	return nil // everything became unavailable during the walk
}

// ReadsHeaders reports whether Pick reads the request's header (a
// consistent hash on a header or cookie).
func (p *Pool) ReadsHeaders() bool {
	return p.hashOn.Kind == HashHeader || p.hashOn.Kind == HashCookie
}

// hashKey extracts the consistent-hash key of a request, falling back to
// the client IP when the header or cookie is missing, and to the host of
// r.RemoteAddr when the caller did not supply a client IP.
func (p *Pool) hashKey(r *http.Request, clientIP string) string {
	if r != nil {
		switch p.hashOn.Kind {
		case HashHeader:
			if v := headerKey(r.Header[p.hashOn.Name]); v != "" {
				return v
			}
		case HashCookie:
			if c, err := r.Cookie(p.hashOn.Name); err == nil && c.Value != "" {
				return c.Value
			}
		}
	}
	if clientIP != "" {
		return clientIP
	}
	if r != nil {
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			return host
		}
		return r.RemoteAddr
	}
	return ""
}

// headerKey is the hash key of a header field's lines: the field's value
// as one list, so that lines combined by an intermediary, or split, or
// spaced otherwise around their commas, keep their key (RFC 9110 5.3: a
// recipient may combine them "without changing the semantics").
func headerKey(lines []string) string {
	if len(lines) == 1 && strings.IndexByte(lines[0], ',') < 0 {
		return strings.TrimSpace(lines[0])
	}
	var b strings.Builder
	for _, line := range lines {
		for elem := range strings.SplitSeq(line, ",") {
			if elem = strings.Trim(elem, " \t"); elem != "" {
				if b.Len() > 0 {
					b.WriteString(", ")
				}
				b.WriteString(elem)
			}
		}
	}
	return b.String()
}

// FNV-1a (64 bit) parameters, as in hash/fnv. The hash is computed inline
// so that hashing a string key neither allocates nor goes through an
// interface; hash/maphash is unsuitable because its seeds differ between
// processes, which would remap every key on restart.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// hashString is FNV-1a of s followed by a 64-bit finalizer. FNV-1a alone
// spreads short, similar strings such as "http://10.0.0.1:80#17" poorly over
// the high bits that decide ring order; the murmur3 finalizer mixes every
// input bit into every output bit.
func hashString(s string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return mix64(h)
}

func hashBytes(b []byte) uint64 {
	h := uint64(fnvOffset64)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime64
	}
	return mix64(h)
}

// mix64 is the murmur3 fmix64 finalizer.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
